/* cond.c: condition variables — signal lets exactly one waiter through,
 * broadcast all of them, no wakeup is lost, timed waits on both clocks
 * end on time with the mutex held again, and the condattr calls and
 * error returns. */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

static bool reached(clockid_t clock, const struct timespec *dl)
{
	struct timespec now;
	clock_gettime(clock, &now);
	return now.tv_sec > dl->tv_sec || (now.tv_sec == dl->tv_sec && now.tv_nsec >= dl->tv_nsec);
}

static uint64_t ms_past(clockid_t clock, const struct timespec *dl)
{
	struct timespec now;
	clock_gettime(clock, &now);
	int64_t d = (int64_t)(now.tv_sec - dl->tv_sec) * 1000000000 + (now.tv_nsec - dl->tv_nsec);
	return d < 0 ? 0 : (uint64_t)d / 1000000u;
}

/* A shared test fixture: a mutex, a condvar, tokens handed out by signal
 * and a count of waiters inside pthread_cond_wait. */
struct fix {
	pthread_mutex_t m;
	pthread_cond_t c;
	int tokens;
	int waiting;  /* threads between queueing and consuming */
	int passed;   /* threads that got a token */
	int gen;      /* broadcast generation */
};

static void fix_init(struct fix *f)
{
	memset(f, 0, sizeof *f);
	CHECK_OK(pthread_mutex_init(&f->m, NULL));
	CHECK_OK(pthread_cond_init(&f->c, NULL));
}

static void *take_token(void *arg)
{
	struct fix *f = arg;
	pthread_mutex_lock(&f->m);
	f->waiting++;
	while (f->tokens == 0)
		if (pthread_cond_wait(&f->c, &f->m) != 0) {
			pthread_mutex_unlock(&f->m);
			return (void *)1;
		}
	f->tokens--;
	f->waiting--;
	f->passed++;
	pthread_mutex_unlock(&f->m);
	return NULL;
}

/* Waits (by polling, bounded) until pred(f) holds under f->m. */
static void await(struct fix *f, bool (*pred)(struct fix *), const char *what)
{
	uint64_t give_up = tc_now_ns() + 5000000000ull;
	for (;;) {
		pthread_mutex_lock(&f->m);
		bool ok = pred(f);
		pthread_mutex_unlock(&f->m);
		if (ok)
			return;
		if (tc_now_ns() > give_up)
			TFAIL("gave up waiting for %s", what);
		tc_msleep(1);
	}
}

static int want_waiting, want_passed;
static bool waiting_is(struct fix *f) { return f->waiting == want_waiting; }
static bool passed_is(struct fix *f) { return f->passed == want_passed; }

/* ---- basics ---- */

TCASE(init_destroy)
{
	pthread_cond_t c;
	CHECK_OK(pthread_cond_init(&c, NULL));
	CHECK_OK(pthread_cond_signal(&c)); /* nobody waiting: no effect */
	CHECK_OK(pthread_cond_broadcast(&c));
	CHECK_OK(pthread_cond_destroy(&c));
	pthread_condattr_t a;
	CHECK_OK(pthread_condattr_init(&a));
	CHECK_OK(pthread_cond_init(&c, &a));
	CHECK_OK(pthread_cond_destroy(&c));
	CHECK_OK(pthread_condattr_destroy(&a));
}

TCASE(signal_before_wait_is_not_remembered)
{
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t c = PTHREAD_COND_INITIALIZER;
	CHECK_OK(pthread_cond_signal(&c));
	CHECK_OK(pthread_cond_broadcast(&c));
	pthread_mutex_lock(&m);
	struct timespec dl = tc_abs_ms(CLOCK_REALTIME, 50);
	CHECK_EQ(pthread_cond_timedwait(&c, &m, &dl), ETIMEDOUT);
	pthread_mutex_unlock(&m);
}

