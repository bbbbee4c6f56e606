/* mutex.c: mutexes of every type — mutual exclusion under contention,
 * trylock/timedlock/clocklock, recursion, the error returns of
 * errorcheck and recursive mutexes, static initializers, and the
 * mutex attributes (with the ones Caprice refuses). */
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <stdbool.h>
#include <unistd.h>

#include "tcase.h"

static void init_typed(pthread_mutex_t *m, int type)
{
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	CHECK_OK(pthread_mutexattr_settype(&a, type));
	CHECK_OK(pthread_mutex_init(m, &a));
	CHECK_OK(pthread_mutexattr_destroy(&a));
}

/* Runs fn(arg) in a new thread and returns its result. */
static long in_thread(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, fn, arg));
	CHECK_OK(pthread_join(t, &r));
	return (long)r;
}

static void *try_lock_other(void *m)
{
	int e = pthread_mutex_trylock(m);
	if (e == 0)
		pthread_mutex_unlock(m);
	return (void *)(long)e;
}

static void *unlock_other(void *m)
{
	return (void *)(long)pthread_mutex_unlock(m);
}

static void *lock_unlock_other(void *m)
{
	int e = pthread_mutex_lock(m);
	if (e)
		return (void *)(long)e;
	return (void *)(long)pthread_mutex_unlock(m);
}

/* ---- basics ---- */

TCASE(init_lock_unlock_destroy)
{
	int types[] = { PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_RECURSIVE, PTHREAD_MUTEX_ERRORCHECK,
		        PTHREAD_MUTEX_DEFAULT };
	for (unsigned i = 0; i < 4; i++) {
		pthread_mutex_t m;
		init_typed(&m, types[i]);
		CHECK_OK(pthread_mutex_lock(&m));
		CHECK_EQ(in_thread(try_lock_other, &m), EBUSY);
		CHECK_OK(pthread_mutex_unlock(&m));
		CHECK_EQ(in_thread(try_lock_other, &m), 0);
		CHECK_OK(pthread_mutex_destroy(&m));
	}
	pthread_mutex_t m;
	CHECK_OK(pthread_mutex_init(&m, NULL));
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_OK(pthread_mutex_unlock(&m));
	CHECK_OK(pthread_mutex_destroy(&m));
}

TCASE(destroy_locked_ebusy)
{
	pthread_mutex_t m;
	CHECK_OK(pthread_mutex_init(&m, NULL));
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_EQ(pthread_mutex_destroy(&m), EBUSY);
	CHECK_OK(pthread_mutex_unlock(&m));
	CHECK_OK(pthread_mutex_destroy(&m));
}

TCASE(trylock)
{
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	CHECK_OK(pthread_mutex_trylock(&m));
	CHECK_EQ(in_thread(try_lock_other, &m), EBUSY);
	CHECK_OK(pthread_mutex_unlock(&m));
	CHECK_OK(pthread_mutex_trylock(&m));
	CHECK_OK(pthread_mutex_unlock(&m));
}

/* ---- contention ---- */

struct counter {
	pthread_mutex_t m;
	long value;
	long iters;
	int inside; /* threads inside the critical section: must stay <= 1 */
	int overlap;
};

static void *count_up(void *arg)
{
	struct counter *c = arg;
	for (long i = 0; i < c->iters; i++) {
		if (pthread_mutex_lock(&c->m) != 0)
			return (void *)1;
		if (__atomic_add_fetch(&c->inside, 1, __ATOMIC_RELAXED) != 1)
			c->overlap = 1;
		c->value++; /* plain increment: only the mutex makes it exact */
		if ((i & 127) == 0)
			sched_yield(); /* hold it across a switch now and then */
		__atomic_sub_fetch(&c->inside, 1, __ATOMIC_RELAXED);
		if (pthread_mutex_unlock(&c->m) != 0)
			return (void *)2;
	}
	return NULL;
}

