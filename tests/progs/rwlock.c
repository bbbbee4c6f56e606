/* rwlock.c: reader-writer locks — every call and error, static
 * initializers, preferences, timed variants on both clocks, and stress
 * that would catch overlapping holders or a lost wakeup. */
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

#define TOLERANCE_MS (200 + (uint64_t)tc_slack_ms())

static const int kinds[] = {
	PTHREAD_RWLOCK_PREFER_READER_NP,
	PTHREAD_RWLOCK_PREFER_WRITER_NP,
	PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP,
};

static void init_kind(pthread_rwlock_t *l, int kind)
{
	pthread_rwlockattr_t a;
	CHECK_OK(pthread_rwlockattr_init(&a));
	CHECK_OK(pthread_rwlockattr_setkind_np(&a, kind));
	CHECK_OK(pthread_rwlock_init(l, &a));
	CHECK_OK(pthread_rwlockattr_destroy(&a));
}

static int load(const int *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void store(int *p, int v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Under a writer-preferring kind, polls until a writer has queued:
 * from then on new readers are refused.  Fails after 5 s. */
static void await_readers_refused(pthread_rwlock_t *l)
{
	uint64_t t0 = tc_now_ns();
	int e;
	while ((e = pthread_rwlock_tryrdlock(l)) == 0) {
		CHECK_OK(pthread_rwlock_unlock(l));
		if (tc_now_ns() - t0 > 5000000000ull)
			TFAIL("a writer waits, and readers still get in after 5 s");
		usleep(1000);
	}
	CHECK_EQ(e, EBUSY);
}

/* Waits (sleeping) until *p == v, failing after 5 s. */
static void await_eq(const int *p, int v)
{
	uint64_t t0 = tc_now_ns();
	while (load(p) != v) {
		if (tc_now_ns() - t0 > 5000000000ull)
			TFAIL("waited 5 s for a flag to become %d (it is %d)", v, load(p));
		usleep(500);
	}
}

static uint64_t workers_seen, workers_spread;

/* Then all wait for each other, so the stress starts all at once. */
static int gate_in;

static void start_gate(int threads)
{
	tc_spread(&workers_spread);
	__atomic_add_fetch(&gate_in, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&gate_in, __ATOMIC_ACQUIRE) < threads)
		sched_yield();
}

/* A thread that takes the lock, says so, and keeps it until released. */
struct holder {
	pthread_rwlock_t *l;
	int write;
	int held;
	int release;
	pthread_t t;
};

static void *hold_main(void *p)
{
	struct holder *h = p;
	CHECK_OK(h->write ? pthread_rwlock_wrlock(h->l) : pthread_rwlock_rdlock(h->l));
	store(&h->held, 1);
	await_eq(&h->release, 1);
	CHECK_OK(pthread_rwlock_unlock(h->l));
	return NULL;
}

static void hold_start(struct holder *h, pthread_rwlock_t *l, int write)
{
	*h = (struct holder){ .l = l, .write = write };
	CHECK_OK(pthread_create(&h->t, NULL, hold_main, h));
	await_eq(&h->held, 1);
}

static void hold_stop(struct holder *h)
{
	store(&h->release, 1);
	CHECK_OK(pthread_join(h->t, NULL));
}

static uint64_t elapsed_ms(uint64_t t0)
{
	return (tc_now_ns() - t0) / 1000000u;
}

TCASE(static_initializer_default)
{
	static pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	CHECK_OK(pthread_rwlock_rdlock(&l));
	CHECK_OK(pthread_rwlock_rdlock(&l));
	CHECK_EQ(pthread_rwlock_trywrlock(&l), EBUSY);
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_rwlock_wrlock(&l));
	CHECK_EQ(pthread_rwlock_tryrdlock(&l), EBUSY);
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_rwlock_destroy(&l));
}

/* A queued writer: readers get in past it under the default kind and
 * wait behind it under the writer-preferring ones. */
static void check_preference(pthread_rwlock_t *l, bool writer_first)
{
	struct holder r, w;
	hold_start(&r, l, 0);
	w = (struct holder){ .l = l, .write = 1 };
	CHECK_OK(pthread_create(&w.t, NULL, hold_main, &w));
	usleep(30000); /* let the writer queue */
	CHECK_EQ(load(&w.held), 0);
	if (writer_first) {
		await_readers_refused(l);
		struct timespec ts = tc_abs_ms(CLOCK_MONOTONIC, 30);
		CHECK_EQ(pthread_rwlock_clockrdlock(l, CLOCK_MONOTONIC, &ts), ETIMEDOUT);
	} else {
		CHECK_OK(pthread_rwlock_tryrdlock(l));
		CHECK_OK(pthread_rwlock_rdlock(l));
		CHECK_OK(pthread_rwlock_unlock(l));
		CHECK_OK(pthread_rwlock_unlock(l));
	}
	store(&r.release, 1);
	CHECK_OK(pthread_join(r.t, NULL));
	await_eq(&w.held, 1);
	CHECK_EQ(pthread_rwlock_tryrdlock(l), EBUSY);
	hold_stop(&w);
	CHECK_OK(pthread_rwlock_destroy(l));
}