/* One signal lets one waiter through; the rest stay blocked. */
TCASE(signal_wakes_one)
{
	enum { N = 8 };
	static struct fix f;
	fix_init(&f);
	pthread_t t[N];
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_create(&t[i], NULL, take_token, &f));
	want_waiting = N;
	await(&f, waiting_is, "all waiting");
	for (int k = 1; k <= N; k++) {
		pthread_mutex_lock(&f.m);
		f.tokens++;
		CHECK_OK(pthread_cond_signal(&f.c));
		pthread_mutex_unlock(&f.m);
		want_passed = k;
		await(&f, passed_is, "a signalled waiter to pass");
		tc_msleep(10); /* nobody else gets through on the same signal */
		pthread_mutex_lock(&f.m);
		CHECK_EQ(f.passed, k);
		CHECK_EQ(f.waiting, N - k);
		pthread_mutex_unlock(&f.m);
	}
	for (int i = 0; i < N; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK_EQ((long)r, 0);
	}
}

/* Signalling without holding the mutex is allowed and still wakes. */
TCASE(signal_outside_mutex)
{
	enum { N = 4 };
	static struct fix f;
	fix_init(&f);
	pthread_t t[N];
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_create(&t[i], NULL, take_token, &f));
	want_waiting = N;
	await(&f, waiting_is, "all waiting");
	for (int k = 0; k < N; k++) {
		pthread_mutex_lock(&f.m);
		f.tokens++;
		pthread_mutex_unlock(&f.m);
		CHECK_OK(pthread_cond_signal(&f.c));
	}
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK_EQ(f.passed, N);
}

static void *wait_generation(void *arg)
{
	struct fix *f = arg;
	pthread_mutex_lock(&f->m);
	int g = f->gen;
	f->waiting++;
	while (f->gen == g)
		pthread_cond_wait(&f->c, &f->m);
	f->waiting--;
	f->passed++;
	pthread_mutex_unlock(&f->m);
	return NULL;
}

TCASE(broadcast_wakes_all)
{
	enum { N = 200 };
	static struct fix f;
	fix_init(&f);
	static pthread_t t[N];
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_create(&t[i], NULL, wait_generation, &f));
	want_waiting = N;
	await(&f, waiting_is, "all waiting");
	uint64_t t0 = tc_now_ns();
	pthread_mutex_lock(&f.m);
	f.gen++;
	CHECK_OK(pthread_cond_broadcast(&f.c));
	pthread_mutex_unlock(&f.m);
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK_EQ(f.passed, N);
	CHECK(tc_now_ns() - t0 < 2000000000ull);
}

/* A broadcast reaches only those already waiting: later arrivals wait for
 * the next one. */
TCASE(broadcast_only_current_waiters)
{
	static struct fix f;
	fix_init(&f);
	pthread_t a[3], b[2];
	for (int i = 0; i < 3; i++)
		CHECK_OK(pthread_create(&a[i], NULL, wait_generation, &f));
	want_waiting = 3;
	await(&f, waiting_is, "first group waiting");
	pthread_mutex_lock(&f.m);
	f.gen++;
	pthread_cond_broadcast(&f.c);
	pthread_mutex_unlock(&f.m);
	for (int i = 0; i < 3; i++)
		CHECK_OK(pthread_join(a[i], NULL));
	for (int i = 0; i < 2; i++)
		CHECK_OK(pthread_create(&b[i], NULL, wait_generation, &f));
	want_waiting = 2;
	await(&f, waiting_is, "second group waiting");
	tc_msleep(20);
	pthread_mutex_lock(&f.m);
	CHECK_EQ(f.passed, 3);
	f.gen++;
	pthread_cond_broadcast(&f.c);
	pthread_mutex_unlock(&f.m);
	for (int i = 0; i < 2; i++)
		CHECK_OK(pthread_join(b[i], NULL));
	CHECK_EQ(f.passed, 5);
}

/* The waiter holds the mutex again when pthread_cond_wait returns. */
static void *wait_then_check_owner(void *arg)
{
	struct fix *f = arg;
	pthread_mutex_lock(&f->m);
	f->waiting++;
	while (f->tokens == 0)
		pthread_cond_wait(&f->c, &f->m);
	/* errorcheck mutex: unlock succeeds only for the owner */
	return (void *)(long)pthread_mutex_unlock(&f->m);
}

