/* cond.c: condition variables and their attributes.  A waiter queues
 * under the condvar's spinlock before it lets go of the mutex, so a
 * signal sent by the mutex holder after that point always finds it. */
#include <errno.h>

#include "lt.h"
#include "mutex.h"

struct lt_cond {
	cp_spinlock lock;
	uint32_t clock_monotonic;   /* 0 (the zero initializer): CLOCK_REALTIME */
	struct cp_waitq waiters;
};
_Static_assert(sizeof(struct lt_cond) <= sizeof(pthread_cond_t), "lt_cond too big");

/* condattr: bit 0 = CLOCK_MONOTONIC */
#define CA_MONOTONIC 1

static inline struct lt_cond *C(pthread_cond_t *c) { return (struct lt_cond *)c; }

CP_EXPORT int pthread_cond_init(pthread_cond_t *cond, const pthread_condattr_t *attr)
{
	*cond = (pthread_cond_t){ 0 };
	if (attr)
		C(cond)->clock_monotonic = *(const int *)attr & CA_MONOTONIC;
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

static int wait(struct lt_cond *c, pthread_mutex_t *mutex, uint64_t deadline)
{
	struct lt_thread *self = lt_self();
	lt_testcancel(self);
	if (!lt_mutex_held_by_caller(mutex))
		return EPERM;
	struct cp_waiter w;
	cp_spin_lock(&c->lock);
	/* queued first, then the mutex goes: the lockless "nobody waits"
	 * check in signal/broadcast relies on that order */
	int r = cp_wait_then(&c->waiters, &c->lock, &w, deadline, lt_cancellable(self),
	                     release_mutex, mutex);
	lt_mutex_lock(mutex);
	if (r == EINTR) {
		lt_testcancel(self); /* unwinds with the mutex held, as POSIX says */
		r = 0;               /* a stale interrupt: a spurious wakeup */
	}
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
	(void)attr;
	return lt_pshared_check(pshared);
}

CP_EXPORT int pthread_condattr_getpshared(const pthread_condattr_t *attr, int *pshared)
{
	(void)attr;
	*pshared = PTHREAD_PROCESS_PRIVATE;
	return 0;
}
