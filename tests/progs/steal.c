/* steal.c: work reaches an idle worker without the busy one's help
 * (sched/runq.h, sched/steal.c), and a read whose data is in the page
 * cache does not park (libthread/io.c).
 *
 * The stealing cases run with the monitor's time slice at one second, so
 * that its poke (which would also hand the threads over, a few slices
 * late) cannot be what moved them. */
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

#define QUEUED 3

static atomic_bool stop_spinning;
static atomic_int spinner_worker = -1;
static uint64_t queued_at;

struct mark {
	uint64_t ran_after;   /* ns from being queued to running */
	int worker;
};

static void *mark_run(void *arg)
{
	struct mark *m = arg;
	m->ran_after = tc_now_ns() - queued_at;
	m->worker = caprice_worker_index();
	return NULL;
}

/* Queues QUEUED threads on its own worker, then computes without ever
 * calling the library until they have all run somewhere else. */
static void *spinner(void *arg)
{
	struct mark *m = arg;
	pthread_t t[QUEUED];
	atomic_store(&spinner_worker, caprice_worker_index());
	queued_at = tc_now_ns();
	for (int i = 0; i < QUEUED; i++)
		t[i] = tc_spawn(mark_run, &m[i]);
	uint64_t give_up = tc_now_ns() + 2000000000ull;
	for (;;) {
		int ran = 0;
		for (int i = 0; i < QUEUED; i++)
			ran += __atomic_load_n(&m[i].worker, __ATOMIC_ACQUIRE) >= 0;
		if (ran == QUEUED || atomic_load(&stop_spinning) || tc_now_ns() > give_up)
			break;
		__asm__ volatile("pause");
	}
	for (int i = 0; i < QUEUED; i++)
		tc_join(t[i]);
	return NULL;
}

static bool rerun_two_workers_slow_monitor(void)
{
	if (tc_in_child())
		return false;
	static const char *const extra[] = { "CAPRICE_WORKERS=2", "CAPRICE_SLICE_US=1000000", NULL };
	static char out[65536];
	int st = tc_run_self(tcase_current(), extra, out, sizeof out, 60);
	fputs(out, stdout);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		TFAIL("the case on 2 workers failed (status %#x); its output is above", st);
	return true;
}

TCASE(idle_worker_takes_threads_queued_behind_a_computing_one)
{
	tc_run_alone();
	if (rerun_two_workers_slow_monitor())
		return;
	tc_watchdog(30);
	struct mark m[QUEUED];
	for (int i = 0; i < QUEUED; i++)
		m[i] = (struct mark){ .ran_after = 0, .worker = -1 };
	uint64_t direct0 = 0;
	for (int w = 0; w < caprice_worker_count(); w++) {
		struct caprice_worker_stats st;
		CHECK_OK(caprice_worker_stats(w, &st));
		direct0 += st.steals_direct;
	}
	pthread_t s = tc_spawn(spinner, m);
	/* main parks here, so its worker is the idle one */
	tc_join(s);
	uint64_t direct = 0;
	for (int w = 0; w < caprice_worker_count(); w++) {
		struct caprice_worker_stats st;
		CHECK_OK(caprice_worker_stats(w, &st));
		direct += st.steals_direct;
	}
	int sw = atomic_load(&spinner_worker);
	for (int i = 0; i < QUEUED; i++) {
		printf("thread %d: queued on worker %d, ran on worker %d after %.3f ms\n", i, sw,
		       m[i].worker, m[i].ran_after / 1e6);
		/* the spinner never switched: only a thief could run them, and
		 * in far less than the monitor's one-second slice */
		CHECK(m[i].worker >= 0 && m[i].worker != sw);
		CHECK(m[i].ran_after < 500 * 1000000ull);
	}
	printf("direct steals: %llu\n", (unsigned long long)(direct - direct0));
	CHECK(direct - direct0 >= 1);
}

/* ---- wake placement (sched/wake.c) ---- */

#define NOT_SET_UP 77             /* the child's status when the case did not arise */
#define LONE_AFTER_NS 20000ull    /* sched/worker.h CP_LONE_AFTER_NS */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t go, ready;
	int waiting;
	bool released;
	struct mark a, b;    /* the two woken threads */
	atomic_int b_before_a; /* -1 unknown, 1 b ran while a was still queued */
	uint64_t signals_took; /* ns from the first signal's start to the second's end */
} W = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
        0, false, { 0, -1 }, { 0, -1 }, -1, 0 };

static void *woken(void *arg)
{
	struct mark *m = arg;
	CHECK_OK(pthread_mutex_lock(&W.mu));
	W.waiting++;
	CHECK_OK(pthread_cond_signal(&W.ready));
	while (!W.released)
		CHECK_OK(pthread_cond_wait(&W.go, &W.mu));
	m->ran_after = tc_now_ns() - queued_at;
	CHECK_OK(pthread_mutex_unlock(&W.mu));
	/* before b shows it ran: the waker stops computing once it has, and
	 * a may then run on the waker's worker */
	if (m == &W.b)
		atomic_store(&W.b_before_a, __atomic_load_n(&W.a.worker, __ATOMIC_ACQUIRE) < 0);
	__atomic_store_n(&m->worker, caprice_worker_index(), __ATOMIC_RELEASE);
	return NULL;
}