TCASE(wait_reacquires_mutex)
{
	static struct fix f;
	memset(&f, 0, sizeof f);
	pthread_mutexattr_t ma;
	CHECK_OK(pthread_mutexattr_init(&ma));
	CHECK_OK(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK));
	CHECK_OK(pthread_mutex_init(&f.m, &ma));
	CHECK_OK(pthread_cond_init(&f.c, NULL));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, wait_then_check_owner, &f));
	want_waiting = 1;
	await(&f, waiting_is, "waiter");
	pthread_mutex_lock(&f.m);
	f.tokens = 1;
	pthread_cond_signal(&f.c);
	tc_msleep(30); /* it is woken but cannot return while we hold the mutex */
	pthread_mutex_unlock(&f.m);
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
}

TCASE(wait_unowned_mutex_eperm)
{
	pthread_mutexattr_t ma;
	CHECK_OK(pthread_mutexattr_init(&ma));
	CHECK_OK(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK));
	pthread_mutex_t m;
	CHECK_OK(pthread_mutex_init(&m, &ma));
	pthread_cond_t c = PTHREAD_COND_INITIALIZER;
	CHECK_EQ(pthread_cond_wait(&c, &m), EPERM);
	struct timespec dl = tc_abs_ms(CLOCK_REALTIME, 1000);
	CHECK_EQ(pthread_cond_timedwait(&c, &m, &dl), EPERM);
	/* a recursive mutex not held is refused too */
	CHECK_OK(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE));
	pthread_mutex_t r;
	CHECK_OK(pthread_mutex_init(&r, &ma));
	CHECK_EQ(pthread_cond_wait(&c, &r), EPERM);
	/* and the condvar is still fine afterwards */
	CHECK_OK(pthread_cond_destroy(&c));
}

TCASE(destroy_with_waiters_ebusy)
{
	static struct fix f;
	fix_init(&f);
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, take_token, &f));
	want_waiting = 1;
	await(&f, waiting_is, "waiter");
	CHECK_EQ(pthread_cond_destroy(&f.c), EBUSY);
	pthread_mutex_lock(&f.m);
	f.tokens = 1;
	pthread_cond_signal(&f.c);
	pthread_mutex_unlock(&f.m);
	CHECK_OK(pthread_join(t, NULL));
	CHECK_OK(pthread_cond_destroy(&f.c));
}

/* A recursive mutex held several times is released fully for the wait
 * and comes back at the same depth. */
static void *lock_when_free(void *arg)
{
	struct fix *f = arg;
	pthread_mutex_lock(&f->m);
	f->tokens = 1;
	pthread_cond_signal(&f->c);
	pthread_mutex_unlock(&f->m);
	return NULL;
}

TCASE(wait_with_recursive_mutex)
{
	static struct fix f;
	memset(&f, 0, sizeof f);
	pthread_mutexattr_t ma;
	CHECK_OK(pthread_mutexattr_init(&ma));
	CHECK_OK(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE));
	CHECK_OK(pthread_mutex_init(&f.m, &ma));
	CHECK_OK(pthread_cond_init(&f.c, NULL));
	CHECK_OK(pthread_mutex_lock(&f.m));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, lock_when_free, &f));
	struct timespec dl = tc_abs_ms(CLOCK_REALTIME, 5000);
	while (!f.tokens)
		CHECK_OK(pthread_cond_timedwait(&f.c, &f.m, &dl));
	CHECK_OK(pthread_mutex_unlock(&f.m));
	CHECK_EQ(pthread_mutex_unlock(&f.m), EPERM);
	CHECK_OK(pthread_join(t, NULL));
}

/* ---- timed waits ---- */

