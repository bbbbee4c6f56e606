/* barrier.c: barriers — every call and error, exactly one serial thread
 * per cycle, no thread a cycle ahead, immediate reuse, and destroy by the
 * serial thread while the others are still on their way out. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

static uint64_t workers_seen, workers_spread;

TCASE(init_errors_and_attr)
{
	pthread_barrier_t b;
	CHECK_EQ(pthread_barrier_init(&b, NULL, 0), EINVAL);
	pthread_barrierattr_t a;
	int v = -1;
	CHECK_OK(pthread_barrierattr_init(&a));
	CHECK_OK(pthread_barrierattr_getpshared(&a, &v));
	CHECK_EQ(v, PTHREAD_PROCESS_PRIVATE);
	CHECK_OK(pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	CHECK_OK(pthread_barrierattr_getpshared(&a, &v));
	CHECK_EQ(v, PTHREAD_PROCESS_SHARED);
	CHECK_OK(pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_PRIVATE));
	CHECK_EQ(pthread_barrierattr_setpshared(&a, 99), EINVAL);
	CHECK_OK(pthread_barrierattr_getpshared(&a, &v));
	CHECK_EQ(v, PTHREAD_PROCESS_PRIVATE);
	CHECK_EQ(pthread_barrier_init(&b, &a, 0), EINVAL);
	CHECK_OK(pthread_barrier_init(&b, &a, 1));
	CHECK_EQ(pthread_barrier_wait(&b), PTHREAD_BARRIER_SERIAL_THREAD);
	CHECK_OK(pthread_barrier_destroy(&b));
	CHECK_OK(pthread_barrierattr_destroy(&a));
}

TCASE(count_one_always_serial)
{
	pthread_barrier_t b;
	CHECK_OK(pthread_barrier_init(&b, NULL, 1));
	for (int i = 0; i < 1000; i++)
		CHECK_EQ(pthread_barrier_wait(&b), PTHREAD_BARRIER_SERIAL_THREAD);
	CHECK_OK(pthread_barrier_destroy(&b));
}

/* ---- the main property, many threads by many cycles ---- */

enum { THREADS = 8, CYCLES = 3000 };

static pthread_barrier_t B;
static int arrived[CYCLES + 2];   /* threads that reached cycle c's wait */
static int serial[CYCLES];        /* SERIAL_THREAD returns in cycle c */

static void *cycler(void *p)
{
	(void)p;
	tc_spread(&workers_spread);
	for (int c = 0; c < CYCLES; c++) {
		__atomic_add_fetch(&arrived[c], 1, __ATOMIC_ACQ_REL);
		int r = pthread_barrier_wait(&B);
		if (r == PTHREAD_BARRIER_SERIAL_THREAD)
			__atomic_add_fetch(&serial[c], 1, __ATOMIC_RELAXED);
		else if (r != 0)
			TFAIL("pthread_barrier_wait returned %d", r);
		/* nobody leaves before everyone came... */
		int n = __atomic_load_n(&arrived[c], __ATOMIC_ACQUIRE);
		if (n != THREADS)
			TFAIL("left cycle %d with %d of %d arrived", c, n, THREADS);
		/* ...and nobody can be past the next cycle while we are not in it */
		n = __atomic_load_n(&arrived[c + 2], __ATOMIC_ACQUIRE);
		if (n != 0)
			TFAIL("%d threads reached cycle %d while one was leaving cycle %d", n, c + 2, c);
		tc_note_worker(&workers_seen);
		if (c % 64 == 0)
			sched_yield();
	}
	return NULL;
}