static void contend(int type)
{
	enum { T = 8 };
	static struct counter c;
	memset(&c, 0, sizeof c);
	init_typed(&c.m, type);
	c.iters = 100000;
	pthread_t t[T];
	for (int i = 0; i < T; i++)
		CHECK_OK(pthread_create(&t[i], NULL, count_up, &c));
	for (int i = 0; i < T; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK_EQ((long)r, 0);
	}
	CHECK_EQ(c.overlap, 0);
	CHECK_EQ(c.value, T * c.iters);
	CHECK_OK(pthread_mutex_destroy(&c.m));
}

TCASE(counter_8_threads_normal)
{
	contend(PTHREAD_MUTEX_NORMAL);
}

TCASE(counter_8_threads_recursive)
{
	contend(PTHREAD_MUTEX_RECURSIVE);
}

TCASE(counter_8_threads_errorcheck)
{
	contend(PTHREAD_MUTEX_ERRORCHECK);
}

static void *trylock_spin(void *arg)
{
	struct counter *c = arg;
	for (long i = 0; i < c->iters; i++) {
		int e;
		while ((e = pthread_mutex_trylock(&c->m)) == EBUSY)
			sched_yield();
		if (e)
			return (void *)(long)e;
		if (__atomic_add_fetch(&c->inside, 1, __ATOMIC_RELAXED) != 1)
			c->overlap = 1;
		c->value++;
		__atomic_sub_fetch(&c->inside, 1, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&c->m);
	}
	return NULL;
}

/* trylock and lock mixed on one mutex */
TCASE(counter_trylock_and_lock)
{
	static struct counter c;
	pthread_mutex_init(&c.m, NULL);
	c.iters = 50000;
	pthread_t t[6];
	for (int i = 0; i < 6; i++)
		CHECK_OK(pthread_create(&t[i], NULL, i % 2 ? trylock_spin : count_up, &c));
	for (int i = 0; i < 6; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK_EQ((long)r, 0);
	}
	CHECK_EQ(c.overlap, 0);
	CHECK_EQ(c.value, 6 * c.iters);
}

struct holder {
	pthread_mutex_t *m;
	long hold_ms; /* < 0: until `release` is set */
	int locked;
	int release;
};

static void *hold_for(void *arg)
{
	struct holder *h = arg;
	pthread_mutex_lock(h->m);
	__atomic_store_n(&h->locked, 1, __ATOMIC_RELEASE);
	if (h->hold_ms >= 0)
		tc_msleep(h->hold_ms);
	else
		while (!__atomic_load_n(&h->release, __ATOMIC_ACQUIRE))
			tc_msleep(1);
	pthread_mutex_unlock(h->m);
	return NULL;
}

static void wait_locked(struct holder *h)
{
	uint64_t give_up = tc_now_ns() + 5000000000ull;
	while (!__atomic_load_n(&h->locked, __ATOMIC_ACQUIRE)) {
		CHECK(tc_now_ns() < give_up);
		sched_yield();
	}
}

/* A thread blocked on a mutex parks: others keep running meanwhile, and it
 * gets the mutex when it is released. */
TCASE(blocked_locker_parks)
{
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	struct holder h = { &m, 150, 0, 0 };
	pthread_t th;
	CHECK_OK(pthread_create(&th, NULL, hold_for, &h));
	wait_locked(&h);
	pthread_t waiter;
	CHECK_OK(pthread_create(&waiter, NULL, lock_unlock_other, &m));
	/* meanwhile, plenty of other work gets done */
	long spins = 0;
	uint64_t t0 = tc_now_ns();
	while (tc_now_ns() - t0 < 50000000ull) {
		sched_yield();
		spins++;
	}
	CHECK(spins > 100);
	void *r;
	CHECK_OK(pthread_join(waiter, &r));
	CHECK_EQ((long)r, 0);
	CHECK(tc_now_ns() - t0 >= 90000000ull); /* it had to wait for the holder */
	CHECK_OK(pthread_join(th, NULL));
}

/* ---- recursive ---- */