static void check_timeout(pthread_cond_t *c, clockid_t clock, bool clockwait, long ms)
{
	pthread_mutexattr_t ma;
	CHECK_OK(pthread_mutexattr_init(&ma));
	CHECK_OK(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK));
	pthread_mutex_t m;
	CHECK_OK(pthread_mutex_init(&m, &ma));
	CHECK_OK(pthread_mutex_lock(&m));
	struct timespec dl = tc_abs_ms(clock, ms);
	int e;
	do
		e = clockwait ? pthread_cond_clockwait(c, &m, clock, &dl)
		              : pthread_cond_timedwait(c, &m, &dl);
	while (e == 0); /* spurious wakeups are allowed */
	CHECK_EQ(e, ETIMEDOUT);
	CHECK(reached(clock, &dl));
	uint64_t late = ms_past(clock, &dl);
	if (late > 500)
		TFAIL("timed out %llu ms after the deadline", (unsigned long long)late);
	CHECK_OK(pthread_mutex_unlock(&m)); /* held again, by us */
}

TCASE(timedwait_realtime_default)
{
	pthread_cond_t c = PTHREAD_COND_INITIALIZER;
	check_timeout(&c, CLOCK_REALTIME, false, 100);
	check_timeout(&c, CLOCK_REALTIME, false, 1);
	check_timeout(&c, CLOCK_REALTIME, false, 1100);
}

TCASE(timedwait_monotonic_condattr)
{
	pthread_condattr_t a;
	CHECK_OK(pthread_condattr_init(&a));
	clockid_t clk;
	CHECK_OK(pthread_condattr_getclock(&a, &clk));
	CHECK_EQ(clk, CLOCK_REALTIME);
	CHECK_OK(pthread_condattr_setclock(&a, CLOCK_MONOTONIC));
	CHECK_OK(pthread_condattr_getclock(&a, &clk));
	CHECK_EQ(clk, CLOCK_MONOTONIC);
	pthread_cond_t c;
	CHECK_OK(pthread_cond_init(&c, &a));
	check_timeout(&c, CLOCK_MONOTONIC, false, 100);
	check_timeout(&c, CLOCK_MONOTONIC, false, 1);

	/* a monotonic condvar reads its deadline on the monotonic clock: a
	 * realtime "now + 100 ms" is decades away there, and a monotonic
	 * "now + 100 ms" on the realtime clock decades ago */
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&m);
	struct timespec mono = tc_abs_ms(CLOCK_MONOTONIC, 100);
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(pthread_cond_timedwait(&c, &m, &mono), ETIMEDOUT);
	CHECK(tc_now_ns() - t0 >= 99000000ull);
	pthread_cond_t rc = PTHREAD_COND_INITIALIZER; /* realtime */
	t0 = tc_now_ns();
	CHECK_EQ(pthread_cond_timedwait(&rc, &m, &mono), ETIMEDOUT);
	CHECK(tc_now_ns() - t0 < tc_late_ns(250)); /* long past on the wall clock */
	pthread_mutex_unlock(&m);
	CHECK_OK(pthread_cond_destroy(&c));
	pthread_condattr_destroy(&a);
}

TCASE(clockwait_both_clocks)
{
	pthread_cond_t c = PTHREAD_COND_INITIALIZER;
	check_timeout(&c, CLOCK_MONOTONIC, true, 80);
	check_timeout(&c, CLOCK_REALTIME, true, 80);
	/* clockwait ignores the condvar's own clock */
	pthread_condattr_t a;
	CHECK_OK(pthread_condattr_init(&a));
	CHECK_OK(pthread_condattr_setclock(&a, CLOCK_MONOTONIC));
	pthread_cond_t mc;
	CHECK_OK(pthread_cond_init(&mc, &a));
	check_timeout(&mc, CLOCK_REALTIME, true, 80);
	check_timeout(&mc, CLOCK_MONOTONIC, true, 80);
}

