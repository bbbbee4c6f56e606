/* sem.c: POSIX unnamed semaphores on user threads (named ones are not
 * provided).
 *
 * The value and the number of threads in the slow path share one 64-bit
 * word, so a post that finds nobody waiting and a wait that finds the
 * value positive are each one compare-and-swap and never touch the queue.
 * A waiter counts itself in before its last try, all in that word: a
 * post ordered after the try sees the count and goes to the queue to wake
 * someone.  A woken waiter competes for the value again rather than being
 * handed it, so a waiter that times out while a post picks it costs
 * nothing: the post's wakeup moves on to another waiter (cp_wake_one skips
 * leavers) or the value simply stays raised. */
#include <errno.h>
#include <limits.h>
#include <semaphore.h>

#include "lt.h"

#define VALUE(w)   ((uint32_t)(w))
#define WAITERS(w) ((uint32_t)((w) >> 32))
#define ONE_WAITER (1ull << 32)

struct lt_sem {
	uint64_t word;               /* low half: value; high half: waiters */
	cp_spinlock lock;            /* guards the queue */
	uint32_t pad;
	struct cp_waitq waiters;
	uint64_t pad2;
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
		r = cp_wait(&s->waiters, &s->lock, &w, deadline, lt_cancellable(self));
		cp_spin_lock(&s->lock);
		if (r)
			break;
	}
	__atomic_fetch_sub(&s->word, ONE_WAITER, __ATOMIC_RELAXED);
	cp_spin_unlock(&s->lock);
	if (r == EINTR)
		lt_testcancel(self); /* unwinds, counted out already */
	return r;
}

static CP_NOINLINE int post_slow(struct lt_sem *s)
{
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
	/* here pshared is a flag: nonzero asks for a process-shared one */
	int e = lt_pshared_check(pshared ? PTHREAD_PROCESS_SHARED : PTHREAD_PROCESS_PRIVATE);
	if (e)
		return fail(e);
	*sem = (sem_t){ 0 };
	S(sem)->word = value;
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
	int e = wait_slow(S(sem), CP_NO_DEADLINE, self);
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
		e = wait_slow(S(sem), dl, self);
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
