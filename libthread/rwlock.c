/* rwlock.c: reader-writer locks and their attributes, laid out inside
 * glibc's 56-byte pthread_rwlock_t so that its static initializers (all
 * zeros, or __flags = kind) keep working.
 *
 * One 32-bit word holds the write bit, the reader count and one "queued"
 * bit per kind of waiter, so an uncontended lock or unlock is a single
 * atomic instruction that never touches the queue lock.  Contenders queue
 * (readers and writers apart) under a spinlock and set their bit before a
 * last try, so a release either lets that try succeed or sees the bit and
 * comes to wake them.  A woken thread competes for the lock again rather
 * than being handed it: a hand-off would have to be undone whenever the
 * chosen waiter turned out to be timing out, while a retry needs nothing
 * but another compare-and-swap.
 *
 * Readers are preferred by default, as in glibc.  Both writer-preferring
 * kinds make a new reader wait while a writer is queued (glibc treats
 * PREFER_WRITER_NP like the default; here it means what it says, so a
 * thread that read-locks recursively under it can deadlock, as with the
 * NONRECURSIVE kind).
 *
 * A process-shared rwlock cannot queue its waiters in one process's
 * memory: they wait on a wake sequence as a shared futex instead (parking
 * only their user thread), setting their queued bit first; an unlock that
 * finds a queued bit clears both, bumps the sequence and wakes them all,
 * and those that lose the race set their bit again.  The layout is
 * Caprice's own: processes on Caprice share it, across fork too, and a
 * process on NPTL cannot. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>

#include "lt.h"
#include "timespec.h"

#define RW_WRITER      1u  /* write-locked */
#define RW_WQUEUED     2u  /* writers in the slow path */
#define RW_RQUEUED     4u  /* readers in the slow path */
#define RW_READER      8u  /* one read hold */
#define RW_READERS(s)  ((s) >> 3)
/* 16M simultaneous read holds is far beyond any real program, and small
 * enough that the EAGAIN path can be exercised by a test */
#define RW_READERS_MAX ((1u << 24) - 1)

struct lt_rwlock {
	uint32_t state;              /* RW_* bits and the reader count */
	cp_spinlock qlock;           /* guards the queues and the counts below */
	struct cp_waitq readers;
	struct cp_waitq writers;
	void *writer;                /* write holder: for EDEADLK and EPERM */
	uint32_t readers_waiting;    /* in the slow path, queued or retrying */
	uint32_t writers_waiting;
	uint32_t shared;             /* PTHREAD_PROCESS_SHARED */
	uint32_t wake_seq;           /* shared: bumped by an unlock that wakes */
	uint32_t kind;               /* glibc's __flags: PTHREAD_RWLOCK_PREFER_* */
	uint32_t pad2;
};
_Static_assert(sizeof(struct lt_rwlock) == sizeof(pthread_rwlock_t), "lt_rwlock size");
_Static_assert(sizeof(pthread_rwlock_t) == 56, "glibc's pthread_rwlock_t changed");
_Static_assert(offsetof(struct lt_rwlock, kind) == offsetof(pthread_rwlock_t, __data.__flags),
               "kind must sit where glibc's initializers put it");
_Static_assert(offsetof(pthread_rwlock_t, __data.__flags) == 48, "glibc's __flags moved");

/* Our layout inside pthread_rwlockattr_t, the same as glibc's. */
struct lt_rwlockattr {
	int kind;
	int pshared;
};
_Static_assert(sizeof(struct lt_rwlockattr) <= sizeof(pthread_rwlockattr_t), "attr too big");

static inline struct lt_rwlock *RW(pthread_rwlock_t *l) { return (struct lt_rwlock *)l; }

/* The write holder's name: a pointer of this process, or for a shared
 * lock a name no other process's thread has */
static inline void *owner_id(const struct lt_rwlock *rw)
{
	if (rw->shared)
		return (void *)(uintptr_t)lt_process_owner();
	struct lt_thread *t = lt_self();
	return t ? (void *)t : (void *)pthread_self();
}

