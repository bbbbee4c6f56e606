/* idle.c: what an idle worker does while another one is busy
 * (sched/idle.c).  It polls, instead of sleeping in its ring, for threads
 * woken from the busy worker, whose wake-ups would otherwise each cost it
 * a sleep and a kick; it does not poll for its own I/O, which a sleep in
 * the ring serves at the cost of the sleep, where a poll would cost its
 * whole length.
 *
 * The scene, on two workers: a computing thread keeps one worker busy;
 * main, on the other, waits ROUNDS times, about every GAP_US, either for
 * a byte on a pipe that a plain kernel thread writes (its own I/O) or for
 * a semaphore the computing thread posts (work handed over).  The idle
 * worker's `sleeps` counter says which way it waited. */
#include <fcntl.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

#define ROUNDS 1000
#define GAP_US 50

static uint64_t sleeps_of(int worker)
{
	struct caprice_worker_stats st;
	CHECK_OK(caprice_worker_stats(worker, &st));
	return st.sleeps;
}

static void compute_us(uint64_t us)
{
	uint64_t until = tc_now_ns() + us * 1000;
	while (tc_now_ns() < until)
		__asm__ volatile("pause");
}

static atomic_bool stop;
static atomic_int busy_worker = -1;
static sem_t handed;

/* Computes without a call into the library (its worker stays busy);
 * with post set, posts `handed` every GAP_US of it, ROUNDS times. */
static void *computer(void *arg)
{
	bool post = arg != NULL;
	atomic_store(&busy_worker, caprice_worker_index());
	for (int i = 0; !atomic_load(&stop) && (!post || i < ROUNDS); i++) {
		compute_us(GAP_US);
		if (post)
			CHECK_OK(sem_post(&handed) == 0 ? 0 : errno);
	}
	while (!atomic_load(&stop))
		__asm__ volatile("pause");
	return NULL;
}

static int pipe_w;

/* A plain kernel thread: its writes are the pipe's only traffic. */
static void *writer(void *arg)
{
	(void)arg;
	struct timespec gap = { 0, GAP_US * 1000 };
	for (int i = 0; i < ROUNDS; i++) {
		clock_nanosleep(CLOCK_MONOTONIC, 0, &gap, NULL);
		CHECK_EQ(write(pipe_w, "x", 1), 1);
	}
	return NULL;
}

/* Starts the computing thread and waits until it runs on the worker main
 * is not on; returns main's worker. */
static int start_busy_worker(void *post, pthread_t *t)
{
	*t = tc_spawn(computer, post);
	uint64_t give_up = tc_now_ns() + 2000000000ull;
	while (atomic_load(&busy_worker) < 0 && tc_now_ns() < give_up)
		tc_msleep(1);
	int mine = caprice_worker_index();
	if (atomic_load(&busy_worker) < 0 || atomic_load(&busy_worker) == mine)
		TFAIL("the computing thread runs on worker %d, main on %d: no idle worker",
		      atomic_load(&busy_worker), mine);
	return mine;
}

TCASE(an_idle_worker_sleeps_while_it_waits_for_its_own_io)
{
	tc_run_alone();
	if (tc_rerun_on_workers(2, 60))
		return;
	tc_watchdog(30);
	int p[2];
	CHECK_OK(pipe2(p, O_CLOEXEC) == 0 ? 0 : errno);
	pipe_w = p[1];
	pthread_t busy, w;
	int mine = start_busy_worker(NULL, &busy);
	uint64_t sleeps0 = sleeps_of(mine);
	tc_foreign_run(writer, NULL, &w);
	int waited = 0;
	for (int i = 0; i < ROUNDS; i++) {
		char c;
		uint64_t t0 = tc_now_ns();
		CHECK_EQ(read(p[0], &c, 1), 1);
		waited += tc_now_ns() - t0 > 20000; /* the byte was not there yet */
	}
	uint64_t sleeps = sleeps_of(mine) - sleeps0;
	tc_foreign_join(w);
	atomic_store(&stop, true);
	tc_join(busy);
	printf("own I/O: %d reads, %d waited over 20 us, worker %d slept %llu times\n", ROUNDS,
	       waited, mine, (unsigned long long)sleeps);
	/* a window widened by these waits would cover them: polled through,
	 * with a sleep only now and then (before: 21-52% of the waits) */
	CHECK(waited >= ROUNDS / 2);
	CHECK(sleeps >= (uint64_t)waited * 3 / 4);
	close(p[0]);
	close(p[1]);
}

TCASE(an_idle_worker_polls_for_threads_woken_on_a_busy_one)
{
	tc_run_alone();
	if (tc_rerun_on_workers(2, 60))
		return;
	tc_watchdog(30);
	CHECK_OK(sem_init(&handed, 0, 0) == 0 ? 0 : errno);
	pthread_t busy;
	int mine = start_busy_worker((void *)1, &busy);
	uint64_t sleeps0 = sleeps_of(mine);
	for (int i = 0; i < ROUNDS; i++)
		CHECK_OK(sem_wait(&handed) == 0 ? 0 : errno);
	uint64_t sleeps = sleeps_of(mine) - sleeps0;
	atomic_store(&stop, true);
	tc_join(busy);
	printf("handed over: %d wake-ups from worker %d, worker %d slept %llu times\n", ROUNDS,
	       atomic_load(&busy_worker), mine, (unsigned long long)sleeps);
	/* the window covers the gap between posts once it has seen a few */
	CHECK(sleeps < ROUNDS / 2);
}
