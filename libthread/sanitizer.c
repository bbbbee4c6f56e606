/* sanitizer.c: recognising a sanitizer runtime's code (ASan, UBSan, LSan,
 * TSan), whose pthread keys get special treatment (key.c).  The code
 * ranges are found once, from the loaded objects' names.
 *
 * Interposed calls cannot be told apart the same way: ASan intercepts
 * read(), recv() and the like and forwards the program's calls here, so
 * "called from the sanitizer" would catch every call.  ASan's in-process
 * symbolizer, which reads the binary while holding its registry lock,
 * must therefore be off (ASAN_OPTIONS=symbolize=0, see scripts/test). */
#include <link.h>
#include <string.h>

#include "lt.h"

#define MAX_RANGES 8

static struct range {
	uintptr_t lo, hi;
} sanitizer[MAX_RANGES];
static int nsanitizer;
static int scanned; /* 0 no, 1 in progress, 2 done */

static bool is_sanitizer_name(const char *path)
{
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	return strstr(base, "asan") || strstr(base, "lsan") || strstr(base, "tsan") ||
	       strstr(base, "ubsan") || strstr(base, "clang_rt");
}

static int scan_object(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	(void)arg;
	if (!info->dlpi_name || !is_sanitizer_name(info->dlpi_name))
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		struct range r = { info->dlpi_addr + ph->p_vaddr,
		                   info->dlpi_addr + ph->p_vaddr + ph->p_memsz };
		if (nsanitizer < MAX_RANGES)
			sanitizer[nsanitizer++] = r;
	}
	return 0;
}

static void scan(void)
{
	int expect = 0;
	if (__atomic_compare_exchange_n(&scanned, &expect, 1, false, __ATOMIC_ACQ_REL,
	                                __ATOMIC_ACQUIRE)) {
		dl_iterate_phdr(scan_object, NULL);
		__atomic_store_n(&scanned, 2, __ATOMIC_RELEASE);
	}
	while (__atomic_load_n(&scanned, __ATOMIC_ACQUIRE) != 2)
		cp_cpu_relax();
}

bool lt_is_sanitizer_code(const void *addr)
{
	scan();
	uintptr_t a = (uintptr_t)addr;
	for (int i = 0; i < nsanitizer; i++)
		if (a >= sanitizer[i].lo && a < sanitizer[i].hi)
			return true;
	return false;
}
