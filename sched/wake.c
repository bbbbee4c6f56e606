/* wake.c: making parked threads runnable, and waking sleeping workers.
 *
 * A wakeup on the waker's own worker is a push onto its run queue.  One
 * for another worker goes through that worker's inbox, a lock-free stack
 * any thread may push to, and kicks it if it sleeps in its ring (an
 * eventfd write).  A kick made under a runtime lock is deferred until the
 * last lock is released (spinlock.h says why). */
#include "worker.h"

#include "compiler.h"

/* workers to kick once this kernel thread holds no runtime lock */
#define MAX_DEFERRED 8
static __thread struct cp_worker *deferred_kicks[MAX_DEFERRED]
	__attribute__((tls_model("initial-exec")));

static void kick_now(struct cp_worker *w)
{
	if (__atomic_exchange_n(&w->sleeping, 0, __ATOMIC_ACQ_REL)) {
		if (!w->spare)
			__atomic_sub_fetch(&cp_idle_sleepers, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&w->st.kicks, 1, __ATOMIC_RELAXED);
		cp_ring_kick(&w->ring);
	}
}

/* spinlock.h's deferred work: the kicks held back under a lock */
static void run_deferred_kicks(void)
{
	uint32_t n = cp_deferred_work;
	cp_deferred_work = 0;
	for (uint32_t i = 0; i < n && i < MAX_DEFERRED; i++)
		kick_now(deferred_kicks[i]);
}

void cp_wake_init(void)
{
	cp_spin_set_deferred_hook(run_deferred_kicks);
}

void cp_worker_kick(struct cp_worker *w)
{
	if (!__atomic_load_n(&w->sleeping, __ATOMIC_SEQ_CST))
		return;
	if (!cp_in_runtime()) {
		kick_now(w);
		return;
	}
	uint32_t n = cp_deferred_work;
	for (uint32_t i = 0; i < n; i++)
		if (deferred_kicks[i] == w)
			return;
	if (n == MAX_DEFERRED) {
		kick_now(w); /* rare: many targets at once */
		return;
	}
	deferred_kicks[n] = w;
	cp_deferred_work = n + 1;
}

void cp_inbox_push(struct cp_worker *w, struct cp_thread *first, struct cp_thread *last)
{
	struct cp_thread *old = __atomic_load_n(&w->inbox, __ATOMIC_RELAXED);
	do
		last->next = old;
	while (!__atomic_compare_exchange_n(&w->inbox, &old, first, true,
	                                    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
	cp_worker_kick(w);
}

struct cp_thread *cp_inbox_take(struct cp_worker *w)
{
	struct cp_thread *list = __atomic_exchange_n(&w->inbox, NULL, __ATOMIC_ACQUIRE);
	struct cp_thread *rev = NULL;
	while (list) { /* the inbox is LIFO; wakeups run in the order they came */
		struct cp_thread *n = list->next;
		list->next = rev;
		rev = list;
		list = n;
	}
	return rev;
}

void cp_inbox_drain(struct cp_worker *w)
{
	for (struct cp_thread *t = cp_inbox_take(w), *n; t; t = n) {
		n = t->next;
		cp_runq_push(&w->rq, t);
	}
}

/* A thread woken here while another already waits in this worker's
 * queue runs only after the waker and that one; if another worker has
 * nothing to run, it runs there now.  (A pipeline's reader that hands
 * blocks to two waiting compute threads queued both here, behind the
 * first one's milliseconds of work, while the other worker idled: the
 * second waited for a thief, 150 to 350 us.)  A lone woken thread stays:
 * it is the partner of a ping-pong pair more often than work to share.
 * Under 2d a thread's queue is where admission holds it in line with
 * others that take what it takes (policy.c), so it stays too. */
static struct cp_worker *idle_elsewhere(struct cp_worker *self, struct cp_thread *t)
{
	if (cp_likely(!cp_runq_len(&self->rq)) ||
	    !__atomic_load_n(&cp_idle_workers, __ATOMIC_RELAXED) || t->pinned || self->spare ||
	    cp_sched_2d)
		return NULL;
	return cp_idle_other(self);
}

static void wake_here(struct cp_worker *self, struct cp_thread *t)
{
	struct cp_worker *idle = idle_elsewhere(self, t);
	if (cp_unlikely(idle != NULL)) {
		self->st.wakes_remote++;
		t->next = NULL;
		cp_inbox_push(idle, t, t);
		return;
	}
	self->st.wakes_local++;
	cp_local_push(self, t);
	cp_steal_offer(self);
}

void cp_wake(struct cp_thread *t)
{
	struct cp_worker *self = cp_worker_self();
	struct cp_worker *home = t->home;
	if (self == home) {
		if (cp_unlikely(t == self->current)) {
			self->st.wakes_local++;
			/* its own park reaped what it waits for (the look
			 * around in cp_park): its context is not saved yet,
			 * so it must not be queued, where a thief could take
			 * it; it is queued once switched out (finish_switch),
			 * or cp_park lets it run on */
			self->requeue = t;
			return;
		}
		wake_here(self, t);
		return;
	}
	if (self)
		self->st.wakes_remote++;
	t->next = NULL;
	cp_inbox_push(home, t, t);
}

void cp_wake_pinned(struct cp_thread *t)
{
	/* with the worker's TLS, errno's address (which the caller may hold
	 * from before the call) is this worker's: the thread must run here
	 * first.  With TLS of its own it could move at once, but it stays
	 * too: its data and stack are warm here, and a thread that lives on
	 * I/O (a connection's) moving with every steal request kept both
	 * workers passing threads back and forth (knot-pthread under the
	 * shim, 100 connections: 0.115 kicks per request, and 11.8-12.2
	 * against 9.7-9.8 us of CPU per request when pinned) */
	t->pinned = 1;
	cp_wake(t);
}

void cp_wake_pinned_first(struct cp_thread *t)
{
	struct cp_worker *self = cp_worker_self();
	t->pinned = 1;
	if (self == t->home && t != self->current && cp_runq_push_front(&self->rq, t)) {
		self->st.wakes_local++;
		return;
	}
	cp_wake(t);
}

void cp_wake_successor_thread(struct cp_worker *self, struct cp_thread *t)
{
	cp_assert(self == cp_worker_self() && self->in_sched && self->current->done &&
	          !self->successor);
	/* not queued: cp_thread_finish switches to it directly.  On a queue
	 * it would have to be pinned until the finishing thread is off its
	 * stack (a thief running it would free that stack under the switch),
	 * and a thread queued ahead of it that then blocked the worker in a
	 * call the runtime cannot see held it there: the poke's hand-off
	 * leaves pinned threads (CAPRICE_SCHED=2d, whose queue does not pop
	 * in order, left a joiner 1.6 s behind a raw read in 3 runs of 180) */
	self->st.wakes_local++;
	self->successor = t;
}

void cp_wake_here(struct cp_thread *t)
{
	struct cp_worker *self = cp_worker_self();
	if (!self) {
		cp_wake(t);
		return;
	}
	wake_here(self, t);
}