TCASE(static_initializer_writer_nonrecursive)
{
	static pthread_rwlock_t l = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
	check_preference(&l, true);
}

TCASE(preference_by_kind)
{
	static pthread_rwlock_t d = PTHREAD_RWLOCK_INITIALIZER;
	check_preference(&d, false);
	for (int i = 0; i < 3; i++) {
		pthread_rwlock_t l;
		init_kind(&l, kinds[i]);
		check_preference(&l, kinds[i] != PTHREAD_RWLOCK_PREFER_READER_NP);
	}
	pthread_rwlock_t l;
	CHECK_OK(pthread_rwlock_init(&l, NULL));
	check_preference(&l, false);
}

TCASE(attr_calls)
{
	pthread_rwlockattr_t a;
	int v = -1;
	CHECK_OK(pthread_rwlockattr_init(&a));
	CHECK_OK(pthread_rwlockattr_getkind_np(&a, &v));
	CHECK_EQ(v, PTHREAD_RWLOCK_PREFER_READER_NP);
	for (int i = 0; i < 3; i++) {
		CHECK_OK(pthread_rwlockattr_setkind_np(&a, kinds[i]));
		CHECK_OK(pthread_rwlockattr_getkind_np(&a, &v));
		CHECK_EQ(v, kinds[i]);
	}
	CHECK_EQ(pthread_rwlockattr_setkind_np(&a, 3), EINVAL);
	CHECK_EQ(pthread_rwlockattr_setkind_np(&a, -1), EINVAL);
	CHECK_OK(pthread_rwlockattr_getkind_np(&a, &v));
	CHECK_EQ(v, kinds[2]);
	CHECK_OK(pthread_rwlockattr_getpshared(&a, &v));
	CHECK_EQ(v, PTHREAD_PROCESS_PRIVATE);
	CHECK_OK(pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_PRIVATE));
	CHECK_OK(pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	CHECK_OK(pthread_rwlockattr_getpshared(&a, &v));
	CHECK_EQ(v, PTHREAD_PROCESS_SHARED);
	CHECK_OK(pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_PRIVATE));
	CHECK_EQ(pthread_rwlockattr_setpshared(&a, 7), EINVAL);
	CHECK_OK(pthread_rwlockattr_getpshared(&a, &v));
	CHECK_EQ(v, PTHREAD_PROCESS_PRIVATE);
	CHECK_OK(pthread_rwlockattr_destroy(&a));
}

TCASE(try_variants)
{
	pthread_rwlock_t l;
	CHECK_OK(pthread_rwlock_init(&l, NULL));
	CHECK_OK(pthread_rwlock_tryrdlock(&l));
	CHECK_OK(pthread_rwlock_tryrdlock(&l));
	CHECK_EQ(pthread_rwlock_trywrlock(&l), EBUSY);
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_rwlock_trywrlock(&l));
	CHECK_EQ(pthread_rwlock_trywrlock(&l), EBUSY); /* EBUSY, not EDEADLK */
	CHECK_EQ(pthread_rwlock_tryrdlock(&l), EBUSY);
	CHECK_OK(pthread_rwlock_unlock(&l));

	/* held by another thread, both ways */
	struct holder h;
	hold_start(&h, &l, 1);
	CHECK_EQ(pthread_rwlock_tryrdlock(&l), EBUSY);
	CHECK_EQ(pthread_rwlock_trywrlock(&l), EBUSY);
	hold_stop(&h);
	hold_start(&h, &l, 0);
	CHECK_EQ(pthread_rwlock_trywrlock(&l), EBUSY);
	CHECK_OK(pthread_rwlock_tryrdlock(&l));
	CHECK_OK(pthread_rwlock_unlock(&l));
	hold_stop(&h);
	CHECK_OK(pthread_rwlock_trywrlock(&l));
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_rwlock_destroy(&l));
}

TCASE(edeadlk_when_writer_asks_again)
{
	for (int i = 0; i < 3; i++) {
		pthread_rwlock_t l;
		init_kind(&l, kinds[i]);
		CHECK_OK(pthread_rwlock_wrlock(&l));
		struct timespec rt = tc_abs_ms(CLOCK_REALTIME, 1000);
		struct timespec mono = tc_abs_ms(CLOCK_MONOTONIC, 1000);
		uint64_t t0 = tc_now_ns();
		CHECK_EQ(pthread_rwlock_wrlock(&l), EDEADLK);
		CHECK_EQ(pthread_rwlock_rdlock(&l), EDEADLK);
		CHECK_EQ(pthread_rwlock_timedwrlock(&l, &rt), EDEADLK);
		CHECK_EQ(pthread_rwlock_timedrdlock(&l, &rt), EDEADLK);
		CHECK_EQ(pthread_rwlock_clockwrlock(&l, CLOCK_MONOTONIC, &mono), EDEADLK);
		CHECK_EQ(pthread_rwlock_clockrdlock(&l, CLOCK_REALTIME, &rt), EDEADLK);
		CHECK(elapsed_ms(t0) < 500 + (uint64_t)tc_slack_ms()); /* reported, not waited for */
		CHECK_OK(pthread_rwlock_unlock(&l));
		/* and the lock still works */
		CHECK_OK(pthread_rwlock_wrlock(&l));
		CHECK_OK(pthread_rwlock_unlock(&l));
		CHECK_OK(pthread_rwlock_destroy(&l));
	}
}

