/* cancel.c: deferred cancellation and cleanup handlers — a thread
 * blocked at each cancellation point (cond wait, join, the sleeps, a
 * testcancel loop) is cancelled promptly, its cleanup handlers run in
 * reverse order (the cond wait's with the mutex held again), disabled
 * cancellation is held back until re-enabled, and the joiner sees
 * PTHREAD_CANCELED.  Handlers also run on pthread_exit; cleanup_pop(1)
 * runs one, cleanup_pop(0) does not. */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <unistd.h>

#include "tcase.h"

#define MS 1000000ull

/* A log of cleanup handler runs, in order. */
static int clog_v[64];
static int clog_n;
static pthread_mutex_t clog_m = PTHREAD_MUTEX_INITIALIZER;

static void clog_add(int v)
{
	pthread_mutex_lock(&clog_m);
	if (clog_n < 64)
		clog_v[clog_n] = v;
	clog_n++;
	pthread_mutex_unlock(&clog_m);
}

static void handler(void *arg)
{
	clog_add((int)(long)arg);
}

static int clog_count(void)
{
	pthread_mutex_lock(&clog_m);
	int n = clog_n;
	pthread_mutex_unlock(&clog_m);
	return n;
}

/* Set by a thread just before it blocks. */
static int blocking;

static void await_blocking(void)
{
	uint64_t give_up = tc_now_ns() + 5000 * MS;
	while (!__atomic_load_n(&blocking, __ATOMIC_ACQUIRE)) {
		CHECK(tc_now_ns() < give_up);
		tc_msleep(1);
	}
	tc_msleep(30); /* it is inside the blocking call by now */
}

/* Cancels t and joins it: it must end promptly, cancelled. */
static void cancel_and_join(pthread_t t)
{
	uint64_t t0 = tc_now_ns();
	CHECK_OK(pthread_cancel(t));
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK(r == PTHREAD_CANCELED);
	uint64_t el = tc_now_ns() - t0;
	if (el > 10000 * MS) /* the blocking calls here last far longer */
		TFAIL("cancellation took %.0f ms", el / 1e6);
}

/* ---- cond wait ---- */

struct cw {
	pthread_mutex_t m;
	pthread_cond_t c;
	int never;
	int unlock_in_handler; /* what pthread_mutex_unlock said in the handler */
};

static void cw_handler(void *arg)
{
	struct cw *w = arg;
	clog_add(1);
	/* POSIX: the mutex is held again when the first handler runs; with
	 * an errorcheck mutex only its owner may unlock it */
	w->unlock_in_handler = pthread_mutex_unlock(&w->m);
}

static void *cond_waiter(void *arg)
{
	struct cw *w = arg;
	pthread_mutex_lock(&w->m);
	pthread_cleanup_push(cw_handler, w);
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	while (!w->never)
		pthread_cond_wait(&w->c, &w->m);
	pthread_cleanup_pop(1);
	return (void *)1;
}

static void *cond_timed_waiter(void *arg)
{
	struct cw *w = arg;
	pthread_mutex_lock(&w->m);
	pthread_cleanup_push(cw_handler, w);
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	struct timespec dl = tc_abs_ms(CLOCK_REALTIME, 60000);
	while (!w->never)
		if (pthread_cond_timedwait(&w->c, &w->m, &dl) == ETIMEDOUT)
			break;
	pthread_cleanup_pop(1);
	return (void *)1;
}

static void check_cond_cancel(void *(*fn)(void *))
{
	static struct cw w;
	memset(&w, 0, sizeof w);
	pthread_mutexattr_t ma;
	CHECK_OK(pthread_mutexattr_init(&ma));
	CHECK_OK(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK));
	CHECK_OK(pthread_mutex_init(&w.m, &ma));
	CHECK_OK(pthread_cond_init(&w.c, NULL));
	w.unlock_in_handler = -1;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, fn, &w));
	await_blocking();
	cancel_and_join(t);
	CHECK_EQ(clog_count(), 1);
	CHECK_EQ(w.unlock_in_handler, 0); /* it held the mutex */
	/* and it really let it go */
	CHECK_OK(pthread_mutex_trylock(&w.m));
	CHECK_OK(pthread_mutex_unlock(&w.m));
	/* the condvar has no stale waiter left behind */
	CHECK_OK(pthread_cond_destroy(&w.c));
}

