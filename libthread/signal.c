/* signal.c: signal masks and synchronous signal waits for user threads.
 *
 * Masks are per user thread, as POSIX says: pthread_sigmask and
 * sigprocmask change the calling thread's, a new thread starts with its
 * creator's, and a signal sent to one thread waits while that thread
 * blocks it (sigthread.c).  The kernel only knows the workers' masks, and
 * a user thread moves between workers, so the workers block what every
 * live user thread blocks (cp_change_program_sigmask; counted here, per
 * signal): such a signal stays pending for the process, where sigwait
 * finds it; one that some thread lets through reaches a worker, and from
 * there the main thread or the thread it interrupted (sighandler.c).
 *
 * sigwait and friends park on a signalfd for the set instead of sleeping
 * in the kernel, and take the signals sent to their thread alone first. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lt.h"
#include "timespec.h"
#include "rtmem.h"

static uint64_t to_bits(const sigset_t *set)
{
	uint64_t b;
	memcpy(&b, set, sizeof b); /* the kernel's sigset: the first 8 bytes */
	return b;
}

static void from_bits(uint64_t b, sigset_t *set)
{
	/* stores, not sigemptyset(): a C library call would send every
	 * sigprocmask of a linked thread to a big chunk (sched/linked.c) */
	memset(set, 0, sizeof *set);
	memcpy(set, &b, sizeof b);
}

/* ---- masks ---- */

static cp_spinlock mask_lock = CP_SPINLOCK_INIT;
static uint32_t blocked_by[64];   /* live user threads blocking each signal */
static uint32_t threads_blocking; /* live user threads blocking any */

static const uint64_t unblockable = (1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1));

/* The live threads that set a mask, or began with one: where a signal
 * for the process looks for a thread that lets it in (lt_sigmask_admits);
 * the others have never blocked anything since nothing was blocked when
 * they began.  Grows as needed; under mask_lock. */
static struct lt_thread **masked;
static size_t n_masked, cap_masked;

static void note_masked(struct lt_thread *t)
{
	for (size_t i = 0; i < n_masked; i++)
		if (masked[i] == t)
			return;
	if (n_masked == cap_masked) {
		size_t cap = cap_masked ? 2 * cap_masked : 16;
		struct lt_thread **m = cp_rt_realloc(masked, cap * sizeof *m);
		if (!m)
			return; /* only a hint is lost */
		masked = m;
		cap_masked = cap;
	}
	masked[n_masked++] = t;
}

static void forget_masked(struct lt_thread *t)
{
	for (size_t i = 0; i < n_masked; i++)
		if (masked[i] == t) {
			masked[i] = masked[--n_masked];
			return;
		}
}

struct lt_thread *lt_sigmask_admits(int sig, struct lt_thread *besides)
{
	struct lt_thread *found = NULL;
	if (!__atomic_load_n(&n_masked, __ATOMIC_ACQUIRE))
		return NULL;
	cp_spin_lock(&mask_lock);
	for (size_t i = 0; i < n_masked && !found; i++) {
		struct lt_thread *t = masked[i];
		if (t != besides && !t->exiting &&
		    !(__atomic_load_n(&t->sigmask, __ATOMIC_ACQUIRE) & (1ull << (sig - 1))))
			found = t;
	}
	cp_spin_unlock(&mask_lock);
	return found;
}

/* Under mask_lock: a live thread's mask counted in (d 1) or out (-1). */
static void count(uint64_t mask, int d)
{
	if (!mask)
		return;
	threads_blocking += (uint32_t)d;
	for (uint64_t m = mask; m; m &= m - 1)
		blocked_by[__builtin_ctzll(m)] += (uint32_t)d;
}

/* Under mask_lock: the workers block what every live thread blocks. */
static void settle(void)
{
	uint64_t live = lt_live_threads(), all = 0;
	if (threads_blocking >= live) /* else some thread blocks nothing */
		for (int i = 0; i < 64; i++)
			if (blocked_by[i] >= live)
				all |= 1ull << i;
	cp_change_program_sigmask(SIG_SETMASK, all);
}

uint32_t lt_masks_used;

/* t's mask counted in (joining) or out (leaving), and the workers' mask
 * settled again. */
static void recount(struct lt_thread *t, bool joining)
{
	cp_spin_lock(&mask_lock);
	count(t->sigmask, joining ? 1 : -1);
	if (joining)
		note_masked(t);
	else
		forget_masked(t);
	settle();
	cp_spin_unlock(&mask_lock);
}

void lt_sigmask_start_counted(struct lt_thread *t, struct lt_thread *creator)
{
	t->sigmask = creator ? creator->sigmask : cp_program_sigmask();
	/* blocking nothing, it changes nothing while nothing is blocked
	 * everywhere */
	if (t->sigmask || cp_program_sigmask())
		recount(t, true);
}

