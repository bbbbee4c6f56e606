/* watch.h: timeouts for the thread-per-connection builds without a timer
 * per operation.  Each connection owns a word holding the deadline of the
 * read or write it is about to block in (a plain store per blocking
 * call, no system call), in its own frame, where its thread's stack is
 * warm in the caches; one watchdog thread scans the registered words a
 * few times a second and shuts down the socket of any connection past
 * its deadline, which wakes the blocked call (recv returns 0, send
 * fails).  (With the words in one table, a cache line each, every arm
 * missed the cache at 10,000 connections: 0.3 us of knot's CPU per
 * request.)  The alternative, SO_RCVTIMEO/SO_SNDTIMEO, costs a
 * setsockopt per change and, under Caprice, a linked timeout on every
 * single recv and send. */
#ifndef KNOT_WATCH_H
#define KNOT_WATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum { WATCH_READ = 1, WATCH_SEND = 2 };

/* Room for n connections at once.  0, or -1 on allocation failure. */
int watch_init(long n);

/* A connection's watch: lives in its thread's frame from watch_add to
 * watch_remove. */
struct watch {
	_Atomic uint64_t word; /* deadline << 3 | kind << 1 | fired */
	int slot;
};

/* Starts watching fd with w; false if no slot is free. */
bool watch_add(struct watch *w, int fd);
/* Stops watching; call before close(fd) (the watchdog must never shut
 * down a descriptor number that was reused). */
void watch_remove(struct watch *w);

/* The next blocking call is a `kind` that must finish by deadline_ms
 * (CLOCK_MONOTONIC_COARSE milliseconds).  Returns false if the watchdog
 * already fired for this connection. */
bool watch_arm(struct watch *w, int kind, int64_t deadline_ms);

/* Whether the watchdog shut the connection down for a missed deadline. */
bool watch_fired(const struct watch *w);

/* The watchdog: scans every `period_ms`; never returns. */
void *watch_thread(void *period_ms);

int64_t watch_now_ms(void);

#endif
