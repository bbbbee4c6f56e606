/* mutex.h: the mutex layout, shared with the condition variable (which
 * releases and retakes a mutex around its wait). */
#ifndef CAPRICE_LT_MUTEX_H
#define CAPRICE_LT_MUTEX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "scheduler.h"

struct lt_mutex {
	uint32_t state;        /* 0 free, 1 held, 2 held with possible waiters */
	uint32_t count;        /* extra recursive holds */
	cp_spinlock qlock;     /* guards waiters */
	int prioceiling;       /* PTHREAD_PRIO_PROTECT's ceiling */
	int kind;              /* glibc's __kind: PTHREAD_MUTEX_* type */
	int protocol;          /* PTHREAD_PRIO_* (the kind's bits act on it) */
	void *owner;           /* lt_thread, or a foreign thread's pthread_self */
	struct cp_waitq waiters;
};

/* in the kind (glibc's bits) */
#define LT_MUTEX_TYPE_MASK 0x3
#define LT_KIND_ROBUST     16  /* PTHREAD_MUTEX_ROBUST_NORMAL_NP */
#define LT_KIND_PSHARED    128 /* PTHREAD_MUTEX_PSHARED_BIT */

/* Robust mutexes (mutex_robust.c), in glibc's layout rather than the one
 * above; deadline as for the others (CP_NO_DEADLINE, or 0 with try). */
int lt_robust_lock(pthread_mutex_t *m, uint64_t deadline, bool try) CP_HIDDEN;
int lt_robust_unlock(pthread_mutex_t *m) CP_HIDDEN;
bool lt_robust_held_by_caller(pthread_mutex_t *m) CP_HIDDEN;
int lt_robust_consistent(pthread_mutex_t *m) CP_HIDDEN;


int lt_mutex_lock(pthread_mutex_t *m) CP_HIDDEN;
int lt_mutex_unlock(pthread_mutex_t *m) CP_HIDDEN;
/* False when unlocking would be EPERM (recursive and errorcheck kinds
 * track their owner; a normal mutex is taken on trust, as in glibc). */
bool lt_mutex_held_by_caller(pthread_mutex_t *m) CP_HIDDEN;

#endif