void lt_sigmask_exit_counted(struct lt_thread *t)
{
	recount(t, false);
}

/* The process's first user thread: the mask the process started with. */
void lt_sigmask_main(struct lt_thread *m)
{
	m->sigmask = cp_program_sigmask();
	if (m->sigmask) {
		__atomic_store_n(&lt_masks_used, 1, __ATOMIC_RELAXED);
		recount(m, true);
	}
}

void lt_sigmask_after_fork(struct lt_thread *self)
{
	/* only the forking thread lives on */
	mask_lock = (cp_spinlock)CP_SPINLOCK_INIT;
	memset(blocked_by, 0, sizeof blocked_by);
	threads_blocking = 0;
	n_masked = 0;
	if (lt_masks_used)
		recount(self, true);
}

uint64_t lt_sigmask_change(struct lt_thread *self, int how, uint64_t bits)
{
	uint64_t before = self->sigmask;
	uint64_t now = how == SIG_BLOCK ? before | bits : how == SIG_UNBLOCK ? before & ~bits : bits;
	now &= ~unblockable;
	if (now == before)
		return before;
	/* from now on threads' starts and ends count (before the lock, so a
	 * thread starting meanwhile counts its creator's mask) */
	__atomic_store_n(&lt_masks_used, 1, __ATOMIC_SEQ_CST);
	cp_spin_lock(&mask_lock);
	count(before, -1);
	count(now, 1);
	__atomic_store_n(&self->sigmask, now, __ATOMIC_RELEASE);
	note_masked(self);
	settle();
	cp_spin_unlock(&mask_lock);
	if (before & ~now)
		lt_signals_unblocked(); /* what waited for this thread is delivered */
	return before;
}

static int set_mask(int how, const sigset_t *set, sigset_t *old)
{
	struct lt_thread *self = lt_self();
	if (!self) /* a kernel thread of the program's own, or before start */
		return syscall(SYS_rt_sigprocmask, how, set, old, sizeof(uint64_t)) ? errno : 0;
	if (set && how != SIG_BLOCK && how != SIG_UNBLOCK && how != SIG_SETMASK)
		return EINVAL;
	uint64_t before = set ? lt_sigmask_change(self, how, to_bits(set)) : self->sigmask;
	if (old)
		from_bits(before, old);
	return 0;
}

CP_EXPORT int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
	return set_mask(how, set, old);
}

CP_EXPORT int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
	int e = set_mask(how, set, old);
	if (e) {
		errno = e;
		return -1;
	}
	return 0;
}

/* A signal of `set` sent to this thread alone and kept for it
 * (sigthread.c), as info: its number, or 0. */
static int take_own(const sigset_t *set, siginfo_t *info)
{
	struct lt_thread *self = lt_self();
	/* before the look, as lt_signals_deliver does */
	cp_interrupt_clear(&self->cp, CP_INTR_SIGWAIT);
	siginfo_t si;
	int sig = lt_signals_take(self, to_bits(set), &si);
	if (sig && info)
		*info = si;
	return sig;
}

/* Waits for one signal of `set`, sent to this thread alone or to the
 * process, the latter through a signalfd; timeout_ms < 0: none.  Returns
 * the signal number, or -1 with errno (EAGAIN on timeout, EINTR if a
 * handler ran, or cancelled). */
