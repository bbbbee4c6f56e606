/* timer.c: each worker's timers: the clock, the binary min-heap, and
 * adding, cancelling and firing them (see timer.h for why a heap). */
#include "timer.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "compiler.h"
#include "timespec.h"
#include "worker.h"
#include "rtmem.h"

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);
static clock_gettime_fn c_clock_gettime;

static CP_COLD clock_gettime_fn find_clock_gettime(void)
{
	clock_gettime_fn f = (clock_gettime_fn)cp_c_library_symbol("clock_gettime");
	__atomic_store_n(&c_clock_gettime, f, __ATOMIC_RELEASE);
	return f;
}

/* Room the C library's clock_gettime and the vDSO under it get below this
 * frame.  They are code without split-stack prologues, called through a
 * pointer, which gold cannot send to a big chunk; a frame this size passes
 * its split-stack check only with the chunk's whole slack (linked.c)
 * still free below it, where they need a few hundred bytes. */
#define CLOCK_ROOM 256

CP_NOINLINE int cp_clock_gettime(clockid_t clock, struct timespec *ts)
{
	clock_gettime_fn f = __atomic_load_n(&c_clock_gettime, __ATOMIC_ACQUIRE);
	if (cp_unlikely(!f))
		f = find_clock_gettime();
	char room[CLOCK_ROOM];
	__asm__ volatile("" : : "r"(room) : "memory");
	return f(clock, ts);
}

uint64_t cp_now_ns(void)
{
	struct timespec ts;
	cp_clock_gettime(CLOCK_MONOTONIC, &ts);
	return cp_ts_to_ns(&ts);
}

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

/* Out of line: a C library call moves its caller to a big chunk on a
 * linked stack (linked.c). */
static CP_COLD int heap_grow(struct cp_timer_heap *h)
{
	uint32_t cap = h->cap ? h->cap * 2 : 256;
	struct cp_timer **v = cp_rt_realloc(h->v, cap * sizeof *v);
	if (!v)
		return ENOMEM;
	h->v = v;
	h->cap = cap;
	return 0;
}

int cp_heap_insert(struct cp_timer_heap *h, struct cp_timer *t)
{
	if (cp_unlikely(h->n == h->cap) && heap_grow(h))
		return ENOMEM;
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

/* With w's timer lock held: the heap minimum, as the relaxed copy that
 * lets every look around skip the lock when nothing is due. */
static void publish_next_deadline(struct cp_worker *w)
{
	struct cp_timer *m = cp_heap_min(&w->timers);
	__atomic_store_n(&w->next_deadline, m ? m->deadline : CP_NO_DEADLINE, __ATOMIC_RELAXED);
}

int cp_timer_add(struct cp_worker *w, struct cp_timer *t)
{
	t->owner = w;
	cp_spin_lock(&w->timer_lock);
	int e = cp_heap_insert(&w->timers, t);
	if (!e && cp_heap_min(&w->timers) == t)
		__atomic_store_n(&w->next_deadline, t->deadline, __ATOMIC_RELAXED);
	cp_spin_unlock(&w->timer_lock);
	return e;
}

void cp_timer_cancel(struct cp_timer *t)
{
	struct cp_worker *w = t->owner;
	cp_spin_lock(&w->timer_lock);
	if (t->heap_idx != CP_TIMER_NONE) {
		cp_heap_remove(&w->timers, t);
		publish_next_deadline(w);
	}
	cp_spin_unlock(&w->timer_lock);
}

bool cp_timers_fire(struct cp_worker *w, uint64_t now, bool from_handler)
{
	/* a poke handler may have interrupted cp_timer_add on this very
	 * worker, with the lock held: only try it there (the thief pokes
	 * again if this failed) */
	if (from_handler) {
		if (!cp_spin_trylock(&w->timer_lock))
			return false;
	} else {
		cp_spin_lock(&w->timer_lock);
	}
	struct cp_timer *t;
	while ((t = cp_heap_min(&w->timers)) && t->deadline <= now) {
		cp_heap_remove(&w->timers, t);
		t->fire(t); /* under the lock: a canceller waits for us */
		w->st.timers_fired++;
	}
	publish_next_deadline(w);
	cp_spin_unlock(&w->timer_lock);
	return true;
}
