/* runq.c: the run queue's slow paths: stealing, waiting out a thief, and
 * the owner's donations (runq.h has the protocol). */
#include "runq.h"

#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"
#include "fence.h"
#include "worker.h" /* cp_sched_2d */

uint32_t cp_runq_levels_on CP_HIDDEN;

/* What a queue's detour carries once levels are on. */
static uint32_t levels_detour(void)
{
	return CP_RUNQ_PUSH_LEVELS | (cp_sched_2d ? CP_RUNQ_PICK : 0);
}

void cp_runq_init(struct cp_runq *q)
{
	if (__atomic_load_n(&cp_runq_levels_on, __ATOMIC_ACQUIRE))
		__atomic_or_fetch(&q->detour, levels_detour(), __ATOMIC_RELAXED);
}

void cp_runq_levels_start(void)
{
	if (__atomic_exchange_n(&cp_runq_levels_on, 1, __ATOMIC_ACQ_REL))
		return;
	struct cp_worker **all = __atomic_load_n(&cp_workers, __ATOMIC_ACQUIRE);
	for (int i = 0; all && i < cp_nall; i++) {
		struct cp_worker *w = __atomic_load_n(&all[i], __ATOMIC_ACQUIRE);
		if (w) /* one made later takes it from cp_runq_init */
			__atomic_or_fetch(&w->rq.detour, levels_detour(), __ATOMIC_RELAXED);
	}
}

/* The owner: keeps a detour bit in step with what it stands for. */
static inline void detour_mark(struct cp_runq *q, uint32_t bit, bool on)
{
	if (on && !(q->detour & bit))
		__atomic_or_fetch(&q->detour, bit, __ATOMIC_RELAXED);
	else if (!on && (q->detour & bit))
		__atomic_and_fetch(&q->detour, ~bit, __ATOMIC_RELAXED);
}

void cp_runq_sync(struct cp_runq *q)
{
	/* a thief holds the bit for a system call and a few slots; it is a
	 * kernel thread that may lose its CPU, so back off to the kernel
	 * after a while */
	for (unsigned spins = 0; __atomic_load_n(&q->steal, __ATOMIC_ACQUIRE) & CP_RUNQ_STEALING;
	     spins++) {
		if (spins < 4096)
			cp_cpu_relax();
		else
			syscall(SYS_sched_yield);
	}
}

/* The ring is full, or the overflow lists are in use (FIFO: behind them). */
void cp_runq_push_overflow(struct cp_runq *q, struct cp_thread *t)
{
	int i = t->pinned != 0;
	struct cp_level *l = &q->over[i];
	uint64_t seq = q->over_seq++;
	t->next = NULL;
	if (l->tail) {
		l->tail->next = t;
		l->tail->queued_at = seq;
	} else {
		l->head = t;
		q->over_head_seq[i] = seq;
	}
	l->tail = t;
	__atomic_store_n(&q->over_len, q->over_len + 1, __ATOMIC_RELAXED);
	detour_mark(q, CP_RUNQ_OVER, true);
}

/* Unlinks the head of overflow list i (not empty). */
static struct cp_thread *over_take_head(struct cp_runq *q, int i)
{
	struct cp_level *l = &q->over[i];
	struct cp_thread *t = l->head;
	l->head = t->next;
	if (l->head) {
		q->over_head_seq[i] = t->queued_at;
		__builtin_prefetch(l->head); /* the next refill reads it */
	} else {
		l->tail = NULL;
	}
	t->next = NULL;
	__atomic_store_n(&q->over_len, q->over_len - 1, __ATOMIC_RELAXED);
	return t;
}

static void push_ring(struct cp_runq *q, struct cp_thread *t)
{
	if (q->tail - q->head < CP_RUNQ_RING && !q->over_len) {
		q->ring[q->tail & (CP_RUNQ_RING - 1)] = t;
		__atomic_store_n(&q->tail, q->tail + 1, __ATOMIC_RELEASE);
		return;
	}
	cp_runq_push_overflow(q, t);
}

static void chain_add(struct cp_chain *ch, struct cp_thread *t)
{
	t->next = NULL;
	if (ch->last)
		ch->last->next = t;
	else
		ch->first = t;
	ch->last = t;
	ch->n++;
}

