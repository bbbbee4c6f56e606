/* sem.c: unnamed semaphores — every call and error (errno style),
 * timed waits on both clocks, cancellation, producer/consumer with exact
 * counts, timed waiters racing posts, and waiters that are kernel threads
 * rather than Caprice threads. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

#define TOLERANCE_MS (200 + (uint64_t)tc_slack_ms())

/* A call that must fail with -1 and this errno. */
#define CHECK_ERRNO(call, err)                                              \
	do {                                                                \
		errno = 0;                                                  \
		int r_ = (call);                                            \
		int e_ = errno;                                             \
		if (r_ != -1 || e_ != (err))                                \
			TFAIL("%s returned %d, errno %d (%s); want -1, %s", #call, r_, e_, \
			      strerror(e_), #err);                          \
	} while (0)

/* A sem_* call that must succeed. */
#define CHECK_SEM(call)                                                     \
	do {                                                                \
		if ((call) != 0)                                            \
			TFAIL("%s failed: %s", #call, strerror(errno));     \
	} while (0)

static int value(sem_t *s)
{
	int v = -1;
	CHECK_SEM(sem_getvalue(s, &v));
	return v;
}

static uint64_t elapsed_ms(uint64_t t0)
{
	return (tc_now_ns() - t0) / 1000000u;
}

static int load(const int *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static uint64_t workers_seen, workers_spread;

TCASE(init_errors)
{
	sem_t s;
	CHECK_ERRNO(sem_init(&s, 0, (unsigned)SEM_VALUE_MAX + 1), EINVAL);
	CHECK_ERRNO(sem_init(&s, 0, UINT_MAX), EINVAL);
	CHECK_SEM(sem_init(&s, 1, 0)); /* process-shared: glibc's protocol */
	CHECK_SEM(sem_destroy(&s));
	CHECK_SEM(sem_init(&s, 0, 3));
	CHECK_EQ(value(&s), 3);
	CHECK_SEM(sem_destroy(&s));
	CHECK_SEM(sem_init(&s, 0, SEM_VALUE_MAX));
	CHECK_EQ(value(&s), SEM_VALUE_MAX);
	CHECK_ERRNO(sem_post(&s), EOVERFLOW);
	CHECK_EQ(value(&s), SEM_VALUE_MAX);
	CHECK_SEM(sem_trywait(&s));
	CHECK_SEM(sem_post(&s));
	CHECK_ERRNO(sem_post(&s), EOVERFLOW);
	CHECK_SEM(sem_destroy(&s));
}

TCASE(trywait_post_getvalue)
{
	sem_t s;
	CHECK_SEM(sem_init(&s, 0, 2));
	CHECK_SEM(sem_trywait(&s));
	CHECK_SEM(sem_wait(&s));
	CHECK_EQ(value(&s), 0);
	CHECK_ERRNO(sem_trywait(&s), EAGAIN);
	CHECK_ERRNO(sem_trywait(&s), EAGAIN);
	for (int i = 0; i < 1000; i++)
		CHECK_SEM(sem_post(&s));
	CHECK_EQ(value(&s), 1000);
	for (int i = 0; i < 1000; i++)
		CHECK_SEM(i % 2 ? sem_trywait(&s) : sem_wait(&s));
	CHECK_ERRNO(sem_trywait(&s), EAGAIN);
	CHECK_SEM(sem_destroy(&s));
}

/* 0: sem_timedwait; 1: sem_clockwait REALTIME; 2: sem_clockwait MONOTONIC */
static int timed(sem_t *s, int how, long ms)
{
	struct timespec ts = tc_abs_ms(how == 2 ? CLOCK_MONOTONIC : CLOCK_REALTIME, ms);
	if (how == 0)
		return sem_timedwait(s, &ts);
	return sem_clockwait(s, how == 2 ? CLOCK_MONOTONIC : CLOCK_REALTIME, &ts);
}

TCASE(timeouts_both_clocks)
{
	sem_t s;
	CHECK_SEM(sem_init(&s, 0, 0));
	for (int how = 0; how < 3; how++) {
		uint64_t t0 = tc_now_ns();
		CHECK_ERRNO(timed(&s, how, 50), ETIMEDOUT);
		uint64_t ms = elapsed_ms(t0);
		if (ms < 50 || ms >= 50 + TOLERANCE_MS)
			TFAIL("way %d: timed out after %llu ms, want 50", how, (unsigned long long)ms);
	}
	/* a deadline already past fails at once when it would block... */
	struct timespec past = { 1, 0 };
	uint64_t t0 = tc_now_ns();
	CHECK_ERRNO(sem_timedwait(&s, &past), ETIMEDOUT);
	CHECK_ERRNO(sem_clockwait(&s, CLOCK_MONOTONIC, &past), ETIMEDOUT);
	CHECK(elapsed_ms(t0) < 100);
	/* ...and is never looked at when it would not */
	CHECK_SEM(sem_post(&s));
	CHECK_SEM(sem_timedwait(&s, &past));
	CHECK_SEM(sem_post(&s));
	CHECK_SEM(sem_clockwait(&s, CLOCK_REALTIME, &past));
	CHECK_EQ(value(&s), 0);
	CHECK_SEM(sem_destroy(&s)); /* the timed-out waiters left nothing behind */
}

TCASE(timed_einval_only_if_it_would_block)
{
	sem_t s;
	struct timespec bad[] = { { 0, 1000000000L }, { 0, -1 }, { time(NULL) + 10, 2000000000L } };
	CHECK_SEM(sem_init(&s, 0, 0));
	for (int i = 0; i < 3; i++) {
		CHECK_ERRNO(sem_timedwait(&s, &bad[i]), EINVAL);
		CHECK_ERRNO(sem_clockwait(&s, CLOCK_MONOTONIC, &bad[i]), EINVAL);
		CHECK_SEM(sem_post(&s));
		CHECK_SEM(sem_timedwait(&s, &bad[i]));
		CHECK_SEM(sem_post(&s));
		CHECK_SEM(sem_clockwait(&s, CLOCK_REALTIME, &bad[i]));
	}
	struct timespec ok = tc_abs_ms(CLOCK_MONOTONIC, 1000);
	CHECK_ERRNO(sem_clockwait(&s, CLOCK_PROCESS_CPUTIME_ID, &ok), EINVAL);
	CHECK_ERRNO(sem_clockwait(&s, (clockid_t)12345, &ok), EINVAL);
	CHECK_EQ(value(&s), 0);
	CHECK_SEM(sem_destroy(&s));
}

/* ---- waking ---- */

static sem_t S1;
static int woke;

static void *waiter(void *p)
{
	long how = (long)p;
	if (how == 3)
		CHECK_SEM(sem_wait(&S1));
	else
		CHECK_SEM(timed(&S1, (int)how, 5000));
	__atomic_add_fetch(&woke, 1, __ATOMIC_ACQ_REL);
	return NULL;
}

TCASE(posts_wake_blocked_waiters)
{
	enum { N = 8 };
	CHECK_SEM(sem_init(&S1, 0, 0));
	pthread_t t[N];
	for (long i = 0; i < N; i++)
		CHECK_OK(pthread_create(&t[i], NULL, waiter, (void *)(i % 4)));
	usleep(20000);
	CHECK_EQ(load(&woke), 0);
	uint64_t t0 = tc_now_ns();
	/* one post, one waiter */
	for (int i = 1; i <= N; i++) {
		CHECK_SEM(sem_post(&S1));
		uint64_t t1 = tc_now_ns();
		while (load(&woke) < i && tc_now_ns() - t1 < 2000000000ull)
			usleep(200);
		CHECK_EQ(load(&woke), i);
		usleep(2000);
		CHECK_EQ(load(&woke), i); /* and no more */
	}
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK(elapsed_ms(t0) < 2000); /* nobody sat out its 5 s timeout */
	CHECK_EQ(value(&S1), 0);
	CHECK_SEM(sem_destroy(&S1));
}

TCASE(destroy_busy)
{
	CHECK_SEM(sem_init(&S1, 0, 0));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, waiter, (void *)3L));
	/* busy from the moment the waiter is in; destroy changes nothing
	 * when it fails, nor here when it succeeds, so poll for that */
	uint64_t t0 = tc_now_ns();
	while (sem_destroy(&S1) == 0) {
		if (tc_now_ns() - t0 > 5000000000ull)
			TFAIL("sem_destroy still succeeds 5 s after a thread started waiting");
		usleep(1000);
	}
	CHECK_ERRNO(sem_destroy(&S1), EBUSY);
	CHECK_SEM(sem_post(&S1));
	CHECK_OK(pthread_join(t, NULL));
	CHECK_SEM(sem_destroy(&S1));
}

/* ---- cancellation ---- */

static int started;

static void *wait_forever(void *p)
{
	long how = (long)p;
	__atomic_store_n(&started, 1, __ATOMIC_RELEASE);
	int r = how == 3 ? sem_wait(&S1) : timed(&S1, (int)how, 10000);
	TFAIL("the wait returned %d (errno %d) instead of acting on the cancel", r, errno);
	return NULL;
}

TCASE(cancel_blocked_wait)
{
	for (long how = 0; how < 4; how++) {
		CHECK_SEM(sem_init(&S1, 0, 0));
		__atomic_store_n(&started, 0, __ATOMIC_RELEASE);
		pthread_t t;
		CHECK_OK(pthread_create(&t, NULL, wait_forever, (void *)how));
		while (!load(&started))
			usleep(1000);
		usleep(20000); /* now it is blocked */
		uint64_t t0 = tc_now_ns();
		CHECK_OK(pthread_cancel(t));
		void *r;
		CHECK_OK(pthread_join(t, &r));
		CHECK(r == PTHREAD_CANCELED);
		CHECK(elapsed_ms(t0) < 1000);
		/* it is gone: a post stays, and nothing is left queued */
		CHECK_EQ(value(&S1), 0);
		CHECK_SEM(sem_post(&S1));
		usleep(1000);
		CHECK_EQ(value(&S1), 1);
		CHECK_SEM(sem_destroy(&S1));
	}
}

static int cancel_sent;

static void *wait_with_cancel_pending(void *p)
{
	(void)p;
	CHECK_OK(pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL));
	__atomic_store_n(&started, 1, __ATOMIC_RELEASE);
	while (!load(&cancel_sent))
		usleep(1000);
	CHECK_OK(pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL));
	sem_wait(&S1); /* would not block, but is a cancellation point */
	TFAIL("sem_wait returned with a cancel pending");
	return NULL;
}

