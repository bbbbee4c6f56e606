/* kthread.c: making kernel threads with the C library's pthread_create,
 * which ours hides from the program (see kthread.h). */
#include "kthread.h"

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"
#include "scheduler.h"

#ifdef CP_ASAN
#include <sanitizer/asan_interface.h>

#include "worker.h"
#endif

cp_real_pthread_create_fn cp_real_pthread_create(void)
{
	static cp_real_pthread_create_fn fn;
	cp_real_pthread_create_fn f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
	if (!f) {
		f = (cp_real_pthread_create_fn)dlvsym(RTLD_NEXT, "pthread_create", "GLIBC_2.34");
		if (!f)
			f = (cp_real_pthread_create_fn)dlvsym(RTLD_NEXT, "pthread_create",
			                                      "GLIBC_2.2.5");
		if (!f)
			cp_die("cannot find the C library's pthread_create: %s", dlerror());
		__atomic_store_n(&fn, f, __ATOMIC_RELEASE);
	}
	return f;
}

/* The resolver and NSS modules a helper may run use tens of KiB at most;
 * the sanitizers' frames are bigger */
#ifdef CP_ASAN
#define KTHREAD_STACK (4u << 20)
#else
#define KTHREAD_STACK (512u << 10)
#endif

typedef int (*attr_fn)(pthread_attr_t *);
typedef int (*attr_size_fn)(pthread_attr_t *, size_t);

/* On the creator's stack, which it leaves only once the new thread has
 * copied it (taken): neither thread allocates or frees for it.  A free
 * on the new thread was its first call into malloc, which gave it an
 * arena of its own, 64 MiB of address space, at a moment nobody chose: a
 * program that measured its size and then forked under RLIMIT_AS that
 * much above it had the monitor's arena appear in between, and the
 * child's ring did not fit (tests/posix fork_under_rlimit_as). */
struct kthread_start {
	void *(*fn)(void *);
	void *arg;
	uint32_t taken;
};

/* A kernel thread's first frame: the C library may hand it a recycled
 * TCB whose split-stack limit (%fs:0x70) a linked thread left there, which
 * the prologue of fn would take for its own. */
static CP_NO_SPLIT void *kthread_begin(void *p)
{
	cp_split_limit_set(0);
#ifdef CP_ASAN
	/* made past ASan's pthread_create, which would clear the stack's
	 * shadow: the C library may hand it a recycled stack whose shadow
	 * still holds the redzones of frames of a thread that is gone (after
	 * a fork every other thread's stack is recycled), and a fork's child
	 * reported a stack-buffer-underflow in a worker's first snprintf */
	struct cp_stack st = { 0 };
	cp_native_stack_bounds(&st);
	char *sp;
	__asm__ volatile("movq %%rsp, %0" : "=r"(sp));
	if (st.lo && sp > (char *)st.lo)
		__asan_unpoison_memory_region(st.lo, (size_t)(sp - (char *)st.lo));
#endif
	struct kthread_start *handed = p;
	struct kthread_start start = *handed;
	__atomic_store_n(&handed->taken, 1, __ATOMIC_RELEASE);
	return start.fn(start.arg);
}

int cp_kthread_create(pthread_t *kt, void *(*fn)(void *), void *arg)
{
	/* the program's pthread_attr_* are libthread's, with their own layout */
	static attr_fn init, destroy;
	static attr_size_fn set_size;
	if (!__atomic_load_n(&set_size, __ATOMIC_ACQUIRE)) {
		init = (attr_fn)dlsym(RTLD_NEXT, "pthread_attr_init");
		destroy = (attr_fn)dlsym(RTLD_NEXT, "pthread_attr_destroy");
		attr_size_fn s = (attr_size_fn)dlsym(RTLD_NEXT, "pthread_attr_setstacksize");
		if (!init || !destroy || !s)
			cp_die("cannot find the C library's pthread_attr_*: %s", dlerror());
		__atomic_store_n(&set_size, s, __ATOMIC_RELEASE);
	}
	struct kthread_start start = { .fn = fn, .arg = arg, .taken = 0 };
	pthread_attr_t a;
	if (init(&a))
		return EAGAIN;
	set_size(&a, KTHREAD_STACK);
	int e = cp_real_pthread_create()(kt, &a, kthread_begin, &start);
	destroy(&a);
	/* a kernel thread's start: rare (start-up, a fork, a helper) */
	while (e == 0 && !__atomic_load_n(&start.taken, __ATOMIC_ACQUIRE))
		syscall(SYS_sched_yield);
	return e;
}

typedef int (*detach_fn)(pthread_t);

int cp_kthread_spawn(void *(*fn)(void *), void *arg)
{
	static detach_fn detach;
	if (!detach) {
		detach = (detach_fn)dlsym(RTLD_NEXT, "pthread_detach");
		if (!detach)
			cp_die("cannot find the C library's pthread_detach: %s", dlerror());
	}
	/* the new thread inherits this mask: block everything around the
	 * creation so no signal lands on it before it could block them
	 * (raw calls: the program's sigprocmask may be interposed) */
	sigset_t all, old;
	sigfillset(&all);
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, _NSIG / 8);
	pthread_t kt;
	int e = cp_kthread_create(&kt, fn, arg);
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, _NSIG / 8);
	if (e == 0)
		detach(kt);
	return e;
}