TCASE(unlock_eperm)
{
	pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	CHECK_EQ(pthread_rwlock_unlock(&l), EPERM);
	struct holder h;
	hold_start(&h, &l, 1);
	CHECK_EQ(pthread_rwlock_unlock(&l), EPERM); /* another thread's write lock */
	CHECK_EQ(pthread_rwlock_trywrlock(&l), EBUSY);
	hold_stop(&h);
	CHECK_EQ(pthread_rwlock_unlock(&l), EPERM);
	CHECK_OK(pthread_rwlock_rdlock(&l));
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_EQ(pthread_rwlock_unlock(&l), EPERM);
}

TCASE(destroy_busy)
{
	pthread_rwlock_t l;
	CHECK_OK(pthread_rwlock_init(&l, NULL));
	CHECK_OK(pthread_rwlock_rdlock(&l));
	CHECK_EQ(pthread_rwlock_destroy(&l), EBUSY);
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_rwlock_wrlock(&l));
	CHECK_EQ(pthread_rwlock_destroy(&l), EBUSY);
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_rwlock_destroy(&l));
}

/* Each timed call on a lock that stays held must take its full timeout,
 * and not much more. */
static void check_times_out(pthread_rwlock_t *l, bool write, int how)
{
	static const char *names[] = { "timed", "clock REALTIME", "clock MONOTONIC" };
	uint64_t t0 = tc_now_ns();
	struct timespec ts = tc_abs_ms(how == 2 ? CLOCK_MONOTONIC : CLOCK_REALTIME, 50);
	int e;
	if (how == 0)
		e = write ? pthread_rwlock_timedwrlock(l, &ts) : pthread_rwlock_timedrdlock(l, &ts);
	else if (how == 1)
		e = write ? pthread_rwlock_clockwrlock(l, CLOCK_REALTIME, &ts)
		          : pthread_rwlock_clockrdlock(l, CLOCK_REALTIME, &ts);
	else
		e = write ? pthread_rwlock_clockwrlock(l, CLOCK_MONOTONIC, &ts)
		          : pthread_rwlock_clockrdlock(l, CLOCK_MONOTONIC, &ts);
	uint64_t ms = elapsed_ms(t0);
	if (e != ETIMEDOUT || ms < 50 || ms >= 50 + TOLERANCE_MS)
		TFAIL("%s %s: returned %d after %llu ms, want ETIMEDOUT after 50 ms", names[how],
		      write ? "wrlock" : "rdlock", e, (unsigned long long)ms);
}

TCASE(timeouts_both_clocks)
{
	pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	struct holder h;
	hold_start(&h, &l, 1);
	for (int how = 0; how < 3; how++) {
		check_times_out(&l, false, how);
		check_times_out(&l, true, how);
	}
	hold_stop(&h);
	/* a reader holds it: only writers time out */
	hold_start(&h, &l, 0);
	for (int how = 0; how < 3; how++)
		check_times_out(&l, true, how);
	struct timespec ts = tc_abs_ms(CLOCK_MONOTONIC, 50);
	CHECK_OK(pthread_rwlock_clockrdlock(&l, CLOCK_MONOTONIC, &ts));
	CHECK_OK(pthread_rwlock_unlock(&l));
	hold_stop(&h);
	/* after all those timeouts the lock is clean */
	CHECK_OK(pthread_rwlock_trywrlock(&l));
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_rwlock_destroy(&l));
}

static void *release_after_20ms(void *p)
{
	usleep(20000);
	store(&((struct holder *)p)->release, 1);
	return NULL;
}

