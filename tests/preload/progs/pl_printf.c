/* pl_printf.c: 1,000 threads printf lines to one FILE (stdout, a pipe when
 * the driver runs it).  Each line is "T tid L line <payload>"; the driver
 * checks that every line arrives whole, exactly once. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>

#define THREADS 1000
#define LINES 20

static pthread_barrier_t start;

static void *talker(void *arg)
{
	int id = (int)(long)arg;
	pthread_barrier_wait(&start);
	for (int l = 0; l < LINES; l++) {
		char payload[161];
		int len = 20 + (id * 7 + l * 13) % 140;
		for (int i = 0; i < len; i++)
			payload[i] = (char)('a' + (id + l + i) % 26);
		payload[len] = 0;
		printf("T %d L %d %s\n", id, l, payload);
		if (l % 4 == 0)
			sched_yield();
	}
	return NULL;
}

int main(void)
{
	static pthread_t t[THREADS];
	/* all start at once, so their lines contend for the FILE */
	pthread_barrier_init(&start, NULL, THREADS);
	for (long i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], NULL, talker, (void *)i)) {
			fprintf(stderr, "pthread_create %ld failed\n", i);
			return 2;
		}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	printf("END\n");
	return 0;
}
