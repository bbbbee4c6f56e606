/* threads.c: thread lifecycle — create, join, detach, exit, identity,
 * names, attributes read back, placement on workers, and what happens to
 * the whole process when a thread exits it or overflows its stack.
 *
 * Cases that must watch a whole process end (pthread_exit from main, exit
 * from a thread, a stack overflow) run themselves again as a child with
 * TC_CHILD=1 in the environment: the child plays the part, the parent
 * checks its exit status and output. */
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

/* ------------------------------------------------------------------ */
/* helpers                                                            */

struct child {
	int status;
	char out[16384];
};

/* Runs this program again as `prog case_name` with TC_CHILD=1 and the
 * given extra NAME=VALUE settings (which replace inherited ones),
 * collecting its stdout+stderr; fails the case if it runs over 30 s. */
static void run_child(const char *case_name, const char *const *extra, struct child *c)
{
	c->status = tc_run_self(case_name, extra, c->out, sizeof c->out, 30);
}

static size_t count_substr(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* A gate: threads block in gate_wait until gate_open. */
struct gate {
	pthread_mutex_t m;
	pthread_cond_t c;
	int open;
	int waiting;
};
#define GATE_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0 }

static void gate_wait(struct gate *g)
{
	pthread_mutex_lock(&g->m);
	g->waiting++;
	pthread_cond_broadcast(&g->c);
	while (!g->open)
		pthread_cond_wait(&g->c, &g->m);
	pthread_mutex_unlock(&g->m);
}

static void gate_open(struct gate *g)
{
	pthread_mutex_lock(&g->m);
	g->open = 1;
	pthread_cond_broadcast(&g->c);
	pthread_mutex_unlock(&g->m);
}

/* Waits until n threads are blocked in gate_wait. */
static void gate_await_waiters(struct gate *g, int n)
{
	pthread_mutex_lock(&g->m);
	while (g->waiting < n)
		pthread_cond_wait(&g->c, &g->m);
	pthread_mutex_unlock(&g->m);
}

static void *gate_open_thread(void *arg)
{
	gate_open(arg);
	return NULL;
}

static void *gate_then_return(void *arg)
{
	struct gate *g = arg;
	gate_wait(g);
	return (void *)0x5eed;
}

/* ------------------------------------------------------------------ */
/* create and join                                                    */

static void *plus_one(void *a)
{
	return (void *)((long)a + 1);
}

TCASE(create_join_returns_value)
{
	for (long i = 0; i < 1000; i++) {
		pthread_t t;
		void *r;
		CHECK_OK(pthread_create(&t, NULL, plus_one, (void *)i));
		CHECK_OK(pthread_join(t, &r));
		CHECK_EQ((long)r, i + 1);
	}
}

TCASE(many_joinable_at_once)
{
	enum { N = 500 };
	static pthread_t t[N];
	for (long i = 0; i < N; i++)
		CHECK_OK(pthread_create(&t[i], NULL, plus_one, (void *)(i * 3)));
	/* join in reverse: results must not be mixed up */
	for (long i = N - 1; i >= 0; i--) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK_EQ((long)r, i * 3 + 1);
	}
}

TCASE(join_null_result_pointer)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, plus_one, (void *)1));
	CHECK_OK(pthread_join(t, NULL));
}

static void *self_id(void *out)
{
	*(pthread_t *)out = pthread_self();
	return NULL;
}

TCASE(self_matches_handle)
{
	pthread_t t, seen;
	CHECK_OK(pthread_create(&t, NULL, self_id, &seen));
	CHECK_OK(pthread_join(t, NULL));
	CHECK(pthread_equal(t, seen));
	CHECK(!pthread_equal(t, pthread_self()));
	CHECK(pthread_equal(pthread_self(), pthread_self()));
}

static void *create_grandchild(void *arg)
{
	(void)arg;
	pthread_t t;
	void *r;
	if (pthread_create(&t, NULL, plus_one, (void *)41) != 0)
		return (void *)-1;
	if (pthread_join(t, &r) != 0)
		return (void *)-2;
	return r;
}

TCASE(thread_creates_thread)
{
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, create_grandchild, NULL));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 42);
}

static void *set_flag_and_return(void *arg)
{
	__atomic_store_n((int *)arg, 1, __ATOMIC_RELEASE);
	return (void *)77;
}

TCASE(join_already_finished)
{
	int done = 0;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_flag_and_return, &done));
	uint64_t give_up = tc_now_ns() + 5000000000ull;
	while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
		CHECK(tc_now_ns() < give_up);
		sched_yield();
	}
	tc_msleep(20); /* let it get off its stack and finish for good */
	void *r;
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 77);
}

TCASE(join_self_edeadlk)
{
	CHECK_EQ(pthread_join(pthread_self(), NULL), EDEADLK);
}

static void *join_self_in_thread(void *arg)
{
	(void)arg;
	return (void *)(long)pthread_join(pthread_self(), NULL);
}

TCASE(join_self_edeadlk_in_thread)
{
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, join_self_in_thread, NULL));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, EDEADLK);
}

/* Two threads joining each other: one of them must be told EDEADLK, and
 * the other then gets the first one's result. */
struct pair_join {
	pthread_t other;
	int ready;
	int done;
	int result;
	void *got;
};

static struct pair_join pj[2];
static pthread_mutex_t pj_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pj_c = PTHREAD_COND_INITIALIZER;
static int pj_created;

static void *join_partner(void *arg)
{
	long me = (long)arg;
	pthread_mutex_lock(&pj_m); /* until both handles are known */
	while (!pj_created)
		pthread_cond_wait(&pj_c, &pj_m);
	pthread_mutex_unlock(&pj_m);
	if (me == 1) {
		/* let 0 block in its join first */
		while (!__atomic_load_n(&pj[0].ready, __ATOMIC_ACQUIRE))
			sched_yield();
		tc_msleep(50);
	}
	__atomic_store_n(&pj[me].ready, 1, __ATOMIC_RELEASE);
	void *r = NULL;
	int e = pthread_join(pj[me].other, &r);
	pj[me].got = r;
	pj[me].result = e;
	__atomic_store_n(&pj[me].done, 1, __ATOMIC_RELEASE);
	return (void *)(100 + me);
}

TCASE(mutual_join_edeadlk)
{
	pthread_t t[2];
	for (long i = 0; i < 2; i++)
		CHECK_OK(pthread_create(&t[i], NULL, join_partner, (void *)i));
	pthread_mutex_lock(&pj_m);
	pj[0].other = t[1];
	pj[1].other = t[0];
	pj_created = 1;
	pthread_cond_broadcast(&pj_c);
	pthread_mutex_unlock(&pj_m);
	/* both joins return: one refused, the other once its partner ended */
	uint64_t give_up = tc_now_ns() + 10000000000ull;
	while (!__atomic_load_n(&pj[0].done, __ATOMIC_ACQUIRE) ||
	       !__atomic_load_n(&pj[1].done, __ATOMIC_ACQUIRE)) {
		if (tc_now_ns() > give_up)
			TFAIL("mutual join: done %d/%d, results %d/%d", pj[0].done, pj[1].done,
			      pj[0].result, pj[1].result);
		tc_msleep(1);
	}
	int d = pj[0].result == EDEADLK ? 0 : 1; /* the refused one */
	int p = !d;
	CHECK_EQ(pj[d].result, EDEADLK);
	CHECK_EQ(pj[p].result, 0);
	CHECK_EQ((long)pj[p].got, 100 + d);
	/* p joined d; p itself is ours to join */
	void *r;
	CHECK_OK(pthread_join(t[p], &r));
	CHECK_EQ((long)r, 100 + p);
}

