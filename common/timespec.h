/* timespec.h: struct timespec (and timeval, and milliseconds) <->
 * nanoseconds, written once. */
#ifndef CAPRICE_TIMESPEC_H
#define CAPRICE_TIMESPEC_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/time.h>
#include <time.h>

#define CP_NS_PER_SEC 1000000000ull
#define CP_NS_PER_MS  1000000ull
#define CP_NS_PER_US  1000ull

/* A timespec with tv_sec >= 0 and a valid tv_nsec (a clock's reading, or
 * one that passed cp_ts_valid_rel) in ns. */
static inline uint64_t cp_ts_to_ns(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec;
}

static inline struct timespec cp_ns_to_ts(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
	                       .tv_nsec = (long)(ns % 1000000000u) };
	return ts;
}

/* tv_nsec within [0, 1e9): what a call taking an absolute time checks
 * (EINVAL otherwise); tv_sec may be negative (long past). */
static inline bool cp_ts_valid(const struct timespec *ts)
{
	return ts->tv_nsec >= 0 && ts->tv_nsec < (long)CP_NS_PER_SEC;
}

/* The same for a relative time (a timeout, a sleep): tv_sec >= 0 too. */
static inline bool cp_ts_valid_rel(const struct timespec *ts)
{
	return ts->tv_sec >= 0 && cp_ts_valid(ts);
}

/* A timespec that passed cp_ts_valid, in ns: before the epoch is 0, past
 * what 64 bits hold UINT64_MAX. */
static inline uint64_t cp_ts_to_ns_sat(const struct timespec *ts)
{
	if (ts->tv_sec < 0)
		return 0;
	if ((uint64_t)ts->tv_sec > (UINT64_MAX - (uint64_t)ts->tv_nsec) / CP_NS_PER_SEC)
		return UINT64_MAX;
	return cp_ts_to_ns(ts);
}

/* a + b, UINT64_MAX if that overflows (a deadline `b` after `a`). */
static inline uint64_t cp_ns_add_sat(uint64_t a, uint64_t b)
{
	return a + b < a ? UINT64_MAX : a + b;
}

/* tv_usec within [0, 1e6) and tv_sec >= 0: a valid timeout. */
static inline bool cp_tv_valid_rel(const struct timeval *tv)
{
	return tv->tv_sec >= 0 && tv->tv_usec >= 0 && tv->tv_usec < 1000000;
}

/* A timeval that passed cp_tv_valid_rel, in ns (UINT64_MAX past what 64
 * bits hold). */
static inline uint64_t cp_tv_to_ns(const struct timeval *tv)
{
	uint64_t us = (uint64_t)tv->tv_usec * CP_NS_PER_US;
	if ((uint64_t)tv->tv_sec > (UINT64_MAX - us) / CP_NS_PER_SEC)
		return UINT64_MAX;
	return (uint64_t)tv->tv_sec * CP_NS_PER_SEC + us;
}

/* ns as a timeval, rounded down to the microsecond. */
static inline struct timeval cp_ns_to_tv(uint64_t ns)
{
	struct timeval tv = { .tv_sec = (time_t)(ns / CP_NS_PER_SEC),
	                      .tv_usec = (suseconds_t)(ns % CP_NS_PER_SEC / CP_NS_PER_US) };
	return tv;
}

/* ns rounded up to whole milliseconds, at most INT_MAX: for the calls
 * that take an int of ms (a timeout must never end early). */
static inline int cp_ns_to_ms_ceil(uint64_t ns)
{
	uint64_t ms = ns / CP_NS_PER_MS + (ns % CP_NS_PER_MS != 0);
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

#endif
