/* timer.h: a worker's deadlines (sleeps, timed waits) in a binary min-heap.
 * Insert and remove are O(log n), the next deadline is O(1): no scan, ever.
 * Each heap has its own lock because a thread woken early cancels its
 * timer from whatever worker it resumed on. */
#ifndef CAPRICE_TIMER_H
#define CAPRICE_TIMER_H

#include <stdint.h>

#include "scheduler.h"

#define CP_TIMER_NONE UINT32_MAX

struct cp_timer_heap {
	struct cp_timer **v;
	uint32_t n, cap;
};

/* All three expect the owning worker's timer lock held. */
int cp_heap_insert(struct cp_timer_heap *h, struct cp_timer *t); /* 0 or ENOMEM */
void cp_heap_remove(struct cp_timer_heap *h, struct cp_timer *t);
static inline struct cp_timer *cp_heap_min(const struct cp_timer_heap *h)
{
	return h->n ? h->v[0] : NULL;
}

#endif