TCASE(cancel_cond_wait)
{
	check_cond_cancel(cond_waiter);
}

TCASE(cancel_cond_timedwait)
{
	check_cond_cancel(cond_timed_waiter);
}

/* A cancelled waiter does not consume a signal meant for another. */
static void *plain_cond_waiter(void *arg)
{
	struct cw *w = arg;
	pthread_mutex_lock(&w->m);
	while (!w->never)
		pthread_cond_wait(&w->c, &w->m);
	pthread_mutex_unlock(&w->m);
	return (void *)2;
}

static void unlock_handler(void *m)
{
	pthread_mutex_unlock(m);
}

static void *cancellable_cond_waiter(void *arg)
{
	struct cw *w = arg;
	pthread_mutex_lock(&w->m);
	pthread_cleanup_push(unlock_handler, &w->m);
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	for (;;)
		pthread_cond_wait(&w->c, &w->m);
	pthread_cleanup_pop(0);
	return NULL;
}

TCASE(cancelled_waiter_leaves_signal_to_others)
{
	static struct cw w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
	pthread_t victim, other;
	CHECK_OK(pthread_create(&victim, NULL, cancellable_cond_waiter, &w));
	await_blocking();
	CHECK_OK(pthread_create(&other, NULL, plain_cond_waiter, &w));
	tc_msleep(30);
	cancel_and_join(victim);
	pthread_mutex_lock(&w.m);
	w.never = 1;
	pthread_cond_signal(&w.c); /* only `other` waits now */
	pthread_mutex_unlock(&w.m);
	void *r;
	CHECK_OK(pthread_join(other, &r));
	CHECK_EQ((long)r, 2);
}

/* ---- join ---- */

struct gate {
	pthread_mutex_t m;
	pthread_cond_t c;
	int open;
};

static void *wait_gate(void *arg)
{
	struct gate *g = arg;
	pthread_mutex_lock(&g->m);
	while (!g->open)
		pthread_cond_wait(&g->c, &g->m);
	pthread_mutex_unlock(&g->m);
	return (void *)0x600d;
}

static void *join_it(void *arg)
{
	pthread_cleanup_push(handler, (void *)7);
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	pthread_join(*(pthread_t *)arg, NULL);
	pthread_cleanup_pop(0);
	return (void *)1;
}

/* Cancelled in pthread_join: the target is not joined, and can still be
 * joined by someone else. */
TCASE(cancel_join)
{
	static struct gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };
	pthread_t target, joiner;
	CHECK_OK(pthread_create(&target, NULL, wait_gate, &g));
	CHECK_OK(pthread_create(&joiner, NULL, join_it, &target));
	await_blocking();
	cancel_and_join(joiner);
	CHECK_EQ(clog_count(), 1);
	CHECK_EQ(clog_v[0], 7);
	pthread_mutex_lock(&g.m);
	g.open = 1;
	pthread_cond_broadcast(&g.c);
	pthread_mutex_unlock(&g.m);
	void *r;
	CHECK_OK(pthread_join(target, &r));
	CHECK_EQ((long)r, 0x600d);
}

/* ---- sleeps ---- */

static void *sleeper(void *arg)
{
	int kind = (int)(long)arg;
	pthread_cleanup_push(handler, (void *)(long)(100 + kind));
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	struct timespec ts = { 100, 0 };
	switch (kind) {
	case 0:
		sleep(100);
		break;
	case 1:
		usleep(90000000);
		break;
	case 2:
		nanosleep(&ts, NULL);
		break;
	case 3:
		clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
		break;
	case 4:
		ts = tc_abs_ms(CLOCK_REALTIME, 100000);
		clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL);
		break;
	}
	pthread_cleanup_pop(0);
	return (void *)1;
}

static void check_sleep_cancel(int kind)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, sleeper, (void *)(long)kind));
	await_blocking();
	cancel_and_join(t);
	CHECK_EQ(clog_count(), 1);
	CHECK_EQ(clog_v[0], 100 + kind);
}