TCASE(timed_lock_succeeds_when_released)
{
	pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	for (int write = 0; write < 2; write++) {
		for (int clk = 0; clk < 2; clk++) {
			clockid_t c = clk ? CLOCK_MONOTONIC : CLOCK_REALTIME;
			struct holder h;
			pthread_t rel;
			hold_start(&h, &l, 1);
			CHECK_OK(pthread_create(&rel, NULL, release_after_20ms, &h));
			uint64_t t0 = tc_now_ns();
			struct timespec ts = tc_abs_ms(c, 5000);
			CHECK_OK(write ? pthread_rwlock_clockwrlock(&l, c, &ts)
			               : pthread_rwlock_clockrdlock(&l, c, &ts));
			uint64_t ms = elapsed_ms(t0);
			CHECK(ms >= 15 && ms < 20 + TOLERANCE_MS);
			CHECK_OK(pthread_rwlock_unlock(&l));
			CHECK_OK(pthread_join(rel, NULL));
			CHECK_OK(pthread_join(h.t, NULL));
		}
	}
	struct holder h;
	pthread_t rel;
	hold_start(&h, &l, 0);
	CHECK_OK(pthread_create(&rel, NULL, release_after_20ms, &h));
	struct timespec ts = tc_abs_ms(CLOCK_REALTIME, 5000);
	CHECK_OK(pthread_rwlock_timedwrlock(&l, &ts));
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_join(rel, NULL));
	CHECK_OK(pthread_join(h.t, NULL));
}

TCASE(timed_einval_only_if_it_would_block)
{
	pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	struct timespec bad[] = { { 0, 1000000000L }, { 0, -1 }, { time(NULL) + 10, 2000000000L } };
	/* free: the timeout is never looked at */
	for (int i = 0; i < 3; i++) {
		CHECK_OK(pthread_rwlock_timedrdlock(&l, &bad[i]));
		CHECK_OK(pthread_rwlock_unlock(&l));
		CHECK_OK(pthread_rwlock_timedwrlock(&l, &bad[i]));
		CHECK_OK(pthread_rwlock_unlock(&l));
		CHECK_OK(pthread_rwlock_clockrdlock(&l, CLOCK_MONOTONIC, &bad[i]));
		CHECK_OK(pthread_rwlock_unlock(&l));
	}
	/* a deadline long past is fine too when it is free */
	struct timespec past = { 1, 0 };
	CHECK_OK(pthread_rwlock_timedwrlock(&l, &past));
	CHECK_OK(pthread_rwlock_unlock(&l));

	struct holder h;
	hold_start(&h, &l, 1);
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(pthread_rwlock_timedrdlock(&l, &bad[i]), EINVAL);
		CHECK_EQ(pthread_rwlock_timedwrlock(&l, &bad[i]), EINVAL);
		CHECK_EQ(pthread_rwlock_clockrdlock(&l, CLOCK_MONOTONIC, &bad[i]), EINVAL);
		CHECK_EQ(pthread_rwlock_clockwrlock(&l, CLOCK_REALTIME, &bad[i]), EINVAL);
	}
	struct timespec ok = tc_abs_ms(CLOCK_MONOTONIC, 1000);
	CHECK_EQ(pthread_rwlock_clockwrlock(&l, CLOCK_PROCESS_CPUTIME_ID, &ok), EINVAL);
	CHECK_EQ(pthread_rwlock_clockrdlock(&l, (clockid_t)12345, &ok), EINVAL);
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(pthread_rwlock_timedwrlock(&l, &past), ETIMEDOUT);
	CHECK_EQ(pthread_rwlock_timedrdlock(&l, &past), ETIMEDOUT);
	CHECK(elapsed_ms(t0) < 100);
	hold_stop(&h);
	CHECK_OK(pthread_rwlock_destroy(&l));
}

TCASE(eagain_when_reader_count_overflows)
{
	pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	long n = 0;
	int e;
	while ((e = pthread_rwlock_rdlock(&l)) == 0)
		if (++n > (1L << 31))
			TFAIL("2^31 read locks and no EAGAIN");
	CHECK_EQ(e, EAGAIN);
	CHECK(n >= 1000000); /* a limit, not an accident */
	CHECK_EQ(pthread_rwlock_tryrdlock(&l), EAGAIN);
	struct timespec ts = tc_abs_ms(CLOCK_REALTIME, 1000);
	CHECK_EQ(pthread_rwlock_timedrdlock(&l, &ts), EAGAIN);
	CHECK_EQ(pthread_rwlock_trywrlock(&l), EBUSY);
	CHECK_OK(pthread_rwlock_unlock(&l));
	CHECK_OK(pthread_rwlock_rdlock(&l));
	CHECK_EQ(pthread_rwlock_rdlock(&l), EAGAIN);
}

/* All readers blocked by a writer get in together when it leaves. */
TCASE(writer_unlock_admits_all_readers)
{
	enum { R = 6 };
	for (int k = 0; k < 3; k++) {
		pthread_rwlock_t l;
		init_kind(&l, kinds[k]);
		struct holder w, r[R];
		hold_start(&w, &l, 1);
		for (int i = 0; i < R; i++) {
			r[i] = (struct holder){ .l = &l, .write = 0 };
			CHECK_OK(pthread_create(&r[i].t, NULL, hold_main, &r[i]));
		}
		usleep(20000);
		for (int i = 0; i < R; i++)
			CHECK_EQ(load(&r[i].held), 0);
		hold_stop(&w);
		for (int i = 0; i < R; i++)
			await_eq(&r[i].held, 1); /* all at once: none has released */
		CHECK_EQ(pthread_rwlock_trywrlock(&l), EBUSY);
		for (int i = 0; i < R; i++)
			hold_stop(&r[i]);
		CHECK_OK(pthread_rwlock_destroy(&l));
	}
}