TCASE(wait_is_cancellation_point_without_blocking)
{
	CHECK_SEM(sem_init(&S1, 0, 1));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, wait_with_cancel_pending, NULL));
	while (!load(&started))
		usleep(1000);
	CHECK_OK(pthread_cancel(t));
	__atomic_store_n(&cancel_sent, 1, __ATOMIC_RELEASE);
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK(r == PTHREAD_CANCELED);
	CHECK_EQ(value(&S1), 1); /* the count was not taken */
	CHECK_SEM(sem_destroy(&S1));
}

/* ---- producer / consumer ---- */

enum { RING = 16, PRODUCERS = 4, CONSUMERS = 4, PER_PRODUCER = 20000 };
enum { TOTAL = PRODUCERS * PER_PRODUCER, PER_CONSUMER = TOTAL / CONSUMERS };

static struct {
	sem_t slots, items;
	pthread_mutex_t lock;
	int ring[RING];
	unsigned head, tail;
	unsigned char seen[TOTAL];
	long sum;
} Q = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Takes one count by one of the calls, in turn. */
static void take(sem_t *s, int i)
{
	switch (i % 4) {
	case 0:
		CHECK_SEM(sem_wait(s));
		break;
	case 1:
		while (sem_trywait(s) != 0) {
			CHECK_EQ(errno, EAGAIN);
			sched_yield();
		}
		break;
	default:
		CHECK_SEM(timed(s, i % 4 - 1, 10000));
		break;
	}
}