TCASE(timedwait_errors)
{
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t c = PTHREAD_COND_INITIALIZER;
	pthread_mutex_lock(&m);
	struct timespec bad = tc_abs_ms(CLOCK_REALTIME, 100);
	bad.tv_nsec = 1000000000L;
	CHECK_EQ(pthread_cond_timedwait(&c, &m, &bad), EINVAL);
	bad.tv_nsec = -1;
	CHECK_EQ(pthread_cond_timedwait(&c, &m, &bad), EINVAL);
	CHECK_EQ(pthread_cond_clockwait(&c, &m, CLOCK_MONOTONIC, &bad), EINVAL);
	struct timespec ok = tc_abs_ms(CLOCK_MONOTONIC, 100);
	CHECK_EQ(pthread_cond_clockwait(&c, &m, CLOCK_PROCESS_CPUTIME_ID, &ok), EINVAL);
	CHECK_EQ(pthread_cond_clockwait(&c, &m, (clockid_t)12345, &ok), EINVAL);
	/* the mutex is still ours after each error */
	CHECK_EQ(pthread_mutex_trylock(&m), EBUSY);
	/* deadlines already past: at once */
	struct timespec past = tc_abs_ms_ago(CLOCK_REALTIME, 10);
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(pthread_cond_timedwait(&c, &m, &past), ETIMEDOUT);
	past = tc_abs_ms_ago(CLOCK_MONOTONIC, 2000);
	CHECK_EQ(pthread_cond_clockwait(&c, &m, CLOCK_MONOTONIC, &past), ETIMEDOUT);
	struct timespec epoch = { 0, 0 };
	CHECK_EQ(pthread_cond_timedwait(&c, &m, &epoch), ETIMEDOUT);
	CHECK(tc_now_ns() - t0 < tc_late_ns(250));
	CHECK_EQ(pthread_mutex_trylock(&m), EBUSY);
	pthread_mutex_unlock(&m);
}

static void *signal_after(void *arg)
{
	struct fix *f = arg;
	tc_msleep(50);
	pthread_mutex_lock(&f->m);
	f->tokens = 1;
	pthread_cond_signal(&f->c);
	pthread_mutex_unlock(&f->m);
	return NULL;
}

/* Signalled before the deadline: returns 0 early, with the mutex. */
TCASE(timedwait_signalled_early)
{
	clockid_t clocks[] = { CLOCK_REALTIME, CLOCK_MONOTONIC };
	for (int i = 0; i < 2; i++) {
		static struct fix f;
		fix_init(&f);
		pthread_condattr_t a;
		CHECK_OK(pthread_condattr_init(&a));
		CHECK_OK(pthread_condattr_setclock(&a, clocks[i]));
		CHECK_OK(pthread_cond_init(&f.c, &a));
		pthread_t t;
		pthread_mutex_lock(&f.m);
		CHECK_OK(pthread_create(&t, NULL, signal_after, &f));
		struct timespec dl = tc_abs_ms(clocks[i], 5000);
		uint64_t t0 = tc_now_ns();
		while (!f.tokens)
			CHECK_OK(pthread_cond_timedwait(&f.c, &f.m, &dl));
		uint64_t el = tc_now_ns() - t0;
		CHECK(el < 2000000000ull);
		CHECK_EQ(pthread_mutex_trylock(&f.m), EBUSY);
		pthread_mutex_unlock(&f.m);
		CHECK_OK(pthread_join(t, NULL));
	}
}

/* Timed-out waiters do not eat signals meant for the others. */
struct mixed {
	struct fix f;
	int timed_out;
};

static void *short_timed_waiter(void *arg)
{
	struct mixed *x = arg;
	pthread_mutex_lock(&x->f.m);
	struct timespec dl = tc_abs_ms(CLOCK_MONOTONIC, 5);
	int e = 0;
	while (e == 0)
		e = pthread_cond_clockwait(&x->f.c, &x->f.m, CLOCK_MONOTONIC, &dl);
	if (e == ETIMEDOUT)
		x->timed_out++;
	pthread_mutex_unlock(&x->f.m);
	return (void *)(long)(e == ETIMEDOUT ? 0 : e);
}

