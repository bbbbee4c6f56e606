/* depot.h: a shared store of free blocks of stack memory (pooled stacks,
 * linked-stack chunks) that keeps what a load needs committed and gives
 * back the pages of what it does not.
 *
 * A block freed to the depot stays committed ("hot"): the next thread to
 * take it pays no page faults.  Giving pages back at each free, past a
 * fixed count, made a server whose thousands of connections close and
 * reopen pay a madvise (and a TLB shootdown on every core running the
 * process) per closing connection, then page faults for each block taken
 * again: at 10,000 connections that madvise was 3% of knot's CPU.
 * Instead, as an allocator's decay does, cp_depot_decay (the monitor's,
 * about once a second) gives back the oldest hot blocks past `keep` that
 * no taker needed during the whole interval since its last call: the
 * fewest hot blocks seen meanwhile, past `keep`.  A given-back ("cold")
 * block keeps the page that holds its link, and is taken after the hot
 * ones. */
#ifndef CAPRICE_DEPOT_H
#define CAPRICE_DEPOT_H

#include <stdint.h>

#include "spinlock.h"

/* Lives inside the free block it links, in memory that stays committed. */
struct cp_depot_link {
	struct cp_depot_link *newer, *older;
};

struct cp_depot {
	cp_spinlock lock;
	struct cp_depot_link *hot_new, *hot_old; /* the hot list's ends */
	struct cp_depot_link *cold;
	uint64_t hot, cold_count;
	uint64_t hot_low;   /* the fewest hot since the last decay */
	uint64_t keep;      /* hot blocks never given back */
	uint64_t decayed_at;
	/* gives the block's pages back, but the one holding its link */
	void (*give_back)(struct cp_depot_link *l);
};

#define CP_DEPOT_INIT(keep_, give_back_) \
	{ .lock = CP_SPINLOCK_INIT, .keep = (keep_), .give_back = (give_back_) }

/* The decay's interval. */
#define CP_DEPOT_DECAY_NS 1000000000ull

void cp_depot_push(struct cp_depot *d, struct cp_depot_link *l);
/* The newest hot block, else a cold one, else NULL. */
struct cp_depot_link *cp_depot_pop(struct cp_depot *d);
/* Called often (now_ns: CLOCK_MONOTONIC); acts once an interval has
 * passed since it last did.  Gives pages back outside the lock, at most
 * a few hundred blocks per hold of it. */
void cp_depot_decay(struct cp_depot *d, uint64_t now_ns);
/* Blocks held, hot and cold. */
uint64_t cp_depot_count(struct cp_depot *d);
/* In the child of fork(): its lock may have been held by a thread that
 * does not exist there. */
void cp_depot_after_fork(struct cp_depot *d);

#endif