static void *producer(void *p)
{
	long id = (long)p;
	tc_spread(&workers_spread);
	for (int i = 0; i < PER_PRODUCER; i++) {
		take(&Q.slots, i + (int)id);
		CHECK_OK(pthread_mutex_lock(&Q.lock));
		Q.ring[Q.tail++ % RING] = (int)id * PER_PRODUCER + i;
		CHECK_OK(pthread_mutex_unlock(&Q.lock));
		tc_note_worker(&workers_seen);
		CHECK_SEM(sem_post(&Q.items));
	}
	return NULL;
}

static void *consumer(void *p)
{
	long id = (long)p;
	tc_spread(&workers_spread);
	for (int i = 0; i < PER_CONSUMER; i++) {
		take(&Q.items, i + (int)id);
		CHECK_OK(pthread_mutex_lock(&Q.lock));
		int v = Q.ring[Q.head++ % RING];
		if (v < 0 || v >= TOTAL || Q.seen[v]++)
			TFAIL("item %d consumed twice or never produced", v);
		Q.sum += v;
		CHECK_OK(pthread_mutex_unlock(&Q.lock));
		tc_note_worker(&workers_seen);
		CHECK_SEM(sem_post(&Q.slots));
	}
	return NULL;
}

TCASE(producer_consumer_exact_counts)
{
	tc_watchdog(20);
	CHECK_SEM(sem_init(&Q.slots, 0, RING));
	CHECK_SEM(sem_init(&Q.items, 0, 0));
	pthread_t p[PRODUCERS], c[CONSUMERS];
	for (long i = 0; i < CONSUMERS; i++)
		CHECK_OK(pthread_create(&c[i], NULL, consumer, (void *)i));
	for (long i = 0; i < PRODUCERS; i++)
		CHECK_OK(pthread_create(&p[i], NULL, producer, (void *)i));
	for (int i = 0; i < PRODUCERS; i++)
		CHECK_OK(pthread_join(p[i], NULL));
	for (int i = 0; i < CONSUMERS; i++)
		CHECK_OK(pthread_join(c[i], NULL));
	for (int v = 0; v < TOTAL; v++)
		CHECK_EQ(Q.seen[v], 1);
	CHECK_EQ(Q.sum, (long)TOTAL * (TOTAL - 1) / 2);
	CHECK_EQ(value(&Q.items), 0);
	CHECK_EQ(value(&Q.slots), RING);
	CHECK_SEM(sem_destroy(&Q.items));
	CHECK_SEM(sem_destroy(&Q.slots));
	tc_check_spread(&workers_seen);
}

