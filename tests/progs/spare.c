/* spare.c: a worker whose thread is blocked in a system call the runtime
 * cannot see does not hold the threads queued behind it while every other
 * worker is busy: a spare worker runs them, and gives them back once the
 * blocked worker runs again (sched/spare.c).
 *
 * The scene, on two workers: a spinner computes without ever calling the
 * library, so its worker is busy; main, which therefore runs on the other
 * worker, queues a blocker and four tickers there and waits.  The blocker
 * sleeps 400 ms with the raw `syscall` instruction (no libc, no
 * interposition), blocking that worker in the kernel.  Without a spare the
 * tickers would first run after those 400 ms.  Last, a thread whose read
 * completes on the blocked worker's ring: with TLS of its own the spare
 * runs it, with the worker's it waits for its worker (errno). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include "caprice.h"
#include "tcase.h"

#define BLOCK_MS  400
#define TICKERS   4
#define AFTER_MS  150 /* tickers keep going this long after the blocker */

/* The longest a ticker may wait: a few time slices (2 ms each) for the
 * monitor to see a blocked worker, not the whole block; a sanitized build
 * runs everything 2-3 times slower (CI saw 149 ms there) */
static uint64_t max_gap_ns(void)
{
	return (getenv("CAPRICE_TEST_SANITIZED") ? 250 : 100) * 1000000ull;
}

static long raw_syscall2(long nr, long a, long b)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
	return ret;
}

static atomic_int spinner_worker = -1;
static atomic_bool stop_spinning;
static uint64_t t_start, t_blocker_done;

static void *spinner(void *arg)
{
	(void)arg;
	atomic_store(&spinner_worker, caprice_worker_index());
	while (!atomic_load_explicit(&stop_spinning, memory_order_relaxed))
		__asm__ volatile("pause");
	return NULL;
}

static void *blocker(void *arg)
{
	int *where = arg;
	*where = caprice_worker_index();
	uint64_t end = tc_now_ns() + BLOCK_MS * 1000000ull;
	for (uint64_t now; (now = tc_now_ns()) < end;) {
		/* a poke's handler cuts a sleep short (EINTR): sleep again */
		struct timespec ts = { .tv_sec = (time_t)((end - now) / 1000000000u),
		                       .tv_nsec = (long)((end - now) % 1000000000u) };
		raw_syscall2(SYS_nanosleep, (long)&ts, 0);
	}
	__atomic_store_n(&t_blocker_done, tc_now_ns(), __ATOMIC_RELEASE);
	return NULL;
}

struct ticker {
	uint64_t first_run;   /* ns after t_start */
	uint64_t max_gap;     /* longest 1 ms sleep, while the blocker blocked */
	int last_worker;
	long ticks;
};

static void *ticker(void *arg)
{
	struct ticker *k = arg;
	uint64_t prev = tc_now_ns();
	k->first_run = prev - t_start;
	for (;;) {
		tc_msleep(1);
		uint64_t now = tc_now_ns();
		uint64_t done = __atomic_load_n(&t_blocker_done, __ATOMIC_ACQUIRE);
		if (!done && now - prev > k->max_gap)
			k->max_gap = now - prev;
		prev = now;
		k->ticks++;
		if (done && now - done > AFTER_MS * 1000000ull)
			break;
	}
	k->last_worker = caprice_worker_index();
	return NULL;
}

