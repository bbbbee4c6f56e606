/* sched.c: the switch between user threads: park, yield, finish, and the
 * look around every switch makes.
 *
 * ---- How the scheduler works ----
 *
 * Workers.  One worker kernel thread per core (runtime.c).  Each owns a
 * run queue, a timer heap (timer.c), an io_uring ring (ring.c), a pool of
 * stacks, and a scheduler context `idle` whose loop (idle.c) runs when
 * nothing else does.  Worker 0 is the kernel thread that started the
 * runtime; main became its first user thread.
 *
 * Thread states (no field holds them, so the switch path stores nothing
 * for them; a debugger reads them off where the thread is linked, as
 * sched/caprice-gdb.py does):
 *   running   w->current of exactly one worker.  Only that worker's code
 *             runs it; it leaves by park, yield or finish, all here.
 *   queued    on w->rq.  Only w pushes, pops or takes from its rq, so the
 *             switch path has no atomic.  Thieves never touch it: they
 *             ask (steal.c), and w donates at its next look around, or
 *             its poke handler does when w stopped switching.
 *   inbox     on w->inbox, a lock-free LIFO any thread may push to (a
 *             cross-worker wakeup, a donation, a start from a foreign
 *             thread); w drains it into rq, in arrival order (wake.c).
 *   parked    linked from what it waits for: a wait queue (wait.c), an
 *             I/O operation (io.c), a timer.  Exactly one party wakes it
 *             (wait.c's CAS on the waiter's state decides which), by
 *             cp_wake / cp_wake_pinned / cp_wake_here; a joiner on the
 *             finishing thread's worker goes straight to running
 *             (cp_wake_successor_thread: w->successor, no queue).
 *   done      switched out for good; on_dead (if any) ran in the next
 *             context.
 * Who moves a thread: its own worker moves it between running, queued
 * and parked; a waker moves it from parked to queued (its own worker's
 * rq with cp_wake_here, else its home's inbox); a donor moves queued
 * threads to a thief's inbox.
 *
 * Which worker owns which field: see struct cp_worker (worker.h): the
 * first block is the owner's alone; timers take timer_lock; the last
 * blocks are shared and accessed atomically, each on its own line.  A
 * thread's `home` is the worker it last ran on (set by finish_switch);
 * wakeups through the inbox go there.
 *
 * Protocols:
 *  - in_sched: 1 while the worker is inside the scheduler or its rq may be
 *    mid-update.  The poke handler (signals.c) interrupts a worker at any
 *    instruction; it touches the rq only when in_sched is 0.
 *  - unlock_after: a parking thread still holds the lock of the queue it
 *    parks on (so no waker can see it before its context is saved); the
 *    next context releases it in finish_switch.  While it is set, the
 *    periodic poll is deferred until after the switch (poll_deferred),
 *    since a completion may need that very lock.
 *  - pinned: a thread woken from I/O returns with errno set, and its
 *    caller may hold errno's address from before the call (glibc declares
 *    __errno_location const), which is this worker's; it may not be
 *    donated until it has run here.  finish_switch clears it.  A thread
 *    with TLS of its own (errno in its own TCB) is pinned the same way,
 *    by choice (wake.c: cp_wake_pinned).
 *
 *  - TLS per user thread (tls.c, when on): a switch to a thread whose TCB
 *    is not loaded loads it, after copying the runtime's own TLS block into
 *    it; the scheduler's context runs on the worker's own TCB, so a TCB is
 *    loaded only where its thread runs.
 *  - the monitor (monitor.c) only sets `preempt` (read at safe points) and
 *    sends the poke; everything else a poke does runs on the worker.
 *
 * Lock order (outermost first): a primitive's queue lock (mutex, condvar,
 * fd entry, join lock) -> a thread's wait_lock -> a worker's timer_lock.
 * The depot lock (stackalloc) and the program mask lock are leaves.  No
 * runtime lock is held across a switch except the one unlock_after
 * releases.  Kicks (eventfd writes) are deferred until a kernel thread
 * holds no runtime lock (wake.c, spinlock.h).
 *
 * Fork: fork.c holds the one atfork registration of the runtime and its
 * order: stacks, then the workers (rebuilt around the forking thread),
 * then the layers above in the order they registered (libthread: the
 * descriptor table, then threads and offload helpers).
 */
#include "worker.h"

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"
#include "context.h"
#include "io.h"

#ifdef CP_ASAN
#include <sanitizer/common_interface_defs.h>
#endif



__thread struct cp_worker *cp_tls_worker __attribute__((tls_model("initial-exec")));
__thread struct cp_thread *cp_tls_thread __attribute__((tls_model("initial-exec")));