/* ---- timed waiters racing posts ----
 * Plain waiters need exactly the posted count; timed waiters with
 * deadlines of a few microseconds keep timing out just as posts pick
 * them, and give back whatever they take.  A post whose wakeup went to a
 * leaving waiter and was not passed on leaves a plain waiter asleep with
 * the count raised: the case hangs. */
enum { PLAIN = 3, TIMED = 4, POSTERS = 2, PLAIN_WAITS = 4000, TIMED_MIN = 500 };

static struct {
	sem_t s;
	int plain_running, timed_short;
	long timeouts, timed_ok;
} R;

static void *race_plain(void *p)
{
	(void)p;
	tc_spread(&workers_spread);
	for (int i = 0; i < PLAIN_WAITS; i++) {
		CHECK_SEM(sem_wait(&R.s));
		tc_note_worker(&workers_seen);
	}
	__atomic_sub_fetch(&R.plain_running, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Stops once the plain waiters are done (after TIMED_MIN tries at
 * least); yields every time, since a wait whose deadline has passed
 * returns without parking and would keep its worker to itself. */
static void *race_timed(void *p)
{
	long id = (long)p;
	unsigned seed = (unsigned)id * 2654435761u + 7;
	tc_spread(&workers_spread);
	for (int i = 0;; i++) {
		if (i == TIMED_MIN)
			__atomic_sub_fetch(&R.timed_short, 1, __ATOMIC_RELEASE);
		if (i >= TIMED_MIN && !load(&R.plain_running))
			break;
		seed = seed * 1103515245u + 12345u;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += (long)((seed >> 16) % 100) * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (sem_clockwait(&R.s, CLOCK_MONOTONIC, &ts) == 0) {
			__atomic_add_fetch(&R.timed_ok, 1, __ATOMIC_RELAXED);
			CHECK_SEM(sem_post(&R.s));
		} else {
			CHECK_EQ(errno, ETIMEDOUT);
			__atomic_add_fetch(&R.timeouts, 1, __ATOMIC_RELAXED);
		}
		/* the timed waiters race too: where they ran counts (a run in
		 * which every plain wait happened to return on one worker was
		 * no failure of the semaphore) */
		tc_note_worker(&workers_seen);
		sched_yield();
	}
	return NULL;
}

static void *race_poster(void *p)
{
	(void)p;
	tc_spread(&workers_spread);
	for (int i = 0; i < PLAIN * PLAIN_WAITS / POSTERS; i++) {
		/* hold back until the timed waiters are racing too */
		while (i == 100 && load(&R.timed_short))
			sched_yield();
		CHECK_SEM(sem_post(&R.s));
		if (i % 4 == 0)
			sched_yield();
	}
	return NULL;
}

TCASE(timed_waiters_racing_posts)
{
	tc_watchdog(20);
	CHECK_SEM(sem_init(&R.s, 0, 0));
	R.plain_running = PLAIN;
	R.timed_short = TIMED;
	pthread_t pl[PLAIN], tm[TIMED], po[POSTERS];
	for (long i = 0; i < PLAIN; i++)
		CHECK_OK(pthread_create(&pl[i], NULL, race_plain, (void *)i));
	for (long i = 0; i < TIMED; i++)
		CHECK_OK(pthread_create(&tm[i], NULL, race_timed, (void *)i));
	for (long i = 0; i < POSTERS; i++)
		CHECK_OK(pthread_create(&po[i], NULL, race_poster, (void *)i));
	for (int i = 0; i < POSTERS; i++)
		CHECK_OK(pthread_join(po[i], NULL));
	for (int i = 0; i < PLAIN; i++)
		CHECK_OK(pthread_join(pl[i], NULL));
	for (int i = 0; i < TIMED; i++)
		CHECK_OK(pthread_join(tm[i], NULL));
	CHECK_EQ(value(&R.s), 0); /* every post went to exactly one wait */
	CHECK(R.timeouts > 0);
	CHECK(R.timed_ok > 0);
	CHECK_SEM(sem_destroy(&R.s));
	tc_check_spread(&workers_seen);
}

/* The sharpest form of that race, with nothing to paper over a lost
 * wakeup: waiter A, first in line, times out right as the single post
 * arrives; waiter B, behind it, has a long deadline.  If A loses the race
 * the post must reach B at once, not when B's own deadline passes.  Rounds
 * go on until enough of them had A time out (how often depends on the
 * machine's load). */
enum { EDGE_MAX_ROUNDS = 2000, EDGE_WANTED = 40 };

static struct {
	sem_t s;
	int round;                    /* the round A and B may start; -1: stop */
	uint64_t a_deadline[EDGE_MAX_ROUNDS]; /* monotonic ns */
	uint64_t b_deadline[EDGE_MAX_ROUNDS];
	int a_in[EDGE_MAX_ROUNDS], b_in[EDGE_MAX_ROUNDS];
	int a_rc[EDGE_MAX_ROUNDS], b_rc[EDGE_MAX_ROUNDS];
	int a_done[EDGE_MAX_ROUNDS], b_done[EDGE_MAX_ROUNDS];
	uint64_t b_us[EDGE_MAX_ROUNDS]; /* how long B waited */
} E;

static void await_flag(const int *p)
{
	uint64_t t0 = tc_now_ns();
	while (!load(p)) {
		if (tc_now_ns() - t0 > 5000000000ull)
			TFAIL("waited 5 s for a step of the race");
		sched_yield();
	}
}

static struct timespec mono_ts(uint64_t ns)
{
	return (struct timespec){ (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
}

/* Waits for round r to start; false when the case is over. */
static bool next_round(int r)
{
	int cur;
	while ((cur = load(&E.round)) >= 0 && cur < r)
		sched_yield();
	return cur >= 0;
}

static void *edge_a(void *p)
{
	(void)p;
	for (int r = 0; next_round(r); r++) {
		E.a_deadline[r] = tc_now_ns() + 3000000u;
		struct timespec ts = mono_ts(E.a_deadline[r]);
		__atomic_store_n(&E.a_in[r], 1, __ATOMIC_RELEASE);
		E.a_rc[r] = sem_clockwait(&E.s, CLOCK_MONOTONIC, &ts) == 0 ? 0 : errno;
		__atomic_store_n(&E.a_done[r], 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

static void *edge_b(void *p)
{
	(void)p;
	for (int r = 0; next_round(r); r++) {
		await_flag(&E.a_in[r]);
		usleep(200); /* queue behind A */
		uint64_t t0 = tc_now_ns();
		E.b_deadline[r] = t0 + 50000000u;
		struct timespec ts = mono_ts(E.b_deadline[r]);
		__atomic_store_n(&E.b_in[r], 1, __ATOMIC_RELEASE);
		E.b_rc[r] = sem_clockwait(&E.s, CLOCK_MONOTONIC, &ts) == 0 ? 0 : errno;
		E.b_us[r] = (tc_now_ns() - t0) / 1000u;
		__atomic_store_n(&E.b_done[r], 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

TCASE(post_passes_over_waiter_timing_out)
{
	tc_watchdog(20);
	CHECK_SEM(sem_init(&E.s, 0, 0));
	pthread_t a, b;
	CHECK_OK(pthread_create(&a, NULL, edge_a, NULL));
	CHECK_OK(pthread_create(&b, NULL, edge_b, NULL));
	unsigned seed = 12345;
	int checked = 0; /* rounds where A timed out and B had to get the post */
	for (int r = 0; r < EDGE_MAX_ROUNDS && checked < EDGE_WANTED; r++) {
		__atomic_store_n(&E.round, r, __ATOMIC_RELEASE);
		await_flag(&E.b_in[r]);
		/* post within 300 us of A's deadline, mostly after it */
		seed = seed * 1103515245u + 12345u;
		struct timespec at = mono_ts(E.a_deadline[r] - 100000u + (seed >> 16) % 400000u);
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL);
		CHECK_SEM(sem_post(&E.s));
		uint64_t posted = tc_now_ns();
		await_flag(&E.a_done[r]);
		if (E.a_rc[r] == 0) {
			CHECK_SEM(sem_post(&E.s)); /* A took it: this one is B's */
			posted = tc_now_ns();
		} else {
			CHECK_EQ(E.a_rc[r], ETIMEDOUT);
		}
		await_flag(&E.b_done[r]);
		/* B may time out only if its deadline came before the post was
		 * made (a loaded machine can stall us that long); failing at
		 * its deadline otherwise means the wakeup was lost, failing
		 * much earlier, that its timer fired before the deadline */
		if (E.b_deadline[r] > posted + 2000000u) {
			checked += E.a_rc[r] != 0;
			if (E.b_rc[r] != 0)
				TFAIL("round %d: B got %s after %llu us, %llu us before its deadline the count "
				      "went to %d (A: %s)", r, strerror(E.b_rc[r]),
				      (unsigned long long)E.b_us[r],
				      (unsigned long long)(E.b_deadline[r] - posted) / 1000u, value(&E.s),
				      E.a_rc[r] ? "timed out" : "took the first post");
		} else if (E.b_rc[r] != 0) {
			CHECK_SEM(sem_trywait(&E.s)); /* B timed out with its post unclaimed */
		}
		CHECK_EQ(value(&E.s), 0);
	}
	__atomic_store_n(&E.round, -1, __ATOMIC_RELEASE);
	CHECK_OK(pthread_join(a, NULL));
	CHECK_OK(pthread_join(b, NULL));
	CHECK(checked > 0);
	CHECK_SEM(sem_destroy(&E.s));
}

/* ---- kernel threads that are not Caprice threads ---- */

static sem_t ping, pong;

static void *foreign_side(void *p)
{
	(void)p;
	CHECK_EQ(caprice_worker_index(), -1);
	for (int i = 0; i < 200; i++) {
		CHECK_SEM(sem_wait(&ping));
		CHECK_SEM(sem_post(&pong));
	}
	/* a timed wait times out on a kernel thread too */
	uint64_t t0 = tc_now_ns();
	CHECK_ERRNO(timed(&ping, 2, 50), ETIMEDOUT);
	uint64_t ms = elapsed_ms(t0);
	CHECK(ms >= 50 && ms < 50 + TOLERANCE_MS);
	return NULL;
}

TCASE(kernel_thread_waits_and_wakes)
{
	tc_watchdog(20);
	CHECK_SEM(sem_init(&ping, 0, 0));
	CHECK_SEM(sem_init(&pong, 0, 0));
	pthread_t t;
	tc_foreign_run(foreign_side, NULL, &t);
	for (int i = 0; i < 200; i++) {
		if (i % 16 == 0)
			usleep(1000); /* let it block in the kernel now and then */
		CHECK_SEM(sem_post(&ping));
		CHECK_SEM(sem_wait(&pong));
	}
	tc_foreign_join(t);
	CHECK_EQ(value(&ping), 0);
	CHECK_EQ(value(&pong), 0);
	CHECK_SEM(sem_destroy(&ping));
	CHECK_SEM(sem_destroy(&pong));
}

/* ---- process-shared semaphores: glibc's layout and protocol ---- */

static volatile long shared_ticks;

static void *shared_ticker(void *arg)
{
	volatile int *stop = arg;
	while (!*stop) {
		tc_msleep(1);
		shared_ticks++;
	}
	return NULL;
}

static void *named_waiter(void *arg)
{
	sem_t *s = arg;
	for (int i = 0; i < 3; i++)
		CHECK_SEM(sem_wait(s));
	return NULL;
}

/* A linked program gets glibc's sem_open, which writes glibc's layout (its
 * shared marker where a private semaphore has 0): the first wait that had
 * to block used to spin at 100% CPU for good. */
TCASE(named_semaphore_between_threads)
{
	tc_run_alone(); /* its ticker must get a core within the wait */
	tc_watchdog(20);
	char name[64];
	snprintf(name, sizeof name, "/caprice-sem-test-%d", (int)getpid());
	sem_t *s = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
	CHECK(s != SEM_FAILED);
	CHECK_SEM(sem_unlink(name));
	volatile int stop = 0;
	pthread_t tick = tc_spawn(shared_ticker, (void *)&stop);
	pthread_t w = tc_spawn(named_waiter, s);
	for (int i = 0; i < 3; i++) {
		long before = shared_ticks;
		tc_msleep(30);
		/* the waiter parks only itself: the ticker goes on (CI, two
		 * cases at once on two cores, once saw no tick in these 30 ms:
		 * it may take up to the suite's slack for timed checks) */
		uint64_t t0 = tc_now_ns();
		while (shared_ticks <= before && elapsed_ms(t0) < (uint64_t)tc_slack_ms())
			tc_msleep(1);
		CHECK(shared_ticks > before);
		CHECK_SEM(sem_post(s));
	}
	tc_join(w);
	CHECK_EQ(value(s), 0);
	uint64_t t0 = tc_now_ns();
	CHECK_ERRNO(timed(s, 0, 50), ETIMEDOUT);
	CHECK_ERRNO(timed(s, 2, 20), ETIMEDOUT);
	CHECK(elapsed_ms(t0) >= 50);
	CHECK_SEM(sem_trywait(s) == -1 && errno == EAGAIN ? 0 : -1);
	stop = 1;
	tc_join(tick);
	CHECK_SEM(sem_close(s));
}

/* glibc's own sem_post (an NPTL process on the other side does the same)
 * wakes a Caprice waiter, and Caprice's post wakes glibc's waiter. */
static void *glibc_side(void *arg)
{
	sem_t *s = arg;
	int (*post)(sem_t *) = (int (*)(sem_t *))tc_libc_sym("sem_post");
	int (*wait)(sem_t *) = (int (*)(sem_t *))tc_libc_sym("sem_wait");
	usleep(20000);
	if (post(&s[0]))
		return (void *)2;
	if (wait(&s[1]))
		return (void *)3;
	return NULL;
}

TCASE(shared_semaphore_speaks_glibcs_protocol)
{
	tc_watchdog(20);
	static sem_t s[2];
	CHECK_SEM(sem_init(&s[0], 1, 0));
	CHECK_SEM(sem_init(&s[1], 1, 0));
	pthread_t t;
	tc_foreign_run(glibc_side, s, &t); /* a plain kernel thread, glibc's calls */
	CHECK_SEM(sem_wait(&s[0]));
	usleep(20000);
	CHECK_SEM(sem_post(&s[1]));
	CHECK(tc_foreign_join(t) == NULL);
	CHECK_EQ(value(&s[0]), 0);
	CHECK_EQ(value(&s[1]), 0);
}

TCASE(shared_semaphore_across_fork)
{
	tc_watchdog(20);
	sem_t *s = mmap(NULL, 2 * sizeof(sem_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	                -1, 0);
	CHECK(s != MAP_FAILED);
	CHECK_SEM(sem_init(&s[0], 1, 0));
	CHECK_SEM(sem_init(&s[1], 1, 0));
	pid_t pid = fork();
	if (pid == 0) {
		for (int i = 0; i < 5; i++) {
			if (sem_wait(&s[0]))
				_exit(1);
			if (sem_post(&s[1]))
				_exit(2);
		}
		_exit(0);
	}
	CHECK(pid > 0);
	for (int i = 0; i < 5; i++) {
		usleep(5000); /* the child blocks in the meantime */
		CHECK_SEM(sem_post(&s[0]));
		CHECK_SEM(sem_wait(&s[1]));
	}
	int st = 0;
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	munmap(s, 2 * sizeof(sem_t));
}
