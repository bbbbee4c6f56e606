/* worker.c: workers and the switch between user threads.
 *
 * Each worker is a kernel thread that runs user threads from a private
 * FIFO.  The rules that keep the hot path free of atomics:
 *  - only the worker itself touches its run queue;
 *  - other threads hand it work through its inbox (a lock-free stack);
 *  - an idle worker that wants work sets a steal request on a busy one,
 *    which donates half its queue at its next switch; a worker that stops
 *    switching (stuck in a long computation or a call the runtime does not
 *    see) is poked with a signal whose handler donates for it.
 * A thread woken through its home inbox resumes on the worker it parked
 * on, the only one that drains that inbox, so such a wakeup may race with
 * the thread's own switch-out.  A thread woken from a wait queue runs on
 * the waker's worker instead (cp_wake_here), which the queue's lock makes
 * safe. */
#include "worker.h"

#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "compiler.h"
#include "context.h"
#include "io.h"
#include "kthread.h"

#ifdef CP_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#define POLL_EVERY        64          /* switches between clock/ring looks */
#define POKE_AFTER_NS     20000000ull /* a victim silent this long is stuck: long
                                         enough that a slow stretch (sanitizers) is
                                         not mistaken for it, since the poke can cut
                                         a plain syscall short (EINTR) */
#define IDLE_MIN_NS       1000000ull  /* idle look-around period, doubling */
#define IDLE_MAX_NS       64000000ull
#define IDLE_STACK_SIZE   (64u * 1024)
#define ALTSTACK_SIZE     (64u * 1024)
#define POKE_SIGNAL       SIGURG      /* ignored by default, rarely used */
#define MAX_WORKERS       256

__thread struct cp_worker *cp_tls_worker __attribute__((tls_model("initial-exec")));
__thread struct cp_thread *cp_tls_thread __attribute__((tls_model("initial-exec")));

static struct cp_worker **workers;
static int nworkers;
static struct cp_thread *main_thread;
static int runtime_state;             /* 0 none, 1 starting, 2 running */
static size_t thread_size_in_use;     /* the layer above's thread record */
static uint64_t next_thread_id = 2;   /* 1 is main */
static unsigned foreign_rr;
static struct sigaction prev_segv, prev_poke;

static void idle_loop(struct cp_worker *w);
static void poll_events(struct cp_worker *w);

/* ------------------------------------------------------------------ */
/* time                                                               */

uint64_t cp_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* the switch                                                         */

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

/* Runs first thing in whatever context a switch lands in. */
static inline void finish_switch(struct cp_worker *w)
{
	struct cp_thread *cur = w->current;
	cur->home = w;
	cur->pinned = 0;
	cp_tls_thread = cur == &w->idle ? NULL : cur;
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
	prev->saved_errno = *w->errno_loc;
	w->current = next;
	asan_leave(w, prev, next, dying);
	cp_ctx_switch(&prev->sp, next->sp);
	w = cp_worker_self(); /* we may have resumed on another worker */
	asan_arrive(w);
	finish_switch(w);
}

static void thread_begin(void *arg)
{
	struct cp_thread *t = arg;
	struct cp_worker *w = cp_worker_self();
	asan_arrive(w);
	finish_switch(w);
	t->entry(t);
	cp_die("thread %llu returned from its entry function", (unsigned long long)t->id);
}

/* ------------------------------------------------------------------ */
/* queues                                                             */

static inline void local_push(struct cp_worker *w, struct cp_thread *t)
{
	uint32_t was = w->in_sched;
	w->in_sched = 1;
	cp_barrier();
	cp_runq_push(&w->rq, t);
	cp_barrier();
	w->in_sched = was;
}

/* workers to kick once this kernel thread holds no runtime lock */
#define MAX_DEFERRED 8
static __thread struct cp_worker *deferred_kicks[MAX_DEFERRED]
	__attribute__((tls_model("initial-exec")));

