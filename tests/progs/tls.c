/* tls.c: CAPRICE_TLS=thread gives a linked program's user threads
 * thread-local storage of their own: __thread values survive parks and
 * moves between workers.  (Linked programs keep the worker's TLS unless
 * asked; the shim chooses per program, see sched/tls.c.) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tcase.h"

static __thread long mine;
static __thread char tag[32];

static void *keep_mine(void *arg)
{
	long id = (long)arg;
	long bad = 0;
	for (int i = 0; i < 100; i++) {
		mine = id * 1000 + i;
		snprintf(tag, sizeof tag, "thread %ld", id);
		errno = (int)id + 1;
		usleep(100); /* parks; it may resume on the other worker */
		char want[32];
		snprintf(want, sizeof want, "thread %ld", id);
		if (mine != id * 1000 + i || strcmp(tag, want) != 0 || errno != (int)id + 1)
			bad++;
	}
	return (void *)bad;
}

enum { ROUNDS = 50 };
static pthread_mutex_t turn_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_c = PTHREAD_COND_INITIALIZER;
static int turn;

static void *signal_main(void *arg)
{
	(void)arg;
	for (int i = 0; i < ROUNDS; i++) {
		usleep(300);
		pthread_mutex_lock(&turn_m);
		turn++;
		pthread_cond_signal(&turn_c);
		pthread_mutex_unlock(&turn_m);
	}
	return NULL;
}

TCASE(thread_locals_belong_to_each_user_thread)
{
	if (getenv("CAPRICE_TEST_SANITIZED"))
		TSKIP("TLS per user thread is off in sanitized builds (ASan keeps its own "
		      "per-thread state in TLS)");
	if (!tc_in_child()) {
		char out[4096];
		const char *env[] = { "CAPRICE_WORKERS=2", "CAPRICE_TLS=thread", NULL };
		int st = tc_run_self("thread_locals_belong_to_each_user_thread", env, out,
		                     sizeof out, 60);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			TFAIL("the CAPRICE_TLS=thread run failed (status %#x):\n%s", st, out);
		return;
	}
	enum { N = 200 };
	pthread_t t[N];
	for (long i = 0; i < N; i++)
		t[i] = tc_spawn(keep_mine, (void *)i);
	/* main's errno too, while it waits and the others run: woken by a
	 * thread elsewhere, it resumes on that thread's worker (main keeps the
	 * initial thread's TCB, which is also worker 0's own) */
	pthread_t sig = tc_spawn(signal_main, NULL);
	long main_bad = 0;
	for (int i = 0; i < ROUNDS; i++) {
		pthread_mutex_lock(&turn_m);
		errno = 4242;
		/* wait for the i+1st increment, not for "a change": signal_main
		 * may add two while main is slow to retake the mutex, and a
		 * main that waited for a change each round would then wait
		 * for a 51st increment that never comes */
		while (turn <= i)
			pthread_cond_wait(&turn_c, &turn_m);
		if (errno != 4242)
			main_bad++;
		pthread_mutex_unlock(&turn_m);
	}
	tc_join(sig);
	long bad = 0;
	for (int i = 0; i < N; i++)
		bad += (long)tc_join(t[i]);
	if (bad || main_bad)
		TFAIL("%ld thread-local values were another thread's, and main's errno %ld times",
		      bad, main_bad);
}