TCASE(timeouts_do_not_swallow_signals)
{
	static struct mixed x;
	fix_init(&x.f);
	enum { LONG_WAITERS = 4, ROUNDS = 50 };
	pthread_t lw[LONG_WAITERS];
	for (int i = 0; i < LONG_WAITERS; i++)
		CHECK_OK(pthread_create(&lw[i], NULL, take_token, &x.f));
	want_waiting = LONG_WAITERS;
	await(&x.f, waiting_is, "long waiters");
	for (int r = 0; r < ROUNDS; r++) {
		pthread_t sw[4];
		for (int i = 0; i < 4; i++)
			CHECK_OK(pthread_create(&sw[i], NULL, short_timed_waiter, &x));
		for (int i = 0; i < 4; i++) {
			void *res;
			CHECK_OK(pthread_join(sw[i], &res));
			CHECK_EQ((long)res, 0);
		}
	}
	CHECK_EQ(x.timed_out, ROUNDS * 4);
	/* now hand out exactly four tokens, one signal each */
	for (int i = 0; i < LONG_WAITERS; i++) {
		pthread_mutex_lock(&x.f.m);
		x.f.tokens++;
		pthread_cond_signal(&x.f.c);
		pthread_mutex_unlock(&x.f.m);
	}
	for (int i = 0; i < LONG_WAITERS; i++)
		CHECK_OK(pthread_join(lw[i], NULL));
	CHECK_EQ(x.f.passed, LONG_WAITERS);
}

/* ---- attributes ---- */

TCASE(condattr_calls)
{
	pthread_condattr_t a;
	CHECK_OK(pthread_condattr_init(&a));
	clockid_t clk;
	CHECK_OK(pthread_condattr_getclock(&a, &clk));
	CHECK_EQ(clk, CLOCK_REALTIME);
	CHECK_OK(pthread_condattr_setclock(&a, CLOCK_MONOTONIC));
	CHECK_OK(pthread_condattr_getclock(&a, &clk));
	CHECK_EQ(clk, CLOCK_MONOTONIC);
	CHECK_EQ(pthread_condattr_setclock(&a, CLOCK_PROCESS_CPUTIME_ID), EINVAL);
	CHECK_EQ(pthread_condattr_setclock(&a, CLOCK_THREAD_CPUTIME_ID), EINVAL);
	CHECK_EQ(pthread_condattr_setclock(&a, (clockid_t)12345), EINVAL);
	CHECK_OK(pthread_condattr_getclock(&a, &clk));
	CHECK_EQ(clk, CLOCK_MONOTONIC);
	CHECK_OK(pthread_condattr_setclock(&a, CLOCK_REALTIME));
	CHECK_OK(pthread_condattr_getclock(&a, &clk));
	CHECK_EQ(clk, CLOCK_REALTIME);

	int ps;
	CHECK_OK(pthread_condattr_getpshared(&a, &ps));
	CHECK_EQ(ps, PTHREAD_PROCESS_PRIVATE);
	CHECK_OK(pthread_condattr_setpshared(&a, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_condattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	CHECK_EQ(pthread_condattr_setpshared(&a, 12345), EINVAL);
	CHECK_OK(pthread_condattr_getpshared(&a, &ps));
	CHECK_EQ(ps, PTHREAD_PROCESS_SHARED);
	CHECK_OK(pthread_condattr_getclock(&a, &clk)); /* the other bit stays */
	CHECK_EQ(clk, CLOCK_REALTIME);
	CHECK_OK(pthread_condattr_setpshared(&a, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_condattr_getpshared(&a, &ps));
	CHECK_EQ(ps, PTHREAD_PROCESS_PRIVATE);
	CHECK_OK(pthread_condattr_destroy(&a));
}

/* ---- process-shared condition variables ---- */

/* Two processes (a fork's parent and child) hand a turn back and forth
 * through a mutex and a condvar in shared memory, both
 * PTHREAD_PROCESS_SHARED; the parent's other thread keeps running while
 * it waits (the wait parks only the user thread).  A timed wait that
 * nobody signals times out. */
struct shared_turn {
	pthread_mutex_t m;
	pthread_cond_t c;
	int turn;
};

TCASE(process_shared_condvar_across_fork)
{
	tc_run_alone(); /* the ticker must get a core while the parent waits */
	struct shared_turn *st = mmap(NULL, sizeof *st, PROT_READ | PROT_WRITE,
	                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(st != MAP_FAILED);
	pthread_mutexattr_t ma;
	pthread_condattr_t ca;
	CHECK_OK(pthread_mutexattr_init(&ma));
	CHECK_OK(pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED));
	CHECK_OK(pthread_mutex_init(&st->m, &ma));
	CHECK_OK(pthread_condattr_init(&ca));
	CHECK_OK(pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED));
	CHECK_OK(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC));
	CHECK_OK(pthread_cond_init(&st->c, &ca));
	st->turn = 0;
	enum { ROUNDS = 20 };
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		/* the child takes the odd turns */
		for (int i = 0; i < ROUNDS; i++) {
			pthread_mutex_lock(&st->m);
			while (st->turn != 2 * i + 1)
				pthread_cond_wait(&st->c, &st->m);
			st->turn++;
			pthread_cond_signal(&st->c);
			pthread_mutex_unlock(&st->m);
		}
		_exit(0);
	}
	pthread_t tick = tc_ticker_start();
	long ticks_before = tc_ticks;
	for (int i = 0; i < ROUNDS; i++) {
		CHECK_OK(pthread_mutex_lock(&st->m));
		st->turn++;
		CHECK_OK(pthread_cond_signal(&st->c));
		if (i == 0)
			tc_msleep(30); /* the child is surely waiting by now */
		while (st->turn != 2 * i + 2) {
			struct timespec dl = tc_abs_ms(CLOCK_MONOTONIC, 10000);
			CHECK_OK(pthread_cond_timedwait(&st->c, &st->m, &dl));
		}
		CHECK_OK(pthread_mutex_unlock(&st->m));
	}
	int status;
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* nobody signals: a timed wait runs to its deadline */
	CHECK_OK(pthread_mutex_lock(&st->m));
	uint64_t t0 = tc_now_ns();
	struct timespec dl = tc_abs_ms(CLOCK_MONOTONIC, 50);
	int e;
	while ((e = pthread_cond_timedwait(&st->c, &st->m, &dl)) == 0)
		;
	CHECK_EQ(e, ETIMEDOUT);
	CHECK_MS_RANGE(tc_now_ns() - t0, 50, 50);
	CHECK_OK(pthread_mutex_unlock(&st->m));
	/* while the parent waited, its other thread ran */
	tc_ticker_stop(tick);
	CHECK(tc_ticks > ticks_before);
	CHECK_OK(pthread_cond_destroy(&st->c));
	CHECK_OK(pthread_mutex_destroy(&st->m));
	munmap(st, sizeof *st);
}

