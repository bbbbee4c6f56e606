/* sleep.c: sleep, usleep, nanosleep and clock_nanosleep last as long as
 * asked (within a tolerance), reject malformed times, and park only the
 * caller: other threads keep running, also when there is one worker
 * (the case runs itself again with CAPRICE_WORKERS=1). */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

#define MS 1000000ull
/* How late a sleep may end: the suite's slack for timed checks
 * (tc_slack_ms: 1 s, 2.5 s sanitized), as every other case's bound.  The
 * suite runs two test programs at once on two CPUs, and a worker that
 * wants its CPU back after a long sleep can wait behind busy neighbours:
 * CI once saw a one-worker sleep(1) end 564 ms late, past the 500 ms
 * this allowed before.  A lost or misplaced timer is late by far more. */
#define TOLERANCE ((uint64_t)tc_slack_ms() * MS)

/* elapsed must be in [want, want + TOLERANCE] */
#define CHECK_DURATION(elapsed, want)                                          \
	do {                                                                   \
		uint64_t el_ = (elapsed), w_ = (want);                         \
		if (el_ < w_ || el_ > w_ + TOLERANCE)                          \
			TFAIL("slept %.3f ms, wanted %.3f ms", el_ / 1e6, w_ / 1e6); \
	} while (0)

static uint64_t ts_ns(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec;
}

/* ---- durations ---- */

TCASE(usleep_duration)
{
	useconds_t us[] = { 1, 1000, 20000, 120000 };
	for (unsigned i = 0; i < 4; i++) {
		uint64_t t0 = tc_now_ns();
		CHECK_EQ(usleep(us[i]), 0);
		CHECK_DURATION(tc_now_ns() - t0, us[i] * 1000ull);
	}
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(usleep(0), 0);
	CHECK(tc_now_ns() - t0 < TOLERANCE);
}

TCASE(nanosleep_duration)
{
	struct timespec req[] = { { 0, 1 }, { 0, 5000000 }, { 0, 150000000 }, { 0, 0 } };
	long long want[] = { 1, 5000000, 150000000, 0 };
	for (unsigned i = 0; i < 4; i++) {
		struct timespec rem = { 99, 99 };
		uint64_t t0 = tc_now_ns();
		CHECK_EQ(nanosleep(&req[i], &rem), 0);
		CHECK_DURATION(tc_now_ns() - t0, (uint64_t)want[i]);
		/* rem is only written when interrupted; an uninterrupted
		 * sleep may leave it alone or zero it */
		CHECK((rem.tv_sec == 99 && rem.tv_nsec == 99) || (rem.tv_sec == 0 && rem.tv_nsec == 0));
	}
	/* rem may be NULL */
	struct timespec r = { 0, 2000000 };
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(nanosleep(&r, NULL), 0);
	CHECK_DURATION(tc_now_ns() - t0, 2 * MS);
}

TCASE(nanosleep_over_a_second)
{
	struct timespec req = { 1, 100000000 };
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(nanosleep(&req, NULL), 0);
	CHECK_DURATION(tc_now_ns() - t0, 1100 * MS);
}

static void check_clock_relative(clockid_t clock)
{
	long ms[] = { 0, 1, 30, 200 };
	for (unsigned i = 0; i < 4; i++) {
		struct timespec req = { 0, ms[i] * 1000000L };
		struct timespec before, after;
		clock_gettime(clock, &before);
		uint64_t t0 = tc_now_ns();
		CHECK_OK(clock_nanosleep(clock, 0, &req, NULL));
		uint64_t el = tc_now_ns() - t0;
		clock_gettime(clock, &after);
		CHECK_DURATION(el, (uint64_t)ms[i] * MS);
		/* the named clock moved at least that much too */
		CHECK(ts_ns(&after) - ts_ns(&before) >= (uint64_t)ms[i] * MS);
	}
}

TCASE(clock_nanosleep_relative_monotonic)
{
	check_clock_relative(CLOCK_MONOTONIC);
}

TCASE(clock_nanosleep_relative_realtime)
{
	check_clock_relative(CLOCK_REALTIME);
}

