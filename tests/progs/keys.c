/* keys.c: thread-specific data and pthread_once — values are per thread,
 * destructors run at thread exit with the value (and again when they set
 * a new one), deleted keys forget their values, the key space reaches
 * PTHREAD_KEYS_MAX, and a once routine runs exactly once however many
 * threads race for it. */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "tcase.h"

TCASE(create_set_get_delete)
{
	pthread_key_t k;
	CHECK_OK(pthread_key_create(&k, NULL));
	CHECK(pthread_getspecific(k) == NULL); /* NULL until set */
	int x, y;
	CHECK_OK(pthread_setspecific(k, &x));
	CHECK(pthread_getspecific(k) == &x);
	CHECK_OK(pthread_setspecific(k, &y));
	CHECK(pthread_getspecific(k) == &y);
	CHECK_OK(pthread_setspecific(k, NULL));
	CHECK(pthread_getspecific(k) == NULL);
	CHECK_OK(pthread_key_delete(k));
}

TCASE(distinct_keys_distinct_values)
{
	pthread_key_t a, b;
	CHECK_OK(pthread_key_create(&a, NULL));
	CHECK_OK(pthread_key_create(&b, NULL));
	CHECK(a != b);
	CHECK_OK(pthread_setspecific(a, (void *)1));
	CHECK_OK(pthread_setspecific(b, (void *)2));
	CHECK(pthread_getspecific(a) == (void *)1);
	CHECK(pthread_getspecific(b) == (void *)2);
	CHECK_OK(pthread_key_delete(a));
	CHECK_OK(pthread_key_delete(b));
}

TCASE(delete_errors)
{
	pthread_key_t k;
	CHECK_OK(pthread_key_create(&k, NULL));
	CHECK_OK(pthread_key_delete(k));
	CHECK_EQ(pthread_key_delete(k), EINVAL);           /* twice */
	CHECK_EQ(pthread_setspecific(k, (void *)1), EINVAL); /* deleted */
	CHECK_EQ(pthread_key_delete((pthread_key_t)1000000), EINVAL);
	CHECK_EQ(pthread_setspecific((pthread_key_t)1000000, (void *)1), EINVAL);
	CHECK(pthread_getspecific((pthread_key_t)1000000) == NULL);
}

static pthread_key_t shared_key;

static void *set_and_read_back(void *arg)
{
	if (pthread_getspecific(shared_key) != NULL)
		return (void *)1; /* a new thread starts with NULL */
	if (pthread_setspecific(shared_key, arg) != 0)
		return (void *)2;
	for (int i = 0; i < 100; i++) {
		sched_yield(); /* let the others set theirs meanwhile */
		if (pthread_getspecific(shared_key) != arg)
			return (void *)3;
	}
	return NULL;
}

TCASE(values_are_per_thread)
{
	enum { N = 64 };
	CHECK_OK(pthread_key_create(&shared_key, NULL));
	CHECK_OK(pthread_setspecific(shared_key, (void *)0xabc));
	pthread_t t[N];
	for (long i = 0; i < N; i++)
		CHECK_OK(pthread_create(&t[i], NULL, set_and_read_back, (void *)(0x1000 + i)));
	for (int i = 0; i < N; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK_EQ((long)r, 0);
	}
	CHECK(pthread_getspecific(shared_key) == (void *)0xabc); /* ours untouched */
}

/* ---- destructors ---- */

static pthread_mutex_t log_m = PTHREAD_MUTEX_INITIALIZER;
static void *dtor_seen[256];
static int dtor_calls;
static int dtor_saw_nonnull_get;
static pthread_key_t dkey;

static void record_dtor(void *v)
{
	pthread_mutex_lock(&log_m);
	if (dtor_calls < 256)
		dtor_seen[dtor_calls] = v;
	dtor_calls++;
	/* POSIX: the value is NULL while its destructor runs */
	if (pthread_getspecific(dkey) != NULL)
		dtor_saw_nonnull_get++;
	pthread_mutex_unlock(&log_m);
}

