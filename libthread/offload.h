/* offload.h: running a call that must block in the kernel on a helper
 * kernel thread, so that only the calling user thread waits.
 *
 * Some blocking happens where no io_uring operation can stand in: the C
 * library's resolver, waitpid, file locks, stdio reading a pipe.  Done on
 * a worker, such a call would stop every user thread queued there. */
#ifndef CAPRICE_OFFLOAD_H
#define CAPRICE_OFFLOAD_H

#include "compiler.h"

/* Runs fn(arg) on a helper kernel thread while the calling user thread
 * parks, and returns fn's result with the helper's errno in errno.  On a
 * kernel thread that is not a user thread, or before the runtime runs,
 * it simply calls fn(arg).  `what` names the call for CAPRICE_DEBUG and
 * error messages.  Not a cancellation point: the call runs to its end. */
long lt_offload(const char *what, long (*fn)(void *), void *arg) CP_HIDDEN;

/* A raw system call (result or -1 with errno), offloaded as above. */
long lt_offload_syscall(const char *what, long nr, long a, long b, long c, long d,
                        long e) CP_HIDDEN;

/* Counters for CAPRICE_STATS: calls offloaded, helper threads made. */
void lt_offload_stats(unsigned long long *calls, unsigned *helpers) CP_HIDDEN;

/* In a fork child: the helpers did not survive. */
void lt_offload_after_fork(void) CP_HIDDEN;

#endif