static void check_clock_abs(clockid_t clock)
{
	long ms[] = { 1, 40, 250 };
	for (unsigned i = 0; i < 3; i++) {
		struct timespec dl = tc_abs_ms(clock, ms[i]);
		CHECK_OK(clock_nanosleep(clock, TIMER_ABSTIME, &dl, NULL));
		struct timespec now;
		clock_gettime(clock, &now);
		CHECK(ts_ns(&now) >= ts_ns(&dl)); /* not before the deadline */
		if (ts_ns(&now) - ts_ns(&dl) > TOLERANCE)
			TFAIL("woke %.3f ms after the deadline", (ts_ns(&now) - ts_ns(&dl)) / 1e6);
	}
	/* a deadline already past returns at once */
	struct timespec past;
	clock_gettime(clock, &past);
	past.tv_sec -= 5;
	uint64_t t0 = tc_now_ns();
	CHECK_OK(clock_nanosleep(clock, TIMER_ABSTIME, &past, NULL));
	CHECK(tc_now_ns() - t0 < 250 * MS);
	struct timespec zero = { 0, 0 };
	CHECK_OK(clock_nanosleep(clock, TIMER_ABSTIME, &zero, NULL));
	CHECK(tc_now_ns() - t0 < 250 * MS);
}

TCASE(clock_nanosleep_abstime_monotonic)
{
	check_clock_abs(CLOCK_MONOTONIC);
}

TCASE(clock_nanosleep_abstime_realtime)
{
	check_clock_abs(CLOCK_REALTIME);
}

TCASE(sleep_one_second)
{
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(sleep(1), 0);
	CHECK_DURATION(tc_now_ns() - t0, 1000 * MS);
	t0 = tc_now_ns();
	CHECK_EQ(sleep(0), 0);
	CHECK(tc_now_ns() - t0 < TOLERANCE);
}

/* ---- errors ---- */

TCASE(bad_times_einval)
{
	struct timespec bad[] = { { 0, 1000000000L }, { 0, -1 }, { 1, 2000000000L }, { -1, 0 } };
	for (unsigned i = 0; i < 4; i++) {
		uint64_t t0 = tc_now_ns();
		errno = 0;
		CHECK_EQ(nanosleep(&bad[i], NULL), -1);
		CHECK_EQ(errno, EINVAL);
		/* clock_nanosleep returns the error instead of setting errno */
		CHECK_EQ(clock_nanosleep(CLOCK_MONOTONIC, 0, &bad[i], NULL), EINVAL);
		CHECK_EQ(clock_nanosleep(CLOCK_REALTIME, 0, &bad[i], NULL), EINVAL);
		if (bad[i].tv_sec >= 0) /* negative absolute times are merely past */
			CHECK_EQ(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &bad[i], NULL), EINVAL);
		CHECK(tc_now_ns() - t0 < 250 * MS); /* none of them slept */
	}
	struct timespec ok = { 0, 1000 };
	CHECK_EQ(clock_nanosleep(CLOCK_THREAD_CPUTIME_ID, 0, &ok, NULL), EINVAL);
	/* as the kernel (and so NPTL) answers: no such clock is EINVAL; a
	 * clock nobody can sleep on is ENOTSUP */
	CHECK_EQ(clock_nanosleep((clockid_t)12345, 0, &ok, NULL), EINVAL);
	CHECK_EQ(clock_nanosleep((clockid_t)-1000, 0, &ok, NULL), EINVAL);
	CHECK_EQ(clock_nanosleep(CLOCK_MONOTONIC_COARSE, 0, &ok, NULL), ENOTSUP);
	CHECK_EQ(clock_nanosleep(CLOCK_MONOTONIC_RAW, 0, &ok, NULL), ENOTSUP);
	/* the process's CPU clock can be slept on: 1 µs of CPU comes soon */
	CHECK_EQ(clock_nanosleep(CLOCK_PROCESS_CPUTIME_ID, 0, &ok, NULL), 0);
}

/* ---- only the caller parks ---- */

struct progress {
	int stop;
	long count;
};