/* A writer waits for the last reader, and gets in when it leaves. */
TCASE(last_reader_admits_writer)
{
	enum { R = 4 };
	for (int k = 0; k < 3; k++) {
		pthread_rwlock_t l;
		init_kind(&l, kinds[k]);
		struct holder r[R], w;
		for (int i = 0; i < R; i++)
			hold_start(&r[i], &l, 0);
		w = (struct holder){ .l = &l, .write = 1 };
		CHECK_OK(pthread_create(&w.t, NULL, hold_main, &w));
		for (int i = 0; i < R; i++) {
			usleep(10000);
			CHECK_EQ(load(&w.held), 0);
			hold_stop(&r[i]);
		}
		await_eq(&w.held, 1);
		hold_stop(&w);
		CHECK_OK(pthread_rwlock_destroy(&l));
	}
}

struct timed_arg {
	pthread_rwlock_t *l;
	int ms;
	int rc;
	int done;
};

static void *timed_writer(void *p)
{
	struct timed_arg *a = p;
	struct timespec ts = tc_abs_ms(CLOCK_MONOTONIC, a->ms);
	a->rc = pthread_rwlock_clockwrlock(a->l, CLOCK_MONOTONIC, &ts);
	if (a->rc == 0)
		CHECK_OK(pthread_rwlock_unlock(a->l));
	store(&a->done, 1);
	return NULL;
}

/* Writer-preferring: readers queue behind a waiting writer; when that
 * writer gives up, the readers must be let in, or they wait forever for
 * a wakeup nobody sends. */
TCASE(writer_timeout_releases_queued_readers)
{
	for (int k = 1; k < 3; k++) {
		pthread_rwlock_t l;
		init_kind(&l, kinds[k]);
		CHECK_OK(pthread_rwlock_rdlock(&l));
		struct timed_arg a = { .l = &l, .ms = 100, .rc = -1 };
		pthread_t tw;
		CHECK_OK(pthread_create(&tw, NULL, timed_writer, &a));
		await_readers_refused(&l); /* the writer is queued */
		struct holder r = { .l = &l, .write = 0 };
		CHECK_OK(pthread_create(&r.t, NULL, hold_main, &r));
		usleep(20000);
		CHECK_EQ(load(&r.held), 0);
		await_eq(&a.done, 1);
		CHECK_EQ(a.rc, ETIMEDOUT);
		uint64_t t0 = tc_now_ns();
		await_eq(&r.held, 1); /* we still hold a read lock: only a wakeup lets it in */
		CHECK(elapsed_ms(t0) < TOLERANCE_MS);
		hold_stop(&r);
		CHECK_OK(pthread_join(tw, NULL));
		CHECK_OK(pthread_rwlock_unlock(&l));
		CHECK_OK(pthread_rwlock_destroy(&l));
	}
}

/* ---- stress ---- */

enum { READERS = 8, WRITERS = 4, READ_ITERS = 50000, WRITE_ITERS = 10000 };

static struct stress {
	pthread_rwlock_t l;
	long a, b;            /* writers keep them equal under the lock */
	int readers_in, writers_in;
	long reads;
} S;

/* Takes the lock by one of its calls, in turn; tries spin until they win. */
static void take(pthread_rwlock_t *l, bool write, int i)
{
	struct timespec ts;
	switch (i % 4) {
	case 0:
		CHECK_OK(write ? pthread_rwlock_wrlock(l) : pthread_rwlock_rdlock(l));
		break;
	case 1:
		for (;;) {
			int e = write ? pthread_rwlock_trywrlock(l) : pthread_rwlock_tryrdlock(l);
			if (e == 0)
				break;
			CHECK_EQ(e, EBUSY);
			sched_yield();
		}
		break;
	case 2:
		ts = tc_abs_ms(CLOCK_REALTIME, 10000);
		CHECK_OK(write ? pthread_rwlock_timedwrlock(l, &ts) : pthread_rwlock_timedrdlock(l, &ts));
		break;
	default:
		ts = tc_abs_ms(CLOCK_MONOTONIC, 10000);
		CHECK_OK(write ? pthread_rwlock_clockwrlock(l, CLOCK_MONOTONIC, &ts)
		               : pthread_rwlock_clockrdlock(l, CLOCK_MONOTONIC, &ts));
		break;
	}
}

