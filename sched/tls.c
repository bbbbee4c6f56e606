/* tls.c: thread-local storage that belongs to the user thread (under the
 * shim, for any program that has thread-local variables of its own or in
 * a library it loads; CAPRICE_TLS=thread|worker chooses).
 *
 * By default `__thread` variables belong to the worker: the FS base is the
 * worker kernel thread's, and a user thread that parks and resumes on
 * another worker, or that shares a worker with others, sees whichever
 * thread's values were stored there last.  MariaDB's current_thd is one
 * such variable.  With CAPRICE_TLS=thread every user thread gets a TCB and
 * static TLS of its own, made by the dynamic linker's own allocator
 * (_dl_allocate_tls, as NPTL does), and a switch to a thread with another
 * TCB loads its FS base: with a wrfsbase instruction where the kernel
 * lets user code write it (FSGSBASE, Linux 5.9 on, told by AT_HWCAP2),
 * else with an arch_prctl system call (~1 µs on a VM) per switch that
 * changes it (Knot under the shim made 2.4 of them per request); a switch
 * into the scheduler's own context keeps the FS base it finds.
 *
 * The runtime's own `__thread` variables (this module's TLS block) must
 * follow the kernel thread, not the user thread: they are copied into the
 * incoming TCB before its FS base is loaded.
 *
 * Limits of this first version: a module dlopen'ed later with static
 * (initial-exec) TLS is not initialized in user threads' blocks; glibc's
 * per-thread malloc cache of a finished thread is not given back;
 * sched_getcpu() answers 0. */
#include "worker.h"

#include <asm/hwcap2.h>
#include <asm/prctl.h>
#include <sys/auxv.h>
#include <dlfcn.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"
#include "rtmem.h"

bool cp_tls_per_thread CP_HIDDEN;

static void *(*allocate_tls)(void *);
static void (*deallocate_tls)(void *, bool);
static void (*ctype_init)(void); /* glibc's __ctype_init */
static size_t static_size, static_align, tcb_size;
static uint32_t tid_offset, list_offset;
static ptrdiff_t own_block_off;   /* this module's TLS block, from the TP */
static size_t own_block_size;
static bool have_wrfsbase;  /* the kernel enabled FSGSBASE for user code */

static inline char *thread_pointer(void)
{
	char *tp;
	__asm__ volatile("movq %%fs:0, %0" : "=r"(tp));
	return tp;
}

struct own_module {
	uintptr_t addr;          /* an address inside this module */
	size_t tls_size;
	int found;
};

static int find_own_tls(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	struct own_module *m = arg;
	bool mine = false;
	size_t tls = 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
		if (ph->p_type == PT_LOAD && m->addr >= lo && m->addr < lo + ph->p_memsz)
			mine = true;
		if (ph->p_type == PT_TLS)
			tls = ph->p_memsz;
	}
	if (mine) {
		m->tls_size = tls;
		m->found = 1;
		return 1;
	}
	return 0;
}

/* Does any module but the C library, the dynamic linker and the runtime
 * itself keep thread-local variables?  A program that has none gets
 * nothing from TLS per user thread (errno is kept per thread anyway) and
 * would pay an arch_prctl per switch for it: 2.2x the server CPU per
 * round trip in the echo benchmark. */
static int module_has_tls(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	const char *name = info->dlpi_name ? info->dlpi_name : "";
	const char *base = strrchr(name, '/');
	base = base ? base + 1 : name;
	if (strncmp(base, "libc.so", 7) == 0 || strncmp(base, "ld-linux", 8) == 0 ||
	    strncmp(base, "libthread", 9) == 0 || strncmp(base, "libasan", 7) == 0 ||
	    strncmp(base, "libubsan", 8) == 0)
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++)
		if (info->dlpi_phdr[i].p_type == PT_TLS && info->dlpi_phdr[i].p_memsz) {
			*(bool *)arg = true;
			return 1;
		}
	return 0;
}

static bool program_has_tls(void)
{
	bool found = false;
	dl_iterate_phdr(module_has_tls, &found);
	return found;
}

#ifdef CP_ASAN
static const bool sanitized = true;  /* ASan keeps its own per-thread state in TLS */
#else
static const bool sanitized = false;
#endif