/* Moves overflow threads into free ring slots, oldest first. */
static void refill(struct cp_runq *q)
{
	while (q->over_len && q->tail - q->head < CP_RUNQ_RING) {
		/* the older head: pinned (1) if only it is there or it was
		 * pushed first */
		int i = !q->over[0].head ||
		        (q->over[1].head && q->over_head_seq[1] < q->over_head_seq[0]);
		q->ring[q->tail & (CP_RUNQ_RING - 1)] = over_take_head(q, i);
		__atomic_store_n(&q->tail, q->tail + 1, __ATOMIC_RELEASE);
	}
	detour_mark(q, CP_RUNQ_OVER, q->over_len != 0);
}

/* ---- levels (runq.h) ---- */

static inline bool level_busy(const struct cp_runq *q, uint32_t lv)
{
	return q->level_bits[lv >> 6] & (1ull << (lv & 63));
}

static void level_add(struct cp_runq *q, uint32_t lv, struct cp_thread *t)
{
	struct cp_level *l = &q->level[lv];
	t->next = NULL;
	t->level = (uint8_t)lv;
	if (l->tail)
		l->tail->next = t;
	else
		l->head = t;
	l->tail = t;
	q->level_bits[lv >> 6] |= 1ull << (lv & 63);
	detour_mark(q, CP_RUNQ_LEVELLED, true);
	if (lv == CP_LEVEL_HELD)
		__atomic_store_n(&q->held_len, q->held_len + 1, __ATOMIC_RELAXED);
	else
		__atomic_store_n(&q->level_len, q->level_len + 1, __ATOMIC_RELAXED);
}

/* Unlinks t, which follows prev (NULL: the head) on level lv. */
static struct cp_thread *level_unlink(struct cp_runq *q, uint32_t lv, struct cp_thread *prev,
                                      struct cp_thread *t)
{
	struct cp_level *l = &q->level[lv];
	if (prev)
		prev->next = t->next;
	else
		l->head = t->next;
	if (l->tail == t)
		l->tail = prev;
	if (!l->head)
		q->level_bits[lv >> 6] &= ~(1ull << (lv & 63));
	t->next = NULL;
	t->level = CP_LEVEL_RING;
	if (lv == CP_LEVEL_HELD)
		__atomic_store_n(&q->held_len, q->held_len - 1, __ATOMIC_RELAXED);
	else
		__atomic_store_n(&q->level_len, q->level_len - 1, __ATOMIC_RELAXED);
	detour_mark(q, CP_RUNQ_LEVELLED, q->level_len + q->held_len != 0);
	return t;
}

/* ---- batching by location (runq.h) ---- */

static void batch_add(struct cp_runq *q, struct cp_thread *t)
{
	const struct cp_loc_node *at = t->loc;
	uint32_t i = 0;
	while (i < q->batch_groups && q->batch[i].at != at)
		i++;
	if (i == q->batch_groups) {
		if (i == CP_BATCH_GROUPS) { /* a point past the groups: as before */
			push_ring(q, t);
			return;
		}
		q->batch[i] = (struct cp_batch){ .at = at };
		q->batch_groups++;
	}
	chain_add(&q->batch[i].threads, t);
}

void cp_runq_batch_begin(struct cp_runq *q)
{
	detour_mark(q, CP_RUNQ_BATCH, true);
}

void cp_runq_batch_end(struct cp_runq *q)
{
	detour_mark(q, CP_RUNQ_BATCH, false);
	for (uint32_t i = 0; i < q->batch_groups; i++) {
		for (struct cp_thread *t = q->batch[i].threads.first, *n; t; t = n) {
			n = t->next;
			t->next = NULL;
			push_ring(q, t);
		}
	}
	q->batch_groups = 0;
}

void cp_runq_push_slow(struct cp_runq *q, struct cp_thread *t)
{
	if (!(q->detour & CP_RUNQ_PUSH_LEVELS)) {
		push_ring(q, t);
		return;
	}
	uint32_t lv = cp_policy_level(q, t);
	if (lv == CP_LEVEL_RING) {
		if (q->detour & CP_RUNQ_BATCH)
			batch_add(q, t);
		else
			push_ring(q, t);
		return;
	}
	if (lv >= CP_LEVEL_DEFERRED)
		t->queued_at = cp_now_ns();
	level_add(q, lv, t);
}