TCASE(spare_runs_threads_of_a_worker_blocked_in_the_kernel)
{
	tc_run_alone();
	if (tc_rerun_on_workers(2, 60))
		return;
	tc_watchdog(30);
	if (caprice_spare_worker_count() < 1)
		TFAIL("no spare worker (CAPRICE_SPARE_WORKERS=%s)", getenv("CAPRICE_SPARE_WORKERS"));
	pthread_t s = tc_spawn(spinner, NULL);
	while (atomic_load(&spinner_worker) < 0)
		tc_msleep(1);
	/* the spinner holds its worker for good, so main runs on the other */
	int mine = caprice_worker_index();
	CHECK(mine != atomic_load(&spinner_worker));
	int blocked_worker = -1;
	struct ticker k[TICKERS] = { 0 };
	t_start = tc_now_ns();
	pthread_t b = tc_spawn(blocker, &blocked_worker);
	pthread_t kt[TICKERS];
	for (int i = 0; i < TICKERS; i++)
		kt[i] = tc_spawn(ticker, &k[i]);
	tc_join(b);
	for (int i = 0; i < TICKERS; i++)
		tc_join(kt[i]);
	atomic_store(&stop_spinning, true);
	tc_join(s);
	printf("spinner on worker %d, blocker on worker %d; blocked %.0f ms\n",
	       atomic_load(&spinner_worker), blocked_worker, (t_blocker_done - t_start) / 1e6);
	CHECK_EQ(blocked_worker, mine);
	struct caprice_worker_stats st;
	CHECK_EQ(caprice_worker_stats(caprice_worker_count(), &st), 0);
	printf("spare: covers %llu, ran %llu switches\n", (unsigned long long)st.covers,
	       (unsigned long long)st.switches);
	for (int i = 0; i < TICKERS; i++)
		printf("ticker %d: first ran after %.1f ms, longest 1 ms sleep %.1f ms, %ld ticks, "
		       "ended on worker %d\n",
		       i, k[i].first_run / 1e6, k[i].max_gap / 1e6, k[i].ticks, k[i].last_worker);
	fflush(stdout);
	for (int i = 0; i < TICKERS; i++) {
		/* a few time slices (2 ms each) for the monitor to see it, not
		 * the 400 ms of the block */
		CHECK(k[i].first_run < max_gap_ns());
		CHECK(k[i].max_gap < max_gap_ns());
		/* given back once the blocked worker ran again */
		CHECK(k[i].last_worker >= 0 && k[i].last_worker < caprice_worker_count());
	}
	CHECK(st.covers >= 1);
}

/* A worker that computes keeps its core: no spare runs beside it (the two
 * would only take turns on it).  The threads queued behind a spinner go to
 * the other worker, which is free, as before there were spares. */
static void *spinner_with_tickers(void *arg)
{
	struct ticker *k = arg;
	pthread_t kt[2];
	for (int i = 0; i < 2; i++) /* queued here, behind this spinner */
		kt[i] = tc_spawn(ticker, &k[i]);
	spinner(NULL);
	for (int i = 0; i < 2; i++)
		tc_join(kt[i]);
	return NULL;
}

TCASE(no_spare_beside_a_worker_that_computes)
{
	tc_run_alone();
	if (tc_rerun_on_workers(2, 60))
		return;
	tc_watchdog(30);
	struct ticker k[2] = { 0 };
	t_start = tc_now_ns();
	pthread_t s = tc_spawn(spinner_with_tickers, k);
	for (int i = 0; i < 200; i++)
		tc_msleep(1);
	/* the tickers end AFTER_MS after the "blocker", which is now */
	__atomic_store_n(&t_blocker_done, tc_now_ns(), __ATOMIC_RELEASE);
	for (int i = 0; i < AFTER_MS + 50; i++)
		tc_msleep(1);
	atomic_store(&stop_spinning, true);
	tc_join(s);
	struct caprice_worker_stats st;
	CHECK_EQ(caprice_worker_stats(caprice_worker_count(), &st), 0);
	for (int i = 0; i < 2; i++)
		printf("ticker %d: first ran after %.1f ms, longest 1 ms sleep %.1f ms\n", i,
		       k[i].first_run / 1e6, k[i].max_gap / 1e6);
	printf("spare: covers %llu\n", (unsigned long long)st.covers);
	fflush(stdout);
	for (int i = 0; i < 2; i++) {
		CHECK(k[i].first_run < max_gap_ns());
		CHECK(k[i].max_gap < max_gap_ns());
	}
	CHECK_EQ(st.covers, 0);
}

/* A thread that spins until another thread does something, with no call
 * into the library, holds its worker: when that other thread is queued
 * behind it and no worker is free, the spare runs it (monitor.c: ten
 * slices).  On one worker and its spare: the spinner makes the setter,
 * which is queued behind it, and spins until the setter has run. */
static atomic_bool flag_set;
static int setter_worker = -1;

static void *setter(void *arg)
{
	(void)arg;
	setter_worker = caprice_worker_index();
	atomic_store(&flag_set, true);
	return NULL;
}

static void *spins_for_setter(void *arg)
{
	uint64_t *waited = arg;
	pthread_t t = tc_spawn(setter, NULL); /* queued behind this thread */
	uint64_t from = tc_now_ns();
	while (!atomic_load_explicit(&flag_set, memory_order_acquire))
		__asm__ volatile("pause");
	*waited = tc_now_ns() - from;
	tc_join(t);
	return NULL;
}