TCASE(recursive_depth)
{
	enum { DEPTH = 1000 };
	pthread_mutex_t m;
	init_typed(&m, PTHREAD_MUTEX_RECURSIVE);
	for (int i = 0; i < DEPTH; i++)
		CHECK_OK(pthread_mutex_lock(&m));
	CHECK_OK(pthread_mutex_trylock(&m)); /* trylock recurses too */
	CHECK_EQ(in_thread(try_lock_other, &m), EBUSY);
	CHECK_OK(pthread_mutex_unlock(&m));
	for (int i = 0; i < DEPTH - 1; i++) {
		CHECK_OK(pthread_mutex_unlock(&m));
		if (i % 100 == 0)
			CHECK_EQ(in_thread(try_lock_other, &m), EBUSY); /* still held */
	}
	CHECK_EQ(in_thread(try_lock_other, &m), EBUSY);
	CHECK_OK(pthread_mutex_unlock(&m)); /* the last one */
	CHECK_EQ(in_thread(try_lock_other, &m), 0);
	CHECK_EQ(pthread_mutex_unlock(&m), EPERM); /* one too many */
	CHECK_OK(pthread_mutex_destroy(&m));
}

TCASE(recursive_unlock_not_owner_eperm)
{
	pthread_mutex_t m;
	init_typed(&m, PTHREAD_MUTEX_RECURSIVE);
	CHECK_EQ(pthread_mutex_unlock(&m), EPERM); /* unlocked */
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_EQ(in_thread(unlock_other, &m), EPERM); /* another owner */
	CHECK_EQ(in_thread(try_lock_other, &m), EBUSY);
	CHECK_OK(pthread_mutex_unlock(&m));
	CHECK_OK(pthread_mutex_unlock(&m));
}

static void *recursive_in_thread(void *m)
{
	for (int i = 0; i < 50; i++)
		if (pthread_mutex_lock(m))
			return (void *)1;
	sched_yield();
	for (int i = 0; i < 50; i++)
		if (pthread_mutex_unlock(m))
			return (void *)2;
	return NULL;
}

/* Recursion counts belong to the owner; threads taking turns at depth do
 * not confuse each other. */
TCASE(recursive_contended)
{
	pthread_mutex_t m;
	init_typed(&m, PTHREAD_MUTEX_RECURSIVE);
	pthread_t t[8];
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < 8; i++)
			CHECK_OK(pthread_create(&t[i], NULL, recursive_in_thread, &m));
		for (int i = 0; i < 8; i++) {
			void *r;
			CHECK_OK(pthread_join(t[i], &r));
			CHECK_EQ((long)r, 0);
		}
	}
	CHECK_OK(pthread_mutex_trylock(&m));
	CHECK_OK(pthread_mutex_unlock(&m));
}

/* ---- errorcheck ---- */

TCASE(errorcheck_errors)
{
	pthread_mutex_t m;
	init_typed(&m, PTHREAD_MUTEX_ERRORCHECK);
	CHECK_EQ(pthread_mutex_unlock(&m), EPERM); /* not locked */
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_EQ(pthread_mutex_lock(&m), EDEADLK);  /* relock by owner */
	CHECK_EQ(pthread_mutex_trylock(&m), EBUSY); /* trylock by owner */
	struct timespec dl = tc_abs_ms(CLOCK_REALTIME, 100);
	CHECK_EQ(pthread_mutex_timedlock(&m, &dl), EDEADLK);
	CHECK_EQ(in_thread(unlock_other, &m), EPERM); /* not the owner */
	CHECK_OK(pthread_mutex_unlock(&m));
	CHECK_EQ(pthread_mutex_unlock(&m), EPERM); /* twice */
	CHECK_EQ(in_thread(try_lock_other, &m), 0);
	CHECK_OK(pthread_mutex_destroy(&m));
}

/* The owner is a user thread, not the worker it runs on: another thread
 * on the same worker does not own it. */
TCASE(errorcheck_owner_is_thread)
{
	pthread_mutex_t m;
	init_typed(&m, PTHREAD_MUTEX_ERRORCHECK);
	CHECK_OK(pthread_mutex_lock(&m));
	for (int i = 0; i < 20; i++) {
		CHECK_EQ(in_thread(unlock_other, &m), EPERM);
		CHECK_EQ(in_thread(try_lock_other, &m), EBUSY);
	}
	CHECK_OK(pthread_mutex_unlock(&m));
}

