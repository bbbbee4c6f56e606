/* mutex.c: pthread mutexes (normal, recursive, errorcheck) and their
 * attributes, laid out inside glibc's 40-byte pthread_mutex_t so that its
 * static initializers (which only set __kind) keep working.
 *
 * Fast path: one compare-and-swap to lock, one exchange to unlock.
 * The lock word is 0 (free), 1 (held) or 2 (held, maybe waiters), as in
 * Drepper's futex mutex, and as glibc's; contenders queue under a
 * spinlock and park.
 *
 * A process-shared mutex keeps glibc's lock word and protocol instead:
 * its kind carries glibc's shared bit, and contenders wait on the lock
 * word as a shared futex (parking only their user thread: futex.c), so
 * processes on NPTL and on Caprice can share it.  Its owner, which the
 * recursive and errorcheck types check, is named across processes
 * (lt_process_owner) and kept where glibc's non-robust kinds keep
 * nothing, while the word glibc compares with its thread's tid stays 0:
 * neither side mistakes the other's thread for its own.
 *
 * Robust mutexes take glibc's whole layout and the kernel's robust-futex
 * protocol: mutex_robust.c.
 *
 * Priority protocols.  A PTHREAD_PRIO_PROTECT mutex raises the priority of
 * the user thread that locks it to its ceiling (one whose own priority is
 * above the ceiling is refused, EINVAL); a PTHREAD_PRIO_INHERIT one lends
 * each waiter's priority to the holder when the waiter blocks, and the
 * highest remaining waiter's to the thread that takes it next, so that a
 * low thread holding what a high one waits for is not kept off its
 * worker by the threads in between.  The raise lasts until the holder
 * releases its last such mutex (lt_prio_raise).  Such mutexes carry
 * glibc's kind bits for the protocols, which the fast paths' test sends
 * to the slow ones; everything else pays nothing for them. */
#include <errno.h>
#include <linux/futex.h>
#include <stddef.h>

#include "lt.h"
#include "mutex.h"
#include "timespec.h"

_Static_assert(sizeof(struct lt_mutex) <= sizeof(pthread_mutex_t), "lt_mutex too big");
_Static_assert(offsetof(struct lt_mutex, kind) == offsetof(pthread_mutex_t, __data.__kind),
               "kind must sit where glibc's initializers put it");

/* mutexattr bits inside the int of pthread_mutexattr_t */
#define MA_TYPE_MASK   LT_MUTEX_TYPE_MASK
#define MA_PSHARED     0x4
#define MA_ROBUST      0x8
#define MA_PRIO_SHIFT  8
#define MA_PROTO_SHIFT 4
#define MA_PROTO_MASK  (0x3 << MA_PROTO_SHIFT)
/* in the kind: glibc's PTHREAD_MUTEX_PRIO_INHERIT_NP and _PROTECT_NP bits */
#define KIND_PI        0x20
#define KIND_PP        0x40
#define KIND_PRIO      (KIND_PI | KIND_PP)

static inline struct lt_mutex *M(pthread_mutex_t *m) { return (struct lt_mutex *)m; }

static inline void *owner_id(void)
{
	struct lt_thread *t = lt_self();
	return t ? (void *)t : (void *)pthread_self();
}

static inline bool shared(const struct lt_mutex *m)
{
	return m->kind & LT_KIND_PSHARED;
}

/* Whom the owner checks compare with: a pointer of this process, or for a
 * process-shared mutex a name no other process's thread has */
static inline void *owner_of(const struct lt_mutex *m)
{
	return shared(m) ? (void *)(uintptr_t)lt_process_owner() : owner_id();
}

/* glibc's protocol: mark the word contended and wait on it until an
 * exchange finds it free */
static int lock_shared_slow(struct lt_mutex *m, uint64_t deadline)
{
	struct timespec abs, *at = NULL;
	if (deadline != CP_NO_DEADLINE) {
		abs = cp_ns_to_ts(deadline);
		at = &abs;
	}
	while (__atomic_exchange_n(&m->state, 2, __ATOMIC_ACQUIRE) != 0) {
		long r = lt_futex_wait_until(&m->state, 2, true, CLOCK_MONOTONIC, at, false);
		if (r < 0 && errno == ETIMEDOUT)
			return ETIMEDOUT;
	}
	return 0;
}