TCASE(spare_runs_the_thread_a_spinner_waits_for)
{
	tc_run_alone();
	/* without the spare the spinner never ends, and the child is
	 * killed at the limit (its own SIGALRM would wait for a worker) */
	if (tc_rerun_on_workers(1, 20))
		return;
	uint64_t waited = 0;
	tc_join(tc_spawn(spins_for_setter, &waited));
	struct caprice_worker_stats st;
	CHECK_EQ(caprice_worker_stats(caprice_worker_count(), &st), 0);
	printf("the spinner waited %.1f ms; the setter ran on worker %d; spare covers %llu\n",
	       waited / 1e6, setter_worker, (unsigned long long)st.covers);
	CHECK_EQ(setter_worker, caprice_worker_count()); /* the spare */
	CHECK(st.covers >= 1);
	CHECK(waited < 2000000000ull);
}

/* A thread whose read completes on a blocked worker's ring (the poke reaps
 * it there) first runs on that worker when `errno` is the worker's: its
 * caller may hold errno's address from before the call.  With TLS of its
 * own (CAPRICE_TLS=thread) nothing ties it there, and the spare runs it at
 * once.  The scene, on one worker and its spare: a reader parks in read()
 * on an empty pipe, a blocker then holds the worker in a raw nanosleep,
 * and a kernel thread of the C library writes the byte 50 ms later. */
static int io_pipe[2];
static atomic_bool reader_started, blocker_blocking;
static uint64_t t_written, t_read_done;

static void *reader(void *arg)
{
	(void)arg;
	char c;
	atomic_store(&reader_started, true);
	ssize_t n = read(io_pipe[0], &c, 1); /* parks on the worker's ring */
	__atomic_store_n(&t_read_done, tc_now_ns(), __ATOMIC_RELEASE);
	return (void *)n;
}

static void *blocker_after_reader(void *arg)
{
	while (!atomic_load(&reader_started))
		tc_msleep(1);
	tc_msleep(5); /* the reader is parked in its read by now */
	atomic_store(&blocker_blocking, true);
	return blocker(arg);
}

static void *late_byte(void *arg)
{
	(void)arg;
	while (!atomic_load(&blocker_blocking))
		usleep(1000);
	usleep(50000);
	__atomic_store_n(&t_written, tc_now_ns(), __ATOMIC_RELEASE);
	if (write(io_pipe[1], "x", 1) != 1)
		abort();
	return NULL;
}

/* Runs the scene in a child on one worker with CAPRICE_TLS=tls; returns
 * in that child, true, after the scene (false in the parent, which has
 * checked the child). */
static bool reader_behind_blocked_worker(const char *tls)
{
	if (!tc_in_child()) {
		char env[32], out[8192];
		snprintf(env, sizeof env, "CAPRICE_TLS=%s", tls);
		const char *extra[] = { "CAPRICE_WORKERS=1", env, NULL };
		int st = tc_run_self(tcase_current(), extra, out, sizeof out, 60);
		fputs(out, stdout);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			TFAIL("the CAPRICE_TLS=%s run failed (status %#x); its output is above", tls, st);
		return false;
	}
	tc_watchdog(30);
	CHECK_OK(pipe(io_pipe) == 0 ? 0 : errno);
	int blocked_worker = -1;
	pthread_t w;
	tc_foreign_run(late_byte, NULL, &w);
	pthread_t r = tc_spawn(reader, NULL);
	pthread_t b = tc_spawn(blocker_after_reader, &blocked_worker);
	CHECK_EQ((long)tc_join(r), 1L);
	tc_join(b);
	tc_foreign_join(w);
	printf("CAPRICE_TLS=%s: read returned %.1f ms after the write; the blocker let go "
	       "%.1f ms after it\n",
	       tls, (t_read_done - t_written) / 1e6, (t_blocker_done - t_written) / 1e6);
	fflush(stdout);
	return true;
}

TCASE(io_woken_thread_with_tls_of_its_own_leaves_a_blocked_worker)
{
	if (getenv("CAPRICE_TEST_SANITIZED"))
		TSKIP("TLS per user thread is off in sanitized builds (ASan keeps its own "
		      "per-thread state in TLS)");
	tc_run_alone();
	if (!reader_behind_blocked_worker("thread"))
		return;
	CHECK(t_read_done - t_written < max_gap_ns());
}

TCASE(io_woken_thread_with_the_workers_tls_waits_for_its_worker)
{
	tc_run_alone();
	if (!reader_behind_blocked_worker("worker"))
		return;
	CHECK(t_read_done >= t_blocker_done);
}
