/* policy.c: the order in which runnable threads run (sched/policy.c):
 * real-time priorities on the run queue and in wait queues, and the 2D
 * policy's resource-aware admission (descriptors and memory), its
 * batching by location, and its aging bounds. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

/* ---- priorities ---- */

static int order[16];
static int order_len;

static void record(int tag)
{
	order[__atomic_fetch_add(&order_len, 1, __ATOMIC_RELAXED)] = tag;
}

static void check_order(const int *want, int n, const char *what)
{
	CHECK_EQ(order_len, n);
	char got[128] = "", exp[128] = "";
	for (int i = 0; i < n; i++) {
		snprintf(got + strlen(got), sizeof got - strlen(got), " %d", order[i]);
		snprintf(exp + strlen(exp), sizeof exp - strlen(exp), " %d", want[i]);
	}
	if (strcmp(got, exp) != 0)
		TFAIL("%s: ran in the order%s, wanted%s", what, got, exp);
}

static pthread_t spawn_at(int policy, int prio, void *(*fn)(void *), long tag)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	CHECK_OK(pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED));
	CHECK_OK(pthread_attr_setschedpolicy(&a, policy));
	struct sched_param p = { .sched_priority = prio };
	CHECK_OK(pthread_attr_setschedparam(&a, &p));
	pthread_t t;
	CHECK_OK(pthread_create(&t, &a, fn, (void *)tag));
	CHECK_OK(pthread_attr_destroy(&a));
	return t;
}

static void *record_tag(void *arg)
{
	record((int)(long)arg);
	return NULL;
}

static void set_own(int policy, int prio)
{
	struct sched_param p = { .sched_priority = prio };
	CHECK_OK(pthread_setschedparam(pthread_self(), policy, &p));
}

/* Threads made while their maker runs on one worker run in priority
 * order once it waits, FIFO within a priority: what NPTL does on one CPU
 * with SCHED_FIFO threads made by a thread of higher priority. */
TCASE(priorities_order_the_run_queue)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	set_own(SCHED_FIFO, 90);
	pthread_t t[6];
	t[0] = spawn_at(SCHED_OTHER, 0, record_tag, 1);
	t[1] = spawn_at(SCHED_FIFO, 10, record_tag, 10);
	t[2] = spawn_at(SCHED_RR, 30, record_tag, 30);
	t[3] = spawn_at(SCHED_FIFO, 20, record_tag, 20);
	t[4] = spawn_at(SCHED_OTHER, 0, record_tag, 2);
	t[5] = spawn_at(SCHED_FIFO, 30, record_tag, 31);
	for (int i = 0; i < 6; i++)
		tc_join(t[i]);
	const int want[] = { 30, 31, 20, 10, 1, 2 };
	check_order(want, 6, "threads of priorities 0, 10, 30, 20, 0, 30");
	set_own(SCHED_OTHER, 0);
}

/* A thread that lowers its priority below a queued thread's lets it run
 * at once, as the kernel would preempt it. */
TCASE(lowering_ones_priority_lets_a_higher_thread_run)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	set_own(SCHED_FIFO, 50);
	pthread_t t = spawn_at(SCHED_FIFO, 40, record_tag, 40);
	record(50);
	set_own(SCHED_FIFO, 30); /* 40 runs here */
	record(30);
	tc_join(t);
	const int want[] = { 50, 40, 30 };
	check_order(want, 3, "main at 50, a thread at 40, main down to 30");
	set_own(SCHED_OTHER, 0);
}

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static sem_t s;
static int go;

static void *lock_and_record(void *arg)
{
	CHECK_OK(pthread_mutex_lock(&m));
	record((int)(long)arg);
	CHECK_OK(pthread_mutex_unlock(&m));
	return NULL;
}

static void *wait_cond_and_record(void *arg)
{
	CHECK_OK(pthread_mutex_lock(&m));
	while (!go)
		CHECK_OK(pthread_cond_wait(&c, &m));
	go--;
	record((int)(long)arg);
	CHECK_OK(pthread_mutex_unlock(&m));
	return NULL;
}

static void *wait_sem_and_record(void *arg)
{
	while (sem_wait(&s) != 0)
		CHECK_EQ(errno, EINTR);
	record((int)(long)arg);
	return NULL;
}

/* Waiters queue in the order 5, 50, 0, 20 (each made once the one before
 * waits); one wakeup at a time reaches them in priority order. */
