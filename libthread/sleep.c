/* sleep.c: sleep, usleep, nanosleep, clock_nanosleep that park only the
 * calling user thread.  They are cancellation points.  A signal caught by
 * the worker does not cut a user thread's sleep short (no EINTR): signals
 * are delivered to workers, not to the user threads they run. */
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lt.h"
#include "timespec.h"

/* Sleeps until the monotonic deadline; 0, or acts on cancellation. */
static void sleep_until(uint64_t deadline)
{
	struct lt_thread *self = lt_self();
	lt_testcancel(self);
	if (cp_sleep_until(deadline, lt_cancellable(self)) == EINTR)
		lt_testcancel(self);
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
	if (deadline)
		sleep_until(deadline);
	if (rem && !(flags & TIMER_ABSTIME))
		*rem = (struct timespec){ 0, 0 };
	return 0;
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
	sleep_until(deadline_in((uint64_t)us * CP_NS_PER_US));
	return 0;
}

CP_EXPORT unsigned int sleep(unsigned int s)
{
	sleep_until(deadline_in((uint64_t)s * CP_NS_PER_SEC));
	return 0;
}