static void *set_dkey(void *arg)
{
	pthread_setspecific(dkey, arg);
	return NULL;
}

TCASE(destructor_runs_with_value)
{
	CHECK_OK(pthread_key_create(&dkey, record_dtor));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_dkey, (void *)0x1234));
	CHECK_OK(pthread_join(t, NULL));
	CHECK_EQ(dtor_calls, 1);
	CHECK(dtor_seen[0] == (void *)0x1234);
	CHECK_EQ(dtor_saw_nonnull_get, 0);
}

TCASE(destructor_not_run_for_null)
{
	CHECK_OK(pthread_key_create(&dkey, record_dtor));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_dkey, NULL));
	CHECK_OK(pthread_join(t, NULL));
	/* a thread that sets only another key */
	CHECK_OK(pthread_key_create(&shared_key, NULL));
	CHECK(shared_key != dkey);
	void *r;
	CHECK_OK(pthread_create(&t, NULL, set_and_read_back, (void *)1));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
	CHECK_EQ(dtor_calls, 0);
}

static void *set_dkey_then_exit(void *arg)
{
	pthread_setspecific(dkey, arg);
	pthread_exit((void *)5);
}

TCASE(destructor_runs_on_pthread_exit)
{
	CHECK_OK(pthread_key_create(&dkey, record_dtor));
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, set_dkey_then_exit, (void *)0x77));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 5);
	CHECK_EQ(dtor_calls, 1);
	CHECK(dtor_seen[0] == (void *)0x77);
}

/* every thread's own value reaches the destructor, in that thread */
static pthread_t dtor_thread_seen[64];

static void dtor_note_thread(void *v)
{
	long i = (long)v - 1;
	if (i >= 0 && i < 64)
		dtor_thread_seen[i] = pthread_self();
}

static void *set_index_key(void *arg)
{
	pthread_setspecific(dkey, arg);
	return NULL;
}

TCASE(destructor_runs_in_exiting_thread)
{
	enum { N = 64 };
	CHECK_OK(pthread_key_create(&dkey, dtor_note_thread));
	pthread_t t[N];
	for (long i = 0; i < N; i++)
		CHECK_OK(pthread_create(&t[i], NULL, set_index_key, (void *)(i + 1)));
	for (int i = 0; i < N; i++) {
		CHECK_OK(pthread_join(t[i], NULL));
		CHECK(pthread_equal(dtor_thread_seen[i], t[i]));
	}
}

/* A destructor that sets a new value gets called again with it. */
static int reset_rounds_left;

static void dtor_resets(void *v)
{
	record_dtor(v);
	if (reset_rounds_left-- > 0)
		pthread_setspecific(dkey, (void *)((long)v + 1));
}

TCASE(destructor_reset_runs_again)
{
	CHECK_OK(pthread_key_create(&dkey, dtor_resets));
	reset_rounds_left = 2; /* < PTHREAD_DESTRUCTOR_ITERATIONS */
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_dkey, (void *)100));
	CHECK_OK(pthread_join(t, NULL));
	CHECK_EQ(dtor_calls, 3);
	CHECK(dtor_seen[0] == (void *)100);
	CHECK(dtor_seen[1] == (void *)101);
	CHECK(dtor_seen[2] == (void *)102);
}

/* One that always sets a new value is called at least
 * PTHREAD_DESTRUCTOR_ITERATIONS times, and the thread still ends. */
TCASE(destructor_always_resetting_ends)
{
	CHECK_OK(pthread_key_create(&dkey, dtor_resets));
	reset_rounds_left = INT_MAX;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_dkey, (void *)1));
	CHECK_OK(pthread_join(t, NULL));
	CHECK(dtor_calls >= PTHREAD_DESTRUCTOR_ITERATIONS);
	for (int i = 0; i < dtor_calls && i < 256; i++)
		CHECK(dtor_seen[i] == (void *)(long)(1 + i));
}

