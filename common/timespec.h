/* timespec.h: struct timespec <-> nanoseconds, written once. */
#ifndef CAPRICE_TIMESPEC_H
#define CAPRICE_TIMESPEC_H

#include <stdint.h>
#include <time.h>

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

#endif
