/* runq.h: a worker's queue of runnable threads, which idle workers can
 * steal from without the owner's help.
 *
 * The owner pushes and pops with plain loads and stores: a yield is a
 * push, a pop and a switch, with no atomic read-modify-write.  The queue
 * is a ring of CP_RUNQ_RING slots, FIFO, with an owner-only overflow list
 * behind it for when more threads are runnable than the ring holds.
 *
 * Stealing (cp_runq_steal, from another worker) is an asymmetric Dekker
 * protocol: the thief sets `steal` and then runs membarrier(), which puts
 * a full memory barrier on every CPU that runs this process.  After it,
 * every pop the owner starts sees `steal` and waits for the thief, and
 * what the owner did before it is visible to the thief; at most one pop
 * straddles the barrier, and it can only be claiming the head slot, which
 * the thief leaves alone unless the owner is outside the scheduler
 * (in_sched 0: no pop in progress).  So the owner pays one load and a
 * predicted branch per pop, and the thief a system call per steal, which
 * is rare next to switches.  The thief takes threads out of their slots
 * (leaving holes the owner skips) and never writes the owner's indexes.
 *
 * Owner-side operations that read many slots (cp_runq_take: donations)
 * hold `steal` themselves for their duration.
 *
 * Everything goes through these few functions so a location-aware (2D)
 * policy can replace plain FIFO without touching the scheduler loop. */
#ifndef CAPRICE_RUNQ_H
#define CAPRICE_RUNQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compiler.h"
#include "scheduler.h"

#define CP_RUNQ_RING 256u /* a power of two */

struct cp_runq {
	/* written by the owner, read by thieves */
	uint32_t head, tail;          /* ring indexes, free-running */
	uint32_t len;                 /* threads queued; relaxed, a hint for others */
	/* the owner's alone */
	struct cp_thread *over_head, *over_tail; /* behind the ring, FIFO */
	uint32_t over_len;
	/* the steal protocol: `steal` is 1 while a thief (or the owner's
	 * cp_runq_take) works on the ring; `stolen` counts threads thieves
	 * took that `len` still counts */
	_Alignas(CP_CACHELINE) uint32_t steal;
	uint32_t stolen;
	_Alignas(CP_CACHELINE) struct cp_thread *ring[CP_RUNQ_RING];
};

/* The owner: waits out a thief and counts what it took (runq.c). */
void cp_runq_sync(struct cp_runq *q);

static inline uint32_t cp_runq_len(const struct cp_runq *q)
{
	return __atomic_load_n(&q->len, __ATOMIC_RELAXED);
}

static inline void cp_runq_set_len(struct cp_runq *q, uint32_t n)
{
	__atomic_store_n(&q->len, n, __ATOMIC_RELAXED);
}

/* A thief at work, or threads it took still counted: two loads of one
 * cache line that only thieves write. */
static inline bool cp_runq_thief_news(struct cp_runq *q)
{
	return __atomic_load_n(&q->steal, __ATOMIC_ACQUIRE) |
	       __atomic_load_n(&q->stolen, __ATOMIC_RELAXED);
}

static inline void cp_runq_push(struct cp_runq *q, struct cp_thread *t)
{
	t->next = NULL;
	if (cp_likely(q->tail - q->head < CP_RUNQ_RING && !q->over_head)) {
		q->ring[q->tail & (CP_RUNQ_RING - 1)] = t;
		/* the slot before the index: a thief that sees the index sees
		 * the thread */
		__atomic_store_n(&q->tail, q->tail + 1, __ATOMIC_RELEASE);
	} else {
		if (q->over_tail)
			q->over_tail->next = t;
		else
			q->over_head = t;
		q->over_tail = t;
		q->over_len++;
	}
	cp_runq_set_len(q, q->len + 1);
}

/* Moves overflow threads into free ring slots, oldest first. */
static inline void cp_runq_refill(struct cp_runq *q)
{
	while (q->over_head && q->tail - q->head < CP_RUNQ_RING) {
		struct cp_thread *t = q->over_head;
		q->over_head = t->next;
		if (!q->over_head)
			q->over_tail = NULL;
		q->over_len--;
		t->next = NULL;
		q->ring[q->tail & (CP_RUNQ_RING - 1)] = t;
		__atomic_store_n(&q->tail, q->tail + 1, __ATOMIC_RELEASE);
	}
}

static inline struct cp_thread *cp_runq_pop(struct cp_runq *q)
{
	for (;;) {
		if (cp_unlikely(cp_runq_thief_news(q)))
			cp_runq_sync(q);
		if (q->head == q->tail) {
			if (!q->over_head)
				return NULL;
			cp_runq_refill(q);
			continue;
		}
		struct cp_thread *t = __atomic_load_n(&q->ring[q->head & (CP_RUNQ_RING - 1)],
		                                      __ATOMIC_RELAXED);
		__atomic_store_n(&q->head, q->head + 1, __ATOMIC_RELAXED);
		if (cp_likely(t != NULL)) { /* else a hole a thief left */
			cp_runq_set_len(q, q->len - 1);
			if (cp_unlikely(q->over_head != NULL))
				cp_runq_refill(q);
			return t;
		}
	}
}

/* The owner: detaches up to n threads, oldest first, as a NULL-terminated
 * chain; pinned threads stay unless take_pinned (runq.c). */
struct cp_thread *cp_runq_take(struct cp_runq *q, uint32_t n, bool take_pinned,
                               struct cp_thread **last, uint32_t *taken);

/* Another worker: takes up to half of q's movable threads, oldest first,
 * as a chain; owner_in_sched says whether the owner may be mid-pop.
 * Returns how many it took (0 if another thief was at it).  Needs
 * cp_runq_steal_ready(). */
uint32_t cp_runq_steal(struct cp_runq *q, const volatile uint32_t *owner_in_sched,
                       bool take_lone, struct cp_thread **first, struct cp_thread **last);

/* Registers the process for expedited membarrier (at start-up); false if
 * the kernel cannot, and then nobody steals without the victim's help. */
bool cp_runq_steal_init(void);
extern bool cp_runq_steal_ready CP_HIDDEN;

#endif
