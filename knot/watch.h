/* watch.h: timeouts for the thread-per-connection builds without a timer
 * per operation.  Each connection owns a slot holding the deadline of the
 * read or write it is about to block in (two plain stores per request,
 * no system call); one watchdog thread scans the slots a few times a
 * second and shuts down the socket of any connection past its deadline,
 * which wakes the blocked call (recv returns 0, send fails).  The
 * alternative, SO_RCVTIMEO/SO_SNDTIMEO, costs a setsockopt per change and,
 * under Caprice, a linked timeout on every single recv and send. */
#ifndef KNOT_WATCH_H
#define KNOT_WATCH_H

#include <stdbool.h>
#include <stdint.h>

enum { WATCH_READ = 1, WATCH_SEND = 2 };

/* Room for n connections at once.  0, or -1 on allocation failure. */
int watch_init(long n);

/* A slot watching fd (-1: none free). */
int watch_add(int fd);
/* Stops watching; call before close(fd) (the watchdog must never shut
 * down a descriptor number that was reused). */
void watch_remove(int slot);

/* The next blocking call is a `kind` that must finish by deadline_ms
 * (CLOCK_MONOTONIC_COARSE milliseconds).  Returns false if the watchdog
 * already fired for this connection. */
bool watch_arm(int slot, int kind, int64_t deadline_ms);

/* Whether the watchdog shut the connection down for a missed deadline. */
bool watch_fired(int slot);

/* The watchdog: scans every `period_ms`; never returns. */
void *watch_thread(void *period_ms);

int64_t watch_now_ms(void);

#endif