/* Wakes a, then b, and computes without calling the library until b ran. */
static void *waker(void *arg)
{
	(void)arg;
	pthread_t a = tc_spawn(woken, &W.a), b = tc_spawn(woken, &W.b);
	CHECK_OK(pthread_mutex_lock(&W.mu));
	while (W.waiting < 2)
		CHECK_OK(pthread_cond_wait(&W.ready, &W.mu));
	CHECK_OK(pthread_mutex_unlock(&W.mu));
	/* a and b may have run on the other worker: let it settle into its
	 * idle loop, where only a wakeup can find it (a sanitized run
	 * signalled while it was still on its way there, and both queued
	 * here) */
	usleep(20000);
	CHECK_OK(pthread_mutex_lock(&W.mu));
	atomic_store(&spinner_worker, caprice_worker_index());
	W.released = true;
	CHECK_OK(pthread_mutex_unlock(&W.mu));
	/* signalled after the unlock: woken under the mutex, a and b would
	 * park again on it, and its unlock would decide their order */
	queued_at = tc_now_ns();
	CHECK_OK(pthread_cond_signal(&W.go));
	CHECK_OK(pthread_cond_signal(&W.go));
	W.signals_took = tc_now_ns() - queued_at;
	uint64_t give_up = tc_now_ns() + 2000000000ull;
	while (__atomic_load_n(&W.b.worker, __ATOMIC_ACQUIRE) < 0 && tc_now_ns() < give_up)
		__asm__ volatile("pause");
	tc_join(a);
	tc_join(b);
	return NULL;
}

/* The waker keeps running after two wakeups: the first woken thread waits
 * on its worker (a lone woken thread is most often a ping-pong partner,
 * and it is taken by a thief once the waker stays silent), the second goes
 * to the idle worker, where it runs first (without the placement a thief
 * took the first, oldest, thread first: 3 runs in 3).  The times are
 * printed, not judged.  The waker signals after its unlock: signalled
 * under the mutex, the woken threads park again on it (README, Parallel
 * programs, traced a 20 ms wait that way, and the unlock then decides
 * which runs first).  Under fifo: 2d keeps a
 * woken thread in its worker's queue, where admission holds it in line. */
TCASE(second_thread_woken_behind_a_running_waker_goes_to_the_idle_worker)
{
	tc_run_alone();
	if (!tc_in_child()) {
		static const char *const extra[] = { "CAPRICE_WORKERS=2", "CAPRICE_SLICE_US=1000000",
		                                     "CAPRICE_SCHED=fifo", NULL };
		static char out[65536];
		/* a run whose waker was held up between its two signals for
		 * as long as a thief waits before it takes a lone thread is
		 * not the case (the idle worker may then rightly take a first)
		 * and is set up again, in a new process */
		for (int attempt = 1;; attempt++) {
			int st = tc_run_self(tcase_current(), extra, out, sizeof out, 60);
			fputs(out, stdout);
			if (WIFEXITED(st) && WEXITSTATUS(st) == NOT_SET_UP && attempt < 10)
				continue;
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
				TFAIL("the case on 2 workers failed (status %#x); its output is above", st);
			return;
		}
	}
	tc_watchdog(30);
	pthread_t w = tc_spawn(waker, NULL);
	tc_join(w); /* main parks: its worker, or the other, is idle */
	int ww = atomic_load(&spinner_worker);
	printf("waker on worker %d; a ran on worker %d after %.3f ms, b on worker %d after %.3f "
	       "ms, b first: %d\n", ww, W.a.worker, W.a.ran_after / 1e6, W.b.worker,
	       W.b.ran_after / 1e6, atomic_load(&W.b_before_a));
	printf("the two signals took %.1f us\n", W.signals_took / 1e3);
	if (W.signals_took >= LONE_AFTER_NS) {
		printf("not set up: the waker was held up between its signals\n");
		fflush(stdout);
		_exit(NOT_SET_UP);
	}
	CHECK(W.b.worker >= 0 && W.b.worker != ww);
	CHECK_EQ(atomic_load(&W.b_before_a), 1);
	CHECK(W.a.worker >= 0);
}

/* A read of data in the page cache is copied at once: the reader never
 * parks (its switch count does not move), and what it gets is the file,
 * position and end of file included. */
TCASE(cached_file_read_does_not_park)
{
	char path[] = "/tmp/caprice-steal-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	unlink(path);
	static char data[256 * 1024], back[sizeof data];
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (char)tc_pattern(7, i);
	tc_write_all(fd, data, sizeof data);
	CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
	struct caprice_thread_stats before, after;
	CHECK_OK(caprice_thread_stats(pthread_self(), &before));
	size_t got = 0;
	while (got < sizeof back) {
		ssize_t r = read(fd, back + got, 10000);
		CHECK(r > 0);
		got += (size_t)r;
	}
	CHECK_EQ(read(fd, back, 1), 0); /* end of file */
	char one[100];
	CHECK_EQ(pread(fd, one, sizeof one, 1000), (ssize_t)sizeof one);
	CHECK_OK(caprice_thread_stats(pthread_self(), &after));
	CHECK(memcmp(back, data, sizeof data) == 0);
	CHECK(memcmp(one, data + 1000, sizeof one) == 0);
	printf("switches during %zu cached reads: %llu\n", sizeof data / 10000 + 3,
	       (unsigned long long)(after.switches - before.switches));
	CHECK_EQ(after.switches, before.switches);
	close(fd);
}