/* A destructor that sets another key's value: that one runs in the next
 * round. */
static pthread_key_t second_key;
static int second_calls;

static void dtor_second(void *v)
{
	(void)v;
	__atomic_add_fetch(&second_calls, 1, __ATOMIC_RELAXED);
}

static void dtor_sets_second(void *v)
{
	record_dtor(v);
	pthread_setspecific(second_key, (void *)9);
}

TCASE(destructor_sets_other_key)
{
	CHECK_OK(pthread_key_create(&dkey, dtor_sets_second));
	CHECK_OK(pthread_key_create(&second_key, dtor_second));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_dkey, (void *)3));
	CHECK_OK(pthread_join(t, NULL));
	CHECK_EQ(dtor_calls, 1);
	CHECK_EQ(second_calls, 1);
}

/* ---- deletion ---- */

static void *set_and_wait(void *arg)
{
	pthread_key_t k = (pthread_key_t)(long)arg;
	pthread_setspecific(k, (void *)0x99);
	tc_msleep(100); /* the key is deleted meanwhile */
	/* the key may have been recreated with the same index: the old value
	 * must not show through */
	return pthread_getspecific(k);
}

TCASE(delete_forgets_values)
{
	pthread_key_t k;
	CHECK_OK(pthread_key_create(&k, record_dtor));
	CHECK_OK(pthread_setspecific(k, (void *)0x55));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_and_wait, (void *)(long)k));
	tc_msleep(30);
	CHECK_OK(pthread_key_delete(k));
	/* make a new key, likely in the same slot */
	pthread_key_t k2;
	CHECK_OK(pthread_key_create(&k2, record_dtor));
	CHECK(pthread_getspecific(k2) == NULL);
	if (k2 == k)
		CHECK(pthread_getspecific(k) == NULL);
	void *r;
	CHECK_OK(pthread_join(t, &r));
	if (k2 == k)
		CHECK(r == NULL);
	/* no destructor for the deleted key's values, nor for k2 (unset) */
	CHECK_EQ(dtor_calls, 0);
	CHECK_OK(pthread_key_delete(k2));
}

static void *set_then_exit_after(void *arg)
{
	pthread_setspecific(dkey, arg);
	tc_msleep(60);
	return NULL;
}

/* Deleting a key means its destructor no longer runs for threads that
 * still hold a value. */
TCASE(delete_skips_destructor)
{
	CHECK_OK(pthread_key_create(&dkey, record_dtor));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_then_exit_after, (void *)0x42));
	tc_msleep(20);
	CHECK_OK(pthread_key_delete(dkey));
	CHECK_OK(pthread_join(t, NULL));
	CHECK_EQ(dtor_calls, 0);
}

/* ---- many keys ---- */

static pthread_key_t many[PTHREAD_KEYS_MAX];
static int nmany;
static int many_dtor_calls;

static void many_dtor(void *v)
{
	(void)v;
	__atomic_add_fetch(&many_dtor_calls, 1, __ATOMIC_RELAXED);
}

static void *use_many(void *arg)
{
	long salt = (long)arg;
	for (int i = 0; i < nmany; i++)
		if (pthread_setspecific(many[i], (void *)(salt * 4096 + i + 1)) != 0)
			return (void *)1;
	sched_yield();
	for (int i = 0; i < nmany; i++)
		if (pthread_getspecific(many[i]) != (void *)(salt * 4096 + i + 1))
			return (void *)2;
	return NULL;
}

/* Beyond the 32 values kept inline, up to PTHREAD_KEYS_MAX; creating one
 * more is EAGAIN; every value is kept and every destructor runs. */
