/* futex.c: a program's own futex waits park only the calling user thread.
 *
 * Programs that build their own locks (InnoDB's srw_lock, Folly, Abseil,
 * Rust's std) call syscall(SYS_futex, FUTEX_WAIT...) through libc's
 * syscall(), which would block the whole worker, and every thread queued
 * behind it, until some other thread wakes the word; if that thread is
 * queued on the same worker, forever.  So libthread defines syscall():
 * a FUTEX_WAIT or FUTEX_WAIT_BITSET made on a user thread becomes an
 * IORING_OP_FUTEX_WAIT (Linux 6.7+) on the worker's ring.  The kernel
 * matches it with any FUTEX_WAKE, from a user thread, a plain kernel
 * thread or (shared futexes) another process, so wakers need nothing from
 * us.  Everything else goes to the kernel unchanged.  Where the ring
 * refuses the operation (an older kernel) the wait stays a plain syscall,
 * as before, and CAPRICE_DEBUG says so. */
#include <errno.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>

#include "compiler.h"
#include "debug.h"
#include "io.h"
#include "lt.h"
#include "lt_io.h"
#include "timespec.h"

/* liburing 2.3 predates these (kernel 6.7) */
#define OP_FUTEX_WAIT      51
#define FUTEX2_SIZE_U32    0x02
#define FUTEX2_PRIVATE_    128

static int ring_futex_refused; /* the kernel said EINVAL to the opcode */


/* The wait as a ring operation; false when it must be the plain call. */
static bool ring_wait(uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts,
                      uint32_t mask, unsigned interrupt_by, long *out)
{
	int cmd = op & FUTEX_CMD_MASK;
	if (cmd != FUTEX_WAIT && cmd != FUTEX_WAIT_BITSET)
		return false;
	if (cmd == FUTEX_WAIT)
		mask = FUTEX_BITSET_MATCH_ANY;
	if (__atomic_load_n(&ring_futex_refused, __ATOMIC_RELAXED) || !lt_self() ||
	    cp_in_runtime())
		return false;
	if (mask == 0) {
		*out = lt_io_ret(-EINVAL);
		return true;
	}
	uint64_t timeout = 0; /* 0: none */
	if (ts) {
		if (cmd == FUTEX_WAIT ? !cp_ts_valid_rel(ts) : !cp_ts_valid(ts)) {
			*out = lt_io_ret(-EINVAL);
			return true;
		}
		if (cmd == FUTEX_WAIT) {
			timeout = cp_ts_to_ns(ts);
		} else {
			clockid_t clock = op & FUTEX_CLOCK_REALTIME ? CLOCK_REALTIME : CLOCK_MONOTONIC;
			struct timespec now;
			clock_gettime(clock, &now);
			uint64_t at = cp_ts_to_ns_sat(ts), n = cp_ts_to_ns(&now);
			if (at <= n) {
				*out = lt_io_ret(-ETIMEDOUT);
				return true;
			}
			timeout = at - n;
		}
		if (timeout == 0) {
			*out = lt_io_ret(-ETIMEDOUT);
			return true;
		}
	}
	cp_safe_point();
	struct cp_io_op io;
	struct io_uring_sqe *sqe = cp_io_prep(&io, timeout);
	if (!sqe)
		return false;
	io_uring_prep_rw(OP_FUTEX_WAIT, sqe,
	                 FUTEX2_SIZE_U32 | (op & FUTEX_PRIVATE_FLAG ? FUTEX2_PRIVATE_ : 0),
	                 uaddr, 0, val);
	sqe->rw_flags = 0;
	sqe->addr3 = mask;
	int res = cp_io_wait(&io, interrupt_by);
	cp_io_release(&io);
	if (res == -EINVAL && !io.timed_out) {
		/* an unknown opcode, or a bad argument: ask the kernel the
		 * plain way, which tells them apart */
		long r = cp_syscall6(SYS_futex, (long)uaddr, op, val, (long)ts, 0, mask);
		if (r == 0 || errno != EINVAL) {
			__atomic_store_n(&ring_futex_refused, 1, __ATOMIC_RELAXED);
			LT_DEBUG("syscall", "futex: this kernel's io_uring has no FUTEX_WAIT; "
			         "futex waits block their worker");
		}
		*out = r;
		return true;
	}
	if (res == -ECANCELED)
		res = io.timed_out ? -ETIMEDOUT : -EINTR; /* else cut short by pthread_cancel or
		                                             a signal handler */
	*out = lt_io_ret(res);
	return true;
}

