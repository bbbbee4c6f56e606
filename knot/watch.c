/* watch.c: the connection watchdog (see watch.h).  A watch's state is
 * one 64-bit word, deadline << 3 | kind << 1 | fired; the watchdog fires
 * with a compare-and-swap, so it only ever fires the deadline it saw.
 * The table holds where each word is; the watchdog reads the words under
 * the table's lock, which watch_remove takes before the word's frame can
 * go away. */
#include "watch.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#define FIRED 1u

struct slot {
	_Atomic uint64_t *word;
	int fd;          /* -1: free; changed under `lock` only */
	int next_free;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot *slots;
static int nslots, high, free_head = -1;

int64_t watch_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int watch_init(long n)
{
	if (n > (1L << 24))
		n = 1L << 24;
	slots = calloc((size_t)n, sizeof *slots);
	if (!slots)
		return -1;
	nslots = (int)n;
	return 0;
}

bool watch_add(struct watch *w, int fd)
{
	int i;
	atomic_store_explicit(&w->word, 0, memory_order_relaxed);
	pthread_mutex_lock(&lock);
	if (free_head >= 0) {
		i = free_head;
		free_head = slots[i].next_free;
	} else if (high < nslots) {
		i = high++;
	} else {
		pthread_mutex_unlock(&lock);
		return false;
	}
	slots[i].word = &w->word;
	slots[i].fd = fd;
	pthread_mutex_unlock(&lock);
	w->slot = i;
	return true;
}

void watch_remove(struct watch *w)
{
	int i = w->slot;
	pthread_mutex_lock(&lock);
	slots[i].fd = -1;
	slots[i].word = NULL;
	slots[i].next_free = free_head;
	free_head = i;
	pthread_mutex_unlock(&lock);
}

bool watch_arm(struct watch *w, int kind, int64_t deadline_ms)
{
	/* A plain store, not a compare-and-swap: if the watchdog fires in
	 * between, it did so for a deadline that had passed, and the owner
	 * sees its call fail and closes (without the 408). */
	uint64_t old = atomic_load_explicit(&w->word, memory_order_relaxed);
	if (old & FIRED)
		return false;
	atomic_store_explicit(&w->word, ((uint64_t)deadline_ms << 3) | ((uint64_t)kind << 1),
	                      memory_order_relaxed);
	return true;
}

bool watch_fired(const struct watch *w)
{
	return atomic_load_explicit(&w->word, memory_order_relaxed) & FIRED;
}

void *watch_thread(void *arg)
{
	long period = (long)(intptr_t)arg;
	struct timespec ts = { period / 1000, (period % 1000) * 1000000L };
	for (;;) {
		nanosleep(&ts, NULL);
		int64_t now = watch_now_ms();
		pthread_mutex_lock(&lock);
		for (int i = 0; i < high; i++) {
			struct slot *s = &slots[i];
			if (s->fd < 0)
				continue;
			uint64_t w = atomic_load_explicit(s->word, memory_order_relaxed);
			if (w == 0 || (w & FIRED) || (int64_t)(w >> 3) > now)
				continue;
			if (!atomic_compare_exchange_strong_explicit(s->word, &w, w | FIRED,
			                                             memory_order_relaxed,
			                                             memory_order_relaxed))
				continue; /* re-armed meanwhile */
			/* SHUT_RD wakes a blocked recv (it returns 0) and leaves
			 * the way out open for a 408; SHUT_RDWR also fails a
			 * blocked send */
			shutdown(s->fd, ((w >> 1) & 3) == WATCH_READ ? SHUT_RD : SHUT_RDWR);
		}
		pthread_mutex_unlock(&lock);
	}
	return NULL;
}