static pthread_t main_handle;
static int main_join_ready, main_join_result = -1;

static void *join_main(void *arg)
{
	(void)arg;
	__atomic_store_n(&main_join_ready, 1, __ATOMIC_RELEASE);
	main_join_result = pthread_join(main_handle, NULL); /* main never ends here */
	return (void *)1;
}

/* The same with main as one of the two.  If main is refused, the thread
 * is left joining main, and cancelling it ends that join. */
TCASE(mutual_join_with_main_edeadlk)
{
	main_handle = pthread_self();
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, join_main, NULL));
	while (!__atomic_load_n(&main_join_ready, __ATOMIC_ACQUIRE))
		sched_yield();
	tc_msleep(50); /* t is now blocked joining main */
	void *r = NULL;
	int e = pthread_join(t, &r);
	if (e == EDEADLK) {
		CHECK_OK(pthread_cancel(t)); /* join is a cancellation point */
		/* t no longer waits for us once it acts on that: no deadlock */
		CHECK_OK(pthread_join(t, &r));
		CHECK(r == PTHREAD_CANCELED);
		CHECK_EQ(main_join_result, -1);
	} else {
		/* t was not blocked yet after all, and it got the EDEADLK */
		CHECK_OK(e);
		CHECK_EQ(main_join_result, EDEADLK);
		CHECK_EQ((long)r, 1);
	}
}

/* A thread that a cancelled thread was joining can join it: once the
 * joiner is cancelled there is no deadlock to report. */
static pthread_t cj_joiner;
static int cj_ready;
static long cj_result = -1;

static long cj_target_body(void)
{
	while (!__atomic_load_n(&cj_ready, __ATOMIC_ACQUIRE))
		sched_yield();
	tc_msleep(20); /* the joiner is blocked joining us */
	int e = pthread_cancel(cj_joiner);
	if (e)
		return 1000 + e;
	void *r = NULL;
	e = pthread_join(cj_joiner, &r);
	if (e)
		return 2000 + e;
	return r == PTHREAD_CANCELED ? 0 : 3000 + (long)r;
}

static void *cj_target(void *arg)
{
	(void)arg;
	__atomic_store_n(&cj_result, cj_target_body(), __ATOMIC_RELEASE);
	return NULL;
}

static void *cj_join(void *arg)
{
	__atomic_store_n(&cj_ready, 1, __ATOMIC_RELEASE);
	int e = pthread_join(*(pthread_t *)arg, NULL);
	return (void *)(long)(10 + e); /* not reached: cancelled in the join */
}

TCASE(join_cancelled_joiner)
{
	/* a few rounds: whether the joiner gets to run between the cancel and
	 * the join varies */
	for (int round = 0; round < 10; round++) {
		static pthread_t target;
		cj_ready = 0;
		__atomic_store_n(&cj_result, -1, __ATOMIC_RELEASE);
		CHECK_OK(pthread_create(&target, NULL, cj_target, NULL));
		CHECK_OK(pthread_create(&cj_joiner, NULL, cj_join, &target));
		/* not joining target ourselves yet: the joiner must be its
		 * only one */
		uint64_t give_up = tc_now_ns() + 10000000000ull;
		while (__atomic_load_n(&cj_result, __ATOMIC_ACQUIRE) == -1) {
			CHECK(tc_now_ns() < give_up);
			tc_msleep(1);
		}
		CHECK_OK(pthread_join(target, NULL));
		if (cj_result == 2000 + EDEADLK)
			TFAIL("round %d: joining a cancelled thread that was joining us: EDEADLK",
			      round);
		CHECK_EQ(cj_result, 0);
	}
}

TCASE(join_detached_einval)
{
	struct gate g = GATE_INIT;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, gate_then_return, &g));
	CHECK_OK(pthread_detach(t));
	CHECK_EQ(pthread_join(t, NULL), EINVAL);
	CHECK_EQ(pthread_tryjoin_np(t, NULL), EINVAL);
	CHECK_EQ(pthread_detach(t), EINVAL); /* twice */
	gate_await_waiters(&g, 1);
	gate_open(&g);
	tc_msleep(20); /* g must outlive t */
}

struct joiner_arg {
	pthread_t target;
	int started;
	void *result;
};

static void *join_target(void *arg)
{
	struct joiner_arg *j = arg;
	__atomic_store_n(&j->started, 1, __ATOMIC_RELEASE);
	return (void *)(long)pthread_join(j->target, &j->result);
}

/* A second joiner of the same thread is refused with EINVAL. */
TCASE(second_joiner_einval)
{
	struct gate g = GATE_INIT;
	struct joiner_arg j = { 0 };
	pthread_t a;
	CHECK_OK(pthread_create(&j.target, NULL, gate_then_return, &g));
	CHECK_OK(pthread_create(&a, NULL, join_target, &j));
	while (!__atomic_load_n(&j.started, __ATOMIC_ACQUIRE))
		sched_yield();
	uint64_t give_up = tc_now_ns() + 5000000000ull;
	int e;
	while ((e = pthread_tryjoin_np(j.target, NULL)) == EBUSY) {
		CHECK(tc_now_ns() < give_up);
		tc_msleep(1);
	}
	CHECK_EQ(e, EINVAL);
	gate_open(&g);
	void *r;
	CHECK_OK(pthread_join(a, &r));
	CHECK_EQ((long)r, 0);
	CHECK_EQ((long)j.result, 0x5eed);
}

TCASE(bad_handle_esrch)
{
	/* a zeroed, aligned record that was never a thread */
	static _Alignas(64) char fake[4096];
	pthread_t f = (pthread_t)fake;
	CHECK_EQ(pthread_join(f, NULL), ESRCH);
	CHECK_EQ(pthread_tryjoin_np(f, NULL), ESRCH);
	CHECK_EQ(pthread_detach(f), ESRCH);
	CHECK_EQ(pthread_kill(f, 0), ESRCH);
	CHECK_EQ(pthread_cancel(f), ESRCH);
	CHECK_EQ(pthread_setname_np(f, "x"), ESRCH);
	char buf[16];
	CHECK_EQ(pthread_getname_np(f, buf, sizeof buf), ESRCH);
	pthread_attr_t a;
	CHECK_EQ(pthread_getattr_np(f, &a), ESRCH);
	struct sched_param sp;
	int pol;
	CHECK_EQ(pthread_getschedparam(f, &pol, &sp), ESRCH);
	sp.sched_priority = 0;
	CHECK_EQ(pthread_setschedparam(f, SCHED_OTHER, &sp), ESRCH);
	CHECK_EQ(pthread_setschedprio(f, 0), ESRCH);
	struct caprice_thread_stats st;
	CHECK_EQ(caprice_thread_stats(f, &st), ESRCH);
}

/* A joined thread's handle no longer names a thread (its default-sized
 * stack stays mapped in the pool, so asking is safe here). */
TCASE(joined_handle_esrch)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, plus_one, NULL));
	CHECK_OK(pthread_join(t, NULL));
	CHECK_EQ(pthread_kill(t, 0), ESRCH);
	CHECK_EQ(pthread_join(t, NULL), ESRCH);
}

/* ------------------------------------------------------------------ */
/* tryjoin, timedjoin, clockjoin                                      */

