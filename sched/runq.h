/* runq.h: a worker's queue of runnable threads.
 *
 * Touched only by its own worker (thieves ask, the owner donates), so it
 * needs no atomics: a yield is a push, a pop and a switch.  Everything
 * goes through these few functions so a location-aware (2D) policy can
 * replace plain FIFO without touching the scheduler loop. */
#ifndef CAPRICE_RUNQ_H
#define CAPRICE_RUNQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler.h"

struct cp_runq {
	struct cp_thread *head, *tail;
	uint32_t len;  /* read by thieves without the owner's help: relaxed */
};

static inline void cp_runq_set_len(struct cp_runq *q, uint32_t n)
{
	__atomic_store_n(&q->len, n, __ATOMIC_RELAXED);
}

static inline uint32_t cp_runq_len(const struct cp_runq *q)
{
	return __atomic_load_n(&q->len, __ATOMIC_RELAXED);
}

static inline void cp_runq_push(struct cp_runq *q, struct cp_thread *t)
{
	t->next = NULL;
	if (q->tail)
		q->tail->next = t;
	else
		q->head = t;
	q->tail = t;
	cp_runq_set_len(q, q->len + 1);
}

static inline struct cp_thread *cp_runq_pop(struct cp_runq *q)
{
	struct cp_thread *t = q->head;
	if (t) {
		q->head = t->next;
		if (!q->head)
			q->tail = NULL;
		cp_runq_set_len(q, q->len - 1);
	}
	return t;
}

/* Detaches up to n threads, oldest first, as a NULL-terminated chain;
 * pinned threads stay unless take_pinned. */
static inline struct cp_thread *cp_runq_take(struct cp_runq *q, uint32_t n, bool take_pinned,
                                             struct cp_thread **last, uint32_t *taken)
{
	struct cp_thread *first = NULL, *end = NULL, *prev = NULL;
	uint32_t k = 0;
	for (struct cp_thread *c = q->head, *next; c && k < n; c = next) {
		next = c->next;
		if (c->pinned && !take_pinned) {
			prev = c;
			continue;
		}
		/* unlink c */
		if (prev)
			prev->next = next;
		else
			q->head = next;
		if (q->tail == c)
			q->tail = prev;
		c->next = NULL;
		if (end)
			end->next = c;
		else
			first = c;
		end = c;
		k++;
	}
	cp_runq_set_len(q, q->len - k);
	*last = end;
	*taken = k;
	return first;
}

#endif