TCASE(cancel_sleep) { check_sleep_cancel(0); }
TCASE(cancel_usleep) { check_sleep_cancel(1); }
TCASE(cancel_nanosleep) { check_sleep_cancel(2); }
TCASE(cancel_clock_nanosleep) { check_sleep_cancel(3); }
TCASE(cancel_clock_nanosleep_abstime) { check_sleep_cancel(4); }

/* ---- testcancel ---- */

static long spun;

static void *testcancel_loop(void *arg)
{
	(void)arg;
	pthread_cleanup_push(handler, (void *)5);
	for (;;) {
		__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
		__atomic_add_fetch(&spun, 1, __ATOMIC_RELAXED);
		pthread_testcancel();
		sched_yield(); /* not a cancellation point */
	}
	pthread_cleanup_pop(0);
	return NULL;
}

TCASE(cancel_testcancel_loop)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, testcancel_loop, NULL));
	await_blocking();
	cancel_and_join(t);
	CHECK(spun > 0);
	CHECK_EQ(clog_count(), 1);
	CHECK_EQ(clog_v[0], 5);
}

/* A thread that never reaches a cancellation point is not cancelled:
 * deferred cancellation waits for one. */
static int yield_loop_stop;

static void *yield_only_loop(void *arg)
{
	(void)arg;
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&yield_loop_stop, __ATOMIC_ACQUIRE))
		sched_yield();
	return (void *)3; /* returns normally: no cancellation point passed */
}

TCASE(deferred_waits_for_cancellation_point)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, yield_only_loop, NULL));
	await_blocking();
	CHECK_OK(pthread_cancel(t));
	tc_msleep(50);
	__atomic_store_n(&yield_loop_stop, 1, __ATOMIC_RELEASE);
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 3);
}

/* ---- disabled ---- */

static int disabled_sleeps_done;
static int reenabled;

static void *disabled_then_enabled(void *arg)
{
	(void)arg;
	int old = -1;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	if (old != PTHREAD_CANCEL_ENABLE)
		return (void *)10;
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	/* cancellation points, while disabled: none of them acts */
	for (int i = 0; i < 5; i++) {
		usleep(20000);
		pthread_testcancel();
		__atomic_add_fetch(&disabled_sleeps_done, 1, __ATOMIC_RELAXED);
	}
	pthread_cleanup_push(handler, (void *)9);
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
	if (old != PTHREAD_CANCEL_DISABLE)
		pthread_exit((void *)11);
	__atomic_store_n(&reenabled, 1, __ATOMIC_RELEASE);
	pthread_testcancel(); /* acts here */
	pthread_cleanup_pop(0);
	return (void *)12;
}

TCASE(cancel_while_disabled_is_deferred)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, disabled_then_enabled, NULL));
	uint64_t give_up = tc_now_ns() + 5000 * MS;
	while (!__atomic_load_n(&blocking, __ATOMIC_ACQUIRE)) {
		CHECK(tc_now_ns() < give_up);
		sched_yield();
	}
	CHECK_OK(pthread_cancel(t));
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK(r == PTHREAD_CANCELED);
	CHECK_EQ(disabled_sleeps_done, 5);
	CHECK_EQ(reenabled, 1);
	CHECK_EQ(clog_count(), 1);
	CHECK_EQ(clog_v[0], 9);
}

/* Disabled while blocked in a cond wait: the wait is not cut short; it
 * acts at the first cancellation point once enabled again. */
static void *disabled_cond_wait(void *arg)
{
	struct cw *w = arg;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_mutex_lock(&w->m);
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	while (!w->never)
		pthread_cond_wait(&w->c, &w->m);
	pthread_mutex_unlock(&w->m);
	__atomic_store_n(&reenabled, 1, __ATOMIC_RELEASE);
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	usleep(60 * 1000 * 1000); /* a cancellation point: acts at once */
	return (void *)1;
}

