/* sem.c: POSIX semaphores on user threads, in glibc's layout.
 *
 * The value and the number of threads in the slow path share one 64-bit
 * word, so a post that finds nobody waiting and a wait that finds the
 * value positive are each one compare-and-swap and never touch the queue.
 * A waiter counts itself in before its last try, all in that word: a
 * post ordered after the try sees the count and goes to wake someone.  A
 * woken waiter competes for the value again rather than being handed it,
 * so a waiter that times out while a post picks it costs nothing: the
 * post's wakeup moves on to another waiter (cp_wake_one skips leavers) or
 * the value simply stays raised.
 *
 * That word, and the word after it, are glibc's (value in the low half,
 * waiters in the high half; then 0 for a process-private semaphore, or
 * glibc's shared marker): a program linked with libthread gets glibc's
 * sem_open, which lays a named semaphore out that way in shared memory,
 * and Caprice's sem_wait and sem_post.  So a process-shared semaphore
 * (sem_open's, or sem_init's with pshared) is waited for and posted as
 * glibc does, with a futex on the value (the wait parks only its user
 * thread: futex.c), and works with NPTL processes on the other side.  A
 * private one keeps its waiters on a queue of the runtime's, in the bytes
 * glibc leaves unused. */
#include <errno.h>
#include <limits.h>
#include <semaphore.h>

#include "lt.h"

#define VALUE(w)   ((uint32_t)(w))
#define WAITERS(w) ((uint32_t)((w) >> 32))
#define ONE_WAITER (1ull << 32)
#define GLIBC_SHARED 128u /* glibc's `private` field for a shared semaphore */

struct lt_sem {
	uint64_t word;               /* low half: value; high half: waiters */
	uint32_t shared;             /* glibc's: 0, or GLIBC_SHARED */
	cp_spinlock lock;            /* private ones: guards the queue */
	struct cp_waitq waiters;
	uint64_t pad;
};
_Static_assert(sizeof(sem_t) == 32, "glibc's sem_t changed");
_Static_assert(sizeof(struct lt_sem) <= sizeof(sem_t), "lt_sem too big");
_Static_assert(_Alignof(sem_t) >= _Alignof(uint64_t), "sem_t alignment");

static inline struct lt_sem *S(sem_t *s) { return (struct lt_sem *)s; }

static inline int fail(int e)
{
	errno = e;
	return -1;
}

static inline bool try_take(struct lt_sem *s)
{
	uint64_t w = __atomic_load_n(&s->word, __ATOMIC_RELAXED);
	do {
		if (VALUE(w) == 0)
			return false;
	} while (!__atomic_compare_exchange_n(&s->word, &w, w - 1, true,
	                                      __ATOMIC_ACQUIRE, __ATOMIC_RELAXED));
	return true;
}

/* Returns 0 or an error number (ETIMEDOUT, EINTR on a cancellation that
 * did not act, ENOMEM). */
static int wait_slow(struct lt_sem *s, uint64_t deadline, struct lt_thread *self)
{
	int r;
	cp_spin_lock(&s->lock);
	__atomic_fetch_add(&s->word, ONE_WAITER, __ATOMIC_RELAXED);
	for (;;) {
		if (try_take(s)) {
			r = 0;
			break;
		}
		struct cp_waiter w;
		r = cp_wait(&s->waiters, &s->lock, &w, deadline, lt_interruptible(self));
		cp_spin_lock(&s->lock);
		if (r)
			break;
	}
	__atomic_fetch_sub(&s->word, ONE_WAITER, __ATOMIC_RELAXED);
	cp_spin_unlock(&s->lock);
	if (r == EINTR)
		lt_interrupted(self); /* a cancel unwinds, counted out already */
	return r;
}

/* The value's half of the word, the futex a shared semaphore waits on */
static inline uint32_t *value_word(struct lt_sem *s)
{
	return (uint32_t *)&s->word; /* little-endian: the low half first */
}

/* glibc's protocol, for a semaphore other processes may use: wait on the
 * value while it is 0, counted in the waiters' half */