static void waiters_in_priority_order(void *(*fn)(void *), void (*wake_one)(void),
                                      const char *what)
{
	static const int prios[] = { 5, 50, 0, 20 };
	pthread_t t[4];
	order_len = 0;
	for (int i = 0; i < 4; i++) {
		t[i] = spawn_at(prios[i] ? SCHED_FIFO : SCHED_OTHER, prios[i], fn, prios[i]);
		tc_msleep(5); /* it runs and waits */
	}
	CHECK_EQ(order_len, 0);
	for (int i = 0; i < 4; i++) {
		wake_one();
		tc_msleep(5); /* the woken one runs and records */
	}
	for (int i = 0; i < 4; i++)
		tc_join(t[i]);
	const int want[] = { 50, 20, 5, 0 };
	check_order(want, 4, what);
}

static void unlock_m(void)
{
	static int first = 1;
	if (first) {
		first = 0;
		CHECK_OK(pthread_mutex_unlock(&m));
	}
}

static void signal_c(void)
{
	CHECK_OK(pthread_mutex_lock(&m));
	go++;
	CHECK_OK(pthread_cond_signal(&c));
	CHECK_OK(pthread_mutex_unlock(&m));
}

static void post_s(void)
{
	CHECK_OK(sem_post(&s));
}

TCASE(wait_queues_wake_the_highest_priority_first)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	/* a mutex: all four wait for main's unlock; the one it hands to
	 * unlocks to the next */
	CHECK_OK(pthread_mutex_lock(&m));
	waiters_in_priority_order(lock_and_record, unlock_m, "mutex waiters");
	waiters_in_priority_order(wait_cond_and_record, signal_c, "condition variable waiters");
	CHECK_OK(sem_init(&s, 0, 0));
	waiters_in_priority_order(wait_sem_and_record, post_s, "semaphore waiters");
	CHECK_OK(sem_destroy(&s));
}

/* ---- priority protocols ---- */

/* The textbook inversion, on one worker: a thread at 10 holds a mutex a
 * thread at 30 waits for, while one at 20 keeps yielding.  With
 * PTHREAD_PRIO_INHERIT (the holder runs at 30 once the waiter blocks)
 * or PTHREAD_PRIO_PROTECT with a ceiling of 40 (it runs at 40 from its
 * lock), the holder finishes first, then the thread at 30, then the one
 * at 20; with no protocol, the thread at 20 keeps the holder, and so
 * the thread at 30, off the worker until it is done. */
/* (m, re-made with each protocol) */
static sem_t holder_has, holder_go;

static void *hold_then_release(void *arg)
{
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_OK(sem_post(&holder_has));
	CHECK_OK(sem_wait(&holder_go));
	for (int i = 0; i < 3; i++)
		sched_yield();
	record((int)(long)arg);
	CHECK_OK(pthread_mutex_unlock(&m));
	return NULL;
}

static void *yield_a_while(void *arg)
{
	for (int i = 0; i < 50; i++)
		sched_yield();
	record((int)(long)arg);
	return NULL;
}

static void inversion(int protocol, const int want[3], const char *what)
{
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	CHECK_OK(pthread_mutexattr_setprotocol(&a, protocol));
	if (protocol == PTHREAD_PRIO_PROTECT)
		CHECK_OK(pthread_mutexattr_setprioceiling(&a, 40));
	CHECK_OK(pthread_mutex_init(&m, &a));
	CHECK_OK(pthread_mutexattr_destroy(&a));
	CHECK_OK(sem_init(&holder_has, 0, 0));
	CHECK_OK(sem_init(&holder_go, 0, 0));
	set_own(SCHED_FIFO, 90);
	pthread_t low = spawn_at(SCHED_FIFO, 10, hold_then_release, 10);
	CHECK_OK(sem_wait(&holder_has));
	pthread_t high = spawn_at(SCHED_FIFO, 30, lock_and_record, 30);
	pthread_t mid = spawn_at(SCHED_FIFO, 20, yield_a_while, 20);
	CHECK_OK(sem_post(&holder_go));
	tc_join(high);
	tc_join(mid);
	tc_join(low);
	check_order(want, 3, what);
	set_own(SCHED_OTHER, 0);
	CHECK_OK(pthread_mutex_destroy(&m));
}

