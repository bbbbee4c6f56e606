/* opcount.c: one primitive, N times, for counting its instructions and
 * locked operations under callgrind (bench/count-primitives).  Runs the
 * primitive 200 times first (stack pools, wait queues and caches made),
 * then N times; the script runs it for two values of N and divides the
 * difference by their difference, so start-up and warm-up cancel out.
 * Built on Caprice (-DBENCH_CAPRICE) and on NPTL, like primitives.c, with
 * CAPRICE_WORKERS=1 set by the script: one worker, so every handoff is a
 * user-level switch and nothing runs concurrently.
 *
 * usage: opcount-caprice yield|create-join|mutex|cond N */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long iters;

/* ---- yield: two threads alternate, so each yield is one switch ---- */
static void *yielder(void *arg)
{
	(void)arg;
	for (long i = 0; i < iters; i++)
		sched_yield();
	return NULL;
}

/* ---- condvar ping-pong: a handoff is a signal and a wait ---- */
static pthread_mutex_t pp_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pp_cv = PTHREAD_COND_INITIALIZER;
static long pp_turn; /* even: ping's turn */

static void *pinger(void *arg)
{
	long me = (long)(intptr_t)arg;
	pthread_mutex_lock(&pp_mu);
	for (long i = 0; i < iters; i++) {
		while ((pp_turn & 1) != me)
			pthread_cond_wait(&pp_cv, &pp_mu);
		pp_turn++;
		pthread_cond_signal(&pp_cv);
	}
	pthread_mutex_unlock(&pp_mu);
	return NULL;
}

static void *nothing(void *arg)
{
	return arg;
}

static void run(const char *kind, long n)
{
	iters = n;
	if (!strcmp(kind, "yield")) {
		pthread_t a, b;
		pthread_create(&a, NULL, yielder, NULL);
		pthread_create(&b, NULL, yielder, NULL);
		pthread_join(a, NULL);
		pthread_join(b, NULL);
	} else if (!strcmp(kind, "create-join")) {
		for (long i = 0; i < n; i++) {
			pthread_t t;
			if (pthread_create(&t, NULL, nothing, NULL) != 0) {
				perror("pthread_create");
				exit(1);
			}
			pthread_join(t, NULL);
		}
	} else if (!strcmp(kind, "mutex")) {
		static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
		for (long i = 0; i < n; i++) {
			pthread_mutex_lock(&m);
			__asm__ volatile("" ::: "memory");
			pthread_mutex_unlock(&m);
		}
	} else if (!strcmp(kind, "cond")) {
		/* n handoffs: each of the two threads makes n/2 */
		iters = n / 2;
		pp_turn = 0;
		pthread_t a, b;
		pthread_create(&a, NULL, pinger, (void *)0);
		pthread_create(&b, NULL, pinger, (void *)1);
		pthread_join(a, NULL);
		pthread_join(b, NULL);
	} else {
		fprintf(stderr, "opcount: unknown primitive %s\n", kind);
		exit(2);
	}
}

/* Blocks for good: with a second thread the process is multi-threaded,
 * as in any program that uses these primitives (glibc skips the lock
 * prefix of its mutexes while a process has one thread). */
static void *bystander(void *arg)
{
	static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
	pthread_mutex_lock(&m);
	for (;;)
		pthread_cond_wait(&never, &m);
	return arg;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s yield|create-join|mutex|cond N\n", argv[0]);
		return 2;
	}
	long n = atol(argv[2]);
	pthread_t by;
	pthread_create(&by, NULL, bystander, NULL);
	pthread_detach(by);
	run(argv[1], 200);
	run(argv[1], n);
	return 0;
}