TCASE(disabled_cond_wait_not_interrupted)
{
	static struct cw w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, disabled_cond_wait, &w));
	await_blocking();
	CHECK_OK(pthread_cancel(t));
	tc_msleep(50);
	CHECK_EQ(__atomic_load_n(&reenabled, __ATOMIC_ACQUIRE), 0); /* still waiting */
	uint64_t t0 = tc_now_ns();
	pthread_mutex_lock(&w.m);
	w.never = 1;
	pthread_cond_signal(&w.c);
	pthread_mutex_unlock(&w.m);
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK(r == PTHREAD_CANCELED);
	CHECK_EQ(reenabled, 1);
	CHECK(tc_now_ns() - t0 < 10000 * MS);
}

TCASE(setcancelstate_and_type_errors)
{
	int old = -1;
	CHECK_EQ(pthread_setcancelstate(12345, &old), EINVAL);
	CHECK_EQ(pthread_setcanceltype(12345, &old), EINVAL);
	CHECK_OK(pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old));
	CHECK_EQ(old, PTHREAD_CANCEL_ENABLE);
	CHECK_OK(pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old));
	CHECK_EQ(old, PTHREAD_CANCEL_DISABLE);
	CHECK_OK(pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &old));
	CHECK_EQ(old, PTHREAD_CANCEL_DEFERRED);
	CHECK_OK(pthread_setcanceltype(PTHREAD_CANCEL_DEFERRED, &old));
	CHECK_EQ(old, PTHREAD_CANCEL_ASYNCHRONOUS);
	CHECK_OK(pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL));
	CHECK_OK(pthread_setcanceltype(PTHREAD_CANCEL_DEFERRED, NULL));
	static _Alignas(64) char fake[4096];
	CHECK_EQ(pthread_cancel((pthread_t)fake), ESRCH);
}

/* ---- self-cancel, finished targets ---- */

static void *cancel_self(void *arg)
{
	(void)arg;
	pthread_cleanup_push(handler, (void *)4);
	CHECK_OK(pthread_cancel(pthread_self()));
	clog_add(40); /* deferred: still running until a cancellation point */
	pthread_testcancel();
	clog_add(41); /* not reached */
	pthread_cleanup_pop(0);
	return (void *)1;
}

TCASE(cancel_self_deferred)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, cancel_self, NULL));
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK(r == PTHREAD_CANCELED);
	CHECK_EQ(clog_count(), 2);
	CHECK_EQ(clog_v[0], 40);
	CHECK_EQ(clog_v[1], 4);
}

static void *return_42(void *arg)
{
	__atomic_store_n((int *)arg, 1, __ATOMIC_RELEASE);
	return (void *)42;
}

/* Cancelling a thread that already finished is harmless: the join gets
 * its real result. */
TCASE(cancel_finished_thread)
{
	int done = 0;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, return_42, &done));
	while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE))
		tc_msleep(1);
	tc_msleep(20);
	CHECK_OK(pthread_cancel(t));
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 42);
}

/* Cancelling twice is the same as once. */
TCASE(cancel_twice)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, sleeper, (void *)2));
	await_blocking();
	CHECK_OK(pthread_cancel(t));
	CHECK_OK(pthread_cancel(t));
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK(r == PTHREAD_CANCELED);
	CHECK_EQ(clog_count(), 1);
}

/* ---- cleanup handlers ---- */

static void *three_handlers_exit(void *arg)
{
	(void)arg;
	pthread_cleanup_push(handler, (void *)1);
	pthread_cleanup_push(handler, (void *)2);
	pthread_cleanup_push(handler, (void *)3);
	pthread_exit((void *)77);
	pthread_cleanup_pop(0);
	pthread_cleanup_pop(0);
	pthread_cleanup_pop(0);
	return NULL;
}

TCASE(cleanup_lifo_on_exit)
{
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, three_handlers_exit, NULL));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 77);
	CHECK_EQ(clog_count(), 3);
	CHECK_EQ(clog_v[0], 3);
	CHECK_EQ(clog_v[1], 2);
	CHECK_EQ(clog_v[2], 1);
}

static void *three_handlers_cancel(void *arg)
{
	(void)arg;
	pthread_cleanup_push(handler, (void *)1);
	pthread_cleanup_push(handler, (void *)2);
	pthread_cleanup_push(handler, (void *)3);
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	for (;;)
		usleep(1000000);
	pthread_cleanup_pop(0);
	pthread_cleanup_pop(0);
	pthread_cleanup_pop(0);
	return NULL;
}

