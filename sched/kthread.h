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

/* Starts a detached kernel thread running fn(arg) with every signal
 * blocked (signals are for workers, where the program's threads run).
 * Returns 0 or an error number. */
int cp_kthread_spawn(void *(*fn)(void *), void *arg);

#endif