/* ---- timed ---- */

static void check_timed(clockid_t clock, bool clocklock, int type)
{
	pthread_mutex_t m;
	init_typed(&m, type);
	struct holder h = { &m, 1200, 0, 0 };
	pthread_t th;
	CHECK_OK(pthread_create(&th, NULL, hold_for, &h));
	wait_locked(&h);

	/* times out: no earlier than the deadline, not much later */
	struct timespec dl = tc_abs_ms(clock, 100);
	uint64_t t0 = tc_now_ns();
	int e = clocklock ? pthread_mutex_clocklock(&m, clock, &dl) : pthread_mutex_timedlock(&m, &dl);
	uint64_t el = tc_now_ns() - t0;
	CHECK_EQ(e, ETIMEDOUT);
	struct timespec now;
	clock_gettime(clock, &now);
	CHECK(now.tv_sec > dl.tv_sec || (now.tv_sec == dl.tv_sec && now.tv_nsec >= dl.tv_nsec));
	if (el > tc_late_ns(600))
		TFAIL("timed out after %llu ms for a 100 ms deadline", (unsigned long long)(el / 1000000));

	/* already past */
	dl = tc_abs_ms_ago(clock, 50);
	t0 = tc_now_ns();
	e = clocklock ? pthread_mutex_clocklock(&m, clock, &dl) : pthread_mutex_timedlock(&m, &dl);
	CHECK_EQ(e, ETIMEDOUT);
	CHECK(tc_now_ns() - t0 < tc_late_ns(250));

	/* malformed deadlines, when the lock is not free at once */
	struct timespec bad = { dl.tv_sec + 10, 1000000000L };
	e = clocklock ? pthread_mutex_clocklock(&m, clock, &bad) : pthread_mutex_timedlock(&m, &bad);
	CHECK_EQ(e, EINVAL);
	bad.tv_nsec = -1;
	e = clocklock ? pthread_mutex_clocklock(&m, clock, &bad) : pthread_mutex_timedlock(&m, &bad);
	CHECK_EQ(e, EINVAL);

	/* the holder lets go before the deadline: we get it */
	dl = tc_abs_ms(clock, 5000);
	t0 = tc_now_ns();
	e = clocklock ? pthread_mutex_clocklock(&m, clock, &dl) : pthread_mutex_timedlock(&m, &dl);
	CHECK_OK(e);
	el = tc_now_ns() - t0;
	CHECK(el < 3000000000ull);
	CHECK_EQ(in_thread(try_lock_other, &m), EBUSY); /* we own it */
	CHECK_OK(pthread_mutex_unlock(&m));
	CHECK_OK(pthread_join(th, NULL));

	/* free: taken at once, even with a deadline already past */
	dl = tc_abs_ms_ago(clock, 1000);
	e = clocklock ? pthread_mutex_clocklock(&m, clock, &dl) : pthread_mutex_timedlock(&m, &dl);
	CHECK_OK(e);
	CHECK_OK(pthread_mutex_unlock(&m));
	CHECK_OK(pthread_mutex_destroy(&m));
}

TCASE(timedlock_realtime)
{
	check_timed(CLOCK_REALTIME, false, PTHREAD_MUTEX_NORMAL);
}

TCASE(timedlock_errorcheck)
{
	check_timed(CLOCK_REALTIME, false, PTHREAD_MUTEX_ERRORCHECK);
}

TCASE(timedlock_recursive)
{
	check_timed(CLOCK_REALTIME, false, PTHREAD_MUTEX_RECURSIVE);
}

TCASE(clocklock_monotonic)
{
	check_timed(CLOCK_MONOTONIC, true, PTHREAD_MUTEX_NORMAL);
}

TCASE(clocklock_realtime)
{
	check_timed(CLOCK_REALTIME, true, PTHREAD_MUTEX_NORMAL);
}