TCASE(keys_up_to_max)
{
	int e = 0;
	while (nmany < PTHREAD_KEYS_MAX) {
		e = pthread_key_create(&many[nmany], many_dtor);
		if (e)
			break;
		nmany++;
	}
	/* a sanitizer runtime holds a key of its own */
	int reserved = getenv("CAPRICE_TEST_SANITIZED") ? 1 : 0;
	if (reserved && e == EAGAIN && nmany == PTHREAD_KEYS_MAX - reserved)
		e = 0;
	CHECK_OK(e);
	CHECK_EQ(nmany, PTHREAD_KEYS_MAX - (nmany < PTHREAD_KEYS_MAX ? reserved : 0));
	pthread_key_t extra;
	CHECK_EQ(pthread_key_create(&extra, NULL), EAGAIN);

	pthread_key_t hi = 0;
	for (int i = 0; i < nmany; i++)
		if (many[i] > hi)
			hi = many[i];
	CHECK(hi >= 1000); /* indexes near the top are in use */

	enum { T = 8 };
	pthread_t t[T];
	for (long i = 0; i < T; i++)
		CHECK_OK(pthread_create(&t[i], NULL, use_many, (void *)(i + 1)));
	for (int i = 0; i < T; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK_EQ((long)r, 0);
	}
	CHECK_EQ(many_dtor_calls, T * nmany);

	/* main too */
	void *r = use_many((void *)99);
	CHECK_EQ((long)r, 0);

	/* freeing one makes room for exactly one */
	CHECK_OK(pthread_key_delete(many[500]));
	CHECK_OK(pthread_key_create(&extra, NULL));
	CHECK(pthread_getspecific(extra) == NULL); /* not main's old value */
	pthread_key_t more;
	CHECK_EQ(pthread_key_create(&more, NULL), EAGAIN);
}

static pthread_key_t high_key;

static void *high_key_thread(void *arg)
{
	if (pthread_getspecific(high_key) != NULL)
		return (void *)1;
	if (pthread_setspecific(high_key, arg) != 0)
		return (void *)2;
	return pthread_getspecific(high_key);
}

static void *high_dtor_arg;
static void high_dtor(void *v)
{
	high_dtor_arg = v;
}

/* A lone key with an index near 1000 (its page is made on first use). */
TCASE(key_index_near_1000)
{
	static pthread_key_t filler[1000];
	int n = 0;
	for (; n < 1000; n++) {
		CHECK_OK(pthread_key_create(&filler[n], NULL));
		if (filler[n] >= 990)
			break;
	}
	CHECK(n < 1000);
	high_key = filler[n];
	CHECK(high_key >= 990);
	CHECK_OK(pthread_key_delete(high_key));
	CHECK_OK(pthread_key_create(&high_key, high_dtor));
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, high_key_thread, (void *)0xfeed));
	CHECK_OK(pthread_join(t, &r));
	CHECK(r == (void *)0xfeed);
	CHECK(high_dtor_arg == (void *)0xfeed);
	CHECK_OK(pthread_setspecific(high_key, (void *)7));
	CHECK(pthread_getspecific(high_key) == (void *)7);
}

/* A new thread sees NULL for every key, although its record and stack
 * were a finished thread's (they are recycled) whose values were set. */
enum { RK = 80 }; /* inline slots and two pages */
static pthread_key_t rkeys[RK];
static int rdtor_calls;

static void rdtor(void *v)
{
	(void)v;
	__atomic_add_fetch(&rdtor_calls, 1, __ATOMIC_RELAXED);
}

static void *set_all_rkeys(void *arg)
{
	for (int i = 0; i < RK; i++)
		if (pthread_setspecific(rkeys[i], (void *)(long)(i + 1 + (long)arg)) != 0)
			return (void *)1;
	return NULL;
}

static void *check_all_rkeys_null(void *arg)
{
	(void)arg;
	for (int i = 0; i < RK; i++)
		if (pthread_getspecific(rkeys[i]) != NULL)
			return (void *)(long)(i + 1);
	/* and setting one far out still works */
	if (pthread_setspecific(rkeys[RK - 1], (void *)5) != 0)
		return (void *)1000;
	return NULL;
}