TCASE(tryjoin_busy_then_ok)
{
	struct gate g = GATE_INIT;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, gate_then_return, &g));
	gate_await_waiters(&g, 1);
	void *r = NULL;
	CHECK_EQ(pthread_tryjoin_np(t, &r), EBUSY);
	CHECK_EQ(pthread_tryjoin_np(t, &r), EBUSY);
	CHECK(r == NULL);
	gate_open(&g);
	uint64_t give_up = tc_now_ns() + 5000000000ull;
	int e;
	while ((e = pthread_tryjoin_np(t, &r)) == EBUSY) {
		CHECK(tc_now_ns() < give_up);
		tc_msleep(1);
	}
	CHECK_OK(e);
	CHECK_EQ((long)r, 0x5eed);
}

static void check_timed_join(bool realtime)
{
	struct gate g = GATE_INIT;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, gate_then_return, &g));
	gate_await_waiters(&g, 1);
	clockid_t clk = realtime ? CLOCK_REALTIME : CLOCK_MONOTONIC;
	uint64_t t0 = tc_now_ns();
	struct timespec dl = tc_abs_ms(clk, 100);
	void *r = NULL;
	int e = realtime ? pthread_timedjoin_np(t, &r, &dl)
	                 : pthread_clockjoin_np(t, &r, CLOCK_MONOTONIC, &dl);
	uint64_t el = tc_now_ns() - t0;
	CHECK_EQ(e, ETIMEDOUT);
	CHECK(r == NULL);
	CHECK(el >= 99000000ull);
	CHECK(el < tc_late_ns(600));
	/* a deadline already past: no wait at all */
	dl = tc_abs_ms_ago(clk, 10);
	t0 = tc_now_ns();
	e = realtime ? pthread_timedjoin_np(t, &r, &dl)
	             : pthread_clockjoin_np(t, &r, CLOCK_MONOTONIC, &dl);
	CHECK_EQ(e, ETIMEDOUT);
	CHECK(tc_now_ns() - t0 < tc_late_ns(250));
	/* malformed */
	struct timespec bad = { .tv_sec = dl.tv_sec, .tv_nsec = 1000000000L };
	CHECK_EQ(realtime ? pthread_timedjoin_np(t, &r, &bad)
	                  : pthread_clockjoin_np(t, &r, CLOCK_MONOTONIC, &bad), EINVAL);
	bad.tv_nsec = -1;
	CHECK_EQ(realtime ? pthread_timedjoin_np(t, &r, &bad)
	                  : pthread_clockjoin_np(t, &r, CLOCK_MONOTONIC, &bad), EINVAL);
	/* released while we wait: returns well before the deadline */
	pthread_t opener;
	CHECK_OK(pthread_create(&opener, NULL, gate_open_thread, &g));
	dl = tc_abs_ms(clk, 5000);
	t0 = tc_now_ns();
	e = realtime ? pthread_timedjoin_np(t, &r, &dl)
	             : pthread_clockjoin_np(t, &r, CLOCK_MONOTONIC, &dl);
	CHECK_OK(e);
	CHECK(tc_now_ns() - t0 < 2000000000ull);
	CHECK_EQ((long)r, 0x5eed);
	CHECK_OK(pthread_join(opener, NULL));
}

TCASE(timedjoin_realtime)
{
	check_timed_join(true);
}

TCASE(clockjoin_monotonic)
{
	check_timed_join(false);
}

/* A joinee hands its result to a joiner already waiting as it leaves,
 * and the joiner then frees its stack: that must wait until the joinee is
 * off it.  Two workers, joiners that wait or come late, some with
 * deadlines that run out now and then: a stack handed back early is
 * taken by the next thread made, and two threads on one stack overwrite
 * each other's frames (and debug builds assert in cp_thread_release). */
struct handover {
	pthread_t target;
	unsigned spin;
	bool timed;
};

static uint64_t handover_workers; /* workers the pairs ran on */

static void *handover_target(void *arg)
{
	unsigned spin = (unsigned)(uintptr_t)arg;
	tc_note_worker(&handover_workers);
	volatile unsigned char frame[1024];
	for (unsigned i = 0; i < sizeof frame; i++)
		frame[i] = (unsigned char)(spin + i);
	for (unsigned i = 0; i < spin; i++)
		__asm__ volatile("" ::: "memory");
	for (unsigned i = 0; i < sizeof frame; i++)
		if (frame[i] != (unsigned char)(spin + i))
			return NULL; /* another thread ran on this stack */
	return (void *)(uintptr_t)(2 * spin + 1);
}

static void *handover_joiner(void *arg)
{
	struct handover *h = arg;
	void *r = NULL;
	int e;
	tc_note_worker(&handover_workers);
	if (h->timed) {
		do {
			struct timespec dl;
			clock_gettime(CLOCK_MONOTONIC, &dl);
			dl.tv_nsec += 20000 + (long)(h->spin % 64) * 1000;
			if (dl.tv_nsec >= 1000000000L) {
				dl.tv_sec++;
				dl.tv_nsec -= 1000000000L;
			}
			e = pthread_clockjoin_np(h->target, &r, CLOCK_MONOTONIC, &dl);
		} while (e == ETIMEDOUT);
	} else {
		e = pthread_join(h->target, &r);
	}
	if (e)
		return (void *)(uintptr_t)(1000 + e);
	return r == (void *)(uintptr_t)(2 * h->spin + 1) ? NULL : (void *)(uintptr_t)1;
}

TCASE(join_frees_the_stack_only_once_the_joinee_is_off_it)
{
	if (tc_rerun_on_workers(2, 120))
		return;
	tc_watchdog(100);
	enum { PAIRS = 8, ROUNDS = 1500 };
	unsigned seed = 12345;
	for (int round = 0; round < ROUNDS; round++) {
		struct handover h[PAIRS];
		pthread_t joiner[PAIRS];
		for (int i = 0; i < PAIRS; i++) {
			h[i].spin = (unsigned)rand_r(&seed) % 4000;
			h[i].timed = i % 3 == 0;
			CHECK_OK(pthread_create(&h[i].target, NULL, handover_target,
			                        (void *)(uintptr_t)h[i].spin));
			if (i % 4 == 1)
				sched_yield(); /* the joinee may be gone when its joiner comes */
			CHECK_OK(pthread_create(&joiner[i], NULL, handover_joiner, &h[i]));
		}
		for (int i = 0; i < PAIRS; i++) {
			void *r;
			CHECK_OK(pthread_join(joiner[i], &r));
			if (r != NULL)
				TFAIL("round %d pair %d: the joiner says %lu (1: wrong result, "
				      "1000+: join's error)", round, i, (unsigned long)(uintptr_t)r);
		}
	}
	tc_check_spread(&handover_workers);
}

/* A joiner comes back from pthread_join on the worker it waited on, also
 * when the thread it joined ended on another: its caller may keep errno's
 * address across the call (glibc declares __errno_location const), and
 * errno is the worker's (README, What differs from NPTL); a join then a
 * failing recv read the other worker's errno.  The joinees are made by a
 * maker thread on the other worker, which waits for each order in a pipe
 * read (a wakeup from I/O runs where it parked) and makes the joinee
 * where it runs. */
struct jw_maker {
	int order[2], made[2];
};
static int jw_ended_on; /* the worker the last joinee ended on */

static void *jw_joinee(void *arg)
{
	tc_msleep(2); /* its joiner parks meanwhile */
	*(int *)arg = caprice_worker_index();
	return NULL;
}