TCASE(cleanup_lifo_on_cancel)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, three_handlers_cancel, NULL));
	await_blocking();
	cancel_and_join(t);
	CHECK_EQ(clog_count(), 3);
	CHECK_EQ(clog_v[0], 3);
	CHECK_EQ(clog_v[1], 2);
	CHECK_EQ(clog_v[2], 1);
}

static void *pops(void *arg)
{
	(void)arg;
	pthread_cleanup_push(handler, (void *)1);
	pthread_cleanup_push(handler, (void *)2);
	pthread_cleanup_pop(1); /* runs 2 now */
	clog_add(50);
	pthread_cleanup_push(handler, (void *)3);
	pthread_cleanup_pop(0); /* 3 never runs */
	clog_add(51);
	pthread_cleanup_pop(1); /* runs 1 now */
	/* all popped: nothing runs at exit */
	pthread_exit((void *)8);
}

TCASE(cleanup_pop_execute_or_not)
{
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, pops, NULL));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 8);
	int want[] = { 2, 50, 51, 1 };
	CHECK_EQ(clog_count(), 4);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(clog_v[i], want[i]);
}

/* Handlers pushed in different frames all run, innermost first. */
static void inner_exits(void)
{
	pthread_cleanup_push(handler, (void *)20);
	pthread_cleanup_push(handler, (void *)21);
	pthread_exit((void *)5);
	pthread_cleanup_pop(0);
	pthread_cleanup_pop(0);
}

static void *outer_frames(void *arg)
{
	(void)arg;
	pthread_cleanup_push(handler, (void *)10);
	inner_exits();
	pthread_cleanup_pop(0);
	return NULL;
}

TCASE(cleanup_across_frames)
{
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, outer_frames, NULL));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 5);
	CHECK_EQ(clog_count(), 3);
	CHECK_EQ(clog_v[0], 21);
	CHECK_EQ(clog_v[1], 20);
	CHECK_EQ(clog_v[2], 10);
}

/* Returning from the start routine does not run handlers (they must be
 * popped first; here they were), and a handler may itself call
 * functions that block. */
static void blocking_handler(void *arg)
{
	(void)arg;
	usleep(20000); /* cancellation is disabled while handlers run */
	clog_add(60);
}

static void *handler_blocks(void *arg)
{
	(void)arg;
	pthread_cleanup_push(blocking_handler, NULL);
	pthread_cleanup_push(handler, (void *)61);
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	for (;;)
		pthread_testcancel(), usleep(1000);
	pthread_cleanup_pop(0);
	pthread_cleanup_pop(0);
	return NULL;
}

TCASE(handler_may_block)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, handler_blocks, NULL));
	await_blocking();
	cancel_and_join(t);
	CHECK_EQ(clog_count(), 2);
	CHECK_EQ(clog_v[0], 61);
	CHECK_EQ(clog_v[1], 60);
}

/* Thread-specific data destructors run after the cleanup handlers of a
 * cancelled thread. */
static pthread_key_t key;

static void key_dtor(void *v)
{
	clog_add((int)(long)v);
}

static void *with_key(void *arg)
{
	(void)arg;
	pthread_setspecific(key, (void *)90);
	pthread_cleanup_push(handler, (void *)80);
	__atomic_store_n(&blocking, 1, __ATOMIC_RELEASE);
	for (;;)
		tc_msleep(1000);
	pthread_cleanup_pop(0);
	return NULL;
}

TCASE(cancel_runs_key_destructors_after_handlers)
{
	CHECK_OK(pthread_key_create(&key, key_dtor));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, with_key, NULL));
	await_blocking();
	cancel_and_join(t);
	CHECK_EQ(clog_count(), 2);
	CHECK_EQ(clog_v[0], 80);
	CHECK_EQ(clog_v[1], 90);
}

