/* bench_util.h: what each benchmark program of bench/ needs, written
 * once: a fatal message naming the program, and the monotonic clock in
 * nanoseconds.  The includer defines BENCH_NAME (e.g. "pipeline-" IMPL)
 * first. */
#ifndef CAPRICE_BENCH_UTIL_H
#define CAPRICE_BENCH_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifndef BENCH_NAME
#error "define BENCH_NAME before including bench_util.h"
#endif

static _Noreturn __attribute__((format(printf, 1, 2))) void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, BENCH_NAME ": ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* A command-line number: all of v a whole number from lo to hi, or the
 * program stops naming the option (name) and what it wants. */
static inline long bench_arg_long(const char *name, const char *v, long lo, long hi)
{
	char *end;
	errno = 0;
	long x = v ? strtol(v, &end, 10) : 0;
	if (!v || !*v || errno || *end || x < lo || x > hi)
		die("%s wants a whole number from %ld to %ld, not '%s'", name, lo, hi, v ? v : "");
	return x;
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The blocked-threads census (primitives.c, linked.c): threads that each
 * arrive, tell main when the last is in, and wait on one condvar until
 * released; what they hold meanwhile is what one blocked thread costs. */
struct census {
	pthread_mutex_t m;
	pthread_cond_t cv;       /* every thread waits here */
	pthread_cond_t all_in;   /* the last to arrive tells main */
	long arrived, target;
	bool released;
};

static inline void census_arrive_and_wait(struct census *c)
{
	pthread_mutex_lock(&c->m);
	if (++c->arrived == c->target)
		pthread_cond_signal(&c->all_in);
	while (!c->released)
		pthread_cond_wait(&c->cv, &c->m);
	pthread_mutex_unlock(&c->m);
}

#endif