static inline bool prefers_writers(const struct lt_rwlock *rw)
{
	return rw->kind != PTHREAD_RWLOCK_PREFER_READER_NP;
}

/* The bits that keep a new reader out. */
static inline uint32_t reader_blockers(const struct lt_rwlock *rw)
{
	return prefers_writers(rw) ? RW_WRITER | RW_WQUEUED : RW_WRITER;
}

static inline int try_read(struct lt_rwlock *rw)
{
	uint32_t block = reader_blockers(rw);
	uint32_t s = __atomic_load_n(&rw->state, __ATOMIC_RELAXED);
	do {
		if (s & block)
			return EBUSY;
		if (cp_unlikely(RW_READERS(s) == RW_READERS_MAX))
			return EAGAIN;
	} while (!__atomic_compare_exchange_n(&rw->state, &s, s + RW_READER, true,
	                                      __ATOMIC_ACQUIRE, __ATOMIC_RELAXED));
	return 0;
}

static inline int try_write(struct lt_rwlock *rw)
{
	uint32_t s = __atomic_load_n(&rw->state, __ATOMIC_RELAXED);
	do {
		if ((s & RW_WRITER) || RW_READERS(s))
			return EBUSY;
	} while (!__atomic_compare_exchange_n(&rw->state, &s, s | RW_WRITER, true,
	                                      __ATOMIC_ACQUIRE, __ATOMIC_RELAXED));
	return 0;
}

/* With qlock held, after something that may let waiters in (a release, a
 * writer giving up): wakes whom the preference picks.  The state is read
 * without a lock, but the queued bits only clear under qlock, so a fast
 * path that changes it after this look will itself come back here. */
static void wake_locked(struct lt_rwlock *rw)
{
	uint32_t s = __atomic_load_n(&rw->state, __ATOMIC_RELAXED);
	if (s & RW_WRITER)
		return; /* its unlock will look again */
	if (RW_READERS(s)) {
		/* writers need it free; readers may join unless a queued
		 * writer still holds them back */
		if (!(s & reader_blockers(rw)))
			cp_wake_all(&rw->readers);
		return;
	}
	/* cp_wake_* skip waiters that are timing out, so when none of the
	 * preferred kind can be woken the other kind gets the lock */
	if (prefers_writers(rw)) {
		if (!cp_wake_one(&rw->writers))
			cp_wake_all(&rw->readers);
	} else {
		if (!cp_wake_all(&rw->readers))
			cp_wake_one(&rw->writers);
	}
}

static CP_NOINLINE void wake(struct lt_rwlock *rw)
{
	cp_spin_lock(&rw->qlock);
	wake_locked(rw);
	cp_spin_unlock(&rw->qlock);
}

static int wait_slow(struct lt_rwlock *rw, bool write, uint64_t deadline)
{
	struct cp_waitq *q = write ? &rw->writers : &rw->readers;
	uint32_t *count = write ? &rw->writers_waiting : &rw->readers_waiting;
	uint32_t bit = write ? RW_WQUEUED : RW_RQUEUED;
	int r;

	cp_spin_lock(&rw->qlock);
	/* the bit goes up before the next try: a release ordered after the
	 * try sees it and wakes us */
	if ((*count)++ == 0)
		__atomic_fetch_or(&rw->state, bit, __ATOMIC_RELAXED);
	for (;;) {
		r = write ? try_write(rw) : try_read(rw);
		if (r != EBUSY)
			break;
		struct cp_waiter w;
		r = cp_wait(q, &rw->qlock, &w, deadline, CP_INTR_SIGNAL);
		if (r == EINTR) { /* a handler for this thread runs, then it waits on */
			lt_signals_deliver(lt_self());
			r = 0;
		}
		cp_spin_lock(&rw->qlock);
		if (r)
			break;
	}
	if (--(*count) == 0)
		__atomic_fetch_and(&rw->state, ~bit, __ATOMIC_RELAXED);
	/* a writer that gives up may have been all that held readers back */
	if (r && write)
		wake_locked(rw);
	cp_spin_unlock(&rw->qlock);
	return r == ENOMEM ? EAGAIN : r;
}

