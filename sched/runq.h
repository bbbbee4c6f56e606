/* runq.h: a worker's queue of runnable threads, which idle workers can
 * steal from without the owner's help.
 *
 * The owner pushes and pops with plain loads and stores: a yield is a
 * push, a pop and a switch, with no atomic read-modify-write.  The queue
 * is a ring of CP_RUNQ_RING slots, FIFO, with an owner-only overflow list
 * behind it for when more threads are runnable than the ring holds.
 *
 * Stealing (cp_runq_steal, from another worker) is an asymmetric Dekker
 * protocol (fence.h): the thief sets a bit of `steal` and then runs membarrier(), which puts
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
 * Levels.  A thread with a real-time priority, or one the location-aware
 * (2D) policy favours, defers or holds back (policy.c), does not take its
 * turn in the ring: it waits on one of the owner's level lists, FIFO
 * each, behind a bitmap.  A pop takes the highest non-empty level above
 * the ring (priorities 99..1, then the 2D policy's favoured), then the
 * ring, then the deferred, then the held ones, if admission lets them go;
 * a deferred or held thread that waited past its aging bound goes first.
 * So the pick stays O(1): a find-first-set over two words and a look at
 * two list heads.  Level lists are the owner's, like the overflow list:
 * thieves take from the ring only (a priority thread runs before lower
 * ones on its worker).  A program with no priorities under the FIFO
 * policy never puts a thread there, and pays nothing for them: pushes
 * and pops test one word (`detour`) for the overflow list and the levels
 * alike.
 *
 * Batching.  Under the 2D policy, the threads that one reap of the
 * worker's io_uring completions wakes are staged by the blocking point
 * they parked at (up to CP_BATCH_GROUPS points; the rest go to the ring
 * at once) and go to the ring a point at a time, in the order each point
 * first woke one: threads that run the same code next run back to back,
 * so that code and its data stay in the caches (Capriccio's batching by
 * location), instead of in the order their completions happened to come.
 *
 * Everything goes through these few functions, so the policies change
 * the order of runnable threads without touching the scheduler loop. */
#ifndef CAPRICE_RUNQ_H
#define CAPRICE_RUNQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compiler.h"
#include "scheduler.h"

#define CP_RUNQ_RING 256u /* a power of two */

/* Levels, in the order a pop takes them (cp_thread.level) */
enum {
	CP_LEVEL_RING = 0,       /* in the ring: the FIFO everyone is in by default */
	CP_LEVEL_PRIO99 = 1,     /* priority p (1..99) is level 100 - p */
	CP_LEVEL_FAVOURED = 100, /* the 2D policy's: about to release a short resource */
	/* the ring comes here */
	CP_LEVEL_DEFERRED = 101, /* the 2D policy's: long predicted work */
	CP_LEVEL_HELD = 102,     /* the 2D policy's: about to take a short resource */
	CP_LEVELS
};

