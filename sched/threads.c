/* threads.c: thread records: making them, starting them, ids, and how a
 * debugger finds the live ones.
 *
 * A record lives at the top of its own stack.  Debuggers find the records
 * by walking stackalloc's slabs of pooled stacks and reading each stack's
 * top, where `live` says whether a thread owns it: that costs a creation
 * two stores, where a registry of threads (a list or a table per worker)
 * cost create+join about 3%.  Records that are not on a pooled stack (main's, and
 * those on a stack of their own mapping or the caller's) are few and go
 * on one list under a lock. */
#include "worker.h"

#include <errno.h>
#include <string.h>

#include "compiler.h"
#include "context.h"

struct cp_thread *cp_shared_registry CP_HIDDEN;
/* what `live` holds in a live record; a fork changes it, so the child's
 * debugger does not see the threads that did not come along */
uint32_t cp_live_tag CP_HIDDEN = CP_THREAD_LIVE;
static cp_spinlock shared_lock = CP_SPINLOCK_INIT;
static uint64_t next_thread_id = 2;   /* 1 is main */
static unsigned foreign_rr;

static CP_NOINLINE void shared_add(struct cp_thread *t)
{
	cp_spin_lock(&shared_lock);
	t->reg_prev = NULL;
	t->reg_next = cp_shared_registry;
	if (cp_shared_registry)
		cp_shared_registry->reg_prev = t;
	cp_shared_registry = t;
	cp_spin_unlock(&shared_lock);
}

static CP_NOINLINE void shared_remove(struct cp_thread *t)
{
	cp_spin_lock(&shared_lock);
	if (t->reg_prev)
		t->reg_prev->reg_next = t->reg_next;
	else
		cp_shared_registry = t->reg_next;
	if (t->reg_next)
		t->reg_next->reg_prev = t->reg_prev;
	cp_spin_unlock(&shared_lock);
}

static inline void registry_add(struct cp_thread *t)
{
	t->live = cp_live_tag;
	if (cp_unlikely(t->stack.kind != CP_STACK_POOLED))
		shared_add(t);
}

void cp_registry_add(struct cp_thread *t)
{
	registry_add(t);
}

void cp_registry_after_fork(struct cp_thread *survivor)
{
	shared_lock = (cp_spinlock)CP_SPINLOCK_INIT;
	cp_shared_registry = NULL;
	cp_live_tag++;
	registry_add(survivor);
}

uint64_t cp_thread_ids_take(uint64_t n)
{
	return __atomic_fetch_add(&next_thread_id, n, __ATOMIC_RELAXED);
}

/* Unique thread ids without a shared atomic per creation: each worker
 * takes a block of them at a time. */
#define ID_BLOCK 1024
static uint64_t new_thread_id(struct cp_worker *w)
{
	if (!w)
		return cp_thread_ids_take(1);
	if (w->next_id == w->id_limit) {
		w->next_id = cp_thread_ids_take(ID_BLOCK);
		w->id_limit = w->next_id + ID_BLOCK;
	}
	return w->next_id++;
}

struct cp_thread *cp_thread_new(size_t thread_size, size_t stack_size, size_t guard,
                                enum cp_stack_fit fit, void *stack_addr,
                                void (*entry)(struct cp_thread *), int *err)
{
	struct cp_stack st;
	struct cp_worker *w = cp_worker_self();
	int e = stack_addr ? cp_stack_wrap_user(stack_addr, stack_size, &st)
	                   : cp_stack_get(w ? &w->stacks : NULL, stack_size, guard, fit, &st);
	if (e) {
		*err = e;
		return NULL;
	}
	size_t rec = (thread_size + 63) & ~(size_t)63;
	if (rec + 4096 > st.size) {
		cp_stack_put(w ? &w->stacks : NULL, &st);
		*err = EINVAL;
		return NULL;
	}
	struct cp_thread *t = cp_thread_init(st, rec, entry, err);
	if (!t)
		cp_stack_put(w ? &w->stacks : NULL, &st);
	return t;
}

struct cp_thread *cp_thread_init(struct cp_stack st, size_t rec,
                                 void (*entry)(struct cp_thread *), int *err)
{
	struct cp_worker *w = cp_worker_self();
	char *top = cp_stack_top(&st);
	struct cp_thread *t = (struct cp_thread *)(((uintptr_t)top - rec) & ~(uintptr_t)63);
	/* the layer above's part too: one clear of a few lines */
	memset(t, 0, rec);
	t->stack = st;
	t->entry = entry;
	t->id = new_thread_id(w);
	if (cp_unlikely(cp_tls_per_thread) && st.kind != CP_STACK_USER && cp_tls_make(t)) {
		*err = EAGAIN;
		return NULL;
	}
	t->sp = cp_ctx_make((char *)t, cp_sched_thread_begin, t);
	registry_add(t);
	return t;
}