static int jw_main_worker, jw_settled;

static void *jw_make(void *arg)
{
	struct jw_maker *m = arg;
	/* makers yielding side by side on main's worker: the other one,
	 * idle, takes some of them (for 1 s at most) */
	uint64_t until = tc_now_ns() + 1000000000ull;
	while (caprice_worker_index() == jw_main_worker && tc_now_ns() < until)
		sched_yield();
	__atomic_add_fetch(&jw_settled, 1, __ATOMIC_RELEASE);
	char c;
	while (read(m->order[0], &c, 1) == 1 && c == 'm') {
		pthread_t t;
		if (pthread_create(&t, NULL, jw_joinee, &jw_ended_on) != 0 ||
		    write(m->made[1], &t, sizeof t) != sizeof t)
			return (void *)1;
	}
	return NULL;
}

TCASE(join_returns_on_the_worker_the_joiner_waited_on)
{
	if (tc_rerun_on_workers(2, 60))
		return;
	tc_watchdog(50);
	/* rounds go on until enough joinees ended on the other worker: a
	 * steal can move us next to the maker (a loaded machine makes the
	 * monitor ask our busy poll to yield) */
	enum { MAKERS = 8, WANT = 40, MAX_ROUNDS = 4000 };
	struct jw_maker m[MAKERS];
	pthread_t mt[MAKERS];
	jw_main_worker = caprice_worker_index();
	for (int i = 0; i < MAKERS; i++) {
		CHECK_OK(pipe(m[i].order));
		CHECK_OK(pipe2(m[i].made, O_NONBLOCK));
		CHECK_OK(pthread_create(&mt[i], NULL, jw_make, &m[i]));
	}
	while (__atomic_load_n(&jw_settled, __ATOMIC_ACQUIRE) < MAKERS)
		tc_msleep(5);
	tc_msleep(5); /* all parked in their reads */
	int ended_elsewhere = 0, round;
	uint64_t give_up = tc_now_ns() + 20000000000ull;
	for (round = 0; ended_elsewhere < WANT && round < MAX_ROUNDS && tc_now_ns() < give_up;
	     round++) {
		/* a maker parked on another worker than ours (we may have been
		 * moved by a steal since the last round) */
		int mine = caprice_worker_index(), other = -1;
		for (int i = 0; i < MAKERS && other < 0; i++) {
			struct caprice_thread_stats st;
			CHECK_OK(caprice_thread_stats(mt[i], &st));
			if (st.worker != mine)
				other = i;
		}
		if (other < 0)
			continue;
		pthread_t t;
		CHECK_EQ(write(m[other].order[1], "m", 1), 1);
		/* busy meanwhile: the placement would start the joinee on an
		 * idle worker with fewer threads, ours */
		ssize_t n;
		while ((n = read(m[other].made[0], &t, sizeof t)) < 0 && errno == EAGAIN)
			;
		CHECK_EQ(n, (ssize_t)sizeof t);
		mine = caprice_worker_index();
		CHECK_OK(pthread_join(t, NULL));
		if (caprice_worker_index() != mine)
			TFAIL("round %d: joined on worker %d, came back on %d", round, mine,
			      caprice_worker_index());
		ended_elsewhere += jw_ended_on != mine;
	}
	if (ended_elsewhere < WANT) /* else the case tested too little */
		TFAIL("only %d of %d joinees ended on the other worker", ended_elsewhere, round);
	for (int i = 0; i < MAKERS; i++) {
		CHECK_EQ(write(m[i].order[1], "q", 1), 1);
		void *r;
		CHECK_OK(pthread_join(mt[i], &r));
		CHECK(r == NULL);
		CHECK_OK(close(m[i].order[0]));
		CHECK_OK(close(m[i].order[1]));
		CHECK_OK(close(m[i].made[0]));
		CHECK_OK(close(m[i].made[1]));
	}
}

TCASE(clockjoin_bad_clock_einval)
{
	struct gate g = GATE_INIT;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, gate_then_return, &g));
	struct timespec dl = tc_abs_ms(CLOCK_MONOTONIC, 100);
	CHECK_EQ(pthread_clockjoin_np(t, NULL, CLOCK_PROCESS_CPUTIME_ID, &dl), EINVAL);
	gate_open(&g);
	CHECK_OK(pthread_join(t, NULL));
}

/* ------------------------------------------------------------------ */
/* detach                                                             */

TCASE(detach_running_thread)
{
	struct gate g = GATE_INIT;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, gate_then_return, &g));
	CHECK_OK(pthread_detach(t));
	pthread_attr_t a;
	CHECK_OK(pthread_getattr_np(t, &a));
	int ds;
	CHECK_OK(pthread_attr_getdetachstate(&a, &ds));
	CHECK_EQ(ds, PTHREAD_CREATE_DETACHED);
	pthread_attr_destroy(&a);
	gate_await_waiters(&g, 1);
	gate_open(&g);
	tc_msleep(20);
}

TCASE(detach_finished_thread)
{
	int done = 0;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_flag_and_return, &done));
	while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE))
		sched_yield();
	tc_msleep(20);
	CHECK_OK(pthread_detach(t)); /* frees it now */
}

static int detached_done;
static pthread_mutex_t detached_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t detached_c = PTHREAD_COND_INITIALIZER;

static void *detached_work(void *arg)
{
	volatile char scratch[2048]; /* touch some stack, as real code does */
	for (size_t i = 0; i < sizeof scratch; i += 512)
		scratch[i] = (char)(long)arg;
	pthread_mutex_lock(&detached_m);
	if (++detached_done % 1000 == 0)
		pthread_cond_signal(&detached_c);
	pthread_mutex_unlock(&detached_m);
	return NULL;
}

/* 200,000 detached threads in waves: what they used must come back, so
 * resident memory stops growing after the first waves. */
TCASE(detached_resources_come_back)
{
	enum { WAVE = 10000, WAVES = 20 };
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED));
	long base = 0, peak = 0;
	for (int w = 0; w < WAVES; w++) {
		for (int i = 0; i < WAVE; i++) {
			pthread_t t;
			CHECK_OK(pthread_create(&t, &a, detached_work, (void *)(long)i));
		}
		pthread_mutex_lock(&detached_m);
		struct timespec dl = tc_abs_ms(CLOCK_REALTIME, 20000);
		while (detached_done < (w + 1) * WAVE)
			CHECK(pthread_cond_timedwait(&detached_c, &detached_m, &dl) != ETIMEDOUT);
		pthread_mutex_unlock(&detached_m);
		tc_msleep(5);
		long rss = tc_rss_kib();
		if (w == 2)
			base = rss;
		if (rss > peak)
			peak = rss;
	}
	CHECK_EQ(detached_done, WAVE * WAVES);
	long end = tc_rss_kib();
	fprintf(stderr, "RSS: %ld KiB after wave 3, %ld KiB peak, %ld KiB at the end\n", base, peak,
	        end);
	/* The pools and the depot fill up over the first few dozen waves
	 * (about 25 MiB here); leaked stacks would add at least 40 MiB per
	 * wave, 700 MiB over the waves after the third. */
	/* ASan keeps a record per thread ever started (its destructors
	 * cannot run under user threads), so only the plain build can say */
	if (getenv("CAPRICE_TEST_SANITIZED"))
		return;
	if (end > base + 96 * 1024 || peak > base + 96 * 1024)
		TFAIL("RSS grew: %ld KiB after wave 3, %ld KiB peak, %ld KiB at the end",
		      base, peak, end);
	pthread_attr_destroy(&a);
}

