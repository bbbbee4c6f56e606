/* pl_static.c: a statically linked threaded program; the shim cannot be
 * preloaded into it, and `caprice` must say so and run it anyway. */
#include <pthread.h>
#include <stdio.h>

static void *fn(void *arg)
{
	return (void *)((long)arg * 2);
}

int main(void)
{
	pthread_t t[2];
	long sum = 0;
	for (long i = 0; i < 2; i++)
		if (pthread_create(&t[i], NULL, fn, (void *)(i + 1)))
			return 2;
	for (int i = 0; i < 2; i++) {
		void *r;
		pthread_join(t[i], &r);
		sum += (long)r;
	}
	printf("static ok %ld\n", sum);
	return sum == 6 ? 0 : 1;
}
