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