/* PTHREAD_PRIO_INHERIT, under m->qlock: the holder (if a user thread)
 * runs at least at the caller's priority while the caller waits. */
static void lend_priority(struct lt_mutex *m)
{
	struct lt_thread *self = lt_self(), *holder = lt_from_handle((pthread_t)m->owner);
	if (self && holder && holder != self)
		lt_prio_raise(holder, self->cp.prio);
}

/* PTHREAD_PRIO_INHERIT, under m->qlock, by the caller that just took m:
 * the highest waiter (wait queues are in priority order) lends it its
 * priority. */
static void inherit_from_waiters(struct lt_mutex *m)
{
	struct lt_thread *self = lt_self();
	struct cp_waiter *first = m->waiters.head;
	if (self && first && first->thread)
		lt_prio_raise(self, first->thread->prio);
}

static int lock_slow(struct lt_mutex *m, uint64_t deadline)
{
	if (shared(m))
		return lock_shared_slow(m, deadline);
	if (cp_unlikely(cp_in_scheduler())) {
		/* the scheduler's own code (a backtrace's library, location.c)
		 * cannot park: wait for the holder, who cannot park inside
		 * such a library either */
		uint32_t expect = 0;
		while (!__atomic_compare_exchange_n(&m->state, &expect, 2, false, __ATOMIC_ACQUIRE,
		                                    __ATOMIC_RELAXED)) {
			expect = 0;
			__builtin_ia32_pause();
		}
		return 0;
	}
	cp_spin_lock(&m->qlock);
	for (;;) {
		if (__atomic_exchange_n(&m->state, 2, __ATOMIC_ACQUIRE) == 0) {
			/* nobody queued: say so, or the next unlock would look
			 * for waiters that are not there */
			if (cp_waitq_empty(&m->waiters))
				__atomic_store_n(&m->state, 1, __ATOMIC_RELAXED);
			else if (m->kind & KIND_PI)
				inherit_from_waiters(m);
			cp_spin_unlock(&m->qlock);
			return 0;
		}
		if (m->kind & KIND_PI)
			lend_priority(m);
		struct cp_waiter w;
		int e = cp_wait(&m->waiters, &m->qlock, &w, deadline, CP_INTR_SIGNAL);
		if (e == ETIMEDOUT)
			return ETIMEDOUT;
		if (e == EINTR) /* a handler for this thread runs, then it waits on */
			lt_signals_deliver(lt_self());
		cp_spin_lock(&m->qlock);
	}
}

static inline void release(struct lt_mutex *m)
{
	m->owner = NULL;
	if (cp_unlikely(__atomic_exchange_n(&m->state, 0, __ATOMIC_RELEASE) == 2)) {
		if (shared(m)) {
			lt_futex_wake(&m->state, 1, true);
			return;
		}
		cp_spin_lock(&m->qlock);
		cp_wake_one(&m->waiters);
		cp_spin_unlock(&m->qlock);
	}
}

/* A protocol mutex's unlock: under qlock, so that a waiter lending its
 * priority sees the holder or nobody, never one that has gone on. */
static CP_NOINLINE void release_prio(struct lt_mutex *m)
{
	cp_spin_lock(&m->qlock);
	m->owner = NULL;
	if (__atomic_exchange_n(&m->state, 0, __ATOMIC_RELEASE) == 2)
		cp_wake_one(&m->waiters);
	cp_spin_unlock(&m->qlock);
	struct lt_thread *self = lt_self();
	if (self)
		lt_prio_locks_changed(self, -1);
}

static int acquire(struct lt_mutex *m, void *me, uint64_t deadline, bool try);