TCASE(new_thread_starts_with_null_values)
{
	for (int i = 0; i < RK; i++)
		CHECK_OK(pthread_key_create(&rkeys[i], rdtor));
	for (int round = 0; round < 50; round++) {
		pthread_t t;
		void *r;
		CHECK_OK(pthread_create(&t, NULL, set_all_rkeys, (void *)(long)round));
		CHECK_OK(pthread_join(t, &r));
		CHECK_EQ((long)r, 0);
		CHECK_OK(pthread_create(&t, NULL, check_all_rkeys_null, NULL));
		CHECK_OK(pthread_join(t, &r));
		if (r != NULL)
			TFAIL("round %d: a new thread saw a value for key #%ld", round, (long)r - 1);
	}
	/* each setter's RK values, and each checker's one */
	CHECK_EQ(rdtor_calls, 50 * (RK + 1));
}

/* ---- once ---- */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int once_runs;
static int once_done;

static void slow_init(void)
{
	__atomic_add_fetch(&once_runs, 1, __ATOMIC_RELAXED);
	tc_msleep(50); /* the others arrive meanwhile and must wait */
	__atomic_store_n(&once_done, 1, __ATOMIC_RELEASE);
}

static pthread_mutex_t start_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_c = PTHREAD_COND_INITIALIZER;
static int start_go;

static void *call_once(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&start_m);
	while (!start_go)
		pthread_cond_wait(&start_c, &start_m);
	pthread_mutex_unlock(&start_m);
	if (pthread_once(&once, slow_init) != 0)
		return (void *)1;
	/* returning means the routine has completed */
	if (!__atomic_load_n(&once_done, __ATOMIC_ACQUIRE))
		return (void *)2;
	return NULL;
}

TCASE(once_runs_exactly_once)
{
	enum { N = 50 };
	pthread_t t[N];
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_create(&t[i], NULL, call_once, NULL));
	pthread_mutex_lock(&start_m);
	start_go = 1;
	pthread_cond_broadcast(&start_c);
	pthread_mutex_unlock(&start_m);
	for (int i = 0; i < N; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK_EQ((long)r, 0);
	}
	CHECK_EQ(once_runs, 1);
	CHECK_OK(pthread_once(&once, slow_init));
	CHECK_EQ(once_runs, 1);
}

static int quick_runs;
static void quick_init(void)
{
	quick_runs++;
}

TCASE(once_separate_controls)
{
	static pthread_once_t o[100];
	for (int i = 0; i < 100; i++)
		o[i] = (pthread_once_t)PTHREAD_ONCE_INIT;
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 100; i++)
			CHECK_OK(pthread_once(&o[i], quick_init));
	CHECK_EQ(quick_runs, 100);
}

/* A once routine that is cancelled does not count: the next caller runs
 * it. */
static pthread_once_t cancel_once = PTHREAD_ONCE_INIT;
static int cancel_once_runs;

static void init_cancelled_first(void)
{
	if (__atomic_add_fetch(&cancel_once_runs, 1, __ATOMIC_RELAXED) == 1) {
		for (;;) {
			pthread_testcancel();
			tc_msleep(1);
		}
	}
}

static void *run_cancel_once(void *arg)
{
	(void)arg;
	pthread_once(&cancel_once, init_cancelled_first);
	return NULL;
}

TCASE(once_cancelled_runs_again)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, run_cancel_once, NULL));
	while (__atomic_load_n(&cancel_once_runs, __ATOMIC_RELAXED) == 0)
		tc_msleep(1);
	CHECK_OK(pthread_cancel(t));
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK(r == PTHREAD_CANCELED);
	CHECK_OK(pthread_once(&cancel_once, init_cancelled_first));
	CHECK_EQ(cancel_once_runs, 2);
}