TCASE(clocklock_bad_clock_einval)
{
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	struct holder h = { &m, -1, 0, 0 };
	pthread_t th;
	CHECK_OK(pthread_create(&th, NULL, hold_for, &h));
	wait_locked(&h);
	struct timespec dl = tc_abs_ms(CLOCK_MONOTONIC, 100);
	CHECK_EQ(pthread_mutex_clocklock(&m, CLOCK_PROCESS_CPUTIME_ID, &dl), EINVAL);
	CHECK_EQ(pthread_mutex_clocklock(&m, (clockid_t)12345, &dl), EINVAL);
	__atomic_store_n(&h.release, 1, __ATOMIC_RELEASE);
	CHECK_OK(pthread_join(th, NULL));
}

struct timed_arg {
	pthread_mutex_t *m;
	int ms;
	int timeouts, gets;
	uint64_t worst_late_ns;
};

static void *timed_contender(void *arg)
{
	struct timed_arg *a = arg;
	for (int i = 0; i < 20; i++) {
		struct timespec dl = tc_abs_ms(CLOCK_MONOTONIC, a->ms);
		uint64_t want = (uint64_t)dl.tv_sec * 1000000000u + (uint64_t)dl.tv_nsec;
		int e = pthread_mutex_clocklock(a->m, CLOCK_MONOTONIC, &dl);
		if (e == 0) {
			a->gets++;
			tc_msleep(2);
			pthread_mutex_unlock(a->m);
		} else if (e == ETIMEDOUT) {
			uint64_t now = tc_now_ns();
			if (now < want)
				return (void *)1; /* early */
			if (now - want > a->worst_late_ns)
				a->worst_late_ns = now - want;
			a->timeouts++;
		} else {
			return (void *)2;
		}
	}
	return NULL;
}

/* Timed lockers that time out leave the mutex usable for the rest: a
 * timed-out waiter must not swallow a wakeup meant for another. */
TCASE(timedlock_mixed_contention)
{
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	enum { T = 8 };
	struct timed_arg a[T];
	pthread_t t[T];
	for (int i = 0; i < T; i++) {
		a[i] = (struct timed_arg){ &m, 1 + i * 3, 0, 0, 0 };
		CHECK_OK(pthread_create(&t[i], NULL, timed_contender, &a[i]));
	}
	int gets = 0;
	for (int i = 0; i < T; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK_EQ((long)r, 0);
		gets += a[i].gets;
		CHECK_EQ(a[i].gets + a[i].timeouts, 20);
		if (a[i].worst_late_ns > tc_late_ns(500))
			TFAIL("a timed lock returned %llu ms late",
			      (unsigned long long)(a[i].worst_late_ns / 1000000));
	}
	CHECK(gets > 0);
	CHECK_OK(pthread_mutex_trylock(&m));
	CHECK_OK(pthread_mutex_unlock(&m));
}

/* ---- static initializers ---- */

TCASE(static_initializers)
{
	static pthread_mutex_t n = PTHREAD_MUTEX_INITIALIZER;
	static pthread_mutex_t r = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
	static pthread_mutex_t e = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
	static pthread_mutex_t a = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;

	CHECK_OK(pthread_mutex_lock(&n));
	CHECK_EQ(pthread_mutex_trylock(&n), EBUSY);
	CHECK_OK(pthread_mutex_unlock(&n));

	CHECK_OK(pthread_mutex_lock(&r));
	CHECK_OK(pthread_mutex_lock(&r)); /* recursive */
	CHECK_EQ(in_thread(try_lock_other, &r), EBUSY);
	CHECK_OK(pthread_mutex_unlock(&r));
	CHECK_EQ(in_thread(try_lock_other, &r), EBUSY);
	CHECK_OK(pthread_mutex_unlock(&r));
	CHECK_EQ(pthread_mutex_unlock(&r), EPERM);

	CHECK_OK(pthread_mutex_lock(&e));
	CHECK_EQ(pthread_mutex_lock(&e), EDEADLK); /* error checking */
	CHECK_OK(pthread_mutex_unlock(&e));
	CHECK_EQ(pthread_mutex_unlock(&e), EPERM);

	CHECK_OK(pthread_mutex_lock(&a)); /* adaptive behaves as normal */
	CHECK_EQ(in_thread(try_lock_other, &a), EBUSY);
	CHECK_OK(pthread_mutex_unlock(&a));
}