/* A burst of threads alive at once, each with 32 KiB of its stack
 * written, then all gone: the shape of a server's connections. */
enum { BURST = 5000, BURST_TOUCH = 32 * 1024 };

static void *burst_body(void *arg)
{
	volatile char scratch[BURST_TOUCH];
	for (size_t i = 0; i < sizeof scratch; i += 1024)
		scratch[i] = 1;
	gate_wait(arg);
	return (void *)(long)scratch[0];
}

static void burst(void)
{
	static pthread_t t[BURST];
	struct gate g = GATE_INIT;
	for (int i = 0; i < BURST; i++)
		CHECK_OK(pthread_create(&t[i], NULL, burst_body, &g));
	gate_await_waiters(&g, BURST);
	gate_open(&g);
	for (int i = 0; i < BURST; i++)
		CHECK_OK(pthread_join(t[i], NULL));
}

/* A burst that comes back soon finds its stacks as it left them: no page
 * faults to commit them again (giving them back at each thread's exit
 * made the second burst fault in 8 pages a stack past the first 1,000). */
TCASE(stacks_of_a_burst_come_back_committed)
{
	burst();
	long before = tc_minor_faults();
	burst();
	long faults = tc_minor_faults() - before;
	fprintf(stderr, "second burst of %d threads: %ld page faults\n", BURST, faults);
	/* ASan's shadow of each stack faults in again as its frames are
	 * poisoned and unpoisoned: only the plain build can say */
	if (getenv("CAPRICE_TEST_SANITIZED"))
		return;
	/* each thread's 32 KiB is 8 pages: 5,000 stacks given back would
	 * fault about 40,000 times, 4,000 of them about 32,000 */
	CHECK(faults < BURST);
}

/* ...but what stays unneeded goes back to the kernel within seconds:
 * all but the depot's 1,024 and the workers' pools (64 each). */
TCASE(stacks_left_idle_give_their_memory_back)
{
	long base = tc_rss_kib();
	burst();
	long after_burst = tc_rss_kib();
	/* what a stack of the burst holds, measured: its 32 KiB of scratch
	 * spans 9 pages, and its top holds the thread's record and frames
	 * (about 36 KiB here; counting 32 left the 16 MiB of slack 2 MiB) */
	long per_stack_kib = (after_burst - base) / BURST;
	if (per_stack_kib < BURST_TOUCH / 1024)
		per_stack_kib = BURST_TOUCH / 1024;
	long kept_kib = (1024 + 64 * (long)(caprice_worker_count() + caprice_spare_worker_count())) *
	                per_stack_kib;
	long bound = kept_kib + 16 * 1024;
	long now = tc_await_rss_within(base, bound, 5000);
	fprintf(stderr, "RSS %ld KiB before the burst, %ld KiB after (%ld KiB a stack), %ld KiB later\n",
	        base, after_burst, per_stack_kib, now);
	/* ASan keeps each thread's shadow and records (as in the case
	 * above); the decay ran under its eyes all the same */
	if (getenv("CAPRICE_TEST_SANITIZED"))
		return;
	if (now - base > bound)
		TFAIL("RSS still %ld KiB above where it was 5 s after the burst, expected %ld KiB "
		      "or less", now - base, bound);
}

/* ------------------------------------------------------------------ */
/* exit                                                               */

static void cleanup_note(void *arg)
{
	*(int *)arg = 1;
}

static void *exit_from_deep(void *arg)
{
	pthread_cleanup_push(cleanup_note, arg);
	if (arg)
		pthread_exit((void *)123);
	pthread_cleanup_pop(0);
	return (void *)0;
}

TCASE(pthread_exit_value)
{
	int noted = 0;
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, exit_from_deep, &noted));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 123);
	CHECK_EQ(noted, 1);
}

static void *slow_worker(void *arg)
{
	tc_msleep(100 + 20 * (long)arg);
	char line[32];
	snprintf(line, sizeof line, "worker %ld done\n", (long)arg);
	tc_say(line);
	return NULL;
}

static void at_exit_note(void)
{
	tc_say("atexit ran\n");
}

/* main calls pthread_exit while four threads still work: they finish, and
 * the process then exits 0 the ordinary way (atexit handlers run). */
TCASE(main_pthread_exit_waits_for_threads)
{
	if (tc_in_child()) {
		atexit(at_exit_note);
		for (long i = 0; i < 4; i++) {
			pthread_t t;
			CHECK_OK(pthread_create(&t, NULL, slow_worker, (void *)i));
		}
		pthread_exit(NULL);
	}
	struct child c;
	run_child("main_pthread_exit_waits_for_threads", NULL, &c);
	if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0)
		TFAIL("child status %#x, output:\n%s", c.status, c.out);
	for (int i = 0; i < 4; i++) {
		char line[32];
		snprintf(line, sizeof line, "worker %d done\n", i);
		if (!strstr(c.out, line))
			TFAIL("missing \"%s\" in child output:\n%s", line, c.out);
	}
	const char *ae = strstr(c.out, "atexit ran");
	CHECK(ae != NULL);
	CHECK(ae > strstr(c.out, "worker 3 done"));
	CHECK_EQ(count_substr(c.out, "atexit ran"), 1);
}

static void *exit_seven(void *arg)
{
	(void)arg;
	tc_msleep(50);
	exit(7);
}

/* exit() from a thread ends the whole process with that status. */
TCASE(exit_from_thread_ends_process)
{
	if (tc_in_child()) {
		atexit(at_exit_note);
		pthread_t t, busy;
		struct gate g = GATE_INIT;
		CHECK_OK(pthread_create(&busy, NULL, gate_then_return, &g));
		CHECK_OK(pthread_create(&t, NULL, exit_seven, NULL));
		pthread_join(t, NULL);
		tc_say("main continued\n");
		return;
	}
	struct child c;
	run_child("exit_from_thread_ends_process", NULL, &c);
	if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 7)
		TFAIL("child status %#x, want exit 7; output:\n%s", c.status, c.out);
	CHECK(strstr(c.out, "main continued") == NULL);
	CHECK(strstr(c.out, "atexit ran") != NULL);
}

static volatile unsigned never_stop = UINT_MAX;

static unsigned recurse(unsigned depth)
{
	volatile char pad[256];
	if (depth == never_stop)
		return 0;
	pad[0] = (char)depth;
	pad[255] = (char)depth;
	return recurse(depth + 1) + pad[0] + pad[255];
}

static void *overflow(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "deep-diver");
	return (void *)(long)recurse(0);
}

/* Overflowing a user thread's stack kills the process with SIGABRT and a
 * message naming the thread. */
TCASE(stack_overflow_reported)
{
	if (tc_in_child()) {
		pthread_attr_t a;
		CHECK_OK(pthread_attr_init(&a));
		CHECK_OK(pthread_attr_setstacksize(&a, 128 * 1024));
		pthread_t t;
		CHECK_OK(pthread_create(&t, &a, overflow, NULL));
		pthread_join(t, NULL);
		tc_say("survived the overflow\n");
		return;
	}
	struct child c;
	run_child("stack_overflow_reported", NULL, &c);
	if (!WIFSIGNALED(c.status) || WTERMSIG(c.status) != SIGABRT)
		TFAIL("child status %#x, want SIGABRT; output:\n%s", c.status, c.out);
	if (!strstr(c.out, "stack overflow") || !strstr(c.out, "deep-diver"))
		TFAIL("no stack overflow message naming deep-diver:\n%s", c.out);
	CHECK(strstr(c.out, "survived") == NULL);
}

