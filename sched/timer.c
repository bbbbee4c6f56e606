/* timer.c: the binary min-heap behind each worker's timers. */
#include "timer.h"

#include <errno.h>
#include <stdlib.h>

#include "compiler.h"

static inline void place(struct cp_timer_heap *h, uint32_t i, struct cp_timer *t)
{
	h->v[i] = t;
	t->heap_idx = i;
}

static void sift_up(struct cp_timer_heap *h, uint32_t i)
{
	struct cp_timer *t = h->v[i];
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;
		if (h->v[parent]->deadline <= t->deadline)
			break;
		place(h, i, h->v[parent]);
		i = parent;
	}
	place(h, i, t);
}

static void sift_down(struct cp_timer_heap *h, uint32_t i)
{
	struct cp_timer *t = h->v[i];
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1]->deadline < h->v[c]->deadline)
			c++;
		if (t->deadline <= h->v[c]->deadline)
			break;
		place(h, i, h->v[c]);
		i = c;
	}
	place(h, i, t);
}

int cp_heap_insert(struct cp_timer_heap *h, struct cp_timer *t)
{
	if (h->n == h->cap) {
		uint32_t cap = h->cap ? h->cap * 2 : 256;
		struct cp_timer **v = realloc(h->v, cap * sizeof *v);
		if (!v)
			return ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	place(h, h->n++, t);
	sift_up(h, t->heap_idx);
	return 0;
}

void cp_heap_remove(struct cp_timer_heap *h, struct cp_timer *t)
{
	uint32_t i = t->heap_idx;
	cp_assert(i < h->n && h->v[i] == t);
	t->heap_idx = CP_TIMER_NONE;
	struct cp_timer *last = h->v[--h->n];
	if (i == h->n)
		return;
	place(h, i, last);
	if (i > 0 && h->v[(i - 1) / 2]->deadline > last->deadline)
		sift_up(h, i);
	else
		sift_down(h, i);
}
