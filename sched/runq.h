/* runq.h: a worker's queue of runnable threads, which idle workers can
 * steal from without the owner's help.
 *
 * The owner pushes and pops with plain loads and stores: a yield is a
 * push, a pop and a switch, with no atomic read-modify-write.  The queue
 * is a ring of CP_RUNQ_RING slots, FIFO, with an owner-only overflow list
 * behind it for when more threads are runnable than the ring holds.
 *
 * Stealing (cp_runq_steal, from another worker) is an asymmetric Dekker
 * protocol: the thief sets a bit of `steal` and then runs membarrier(), which puts
 * a full memory barrier on every CPU that runs this process.  After it,
 * every pop the owner starts sees `steal` and waits for the thief, and
 * what the owner did before it is visible to the thief; at most one pop
 * straddles the barrier, and it can only be claiming the head slot, which
 * the thief leaves alone unless the owner is outside the scheduler
 * (in_sched 0: no pop in progress).  So the owner pays one load and a
 * predicted branch per pop, and the thief a system call per steal, which
 * is rare next to switches.  The thief takes threads out of their slots
 * (leaving holes the owner skips) and never writes the owner's indexes.
 * The running thread is never on the queue: a yield puts it back only
 * once its context is saved (sched.c).
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
	uint32_t over_len;            /* threads on the overflow list */
	/* the owner's alone */
	struct cp_thread *over_head, *over_tail; /* behind the ring, FIFO */
	/* the steal protocol, one word so that the owner's check is one
	 * load: bit 0 is set while a thief (or the owner's cp_runq_take)
	 * works on the ring; the high half counts the holes between head and
	 * tail (slots emptied by a thief or by cp_runq_take), so that the
	 * length others read is exact: every emptied slot adds one, and the
	 * owner subtracts one for each it passes */
	_Alignas(CP_CACHELINE) uint64_t steal;
	_Alignas(CP_CACHELINE) struct cp_thread *ring[CP_RUNQ_RING];
};
#define CP_RUNQ_STEALING 1ull
#define CP_RUNQ_HOLE (1ull << 32)

/* The owner: waits out a thief (runq.c). */
void cp_runq_sync(struct cp_runq *q);

/* Threads queued (read racily by others). */
static inline uint32_t cp_runq_len(const struct cp_runq *q)
{
	uint32_t n = __atomic_load_n(&q->tail, __ATOMIC_RELAXED) -
	             __atomic_load_n(&q->head, __ATOMIC_RELAXED);
	uint32_t holes = (uint32_t)(__atomic_load_n(&q->steal, __ATOMIC_RELAXED) >> 32);
	n = n > holes ? n - holes : 0;
	return n + __atomic_load_n(&q->over_len, __ATOMIC_RELAXED);
}

/* The slow paths (runq.c): the overflow list, holes, a thief at work. */
void cp_runq_push_overflow(struct cp_runq *q, struct cp_thread *t);
struct cp_thread *cp_runq_pop_slow(struct cp_runq *q);

static inline __attribute__((always_inline)) void cp_runq_push(struct cp_runq *q,
                                                               struct cp_thread *t)
{
	if (cp_likely(q->tail - q->head < CP_RUNQ_RING && !q->over_head)) {
		q->ring[q->tail & (CP_RUNQ_RING - 1)] = t;
		/* the slot before the index: a thief that sees the index sees
		 * the thread */
		__atomic_store_n(&q->tail, q->tail + 1, __ATOMIC_RELEASE);
		return;
	}
	cp_runq_push_overflow(q, t);
}

static inline __attribute__((always_inline)) struct cp_thread *cp_runq_pop(struct cp_runq *q)
{
	if (cp_likely(__atomic_load_n(&q->steal, __ATOMIC_ACQUIRE) == 0 && q->head != q->tail &&
	              q->over_head == NULL)) {
		struct cp_thread *t = __atomic_load_n(&q->ring[q->head & (CP_RUNQ_RING - 1)],
		                                      __ATOMIC_RELAXED);
		if (cp_likely(t != NULL)) {
			__atomic_store_n(&q->head, q->head + 1, __ATOMIC_RELAXED);
			return t;
		}
	}
	return cp_runq_pop_slow(q);
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