static void *stress_reader(void *p)
{
	long id = (long)p;
	start_gate(READERS + WRITERS);
	for (int i = 0; i < READ_ITERS; i++) {
		take(&S.l, false, i + (int)id);
		__atomic_add_fetch(&S.readers_in, 1, __ATOMIC_ACQ_REL);
		if (__atomic_load_n(&S.writers_in, __ATOMIC_ACQUIRE) != 0)
			TFAIL("a reader is in with a writer");
		long a = S.a;
		if (i % 32 == 0)
			sched_yield(); /* let others in while we hold it */
		if (S.b != a || S.a != a)
			TFAIL("a reader saw a half-done write: a=%ld b=%ld", a, S.b);
		tc_note_worker(&workers_seen);
		__atomic_sub_fetch(&S.readers_in, 1, __ATOMIC_ACQ_REL);
		__atomic_add_fetch(&S.reads, 1, __ATOMIC_RELAXED);
		CHECK_OK(pthread_rwlock_unlock(&S.l));
	}
	return NULL;
}

static void *stress_writer(void *p)
{
	long id = (long)p;
	start_gate(READERS + WRITERS);
	for (int i = 0; i < WRITE_ITERS; i++) {
		take(&S.l, true, i + (int)id);
		if (__atomic_add_fetch(&S.writers_in, 1, __ATOMIC_ACQ_REL) != 1)
			TFAIL("two writers are in");
		if (__atomic_load_n(&S.readers_in, __ATOMIC_ACQUIRE) != 0)
			TFAIL("a writer is in with a reader");
		S.a++;
		if (i % 16 == 0)
			sched_yield();
		S.b++;
		tc_note_worker(&workers_seen);
		__atomic_sub_fetch(&S.writers_in, 1, __ATOMIC_ACQ_REL);
		CHECK_OK(pthread_rwlock_unlock(&S.l));
	}
	return NULL;
}

static void stress(int kind)
{
	tc_watchdog(20);
	init_kind(&S.l, kind);
	pthread_t r[READERS], w[WRITERS];
	for (long i = 0; i < READERS; i++)
		CHECK_OK(pthread_create(&r[i], NULL, stress_reader, (void *)i));
	for (long i = 0; i < WRITERS; i++)
		CHECK_OK(pthread_create(&w[i], NULL, stress_writer, (void *)i));
	for (int i = 0; i < READERS; i++)
		CHECK_OK(pthread_join(r[i], NULL));
	for (int i = 0; i < WRITERS; i++)
		CHECK_OK(pthread_join(w[i], NULL));
	CHECK_EQ(S.a, (long)WRITERS * WRITE_ITERS);
	CHECK_EQ(S.b, S.a);
	CHECK_EQ(S.reads, (long)READERS * READ_ITERS);
	CHECK_OK(pthread_rwlock_destroy(&S.l));
	tc_check_spread(&workers_seen);
}

TCASE(stress_prefer_reader)
{
	stress(PTHREAD_RWLOCK_PREFER_READER_NP);
}

TCASE(stress_prefer_writer)
{
	stress(PTHREAD_RWLOCK_PREFER_WRITER_NP);
}