static void kick_now(struct cp_worker *w)
{
	if (__atomic_exchange_n(&w->sleeping, 0, __ATOMIC_ACQ_REL)) {
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

/* Wakes w if it sleeps in its ring; under a runtime lock, only once the
 * last one is released (see spinlock.h). */
static void kick(struct cp_worker *w)
{
	if (!__atomic_load_n(&w->sleeping, __ATOMIC_SEQ_CST))
		return;
	if (cp_locks_held == 0) {
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

void cp_worker_kick(struct cp_worker *w)
{
	kick(w);
}

static void inbox_push(struct cp_worker *w, struct cp_thread *first, struct cp_thread *last)
{
	struct cp_thread *old = __atomic_load_n(&w->inbox, __ATOMIC_RELAXED);
	do
		last->next = old;
	while (!__atomic_compare_exchange_n(&w->inbox, &old, first, true,
	                                    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
	kick(w);
}

static void drain_inbox(struct cp_worker *w)
{
	struct cp_thread *list = __atomic_exchange_n(&w->inbox, NULL, __ATOMIC_ACQUIRE);
	struct cp_thread *rev = NULL;
	while (list) { /* the inbox is LIFO; run wakeups in the order they came */
		struct cp_thread *n = list->next;
		list->next = rev;
		rev = list;
		list = n;
	}
	while (rev) {
		struct cp_thread *n = rev->next;
		cp_runq_push(&w->rq, rev);
		rev = n;
	}
}

/* Wakes one sleeping worker so it can come and steal. */
static void wake_a_thief(struct cp_worker *self)
{
	for (int i = 1; i < nworkers; i++) {
		struct cp_worker *v = workers[(self->index + i) % nworkers];
		if (__atomic_load_n(&v->sleeping, __ATOMIC_RELAXED)) {
			kick(v);
			return;
		}
	}
}

/* How much a worker hands to a thief that asked. */
enum donation {
	DONATE_FLOOR_HALF, /* at a park or idle: a lone queued thread stays,
	                      or communicating pairs would be split across
	                      workers and pay a kick per handoff */
	DONATE_CEIL_HALF,  /* at a yield: everything stays runnable, so a
	                      lone queued thread is better run elsewhere */
	DONATE_ALL,        /* stuck (poke): nothing here will run for a while */
};

/* Hands part of our queue (and, when stuck, our inbox) to a worker that
 * asked for work. */
static void serve_steal(struct cp_worker *w, enum donation how)
{
	struct cp_worker *thief = __atomic_exchange_n(&w->steal_req, NULL, __ATOMIC_ACQ_REL);
	if (!thief)
		return;
	bool include_inbox = how == DONATE_ALL;
	struct cp_thread *last = NULL, *chain = NULL;
	uint32_t k = 0;
	uint32_t len = cp_runq_len(&w->rq);
	uint32_t n = how == DONATE_ALL ? len : how == DONATE_CEIL_HALF ? (len + 1) / 2 : len / 2;
	if (n)
		chain = cp_runq_take(&w->rq, n, how == DONATE_ALL, &last, &k);
	if (include_inbox) {
		struct cp_thread *in = __atomic_exchange_n(&w->inbox, NULL, __ATOMIC_ACQUIRE);
		if (in) {
			struct cp_thread *l = in;
			for (;; l = l->next) {
				k++;
				if (!l->next)
					break;
			}
			l->next = chain;
			if (!chain)
				last = l;
			chain = in;
		}
	}
	if (!chain)
		return;
	w->st.steals_out += k;
	__atomic_add_fetch(&thief->st.steals_in, k, __ATOMIC_RELAXED);
	inbox_push(thief, chain, last);
}

static void run_timers(struct cp_worker *w, uint64_t now)
{
	cp_spin_lock(&w->timer_lock);
	struct cp_timer *t;
	while ((t = cp_heap_min(&w->timers)) && t->deadline <= now) {
		cp_heap_remove(&w->timers, t);
		t->fire(t); /* under the lock: a canceller waits for us */
		w->st.timers_fired++;
	}
	t = cp_heap_min(&w->timers);
	__atomic_store_n(&w->next_deadline, t ? t->deadline : CP_NO_DEADLINE, __ATOMIC_RELAXED);
	cp_spin_unlock(&w->timer_lock);
}

/* ------------------------------------------------------------------ */
/* the program's signal mask (see cp_change_program_sigmask)          */

static uint64_t program_sigmask;
static uint32_t program_sigmask_gen;

static void apply_program_sigmask(struct cp_worker *w)
{
	uint32_t gen = __atomic_load_n(&program_sigmask_gen, __ATOMIC_ACQUIRE);
	uint64_t mask = __atomic_load_n(&program_sigmask, __ATOMIC_RELAXED);
	mask &= ~(1ull << (POKE_SIGNAL - 1));
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &mask, NULL, sizeof mask);
	w->sigmask_gen = gen;
}

static inline void check_program_sigmask(struct cp_worker *w)
{
	if (cp_unlikely(__atomic_load_n(&program_sigmask_gen, __ATOMIC_RELAXED) != w->sigmask_gen))
		apply_program_sigmask(w);
}

uint64_t cp_program_sigmask(void)
{
	return __atomic_load_n(&program_sigmask, __ATOMIC_RELAXED);
}

uint64_t cp_change_program_sigmask(int how, uint64_t bits)
{
	static cp_spinlock lock = CP_SPINLOCK_INIT; /* read-modify-write */
	const uint64_t unblockable = (1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1));
	cp_spin_lock(&lock);
	uint64_t before = __atomic_load_n(&program_sigmask, __ATOMIC_RELAXED);
	uint64_t now = how == SIG_BLOCK ? before | bits : how == SIG_UNBLOCK ? before & ~bits : bits;
	now &= ~unblockable;
	if (now != before) {
		__atomic_store_n(&program_sigmask, now, __ATOMIC_RELAXED);
		__atomic_fetch_add(&program_sigmask_gen, 1, __ATOMIC_RELEASE);
	}
	cp_spin_unlock(&lock);
	if (now == before)
		return before;
	struct cp_worker *self = cp_worker_self();
	if (self)
		apply_program_sigmask(self);
	for (int i = 0; i < nworkers; i++)
		if (workers[i] != self)
			kick(workers[i]);
	return before;
}

/* The periodic look around a busy worker takes every POLL_EVERY switches. */
static void poll_events(struct cp_worker *w)
{
	w->poll_countdown = POLL_EVERY;
	check_program_sigmask(w);
	uint64_t nd = __atomic_load_n(&w->next_deadline, __ATOMIC_RELAXED);
	if (nd != CP_NO_DEADLINE) {
		uint64_t now = cp_now_ns();
		if (now >= nd)
			run_timers(w, now);
	}
	if (w->ring.inflight || w->ring.unsubmitted)
		cp_ring_poll(&w->ring);
	if (cp_runq_len(&w->rq) >= 2)
		wake_a_thief(w);
}

/* Takes in wakeups, answers a thief, and now and then looks at the clock
 * and the ring.  The caller must not be on the run queue yet: a thief
 * must never be handed the thread that is still running. */
static inline void look_around(struct cp_worker *w, enum donation how)
{
	if (__atomic_load_n(&w->inbox, __ATOMIC_RELAXED))
		drain_inbox(w);
	if (cp_unlikely(__atomic_load_n(&w->cancels, __ATOMIC_RELAXED) != NULL))
		cp_io_run_cancels(w);
	if (cp_unlikely(__atomic_load_n(&w->steal_req, __ATOMIC_RELAXED) != NULL))
		serve_steal(w, how);
	if (cp_unlikely(--w->poll_countdown == 0)) {
		/* a parking thread still holds its wait lock, and what the
		 * ring completes may need that lock: look after the switch */
		if (w->unlock_after)
			w->poll_deferred = 1;
		else
			poll_events(w);
	}
}

static inline struct cp_thread *pick_next(struct cp_worker *w)
{
	look_around(w, DONATE_FLOOR_HALF);
	return cp_runq_pop(&w->rq);
}

/* ------------------------------------------------------------------ */
/* the thread-facing operations                                       */

void cp_park(cp_spinlock *lk)
{
	struct cp_worker *w = cp_worker_self();
	cp_assert(w && w->current != &w->idle);
	struct cp_thread *cur = w->current;
	w->in_sched = 1;
	cp_barrier();
	w->unlock_after = lk;
	w->st.parks++;
	struct cp_thread *next = pick_next(w);
	switch_to(w, cur, next ? next : &w->idle, false);
}

void cp_yield(void)
{
	struct cp_worker *w = cp_worker_self();
	if (cp_unlikely(!w)) {
		syscall(SYS_sched_yield);
		return;
	}
	struct cp_thread *cur = w->current;
	w->in_sched = 1;
	cp_barrier();
	look_around(w, DONATE_CEIL_HALF);
	cp_runq_push(&w->rq, cur);
	switch_to(w, cur, cp_runq_pop(&w->rq), false);
}

void cp_wake(struct cp_thread *t)
{
	struct cp_worker *self = cp_worker_self();
	struct cp_worker *home = t->home;
	if (self == home) {
		self->st.wakes_local++;
		local_push(self, t);
		return;
	}
	if (self)
		self->st.wakes_remote++;
	t->next = NULL;
	inbox_push(home, t, t);
}

void cp_wake_pinned(struct cp_thread *t)
{
	t->pinned = 1;
	cp_wake(t);
}

void cp_wake_here(struct cp_thread *t)
{
	struct cp_worker *self = cp_worker_self();
	if (!self) {
		cp_wake(t);
		return;
	}
	self->st.wakes_local++;
	local_push(self, t);
}

void cp_thread_start(struct cp_thread *t)
{
	struct cp_worker *w = cp_worker_self();
	if (w) {
		t->home = w;
		local_push(w, t);
		if (cp_runq_len(&w->rq) == 2)
			wake_a_thief(w); /* a burst of creations: let others help */
		return;
	}
	unsigned i = __atomic_fetch_add(&foreign_rr, 1, __ATOMIC_RELAXED);
	w = workers[i % (unsigned)nworkers];
	t->home = w;
	t->next = NULL;
	inbox_push(w, t, t);
}

_Noreturn void cp_thread_finish(void (*on_dead)(struct cp_thread *))
{
	struct cp_worker *w = cp_worker_self();
	struct cp_thread *cur = w->current;
	w->in_sched = 1;
	cp_barrier();
	w->dead = cur;
	w->on_dead = on_dead;
	struct cp_thread *next = pick_next(w);
	switch_to(w, cur, next ? next : &w->idle, true);
	cp_die("finished thread %llu was resumed", (unsigned long long)cur->id);
}

/* Unique thread ids without a shared atomic per creation: each worker
 * takes a block of them at a time. */
#define ID_BLOCK 1024
static uint64_t new_thread_id(struct cp_worker *w)
{
	if (!w)
		return __atomic_fetch_add(&next_thread_id, 1, __ATOMIC_RELAXED);
	if (w->next_id == w->id_limit) {
		w->next_id = __atomic_fetch_add(&next_thread_id, ID_BLOCK, __ATOMIC_RELAXED);
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
	t->sp = cp_ctx_make((char *)t, thread_begin, t);
	return t;
}

void cp_thread_release(struct cp_thread *t)
{
	struct cp_worker *w = cp_worker_self();
	struct cp_stack st = t->stack; /* t lives inside it */
	cp_stack_put(w ? &w->stacks : NULL, &st);
}

/* ------------------------------------------------------------------ */
/* timers                                                             */

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
		struct cp_timer *m = cp_heap_min(&w->timers);
		__atomic_store_n(&w->next_deadline, m ? m->deadline : CP_NO_DEADLINE,
		                 __ATOMIC_RELAXED);
	}
	cp_spin_unlock(&w->timer_lock);
}

/* ------------------------------------------------------------------ */
/* idle: steal, then sleep in the ring                                */

/* Asks a busy worker for work, or pokes one that stopped switching. */
static void look_for_work(struct cp_worker *w, uint64_t now)
{
	struct cp_worker *v = w->victim;
	if (v) {
		if (__atomic_load_n(&v->steal_req, __ATOMIC_RELAXED) != w) {
			w->victim = NULL; /* served, or taken back */
		} else if (__atomic_load_n(&v->heartbeat, __ATOMIC_RELAXED) == w->victim_beat &&
		           now - w->asked_at >= POKE_AFTER_NS) {
			/* no switch for a while: it cannot answer by itself */
			syscall(SYS_tgkill, getpid(), v->tid, POKE_SIGNAL);
			w->asked_at = now;
			return;
		} else {
			return;
		}
	}
	for (int i = 1; i < nworkers; i++) {
		v = workers[(w->index + i) % nworkers];
		/* work queued there, or timers overdue there (a stuck worker
		 * cannot fire them; the poke handler will) */
		uint64_t nd = __atomic_load_n(&v->next_deadline, __ATOMIC_RELAXED);
		bool overdue = nd != CP_NO_DEADLINE && nd + POKE_AFTER_NS <= now;
		if (cp_runq_len(&v->rq) == 0 && !__atomic_load_n(&v->inbox, __ATOMIC_RELAXED) &&
		    !overdue)
			continue;
		struct cp_worker *none = NULL;
		if (__atomic_compare_exchange_n(&v->steal_req, &none, w, false,
		                                __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
			w->victim = v;
			w->victim_beat = __atomic_load_n(&v->heartbeat, __ATOMIC_RELAXED);
			w->asked_at = now;
			kick(v); /* it may be asleep with work in its inbox */
			return;
		}
	}
}

/* The idle policy.  Before sleeping in the kernel a worker may keep
 * polling its ring: under load the next completion is microseconds away
 * and a sleep plus wake-up costs more than that; at low load the polling
 * is wasted CPU.  So the window adapts: a sleep that ends early (work came
 * soon) doubles it, up to SPIN_MAX_NS; a window that found nothing halves
 * it.  CAPRICE_IDLE_SPIN_US fixes it instead (0: never poll). */
#define SPIN_MAX_NS    100000ull
#define SPIN_START_NS  2000ull
#define SHORT_SLEEP_NS 200000ull
static int64_t fixed_spin_ns = -1;

static bool has_news(struct cp_worker *w)
{
	return cp_runq_len(&w->rq) || __atomic_load_n(&w->inbox, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&w->steal_req, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&w->cancels, __ATOMIC_RELAXED);
}

/* Polls the ring for up to the spin window; true if work turned up. */
static bool idle_spin(struct cp_worker *w, uint64_t now)
{
	uint64_t window = fixed_spin_ns >= 0 ? (uint64_t)fixed_spin_ns : w->spin_ns;
	if (!window || !w->ring.inflight)
		return false;
	uint64_t until = now + window;
	do {
		if (cp_ring_poll(&w->ring) || has_news(w))
			return true;
		cp_cpu_relax();
	} while (cp_now_ns() < until);
	if (fixed_spin_ns < 0)
		w->spin_ns /= 2;
	return false;
}

/* Nothing to run: ask for work, then sleep in the ring until a kick, a
 * completion, the next timer, or the next look around. */
static void idle_sleep(struct cp_worker *w, uint64_t now, uint64_t *idle_period)
{
	if (idle_spin(w, now))
		return;
	look_for_work(w, now);
	uint64_t timeout = w->victim ? POKE_AFTER_NS : *idle_period;
	uint64_t nd = __atomic_load_n(&w->next_deadline, __ATOMIC_RELAXED);
	if (nd != CP_NO_DEADLINE && nd - now < timeout)
		timeout = nd > now ? nd - now : 0;
	__atomic_store_n(&w->sleeping, 1, __ATOMIC_SEQ_CST);
	if (!__atomic_load_n(&w->inbox, __ATOMIC_SEQ_CST) &&
	    !__atomic_load_n(&w->steal_req, __ATOMIC_SEQ_CST) &&
	    !__atomic_load_n(&w->cancels, __ATOMIC_SEQ_CST)) {
		w->st.sleeps++;
		uint64_t before = cp_now_ns();
		cp_ring_wait(&w->ring, timeout);
		if (cp_now_ns() - before < SHORT_SLEEP_NS && w->ring.inflight) {
			/* work came back soon: poll longer next time */
			w->spin_ns = w->spin_ns ? w->spin_ns * 2 : SPIN_START_NS;
			if (w->spin_ns > SPIN_MAX_NS)
				w->spin_ns = SPIN_MAX_NS;
		}
		if (*idle_period < IDLE_MAX_NS)
			*idle_period *= 2;
	}
	__atomic_store_n(&w->sleeping, 0, __ATOMIC_RELAXED);
}

/* A batch of completions made many threads runnable here at once, while
 * another worker may sleep: wake one, and it will ask for half of them.
 * Without this a worker that holds most connections keeps them (a thread
 * returning from I/O resumes where it parked) while the other idles. */
#define SHARE_AT 4
static void share_burst(struct cp_worker *w)
{
	if (cp_runq_len(&w->rq) >= SHARE_AT)
		wake_a_thief(w);
}

static void idle_loop(struct cp_worker *w)
{
	uint64_t idle_period = IDLE_MIN_NS;
	w->in_sched = 1;
	for (;;) {
		/* work at hand (a finished thread's joiner, a wakeup): run it
		 * with no more than a busy switch's look around */
		look_around(w, DONATE_FLOOR_HALF);
		struct cp_thread *next = cp_runq_pop(&w->rq);
		if (!next) {
			/* nothing queued: look at the clock and the ring */
			check_program_sigmask(w);
			uint64_t now = cp_now_ns();
			if (now >= __atomic_load_n(&w->next_deadline, __ATOMIC_RELAXED))
				run_timers(w, now);
			if (cp_ring_poll(&w->ring) >= SHARE_AT)
				share_burst(w);
			next = cp_runq_pop(&w->rq);
			if (!next) {
				idle_sleep(w, now, &idle_period);
				share_burst(w); /* what the sleep's wait reaped */
				continue;
			}
		}
		idle_period = IDLE_MIN_NS;
		switch_to(w, &w->idle, next, false);
		cp_assert(cp_worker_self() == w);
		w->in_sched = 1;
	}
}

static void idle_entry(void *arg)
{
	struct cp_worker *w = arg;
	asan_arrive(w);
	finish_switch(w);
	idle_loop(w);
}

/* ------------------------------------------------------------------ */
/* signals: stack overflow reports, steal pokes                       */

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	struct cp_worker *w = cp_worker_self();
	struct cp_thread *t = w ? w->current : NULL;
	if (t && t != &w->idle && cp_stack_guard_hit(&t->stack, si->si_addr))
		cp_die("stack overflow in thread %llu%s%s%s: fault at %p below its %zu-byte stack "
		       "(%p-%p); give it more with pthread_attr_setstacksize() or CAPRICE_STACK_SIZE",
		       (unsigned long long)t->id, t->name[0] ? " (" : "", t->name,
		       t->name[0] ? ")" : "", si->si_addr, t->stack.size,
		       (void *)t->stack.lo, (void *)cp_stack_top(&t->stack));
	/* not ours: hand it on, or let the default action happen */
	if (prev_segv.sa_flags & SA_SIGINFO && prev_segv.sa_sigaction) {
		prev_segv.sa_sigaction(sig, si, uc);
		return;
	}
	if (prev_segv.sa_handler != SIG_DFL && prev_segv.sa_handler != SIG_IGN) {
		prev_segv.sa_handler(sig);
		return;
	}
	signal(SIGSEGV, SIG_DFL); /* re-faults on return, then dumps core */
}

/* Fires overdue timers from the poke handler.  The interrupted code may
 * hold the timer lock (cp_timer_add runs in user-thread context), so only
 * try it; the thief pokes again if this failed. */
static void rescue_timers(struct cp_worker *w)
{
	if (!cp_spin_trylock(&w->timer_lock))
		return;
	uint64_t now = cp_now_ns();
	struct cp_timer *t;
	while ((t = cp_heap_min(&w->timers)) && t->deadline <= now) {
		cp_heap_remove(&w->timers, t);
		t->fire(t);
		w->st.timers_fired++;
	}
	t = cp_heap_min(&w->timers);
	__atomic_store_n(&w->next_deadline, t ? t->deadline : CP_NO_DEADLINE, __ATOMIC_RELAXED);
	cp_spin_unlock(&w->timer_lock);
}

static void on_poke(int sig, siginfo_t *si, void *uc)
{
	struct cp_worker *w = cp_worker_self();
	if (w && !w->in_sched) {
		int saved = errno;
		rescue_timers(w);
		serve_steal(w, DONATE_ALL);
		errno = saved;
		return;
	}
	if (!w && prev_poke.sa_flags & SA_SIGINFO && prev_poke.sa_sigaction)
		prev_poke.sa_sigaction(sig, si, uc);
	else if (!w && prev_poke.sa_handler != SIG_DFL && prev_poke.sa_handler != SIG_IGN)
		prev_poke.sa_handler(sig);
}

static void install_altstack(void)
{
	stack_t ss = { .ss_sp = malloc(ALTSTACK_SIZE), .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
	if (ss.ss_sp)
		sigaltstack(&ss, NULL);
}

static void install_handlers(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &prev_segv);
	sa.sa_sigaction = on_poke;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigaction(POKE_SIGNAL, &sa, &prev_poke);
}

/* ------------------------------------------------------------------ */
/* start-up                                                           */

/* Where the C library put this kernel thread's stack, asked of its own
 * pthread_getattr_np (libthread's serves user threads).  Fatal messages
 * and ASan need the bounds of every stack a context runs on. */
static void native_stack_bounds(struct cp_stack *st)
{
	typedef int (*getattr_fn)(pthread_t, pthread_attr_t *);
	typedef int (*attr_fn)(pthread_attr_t *);
	typedef int (*getstack_fn)(const pthread_attr_t *, void **, size_t *);
	typedef pthread_t (*self_fn)(void);
	getattr_fn getattr = (getattr_fn)dlsym(RTLD_NEXT, "pthread_getattr_np");
	attr_fn destroy = (attr_fn)dlsym(RTLD_NEXT, "pthread_attr_destroy");
	getstack_fn getstack = (getstack_fn)dlsym(RTLD_NEXT, "pthread_attr_getstack");
	self_fn self = (self_fn)dlsym(RTLD_NEXT, "pthread_self");
	pthread_attr_t a;
	void *lo;
	size_t size;
	st->kind = CP_STACK_USER;
	if (getattr && destroy && getstack && self && getattr(self(), &a) == 0) {
		if (getstack(&a, &lo, &size) == 0) {
			st->lo = lo;
			st->size = size;
		}
		destroy(&a);
	}
}

static void worker_bind(struct cp_worker *w)
{
	cp_tls_worker = w;
	w->errno_loc = __errno_location();
	w->tid = (pid_t)syscall(SYS_gettid);
	install_altstack();
	int e = w->ring.ready ? 0 : cp_ring_init(&w->ring); /* worker 0's is made at start */
	if (e)
		cp_die("worker %d: io_uring_setup refused (%s); Caprice needs io_uring "
		       "(Linux 5.19+, kernel.io_uring_disabled=0, enough RLIMIT_MEMLOCK)",
		       w->index, strerror(-e));
}

static void *worker_main(void *arg)
{
	struct cp_worker *w = arg;
	worker_bind(w);
	w->current = &w->idle;
	w->idle.home = w;
	native_stack_bounds(&w->idle.stack);
	idle_loop(w); /* on the kernel thread's own stack */
	return NULL;
}

static struct cp_worker *worker_alloc(int idx)
{
	struct cp_worker *w = aligned_alloc(CP_CACHELINE, (sizeof *w + CP_CACHELINE - 1) &
	                                                  ~(size_t)(CP_CACHELINE - 1));
	if (!w)
		cp_die("cannot allocate worker %d: out of memory", idx);
	memset(w, 0, sizeof *w);
	w->index = idx;
	w->poll_countdown = POLL_EVERY;
	w->next_deadline = CP_NO_DEADLINE;
	w->idle.id = 0;
	memcpy(w->idle.name, "caprice-idle", 13);
	int e = cp_ring_prepare(&w->ring);
	if (e)
		cp_die("worker %d: eventfd failed: %s", idx, strerror(-e));
	return w;
}

static int parse_workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	const char *env = getenv("CAPRICE_WORKERS");
	if (env && *env) {
		char *end;
		long v = strtol(env, &end, 10);
		if (*end || v < 1 || v > MAX_WORKERS)
			cp_warn("CAPRICE_WORKERS=%s ignored: want a number from 1 to %d", env, MAX_WORKERS);
		else
			n = v;
	}
	if (n < 1)
		n = 1;
	if (n > MAX_WORKERS)
		n = MAX_WORKERS;
	return (int)n;
}

static void parse_spin(void)
{
	const char *env = getenv("CAPRICE_IDLE_SPIN_US");
	if (!env || !*env)
		return;
	char *end;
	long v = strtol(env, &end, 10);
	if (*end || v < 0 || v > 1000000)
		cp_warn("CAPRICE_IDLE_SPIN_US=%s ignored: want microseconds, 0 to 1000000", env);
	else
		fixed_spin_ns = v * 1000;
}

/* A thread record that does not live on its own stack (main's): aligned
 * like the ones that do, since the layer above checks handles by it. */
static struct cp_thread *zalloc_record(size_t size)
{
	size = (size + 63) & ~(size_t)63;
	struct cp_thread *t = aligned_alloc(64, size);
	if (t)
		memset(t, 0, size);
	return t;
}

/* Makes the workers; this kernel thread becomes worker 0 (made already
 * when `made0` is not NULL), and `current` (the code running now) its
 * first user thread. */
static void build_workers(struct cp_thread *current, struct cp_worker *made0)
{
	workers = calloc((size_t)nworkers, sizeof *workers);
	if (!workers)
		cp_die("cannot start: out of memory for %d workers", nworkers);
	for (int i = 0; i < nworkers; i++)
		workers[i] = i == 0 && made0 ? made0 : worker_alloc(i);
	struct cp_worker *w0 = workers[0];
	worker_bind(w0);
	current->home = w0;
	w0->current = current;
	cp_tls_thread = current;
	int e = cp_stack_get(NULL, IDLE_STACK_SIZE, cp_page_size(), &w0->idle.stack);
	if (e)
		cp_die("cannot map worker 0's scheduler stack: %s", strerror(e));
	w0->idle.home = w0;
	w0->idle.sp = cp_ctx_make(cp_stack_top(&w0->idle.stack), idle_entry, w0);

	/* NULL attributes: pthread_attr_* are libthread's, with its own layout */
	cp_real_pthread_create_fn create = cp_real_pthread_create();
	for (int i = 1; i < nworkers; i++) {
		e = create(&workers[i]->kthread, NULL, worker_main, workers[i]);
		if (e)
			cp_die("cannot start worker %d's kernel thread: %s", i, strerror(e));
	}
}

/* In the child of fork(), only the forking kernel thread exists, running
 * the forking user thread (POSIX: the only thread that survives).  The
 * parent's workers, queues and rings are gone or not ours to use (a
 * ring belongs to the task that made it), so the runtime is built again
 * around that thread.  What the vanished threads held is leaked. */
static void after_fork_child(void)
{
	struct cp_worker *old = cp_worker_self();
	struct cp_thread *cur = old ? old->current : NULL;
	if (!cur || (old && cur == &old->idle)) {
		/* forked from a kernel thread that is not ours: it becomes
		 * the child's first user thread, as main did at start-up */
		cur = zalloc_record(thread_size_in_use);
		if (!cur)
			cp_die("fork: out of memory rebuilding the runtime in the child");
		cur->id = __atomic_fetch_add(&next_thread_id, 1, __ATOMIC_RELAXED);
		native_stack_bounds(&cur->stack);
	}
	for (int i = 0; i < nworkers; i++) {
		struct cp_worker *w = workers[i];
		if (w->ring.ready)
			io_uring_queue_exit(&w->ring.uring);
		syscall(SYS_close, w->ring.kick_fd);
	}
	cp_stack_after_fork();
	cur->flags |= CP_TF_MAIN;
	main_thread = cur;
	build_workers(cur, NULL);
}

struct cp_thread *cp_runtime_start(size_t thread_size, int *refused)
{
	int expect = 0;
	if (!__atomic_compare_exchange_n(&runtime_state, &expect, 1, false,
	                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(&runtime_state, __ATOMIC_ACQUIRE) != 2)
			cp_cpu_relax();
		return main_thread;
	}
	/* this kernel thread becomes worker 0: its ring is made first, so a
	 * refused io_uring leaves nothing behind and can be answered */
	struct cp_worker *w0 = worker_alloc(0);
	int e = cp_ring_init(&w0->ring);
	if (e) {
		syscall(SYS_close, w0->ring.kick_fd);
		free(w0);
		__atomic_store_n(&runtime_state, 0, __ATOMIC_RELEASE);
		*refused = e;
		return NULL;
	}
	cp_spin_set_deferred_hook(run_deferred_kicks);
	nworkers = parse_workers();
	parse_spin();
	/* the mask the process started with is the program's; workers
	 * inherit it from this thread */
	syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &program_sigmask, sizeof program_sigmask);
	thread_size_in_use = thread_size;
	main_thread = zalloc_record(thread_size);
	if (!main_thread)
		cp_die("cannot start: out of memory");
	main_thread->id = 1;
	main_thread->flags = CP_TF_MAIN;
	native_stack_bounds(&main_thread->stack);
	memcpy(main_thread->name, "main", 5);
	install_handlers();
	build_workers(main_thread, w0);
	pthread_atfork(NULL, NULL, after_fork_child);
	__atomic_store_n(&runtime_state, 2, __ATOMIC_RELEASE);
	return main_thread;
}

bool cp_runtime_started(void)
{
	return __atomic_load_n(&runtime_state, __ATOMIC_ACQUIRE) == 2;
}

int cp_worker_count(void) { return nworkers; }

struct cp_worker *cp_worker_get(int idx)
{
	return idx >= 0 && idx < nworkers ? workers[idx] : NULL;
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

int cp_worker_index(void)
{
	struct cp_worker *w = cp_worker_self();
	return w ? w->index : -1;
}

void cp_worker_stats(int idx, struct cp_worker_stats *out)
{
	struct cp_worker *w = cp_worker_get(idx);
	if (!w) {
		memset(out, 0, sizeof *out);
		return;
	}
	*out = w->st; /* racy snapshot; good enough for counters */
	out->runq_len = cp_runq_len(&w->rq);
	out->enters = __atomic_load_n(&w->ring.enters, __ATOMIC_RELAXED);
}