/* The head of the first non-empty level of 1..top (top < 128), unlinked;
 * NULL if they are all empty.  Level 0 is the ring's and never set. */
static struct cp_thread *pop_first_upto(struct cp_runq *q, uint32_t top)
{
	uint64_t low = q->level_bits[0] & (top >= 63 ? ~0ull : (2ull << top) - 1);
	uint64_t high = top >= 64 ? q->level_bits[1] & ((2ull << (top - 64)) - 1) : 0;
	uint32_t lv;
	if (low)
		lv = (uint32_t)__builtin_ctzll(low);
	else if (high)
		lv = 64 + (uint32_t)__builtin_ctzll(high);
	else
		return NULL;
	return level_unlink(q, lv, NULL, q->level[lv].head);
}

struct cp_thread *cp_runq_pop_at_least(struct cp_runq *q, int prio)
{
	struct cp_thread *t = pop_first_upto(q, CP_LEVEL_PRIO99 + 99u - (uint32_t)prio);
	if (t)
		cp_runq_count_pin(q, t, -1);
	return t;
}

void cp_runq_relevel(struct cp_runq *q, struct cp_thread *t)
{
	uint32_t lv = t->level;
	if (lv < CP_LEVEL_PRIO99 || lv >= CP_LEVEL_FAVOURED)
		return; /* not on a priority level */
	struct cp_thread *prev = NULL, *c = q->level[lv].head;
	while (c && c != t) {
		prev = c;
		c = c->next;
	}
	if (!c)
		return; /* on another queue's level */
	level_unlink(q, lv, prev, t);
	cp_runq_push_slow(q, t);
}

static inline __attribute__((always_inline)) struct cp_thread *pop_ring(struct cp_runq *q);

/* A held thread goes: the oldest, admitted or aged. */
static struct cp_thread *held_go(struct cp_runq *q, uint64_t now)
{
	q->held_went_at = now;
	return level_unlink(q, CP_LEVEL_HELD, NULL, q->level[CP_LEVEL_HELD].head);
}

/* Some thread is on a level: the highest level above the ring, then the
 * oldest held thread if admission lets it go (it has waited longest for
 * what the ring's threads will not take), then the ring, then the
 * deferred; a deferred thread past its aging bound before all of them,
 * and a held one when none has gone for the held bound (a resource that
 * does not recover lets them go one per bound, oldest first, instead of
 * all at once, which would take the resource past its limit in a
 * burst). */
static struct cp_thread *pop_levels(struct cp_runq *q)
{
	bool deferred = level_busy(q, CP_LEVEL_DEFERRED), held = level_busy(q, CP_LEVEL_HELD);
	uint64_t now = 0;
	if (deferred || held) {
		now = cp_now_ns();
		if (deferred && now - q->level[CP_LEVEL_DEFERRED].head->queued_at > CP_DEFERRED_MAX_NS)
			return level_unlink(q, CP_LEVEL_DEFERRED, NULL, q->level[CP_LEVEL_DEFERRED].head);
		if (held) {
			uint64_t since = q->level[CP_LEVEL_HELD].head->queued_at;
			if (q->held_went_at > since)
				since = q->held_went_at;
			if (now - since > CP_HELD_MAX_NS)
				return held_go(q, now);
		}
	}
	struct cp_thread *t = pop_first_upto(q, CP_LEVEL_FAVOURED); /* above the ring */
	if (t)
		return t;
	if (held && cp_policy_admits(q->level[CP_LEVEL_HELD].head))
		return held_go(q, now);
	while ((t = pop_ring(q)) != NULL) {
		/* queued before its resource ran short: held now (each thread
		 * at most once per wakeup, so the loop is paid for by pushes) */
		if (!(q->detour & CP_RUNQ_PICK) || !cp_policy_holds(q, t))
			return t;
		t->queued_at = cp_now_ns();
		level_add(q, CP_LEVEL_HELD, t);
		held = true;
	}
	if (deferred)
		return level_unlink(q, CP_LEVEL_DEFERRED, NULL, q->level[CP_LEVEL_DEFERRED].head);
	if (held && cp_policy_admits(q->level[CP_LEVEL_HELD].head))
		return held_go(q, cp_now_ns());
	return NULL;
}