static void poll_events(struct cp_worker *w);

static inline void asan_leave(struct cp_worker *w, struct cp_thread *prev,
                              struct cp_thread *next, bool dying)
{
#ifdef CP_ASAN
	w->switched_from = prev;
	__sanitizer_start_switch_fiber(dying ? NULL : &prev->asan_fake_stack,
	                               next->stack.lo, next->stack.size);
#else
	(void)w; (void)prev; (void)next; (void)dying;
#endif
}

static inline void asan_arrive(struct cp_worker *w)
{
#ifdef CP_ASAN
	const void *bottom;
	size_t size;
	__sanitizer_finish_switch_fiber(w->current->asan_fake_stack, &bottom, &size);
	struct cp_thread *from = w->switched_from;
	if (from && !from->stack.lo) {
		/* first switch away from a kernel-made stack: learn its bounds */
		from->stack.lo = (char *)bottom;
		from->stack.size = size;
	}
#else
	(void)w;
#endif
}

uint32_t cp_switch_extras CP_HIDDEN;

/* Runs first thing in whatever context a switch lands in. */
static inline void finish_switch(struct cp_worker *w)
{
	struct cp_thread *cur = w->current;
	/* a thread that yielded goes back on the queue only now that its
	 * context is saved: a thief may take it at once */
	if (cp_unlikely(w->requeue != NULL)) {
		cp_runq_push(&w->rq, w->requeue);
		w->requeue = NULL;
	}
	if (cp_unlikely(cur->home != w))
		cp_thread_rehome(cur, w);
	cur->pinned = 0;
	/* asked to run something at once while it was switched out: its next
	 * safe point does (cp_thread_redirect) */
	if (cp_unlikely(__atomic_load_n(&cp_switch_extras, __ATOMIC_RELAXED) & CP_EXTRA_REDIRECT) &&
	    __atomic_load_n(&cur->redirect, __ATOMIC_RELAXED) != NULL)
		__atomic_store_n(&w->preempt, 1, __ATOMIC_RELAXED);
	cp_tls_thread = cur == &w->idle ? NULL : cur;
	if (cp_likely(!cp_tls_per_thread)) /* else errno is in the thread's own TCB */
		*w->errno_loc = cur->saved_errno;
	cur->switches++;
	w->st.switches++;
	__atomic_store_n(&w->heartbeat, w->st.switches, __ATOMIC_RELAXED);
	if (w->unlock_after) {
		cp_spin_unlock(w->unlock_after);
		w->unlock_after = NULL;
	}
	if (cp_unlikely(w->poll_deferred)) {
		w->poll_deferred = 0;
		poll_events(w);
	}
	if (cp_unlikely(w->dead != NULL)) {
		struct cp_thread *d = w->dead;
		w->dead = NULL;
		w->on_dead(d);
	}
	cp_barrier();
	if (cur != &w->idle)
		w->in_sched = 0;
}

static inline void switch_to(struct cp_worker *w, struct cp_thread *prev,
                             struct cp_thread *next, bool dying)
{
	if (cp_unlikely(prev == next)) {
		finish_switch(w);
		return;
	}
	/* the split-stack limit is the thread's: the scheduler, main and
	 * threads on contiguous stacks run with 0 (linked.c) */
	uint32_t extras = __atomic_load_n(&cp_switch_extras, __ATOMIC_RELAXED);
	if (cp_unlikely(extras)) {
		if (extras & CP_EXTRA_LINKED)
			prev->ss_limit = cp_split_limit();
		if (extras & CP_EXTRA_CPUCLOCK)
			cp_cpuclock_switch(prev, next);
	}
	if (cp_unlikely(cp_tls_per_thread)) {
		/* errno lives in each thread's TCB: nothing to carry (and
		 * worker 0's errno_loc is main's, which must not be touched
		 * while main runs elsewhere) */
		void *tcb = next->tcb ? next->tcb : w->own_tcb;
		if (tcb != cp_tls_current())
			cp_tls_load(w, tcb);
	} else {
		prev->saved_errno = *w->errno_loc;
	}
	if (cp_unlikely(extras & CP_EXTRA_LINKED))
		cp_split_limit_set(next->ss_limit);
	w->current = next;
	asan_leave(w, prev, next, dying);
	cp_ctx_switch(&prev->sp, next->sp);
	w = cp_worker_self(); /* we may have resumed on another worker */
	asan_arrive(w);
	finish_switch(w);
}

