/* pl_prodcons.c: producers and consumers on a bounded queue guarded by a
 * mutex and two condition variables; plain pthreads.  Prints
 * "produced COUNT SUM consumed COUNT SUM" and exits 0 when they match. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define PRODUCERS 4
#define CONSUMERS 4
#define ITEMS 50000 /* per producer */
#define QCAP 16

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER;
static unsigned long long queue[QCAP];
static int head, count, producers_left = PRODUCERS;
static unsigned long long produced_sum, consumed_sum;
static long produced_n, consumed_n;

static void *producer(void *arg)
{
	unsigned long long id = (unsigned long long)(long)arg, sum = 0;
	for (unsigned long long k = 0; k < ITEMS; k++) {
		unsigned long long v = id * 1000003ull + k * k;
		pthread_mutex_lock(&lock);
		while (count == QCAP)
			pthread_cond_wait(&not_full, &lock);
		queue[(head + count) % QCAP] = v;
		count++;
		pthread_cond_signal(&not_empty);
		pthread_mutex_unlock(&lock);
		sum += v;
	}
	pthread_mutex_lock(&lock);
	produced_sum += sum;
	produced_n += ITEMS;
	if (--producers_left == 0)
		pthread_cond_broadcast(&not_empty);
	pthread_mutex_unlock(&lock);
	return NULL;
}

static void *consumer(void *arg)
{
	(void)arg;
	unsigned long long sum = 0;
	long n = 0;
	pthread_mutex_lock(&lock);
	for (;;) {
		while (count == 0 && producers_left > 0)
			pthread_cond_wait(&not_empty, &lock);
		if (count == 0)
			break;
		unsigned long long v = queue[head];
		head = (head + 1) % QCAP;
		count--;
		pthread_cond_signal(&not_full);
		pthread_mutex_unlock(&lock);
		sum += v;
		n++;
		pthread_mutex_lock(&lock);
	}
	consumed_sum += sum;
	consumed_n += n;
	pthread_mutex_unlock(&lock);
	return NULL;
}

int main(void)
{
	pthread_t p[PRODUCERS], c[CONSUMERS];
	for (long i = 0; i < CONSUMERS; i++)
		if (pthread_create(&c[i], NULL, consumer, NULL))
			return 2;
	for (long i = 0; i < PRODUCERS; i++)
		if (pthread_create(&p[i], NULL, producer, (void *)(i + 1)))
			return 2;
	for (int i = 0; i < PRODUCERS; i++)
		pthread_join(p[i], NULL);
	for (int i = 0; i < CONSUMERS; i++)
		pthread_join(c[i], NULL);
	printf("produced %ld %llu consumed %ld %llu\n", produced_n, produced_sum, consumed_n,
	       consumed_sum);
	return produced_n == consumed_n && produced_sum == consumed_sum ? 0 : 1;
}