static int wait_signal(const sigset_t *set, siginfo_t *info, int timeout_ms)
{
	int own = take_own(set, info);
	if (own)
		return own;
	int fd = signalfd(-1, set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return -1;
	uint64_t deadline = timeout_ms < 0 ? CP_NO_DEADLINE
	                                   : cp_now_ns() + (uint64_t)timeout_ms * CP_NS_PER_MS;
	uint32_t gen = __atomic_load_n(&lt_signal_gen, __ATOMIC_ACQUIRE);
	int ret = -1;
	for (;;) {
		struct signalfd_siginfo si;
		ssize_t n = syscall(SYS_read, fd, &si, sizeof si);
		if (n == (ssize_t)sizeof si) {
			if (info) {
				memset(info, 0, sizeof *info);
				info->si_signo = (int)si.ssi_signo;
				info->si_errno = si.ssi_errno;
				info->si_code = si.ssi_code;
				info->si_pid = (pid_t)si.ssi_pid;
				info->si_uid = si.ssi_uid;
				info->si_status = si.ssi_status;
				info->si_value.sival_ptr = (void *)(uintptr_t)si.ssi_ptr;
			}
			ret = (int)si.ssi_signo;
			break;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			break;
		uint64_t now = cp_now_ns();
		if (deadline != CP_NO_DEADLINE && now >= deadline) {
			errno = EAGAIN;
			break;
		}
		int left = deadline == CP_NO_DEADLINE ? -1 : cp_ns_to_ms_ceil(deadline - now);
		/* parks this user thread; a signal sent to it meanwhile wakes it */
		int r = lt_poll_signalfd(fd, left);
		if ((ret = take_own(set, info)) != 0)
			break;
		ret = -1;
		if (r < 0 && errno == EINTR &&
		    __atomic_load_n(&lt_signal_gen, __ATOMIC_ACQUIRE) != gen)
			break; /* a handler ran */
		if (r < 0 && errno != EINTR)
			break;
	}
	int saved = errno;
	close(fd);
	errno = saved;
	return ret;
}

static int ms_of(const struct timespec *ts)
{
	if (!ts)
		return -1;
	return cp_ns_to_ms_ceil(cp_ts_to_ns_sat(ts));
}

CP_EXPORT int sigwait(const sigset_t *set, int *sig)
{
	if (!lt_self()) {
		int r;
		do
			r = (int)syscall(SYS_rt_sigtimedwait, set, NULL, NULL, sizeof(uint64_t));
		while (r < 0 && errno == EINTR);
		if (r < 0)
			return errno;
		*sig = r;
		return 0;
	}
	int r;
	do
		r = wait_signal(set, NULL, -1);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno;
	*sig = r;
	return 0;
}

CP_EXPORT int sigwaitinfo(const sigset_t *set, siginfo_t *info)
{
	if (!lt_self())
		return (int)syscall(SYS_rt_sigtimedwait, set, info, NULL, sizeof(uint64_t));
	return wait_signal(set, info, -1);
}

CP_EXPORT int sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *ts)
{
	if (!lt_self())
		return (int)syscall(SYS_rt_sigtimedwait, set, info, ts, sizeof(uint64_t));
	if (ts && !cp_ts_valid_rel(ts)) {
		errno = EINVAL;
		return -1;
	}
	return wait_signal(set, info, ms_of(ts));
}

/* The signals pending for the process, for this kernel thread, and for
 * this user thread alone (sigthread.c). */
CP_EXPORT int sigpending(sigset_t *set)
{
	if (syscall(SYS_rt_sigpending, set, sizeof(uint64_t)) != 0)
		return -1;
	uint64_t own = lt_signals_pending(lt_self());
	if (own)
		from_bits(to_bits(set) | own, set);
	return 0;
}

/* ---- alternate signal stacks ----
 *
 * The kernel keeps one alternate signal stack per kernel thread, and each
 * worker's is the runtime's own (sched/signals.c): the poke and SIGSEGV
 * handlers run on it.  A program's sigaltstack from a user thread would
 * replace it with that thread's buffer for every thread the worker runs,
 * and the next poke's signal frame would land there, whoever uses that
 * buffer then (varnishd gives every one of its threads the same 64 KiB
 * buffer, THR_Init in cache_main.c: both workers' pokes ran their
 * handlers on it at once, and its cache process died of SIGSEGV under
 * load, at a return address its own frames no longer held).  So
 * the stack a program sets is its thread's, remembered here and reported
 * back; the handlers it asks to run on it (SA_ONSTACK) run on the
 * worker's alternate stack, which is as far from the thread's own. */
#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1u << 31) /* linux/signal.h's */
#endif

static pthread_key_t altstack_key;

static void altstack_free(void *p)
{
	cp_rt_free(p);
}

void lt_altstack_init(void)
{
	/* one of libthread's own keys: the program keeps all of its own */
	if (lt_key_create_runtime(&altstack_key, altstack_free) != 0)
		cp_die("no key of libthread's own left for the threads' alternate signal stacks");
}

static const stack_t no_altstack = { .ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE };

CP_EXPORT int sigaltstack(const stack_t *ss, stack_t *old)
{
	if (!lt_self())
		return (int)syscall(SYS_sigaltstack, ss, old); /* a kernel thread of its own */
	if (ss && ((unsigned)ss->ss_flags & ~(SS_DISABLE | SS_AUTODISARM))) {
		errno = EINVAL;
		return -1;
	}
	if (ss && !(ss->ss_flags & SS_DISABLE) && ss->ss_size < (size_t)MINSIGSTKSZ) {
		errno = ENOMEM;
		return -1;
	}
	/* a look (the sanitizers look at every noreturn call) allocates nothing */
	stack_t *mine = pthread_getspecific(altstack_key);
	if (old)
		*old = mine ? *mine : no_altstack;
	if (!ss)
		return 0;
	if (!mine) {
		mine = cp_rt_malloc(sizeof *mine);
		if (!mine || pthread_setspecific(altstack_key, mine) != 0) {
			cp_rt_free(mine);
			errno = ENOMEM;
			return -1;
		}
	}
	*mine = ss->ss_flags & SS_DISABLE ? no_altstack : *ss;
	return 0;
}
