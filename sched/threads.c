/* threads.c: thread records: making them, starting them, ids, and the
 * registry of live threads that debuggers walk.
 *
 * A record lives at the top of its own stack.  The registry is a table
 * per worker, changed only by that worker, so creating and releasing a
 * thread on the same worker costs no atomic and touches no other thread's
 * record: a slot is taken from the table's free list (free slots hold the
 * next free index, shifted and tagged odd) and given back to it.  A
 * record released on another worker is handed back to its maker
 * (w->released), which frees the slot and takes the stack back at its
 * next periodic look.  Threads whose memory must go back at once (a stack
 * of its own mapping, or the caller's), threads made on kernel threads
 * that are not workers, and any thread a full table could not take share
 * one list under a lock instead. */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"
#include "context.h"

struct cp_thread *cp_shared_registry CP_HIDDEN;
static cp_spinlock shared_lock = CP_SPINLOCK_INIT;
static uint64_t next_thread_id = 2;   /* 1 is main */
static unsigned foreign_rr;

#define SLOTS_FIRST 256

static void list_add(struct cp_thread **head, struct cp_thread *t)
{
	t->reg_prev = NULL;
	t->reg_next = *head;
	if (*head)
		(*head)->reg_prev = t;
	*head = t;
}

static void list_unlink(struct cp_thread **head, struct cp_thread *t)
{
	if (t->reg_prev)
		t->reg_prev->reg_next = t->reg_next;
	else
		*head = t->reg_next;
	if (t->reg_next)
		t->reg_next->reg_prev = t->reg_prev;
}

/* A free slot in w's table, or CP_SLOT_NONE when it cannot grow. */
static uint32_t slot_take(struct cp_worker *w)
{
	uint32_t i = w->reg_free;
	if (i != CP_SLOT_NONE && w->registry) {
		w->reg_free = (uint32_t)((uintptr_t)w->registry[i] >> 1);
		return i;
	}
	if (w->reg_used == w->reg_cap) {
		uint32_t cap = w->reg_cap ? w->reg_cap * 2 : SLOTS_FIRST;
		struct cp_thread **v = realloc(w->registry, cap * sizeof *v);
		if (!v)
			return CP_SLOT_NONE;
		w->registry = v;
		w->reg_cap = cap;
	}
	return w->reg_used++;
}

static void slot_give_back(struct cp_worker *w, uint32_t i)
{
	w->registry[i] = (struct cp_thread *)(((uintptr_t)w->reg_free << 1) | 1);
	w->reg_free = i;
}

void cp_registry_add(struct cp_worker *w, struct cp_thread *t)
{
	uint32_t i = CP_SLOT_NONE;
	if (w && t->stack.kind == CP_STACK_POOLED)
		i = slot_take(w);
	if (i != CP_SLOT_NONE) {
		t->reg_owner = w;
		t->reg_slot = i;
		w->registry[i] = t;
		return;
	}
	t->reg_owner = NULL;
	cp_spin_lock(&shared_lock);
	list_add(&cp_shared_registry, t);
	cp_spin_unlock(&shared_lock);
}

static void release_stack(struct cp_worker *self, struct cp_thread *t)
{
	struct cp_stack st = t->stack; /* t lives inside it */
	cp_stack_put(self ? &self->stacks : NULL, &st);
}

void cp_registry_reap(struct cp_worker *w)
{
	struct cp_thread *t = __atomic_exchange_n(&w->released, NULL, __ATOMIC_ACQUIRE);
	while (t) {
		struct cp_thread *next = t->next;
		slot_give_back(w, t->reg_slot);
		release_stack(w, t);
		t = next;
	}
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
                                void *stack_addr, void (*entry)(struct cp_thread *),
                                int *err)
{
	struct cp_stack st;
	struct cp_worker *w = cp_worker_self();
	int e = stack_addr ? cp_stack_wrap_user(stack_addr, stack_size, &st)
	                   : cp_stack_get(w ? &w->stacks : NULL, stack_size, guard, &st);
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
	char *top = cp_stack_top(&st);
	struct cp_thread *t = (struct cp_thread *)(((uintptr_t)top - rec) & ~(uintptr_t)63);
	/* only the scheduler's part is cleared here: the layer above clears
	 * what it needs, and a thread record can be large (key slots) */
	memset(t, 0, sizeof *t);
	t->stack = st;
	t->entry = entry;
	t->id = new_thread_id(w);
	t->sp = cp_ctx_make((char *)t, cp_sched_thread_begin, t);
	cp_registry_add(w, t);
	return t;
}

void cp_thread_release(struct cp_thread *t)
{
	struct cp_worker *self = cp_worker_self();
	struct cp_worker *owner = t->reg_owner;
	if (owner == self && self) {
		slot_give_back(self, t->reg_slot);
		release_stack(self, t);
		return;
	}
	if (!owner) {
		cp_spin_lock(&shared_lock);
		list_unlink(&cp_shared_registry, t);
		cp_spin_unlock(&shared_lock);
		release_stack(self, t);
		return;
	}
	/* its maker's list: hand it back (a lock-free push) */
	struct cp_thread *old = __atomic_load_n(&owner->released, __ATOMIC_RELAXED);
	do
		t->next = old;
	while (!__atomic_compare_exchange_n(&owner->released, &old, t, true,
	                                    __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

void cp_thread_start(struct cp_thread *t)
{
	struct cp_worker *w = cp_worker_self();
	if (w) {
		t->home = w;
		cp_local_push(w, t);
		if (cp_runq_len(&w->rq) == 2)
			cp_steal_wake_thief(w); /* a burst of creations: let others help */
		return;
	}
	unsigned i = __atomic_fetch_add(&foreign_rr, 1, __ATOMIC_RELAXED);
	w = cp_workers[i % (unsigned)cp_nworkers];
	t->home = w;
	t->state = CP_TS_RUNNABLE;
	t->next = NULL;
	cp_inbox_push(w, t, t);
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