/* The same with a default-sized stack, from the pools. */
TCASE(stack_overflow_reported_default_stack)
{
	if (tc_in_child()) {
		pthread_t t;
		CHECK_OK(pthread_create(&t, NULL, overflow, NULL));
		pthread_join(t, NULL);
		tc_say("survived the overflow\n");
		return;
	}
	struct child c;
	run_child("stack_overflow_reported_default_stack", NULL, &c);
	if (!WIFSIGNALED(c.status) || WTERMSIG(c.status) != SIGABRT)
		TFAIL("child status %#x, want SIGABRT; output:\n%s", c.status, c.out);
	if (!strstr(c.out, "stack overflow") || !strstr(c.out, "deep-diver"))
		TFAIL("no stack overflow message naming deep-diver:\n%s", c.out);
}

/* ------------------------------------------------------------------ */
/* attributes read back, names, identity extras                       */

static void *report_attr(void *arg)
{
	pthread_attr_t *out = arg;
	if (pthread_getattr_np(pthread_self(), out) != 0)
		return (void *)1;
	void *lo;
	size_t size;
	pthread_attr_getstack(out, &lo, &size);
	char here;
	/* our own frame must lie inside the reported stack */
	if ((char *)&here < (char *)lo || (char *)&here >= (char *)lo + size)
		return (void *)2;
	return NULL;
}

TCASE(getattr_reports_stack_size)
{
	size_t sizes[] = { 64 * 1024, 1024 * 1024, 3 * 1024 * 1024 };
	for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
		pthread_attr_t a, got;
		CHECK_OK(pthread_attr_init(&a));
		CHECK_OK(pthread_attr_setstacksize(&a, sizes[i]));
		pthread_t t;
		void *r;
		CHECK_OK(pthread_create(&t, &a, report_attr, &got));
		CHECK_OK(pthread_join(t, &r));
		CHECK_EQ((long)r, 0);
		size_t s;
		CHECK_OK(pthread_attr_getstacksize(&got, &s));
		CHECK_EQ(s, sizes[i]);
		int ds;
		CHECK_OK(pthread_attr_getdetachstate(&got, &ds));
		CHECK_EQ(ds, PTHREAD_CREATE_JOINABLE);
		pthread_attr_destroy(&a);
		pthread_attr_destroy(&got);
	}
}

TCASE(getattr_default_stack)
{
	pthread_attr_t got, def;
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, report_attr, &got));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
	CHECK_OK(pthread_attr_init(&def));
	size_t s, ds;
	CHECK_OK(pthread_attr_getstacksize(&got, &s));
	CHECK_OK(pthread_attr_getstacksize(&def, &ds));
	CHECK_EQ(s, ds);
	CHECK(s >= (size_t)PTHREAD_STACK_MIN);
	size_t guard;
	CHECK_OK(pthread_attr_getguardsize(&got, &guard));
	CHECK(guard > 0);
}

TCASE(getattr_main)
{
	pthread_attr_t a;
	CHECK_OK(pthread_getattr_np(pthread_self(), &a));
	void *lo;
	size_t size;
	CHECK_OK(pthread_attr_getstack(&a, &lo, &size));
	char here;
	CHECK(size > 0);
	CHECK((char *)&here >= (char *)lo && (char *)&here < (char *)lo + size);
}

static void *name_self(void *arg)
{
	(void)arg;
	if (pthread_setname_np(pthread_self(), "selfnamed") != 0)
		return (void *)1;
	char buf[16];
	if (pthread_getname_np(pthread_self(), buf, sizeof buf) != 0)
		return (void *)2;
	return (void *)(long)(strcmp(buf, "selfnamed") == 0 ? 0 : 3);
}

/* Runs fn in a new thread (its CHECKs end the process on failure). */
static void *call_fn(void *fn)
{
	((void (*)(void))fn)();
	return NULL;
}

static void run_in_thread(void (*fn)(void))
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, call_fn, (void *)fn));
	CHECK_OK(pthread_join(t, NULL));
}

static void own_name(void)
{
	char buf[16];
	CHECK_OK(pthread_getname_np(pthread_self(), buf, sizeof buf));
	CHECK_OK(pthread_setname_np(pthread_self(), "fifteen-chars-x")); /* 15: fits */
	CHECK_OK(pthread_getname_np(pthread_self(), buf, sizeof buf));
	CHECK(strcmp(buf, "fifteen-chars-x") == 0);
	CHECK_EQ(pthread_setname_np(pthread_self(), "sixteen-chars-xy"), ERANGE);
	CHECK_OK(pthread_getname_np(pthread_self(), buf, sizeof buf));
	CHECK(strcmp(buf, "fifteen-chars-x") == 0); /* unchanged */
	char small[4];
	CHECK_EQ(pthread_getname_np(pthread_self(), small, sizeof small), ERANGE);
}

TCASE(setname_getname)
{
	run_in_thread(own_name);

	char buf[16];
	struct gate g = GATE_INIT;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, gate_then_return, &g));
	CHECK_OK(pthread_setname_np(t, "other"));
	CHECK_OK(pthread_getname_np(t, buf, sizeof buf));
	CHECK(strcmp(buf, "other") == 0);
	CHECK_OK(pthread_setname_np(t, ""));
	CHECK_OK(pthread_getname_np(t, buf, sizeof buf));
	CHECK(strcmp(buf, "") == 0);
	gate_open(&g);
	CHECK_OK(pthread_join(t, NULL));

	void *r;
	CHECK_OK(pthread_create(&t, NULL, name_self, NULL));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
}

static void *kill_self_0(void *arg)
{
	(void)arg;
	return (void *)(long)pthread_kill(pthread_self(), 0);
}

TCASE(kill_sig0_and_bad_signal)
{
	struct gate g = GATE_INIT;
	pthread_t t, t2;
	CHECK_OK(pthread_create(&t, NULL, gate_then_return, &g));
	CHECK_OK(pthread_kill(t, 0));
	void *r;
	CHECK_OK(pthread_create(&t2, NULL, kill_self_0, NULL));
	CHECK_OK(pthread_join(t2, &r));
	CHECK_EQ((long)r, 0);
	CHECK_EQ(pthread_kill(t, -1), EINVAL);
	CHECK_EQ(pthread_kill(t, 100000), EINVAL);
	gate_open(&g);
	CHECK_OK(pthread_join(t, NULL));
}