/* ---- no lost wakeups ---- */

struct pc {
	pthread_mutex_t m;
	pthread_cond_t not_empty, not_full;
	int items, cap;
	long produced, consumed, target;
};

static void *pc_producer(void *arg)
{
	struct pc *q = arg;
	for (;;) {
		pthread_mutex_lock(&q->m);
		while (q->items == q->cap && q->produced < q->target)
			pthread_cond_wait(&q->not_full, &q->m);
		if (q->produced == q->target) {
			pthread_cond_broadcast(&q->not_full); /* let the others see it */
			pthread_mutex_unlock(&q->m);
			return NULL;
		}
		q->items++;
		q->produced++;
		pthread_cond_signal(&q->not_empty);
		pthread_mutex_unlock(&q->m);
	}
}

static void *pc_consumer(void *arg)
{
	struct pc *q = arg;
	for (;;) {
		pthread_mutex_lock(&q->m);
		while (q->items == 0 && q->consumed < q->target)
			pthread_cond_wait(&q->not_empty, &q->m);
		if (q->consumed == q->target) {
			pthread_cond_broadcast(&q->not_empty); /* let the others see it */
			pthread_mutex_unlock(&q->m);
			return NULL;
		}
		q->items--;
		q->consumed++;
		pthread_cond_signal(&q->not_full);
		pthread_mutex_unlock(&q->m);
	}
}

