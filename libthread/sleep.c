/* sleep.c: sleep, usleep, nanosleep, clock_nanosleep that park only the
 * calling user thread.  They are cancellation points.  A signal caught by
 * the worker does not cut a user thread's sleep short (no EINTR): signals
 * are delivered to workers, not to the user threads they run. */
#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "lt.h"

static uint64_t ts_ns(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec;
}

/* Sleeps until the monotonic deadline; 0, or acts on cancellation. */
static void sleep_until(uint64_t deadline)
{
	struct lt_thread *self = lt_self();
	lt_testcancel(self);
	if (cp_sleep_until(deadline, lt_cancellable(self)) == EINTR)
		lt_testcancel(self);
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a + b < a ? CP_NO_DEADLINE - 1 : a + b;
}

CP_EXPORT int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req,
                              struct timespec *rem)
{
	if (req->tv_nsec < 0 || req->tv_nsec >= 1000000000L || req->tv_sec < 0)
		return EINVAL;
	if (clock == CLOCK_THREAD_CPUTIME_ID)
		return EINVAL;
	if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC && clock != CLOCK_BOOTTIME &&
	    clock != CLOCK_TAI)
		return ENOTSUP;
	uint64_t deadline;
	if (flags & TIMER_ABSTIME) {
		struct timespec now;
		clock_gettime(clock, &now);
		uint64_t want = ts_ns(req), have = ts_ns(&now);
		deadline = want <= have ? 0 : add_sat(cp_now_ns(), want - have);
	} else {
		deadline = add_sat(cp_now_ns(), ts_ns(req));
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
	sleep_until(add_sat(cp_now_ns(), (uint64_t)us * 1000u));
	return 0;
}

CP_EXPORT unsigned int sleep(unsigned int s)
{
	sleep_until(add_sat(cp_now_ns(), (uint64_t)s * 1000000000u));
	return 0;
}