/* A shared lock's unlock that found waiters: all of them try again. */
static CP_NOINLINE void wake_shared(struct lt_rwlock *rw)
{
	__atomic_fetch_and(&rw->state, ~(RW_WQUEUED | RW_RQUEUED), __ATOMIC_RELAXED);
	__atomic_add_fetch(&rw->wake_seq, 1, __ATOMIC_RELEASE);
	lt_futex_wake(&rw->wake_seq, INT_MAX, true);
}

static int wait_shared(struct lt_rwlock *rw, bool write, uint64_t deadline)
{
	struct timespec abs, *at = NULL;
	if (deadline != CP_NO_DEADLINE) {
		abs = cp_ns_to_ts(deadline);
		at = &abs;
	}
	for (;;) {
		/* the sequence before the bit: an unlock after our try bumps
		 * it, and the wait below returns at once */
		uint32_t seq = __atomic_load_n(&rw->wake_seq, __ATOMIC_ACQUIRE);
		__atomic_fetch_or(&rw->state, write ? RW_WQUEUED : RW_RQUEUED, __ATOMIC_SEQ_CST);
		int r = write ? try_write(rw) : try_read(rw);
		if (r != EBUSY)
			return r; /* a bit left up costs the next unlock a wake */
		if (lt_futex_wait_until(&rw->wake_seq, seq, true, CLOCK_MONOTONIC, at, false) < 0 &&
		    errno == ETIMEDOUT) {
			if (write)
				wake_shared(rw); /* our bit may be all that holds readers back */
			return ETIMEDOUT;
		}
	}
}

/* abstime NULL: no deadline */
static CP_NOINLINE int lock_contended(struct lt_rwlock *rw, bool write, clockid_t clock,
                                      const struct timespec *abstime)
{
	if (__atomic_load_n(&rw->writer, __ATOMIC_RELAXED) == owner_id(rw))
		return EDEADLK;
	uint64_t dl = CP_NO_DEADLINE;
	int e;
	if (abstime && (e = lt_deadline(clock, abstime, &dl)) != 0)
		return e; /* POSIX: the timeout is checked only if we would block */
	if (rw->shared)
		return wait_shared(rw, write, dl);
	return wait_slow(rw, write, dl);
}

static inline int lock(struct lt_rwlock *rw, bool write, clockid_t clock,
                       const struct timespec *abstime)
{
	int e = write ? try_write(rw) : try_read(rw);
	if (cp_unlikely(e == EBUSY))
		e = lock_contended(rw, write, clock, abstime);
	if (write && e == 0)
		__atomic_store_n(&rw->writer, owner_id(rw), __ATOMIC_RELAXED);
	return e;
}

CP_EXPORT int pthread_rwlock_rdlock(pthread_rwlock_t *l)
{
	return lock(RW(l), false, CLOCK_REALTIME, NULL);
}

CP_EXPORT int pthread_rwlock_wrlock(pthread_rwlock_t *l)
{
	return lock(RW(l), true, CLOCK_REALTIME, NULL);
}

CP_EXPORT int pthread_rwlock_tryrdlock(pthread_rwlock_t *l)
{
	return try_read(RW(l));
}

CP_EXPORT int pthread_rwlock_trywrlock(pthread_rwlock_t *l)
{
	struct lt_rwlock *rw = RW(l);
	int e = try_write(rw);
	if (e == 0)
		__atomic_store_n(&rw->writer, owner_id(rw), __ATOMIC_RELAXED);
	return e;
}

CP_EXPORT int pthread_rwlock_clockrdlock(pthread_rwlock_t *l, clockid_t clock,
                                         const struct timespec *abstime)
{
	return lock(RW(l), false, clock, abstime);
}

CP_EXPORT int pthread_rwlock_clockwrlock(pthread_rwlock_t *l, clockid_t clock,
                                         const struct timespec *abstime)
{
	return lock(RW(l), true, clock, abstime);
}