long lt_futex_wait(uint32_t *word, uint32_t val)
{
	long r;
	if (ring_wait(word, FUTEX_WAIT_PRIVATE, val, NULL, 0, CP_INTR_SIGNAL, &r))
		return r;
	return cp_syscall6(SYS_futex, (long)word, FUTEX_WAIT_PRIVATE, val, 0, 0, 0);
}

long lt_futex_wait_until(uint32_t *word, uint32_t val, bool shared, clockid_t clock,
                         const struct timespec *abs, unsigned interrupt_by)
{
	int op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG) |
	         (abs && clock == CLOCK_REALTIME ? FUTEX_CLOCK_REALTIME : 0);
	long r;
	if (ring_wait(word, op, val, abs, FUTEX_BITSET_MATCH_ANY, interrupt_by, &r))
		return r;
	return cp_syscall6(SYS_futex, (long)word, op, val, (long)abs, 0, FUTEX_BITSET_MATCH_ANY);
}

long lt_futex_wake(uint32_t *word, int n, bool shared)
{
	return cp_syscall6(SYS_futex, (long)word, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, n, 0,
	                    0, 0);
}

long lt_futex_wake_all(uint32_t *word)
{
	return cp_syscall6(SYS_futex, (long)word, FUTEX_WAKE_PRIVATE, INT32_MAX, 0, 0, 0);
}

/* The system calls that make one descriptor, which count as the calls of
 * the same names do (lt_fd_fresh: the blocking graph's deltas, the
 * admission policy's count); pipe2 and socketpair make two.  dup2 and
 * dup3 may replace a descriptor, so they are left to the monitor's
 * recount (sched/policy.c). */
static bool makes_one_fd(long nr)
{
	switch (nr) {
	case SYS_open: case SYS_openat: case SYS_openat2: case SYS_creat:
	case SYS_socket: case SYS_accept: case SYS_accept4: case SYS_dup:
	case SYS_epoll_create: case SYS_epoll_create1: case SYS_eventfd: case SYS_eventfd2:
	case SYS_memfd_create: case SYS_signalfd: case SYS_signalfd4: case SYS_timerfd_create:
	case SYS_inotify_init: case SYS_inotify_init1: case SYS_pidfd_open:
	case SYS_pidfd_getfd: case SYS_userfaultfd: case SYS_io_uring_setup:
		return true;
	default:
		return false;
	}
}

/* Reads six arguments whatever the call takes, as the C library's own
 * syscall() does: past five, that is the caller's stack, which is there
 * to read but which ASan would call an underflow. */
#undef syscall /* compiler.h's: this is the program's */
CP_EXPORT __attribute__((no_sanitize_address)) long syscall(long nr, ...)
{
	va_list ap;
	va_start(ap, nr);
	long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
	long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
	va_end(ap);
	long r;
	if (nr == SYS_futex &&
	    ring_wait((uint32_t *)a1, (int)a2, (uint32_t)a3, (const struct timespec *)a4,
	              (uint32_t)a6, CP_INTR_SIGNAL, &r))
		return r;
	if (nr == SYS_close) /* as close() does: in-flight I/O first */
		return lt_fd_close((int)a1);
	if (nr == SYS_close_range) /* the runtime's own descriptors stay */
		return close_range((unsigned)a1, (unsigned)a2, (int)a3);
	if ((nr == SYS_dup2 || nr == SYS_dup3) && lt_fd_dup_refused((int)a1, (int)a2))
		return -1;
	r = cp_syscall6(nr, a1, a2, a3, a4, a5, a6);
	if (makes_one_fd(nr)) {
		lt_fd_fresh((int)r); /* an EMFILE counts too */
	} else if ((nr == SYS_pipe || nr == SYS_pipe2 || nr == SYS_socketpair) && r == 0) {
		const int *fds = (const int *)(nr == SYS_socketpair ? a4 : a1);
		lt_fd_fresh(fds[0]);
		lt_fd_fresh(fds[1]);
	}
	return r;
}