TCASE(priority_inheritance_lends_the_waiters_priority_to_the_holder)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	const int want[] = { 10, 30, 20 };
	inversion(PTHREAD_PRIO_INHERIT, want, "PTHREAD_PRIO_INHERIT: holder 10, waiter 30, yielder 20");
}

TCASE(priority_ceiling_raises_the_holder_to_the_ceiling)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	const int want[] = { 10, 30, 20 };
	inversion(PTHREAD_PRIO_PROTECT, want, "PTHREAD_PRIO_PROTECT at 40: holder 10, waiter 30, yielder 20");
	/* a thread above the ceiling may not lock it (EINVAL, as POSIX says) */
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	CHECK_OK(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_PROTECT));
	CHECK_OK(pthread_mutexattr_setprioceiling(&a, 40));
	CHECK_OK(pthread_mutex_init(&m, &a));
	set_own(SCHED_FIFO, 50);
	CHECK_EQ(pthread_mutex_lock(&m), EINVAL);
	set_own(SCHED_FIFO, 40);
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_OK(pthread_mutex_unlock(&m));
	set_own(SCHED_OTHER, 0);
}

/* Without a protocol the inversion happens, as on NPTL: what makes the
 * two cases above worth having. */
TCASE(without_a_protocol_the_middle_thread_runs_first)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	const int want[] = { 20, 10, 30 };
	inversion(PTHREAD_PRIO_NONE, want, "no protocol: holder 10, waiter 30, yielder 20");
}

TCASE(priorities_are_reported_and_checked)
{
	struct sched_param p = { .sched_priority = 100 };
	CHECK_EQ(pthread_setschedparam(pthread_self(), SCHED_FIFO, &p), EINVAL);
	p.sched_priority = 7;
	CHECK_OK(pthread_setschedparam(pthread_self(), SCHED_RR, &p));
	int pol = -1;
	struct sched_param got;
	CHECK_OK(pthread_getschedparam(pthread_self(), &pol, &got));
	CHECK_EQ(pol, SCHED_RR);
	CHECK_EQ(got.sched_priority, 7);
	CHECK_OK(pthread_setschedprio(pthread_self(), 9));
	CHECK_OK(pthread_getschedparam(pthread_self(), &pol, &got));
	CHECK_EQ(got.sched_priority, 9);
	set_own(SCHED_OTHER, 0);
}

/* ---- the 2D policy ---- */

/* `meson test` sets MALLOC_PERTURB_, and glibc then fills every buffer on
 * malloc and on free: a 4 MiB buffer's malloc takes milliseconds before
 * its bytes are counted, so admission, which judges by the bytes counted,
 * lets more requesters through meanwhile (memory admission held 76 to 80
 * MiB against its 64 MiB budget with MALLOC_PERTURB_=119 on a21cb55).
 * The cases measure the policy, not glibc's debugging aid. */
#define NO_PERTURB "MALLOC_PERTURB_=0"

/* In the case's own process: runs the case again in a child, on one
 * worker under CAPRICE_SCHED=2d, passes its output on, fails if it
 * failed, and returns true (the caller returns).  In that child: false,
 * and the body goes on. */
static bool rerun_under_2d(void)
{
	if (tc_in_child())
		return false;
	char out[4096];
	const char *env[] = { "CAPRICE_WORKERS=1", "CAPRICE_SCHED=2d", NO_PERTURB, NULL };
	int st = tc_run_self(tcase_current(), env, out, sizeof out, 60);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		TFAIL("the 2d run failed (status %#x):\n%s", st, out);
	fputs(out, stdout);
	return true;
}

/* The same, under 2d and then under fifo, with `extra` (or NULL) in the
 * environment too: the cases whose fifo run shows what 2d changes. */
static bool rerun_under_2d_and_fifo(const char *extra)
{
	if (tc_in_child())
		return false;
	const char *scheds[] = { "CAPRICE_SCHED=2d", "CAPRICE_SCHED=fifo" };
	for (int i = 0; i < 2; i++) {
		char out[4096];
		const char *env[] = { "CAPRICE_WORKERS=1", scheds[i], NO_PERTURB, extra, NULL };
		int st = tc_run_self(tcase_current(), env, out, sizeof out, 60);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			TFAIL("the %s run failed (status %#x):\n%s", scheds[i], st, out);
		fputs(out, stdout);
	}
	return true;
}