static pthread_mutex_t static_counter_m = PTHREAD_MUTEX_INITIALIZER;
static long static_counter;

static void *bump_static(void *arg)
{
	(void)arg;
	for (int i = 0; i < 50000; i++) {
		pthread_mutex_lock(&static_counter_m);
		static_counter++;
		pthread_mutex_unlock(&static_counter_m);
	}
	return NULL;
}

TCASE(static_initializer_contended)
{
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		CHECK_OK(pthread_create(&t[i], NULL, bump_static, NULL));
	for (int i = 0; i < 4; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK_EQ(static_counter, 200000);
}

/* ---- attributes ---- */

TCASE(mutexattr_type)
{
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	int t;
	CHECK_OK(pthread_mutexattr_gettype(&a, &t));
	CHECK_EQ(t, PTHREAD_MUTEX_DEFAULT);
	int types[] = { PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_RECURSIVE, PTHREAD_MUTEX_ERRORCHECK,
		        PTHREAD_MUTEX_DEFAULT };
	for (unsigned i = 0; i < 4; i++) {
		CHECK_OK(pthread_mutexattr_settype(&a, types[i]));
		CHECK_OK(pthread_mutexattr_gettype(&a, &t));
		CHECK_EQ(t, types[i]);
	}
	CHECK_OK(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE));
	CHECK_EQ(pthread_mutexattr_settype(&a, 12345), EINVAL);
	CHECK_EQ(pthread_mutexattr_settype(&a, -1), EINVAL);
	CHECK_OK(pthread_mutexattr_gettype(&a, &t));
	CHECK_EQ(t, PTHREAD_MUTEX_RECURSIVE); /* unchanged */
	CHECK_OK(pthread_mutexattr_destroy(&a));
}

TCASE(mutexattr_pshared)
{
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	int v;
	CHECK_OK(pthread_mutexattr_getpshared(&a, &v));
	CHECK_EQ(v, PTHREAD_PROCESS_PRIVATE);
	CHECK_OK(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	CHECK_OK(pthread_mutexattr_getpshared(&a, &v));
	CHECK_EQ(v, PTHREAD_PROCESS_SHARED);
	CHECK_EQ(pthread_mutexattr_setpshared(&a, 12345), EINVAL);
	pthread_mutex_t m;
	CHECK_OK(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE));
	CHECK_OK(pthread_mutex_init(&m, &a));
	CHECK_OK(pthread_mutex_destroy(&m));
	CHECK_OK(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_NORMAL));
	CHECK_OK(pthread_mutex_init(&m, &a));
	CHECK_OK(pthread_mutex_destroy(&m));
	CHECK_OK(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_mutexattr_getpshared(&a, &v));
	CHECK_EQ(v, PTHREAD_PROCESS_PRIVATE);
	pthread_mutexattr_destroy(&a);
}