/* A protocol mutex's lock, from a user thread. */
static CP_NOINLINE int lock_prio(struct lt_mutex *m, struct lt_thread *self, uint64_t deadline,
                                 bool try)
{
	if (m->kind & KIND_PP) {
		int ceiling = __atomic_load_n(&m->prioceiling, __ATOMIC_RELAXED);
		if (lt_prio_base(self) > ceiling)
			return EINVAL;
		lt_prio_raise(self, ceiling); /* before it waits: no inversion there */
	}
	self->prio_locks++;
	int e = acquire(m, self, deadline, try);
	if (e)
		lt_prio_locks_changed(self, -1); /* drops the raise if it holds no other */
	return e;
}

/* deadline: monotonic ns, CP_NO_DEADLINE, or 0 for "try only" */
static int lock(struct lt_mutex *m, uint64_t deadline, bool try)
{
	if (cp_unlikely(m->kind & LT_KIND_ROBUST))
		return lt_robust_lock((pthread_mutex_t *)m, deadline, try);
	void *me = owner_of(m);
	int type = m->kind & MA_TYPE_MASK;
	if (type == PTHREAD_MUTEX_RECURSIVE && m->owner == me) {
		if (m->count == UINT32_MAX)
			return EAGAIN;
		m->count++;
		return 0;
	}
	if (type == PTHREAD_MUTEX_ERRORCHECK && m->owner == me)
		return try ? EBUSY : EDEADLK;
	struct lt_thread *self;
	if (cp_unlikely(m->kind & KIND_PRIO) && (self = lt_self()) != NULL)
		return lock_prio(m, self, deadline, try);
	return acquire(m, me, deadline, try);
}