TCASE(stress_prefer_writer_nonrecursive)
{
	stress(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
}

/* Timed lockers with deadlines so short that many expire just as the lock
 * is released to them, among plain lockers that cannot give up: if a
 * wakeup meant for a leaving waiter were lost, a plain locker would wait
 * forever. */
enum { PLAIN = 4, TIMED = 6, STORM_ITERS = 3000, TIMED_MIN = 500 };

static struct storm {
	pthread_rwlock_t l;
	int writers_in, readers_in;
	int plain_running;    /* plain lockers not done yet */
	int timed_short;      /* timed lockers that made fewer than TIMED_MIN tries */
	long timeouts, timed_ok, timed_tries;
} T;

static void storm_body(bool write)
{
	if (write) {
		if (__atomic_add_fetch(&T.writers_in, 1, __ATOMIC_ACQ_REL) != 1 ||
		    __atomic_load_n(&T.readers_in, __ATOMIC_ACQUIRE))
			TFAIL("a writer is not alone");
	} else {
		__atomic_add_fetch(&T.readers_in, 1, __ATOMIC_ACQ_REL);
		if (__atomic_load_n(&T.writers_in, __ATOMIC_ACQUIRE))
			TFAIL("a reader is in with a writer");
	}
	tc_note_worker(&workers_seen);
	if (write)
		__atomic_sub_fetch(&T.writers_in, 1, __ATOMIC_ACQ_REL);
	else
		__atomic_sub_fetch(&T.readers_in, 1, __ATOMIC_ACQ_REL);
}

static void *storm_plain(void *p)
{
	long id = (long)p;
	start_gate(PLAIN + TIMED);
	/* ...and on until the timed lockers have raced them for a while */
	for (int i = 0; i < STORM_ITERS || __atomic_load_n(&T.timed_short, __ATOMIC_ACQUIRE); i++) {
		bool write = (i + id) % 3 != 0;
		CHECK_OK(write ? pthread_rwlock_wrlock(&T.l) : pthread_rwlock_rdlock(&T.l));
		storm_body(write);
		if (i % 8 == 0)
			usleep(50); /* hold it across a sleep now and then */
		CHECK_OK(pthread_rwlock_unlock(&T.l));
	}
	__atomic_sub_fetch(&T.plain_running, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Stops once the plain lockers are done (after TIMED_MIN tries at least):
 * a timed call whose deadline has already passed returns without
 * parking, so a loop of them alone would never let anything else run on
 * its worker. */
static void *storm_timed(void *p)
{
	long id = (long)p;
	start_gate(PLAIN + TIMED);
	unsigned seed = (unsigned)id * 7919u + 1;
	for (int i = 0;; i++) {
		if (i == TIMED_MIN)
			__atomic_sub_fetch(&T.timed_short, 1, __ATOMIC_RELEASE);
		if (i >= TIMED_MIN &&
		    (i >= STORM_ITERS || !__atomic_load_n(&T.plain_running, __ATOMIC_ACQUIRE)))
			break;
		__atomic_add_fetch(&T.timed_tries, 1, __ATOMIC_RELAXED);
		bool write = (i + id) % 2 == 0;
		seed = seed * 1103515245u + 12345u;
		long us = (seed >> 16) % 150;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += us * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		int e = write ? pthread_rwlock_clockwrlock(&T.l, CLOCK_MONOTONIC, &ts)
		              : pthread_rwlock_clockrdlock(&T.l, CLOCK_MONOTONIC, &ts);
		if (e == ETIMEDOUT) {
			__atomic_add_fetch(&T.timeouts, 1, __ATOMIC_RELAXED);
		} else {
			CHECK_OK(e);
			storm_body(write);
			__atomic_add_fetch(&T.timed_ok, 1, __ATOMIC_RELAXED);
			CHECK_OK(pthread_rwlock_unlock(&T.l));
		}
		sched_yield(); /* let the plain lockers on this worker take it */
	}
	return NULL;
}

static void storm(int kind)
{
	tc_watchdog(20);
	init_kind(&T.l, kind);
	T.plain_running = PLAIN;
	T.timed_short = TIMED;
	pthread_t p[PLAIN], t[TIMED];
	for (long i = 0; i < PLAIN; i++)
		CHECK_OK(pthread_create(&p[i], NULL, storm_plain, (void *)i));
	for (long i = 0; i < TIMED; i++)
		CHECK_OK(pthread_create(&t[i], NULL, storm_timed, (void *)i));
	for (int i = 0; i < PLAIN; i++)
		CHECK_OK(pthread_join(p[i], NULL));
	for (int i = 0; i < TIMED; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK_EQ(T.timeouts + T.timed_ok, T.timed_tries);
	CHECK(T.timeouts > 0);  /* the race was really run */
	CHECK(T.timed_ok > 0);
	CHECK_OK(pthread_rwlock_trywrlock(&T.l)); /* nothing left behind */
	CHECK_OK(pthread_rwlock_unlock(&T.l));
	CHECK_OK(pthread_rwlock_destroy(&T.l));
	tc_check_spread(&workers_seen);
}

TCASE(timeout_storm_prefer_reader)
{
	storm(PTHREAD_RWLOCK_PREFER_READER_NP);
}

TCASE(timeout_storm_prefer_writer)
{
	storm(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
}

/* ---- kernel threads that are not Caprice threads ---- */

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
typedef int (*join_fn)(pthread_t, void **);

/* The C library's own pthread_create makes a plain kernel thread: it
 * waits on a futex instead of parking, and its identity for EDEADLK and
 * EPERM is the C library's thread handle. */
static pthread_rwlock_t FL = PTHREAD_RWLOCK_INITIALIZER;
static int step;

static void *foreign_side(void *p)
{
	(void)p;
	CHECK_EQ(caprice_worker_index(), -1);
	/* 1: hold it for writing while main checks it cannot unlock it */
	CHECK_OK(pthread_rwlock_wrlock(&FL));
	CHECK_EQ(pthread_rwlock_wrlock(&FL), EDEADLK);
	CHECK_EQ(pthread_rwlock_rdlock(&FL), EDEADLK);
	store(&step, 1);
	await_eq(&step, 2);
	CHECK_OK(pthread_rwlock_unlock(&FL));
	store(&step, 3);
	/* 4: main holds it; block in the kernel until main lets go */
	await_eq(&step, 4);
	uint64_t t0 = tc_now_ns();
	CHECK_OK(pthread_rwlock_wrlock(&FL));
	CHECK(elapsed_ms(t0) >= 15);
	CHECK_OK(pthread_rwlock_unlock(&FL));
	/* 5: main holds it again; time out */
	store(&step, 5);
	await_eq(&step, 6);
	t0 = tc_now_ns();
	struct timespec ts = tc_abs_ms(CLOCK_MONOTONIC, 50);
	CHECK_EQ(pthread_rwlock_clockrdlock(&FL, CLOCK_MONOTONIC, &ts), ETIMEDOUT);
	uint64_t ms = elapsed_ms(t0);
	CHECK(ms >= 50 && ms < 50 + TOLERANCE_MS);
	store(&step, 7);
	return NULL;
}

TCASE(kernel_thread_locks_and_waits)
{
	tc_watchdog(20);
	create_fn create = (create_fn)tc_libc_sym("pthread_create");
	join_fn join = (join_fn)tc_libc_sym("pthread_join");
	CHECK((void *)create != (void *)pthread_create);
	pthread_t t;
	CHECK_OK(create(&t, NULL, foreign_side, NULL));
	await_eq(&step, 1);
	CHECK_EQ(pthread_rwlock_unlock(&FL), EPERM);
	CHECK_EQ(pthread_rwlock_tryrdlock(&FL), EBUSY);
	store(&step, 2);
	await_eq(&step, 3);
	CHECK_OK(pthread_rwlock_wrlock(&FL));
	store(&step, 4);
	usleep(20000);
	CHECK_OK(pthread_rwlock_unlock(&FL));
	await_eq(&step, 5);
	CHECK_OK(pthread_rwlock_wrlock(&FL));
	store(&step, 6);
	await_eq(&step, 7);
	CHECK_OK(pthread_rwlock_unlock(&FL));
	CHECK_OK(join(t, NULL));
	CHECK_OK(pthread_rwlock_destroy(&FL));
}

/* ---- process-shared: between a fork's parent and child ---- */

struct shared_rw {
	pthread_rwlock_t l;
	long count;             /* written under the write lock */
	volatile int readers;   /* read holds, both processes */
	volatile int overlap;   /* a writer saw a reader, or a writer */
	volatile int child_reads;
	volatile int parent_saw;
};

static void shared_rw_work(struct shared_rw *s, int n)
{
	for (int i = 0; i < n; i++) {
		if (i % 4 == 0) {
			CHECK_OK(pthread_rwlock_wrlock(&s->l));
			if (__atomic_load_n(&s->readers, __ATOMIC_RELAXED))
				s->overlap = 1;
			long v = s->count;
			if (i % 64 == 0)
				sched_yield(); /* hold it a while: the other side waits */
			s->count = v + 1;
			CHECK_OK(pthread_rwlock_unlock(&s->l));
		} else {
			CHECK_OK(pthread_rwlock_rdlock(&s->l));
			__atomic_add_fetch(&s->readers, 1, __ATOMIC_RELAXED);
			if (i % 16 == 1)
				usleep(50);
			__atomic_sub_fetch(&s->readers, 1, __ATOMIC_RELAXED);
			CHECK_OK(pthread_rwlock_unlock(&s->l));
		}
	}
}

TCASE(process_shared_rwlock_across_fork)
{
	tc_watchdog(30);
	struct shared_rw *s = tc_shared_alloc(sizeof *s);
	pthread_rwlockattr_t a;
	CHECK_OK(pthread_rwlockattr_init(&a));
	CHECK_OK(pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	CHECK_OK(pthread_rwlock_init(&s->l, &a));
	CHECK_OK(pthread_rwlockattr_destroy(&a));

	/* a read hold in the child keeps the parent's writer out, not its
	 * readers; the writer's timed lock runs to its deadline */
	pid_t pid = fork();
	if (pid == 0) {
		if (pthread_rwlock_rdlock(&s->l))
			_exit(2);
		s->child_reads = 1;
		while (!s->parent_saw)
			usleep(1000);
		_exit(pthread_rwlock_unlock(&s->l) ? 3 : 0);
	}
	CHECK(pid > 0);
	while (!s->child_reads)
		usleep(1000);
	CHECK_EQ(pthread_rwlock_trywrlock(&s->l), EBUSY);
	struct timespec at = tc_abs_ms(CLOCK_MONOTONIC, 30);
	CHECK_EQ(pthread_rwlock_clockwrlock(&s->l, CLOCK_MONOTONIC, &at), ETIMEDOUT);
	CHECK_OK(pthread_rwlock_tryrdlock(&s->l));
	CHECK_OK(pthread_rwlock_unlock(&s->l));
	s->parent_saw = 1;
	CHECK_OK(pthread_rwlock_wrlock(&s->l)); /* waits for the child's unlock */
	tc_child_ok(pid);
	CHECK_EQ(pthread_rwlock_wrlock(&s->l), EDEADLK);
	CHECK_OK(pthread_rwlock_unlock(&s->l));

	/* both processes read and write: no writer overlaps anyone, and no
	 * write is lost */
	pid = fork();
	if (pid == 0) {
		shared_rw_work(s, 8000);
		_exit(0);
	}
	shared_rw_work(s, 8000);
	tc_child_ok(pid);
	CHECK_EQ(s->count, 4000);
	CHECK_EQ(s->overlap, 0);
	CHECK_OK(pthread_rwlock_destroy(&s->l));
	munmap(s, sizeof *s);
}