TCASE(mutexattr_protocol_and_prioceiling)
{
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	int v;
	CHECK_OK(pthread_mutexattr_getprotocol(&a, &v));
	CHECK_EQ(v, PTHREAD_PRIO_NONE);
	int protos[] = { PTHREAD_PRIO_INHERIT, PTHREAD_PRIO_PROTECT, PTHREAD_PRIO_NONE };
	for (unsigned i = 0; i < 3; i++) {
		CHECK_OK(pthread_mutexattr_setprotocol(&a, protos[i]));
		CHECK_OK(pthread_mutexattr_getprotocol(&a, &v));
		CHECK_EQ(v, protos[i]);
	}
	CHECK_EQ(pthread_mutexattr_setprotocol(&a, 12345), EINVAL);

	int hi = sched_get_priority_max(SCHED_FIFO), lo = sched_get_priority_min(SCHED_FIFO);
	CHECK_OK(pthread_mutexattr_setprioceiling(&a, hi));
	CHECK_OK(pthread_mutexattr_getprioceiling(&a, &v));
	CHECK_EQ(v, hi);
	CHECK_EQ(pthread_mutexattr_setprioceiling(&a, hi + 1), EINVAL);
	CHECK_EQ(pthread_mutexattr_setprioceiling(&a, lo - 1), EINVAL);
	CHECK_OK(pthread_mutexattr_getprioceiling(&a, &v));
	CHECK_EQ(v, hi);
	/* the type survives the ceiling and protocol bits, and vice versa */
	CHECK_OK(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK));
	CHECK_OK(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_PROTECT));
	CHECK_OK(pthread_mutexattr_gettype(&a, &v));
	CHECK_EQ(v, PTHREAD_MUTEX_ERRORCHECK);
	CHECK_OK(pthread_mutexattr_getprioceiling(&a, &v));
	CHECK_EQ(v, hi);
	CHECK_OK(pthread_mutexattr_getprotocol(&a, &v));
	CHECK_EQ(v, PTHREAD_PRIO_PROTECT);

	pthread_mutex_t m;
	CHECK_OK(pthread_mutex_init(&m, &a));
	CHECK_OK(pthread_mutex_getprioceiling(&m, &v));
	CHECK_EQ(v, hi);
	CHECK_OK(pthread_mutex_destroy(&m));
	int old = -1;
	CHECK_OK(pthread_mutex_setprioceiling(&m, lo, &old));
	CHECK_EQ(old, hi);
	CHECK_OK(pthread_mutex_getprioceiling(&m, &v));
	CHECK_EQ(v, lo);
	CHECK_EQ(pthread_mutex_setprioceiling(&m, hi + 1, &old), EINVAL);
	/* and it is still an errorcheck mutex */
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_EQ(pthread_mutex_lock(&m), EDEADLK);
	CHECK_OK(pthread_mutex_unlock(&m));
	pthread_mutexattr_destroy(&a);
}

/* As NPTL: a default attribute's ceiling lies in SCHED_FIFO's range, and
 * only a PTHREAD_PRIO_PROTECT mutex has one. */
TCASE(prioceiling_belongs_to_priority_protect_mutexes)
{
	int lo = sched_get_priority_min(SCHED_FIFO), hi = sched_get_priority_max(SCHED_FIFO);
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	int v = -1;
	CHECK_OK(pthread_mutexattr_getprioceiling(&a, &v));
	CHECK(v >= lo && v <= hi);
	pthread_mutex_t m, s = PTHREAD_MUTEX_INITIALIZER;
	int old;
	CHECK_OK(pthread_mutex_init(&m, &a));
	CHECK_EQ(pthread_mutex_getprioceiling(&m, &v), EINVAL);
	CHECK_EQ(pthread_mutex_getprioceiling(&s, &v), EINVAL);
	CHECK_EQ(pthread_mutex_setprioceiling(&m, lo, &old), EINVAL);
	CHECK_OK(pthread_mutex_destroy(&m));
	CHECK_OK(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT));
	CHECK_OK(pthread_mutex_init(&m, &a));
	CHECK_EQ(pthread_mutex_getprioceiling(&m, &v), EINVAL);
	CHECK_OK(pthread_mutex_destroy(&m));
	CHECK_OK(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_PROTECT));
	CHECK_OK(pthread_mutex_init(&m, &a));
	CHECK_OK(pthread_mutex_getprioceiling(&m, &v));
	CHECK(v >= lo && v <= hi);
	CHECK_OK(pthread_mutex_destroy(&m));
	pthread_mutexattr_destroy(&a);
}

/* A mutex initialized with default attributes behaves like NULL ones. */
TCASE(default_attr_is_normal)
{
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	pthread_mutex_t m;
	CHECK_OK(pthread_mutex_init(&m, &a));
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_EQ(pthread_mutex_trylock(&m), EBUSY);
	CHECK_OK(pthread_mutex_unlock(&m));
	pthread_mutexattr_destroy(&a);
}

