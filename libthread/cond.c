/* cond.c: condition variables and their attributes.  A waiter queues
 * under the condvar's spinlock before it lets go of the mutex, so a
 * signal sent by the mutex holder after that point always finds it.
 *
 * A process-shared condvar cannot keep its waiters in a queue of this
 * process's threads: its waiters wait on a sequence word as a shared
 * futex (parking only their user thread, futex.c), and every signal or
 * broadcast bumps the word and wakes them all.  A waiter reads the word
 * while it holds the mutex, so a signal sent after it let go of the mutex
 * changes the word first and the wait returns at once; waking all for a
 * signal is what keeps a waiter that came later from taking the wakeup of
 * one that came first (POSIX allows the spurious wakeups the others
 * get).  Processes on Caprice share it, across fork too; glibc's layout
 * is another, so a process on NPTL cannot. */
#include <errno.h>
#include <limits.h>

#include "lt.h"
#include "mutex.h"
#include "timespec.h"

struct lt_cond {
	cp_spinlock lock;
	uint32_t clock_monotonic;   /* 0 (the zero initializer): CLOCK_REALTIME */
	struct cp_waitq waiters;
	uint32_t shared;            /* PTHREAD_PROCESS_SHARED */
	uint32_t seq;               /* shared: bumped by every signal */
};
_Static_assert(sizeof(struct lt_cond) <= sizeof(pthread_cond_t), "lt_cond too big");

/* condattr: bit 0 = CLOCK_MONOTONIC, bit 1 = PTHREAD_PROCESS_SHARED */
#define CA_MONOTONIC 1
#define CA_PSHARED   2

static inline struct lt_cond *C(pthread_cond_t *c) { return (struct lt_cond *)c; }

CP_EXPORT int pthread_cond_init(pthread_cond_t *cond, const pthread_condattr_t *attr)
{
	*cond = (pthread_cond_t){ 0 };
	if (attr) {
		C(cond)->clock_monotonic = *(const int *)attr & CA_MONOTONIC;
		C(cond)->shared = (*(const int *)attr & CA_PSHARED) != 0;
	}
	return 0;
}

/* Process-shared: a bump of the word and a wake of every waiter. */
static int wake_shared(struct lt_cond *c)
{
	__atomic_add_fetch(&c->seq, 1, __ATOMIC_RELEASE);
	lt_futex_wake(&c->seq, INT_MAX, true);
	return 0;
}

CP_EXPORT int pthread_cond_destroy(pthread_cond_t *cond)
{
	struct lt_cond *c = C(cond);
	cp_spin_lock(&c->lock);
	bool busy = !cp_waitq_empty(&c->waiters);
	cp_spin_unlock(&c->lock);
	return busy ? EBUSY : 0;
}

CP_EXPORT int pthread_cond_signal(pthread_cond_t *cond)
{
	struct lt_cond *c = C(cond);
	if (cp_unlikely(c->shared))
		return wake_shared(c);
	/* nobody queued: a waiter queues before it lets go of the mutex, so
	 * a signaller that changed the predicate under the mutex sees it */
	if (!__atomic_load_n(&c->waiters.head, __ATOMIC_ACQUIRE))
		return 0;
	cp_spin_lock(&c->lock);
	cp_wake_one(&c->waiters);
	cp_spin_unlock(&c->lock);
	return 0;
}

CP_EXPORT int pthread_cond_broadcast(pthread_cond_t *cond)
{
	struct lt_cond *c = C(cond);
	if (cp_unlikely(c->shared))
		return wake_shared(c);
	if (!__atomic_load_n(&c->waiters.head, __ATOMIC_ACQUIRE))
		return 0;
	cp_spin_lock(&c->lock);
	cp_wake_all(&c->waiters);
	cp_spin_unlock(&c->lock);
	return 0;
}

static void release_mutex(void *mutex)
{
	lt_mutex_unlock(mutex);
}