static void *make_progress(void *arg)
{
	struct progress *p = arg;
	while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
		__atomic_add_fetch(&p->count, 1, __ATOMIC_RELAXED);
		sched_yield();
	}
	return NULL;
}

/* While `sleeper` runs, another thread keeps counting: it must count a
 * good deal during the sleep itself. */
static void check_progress_during(void (*sleeper)(void), uint64_t want_ns)
{
	struct progress p = { 0, 0 };
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, make_progress, &p));
	while (__atomic_load_n(&p.count, __ATOMIC_RELAXED) == 0)
		sched_yield();
	long before = __atomic_load_n(&p.count, __ATOMIC_RELAXED);
	uint64_t t0 = tc_now_ns();
	sleeper(); /* no yield between the reads but this */
	uint64_t el = tc_now_ns() - t0;
	long during = __atomic_load_n(&p.count, __ATOMIC_RELAXED) - before;
	__atomic_store_n(&p.stop, 1, __ATOMIC_RELEASE);
	CHECK_OK(pthread_join(t, NULL));
	CHECK_DURATION(el, want_ns);
	if (during < 100)
		TFAIL("the other thread advanced only %ld times during a %.0f ms sleep", during,
		      el / 1e6);
}

static void do_usleep(void) { usleep(100000); }
static void do_nanosleep(void)
{
	struct timespec ts = { 0, 100000000 };
	nanosleep(&ts, NULL);
}
static void do_clock_nanosleep_abs(void)
{
	struct timespec dl = tc_abs_ms(CLOCK_MONOTONIC, 100);
	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl, NULL);
}
static void do_clock_nanosleep_rt(void)
{
	struct timespec ts = { 0, 100000000 };
	clock_nanosleep(CLOCK_REALTIME, 0, &ts, NULL);
}
static void do_sleep(void) { sleep(1); }

static void all_progress_checks(void)
{
	check_progress_during(do_usleep, 100 * MS);
	check_progress_during(do_nanosleep, 100 * MS);
	check_progress_during(do_clock_nanosleep_abs, 100 * MS);
	check_progress_during(do_clock_nanosleep_rt, 100 * MS);
	check_progress_during(do_sleep, 1000 * MS);
}

TCASE(sleep_parks_only_caller)
{
	all_progress_checks();
}

TCASE(sleep_parks_only_caller_one_worker)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	all_progress_checks();
}

/* Also from a thread that is not main, with main the one making
 * progress. */
static void *sleep_in_thread(void *arg)
{
	(void)arg;
	uint64_t t0 = tc_now_ns();
	usleep(150000);
	return (void *)(tc_now_ns() - t0);
}

static void sleeper_thread_case(void)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, sleep_in_thread, NULL));
	long spins = 0;
	uint64_t t0 = tc_now_ns();
	while (tc_now_ns() - t0 < 100 * MS) {
		sched_yield();
		spins++;
	}
	CHECK(spins > 100);
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK_DURATION((uint64_t)r, 150 * MS);
}

TCASE(thread_sleeps_main_runs)
{
	sleeper_thread_case();
}

TCASE(thread_sleeps_main_runs_one_worker)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	sleeper_thread_case();
}

/* Many sleepers at once sleep side by side, not one after another. */
static void *sleep_100ms(void *arg)
{
	(void)arg;
	uint64_t t0 = tc_now_ns();
	struct timespec ts = { 0, 100000000 };
	nanosleep(&ts, NULL);
	return (void *)(tc_now_ns() - t0);
}

static void many_sleepers(void)
{
	enum { N = 1000 };
	static pthread_t t[N];
	uint64_t t0 = tc_now_ns();
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_create(&t[i], NULL, sleep_100ms, NULL));
	for (int i = 0; i < N; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK_DURATION((uint64_t)r, 100 * MS);
	}
	uint64_t el = tc_now_ns() - t0;
	if (el > 1000 * MS)
		TFAIL("%d concurrent 100 ms sleeps took %.0f ms", N, el / 1e6);
}

TCASE(many_concurrent_sleepers)
{
	many_sleepers();
}

TCASE(many_concurrent_sleepers_one_worker)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	many_sleepers();
}