/* Handing a lock back and forth: each unlock with a waiter must let that
 * waiter in (no lost wakeup), many times over. */
struct relay {
	pthread_mutex_t m;
	long turns;
	long done;
};

static void *relay_runner(void *arg)
{
	struct relay *r = arg;
	for (;;) {
		pthread_mutex_lock(&r->m);
		if (r->done >= r->turns) {
			pthread_mutex_unlock(&r->m);
			return NULL;
		}
		r->done++;
		pthread_mutex_unlock(&r->m);
	}
}

TCASE(handoff_many_threads)
{
	static struct relay r = { PTHREAD_MUTEX_INITIALIZER, 2000000, 0 };
	enum { T = 16 };
	pthread_t t[T];
	uint64_t t0 = tc_now_ns();
	for (int i = 0; i < T; i++)
		CHECK_OK(pthread_create(&t[i], NULL, relay_runner, &r));
	for (int i = 0; i < T; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK_EQ(r.done, r.turns);
	CHECK(tc_now_ns() - t0 < 30000000000ull);
}

/* ---- process-shared mutexes: glibc's layout and protocol ---- */

struct shared_counter {
	pthread_mutex_t m;
	long count;
};

static struct shared_counter *shared_counter_new(void)
{
	struct shared_counter *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE,
	                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(c != MAP_FAILED);
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	CHECK_OK(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	CHECK_OK(pthread_mutex_init(&c->m, &a));
	pthread_mutexattr_destroy(&a);
	c->count = 0;
	return c;
}

static void count_shared(struct shared_counter *c, int n)
{
	for (int i = 0; i < n; i++) {
		pthread_mutex_lock(&c->m);
		long v = c->count;
		if (i % 64 == 0)
			sched_yield(); /* hold it a while: the other side waits */
		c->count = v + 1;
		pthread_mutex_unlock(&c->m);
	}
}

TCASE(process_shared_mutex_across_fork)
{
	tc_watchdog(30);
	struct shared_counter *c = shared_counter_new();
	pid_t pid = fork();
	if (pid == 0) {
		count_shared(c, 20000);
		_exit(0);
	}
	CHECK(pid > 0);
	count_shared(c, 20000);
	int st = 0;
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK_EQ(c->count, 40000);
	/* and a timed lock times out on it */
	CHECK_OK(pthread_mutex_lock(&c->m));
	pid = fork();
	if (pid == 0) {
		struct timespec at = tc_abs_ms(CLOCK_REALTIME, 50);
		_exit(pthread_mutex_timedlock(&c->m, &at) == ETIMEDOUT ? 0 : 1);
	}
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK_OK(pthread_mutex_unlock(&c->m));
	munmap(c, sizeof *c);
}

/* glibc's own lock and unlock (what an NPTL process on the other side
 * runs) share it with Caprice's */
static void *glibc_counter(void *arg)
{
	struct shared_counter *c = arg;
	int (*lk)(pthread_mutex_t *) = (int (*)(pthread_mutex_t *))tc_libc_sym("pthread_mutex_lock");
	int (*ul)(pthread_mutex_t *) = (int (*)(pthread_mutex_t *))tc_libc_sym("pthread_mutex_unlock");
	for (int i = 0; i < 20000; i++) {
		if (lk(&c->m))
			return (void *)2;
		long v = c->count;
		if (i % 64 == 0)
			usleep(10);
		c->count = v + 1;
		if (ul(&c->m))
			return (void *)3;
	}
	return NULL;
}

TCASE(process_shared_mutex_speaks_glibcs_protocol)
{
	tc_watchdog(30);
	struct shared_counter *c = shared_counter_new();
	pthread_t t;
	tc_foreign_run(glibc_counter, c, &t);
	count_shared(c, 20000);
	CHECK(tc_foreign_join(t) == NULL);
	CHECK_EQ(c->count, 40000);
	munmap(c, sizeof *c);
}