/* Many threads blocked in different places, all cancelled at once. */
static void *mixed_blocker(void *arg)
{
	static struct cw w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 };
	long i = (long)arg;
	pthread_cleanup_push(handler, (void *)1);
	switch (i % 3) {
	case 0:
		pthread_mutex_lock(&w.m);
		pthread_cleanup_push(unlock_handler, &w.m);
		for (;;)
			pthread_cond_wait(&w.c, &w.m);
		pthread_cleanup_pop(0);
		break;
	case 1:
		for (;;)
			usleep(1000000);
		break;
	default:
		for (;;) {
			pthread_testcancel();
			sched_yield();
		}
	}
	pthread_cleanup_pop(0);
	return NULL;
}

TCASE(cancel_many_at_once)
{
	enum { N = 300 };
	static pthread_t t[N];
	for (long i = 0; i < N; i++)
		CHECK_OK(pthread_create(&t[i], NULL, mixed_blocker, (void *)i));
	tc_msleep(100);
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_cancel(t[i]));
	for (int i = 0; i < N; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK(r == PTHREAD_CANCELED);
	}
	CHECK_EQ(clog_count(), N);
}

/* A cancel that comes while its target is just starting a wait: the
 * wait publishes itself with no lock (sched/worker.h, cp_wait_publish),
 * so either the waiter sees the cancel or the canceller sees the wait.
 * A lost cancel leaves the target waiting for good and the join hangs.
 * The canceller spins on a kernel thread of its own (no worker), so
 * that the two really run at once, and sends each cancel after a
 * different delay. */
struct race {
	pthread_t target;
	int posted;     /* a target to cancel is in `target` */
	int started;    /* the target runs */
	int stop;
	unsigned round;
	unsigned concurrent; /* cancels sent while the target ran */
	int fd;         /* an empty pipe's read end */
};

static void spin_for(unsigned n)
{
	for (volatile unsigned i = 0; i < n; i++)
		;
}

static void *race_target(void *arg)
{
	struct race *r = arg;
	__atomic_store_n(&r->started, 1, __ATOMIC_RELEASE);
	spin_for((r->round * 37) % 2000);
	if (r->round & 1) {
		char b;
		for (;;)
			CHECK(read(r->fd, &b, 1) < 0);
	}
	static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
	pthread_mutex_lock(&m);
	pthread_cleanup_push(unlock_handler, &m);
	for (;;)
		pthread_cond_wait(&c, &m);
	pthread_cleanup_pop(0);
	return NULL;
}

static void *race_canceller(void *arg)
{
	struct race *r = arg;
	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		if (!__atomic_load_n(&r->posted, __ATOMIC_ACQUIRE))
			continue; /* no yield: this worker stays the canceller's */
		while (!__atomic_load_n(&r->started, __ATOMIC_ACQUIRE))
			;
		spin_for((r->round * 53) % 2000);
		r->concurrent++;
		CHECK_OK(pthread_cancel(r->target));
		__atomic_store_n(&r->posted, 0, __ATOMIC_RELEASE);
	}
	return NULL;
}

TCASE(cancel_racing_the_start_of_a_wait_is_never_lost)
{
	if (tc_rerun_on_workers(2, 60))
		return;
	tc_watchdog(50);
	static struct race r;
	int p[2];
	CHECK_OK(pipe(p));
	r.fd = p[0];
	pthread_t c;
	tc_foreign_run(race_canceller, &r, &c);
	for (r.round = 0; r.round < 3000; r.round++) {
		r.started = 0;
		CHECK_OK(pthread_create(&r.target, NULL, race_target, &r));
		__atomic_store_n(&r.posted, 1, __ATOMIC_RELEASE);
		CHECK(tc_join(r.target) == PTHREAD_CANCELED);
		while (__atomic_load_n(&r.posted, __ATOMIC_ACQUIRE))
			sched_yield();
	}
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
	tc_foreign_join(c);
	CHECK_EQ(r.concurrent, 3000u);
	close(p[0]);
	close(p[1]);
}

/* ---- asynchronous cancellation ---- */

static volatile long spins;
static volatile int async_cleanup_ran;

static void async_cleanup(void *arg)
{
	(void)arg;
	async_cleanup_ran = 1;
}

/* never reaches a cancellation point, nor calls the library at all */
static void *compute_async(void *arg)
{
	(void)arg;
	CHECK_OK(pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL));
	pthread_cleanup_push(async_cleanup, NULL);
	for (;;)
		spins++;
	pthread_cleanup_pop(0);
	return NULL;
}