static int acquire(struct lt_mutex *m, void *me, uint64_t deadline, bool try)
{
	uint32_t expect = 0;
	if (!__atomic_compare_exchange_n(&m->state, &expect, 1, false,
	                                 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
		if (try)
			return EBUSY;
		int e = lock_slow(m, deadline);
		if (e)
			return e;
	}
	m->owner = me;
	m->count = 0;
	return 0;
}

int lt_mutex_lock(pthread_mutex_t *mutex)
{
	struct lt_mutex *m = M(mutex);
	if (cp_likely((m->kind & (MA_TYPE_MASK | KIND_PRIO | LT_KIND_ROBUST)) ==
	              PTHREAD_MUTEX_NORMAL)) {
		uint32_t expect = 0;
		if (cp_likely(__atomic_compare_exchange_n(&m->state, &expect, 1, false,
		                                          __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))) {
			m->owner = owner_id();
			return 0;
		}
	}
	return lock(m, CP_NO_DEADLINE, false);
}

bool lt_mutex_held_by_caller(pthread_mutex_t *mutex)
{
	struct lt_mutex *m = M(mutex);
	if (m->kind & LT_KIND_ROBUST)
		return lt_robust_held_by_caller(mutex);
	int type = m->kind & MA_TYPE_MASK;
	if (type != PTHREAD_MUTEX_RECURSIVE && type != PTHREAD_MUTEX_ERRORCHECK)
		return true;
	return m->owner == owner_of(m) && __atomic_load_n(&m->state, __ATOMIC_RELAXED);
}

/* The kinds that track their owner, and the protocols' */
static CP_NOINLINE int unlock_slow(struct lt_mutex *m)
{
	if (m->kind & LT_KIND_ROBUST)
		return lt_robust_unlock((pthread_mutex_t *)m);
	int type = m->kind & MA_TYPE_MASK;
	if (type == PTHREAD_MUTEX_RECURSIVE || type == PTHREAD_MUTEX_ERRORCHECK) {
		if (m->owner != owner_of(m) || !__atomic_load_n(&m->state, __ATOMIC_RELAXED))
			return EPERM;
		if (m->count) {
			m->count--;
			return 0;
		}
	}
	if ((m->kind & KIND_PRIO) && lt_self())
		release_prio(m);
	else
		release(m);
	return 0;
}

int lt_mutex_unlock(pthread_mutex_t *mutex)
{
	struct lt_mutex *m = M(mutex);
	/* a normal or adaptive mutex without a protocol: the exchange alone */
	int type = m->kind & MA_TYPE_MASK;
	if (cp_likely((type == PTHREAD_MUTEX_NORMAL || type == PTHREAD_MUTEX_ADAPTIVE_NP) &&
	              !(m->kind & (KIND_PRIO | LT_KIND_ROBUST)))) {
		release(m);
		return 0;
	}
	return unlock_slow(m);
}

CP_EXPORT int pthread_mutex_lock(pthread_mutex_t *m)
{
	return lt_mutex_lock(m);
}

CP_EXPORT int pthread_mutex_unlock(pthread_mutex_t *m)
{
	return lt_mutex_unlock(m);
}

CP_EXPORT int pthread_mutex_trylock(pthread_mutex_t *m)
{
	return lock(M(m), 0, true);
}

CP_EXPORT int pthread_mutex_clocklock(pthread_mutex_t *mutex, clockid_t clock,
                                      const struct timespec *abstime)
{
	struct lt_mutex *m = M(mutex);
	int e = lock(m, 0, true); /* POSIX: no timeout check if it is free */
	if (e != EBUSY)
		return e;
	uint64_t dl;
	e = lt_deadline(clock, abstime, &dl);
	if (e)
		return e;
	return lock(m, dl, false);
}

CP_EXPORT int pthread_mutex_timedlock(pthread_mutex_t *m, const struct timespec *abstime)
{
	return pthread_mutex_clocklock(m, CLOCK_REALTIME, abstime);
}

/* An attribute's ceiling; never set, the lowest SCHED_FIFO priority, as
 * NPTL answers (0 lies outside that range) */
static int ceiling_of(int attr)
{
	int c = attr >> MA_PRIO_SHIFT;
	int lo = sched_get_priority_min(SCHED_FIFO);
	return c < lo ? lo : c;
}

CP_EXPORT int pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
{
	struct lt_mutex *m = M(mutex);
	*mutex = (pthread_mutex_t){ 0 };
	if (attr) {
		int a = *(const int *)attr;
		m->kind = a & MA_TYPE_MASK;
		if (a & MA_PSHARED)
			m->kind |= LT_KIND_PSHARED;
		if (a & MA_ROBUST) {
			/* glibc's layout from here on: no protocol */
			m->kind |= LT_KIND_ROBUST;
			return 0;
		}
		m->protocol = (a & MA_PROTO_MASK) >> MA_PROTO_SHIFT;
		m->prioceiling = ceiling_of(a);
		if (m->protocol == PTHREAD_PRIO_INHERIT)
			m->kind |= KIND_PI;
		else if (m->protocol == PTHREAD_PRIO_PROTECT)
			m->kind |= KIND_PP;
	}
	return 0;
}

CP_EXPORT int pthread_mutex_destroy(pthread_mutex_t *mutex)
{
	struct lt_mutex *m = M(mutex);
	uint32_t held = __atomic_load_n(&m->state, __ATOMIC_RELAXED);
	if (m->kind & LT_KIND_ROBUST)
		held &= FUTEX_TID_MASK; /* an owner-dead mark alone is no holder */
	return held ? EBUSY : 0;
}

CP_EXPORT int pthread_mutex_consistent(pthread_mutex_t *mutex)
{
	if (!(M(mutex)->kind & LT_KIND_ROBUST))
		return EINVAL;
	return lt_robust_consistent(mutex);
}

/* A ceiling belongs to PTHREAD_PRIO_PROTECT mutexes only (EINVAL otherwise,
 * as NPTL says) */
CP_EXPORT int pthread_mutex_getprioceiling(const pthread_mutex_t *mutex, int *prio)
{
	const struct lt_mutex *m = (const struct lt_mutex *)mutex;
	if (m->protocol != PTHREAD_PRIO_PROTECT)
		return EINVAL;
	*prio = m->prioceiling;
	return 0;
}

CP_EXPORT int pthread_mutex_setprioceiling(pthread_mutex_t *mutex, int prio, int *old)
{
	struct lt_mutex *m = M(mutex);
	if (m->protocol != PTHREAD_PRIO_PROTECT)
		return EINVAL;
	if (prio < sched_get_priority_min(SCHED_FIFO) || prio > sched_get_priority_max(SCHED_FIFO))
		return EINVAL;
	*old = m->prioceiling;
	__atomic_store_n(&m->prioceiling, prio, __ATOMIC_RELAXED);
	return 0;
}

/* ---- attributes: one int ---- */

CP_EXPORT int pthread_mutexattr_init(pthread_mutexattr_t *attr)
{
	*(int *)attr = PTHREAD_MUTEX_DEFAULT;
	return 0;
}

CP_EXPORT int pthread_mutexattr_destroy(pthread_mutexattr_t *attr)
{
	(void)attr;
	return 0;
}

CP_EXPORT int pthread_mutexattr_settype(pthread_mutexattr_t *attr, int type)
{
	if (type < PTHREAD_MUTEX_NORMAL || type > PTHREAD_MUTEX_ERRORCHECK)
		return EINVAL;
	int *a = (int *)attr;
	*a = (*a & ~MA_TYPE_MASK) | type;
	return 0;
}

CP_EXPORT int pthread_mutexattr_gettype(const pthread_mutexattr_t *attr, int *type)
{
	*type = *(const int *)attr & MA_TYPE_MASK;
	return 0;
}

CP_EXPORT int pthread_mutexattr_setpshared(pthread_mutexattr_t *attr, int pshared)
{
	if (lt_pshared_check(pshared))
		return EINVAL;
	int *a = (int *)attr;
	*a = pshared == PTHREAD_PROCESS_SHARED ? *a | MA_PSHARED : *a & ~MA_PSHARED;
	return 0;
}

CP_EXPORT int pthread_mutexattr_getpshared(const pthread_mutexattr_t *attr, int *pshared)
{
	*pshared = *(const int *)attr & MA_PSHARED ? PTHREAD_PROCESS_SHARED : PTHREAD_PROCESS_PRIVATE;
	return 0;
}

CP_EXPORT int pthread_mutexattr_setrobust(pthread_mutexattr_t *attr, int robust)
{
	if (robust != PTHREAD_MUTEX_STALLED && robust != PTHREAD_MUTEX_ROBUST)
		return EINVAL;
	int *a = (int *)attr;
	*a = robust == PTHREAD_MUTEX_ROBUST ? *a | MA_ROBUST : *a & ~MA_ROBUST;
	return 0;
}

CP_EXPORT int pthread_mutexattr_getrobust(const pthread_mutexattr_t *attr, int *robust)
{
	*robust = *(const int *)attr & MA_ROBUST ? PTHREAD_MUTEX_ROBUST : PTHREAD_MUTEX_STALLED;
	return 0;
}

/* Priority protocols are accepted and reported; user threads have no
 * priorities to inherit. */
CP_EXPORT int pthread_mutexattr_setprotocol(pthread_mutexattr_t *attr, int proto)
{
	if (proto != PTHREAD_PRIO_NONE && proto != PTHREAD_PRIO_INHERIT &&
	    proto != PTHREAD_PRIO_PROTECT)
		return EINVAL;
	int *a = (int *)attr;
	*a = (*a & ~MA_PROTO_MASK) | (proto << MA_PROTO_SHIFT);
	return 0;
}

CP_EXPORT int pthread_mutexattr_getprotocol(const pthread_mutexattr_t *attr, int *proto)
{
	*proto = (*(const int *)attr & MA_PROTO_MASK) >> MA_PROTO_SHIFT;
	return 0;
}

CP_EXPORT int pthread_mutexattr_setprioceiling(pthread_mutexattr_t *attr, int prio)
{
	if (prio < sched_get_priority_min(SCHED_FIFO) || prio > sched_get_priority_max(SCHED_FIFO))
		return EINVAL;
	int *a = (int *)attr;
	*a = (*a & ((1 << MA_PRIO_SHIFT) - 1)) | (prio << MA_PRIO_SHIFT);
	return 0;
}

CP_EXPORT int pthread_mutexattr_getprioceiling(const pthread_mutexattr_t *attr, int *prio)
{
	*prio = ceiling_of(*(const int *)attr);
	return 0;
}
