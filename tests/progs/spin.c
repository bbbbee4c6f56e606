/* spin.c: spinlocks — every call and error, mutual exclusion under
 * contention, and the case a pure spinlock cannot survive on user
 * threads: the holder switched out on the spinner's own worker. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

static uint64_t workers_seen;

TCASE(init_destroy)
{
	pthread_spinlock_t l;
	CHECK_OK(pthread_spin_init(&l, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_spin_lock(&l));
	CHECK_OK(pthread_spin_unlock(&l));
	CHECK_OK(pthread_spin_destroy(&l));
	/* nothing but the int: a shared one works as it is */
	CHECK_OK(pthread_spin_init(&l, PTHREAD_PROCESS_SHARED));
	CHECK_OK(pthread_spin_trylock(&l));
	CHECK_OK(pthread_spin_unlock(&l));
	CHECK_OK(pthread_spin_destroy(&l));
	CHECK_EQ(pthread_spin_init(&l, 42), EINVAL);
	/* init leaves it free even over a held one */
	CHECK_OK(pthread_spin_init(&l, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_spin_lock(&l));
	CHECK_OK(pthread_spin_init(&l, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_spin_trylock(&l));
	CHECK_OK(pthread_spin_unlock(&l));
}

static pthread_spinlock_t L;

static void *try_from_thread(void *p)
{
	(void)p;
	return (void *)(long)pthread_spin_trylock(&L);
}

TCASE(trylock_busy)
{
	CHECK_OK(pthread_spin_init(&L, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_spin_trylock(&L));
	CHECK_EQ(pthread_spin_trylock(&L), EBUSY);
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, try_from_thread, NULL));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, EBUSY);
	CHECK_OK(pthread_spin_unlock(&L));
	CHECK_OK(pthread_create(&t, NULL, try_from_thread, NULL));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0); /* it took it and left it held */
	CHECK_EQ(pthread_spin_trylock(&L), EBUSY);
	CHECK_OK(pthread_spin_unlock(&L));
	CHECK_OK(pthread_spin_lock(&L));
	CHECK_OK(pthread_spin_unlock(&L));
	CHECK_OK(pthread_spin_destroy(&L));
}

/* More threads than workers; holders yield inside the critical section,
 * so spinners regularly find the holder switched out on their own
 * worker: without yielding after a while they would spin forever. */
enum { THREADS = 12, ITERS = 20000 };

static long counter;
static int inside;

static void *hammer(void *p)
{
	long id = (long)p;
	tc_spread(&workers_seen);
	for (int i = 0; i < ITERS; i++) {
		if ((i + id) % 5 == 0) {
			while (pthread_spin_trylock(&L) == EBUSY)
				sched_yield(); /* a bare retry loop has the same hazard */
		} else {
			CHECK_OK(pthread_spin_lock(&L));
		}
		if (__atomic_add_fetch(&inside, 1, __ATOMIC_RELAXED) != 1)
			TFAIL("two threads hold the spinlock");
		long c = counter;
		if (i % 64 == 0)
			sched_yield();
		counter = c + 1;
		tc_note_worker(&workers_seen);
		__atomic_sub_fetch(&inside, 1, __ATOMIC_RELAXED);
		CHECK_OK(pthread_spin_unlock(&L));
	}
	return NULL;
}

TCASE(contended_counter)
{
	tc_watchdog(20);
	CHECK_OK(pthread_spin_init(&L, PTHREAD_PROCESS_PRIVATE));
	pthread_t t[THREADS];
	for (long i = 0; i < THREADS; i++)
		CHECK_OK(pthread_create(&t[i], NULL, hammer, (void *)i));
	for (int i = 0; i < THREADS; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK_EQ(counter, (long)THREADS * ITERS);
	CHECK_OK(pthread_spin_destroy(&L));
	tc_check_spread(&workers_seen);
}

static int spinner_done;

static void *spinner(void *p)
{
	(void)p;
	CHECK_OK(pthread_spin_lock(&L)); /* held by main, which is asleep */
	__atomic_store_n(&spinner_done, 1, __ATOMIC_RELEASE);
	CHECK_OK(pthread_spin_unlock(&L));
	return NULL;
}

/* The case runs again on one worker, so that every thread shares it: the
 * deterministic form of the hazard. */
TCASE(holder_asleep_on_same_worker)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	tc_watchdog(10);
	CHECK_OK(pthread_spin_init(&L, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_spin_lock(&L));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, spinner, NULL));
	/* the spinner runs now and spins; our timer can only bring us back
	 * if it yields the one worker */
	usleep(30000);
	CHECK_EQ(__atomic_load_n(&spinner_done, __ATOMIC_ACQUIRE), 0);
	CHECK_OK(pthread_spin_unlock(&L));
	CHECK_OK(pthread_join(t, NULL));
	CHECK_EQ(spinner_done, 1);
}

TCASE(contended_counter_one_worker)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	tc_watchdog(20);
	CHECK_OK(pthread_spin_init(&L, PTHREAD_PROCESS_PRIVATE));
	pthread_t t[THREADS];
	for (long i = 0; i < THREADS; i++)
		CHECK_OK(pthread_create(&t[i], NULL, hammer, (void *)i));
	for (int i = 0; i < THREADS; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK_EQ(counter, (long)THREADS * ITERS);
}