/* POSIX: with the asynchronous type, a cancel may act at any time; a
 * thread in a loop that calls nothing used to run on for good */
static void async_cancel_of_a_computing_thread(void)
{
	tc_watchdog(20);
	spins = 0;
	async_cleanup_ran = 0;
	pthread_t t = tc_spawn(compute_async, NULL);
	while (spins < 1000000)
		sched_yield();
	uint64_t t0 = tc_now_ns();
	CHECK_OK(pthread_cancel(t));
	CHECK(tc_join(t) == PTHREAD_CANCELED);
	/* at once, not when something else (the watchdog's message, a
	 * cancellation point in its signal handler) happens to act on it */
	CHECK_MS_RANGE(tc_now_ns() - t0, 0, 100);
	CHECK_EQ(async_cleanup_ran, 1);
}

TCASE(async_cancel_acts_on_a_thread_that_never_calls_the_library)
{
	if (tc_rerun_on_workers(2, 30))
		return;
	async_cancel_of_a_computing_thread();
}

static volatile int pending_seen;

static void *async_after_pending(void *arg)
{
	pthread_barrier_t *b = arg;
	CHECK_OK(pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL));
	pthread_barrier_wait(b); /* the cancel comes now, and waits */
	pthread_barrier_wait(b);
	pending_seen = 1;
	CHECK_OK(pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL));
	/* enabling acts on the pending cancel at once */
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	pending_seen = 2;
	return NULL;
}

TCASE(pending_cancel_acts_when_async_cancel_is_enabled)
{
	pthread_barrier_t b;
	CHECK_OK(pthread_barrier_init(&b, NULL, 2));
	pthread_t t = tc_spawn(async_after_pending, &b);
	pthread_barrier_wait(&b);
	CHECK_OK(pthread_cancel(t));
	pthread_barrier_wait(&b);
	CHECK(tc_join(t) == PTHREAD_CANCELED);
	CHECK_EQ(pending_seen, 1);
	pthread_barrier_destroy(&b);
}

/* a thread whose cancel state is disabled goes on, registers and all */
static volatile double kept_sum;

static void *async_disabled(void *arg)
{
	volatile int *stop = arg;
	CHECK_OK(pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL));
	CHECK_OK(pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL));
	double x = 0;
	long n = 0;
	while (!*stop) {
		x += 0.5;
		n++;
	}
	kept_sum = x - 0.5 * (double)n; /* 0 unless a register was lost */
	return (void *)1;
}

TCASE(async_cancel_waits_while_cancellation_is_disabled)
{
	volatile int stop = 0;
	pthread_t t = tc_spawn(async_disabled, (void *)&stop);
	tc_msleep(20);
	CHECK_OK(pthread_cancel(t));
	tc_msleep(20);
	stop = 1;
	CHECK((long)tc_join(t) == 1);
	CHECK(kept_sum == 0.0);
}

/* a cancel that came while the thread was switched out (waiting for a
 * mutex, not a cancellation point) acts once it computes again */
static pthread_mutex_t async_m = PTHREAD_MUTEX_INITIALIZER;

static void *lock_then_compute(void *arg)
{
	(void)arg;
	CHECK_OK(pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL));
	pthread_mutex_lock(&async_m); /* parks: main holds it */
	pthread_mutex_unlock(&async_m);
	for (;;)
		spins++;
	return NULL;
}

TCASE(async_cancel_acts_after_the_thread_was_switched_out)
{
	if (tc_rerun_on_workers(2, 30))
		return;
	tc_watchdog(20);
	CHECK_OK(pthread_mutex_lock(&async_m));
	pthread_t t = tc_spawn(lock_then_compute, NULL);
	tc_msleep(20); /* it waits for the mutex */
	uint64_t t0 = tc_now_ns();
	CHECK_OK(pthread_cancel(t));
	CHECK_OK(pthread_mutex_unlock(&async_m));
	CHECK(tc_join(t) == PTHREAD_CANCELED);
	CHECK_MS_RANGE(tc_now_ns() - t0, 0, 100);
}