/* One slot, signal (not broadcast) only: a single lost wakeup hangs it. */
TCASE(single_slot_signal_only)
{
	static struct pc q = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
		               PTHREAD_COND_INITIALIZER, 0, 1, 0, 0, 100000 };
	pthread_t p[3], c[3];
	for (int i = 0; i < 3; i++) {
		CHECK_OK(pthread_create(&p[i], NULL, pc_producer, &q));
		CHECK_OK(pthread_create(&c[i], NULL, pc_consumer, &q));
	}
	for (int i = 0; i < 3; i++)
		CHECK_OK(pthread_join(p[i], NULL));
	for (int i = 0; i < 3; i++)
		CHECK_OK(pthread_join(c[i], NULL));
	CHECK_EQ(q.produced, q.target);
	CHECK_EQ(q.consumed, q.target);
	CHECK_EQ(q.items, 0);
}

/* ---- the waiter's entry into the wait races the signaller ----
 *
 * The signaller spins on trylock, so it takes the mutex the instant the
 * waiter lets go of it inside pthread_cond_wait, and signals at once.
 * POSIX makes releasing the mutex and blocking atomic with respect to
 * such a signaller: the signal must reach the waiter.  A waiter that then
 * times out with the flag set, long after the signal, missed it. */
static struct {
	pthread_mutex_t m;
	pthread_cond_t c;
	int flag, waiting, stop, use_broadcast;
	uint64_t signalled_at;
} race = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0 };

static void *race_signaller(void *arg)
{
	(void)arg;
	unsigned long spins = 0;
	for (;;) {
		while (pthread_mutex_trylock(&race.m) == EBUSY)
			if (++spins % 256 == 0)
				sched_yield(); /* in case we share a worker */
		if (race.stop) {
			pthread_mutex_unlock(&race.m);
			return NULL;
		}
		if (race.waiting && !race.flag) {
			race.flag = 1;
			race.signalled_at = tc_now_ns();
			if (race.use_broadcast)
				pthread_cond_broadcast(&race.c);
			else
				pthread_cond_signal(&race.c);
		}
		pthread_mutex_unlock(&race.m);
		if (++spins % 256 == 0)
			sched_yield();
	}
}

static void signal_race(uint64_t run_ns)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, race_signaller, NULL));
	long rounds = 0, lost = 0;
	const char *lost_kind = "";
	uint64_t end = tc_now_ns() + run_ns;
	pthread_mutex_lock(&race.m);
	while (tc_now_ns() < end && lost == 0) {
		race.flag = 0;
		race.waiting = 1;
		race.use_broadcast = rounds & 1;
		while (!race.flag) {
			struct timespec dl = tc_abs_ms(CLOCK_MONOTONIC, 50);
			uint64_t dl_ns = (uint64_t)dl.tv_sec * 1000000000u + (uint64_t)dl.tv_nsec;
			int e = pthread_cond_clockwait(&race.c, &race.m, CLOCK_MONOTONIC, &dl);
			/* a signal that came 20 ms or more before the deadline
			 * should have ended the wait long before it */
			if (e == ETIMEDOUT && race.flag && race.signalled_at + 20000000u < dl_ns) {
				lost++;
				lost_kind = race.use_broadcast ? "broadcast" : "signal";
			}
		}
		race.waiting = 0;
		rounds++;
	}
	race.stop = 1;
	pthread_mutex_unlock(&race.m);
	CHECK_OK(pthread_join(t, NULL));
	if (lost)
		TFAIL("a %s was lost after %ld rounds: the waiter slept to its deadline",
		      lost_kind, rounds);
	CHECK(rounds > 100);
}

TCASE(signal_racing_wait_entry_not_lost)
{
	tc_run_alone(); /* a wake late by 30 ms counts as lost: not beside a loaded neighbour */
	signal_race(2000000000ull);
}

/* More workers than CPUs: a worker can lose its CPU anywhere, which
 * widens every race window. */
TCASE(signal_racing_wait_entry_not_lost_4_workers)
{
	if (tc_rerun_on_workers(4, 30))
		return;
	signal_race(2000000000ull);
}
