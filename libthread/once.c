/* once.c: pthread_once.  A pthread_once_t is one int, too small for a wait
 * queue, so callers that find the routine running wait in a small table
 * of queues hashed by address. */
#include <errno.h>
#include <stdint.h>

#include "lt.h"

enum { ONCE_NEW = 0, ONCE_RUNNING = 1, ONCE_DONE = 2 };

#define BUCKETS 64

static struct bucket {
	cp_spinlock lock;
	struct cp_waitq q;
} buckets[BUCKETS];

static struct bucket *bucket_of(const void *p)
{
	uintptr_t h = (uintptr_t)p;
	h ^= h >> 17;
	h *= 0x9e3779b97f4a7c15ull;
	return &buckets[(h >> 58) % BUCKETS];
}

static void finish(pthread_once_t *once, int state)
{
	struct bucket *b = bucket_of(once);
	cp_spin_lock(&b->lock);
	__atomic_store_n(once, state, __ATOMIC_RELEASE);
	cp_wake_all(&b->q); /* others re-check their own once */
	cp_spin_unlock(&b->lock);
}

/* If the init routine is cancelled, the next caller runs it again. */
static void on_cancel(void *once)
{
	finish(once, ONCE_NEW);
}

/* Out of line: cancellation's cleanup records call into the C library,
 * which would move pthread_once's done-already test to a big chunk on a
 * linked stack (sched/linked.c). */
static CP_NOINLINE void run_init(pthread_once_t *once, void (*init)(void))
{
	pthread_cleanup_push(on_cancel, once);
	init();
	pthread_cleanup_pop(0);
}

static CP_NOINLINE int once_slow(pthread_once_t *once, void (*init)(void));

CP_EXPORT int pthread_once(pthread_once_t *once, void (*init)(void))
{
	if (cp_likely(__atomic_load_n(once, __ATOMIC_ACQUIRE) == ONCE_DONE))
		return 0;
	return once_slow(once, init);
}

static int once_slow(pthread_once_t *once, void (*init)(void))
{
	struct bucket *b = bucket_of(once);
	for (;;) {
		int expect = ONCE_NEW;
		if (__atomic_compare_exchange_n(once, &expect, ONCE_RUNNING, false,
		                                __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) {
			run_init(once, init);
			finish(once, ONCE_DONE);
			return 0;
		}
		if (expect == ONCE_DONE)
			return 0;
		cp_spin_lock(&b->lock);
		if (__atomic_load_n(once, __ATOMIC_ACQUIRE) != ONCE_RUNNING) {
			cp_spin_unlock(&b->lock);
			continue;
		}
		struct cp_waiter w;
		cp_wait(&b->q, &b->lock, &w, CP_NO_DEADLINE, false);
	}
}
