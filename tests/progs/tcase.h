/* tcase.h: a tiny harness for test programs that link libthread.
 *
 * The runtime under test must not live inside the test runner (Criterion's
 * own threads would run on it), so each test program is an ordinary
 * program linked with -lthread holding many cases; tests/runner.c runs
 * every case as its own process under Criterion.  `prog --list` names the
 * cases, `prog CASE` runs one: exit 0 is a pass, anything else (a failed
 * CHECK, a crash, the runner's timeout) a failure. */
#ifndef CAPRICE_TCASE_H
#define CAPRICE_TCASE_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef void (*tcase_fn)(void);
void tcase_register(const char *name, tcase_fn fn);

#define TCASE(name)                                                         \
	static void tcase_##name(void);                                     \
	__attribute__((constructor)) static void tcase_reg_##name(void)     \
	{                                                                   \
		tcase_register(#name, tcase_##name);                        \
	}                                                                   \
	static void tcase_##name(void)

#define TFAIL(...)                                                          \
	do {                                                                \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);             \
		fprintf(stderr, __VA_ARGS__);                               \
		fputc('\n', stderr);                                        \
		fflush(NULL);                                               \
		_exit(1);                                                   \
	} while (0)

#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c))                                                   \
			TFAIL("CHECK failed: %s", #c);                      \
	} while (0)

#define CHECK_EQ(a, b)                                                      \
	do {                                                                \
		long long va_ = (long long)(a), vb_ = (long long)(b);       \
		if (va_ != vb_)                                             \
			TFAIL("CHECK_EQ failed: %s == %lld, %s == %lld", #a, va_, #b, vb_); \
	} while (0)

/* A pthread call that must return 0 (they return error numbers). */
#define CHECK_OK(call)                                                      \
	do {                                                                \
		int e_ = (call);                                            \
		if (e_ != 0)                                                \
			TFAIL("%s returned %d (%s)", #call, e_, strerror(e_));   \
	} while (0)

static inline uint64_t tc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* How late a timed event may be before a case calls it a failure.
 * Deadlines are checked strictly on the early side (firing early is a bug),
 * but a 2-core CI machine running many sanitized cases at once can delay
 * any wakeup by hundreds of ms, so the late side gets this much slack:
 * enough to tell "late" from "never" or "waited for the wrong thing".
 * CAPRICE_TEST_SLACK_MS overrides it. */
static inline long tc_slack_ms(void)
{
	const char *env = getenv("CAPRICE_TEST_SLACK_MS");
	if (env && *env)
		return atol(env);
	return getenv("CAPRICE_TEST_SANITIZED") ? 2500 : 1000;
}

/* An upper bound of `ms` as the cases write it, plus the slack. */
static inline uint64_t tc_late_ns(long ms)
{
	return (uint64_t)(ms + tc_slack_ms()) * 1000000u;
}

/* elapsed (ns) must lie in [lo_ms, hi_ms + slack] */
#define CHECK_MS_RANGE(elapsed, lo_ms, hi_ms)                                   \
	tc_check_ms_range(__FILE__, __LINE__, #elapsed, (elapsed), (lo_ms), (hi_ms))

static inline void tc_check_ms_range(const char *file, int line, const char *what, uint64_t el,
                                     long lo, long hi)
{
	if (el < (uint64_t)lo * 1000000u || el > tc_late_ns(hi)) {
		fprintf(stderr, "%s:%d: %s took %.3f ms, wanted %ld..%ld ms (+%ld ms slack)\n", file,
		        line, what, el / 1e6, lo, hi, tc_slack_ms());
		fflush(NULL);
		_exit(1);
	}
}

/* An absolute time `ms` from now on `clock`, for timed calls. */
static inline struct timespec tc_abs_ms(clockid_t clock, long ms)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

#endif