CP_EXPORT int pthread_rwlock_timedrdlock(pthread_rwlock_t *l, const struct timespec *abstime)
{
	return lock(RW(l), false, CLOCK_REALTIME, abstime);
}

CP_EXPORT int pthread_rwlock_timedwrlock(pthread_rwlock_t *l, const struct timespec *abstime)
{
	return lock(RW(l), true, CLOCK_REALTIME, abstime);
}

CP_EXPORT int pthread_rwlock_unlock(pthread_rwlock_t *l)
{
	struct lt_rwlock *rw = RW(l);
	uint32_t s = __atomic_load_n(&rw->state, __ATOMIC_RELAXED);
	if (s & RW_WRITER) {
		/* readers cannot hold it now, so a caller who is not the
		 * writer holds nothing */
		if (__atomic_load_n(&rw->writer, __ATOMIC_RELAXED) != owner_id(rw))
			return EPERM;
		__atomic_store_n(&rw->writer, NULL, __ATOMIC_RELAXED);
		s = __atomic_sub_fetch(&rw->state, RW_WRITER, __ATOMIC_RELEASE);
	} else {
		if (!RW_READERS(s))
			return EPERM;
		s = __atomic_sub_fetch(&rw->state, RW_READER, __ATOMIC_RELEASE);
		if (RW_READERS(s))
			return 0;
	}
	if (cp_unlikely(s & (RW_WQUEUED | RW_RQUEUED))) {
		if (rw->shared)
			wake_shared(rw);
		else
			wake(rw);
	}
	return 0;
}

CP_EXPORT int pthread_rwlock_init(pthread_rwlock_t *l, const pthread_rwlockattr_t *attr)
{
	*l = (pthread_rwlock_t){ 0 };
	if (attr) {
		const struct lt_rwlockattr *a = (const struct lt_rwlockattr *)attr;
		RW(l)->kind = (uint32_t)a->kind;
		RW(l)->shared = a->pshared == PTHREAD_PROCESS_SHARED;
	}
	return 0;
}

CP_EXPORT int pthread_rwlock_destroy(pthread_rwlock_t *l)
{
	/* held, or threads on their way in */
	return __atomic_load_n(&RW(l)->state, __ATOMIC_ACQUIRE) ? EBUSY : 0;
}

/* ---- attributes ---- */

static inline struct lt_rwlockattr *A(pthread_rwlockattr_t *a) { return (struct lt_rwlockattr *)a; }

CP_EXPORT int pthread_rwlockattr_init(pthread_rwlockattr_t *attr)
{
	*attr = (pthread_rwlockattr_t){ 0 };
	A(attr)->kind = PTHREAD_RWLOCK_DEFAULT_NP;
	A(attr)->pshared = PTHREAD_PROCESS_PRIVATE;
	return 0;
}

CP_EXPORT int pthread_rwlockattr_destroy(pthread_rwlockattr_t *attr)
{
	(void)attr;
	return 0;
}

CP_EXPORT int pthread_rwlockattr_setkind_np(pthread_rwlockattr_t *attr, int kind)
{
	if (kind != PTHREAD_RWLOCK_PREFER_READER_NP && kind != PTHREAD_RWLOCK_PREFER_WRITER_NP &&
	    kind != PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP)
		return EINVAL;
	A(attr)->kind = kind;
	return 0;
}

CP_EXPORT int pthread_rwlockattr_getkind_np(const pthread_rwlockattr_t *attr, int *kind)
{
	*kind = ((const struct lt_rwlockattr *)attr)->kind;
	return 0;
}

CP_EXPORT int pthread_rwlockattr_setpshared(pthread_rwlockattr_t *attr, int pshared)
{
	int e = lt_pshared_check(pshared);
	if (!e)
		A(attr)->pshared = pshared;
	return e;
}

CP_EXPORT int pthread_rwlockattr_getpshared(const pthread_rwlockattr_t *attr, int *pshared)
{
	*pshared = ((const struct lt_rwlockattr *)attr)->pshared;
	return 0;
}