static void sched_params_of_self(void)
{
	struct sched_param p = { .sched_priority = 0 };
	int pol;
	CHECK_OK(pthread_getschedparam(pthread_self(), &pol, &p));
	CHECK_EQ(pol, SCHED_OTHER);
	CHECK_EQ(p.sched_priority, 0);

	p.sched_priority = 10;
	CHECK_OK(pthread_setschedparam(pthread_self(), SCHED_FIFO, &p));
	p.sched_priority = -5;
	CHECK_OK(pthread_getschedparam(pthread_self(), &pol, &p));
	CHECK_EQ(pol, SCHED_FIFO);
	CHECK_EQ(p.sched_priority, 10);
	CHECK_OK(pthread_setschedprio(pthread_self(), 20));
	CHECK_OK(pthread_getschedparam(pthread_self(), &pol, &p));
	CHECK_EQ(p.sched_priority, 20);

	/* errors leave things as they were */
	p.sched_priority = 0;
	CHECK_EQ(pthread_setschedparam(pthread_self(), SCHED_FIFO, &p), EINVAL);
	p.sched_priority = 1000;
	CHECK_EQ(pthread_setschedparam(pthread_self(), SCHED_RR, &p), EINVAL);
	p.sched_priority = 1;
	CHECK_EQ(pthread_setschedparam(pthread_self(), 12345, &p), EINVAL);
	CHECK_EQ(pthread_setschedprio(pthread_self(), 1000), EINVAL);
	CHECK_OK(pthread_getschedparam(pthread_self(), &pol, &p));
	CHECK_EQ(pol, SCHED_FIFO);
	CHECK_EQ(p.sched_priority, 20);

	/* a new thread inherits them by default */
	int seen[2] = { -1, -1 };
	pthread_t t;
	void *r;
	CHECK_OK(pthread_create(&t, NULL, tc_report_sched, seen));
	CHECK_OK(pthread_join(t, &r));
	CHECK_EQ((long)r, 0);
	CHECK_EQ(seen[0], SCHED_FIFO);
	CHECK_EQ(seen[1], 20);

	p.sched_priority = 0;
	CHECK_OK(pthread_setschedparam(pthread_self(), SCHED_OTHER, &p));
}

TCASE(sched_params_accepted_and_reported)
{
	run_in_thread(sched_params_of_self);
}

/* Every call that takes a pthread_t works on main's own handle. */
TCASE(main_handle_is_usable)
{
	pthread_t me = pthread_self();
	CHECK_OK(pthread_kill(me, 0));
	struct caprice_thread_stats ts;
	CHECK_OK(caprice_thread_stats(me, &ts));
	CHECK_EQ(ts.id, 1);
	CHECK(ts.worker >= 0 && ts.worker < caprice_worker_count());
	own_name();
	sched_params_of_self();
	pthread_attr_t a;
	CHECK_OK(pthread_getattr_np(me, &a));
	pthread_attr_destroy(&a);
}

TCASE(concurrency_hint)
{
	CHECK_EQ(pthread_getconcurrency(), 0);
	CHECK_OK(pthread_setconcurrency(4));
	CHECK_EQ(pthread_getconcurrency(), 4);
	CHECK_EQ(pthread_setconcurrency(-1), EINVAL);
	CHECK_EQ(pthread_getconcurrency(), 4);
}

static void *set_flag_late(void *arg)
{
	tc_msleep(10);
	__atomic_store_n((int *)arg, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* A thread spinning with sched_yield lets the others run (on one worker
 * nothing else could). */
TCASE(yield_lets_others_run)
{
	int flag = 0;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_flag_late, &flag));
	uint64_t give_up = tc_now_ns() + 5000000000ull;
	long spins = 0;
	while (!__atomic_load_n(&flag, __ATOMIC_ACQUIRE)) {
		CHECK_OK(sched_yield());
		CHECK(tc_now_ns() < give_up);
		spins++;
	}
	CHECK(spins > 0);
	CHECK_OK(pthread_join(t, NULL));
}

TCASE(yield_lets_others_run_one_worker)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	int flag = 0;
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, set_flag_late, &flag));
	uint64_t give_up = tc_now_ns() + 5000000000ull;
	while (!__atomic_load_n(&flag, __ATOMIC_ACQUIRE)) {
		sched_yield();
		CHECK(tc_now_ns() < give_up);
	}
	CHECK_OK(pthread_join(t, NULL));
}

/* ------------------------------------------------------------------ */
/* workers and caprice_* statistics                                   */

static unsigned worker_mask;

static void *spread_work(void *arg)
{
	(void)arg;
	uint64_t end = tc_now_ns() + 200000000ull;
	volatile uint64_t x = 0;
	while (tc_now_ns() < end) {
		for (int i = 0; i < 10000; i++)
			x += (uint64_t)i;
		int w = caprice_worker_index();
		if (w >= 0 && w < 32)
			__atomic_or_fetch(&worker_mask, 1u << w, __ATOMIC_RELAXED);
		sched_yield();
	}
	return NULL;
}

TCASE(threads_spread_over_workers)
{
	int n = caprice_worker_count();
	CHECK(n >= 1);
	const char *env = getenv("CAPRICE_WORKERS");
	if (env && *env)
		CHECK_EQ(n, atoi(env));
	else
		CHECK_EQ(n, sysconf(_SC_NPROCESSORS_ONLN));
	int me = caprice_worker_index();
	CHECK(me >= 0 && me < n);
	enum { T = 8 };
	pthread_t t[T];
	for (int i = 0; i < T; i++)
		CHECK_OK(pthread_create(&t[i], NULL, spread_work, NULL));
	for (int i = 0; i < T; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	unsigned mask = __atomic_load_n(&worker_mask, __ATOMIC_RELAXED);
	CHECK(mask != 0);
	CHECK((mask >> (n < 32 ? n : 32)) == 0 || n >= 32); /* no index out of range */
	if (n > 1 && __builtin_popcount(mask) < 2)
		TFAIL("%d workers, but all threads ran on worker mask %#x", n, mask);
}

TCASE(caprice_stats)
{
	struct caprice_thread_stats ts;
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setstacksize(&a, 512 * 1024));
	CHECK_OK(pthread_attr_setguardsize(&a, 16384));
	struct gate g = GATE_INIT;
	pthread_t t;
	CHECK_OK(pthread_create(&t, &a, gate_then_return, &g));
	gate_await_waiters(&g, 1);
	CHECK_OK(caprice_thread_stats(t, &ts));
	CHECK(ts.id > 1);
	CHECK_EQ(ts.stack_size, 512 * 1024);
	CHECK_EQ(ts.guard_size, 16384);
	CHECK(ts.switches >= 1);
	CHECK(ts.worker >= 0 && ts.worker < caprice_worker_count());
	uint64_t id1 = ts.id;
	pthread_t t2;
	CHECK_OK(pthread_create(&t2, NULL, plus_one, NULL));
	CHECK_OK(caprice_thread_stats(t2, &ts));
	CHECK(ts.id > id1); /* creation order */
	CHECK_OK(pthread_join(t2, NULL));
	gate_open(&g);
	CHECK_OK(pthread_join(t, NULL));

	uint64_t total = 0;
	for (int w = 0; w < caprice_worker_count(); w++) {
		struct caprice_worker_stats ws;
		CHECK_OK(caprice_worker_stats(w, &ws));
		total += ws.switches;
	}
	CHECK(total >= 3);
	struct caprice_worker_stats ws;
	CHECK_EQ(caprice_worker_stats(-1, &ws), EINVAL);
	/* the spare workers follow the regular ones */
	int all = caprice_worker_count() + caprice_spare_worker_count();
	for (int w = caprice_worker_count(); w < all; w++)
		CHECK_OK(caprice_worker_stats(w, &ws));
	CHECK_EQ(caprice_worker_stats(all, &ws), EINVAL);
}

/* ------------------------------------------------------------------ */
/* running out                                                        */

static long vm_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	CHECK(f != NULL);
	long size = 0;
	CHECK_EQ(fscanf(f, "%ld", &size), 1);
	fclose(f);
	return size * (sysconf(_SC_PAGESIZE) / 1024);
}

/* With address space capped, creating threads with big stacks ends in
 * EAGAIN; freeing some makes room again. */