void cp_sched_arrived(struct cp_worker *w)
{
	asan_arrive(w);
	finish_switch(w);
}

void cp_sched_thread_begin(void *arg)
{
	struct cp_thread *t = arg;
	cp_sched_arrived(cp_worker_self());
	if (cp_unlikely(t->tcb != NULL))
		cp_tls_thread_begin();
	t->entry(t);
	cp_die("thread %llu returned from its entry function", (unsigned long long)t->id);
}

/* The periodic look around a busy worker takes every CP_POLL_EVERY switches. */
static void poll_events(struct cp_worker *w)
{
	w->poll_countdown = CP_POLL_EVERY;
	cp_sigmask_check(w);
	uint64_t nd = __atomic_load_n(&w->next_deadline, __ATOMIC_RELAXED);
	if (nd != CP_NO_DEADLINE) {
		uint64_t now = cp_now_ns();
		if (now >= nd)
			cp_timers_fire(w, now, false);
	}
	if (w->ring.inflight || w->ring.unsubmitted)
		cp_ring_poll(&w->ring);
	if (cp_runq_movable(&w->rq) >= 2)
		cp_steal_wake_thief(w);
}

/* Takes in wakeups, answers a thief, and now and then looks at the clock
 * and the ring.  The caller must not be on the run queue yet: a thief
 * must never be handed the thread that is still running. */
static inline void look_around(struct cp_worker *w, enum cp_donation how)
{
	w->ring_busy = 0; /* whatever the leaving thread prepared is whole */
	if (cp_unlikely(__atomic_load_n(&w->preempt, __ATOMIC_RELAXED)))
		__atomic_store_n(&w->preempt, 0, __ATOMIC_RELAXED);
	if (__atomic_load_n(&w->inbox, __ATOMIC_RELAXED))
		cp_inbox_drain(w);
	if (cp_unlikely(w->spare))
		cp_spare_look(w);
	if (cp_unlikely(__atomic_load_n(&w->cancels, __ATOMIC_RELAXED) != NULL))
		cp_io_run_cancels(w);
	if (cp_unlikely(__atomic_load_n(&w->steal_req, __ATOMIC_RELAXED) != NULL))
		cp_steal_serve(w, how);
	if (cp_unlikely(--w->poll_countdown == 0)) {
		/* a parking thread still holds its wait lock, and what the
		 * ring completes may need that lock: look after the switch */
		if (w->unlock_after)
			w->poll_deferred = 1;
		else
			poll_events(w);
	}
}

/* A worker's scheduler loop, in its `idle` context: runs what is queued,
 * and when nothing is, the idle policy (idle.c).  Here rather than there
 * so that the look around and the switch are inlined: every park that
 * finds nothing queued comes through it. */
void cp_idle_loop(struct cp_worker *w)
{
	uint64_t idle_period = CP_IDLE_MIN_NS;
	w->in_sched = 1;
	for (;;) {
		/* work at hand (a finished thread's joiner, a wakeup): run it
		 * with no more than a busy switch's look around */
		look_around(w, CP_DONATE_FLOOR_HALF);
		struct cp_thread *next = cp_runq_pop(&w->rq);
		if (!next) {
			cp_idle_enter(w);
			if (!cp_idle_nothing_queued(w, &idle_period))
				continue;
			if (cp_unlikely(w->spare)) {
				/* what its timers and ring just woke goes back
				 * too, once it is retired */
				cp_spare_look(w);
			}
			next = cp_runq_pop(&w->rq);
			if (!next) /* its length counts slots a thief emptied */
				continue;
		}
		idle_period = CP_IDLE_MIN_NS;
		cp_idle_leave(w);
		switch_to(w, &w->idle, next, false);
		cp_assert(cp_worker_self() == w);
		w->in_sched = 1;
	}
}

void cp_idle_entry(void *arg)
{
	struct cp_worker *w = arg;
	cp_sched_arrived(w);
	cp_idle_loop(w);
}

static inline struct cp_thread *pick_next(struct cp_worker *w)
{
	look_around(w, CP_DONATE_FLOOR_HALF);
	return cp_runq_pop(&w->rq);
}

void cp_park(cp_spinlock *lk)
{
	struct cp_worker *w = cp_worker_self();
	cp_assert(w && w->current != &w->idle);
	struct cp_thread *cur = w->current;
	w->in_sched = 1;
	cp_barrier();
	w->unlock_after = lk;
	w->st.parks++;
	if (cp_unlikely(__atomic_load_n(&cp_switch_extras, __ATOMIC_RELAXED) & CP_EXTRA_LINKED))
		cp_linked_park_trim();
	if (cp_unlikely(cp_sched_2d))
		cp_location_park_slow(w, cur);
	struct cp_thread *next = pick_next(w);
	if (cp_unlikely(w->requeue == cur) && !next) {
		/* woken by its own look around (cp_wake), with nothing else
		 * to run: it runs on */
		w->requeue = NULL;
		next = cur;
	}
	switch_to(w, cur, next ? next : &w->idle, false);
}