bool cp_runq_push_front(struct cp_runq *q, struct cp_thread *t)
{
	if (q->front || (q->detour & (CP_RUNQ_PUSH_LEVELS | CP_RUNQ_LEVELLED | CP_RUNQ_PICK)))
		return false;
	cp_runq_count_pin(q, t, 1);
	q->front = t;
	/* counted with the levels' threads: they too may run now */
	__atomic_store_n(&q->level_len, q->level_len + 1, __ATOMIC_RELAXED);
	detour_mark(q, CP_RUNQ_FRONT, true);
	return true;
}

struct cp_thread *cp_runq_pop_slow(struct cp_runq *q)
{
	if (q->detour & CP_RUNQ_FRONT) {
		struct cp_thread *t = q->front;
		q->front = NULL;
		__atomic_store_n(&q->level_len, q->level_len - 1, __ATOMIC_RELAXED);
		detour_mark(q, CP_RUNQ_FRONT, false);
		return t;
	}
	if (cp_unlikely(q->detour & (CP_RUNQ_LEVELLED | CP_RUNQ_PICK))) {
		/* a thief's bit covers the ring only, but waiting it out here
		 * keeps the order of a pop's reads as the fast path's */
		if (__atomic_load_n(&q->steal, __ATOMIC_ACQUIRE) != 0)
			cp_runq_sync(q);
		return pop_levels(q);
	}
	return pop_ring(q);
}

static inline __attribute__((always_inline)) struct cp_thread *pop_ring(struct cp_runq *q)
{
	for (;;) {
		if (__atomic_load_n(&q->steal, __ATOMIC_ACQUIRE) != 0)
			cp_runq_sync(q);
		if (q->head == q->tail) {
			if (!q->over_len)
				return NULL;
			refill(q);
			continue;
		}
		struct cp_thread *t = __atomic_load_n(&q->ring[q->head & (CP_RUNQ_RING - 1)],
		                                      __ATOMIC_RELAXED);
		__atomic_store_n(&q->head, q->head + 1, __ATOMIC_RELAXED);
		if (t) {
			refill(q);
			cp_runq_prefetch_next(q);
			return t;
		}
		__atomic_sub_fetch(&q->steal, CP_RUNQ_HOLE, __ATOMIC_RELAXED); /* passed a hole */
	}
}