void cp_tls_configure(void)
{
	if (sanitized)
		return;
	const char *mode = getenv("CAPRICE_TLS");
	bool want = &cp_tls_thread_by_default != NULL && cp_tls_thread_by_default &&
	            program_has_tls();
	if (mode && *mode) {
		if (strcmp(mode, "thread") == 0)
			want = true;
		else if (strcmp(mode, "worker") == 0)
			want = false;
		else
			cp_warn("CAPRICE_TLS=%s ignored: want thread or worker", mode);
	}
	if (!want)
		return;
	void (*get_info)(size_t *, size_t *) =
		(void (*)(size_t *, size_t *))dlvsym(RTLD_DEFAULT, "_dl_get_tls_static_info",
		                                     "GLIBC_PRIVATE");
	allocate_tls = (void *(*)(void *))dlvsym(RTLD_DEFAULT, "_dl_allocate_tls", "GLIBC_PRIVATE");
	deallocate_tls = (void (*)(void *, bool))dlvsym(RTLD_DEFAULT, "_dl_deallocate_tls",
	                                                 "GLIBC_PRIVATE");
	const uint32_t *sizeof_pthread = dlvsym(RTLD_DEFAULT, "_thread_db_sizeof_pthread",
	                                        "GLIBC_PRIVATE");
	const uint32_t *tid_desc = dlvsym(RTLD_DEFAULT, "_thread_db_pthread_tid", "GLIBC_PRIVATE");
	const uint32_t *list_desc = dlvsym(RTLD_DEFAULT, "_thread_db_pthread_list", "GLIBC_PRIVATE");
	ctype_init = (void (*)(void))dlvsym(RTLD_DEFAULT, "__ctype_init", "GLIBC_PRIVATE");
	if (!get_info || !allocate_tls || !deallocate_tls || !sizeof_pthread || !tid_desc ||
	    !list_desc || !ctype_init) {
		cp_warn("CAPRICE_TLS=thread ignored: this C library does not offer what it needs "
		        "(_dl_allocate_tls and friends)");
		return;
	}
	get_info(&static_size, &static_align);
	tcb_size = *sizeof_pthread;
	/* libthread_db's descriptors: bits, count, offset */
	tid_offset = tid_desc[2];
	list_offset = list_desc[2];
	/* this module's own block: its offset from the thread pointer is the
	 * same in every TCB (static TLS) */
	struct own_module m = { (uintptr_t)&cp_tls_configure, 0, 0 };
	dl_iterate_phdr(find_own_tls, &m);
	Dl_info di;
	void *block = NULL;
	if (m.found && dladdr((void *)&cp_tls_configure, &di)) {
		void *h = dlopen(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
		if (h) {
			if (dlinfo(h, RTLD_DI_TLS_DATA, &block) != 0)
				block = NULL;
			dlclose(h);
		}
	}
	if (!block) {
		cp_warn("CAPRICE_TLS=thread ignored: cannot find the runtime's own TLS block");
		return;
	}
	own_block_off = (char *)block - thread_pointer();
	own_block_size = m.tls_size;
	have_wrfsbase = (getauxval(AT_HWCAP2) & HWCAP2_FSGSBASE) != 0;
	cp_tls_per_thread = true;
}

void *cp_tls_current(void)
{
	return thread_pointer();
}

int cp_tls_make(struct cp_thread *t)
{
	size_t align = static_align < 64 ? 64 : static_align;
	size_t size = (static_size + align - 1) & ~(align - 1);
	char *mem = cp_rt_aligned(align, size);
	if (!mem)
		return ENOMEM;
	char *tcb = (char *)(((uintptr_t)mem + static_size - tcb_size) & ~(uintptr_t)(align - 1));
	memset(tcb, 0, tcb_size);
	if (!allocate_tls(tcb)) {
		cp_rt_free(mem);
		return ENOMEM;
	}
	char *tp = thread_pointer();
	memcpy(tcb + 0, &tcb, sizeof tcb);               /* header.tcb */
	memcpy(tcb + 16, &tcb, sizeof tcb);              /* header.self */
	int one = 1;
	memcpy(tcb + 24, &one, sizeof one);              /* multiple_threads */
	/* the descriptor's list link, empty: fork's child unlinks the
	 * forking thread's descriptor from glibc's list of stacks */
	char *link = tcb + list_offset;
	memcpy(link, &link, sizeof link);
	memcpy(link + sizeof link, &link, sizeof link);
	memcpy(tcb + 0x28, tp + 0x28, 2 * sizeof(void *)); /* stack and pointer guards */
	t->tcb = tcb;
	t->tls_mem = mem;
	return 0;
}

/* glibc points each thread's ctype tables (TLS of its own, which
 * isalpha, toupper and printf's number formatting read) at its locale's
 * as the thread starts, which a TCB made here never gets: the thread
 * does it first thing (cp_sched_thread_begin). */
void cp_tls_thread_begin(void)
{
	ctype_init();
}

void cp_tls_free(struct cp_thread *t)
{
	if (!t->tls_mem)
		return;
	deallocate_tls(t->tcb, false);
	cp_rt_free(t->tls_mem);
	t->tcb = t->tls_mem = NULL;
}

void cp_tls_load(struct cp_worker *w, void *tcb)
{
	char *old = thread_pointer();
	if (own_block_size)
		memcpy((char *)tcb + own_block_off, old + own_block_off, own_block_size);
	/* the C library's own locks record their owner's tid from here */
	memcpy((char *)tcb + tid_offset, &w->tid, sizeof w->tid);
	if (cp_likely(have_wrfsbase))
		__asm__ volatile("wrfsbase %0" : : "r"(tcb) : "memory");
	else
		syscall(SYS_arch_prctl, ARCH_SET_FS, tcb);
	w->st.tls_loads++;
}

/* Out of line from cp_tls_thread_exit: the C library calls would send
 * every exiting thread on a linked stack to a big chunk (linked.c). */
static CP_NOINLINE void run_tls_dtors(void)
{
	static void (*call_dtors)(void);
	if (!call_dtors)
		call_dtors = (void (*)(void))dlvsym(RTLD_DEFAULT, "__call_tls_dtors", "GLIBC_PRIVATE");
	if (call_dtors)
		call_dtors();
}

void cp_tls_thread_exit(void)
{
	if (cp_tls_per_thread)
		run_tls_dtors();
}