static long held_now(void)
{
	long n = 0;
	for (int i = 0; i < caprice_worker_count(); i++) {
		struct caprice_worker_stats st;
		CHECK_OK(caprice_worker_stats(i, &st));
		n += st.held_now;
	}
	return n;
}

static uint64_t stat_sum(int deferred)
{
	uint64_t n = 0;
	for (int i = 0; i < caprice_worker_count(); i++) {
		struct caprice_worker_stats st;
		CHECK_OK(caprice_worker_stats(i, &st));
		n += deferred ? st.deferred : st.held;
	}
	return n;
}

enum { LIMIT = 64, OPENS = 150 };
static struct {
	pthread_mutex_t lock;
	int fds[LIMIT];
	int nfds;
	int emfile;          /* opens that failed with EMFILE */
	int opened;
	int done;
	uint64_t released_at; /* when the releaser last closed some */
	uint64_t worst_resume_ns; /* from such a release to the next open */
	bool raw;            /* open and close through syscall(), as Knot's
	                        openat2 does */
} A = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int open_null(void)
{
	return A.raw ? (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC)
	             : open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static int close_fd(int fd)
{
	return A.raw ? (int)syscall(SYS_close, fd) : close(fd);
}

/* Opens a descriptor after each park: every run from its blocking point
 * takes one, so the graph predicts it acquires. */
static void *acquirer(void *arg)
{
	(void)arg;
	while (A.opened < OPENS) {
		usleep(300);
		int fd = open_null();
		pthread_mutex_lock(&A.lock);
		if (fd < 0) {
			CHECK_EQ(errno, EMFILE);
			A.emfile++;
		} else {
			A.fds[A.nfds++] = fd;
			A.opened++;
			if (A.released_at) {
				uint64_t took = tc_now_ns() - A.released_at;
				if (took > A.worst_resume_ns)
					A.worst_resume_ns = took;
				A.released_at = 0;
			}
		}
		pthread_mutex_unlock(&A.lock);
	}
	__atomic_store_n(&A.done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Closes half of what the acquirer holds whenever it is held back (2d)
 * or has met EMFILE (fifo). */
static void *releaser(void *arg)
{
	(void)arg;
	int seen_emfile = 0;
	while (!__atomic_load_n(&A.done, __ATOMIC_ACQUIRE)) {
		usleep(1000);
		pthread_mutex_lock(&A.lock);
		bool act = A.emfile > seen_emfile || (held_now() > 0 && A.nfds > 0);
		seen_emfile = A.emfile;
		if (act) {
			int keep = A.nfds / 2;
			while (A.nfds > keep)
				CHECK_OK(close_fd(A.fds[--A.nfds]));
			A.released_at = tc_now_ns();
		}
		pthread_mutex_unlock(&A.lock);
	}
	return NULL;
}

/* Under CAPRICE_SCHED=2d with RLIMIT_NOFILE at 64: a thread whose every
 * run opens a descriptor is held back once fewer than 8 are left, and
 * goes again as soon as another thread closes some: it never meets
 * EMFILE.  The same program under fifo does, which is what makes the
 * case worth having. */
TCASE(admission_holds_an_acquirer_until_descriptors_recover)
{
	if (rerun_under_2d_and_fifo(NULL))
		return;
	bool two_d = strcmp(getenv("CAPRICE_SCHED"), "2d") == 0;
	struct rlimit rl = { LIMIT, LIMIT };
	CHECK_OK(setrlimit(RLIMIT_NOFILE, &rl) == 0 ? 0 : errno);
	tc_msleep(150); /* the monitor reads the new limit every 50 ms */
	pthread_t a = tc_spawn(acquirer, NULL), r = tc_spawn(releaser, NULL);
	tc_join_within(a, 30000, "the acquirer");
	tc_join(r);
	printf("%s: %d opened, %d EMFILE, %llu held, slowest resume %.1f ms\n",
	       two_d ? "2d" : "fifo", A.opened, A.emfile, (unsigned long long)stat_sum(0),
	       A.worst_resume_ns / 1e6);
	if (two_d) {
		if (A.emfile)
			TFAIL("2d: the acquirer met EMFILE %d times", A.emfile);
		CHECK(stat_sum(0) > 0);
		/* let go because the descriptors came back, not by aging
		 * (CP_HELD_MAX_NS, 200 ms) */
		if (A.worst_resume_ns > 100000000ull)
			TFAIL("2d: a held acquirer resumed %.1f ms after descriptors came back",
			      A.worst_resume_ns / 1e6);
	} else {
		CHECK(A.emfile > 0);
		CHECK_EQ(stat_sum(0), 0);
	}
}

/* The same under 2d with descriptors made and closed through the
 * program's own syscall(): libthread's syscall() counts them as open()
 * and close() do, else the count would never near the limit and the
 * acquirer would meet EMFILE. */
TCASE(descriptors_made_through_syscall_count_for_admission)
{
	if (rerun_under_2d())
		return;
	A.raw = true;
	struct rlimit rl = { LIMIT, LIMIT };
	CHECK_OK(setrlimit(RLIMIT_NOFILE, &rl) == 0 ? 0 : errno);
	tc_msleep(150); /* the monitor reads the new limit every 50 ms */
	pthread_t a = tc_spawn(acquirer, NULL), r = tc_spawn(releaser, NULL);
	tc_join_within(a, 30000, "the acquirer");
	tc_join(r);
	printf("2d, syscall(): %d opened, %d EMFILE, %llu held\n", A.opened, A.emfile,
	       (unsigned long long)stat_sum(0));
	if (A.emfile)
		TFAIL("the acquirer met EMFILE %d times", A.emfile);
	CHECK(stat_sum(0) > 0);
}

/* ---- memory admission ---- */

/* Thread-per-request with a transient 4 MiB buffer: each requester waits
 * for its request (a sleep: one blocking point), takes the buffer, waits
 * for its backend (another sleep: a second point), then frees it.  With
 * CAPRICE_MEM_LIMIT=64m, the 32 of them would hold 128 MiB at once. */
enum { REQUESTERS = 32, REQUESTS = 12, MEM_LIMIT_MIB = 64, BUF_MIB = 4 };
static struct {
	int live, peak, served;
	uint64_t worst_wait_ns; /* beyond its request's own sleep */
} M;

static void *requester(void *arg)
{
	(void)arg;
	for (int i = 0; i < REQUESTS; i++) {
		uint64_t before = tc_now_ns();
		usleep(200);
		uint64_t waited = tc_now_ns() - before;
		char *buf = malloc((size_t)BUF_MIB << 20);
		CHECK(buf != NULL);
		buf[0] = (char)i; /* counted by size, not by pages touched */
		int live = __atomic_add_fetch(&M.live, 1, __ATOMIC_RELAXED);
		if (live > M.peak)
			M.peak = live;
		if (i > 0 && waited > M.worst_wait_ns) /* the first round runs unpredicted */
			M.worst_wait_ns = waited;
		usleep(2000);
		__atomic_sub_fetch(&M.live, 1, __ATOMIC_RELAXED);
		free(buf);
		M.served++;
	}
	return NULL;
}

/* Under 2d the requesters whose next run takes a buffer are held while
 * the program's bytes are within 1/8 of the budget, so at most the
 * budget's worth of buffers is ever held, every request is served, and a
 * held requester goes once buffers are freed (well inside the 200 ms
 * aging bound).  Under fifo all 32 buffers are held at once. */
/* The requesters, then the checks: returns the most buffers held at once. */
static int run_requesters(void)
{
	bool two_d = strcmp(getenv("CAPRICE_SCHED"), "2d") == 0;
	pthread_t r[REQUESTERS];
	for (int i = 0; i < REQUESTERS; i++)
		r[i] = tc_spawn(requester, NULL);
	for (int i = 0; i < REQUESTERS; i++)
		tc_join_within(r[i], 30000, "a requester");
	printf("%s: %d served, at most %d buffers (%d MiB) held at once, budget %d MiB, "
	       "%llu held back, longest wait %.1f ms\n",
	       two_d ? "2d" : "fifo", M.served, M.peak, M.peak * BUF_MIB, MEM_LIMIT_MIB,
	       (unsigned long long)stat_sum(0), M.worst_wait_ns / 1e6);
	CHECK_EQ(M.served, REQUESTERS * REQUESTS);
	if (two_d) {
		if (M.peak * BUF_MIB > MEM_LIMIT_MIB)
			TFAIL("2d: %d MiB of buffers held at once, over the %d MiB budget",
			      M.peak * BUF_MIB, MEM_LIMIT_MIB);
		CHECK(stat_sum(0) > 0);
		if (M.worst_wait_ns > 100000000ull)
			TFAIL("2d: a held requester waited %.1f ms", M.worst_wait_ns / 1e6);
	} else {
		CHECK(M.peak * BUF_MIB > MEM_LIMIT_MIB);
		CHECK_EQ(stat_sum(0), 0);
	}
	return M.peak;
}

TCASE(admission_keeps_memory_within_its_budget)
{
	if (getenv("CAPRICE_TEST_SANITIZED"))
		TSKIP("the sanitizer's allocator is the one called: libthread counts no bytes");
	if (rerun_under_2d_and_fifo("CAPRICE_MEM_LIMIT=64m"))
		return;
	run_requesters();
}

/* Every member of the malloc family counts what it takes and gives back:
 * after some 2.5 GiB through all of them, taken and given back, the same
 * requesters find the same room under the budget (14 buffers of 4 MiB
 * without the churn; a count that drifted by 8 MiB either way would
 * allow 2 fewer, or go over the budget). */
TCASE(the_malloc_family_counts_what_it_gives_back)
{
	if (getenv("CAPRICE_TEST_SANITIZED"))
		TSKIP("the sanitizer's allocator is the one called: libthread counts no bytes");
	if (rerun_under_2d_and_fifo("CAPRICE_MEM_LIMIT=64m"))
		return;
	const size_t mib = 1 << 20;
	for (int i = 0; i < 128; i++) {
		char *p = calloc(1, mib + (size_t)i);
		CHECK(p != NULL);
		p = realloc(p, 2 * mib);
		CHECK(p != NULL);
		p = reallocarray(p, 3, mib);
		CHECK(p != NULL);
		p = realloc(p, 100); /* shrinks in place */
		CHECK(p != NULL);
		free(p);
		void *q = NULL;
		CHECK_OK(posix_memalign(&q, 4096, mib));
		free(q);
		free(memalign(64, mib + 17));
		free(aligned_alloc(256, mib));
		free(valloc(mib));
		free(pvalloc(mib + 1));
		free(realloc(NULL, mib));
		q = malloc(mib);
		CHECK(q != NULL);
		CHECK(realloc(q, 0) == NULL); /* frees it */
		free(malloc(100 + (size_t)i));
	}
	int peak = run_requesters();
	if (strcmp(getenv("CAPRICE_SCHED"), "2d") == 0 && peak < 12)
		TFAIL("2d: only %d buffers fit under the budget after the churn", peak);
}

/* ---- batching by location ---- */

/* Readers parked at two blocking points, a and b, whose data arrive
 * interleaved (a, b, a, b...) in one reap: under 2d they run a point at a
 * time (a's, then b's); under fifo in the order their data came. */
enum { PER_POINT = 6 };
static int bpipes[2 * PER_POINT][2];
static char ran[2 * PER_POINT + 1];
static int ran_len;

/* noipa: two functions alike must stay two call sites */
static __attribute__((noinline, noipa)) void read_at_a(int fd)
{
	char c;
	CHECK_EQ(read(fd, &c, 1), 1);
	ran[ran_len++] = 'a';
}

static __attribute__((noinline, noipa)) void read_at_b(int fd)
{
	char c;
	CHECK_EQ(read(fd, &c, 1), 1);
	ran[ran_len++] = 'b';
}

static void *batched_reader(void *arg)
{
	long i = (long)arg;
	if (i % 2 == 0)
		read_at_a(bpipes[i][0]);
	else
		read_at_b(bpipes[i][0]);
	return NULL;
}

TCASE(one_reap_runs_its_threads_a_blocking_point_at_a_time)
{
	/* the graph's call site is the first return address above the
	 * runtime: with ASan, its read() interceptor's, shared by both */
	if (getenv("CAPRICE_TEST_SANITIZED"))
		TSKIP("ASan's read() interceptor is the call site of both points");
	if (rerun_under_2d_and_fifo(NULL))
		return;
	bool two_d = strcmp(getenv("CAPRICE_SCHED"), "2d") == 0;
	pthread_t r[2 * PER_POINT];
	for (long i = 0; i < 2 * PER_POINT; i++) {
		CHECK_OK(pipe(bpipes[i]) == 0 ? 0 : errno);
		r[i] = tc_spawn(batched_reader, (void *)i);
	}
	tc_msleep(50); /* every reader parked in its read */
	/* the data, interleaved, without parking in between (the raw
	 * system call): the completions wait for one reap */
	for (int i = 0; i < 2 * PER_POINT; i++)
		CHECK_EQ(syscall(SYS_write, bpipes[i][1], "x", 1), 1);
	for (int i = 0; i < 2 * PER_POINT; i++)
		tc_join(r[i]);
	int changes = 0;
	for (int i = 1; i < ran_len; i++)
		changes += ran[i] != ran[i - 1];
	printf("%s: the readers ran in the order %s (%d changes of point)\n",
	       two_d ? "2d" : "fifo", ran, changes);
	CHECK_EQ(ran_len, 2 * PER_POINT);
	if (two_d)
		CHECK_EQ(changes, 1);
	else
		CHECK(changes > 1);
}

/* Descriptors that never come back: the held thread still runs once its
 * aging bound (200 ms) has passed, and meets EMFILE itself.  Each open in
 * the reserve (the last 1/8 of the limit: 8 numbers) is held, at its
 * sleep's park and at its own, each time for the bound. */
static uint64_t worst_open_gap_ns;

static void *open_until_emfile(void *arg)
{
	(void)arg;
	uint64_t last = tc_now_ns();
	for (;;) {
		usleep(200);
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		uint64_t now = tc_now_ns();
		if (now - last > worst_open_gap_ns)
			worst_open_gap_ns = now - last;
		last = now;
		if (fd < 0) {
			CHECK_EQ(errno, EMFILE);
			return NULL;
		}
	}
}

TCASE(a_held_thread_runs_after_its_aging_bound)
{
	if (rerun_under_2d())
		return;
	struct rlimit rl = { LIMIT, LIMIT };
	CHECK_OK(setrlimit(RLIMIT_NOFILE, &rl) == 0 ? 0 : errno);
	tc_msleep(150);
	uint64_t t0 = tc_now_ns();
	tc_join_within(tc_spawn(open_until_emfile, NULL), 10000, "the thread held for good");
	CHECK(stat_sum(0) > 0);
	/* held at least once, each time for at most the bound */
	CHECK_MS_RANGE(worst_open_gap_ns, 200, 400);
	/* and no more than the reserve's opens were */
	CHECK_MS_RANGE(tc_now_ns() - t0, 200, 8 * 400);
}

/* An adversarial mix: threads that yield without end keep the ring full,
 * and threads whose blocking point predicts 2 ms of computation are put
 * behind it.  Each still runs within the 20 ms aging bound of its
 * wakeup (plus the runs of the others aged at once). */
enum { SPINNERS = 6, LONGS = 4, LONG_ROUNDS = 25 };
static int longs_left = LONGS;
static uint64_t worst_late_ns;

static void *yield_forever(void *arg)
{
	(void)arg;
	while (__atomic_load_n(&longs_left, __ATOMIC_ACQUIRE) > 0)
		sched_yield();
	return NULL;
}

static void *compute_long(void *arg)
{
	(void)arg;
	for (int i = 0; i < LONG_ROUNDS; i++) {
		uint64_t before = tc_now_ns();
		usleep(100);
		uint64_t late = tc_now_ns() - before;
		if (i > 5 && late > worst_late_ns) /* once the graph predicts */
			worst_late_ns = late;
		while (tc_now_ns() - before < 2000000)
			; /* 2 ms of CPU */
	}
	__atomic_sub_fetch(&longs_left, 1, __ATOMIC_RELEASE);
	return NULL;
}

TCASE(no_thread_starves_behind_short_work)
{
	if (rerun_under_2d())
		return;
	pthread_t sp[SPINNERS], lg[LONGS];
	for (int i = 0; i < LONGS; i++)
		lg[i] = tc_spawn(compute_long, NULL);
	for (int i = 0; i < SPINNERS; i++)
		sp[i] = tc_spawn(yield_forever, NULL);
	for (int i = 0; i < LONGS; i++)
		tc_join_within(lg[i], 30000, "a long-running thread");
	for (int i = 0; i < SPINNERS; i++)
		tc_join(sp[i]);
	printf("deferred %llu times; the latest wakeup ran %.1f ms after its sleep began\n",
	       (unsigned long long)stat_sum(1), worst_late_ns / 1e6);
	CHECK(stat_sum(1) > 0);
	/* 20 ms bound, and the other long threads' 2 ms runs */
	CHECK_MS_RANGE(worst_late_ns, 0, 20 + 2 * LONGS + 5);
}