/* Sets the stealing bit; false if another holds it. */
static bool steal_bit_take(struct cp_runq *q)
{
	uint64_t v = __atomic_load_n(&q->steal, __ATOMIC_RELAXED);
	return !(v & CP_RUNQ_STEALING) &&
	       __atomic_compare_exchange_n(&q->steal, &v, v | CP_RUNQ_STEALING, false,
	                                   __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

/* For cp_runq_take: a pinned thread leaves only with take_pinned, and
 * only with TLS of its own (a TCB: CAPRICE_TLS=thread, not on a stack the
 * program gave); on the worker's TLS errno's address is this worker's. */
static inline bool stays(const struct cp_thread *c, bool take_pinned)
{
	return c->pinned && !(take_pinned && c->tcb);
}

struct cp_thread *cp_runq_take(struct cp_runq *q, uint32_t n, bool take_pinned,
                               struct cp_thread **last, uint32_t *taken)
{
	struct cp_chain ch = { 0 };
	*last = NULL;
	*taken = 0;
	/* hold off thieves while we read and clear slots */
	while (!steal_bit_take(q))
		cp_cpu_relax();
	if (!take_pinned) {
		/* exact here: only the owner takes pinned threads, and a
		 * thief's steal is over */
		uint32_t movable = cp_runq_movable(q);
		if (n > movable)
			n = movable;
		if (!n) {
			__atomic_sub_fetch(&q->steal, CP_RUNQ_STEALING, __ATOMIC_RELEASE);
			return NULL;
		}
	}
	uint64_t holes_made = 0;
	for (uint32_t i = q->head; i != q->tail && ch.n < n; i++) {
		struct cp_thread **slot = &q->ring[i & (CP_RUNQ_RING - 1)];
		struct cp_thread *c = *slot;
		if (!c || stays(c, take_pinned))
			continue;
		*slot = NULL;
		chain_add(&ch, c);
		holes_made++;
	}
	/* the overflow lists, behind the ring: movable threads first; pinned
	 * ones that stay go back behind the rest of theirs */
	while (q->over[0].head && ch.n < n)
		chain_add(&ch, over_take_head(q, 0));
	struct cp_chain kept = { 0 };
	while (take_pinned && q->over[1].head && ch.n < n) {
		struct cp_thread *c = over_take_head(q, 1);
		chain_add(stays(c, take_pinned) ? &kept : &ch, c);
	}
	for (struct cp_thread *c = kept.first, *next; c; c = next) {
		next = c->next;
		cp_runq_push_overflow(q, c);
	}
	/* the levels, in the order a pop takes them (held ones last) */
	for (uint32_t lv = 1; lv < CP_LEVELS && ch.n < n; lv++) {
		for (struct cp_thread *c = q->level[lv].head, *prev = NULL, *next; c && ch.n < n;
		     c = next) {
			next = c->next;
			if (stays(c, take_pinned)) {
				prev = c;
				continue;
			}
			chain_add(&ch, level_unlink(q, lv, prev, c));
		}
	}
	/* leading holes: pop would skip them anyway */
	uint64_t holes_passed = 0;
	while (q->head != q->tail && !q->ring[q->head & (CP_RUNQ_RING - 1)]) {
		__atomic_store_n(&q->head, q->head + 1, __ATOMIC_RELAXED);
		holes_passed++;
	}
	__atomic_add_fetch(&q->steal, (holes_made - holes_passed) * CP_RUNQ_HOLE - CP_RUNQ_STEALING,
	                   __ATOMIC_RELEASE);
	refill(q);
	if (take_pinned)
		for (struct cp_thread *c = ch.first; c; c = c->next)
			cp_runq_count_pin(q, c, -1);
	*last = ch.last;
	*taken = ch.n;
	return ch.first;
}

/* Not pinned to its worker (worker TLS: errno's address, after I/O). */
static inline bool movable(struct cp_thread *c)
{
	return !__atomic_load_n(&c->pinned, __ATOMIC_RELAXED);
}

uint32_t cp_runq_steal(struct cp_runq *q, const volatile uint32_t *owner_in_sched,
                       bool take_lone, struct cp_thread **first, struct cp_thread **last)
{
	if (!steal_bit_take(q))
		return 0;
	/* from here on every pop the owner starts waits for us; after the
	 * barrier we see all it did before */
	cp_fence_rare();
	/* an owner inside the scheduler may be claiming the head slot: a pop
	 * that began before the barrier.  in_sched is read first: the owner
	 * stores head before it clears in_sched, so a 0 seen here comes with
	 * the head of any pop that preceded it */
	bool owner_busy = __atomic_load_n(owner_in_sched, __ATOMIC_ACQUIRE) != 0;
	uint32_t head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
	uint32_t tail = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
	if (owner_busy)
		head++;
	uint32_t avail = 0;
	for (uint32_t i = head; (int32_t)(tail - i) > 0; i++) {
		struct cp_thread *c = __atomic_load_n(&q->ring[i & (CP_RUNQ_RING - 1)], __ATOMIC_RELAXED);
		if (c && movable(c))
			avail++;
	}
	uint32_t want = avail - avail / 2; /* half, rounded up */
	if (avail == 1 && !take_lone)
		want = 0;
	struct cp_chain ch = { 0 };
	for (uint32_t i = head; (int32_t)(tail - i) > 0 && ch.n < want; i++) {
		struct cp_thread **slot = &q->ring[i & (CP_RUNQ_RING - 1)];
		struct cp_thread *c = __atomic_load_n(slot, __ATOMIC_RELAXED);
		if (!c || !movable(c))
			continue;
		__atomic_store_n(slot, NULL, __ATOMIC_RELAXED);
		chain_add(&ch, c);
	}
	/* count the holes (for cp_runq_len) and let the owner go on */
	__atomic_add_fetch(&q->steal, ch.n * CP_RUNQ_HOLE - CP_RUNQ_STEALING, __ATOMIC_RELEASE);
	*first = ch.first;
	*last = ch.last;
	return ch.n;
}