#define CP_RUNQ_OVER 1u        /* detour: the overflow list is in use */
#define CP_RUNQ_LEVELLED 2u    /* detour: threads wait on levels */
#define CP_RUNQ_PUSH_LEVELS 4u /* detour: a pushed thread may need a level */
#define CP_RUNQ_PICK 8u        /* detour: a pick looks at what it takes from
                                  the ring (the 2D policy's admission) */
#define CP_RUNQ_BATCH 16u      /* detour: pushes to the ring are staged */
#define CP_RUNQ_FRONT 32u      /* detour: a thread waits in `front` */
#define CP_RUNQ_POP_DETOUR (CP_RUNQ_OVER | CP_RUNQ_LEVELLED | CP_RUNQ_PICK | CP_RUNQ_FRONT)

/* A NULL-terminated chain of threads being gathered, oldest first. */
struct cp_chain {
	struct cp_thread *first, *last;
	uint32_t n;
};

#define CP_BATCH_GROUPS 8
struct cp_batch {
	const struct cp_loc_node *at;  /* where its threads blocked (NULL: nowhere yet) */
	struct cp_chain threads;
};

struct cp_level {
	struct cp_thread *head, *tail;
};

struct cp_runq {
	/* written by the owner, read by thieves */
	uint32_t head, tail;          /* ring indexes, free-running */
	uint32_t over_len;            /* threads on the overflow lists */
	uint32_t level_len;           /* threads on levels that may run now */
	uint32_t held_len;            /* threads held back by admission */
	/* queued threads that must run here (cp_thread.pinned): a thread
	 * woken from I/O is, until it has run, so in a server nearly every
	 * queued thread is; thieves and donations look at this before they
	 * walk the queue (walking 1,000 connections' pinned threads, a cache
	 * miss each, to find none to move was a third of knot's user time) */
	uint32_t pinned_len;
	/* nonzero: pushes (any bit) or pops (CP_RUNQ_POP_DETOUR) take the
	 * slow path, so the fast ones test one word as they did the overflow
	 * list alone; set by the owner, and CP_RUNQ_PUSH_LEVELS and
	 * CP_RUNQ_PICK, which are never cleared, by anyone */
	uint32_t detour;
	/* the owner's alone.  The overflow list, behind the ring, is two
	 * FIFO lists: [0] threads that may move, [1] pinned ones, so that a
	 * donation takes movable threads without walking past pinned ones
	 * (at 10,000 connections that walk, a cache miss per thread, took
	 * 1.3 of the 22.5 us knot's samples came to per request).  Each push
	 * is numbered, and a thread there keeps the number of the one behind
	 * it (queued_at): a refill takes the older head without reading the
	 * other list's. */
	struct cp_level over[2];
	struct cp_thread *front;      /* runs before the ring (cp_runq_push_front) */
	uint64_t over_head_seq[2];
	uint64_t over_seq;
	uint64_t level_bits[2];       /* bit L: level L's list is not empty */
	struct cp_level level[CP_LEVELS];
	uint64_t held_went_at;        /* when a held thread last went */
	struct cp_batch batch[CP_BATCH_GROUPS]; /* staged, while CP_RUNQ_BATCH */
	uint32_t batch_groups;
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
	return n + __atomic_load_n(&q->over_len, __ATOMIC_RELAXED) +
	       __atomic_load_n(&q->level_len, __ATOMIC_RELAXED);
}

/* Queued threads that may move to another worker (read racily by
 * others; held threads count as pinned ones would, so it may read low). */
static inline uint32_t cp_runq_movable(const struct cp_runq *q)
{
	uint32_t n = cp_runq_len(q), pinned = __atomic_load_n(&q->pinned_len, __ATOMIC_RELAXED);
	return n > pinned ? n - pinned : 0;
}

/* Threads held back by admission (they do not count as runnable). */
static inline uint32_t cp_runq_held(const struct cp_runq *q)
{
	return __atomic_load_n(&q->held_len, __ATOMIC_RELAXED);
}

/* Set once a thread may go on a level (a priority was set, or the 2D
 * policy is on); never cleared.  cp_runq_levels_start sets it and each
 * queue's CP_RUNQ_PUSH_LEVELS (and CP_RUNQ_PICK under the 2D policy); a
 * queue made later (a new worker, fork) takes them from cp_runq_init. */
extern uint32_t cp_runq_levels_on CP_HIDDEN;
void cp_runq_levels_start(void);
void cp_runq_init(struct cp_runq *q);

/* The slow paths (runq.c): the overflow list, holes, a thief at work,
 * levels. */
void cp_runq_push_overflow(struct cp_runq *q, struct cp_thread *t);
void cp_runq_push_slow(struct cp_runq *q, struct cp_thread *t);
struct cp_thread *cp_runq_pop_slow(struct cp_runq *q);

/* t enters or leaves q: its pin counts while it is queued (a thread's
 * pin is set before its wakeup queues it, and cleared after it runs) */
static inline void cp_runq_count_pin(struct cp_runq *q, const struct cp_thread *t, int32_t dir)
{
	__atomic_store_n(&q->pinned_len, q->pinned_len + (uint32_t)dir * t->pinned,
	                 __ATOMIC_RELAXED);
}

static inline __attribute__((always_inline)) void cp_runq_push(struct cp_runq *q,
                                                               struct cp_thread *t)
{
	cp_runq_count_pin(q, t, 1);
	if (cp_likely(q->tail - q->head < CP_RUNQ_RING && q->detour == 0)) {
		q->ring[q->tail & (CP_RUNQ_RING - 1)] = t;
		/* the slot before the index: a thief that sees the index sees
		 * the thread */
		__atomic_store_n(&q->tail, q->tail + 1, __ATOMIC_RELEASE);
		return;
	}
	cp_runq_push_slow(q, t);
}

/* The owner: t runs next, before every queued thread (a brief yield,
 * sched.c; an acceptor's wakeup, wake.c), from a slot of its own that the
 * next pop empties and that no thief or donation takes from.  False when
 * it cannot (the slot taken, or levels in use): then push it as usual. */
bool cp_runq_push_front(struct cp_runq *q, struct cp_thread *t);

/* The owner, having taken the head: the record of the thread behind it,
 * which runs next, starts on its way into the cache now, while this one
 * runs (with thousands of threads queued it is no longer there). */
static inline void cp_runq_prefetch_next(const struct cp_runq *q)
{
	__builtin_prefetch(__atomic_load_n(&q->ring[q->head & (CP_RUNQ_RING - 1)], __ATOMIC_RELAXED));
}

static inline __attribute__((always_inline)) struct cp_thread *cp_runq_pop(struct cp_runq *q)
{
	if (cp_likely(__atomic_load_n(&q->steal, __ATOMIC_ACQUIRE) == 0 && q->head != q->tail &&
	              (q->detour & CP_RUNQ_POP_DETOUR) == 0)) {
		struct cp_thread *t = __atomic_load_n(&q->ring[q->head & (CP_RUNQ_RING - 1)],
		                                      __ATOMIC_RELAXED);
		if (cp_likely(t != NULL)) {
			__atomic_store_n(&q->head, q->head + 1, __ATOMIC_RELAXED);
			cp_runq_prefetch_next(q);
			cp_runq_count_pin(q, t, -1);
			return t;
		}
	}
	struct cp_thread *t = cp_runq_pop_slow(q);
	if (t)
		cp_runq_count_pin(q, t, -1);
	return t;
}

/* The owner, around a reap of its completions under the 2D policy:
 * from begin to end, threads pushed to the ring are staged by blocking
 * point, and end queues them a point at a time. */
void cp_runq_batch_begin(struct cp_runq *q);
void cp_runq_batch_end(struct cp_runq *q);

/* The owner, for a yield by a thread of priority prio (1..99): the first
 * queued thread of that priority or higher, or NULL (a lower one, or
 * one on the ring, does not displace it, as on NPTL). */
struct cp_thread *cp_runq_pop_at_least(struct cp_runq *q, int prio);

/* The owner: t, if it waits on a priority level of q, moves to the level
 * of its priority now (it may be on the ring, in an inbox, parked or
 * running elsewhere: then nothing happens). */
void cp_runq_relevel(struct cp_runq *q, struct cp_thread *t);

/* The policy (policy.c): the level a thread being queued goes to, and
 * whether a held thread may go now.  Aging bounds: a deferred thread
 * waits at most CP_DEFERRED_MAX_NS behind the ring; held threads go
 * oldest first, and while their resource does not recover one goes every
 * CP_HELD_MAX_NS, so the n-th in line waits at most n times that. */
uint32_t cp_policy_level(struct cp_runq *q, struct cp_thread *t);
bool cp_policy_admits(struct cp_thread *t);
/* The 2D policy, at the pick: t, taken from the ring, is about to take a
 * resource that ran short since it was queued, and must be held. */
bool cp_policy_holds(struct cp_runq *q, struct cp_thread *t);
#define CP_DEFERRED_MAX_NS 20000000ull
#define CP_HELD_MAX_NS 200000000ull

/* The owner: detaches up to n threads, oldest first, as a NULL-terminated
 * chain; pinned threads stay, but with take_pinned those with TLS of
 * their own (a TCB) go too (runq.c). */
struct cp_thread *cp_runq_take(struct cp_runq *q, uint32_t n, bool take_pinned,
                               struct cp_thread **last, uint32_t *taken);

/* Another worker: takes up to half of q's movable threads, oldest first,
 * as a chain; owner_in_sched says whether the owner may be mid-pop.
 * Returns how many it took (0 if another thief was at it).  Needs
 * cp_membarrier_ready (fence.h): the owner's side of the handshake has
 * no barrier of its own. */
uint32_t cp_runq_steal(struct cp_runq *q, const volatile uint32_t *owner_in_sched,
                       bool take_lone, struct cp_thread **first, struct cp_thread **last);

#endif
