/* kthread.h: kernel threads that are not workers.
 *
 * The program's pthread_create is ours, so the runtime reaches the C
 * library's own to make its kernel threads: the workers, and the helper
 * threads that run calls which must block in the kernel. */
#ifndef CAPRICE_KTHREAD_H
#define CAPRICE_KTHREAD_H

#include <pthread.h>

/* The C library's pthread_create (dies with a message if it is missing). */
typedef int (*cp_real_pthread_create_fn)(pthread_t *, const pthread_attr_t *,
                                         void *(*)(void *), void *);
cp_real_pthread_create_fn cp_real_pthread_create(void);

/* Makes a kernel thread of the runtime's (a worker, the monitor, a helper)
 * with the C library's pthread_create and a stack of its own size, not
 * RLIMIT_STACK's 8 MiB: these threads run the runtime's loops and the
 * calls it offloads, and a process under RLIMIT_AS cannot spare 8 MiB of
 * address space for each.  0 or an error number. */
int cp_kthread_create(pthread_t *kt, void *(*fn)(void *), void *arg);

/* Starts a detached kernel thread running fn(arg) with every signal
 * blocked (signals are for workers, where the program's threads run).
 * Returns 0 or an error number. */
int cp_kthread_spawn(void *(*fn)(void *), void *arg);

#endif