bool cp_in_scheduler(void)
{
	struct cp_worker *w = cp_worker_self();
	return w && w->in_sched;
}

void cp_safe_point(void)
{
	struct cp_worker *w = cp_worker_self();
	if (cp_likely(!w || !__atomic_load_n(&w->preempt, __ATOMIC_RELAXED)) ||
	    w->current == &w->idle || cp_in_runtime())
		return;
	w->st.preempts++;
	w->poll_countdown = 1; /* fire due timers and reap before picking */
	cp_yield();
	/* asked to run something at once while it waited its turn */
	struct cp_thread *t = cp_self();
	void (*fn)(void) = t ? __atomic_exchange_n(&t->redirect, NULL, __ATOMIC_ACQ_REL) : NULL;
	if (cp_unlikely(fn != NULL))
		fn();
}

/* Whether the running thread started after the monitor's last look at
 * w (it looks every millisecond), and that look is at most BRIEF_RUN_NS
 * old: then it has run less than that.  A monitor that fell behind (a
 * loaded machine) answers no. */
#define BRIEF_RUN_NS 2000000ull

static CP_NOINLINE bool ran_briefly(struct cp_worker *w)
{
	return w->st.switches != __atomic_load_n(&w->beat_seen, __ATOMIC_RELAXED) &&
	       cp_now_ns() - __atomic_load_n(&w->looked_at, __ATOMIC_RELAXED) <= BRIEF_RUN_NS;
}

/* A brief yield keeps its place only ahead of a queue longer than this:
 * behind a few threads the yielder waits little anyway, and threads that
 * yield to each other (a semaphore's posters and waiters) take turns as
 * they always did. */
#define BRIEF_YIELD_QUEUE 8

static inline __attribute__((always_inline)) void yield(bool brief)
{
	struct cp_worker *w = cp_worker_self();
	if (cp_unlikely(!w)) {
		syscall(SYS_sched_yield);
		return;
	}
	struct cp_thread *cur = w->current;
	w->in_sched = 1;
	cp_barrier();
	w->st.yields++;
	look_around(w, CP_DONATE_CEIL_HALF);
	/* brief: the yielder runs again after the next queued thread, first
	 * in line, if a turn of the queue is long (the ring's length: past
	 * 256 the overflow lists hold the rest) and it has run 2 ms at most
	 * (ran_briefly) */
	bool front = brief && cp_unlikely(w->rq.tail - w->rq.head > BRIEF_YIELD_QUEUE) &&
	             ran_briefly(w);
	/* a thread with a priority gives way only to one of its own or higher */
	struct cp_thread *next = cp_likely(!cur->prio) ? cp_runq_pop(&w->rq)
	                                               : cp_runq_pop_at_least(&w->rq, cur->prio);
	/* the front slot is the owner's alone (no thief or donation takes
	 * from it), so the yielder may wait there before its context is
	 * saved; on the ring it is queued only once switched out */
	if (next && !(front && cp_runq_push_front(&w->rq, cur)))
		w->requeue = cur;
	switch_to(w, cur, next ? next : cur, false);
}

void cp_yield(void)
{
	yield(false);
}

void cp_yield_brief(void)
{
	yield(true);
}

_Noreturn void cp_thread_finish(cp_on_dead_fn *(*leaving)(struct cp_thread *t))
{
	struct cp_worker *w = cp_worker_self();
	struct cp_thread *cur = w->current;
	if (cp_unlikely(cp_sched_2d)) {
		if (cur->loc)
			cp_location_exit_slow(w, cur);
		cp_mem_thread_done(cur);
	}
	w->in_sched = 1;
	cp_barrier();
	cur->done = 1;
	cp_on_dead_fn *on_dead = leaving(cur);
	cp_worker_resident_add(w, -1); /* its home is w */
	if (on_dead) {
		w->dead = cur;
		w->on_dead = on_dead;
	}
	struct cp_thread *next = w->successor;
	if (next)
		w->successor = NULL;
	else
		next = pick_next(w);
	switch_to(w, cur, next ? next : &w->idle, true);
	cp_die("finished thread %llu was resumed", (unsigned long long)cur->id);
}
