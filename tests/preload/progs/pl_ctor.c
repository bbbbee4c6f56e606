/* pl_ctor.c: threads created by a constructor, before main runs, and
 * joined in main.  The constructor's threads wait on a condvar for main
 * to open the gate, so they provably span the start of main. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#define N 4

static pthread_t early[N];
static int created, results[N], main_started;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate = PTHREAD_COND_INITIALIZER;

static void *early_fn(void *arg)
{
	long i = (long)arg;
	usleep(1000);
	pthread_mutex_lock(&lock);
	while (!main_started)
		pthread_cond_wait(&gate, &lock);
	pthread_mutex_unlock(&lock);
	results[i] = (int)(i * i + 1);
	return (void *)(i + 100);
}

__attribute__((constructor)) static void start_early(void)
{
	for (long i = 0; i < N; i++)
		if (pthread_create(&early[i], NULL, early_fn, (void *)i) == 0)
			created++;
}

int main(void)
{
	if (created != N) {
		printf("constructor created %d of %d threads\n", created, N);
		return 1;
	}
	pthread_mutex_lock(&lock);
	main_started = 1;
	pthread_cond_broadcast(&gate);
	pthread_mutex_unlock(&lock);
	int bad = 0;
	for (long i = 0; i < N; i++) {
		void *ret = NULL;
		int e = pthread_join(early[i], &ret);
		if (e || ret != (void *)(i + 100) || results[i] != i * i + 1) {
			printf("thread %ld: join %d ret %p result %d\n", i, e, ret, results[i]);
			bad = 1;
		}
	}
	printf("ctor %s\n", bad ? "FAILED" : "ok");
	return bad;
}