TCASE(one_serial_per_cycle_none_ahead)
{
	tc_watchdog(20);
	CHECK_OK(pthread_barrier_init(&B, NULL, THREADS));
	pthread_t t[THREADS];
	for (long i = 0; i < THREADS; i++)
		CHECK_OK(pthread_create(&t[i], NULL, cycler, (void *)i));
	for (int i = 0; i < THREADS; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	for (int c = 0; c < CYCLES; c++) {
		if (serial[c] != 1)
			TFAIL("cycle %d had %d serial threads", c, serial[c]);
		CHECK_EQ(arrived[c], THREADS);
	}
	CHECK_OK(pthread_barrier_destroy(&B));
	if (caprice_worker_count() >= 2)
		CHECK(tc_count_workers(&workers_seen) >= 2);
}

/* main takes part as well, and sleeps before some cycles so the others
 * really park (the fast case is when the last one is already there) */
static void *sleepy_peer(void *p)
{
	(void)p;
	for (int c = 0; c < 50; c++) {
		int r = pthread_barrier_wait(&B);
		if (r == PTHREAD_BARRIER_SERIAL_THREAD)
			__atomic_add_fetch(&serial[c], 1, __ATOMIC_RELAXED);
		else
			CHECK_EQ(r, 0);
	}
	return NULL;
}

TCASE(waiters_park_and_are_released)
{
	tc_watchdog(20);
	enum { PEERS = 5 };
	CHECK_OK(pthread_barrier_init(&B, NULL, PEERS + 1));
	pthread_t t[PEERS];
	for (int i = 0; i < PEERS; i++)
		CHECK_OK(pthread_create(&t[i], NULL, sleepy_peer, NULL));
	for (int c = 0; c < 50; c++) {
		if (c % 5 == 0)
			usleep(2000);
		int r = pthread_barrier_wait(&B);
		if (r == PTHREAD_BARRIER_SERIAL_THREAD)
			__atomic_add_fetch(&serial[c], 1, __ATOMIC_RELAXED);
		else
			CHECK_EQ(r, 0);
	}
	for (int i = 0; i < PEERS; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	for (int c = 0; c < 50; c++)
		CHECK_EQ(serial[c], 1);
	CHECK_OK(pthread_barrier_destroy(&B));
}

static int passed;

/* Polls until a thread waits at b: destroy then fails with EBUSY, and
 * changes nothing when it succeeds on an idle barrier. */
static void await_busy(pthread_barrier_t *b)
{
	uint64_t t0 = tc_now_ns();
	int e;
	while ((e = pthread_barrier_destroy(b)) == 0) {
		if (tc_now_ns() - t0 > 5000000000ull)
			TFAIL("pthread_barrier_destroy still succeeds 5 s after a thread started waiting");
		usleep(1000);
	}
	CHECK_EQ(e, EBUSY);
}

static void *wait_once(void *p)
{
	int r = pthread_barrier_wait(p);
	CHECK(r == 0 || r == PTHREAD_BARRIER_SERIAL_THREAD);
	__atomic_add_fetch(&passed, 1, __ATOMIC_ACQ_REL);
	return (void *)(long)r;
}

TCASE(destroy_busy_while_waiting)
{
	pthread_barrier_t b;
	CHECK_OK(pthread_barrier_init(&b, NULL, 3));
	pthread_t t1, t2;
	CHECK_OK(pthread_create(&t1, NULL, wait_once, &b));
	await_busy(&b);
	usleep(10000);
	CHECK_EQ(__atomic_load_n(&passed, __ATOMIC_ACQUIRE), 0); /* 1 of 3: it waits */
	CHECK_EQ(pthread_barrier_destroy(&b), EBUSY);
	CHECK_OK(pthread_create(&t2, NULL, wait_once, &b));
	usleep(10000);
	CHECK_EQ(__atomic_load_n(&passed, __ATOMIC_ACQUIRE), 0);
	CHECK_EQ(pthread_barrier_destroy(&b), EBUSY);
	int r = pthread_barrier_wait(&b);
	void *r1, *r2;
	CHECK_OK(pthread_join(t1, &r1));
	CHECK_OK(pthread_join(t2, &r2));
	CHECK_EQ(passed, 2);
	int serials = (r == PTHREAD_BARRIER_SERIAL_THREAD) + ((long)r1 == PTHREAD_BARRIER_SERIAL_THREAD) +
	              ((long)r2 == PTHREAD_BARRIER_SERIAL_THREAD);
	CHECK_EQ(serials, 1);
	CHECK_OK(pthread_barrier_destroy(&b));
	/* a destroyed barrier may be initialized again, with another count */
	CHECK_OK(pthread_barrier_init(&b, NULL, 2));
	CHECK_OK(pthread_create(&t1, NULL, wait_once, &b));
	r = pthread_barrier_wait(&b);
	CHECK_OK(pthread_join(t1, &r1));
	CHECK_EQ((r == PTHREAD_BARRIER_SERIAL_THREAD) + ((long)r1 == PTHREAD_BARRIER_SERIAL_THREAD), 1);
	CHECK_OK(pthread_barrier_destroy(&b));
}

/* The serial thread destroys the barrier as soon as its wait returns,
 * which POSIX allows, and reuses the memory: destroy must have waited for
 * the others to be out of their wait calls.  The memory is scribbled
 * over, then checked after the others had a chance to run: a late
 * leaver touching it would show. */
enum { ROUND_THREADS = 6, ROUNDS = 300 };

static pthread_barrier_t round_barrier[ROUNDS];
static int round_destroyed[ROUNDS];

static void *rounds(void *p)
{
	(void)p;
	tc_spread(&workers_spread);
	for (int i = 0; i < ROUNDS; i++) {
		pthread_barrier_t *b = &round_barrier[i];
		if (pthread_barrier_wait(b) != PTHREAD_BARRIER_SERIAL_THREAD)
			continue;
		CHECK_OK(pthread_barrier_destroy(b));
		memset(b, 0xa5, sizeof *b);
		for (int k = 0; k < 3; k++)
			sched_yield();
		usleep(100);
		for (size_t k = 0; k < sizeof *b; k++)
			if (((unsigned char *)b)[k] != 0xa5)
				TFAIL("round %d: byte %zu of a destroyed barrier was written", i, k);
		__atomic_add_fetch(&round_destroyed[i], 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

TCASE(serial_thread_destroys_at_once)
{
	tc_watchdog(20);
	for (int i = 0; i < ROUNDS; i++)
		CHECK_OK(pthread_barrier_init(&round_barrier[i], NULL, ROUND_THREADS));
	pthread_t t[ROUND_THREADS];
	for (int i = 0; i < ROUND_THREADS; i++)
		CHECK_OK(pthread_create(&t[i], NULL, rounds, NULL));
	for (int i = 0; i < ROUND_THREADS; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	for (int i = 0; i < ROUNDS; i++)
		CHECK_EQ(round_destroyed[i], 1);
}

/* ---- process-shared: two processes of two threads each ---- */

#define PS_CYCLES 200

struct shared_barrier {
	pthread_barrier_t b;
	int serials[PS_CYCLES];  /* serial threads seen per cycle */
	int arrived[PS_CYCLES];  /* arrivals per cycle */
	volatile int ahead;      /* someone left a cycle before all arrived */
};

static void *ps_barrier_thread(void *arg)
{
	struct shared_barrier *s = arg;
	for (int c = 0; c < PS_CYCLES; c++) {
		__atomic_add_fetch(&s->arrived[c], 1, __ATOMIC_RELAXED);
		int r = pthread_barrier_wait(&s->b);
		if (r == PTHREAD_BARRIER_SERIAL_THREAD)
			__atomic_add_fetch(&s->serials[c], 1, __ATOMIC_RELAXED);
		else if (r != 0)
			return (void *)1;
		if (__atomic_load_n(&s->arrived[c], __ATOMIC_RELAXED) != 4)
			s->ahead = 1;
	}
	return NULL;
}

static int run_two(struct shared_barrier *s)
{
	pthread_t t = tc_spawn(ps_barrier_thread, s);
	void *a = ps_barrier_thread(s);
	void *b = tc_join(t);
	return a || b;
}

TCASE(process_shared_barrier_across_fork)
{
	tc_watchdog(30);
	struct shared_barrier *s = tc_shared_alloc(sizeof *s);
	pthread_barrierattr_t a;
	CHECK_OK(pthread_barrierattr_init(&a));
	CHECK_OK(pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	CHECK_OK(pthread_barrier_init(&s->b, &a, 4));
	CHECK_OK(pthread_barrierattr_destroy(&a));
	pid_t pid = fork();
	if (pid == 0)
		_exit(run_two(s));
	CHECK(pid > 0);
	CHECK_EQ(run_two(s), 0);
	tc_child_ok(pid);
	for (int c = 0; c < PS_CYCLES; c++) {
		CHECK_EQ(s->serials[c], 1);
		CHECK_EQ(s->arrived[c], 4);
	}
	CHECK_EQ(s->ahead, 0);
	CHECK_OK(pthread_barrier_destroy(&s->b));
	munmap(s, sizeof *s);
}
