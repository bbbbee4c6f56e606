/* sanitizer.c: recognising calls made from inside a sanitizer runtime
 * (ASan, UBSan, LSan, TSan).  They are written for one thread per kernel
 * thread: ASan's error report, for one, reads the binary through open()
 * and read() while holding its thread-registry lock, and parking there
 * would deadlock every worker on that lock.  Such calls get the plain
 * system call, and the runtimes' pthread keys special treatment (key.c).
 *
 * The runtimes' code ranges are found once.  A call's origin is the first
 * return address outside libthread.so on the frame-pointer chain (all of
 * libthread is built with frame pointers), so no interposed function has
 * to pass its caller down. */
#include <dlfcn.h>
#include <link.h>
#include <string.h>

#include "lt.h"

#define MAX_RANGES 8

static struct range {
	uintptr_t lo, hi;
} sanitizer[MAX_RANGES], self;
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
	uintptr_t me = (uintptr_t)&scan_object;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		struct range r = { info->dlpi_addr + ph->p_vaddr,
		                   info->dlpi_addr + ph->p_vaddr + ph->p_memsz };
		if (me >= r.lo && me < r.hi)
			self = r;
		else if (info->dlpi_name && is_sanitizer_name(info->dlpi_name) &&
		         nsanitizer < MAX_RANGES)
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

CP_NOINLINE bool lt_called_from_sanitizer(void)
{
	if (cp_likely(__atomic_load_n(&scanned, __ATOMIC_ACQUIRE) == 2 && nsanitizer == 0))
		return false;
	scan();
	if (nsanitizer == 0)
		return false;
	uintptr_t *fp = __builtin_frame_address(0);
	for (int depth = 0; depth < 32 && fp; depth++) {
		uintptr_t ret = fp[1];
		if (ret < self.lo || ret >= self.hi)
			return lt_is_sanitizer_code((const void *)ret);
		fp = (uintptr_t *)fp[0];
	}
	return false;
}