TCASE(eagain_when_address_space_runs_out)
{
	enum { MAXT = 64 };
	const size_t stack = 64u << 20;
	struct gate g = GATE_INIT;
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setstacksize(&a, stack));
	/* warm up whatever a first create or join allocates */
	pthread_t w;
	CHECK_OK(pthread_create(&w, &a, plus_one, NULL));
	CHECK_OK(pthread_join(w, NULL));

	/* workers map their malloc arenas as they start up: let them settle,
	 * or they would take or give back room under our feet */
	long vm = vm_kib(), prev;
	uint64_t give_up = tc_now_ns() + 3000000000ull;
	do {
		prev = vm;
		tc_msleep(30);
		vm = vm_kib();
	} while (vm != prev && tc_now_ns() < give_up);

	struct rlimit old, lim;
	CHECK(getrlimit(RLIMIT_AS, &old) == 0);
	lim = old;
	lim.rlim_cur = (rlim_t)(vm + 512 * 1024) * 1024; /* ~8 stacks more */
	CHECK(setrlimit(RLIMIT_AS, &lim) == 0);

	pthread_t t[MAXT];
	int n = 0, e = 0;
	while (n < MAXT) {
		e = pthread_create(&t[n], &a, gate_then_return, &g);
		if (e)
			break;
		n++;
	}
	fprintf(stderr, "%d threads with %zu MiB stacks before EAGAIN\n", n, stack >> 20);
	CHECK_EQ(e, EAGAIN);
	CHECK(n >= 2);
	CHECK(n < MAXT);
	CHECK_EQ(pthread_create(&w, &a, gate_then_return, &g), EAGAIN); /* still */

	/* free two and creation works again */
	gate_await_waiters(&g, n);
	gate_open(&g);
	CHECK_OK(pthread_join(t[n - 1], NULL));
	CHECK_OK(pthread_join(t[n - 2], NULL));
	n -= 2;
	CHECK_OK(pthread_create(&w, &a, plus_one, NULL));
	CHECK_OK(pthread_join(w, NULL));
	for (int i = 0; i < n; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK(setrlimit(RLIMIT_AS, &old) == 0);
	pthread_attr_destroy(&a);
}

/* ---- CPU-time clocks: the user thread's, not its worker's ---- */

static uint64_t cpu_now(clockid_t c)
{
	struct timespec ts;
	CHECK_EQ(clock_gettime(c, &ts), 0);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static volatile int spin_stop;
static uint64_t spinner_cpu_ns;

static void *cpu_spinner(void *arg)
{
	(void)arg;
	uint64_t c0 = cpu_now(CLOCK_THREAD_CPUTIME_ID);
	while (!spin_stop)
		sched_yield(); /* one worker: the sleeper's timer must get its turn */
	spinner_cpu_ns = cpu_now(CLOCK_THREAD_CPUTIME_ID) - c0;
	return NULL;
}

TCASE(thread_cpu_clock_counts_the_thread_not_its_worker)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	pthread_t t = tc_spawn(cpu_spinner, NULL);
	tc_msleep(10);
	uint64_t w0 = tc_now_ns(), c0 = cpu_now(CLOCK_THREAD_CPUTIME_ID);
	tc_msleep(200); /* the spinner has the worker meanwhile */
	uint64_t c1 = cpu_now(CLOCK_THREAD_CPUTIME_ID), w1 = tc_now_ns();
	spin_stop = 1;
	tc_join(t);
	printf("sleeper: %.1f ms of CPU in %.1f ms; spinner: %.1f ms of CPU\n", (c1 - c0) / 1e6,
	       (w1 - w0) / 1e6, spinner_cpu_ns / 1e6);
	/* the kernel's clock of the shared worker would say ~200 ms */
	CHECK(c1 - c0 < 50 * 1000000ull);
	CHECK(spinner_cpu_ns > 100 * 1000000ull);
}

static void *burn_then_wait(void *arg)
{
	pthread_barrier_t *b = arg;
	uint64_t c0 = cpu_now(CLOCK_THREAD_CPUTIME_ID);
	while (cpu_now(CLOCK_THREAD_CPUTIME_ID) - c0 < 60 * 1000000ull)
		;
	pthread_barrier_wait(b);
	pthread_barrier_wait(b);
	return NULL;
}

TCASE(pthread_getcpuclockid_reads_another_thread)
{
	pthread_barrier_t b;
	CHECK_OK(pthread_barrier_init(&b, NULL, 2));
	pthread_t t = tc_spawn(burn_then_wait, &b);
	clockid_t c;
	CHECK_OK(pthread_getcpuclockid(t, &c));
	pthread_barrier_wait(&b);
	uint64_t ns = cpu_now(c);
	struct timespec res;
	CHECK_EQ(clock_getres(c, &res), 0);
	pthread_barrier_wait(&b);
	tc_join(t);
	printf("the other thread ran %.1f ms\n", ns / 1e6);
	CHECK(ns >= 55 * 1000000ull);
	/* a finished thread's clock names nothing */
	struct timespec ts;
	errno = 0;
	CHECK_EQ(clock_gettime(c, &ts), -1);
	CHECK_EQ(errno, EINVAL);
	clockid_t self;
	CHECK_OK(pthread_getcpuclockid(pthread_self(), &self));
	CHECK(cpu_now(self) <= cpu_now(CLOCK_THREAD_CPUTIME_ID) + 1000000);
	pthread_barrier_destroy(&b);
}

/* sched_setscheduler(0, ...) sets the calling user thread's policy, as
 * pthread_setschedparam does, and leaves its worker's kernel scheduling
 * (and so every other thread on that worker) alone */
static pthread_barrier_t policy_barrier;

static void *report_policy(void *arg)
{
	pthread_barrier_wait(&policy_barrier); /* made before main's change */
	pthread_barrier_wait(&policy_barrier);
	*(int *)arg = sched_getscheduler(0);
	return NULL;
}

TCASE(sched_setscheduler_of_pid_0_is_the_user_threads)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	int other = -1;
	CHECK_OK(pthread_barrier_init(&policy_barrier, NULL, 2));
	pthread_t t = tc_spawn(report_policy, &other);
	pthread_barrier_wait(&policy_barrier);
	struct sched_param p = { .sched_priority = 0 };
	CHECK_EQ(sched_setscheduler(0, SCHED_BATCH, &p), 0);
	CHECK_EQ(sched_getscheduler(0), SCHED_BATCH);
	int policy;
	struct sched_param got;
	CHECK_OK(pthread_getschedparam(pthread_self(), &policy, &got));
	CHECK_EQ(policy, SCHED_BATCH);
	/* the worker's kernel thread is unchanged */
	CHECK_EQ(syscall(SYS_sched_getscheduler, 0), SCHED_OTHER);
	/* another thread on the same worker keeps its own */
	pthread_barrier_wait(&policy_barrier);
	tc_join(t);
	CHECK_EQ(other, SCHED_OTHER);
	pthread_barrier_destroy(&policy_barrier);
	CHECK_EQ(sched_getparam(0, &got), 0);
	CHECK_EQ(got.sched_priority, 0);
	errno = 0;
	p.sched_priority = 5; /* out of SCHED_BATCH's range */
	CHECK_EQ(sched_setparam(0, &p), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(sched_setscheduler(0, SCHED_OTHER, &(struct sched_param){ 0 }), 0);
	/* another process's goes to the kernel */
	CHECK_EQ(sched_getscheduler(getppid()), SCHED_OTHER);
}
