/* pl_waiters.c: `pl_waiters N` creates N threads with default attributes
 * that all block on one condvar; once every one of them is waiting it
 * prints "waiting N kthreads K" (K from /proc/self/status), broadcasts,
 * joins them all and prints "joined N". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t arrived = PTHREAD_COND_INITIALIZER;
static pthread_cond_t go_cond = PTHREAD_COND_INITIALIZER;
static long waiting, woke;
static int go;

static void *waiter(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	waiting++;
	pthread_cond_signal(&arrived);
	while (!go)
		pthread_cond_wait(&go_cond, &lock);
	woke++;
	pthread_mutex_unlock(&lock);
	return NULL;
}

static long kthreads(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long n = -1;
	while (f && fgets(line, sizeof line, f))
		if (strncmp(line, "Threads:", 8) == 0)
			n = atol(line + 8);
	if (f)
		fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	pthread_t *t = calloc((size_t)n, sizeof *t);
	if (!t)
		return 2;
	for (long i = 0; i < n; i++) {
		int e = pthread_create(&t[i], NULL, waiter, NULL);
		if (e) {
			printf("pthread_create #%ld: %s\n", i, strerror(e));
			return 1;
		}
	}
	pthread_mutex_lock(&lock);
	while (waiting < n)
		pthread_cond_wait(&arrived, &lock);
	pthread_mutex_unlock(&lock);
	printf("waiting %ld kthreads %ld\n", n, kthreads());
	fflush(stdout);
	pthread_mutex_lock(&lock);
	go = 1;
	pthread_cond_broadcast(&go_cond);
	pthread_mutex_unlock(&lock);
	for (long i = 0; i < n; i++)
		if (pthread_join(t[i], NULL))
			return 1;
	printf("joined %ld woke %ld\n", n, woke);
	return woke == n ? 0 : 1;
}
