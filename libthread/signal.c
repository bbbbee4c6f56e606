/* signal.c: signal masks and synchronous signal waits for user threads.
 *
 * Masks: a user thread runs on whichever worker it lands on, so a
 * per-kernel-thread mask would follow nobody.  Under Caprice a mask is
 * the program's, applied on every worker (cp_change_program_sigmask): the
 * classic "block in main, sigwait in one thread" then works, because no
 * worker takes the signal for a handler.
 *
 * sigwait and friends park on a signalfd for the set instead of sleeping
 * in the kernel: the signals are blocked everywhere, so they stay pending
 * on the process until the signalfd read takes them. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lt.h"
#include "timespec.h"

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

static int set_mask(int how, const sigset_t *set, sigset_t *old)
{
	if (!lt_self()) /* a kernel thread of the program's own, or before start */
		return syscall(SYS_rt_sigprocmask, how, set, old, sizeof(uint64_t)) ? errno : 0;
	if (set && how != SIG_BLOCK && how != SIG_UNBLOCK && how != SIG_SETMASK)
		return EINVAL;
	uint64_t before = set ? cp_change_program_sigmask(how, to_bits(set)) : cp_program_sigmask();
	if (old)
		from_bits(before, old);
	if (before & ~cp_program_sigmask())
		lt_signals_unblocked(); /* what waited for its thread is delivered */
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
