/* barrier.c: pthread barriers and their attributes.
 *
 * Arrivals count up under a spinlock; the thread that completes a cycle
 * becomes the serial thread, starts the next cycle and wakes the others.
 * A waiter remembers the cycle number it arrived in and leaves only once
 * that number has moved on, so a fast thread that already re-entered the
 * barrier for the next cycle cannot be mistaken for an arrival of the
 * previous one.  Released waiters still touch the barrier on their way
 * out (a foreign kernel thread retakes the spinlock), so they are counted
 * until they are gone, and destroy waits for them: the serial thread may
 * destroy the barrier the moment its own wait returns.
 *
 * A process-shared barrier cannot queue its waiters in one process's
 * memory: they wait on the cycle number as a shared futex (parking only
 * their user thread), and the serial thread wakes them all.  The layout
 * is Caprice's own: processes on Caprice share it, across fork too, and a
 * process on NPTL cannot. */
#include <errno.h>
#include <limits.h>

#include "lt.h"

struct lt_barrier {
	cp_spinlock lock;
	uint32_t count;        /* threads per cycle */
	uint32_t arrived;      /* in the current cycle */
	uint32_t cycle;
	uint32_t leaving;      /* released but not yet out of the call */
	uint32_t shared;       /* PTHREAD_PROCESS_SHARED */
	struct cp_waitq waiters;
};
_Static_assert(sizeof(pthread_barrier_t) == 32, "glibc's pthread_barrier_t changed");
_Static_assert(sizeof(struct lt_barrier) <= sizeof(pthread_barrier_t), "lt_barrier too big");
_Static_assert(sizeof(int) <= sizeof(pthread_barrierattr_t), "barrierattr holds an int");

static inline struct lt_barrier *B(pthread_barrier_t *b) { return (struct lt_barrier *)b; }

CP_EXPORT int pthread_barrier_init(pthread_barrier_t *barrier, const pthread_barrierattr_t *attr,
                                   unsigned count)
{
	if (count == 0)
		return EINVAL;
	*barrier = (pthread_barrier_t){ 0 };
	B(barrier)->count = count;
	B(barrier)->shared = attr && *(const int *)attr == PTHREAD_PROCESS_SHARED;
	return 0;
}

CP_EXPORT int pthread_barrier_destroy(pthread_barrier_t *barrier)
{
	struct lt_barrier *b = B(barrier);
	cp_spin_lock(&b->lock);
	bool busy = b->arrived != 0;
	cp_spin_unlock(&b->lock);
	if (busy)
		return EBUSY;
	/* the last cycle's waiters are running already; they leave soon */
	while (__atomic_load_n(&b->leaving, __ATOMIC_ACQUIRE))
		cp_yield();
	return 0;
}

CP_EXPORT int pthread_barrier_wait(pthread_barrier_t *barrier)
{
	struct lt_barrier *b = B(barrier);
	cp_spin_lock(&b->lock);
	if (++b->arrived == b->count) {
		b->arrived = 0;
		b->leaving += b->count - 1;
		__atomic_store_n(&b->cycle, b->cycle + 1, __ATOMIC_RELEASE);
		if (b->shared) {
			cp_spin_unlock(&b->lock);
			lt_futex_wake(&b->cycle, INT_MAX, true);
		} else {
			cp_wake_all(&b->waiters);
			cp_spin_unlock(&b->lock);
		}
		return PTHREAD_BARRIER_SERIAL_THREAD;
	}
	uint32_t mine = b->cycle;
	if (b->shared) {
		cp_spin_unlock(&b->lock);
		while (__atomic_load_n(&b->cycle, __ATOMIC_ACQUIRE) == mine)
			lt_futex_wait_until(&b->cycle, mine, true, CLOCK_MONOTONIC, NULL, false);
		__atomic_sub_fetch(&b->leaving, 1, __ATOMIC_RELEASE);
		return 0;
	}
	for (;;) {
		struct cp_waiter w;
		if (cp_wait(&b->waiters, &b->lock, &w, CP_NO_DEADLINE, CP_INTR_SIGNAL) == EINTR)
			lt_signals_deliver(lt_self()); /* a handler runs, the wait goes on */
		if (__atomic_load_n(&b->cycle, __ATOMIC_ACQUIRE) != mine)
			break;
		/* woken without the cycle moving on: wait again, which needs
		 * the lock and a second look */
		cp_spin_lock(&b->lock);
		if (b->cycle != mine) {
			cp_spin_unlock(&b->lock);
			break;
		}
	}
	__atomic_sub_fetch(&b->leaving, 1, __ATOMIC_RELEASE);
	return 0;
}

/* ---- attributes: one int, the pshared value ---- */

CP_EXPORT int pthread_barrierattr_init(pthread_barrierattr_t *attr)
{
	*(int *)attr = PTHREAD_PROCESS_PRIVATE;
	return 0;
}

CP_EXPORT int pthread_barrierattr_destroy(pthread_barrierattr_t *attr)
{
	(void)attr;
	return 0;
}

CP_EXPORT int pthread_barrierattr_setpshared(pthread_barrierattr_t *attr, int pshared)
{
	int e = lt_pshared_check(pshared);
	if (!e)
		*(int *)attr = pshared;
	return e;
}

CP_EXPORT int pthread_barrierattr_getpshared(const pthread_barrierattr_t *attr, int *pshared)
{
	*pshared = *(const int *)attr;
	return 0;
}