static int wait_shared(struct lt_sem *s, clockid_t clock, const struct timespec *abs,
                       struct lt_thread *self)
{
	uint64_t w = __atomic_fetch_add(&s->word, ONE_WAITER, __ATOMIC_RELAXED) + ONE_WAITER;
	for (;;) {
		if (VALUE(w) == 0) {
			long r = lt_futex_wait_until(value_word(s), 0, true, clock, abs,
			                             lt_interruptible(self));
			int e = r < 0 ? errno : 0;
			if (e == ETIMEDOUT || e == EINTR) {
				__atomic_fetch_sub(&s->word, ONE_WAITER, __ATOMIC_RELAXED);
				if (e == EINTR)
					lt_interrupted(self);
				return e;
			}
			w = __atomic_load_n(&s->word, __ATOMIC_RELAXED);
		} else if (__atomic_compare_exchange_n(&s->word, &w, w - 1 - ONE_WAITER, true,
		                                       __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
			return 0;
		}
	}
}

static CP_NOINLINE int post_slow(struct lt_sem *s)
{
	if (s->shared) {
		uint64_t w = __atomic_load_n(&s->word, __ATOMIC_RELAXED);
		do {
			if (VALUE(w) == SEM_VALUE_MAX)
				return fail(EOVERFLOW);
		} while (!__atomic_compare_exchange_n(&s->word, &w, w + 1, true,
		                                      __ATOMIC_RELEASE, __ATOMIC_RELAXED));
		lt_futex_wake(value_word(s), 1, true);
		return 0;
	}
	cp_spin_lock(&s->lock);
	uint64_t w = __atomic_load_n(&s->word, __ATOMIC_RELAXED);
	do {
		if (VALUE(w) == SEM_VALUE_MAX) {
			cp_spin_unlock(&s->lock);
			return fail(EOVERFLOW);
		}
	} while (!__atomic_compare_exchange_n(&s->word, &w, w + 1, true,
	                                      __ATOMIC_RELEASE, __ATOMIC_RELAXED));
	/* the counted waiters may all be awake already and on their way
	 * back; then there is nobody to wake and the value waits for them */
	cp_wake_one(&s->waiters);
	cp_spin_unlock(&s->lock);
	return 0;
}

CP_EXPORT int sem_init(sem_t *sem, int pshared, unsigned int value)
{
	if (value > SEM_VALUE_MAX)
		return fail(EINVAL);
	*sem = (sem_t){ 0 };
	S(sem)->word = value;
	/* pshared is a flag here: nonzero asks for one other processes may
	 * use, in memory they share */
	S(sem)->shared = pshared ? GLIBC_SHARED : 0;
	return 0;
}

CP_EXPORT int sem_destroy(sem_t *sem)
{
	if (WAITERS(__atomic_load_n(&S(sem)->word, __ATOMIC_ACQUIRE)))
		return fail(EBUSY);
	return 0;
}

CP_EXPORT int sem_post(sem_t *sem)
{
	struct lt_sem *s = S(sem);
	uint64_t w = __atomic_load_n(&s->word, __ATOMIC_RELAXED);
	do {
		if (cp_unlikely(WAITERS(w)))
			return post_slow(s);
		if (cp_unlikely(VALUE(w) == SEM_VALUE_MAX))
			return fail(EOVERFLOW);
	} while (!__atomic_compare_exchange_n(&s->word, &w, w + 1, true,
	                                      __ATOMIC_RELEASE, __ATOMIC_RELAXED));
	return 0;
}

CP_EXPORT int sem_trywait(sem_t *sem)
{
	return try_take(S(sem)) ? 0 : fail(EAGAIN);
}

CP_EXPORT int sem_wait(sem_t *sem)
{
	/* a cancellation point even when it would not block */
	struct lt_thread *self = lt_self();
	lt_testcancel(self);
	if (cp_likely(try_take(S(sem))))
		return 0;
	int e = S(sem)->shared ? wait_shared(S(sem), CLOCK_MONOTONIC, NULL, self)
	                       : wait_slow(S(sem), CP_NO_DEADLINE, self);
	return e ? fail(e) : 0;
}

CP_EXPORT int sem_clockwait(sem_t *sem, clockid_t clock, const struct timespec *abstime)
{
	struct lt_thread *self = lt_self();
	lt_testcancel(self);
	if (try_take(S(sem)))
		return 0;
	uint64_t dl;
	int e = lt_deadline(clock, abstime, &dl); /* checked only if we would block */
	if (!e)
		e = S(sem)->shared ? wait_shared(S(sem), clock, abstime, self)
		                   : wait_slow(S(sem), dl, self);
	return e ? fail(e) : 0;
}

CP_EXPORT int sem_timedwait(sem_t *sem, const struct timespec *abstime)
{
	return sem_clockwait(sem, CLOCK_REALTIME, abstime);
}

CP_EXPORT int sem_getvalue(sem_t *sem, int *value)
{
	*value = (int)VALUE(__atomic_load_n(&S(sem)->word, __ATOMIC_RELAXED));
	return 0;
}
