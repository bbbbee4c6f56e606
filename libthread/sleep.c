/* sleep.c: sleep, usleep, nanosleep, clock_nanosleep that park only the
 * calling user thread.  They are cancellation points, and a signal
 * handler for the sleeping thread cuts them short (EINTR, with the time
 * left), as the kernel's do (sigthread.c). */
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lt.h"
#include "timespec.h"

/* Sleeps until the monotonic deadline: 0, or EINTR once a signal handler
 * ran (a cancel acts instead). */
static int sleep_until(uint64_t deadline)
{
	struct lt_thread *self = lt_self();
	lt_testcancel(self);
	if (cp_sleep_until(deadline, lt_interruptible(self)) != EINTR)
		return 0;
	lt_interrupted(self);
	return EINTR;
}

/* The deadline ns from now; one past 64 bits is the last one there is
 * (CP_NO_DEADLINE would be no deadline at all). */
static uint64_t deadline_in(uint64_t ns)
{
	uint64_t d = cp_ns_add_sat(cp_now_ns(), ns);
	return d == CP_NO_DEADLINE ? CP_NO_DEADLINE - 1 : d;
}

CP_EXPORT int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                              struct timespec *rem)
{
	if (!cp_ts_valid_rel(req))
		return EINVAL;
	if (clock == CLOCK_THREAD_CPUTIME_ID)
		return EINVAL;
	if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC && clock != CLOCK_BOOTTIME &&
	    clock != CLOCK_TAI) {
		/* what the kernel answers: EINVAL for a clock that does not
		 * exist, ENOTSUP for one it cannot sleep on (the coarse and raw
		 * clocks); a process CPU-time sleep it does, blocking this
		 * worker, which the monitor then covers */
		struct timespec res;
		if (clock_getres(clock, &res) != 0)
			return EINVAL;
		long r = syscall(SYS_clock_nanosleep, clock, flags, req, rem);
		return r == 0 ? 0 : errno;
	}
	uint64_t deadline;
	if (flags & TIMER_ABSTIME) {
		struct timespec now;
		clock_gettime(clock, &now);
		uint64_t want = cp_ts_to_ns_sat(req), have = cp_ts_to_ns(&now);
		deadline = want <= have ? 0 : deadline_in(want - have);
	} else {
		deadline = deadline_in(cp_ts_to_ns_sat(req));
	}
	int e = deadline ? sleep_until(deadline) : 0;
	if (rem && !(flags & TIMER_ABSTIME)) {
		/* what is left, for a caller who sleeps again after a handler */
		uint64_t now = cp_now_ns();
		*rem = e && deadline > now ? cp_ns_to_ts(deadline - now) : (struct timespec){ 0, 0 };
	}
	return e;
}

CP_EXPORT int nanosleep(const struct timespec *req, struct timespec *rem)
{
	int e = clock_nanosleep(CLOCK_MONOTONIC, 0, req, rem);
	if (e) {
		errno = e;
		return -1;
	}
	return 0;
}

CP_EXPORT int usleep(useconds_t us)
{
	int e = sleep_until(deadline_in((uint64_t)us * CP_NS_PER_US));
	if (e) {
		errno = e;
		return -1;
	}
	return 0;
}

CP_EXPORT unsigned int sleep(unsigned int s)
{
	uint64_t deadline = deadline_in((uint64_t)s * CP_NS_PER_SEC);
	if (!sleep_until(deadline))
		return 0;
	/* interrupted: the whole seconds left, rounded up as glibc does */
	uint64_t now = cp_now_ns();
	return deadline > now ? (unsigned)((deadline - now + CP_NS_PER_SEC / 2) / CP_NS_PER_SEC) : 0;
}