void cp_thread_release(struct cp_thread *t)
{
	struct cp_worker *w = cp_worker_self();
#ifndef NDEBUG
	/* off its stack for good: no worker may still be switching away
	 * from it (cp_wake_successor's promise) */
	for (int i = 0; i < cp_nall; i++)
		cp_assert(__atomic_load_n(&cp_workers[i]->current, __ATOMIC_RELAXED) != t);
#endif
	t->live = 0;
	if (cp_unlikely(t->tls_mem != NULL))
		cp_tls_free(t);
	if (cp_unlikely(t->stack.kind != CP_STACK_POOLED))
		shared_remove(t);
	if (t->stack.kind == CP_STACK_LINKED) {
		if (t->alloca_blocks)
			cp_linked_free_alloca(t);
		cp_linked_release(t);
		return;
	}
	struct cp_stack st = t->stack; /* t lives inside it */
	cp_stack_put(w ? &w->stacks : NULL, &st);
}

void cp_thread_rehome(struct cp_thread *t, struct cp_worker *w)
{
	if (t != &w->idle) { /* a worker's own loop is no user thread */
		if (t->home)
			__atomic_sub_fetch(&t->home->resident_remote, 1, __ATOMIC_RELAXED);
		cp_worker_resident_add(w, 1); /* w is the caller's worker */
	}
	t->home = w;
}

/* Where a new thread starts: the creator's worker, unless another regular
 * worker is home to more than CP_SPREAD_SLACK fewer threads.  A thread
 * woken from I/O is pinned until it has run (wake.c), so a thread that
 * lives on I/O (a connection's) never moves once it has parked: where it
 * starts is where it stays.  Knot's acceptors all live on one worker;
 * their connections' threads went wherever a thief happened to take them
 * before their first read, and one worker served 38% of a run's
 * operations, the other 62%, with 2.7 against 9.2 per io_uring_enter
 * (compare-knot, 100 connections).  The slack keeps a few threads made
 * together beside their maker: one made to be joined at once
 * (create+join), or a producer's two consumers, whose wakeups the wake
 * placement spreads (wake.c; tests/steal's placement case with a slack
 * of 2: the second consumer started on the other worker and its wakeup
 * did not follow the rule that case checks, 1 run in 12).  Only a
 * worker with nothing to run takes a new thread, since one that runs a
 * long computation would leave it queued behind that (tests/spare:
 * 400 ms). */
#define CP_SPREAD_SLACK 3u
static struct cp_worker *start_worker(struct cp_worker *self)
{
	if (self->spare) /* running a blocked worker's threads: stay */
		return self;
	struct cp_worker *best = self;
	uint32_t least = cp_worker_resident(self);
	for (int i = 1; i < cp_nworkers; i++) {
		struct cp_worker *v = cp_workers[(self->index + i) % cp_nworkers];
		uint32_t n = cp_worker_resident(v);
		if (n + CP_SPREAD_SLACK < least && __atomic_load_n(&v->idle_now, __ATOMIC_RELAXED)) {
			best = v;
			least = n + CP_SPREAD_SLACK;
		}
	}
	return best;
}

void cp_thread_start(struct cp_thread *t)
{
	struct cp_worker *w = cp_worker_self();
	/* made on a kernel thread that is no worker: round robin */
	struct cp_worker *to = w ? start_worker(w)
	                         : cp_workers[__atomic_fetch_add(&foreign_rr, 1, __ATOMIC_RELAXED) %
	                                      (unsigned)cp_nworkers];
	t->home = to;
	if (to == w) {
		cp_worker_resident_add(w, 1);
		cp_local_push(w, t);
		cp_steal_offer(w); /* a sleeping worker may come and take it */
	} else {
		__atomic_add_fetch(&to->resident_remote, 1, __ATOMIC_RELAXED);
		t->next = NULL;
		cp_inbox_push(to, t, t);
	}
}

int cp_thread_kernel_tid(const struct cp_thread *t)
{
	struct cp_worker *w = t->home;
	return w ? w->tid : 0;
}

int cp_thread_worker_index(const struct cp_thread *t)
{
	return t->home ? t->home->index : -1;
}