static int wait_shared(struct lt_cond *c, pthread_mutex_t *mutex, uint64_t deadline,
                       struct lt_thread *self)
{
	uint32_t seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
	lt_mutex_unlock(mutex);
	struct timespec abs, *at = NULL;
	if (deadline != CP_NO_DEADLINE) {
		abs = cp_ns_to_ts(deadline);
		at = &abs;
	}
	int e = 0;
	if (lt_futex_wait_until(&c->seq, seq, true, CLOCK_MONOTONIC, at, lt_interruptible(self)) < 0)
		e = errno;
	int relocked = lt_mutex_lock(mutex);
	if (relocked == ENOTRECOVERABLE)
		return relocked; /* a robust mutex, not held */
	if (e == EINTR)
		lt_interrupted(self); /* a cancel acts with the mutex held, as POSIX says */
	if (relocked)
		return relocked; /* EOWNERDEAD: held, its owner died */
	return e == ETIMEDOUT ? ETIMEDOUT : 0; /* EAGAIN: signalled in between */
}

static int wait(struct lt_cond *c, pthread_mutex_t *mutex, uint64_t deadline)
{
	struct lt_thread *self = lt_self();
	lt_testcancel(self);
	if (!lt_mutex_held_by_caller(mutex))
		return EPERM;
	if (cp_unlikely(c->shared))
		return wait_shared(c, mutex, deadline, self);
	struct cp_waiter w;
	cp_spin_lock(&c->lock);
	/* queued first, then the mutex goes: the lockless "nobody waits"
	 * check in signal/broadcast relies on that order */
	int r = cp_wait_then(&c->waiters, &c->lock, &w, deadline, lt_interruptible(self),
	                     release_mutex, mutex);
	int relocked = lt_mutex_lock(mutex);
	if (relocked == ENOTRECOVERABLE)
		return relocked; /* a robust mutex, not held */
	if (r == EINTR) {
		lt_interrupted(self); /* a cancel unwinds with the mutex held, as POSIX says */
		r = 0;                /* a handler ran, or a stale interrupt: a spurious wakeup */
	}
	if (relocked)
		return relocked; /* EOWNERDEAD: held, its owner died */
	return r == ENOMEM ? EAGAIN : r;
}

CP_EXPORT int pthread_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
	return wait(C(cond), mutex, CP_NO_DEADLINE);
}

CP_EXPORT int pthread_cond_clockwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                     clockid_t clock, const struct timespec *abstime)
{
	uint64_t dl;
	int e = lt_deadline(clock, abstime, &dl);
	if (e)
		return e;
	return wait(C(cond), mutex, dl);
}

CP_EXPORT int pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                                     const struct timespec *abstime)
{
	clockid_t clock = C(cond)->clock_monotonic ? CLOCK_MONOTONIC : CLOCK_REALTIME;
	return pthread_cond_clockwait(cond, mutex, clock, abstime);
}

CP_EXPORT int pthread_condattr_init(pthread_condattr_t *attr)
{
	*(int *)attr = 0;
	return 0;
}

CP_EXPORT int pthread_condattr_destroy(pthread_condattr_t *attr)
{
	(void)attr;
	return 0;
}

CP_EXPORT int pthread_condattr_setclock(pthread_condattr_t *attr, clockid_t clock)
{
	int *a = (int *)attr;
	if (clock == CLOCK_MONOTONIC)
		*a |= CA_MONOTONIC;
	else if (clock == CLOCK_REALTIME)
		*a &= ~CA_MONOTONIC;
	else
		return EINVAL;
	return 0;
}

CP_EXPORT int pthread_condattr_getclock(const pthread_condattr_t *attr, clockid_t *clock)
{
	*clock = (*(const int *)attr & CA_MONOTONIC) ? CLOCK_MONOTONIC : CLOCK_REALTIME;
	return 0;
}

CP_EXPORT int pthread_condattr_setpshared(pthread_condattr_t *attr, int pshared)
{
	if (lt_pshared_check(pshared))
		return EINVAL;
	int *a = (int *)attr;
	*a = pshared == PTHREAD_PROCESS_SHARED ? *a | CA_PSHARED : *a & ~CA_PSHARED;
	return 0;
}

CP_EXPORT int pthread_condattr_getpshared(const pthread_condattr_t *attr, int *pshared)
{
	*pshared = (*(const int *)attr & CA_PSHARED) ? PTHREAD_PROCESS_SHARED
	                                             : PTHREAD_PROCESS_PRIVATE;
	return 0;
}
