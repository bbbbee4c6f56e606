/* worker.h: a worker, the per-core kernel thread that runs user threads.
 * Internal to sched/: everything above goes through scheduler.h. */
#ifndef CAPRICE_WORKER_H
#define CAPRICE_WORKER_H

#include <pthread.h>
#include <signal.h>
#include <sys/types.h>

#include "ring.h"
#include "fence.h"
#include "runq.h"
#include "scheduler.h"
#include "timer.h"
#include "compiler.h"
#include "chunk.h"

struct cp_worker {
	/* ---- touched only by this worker ---- */
	struct cp_thread *current;      /* running user thread, or &idle */
	struct cp_runq rq;
	volatile uint32_t in_sched;     /* 1 while rq may be mid-update: a
	                                   steal poke then leaves it alone */
	int index;
	int32_t resident_own;           /* read by others: see resident_remote */
	int *errno_loc;                 /* this kernel thread's errno */
	uint32_t poll_countdown;        /* switches until the next clock/ring look */
	uint32_t poll_deferred;         /* that look waits until after a switch */
	uint32_t sigmask_gen;           /* program signal mask applied here */
	cp_spinlock *unlock_after;      /* released once the switch is done */
	struct cp_thread *dead;         /* finished thread awaiting on_dead */
	cp_on_dead_fn *on_dead;
	struct cp_thread *switched_from;/* ASan needs the stack we left */
	struct cp_thread *requeue;      /* a yielding thread, queued once the
	                                   switch away from it is done */
	struct cp_thread *successor;    /* runs next, once the finishing
	                                   current thread is off its stack */
	struct cp_stack_pool stacks;
	struct cp_chunk_pool chunks;    /* linked stacks' chunks (chunk.h) */
	struct cp_thread idle;          /* the worker's own loop, as a context */
	struct cp_worker *victim;       /* where our steal request is pending */
	uint64_t victim_beat;           /* its heartbeat when we asked */
	uint64_t asked_at;
	struct cp_worker *lone_victim;  /* a worker with one queued thread we watch */
	uint64_t lone_beat, lone_since; /* its heartbeat, and since when unchanged */
	struct cp_worker_stats st;
	uint64_t spin_ns;               /* idle polling window, adaptive */
	uint64_t next_id, id_limit;     /* thread ids handed out in blocks */

	/* ---- timers: the owner fires them, anyone may cancel ---- */
	cp_spinlock timer_lock;
	struct cp_timer_heap timers;
	uint64_t next_deadline;         /* relaxed copy of the heap minimum */

	/* ---- shared with other workers, on their own lines ---- */
	_Alignas(CP_CACHELINE) struct cp_thread *inbox; /* wakeups from elsewhere */
	uint32_t sleeping;              /* 1 while asleep in the ring */
	struct cp_worker *steal_req;    /* an idle worker asking for threads */
	uint64_t heartbeat;             /* switches, published for thieves */
	uint32_t preempt;               /* the monitor asks: yield at a safe point */
	uint64_t beat_seen;             /* heartbeat at the monitor's last look:
	                                   equal to it, the running thread has
	                                   run since before that look */
	uint64_t looked_at;             /* and when that look was */
	uint32_t watching;              /* idle, spinning over others' queues */
	uint32_t idle_now;              /* in its scheduler loop with nothing to run */
	/* live user threads whose home this is (threads.c: where a new one
	 * goes) are resident_own + resident_remote: the owner counts those
	 * it starts, adopts or ends in resident_own (plain stores, no
	 * locked operation on a create or an exit); other kernel threads
	 * count in resident_remote, atomically.  Either may go below 0. */
	int32_t resident_remote;
	uint32_t ring_busy;             /* SQEs half-prepared: a poke leaves the
	                                   ring alone (cleared at every switch) */
	struct cp_io_op *cancels;       /* I/O cancels asked by other threads */
	pid_t tid;
	int stat_fd, schedstat_fd;      /* its /proc task files, for the monitor (spare.c) */
	struct cp_blocking_graph *graph; /* CAPRICE_SCHED=2d (location.c) */
	void *own_tcb;                  /* the kernel thread's own TCB */
	bool spare;                     /* a spare worker (spare.c) */
	struct cp_worker *covering;     /* spare: the blocked worker whose
	                                   threads it runs (the monitor sets
	                                   and clears it) */
	struct cp_worker *covered_last; /* spare: where its threads go back */

	_Alignas(CP_CACHELINE) struct cp_ring ring;
	pthread_t kthread;
};

/* All workers, for thieves, kicks and debuggers (sched/caprice-gdb.py):
 * the regular ones first, then the spares (spare.c). */
extern struct cp_worker **cp_workers CP_HIDDEN;
extern int cp_nworkers CP_HIDDEN;  /* regular workers */
extern int cp_nall CP_HIDDEN;      /* regular and spare */
/* The layer above's thread record size: where a record sits at a stack's
 * top (threads.c; debuggers read it too). */
extern size_t cp_thread_record_size CP_HIDDEN;

/* The worker of the calling kernel thread.  Read through asm so that the
 * compiler never reuses a value from before a context switch: a user
 * thread may resume on a different worker. */
extern __thread struct cp_worker *cp_tls_worker
	__attribute__((tls_model("initial-exec"))) CP_HIDDEN;

static inline struct cp_worker *cp_worker_self(void)
{
	struct cp_worker *w;
	CP_TLS_LOAD_PTR(cp_tls_worker, w);
	return w;
}

struct cp_worker *cp_worker_get(int idx);

/* ---- the switch (sched.c) ---- */

#define CP_POLL_EVERY 64 /* switches between a busy worker's clock/ring looks */

/* Parks the current thread; `lk` (may be NULL) is released after the
 * switch, when the thread can safely be woken elsewhere. */
void cp_park(cp_spinlock *lk);

/* How much a worker hands to a thief that asked (steal.c). */
enum cp_donation {
	CP_DONATE_FLOOR_HALF, /* at a park or idle: a lone queued thread stays,
	                         or communicating pairs would be split across
	                         workers and pay a kick per handoff */
	CP_DONATE_CEIL_HALF,  /* at a yield: everything stays runnable, so a
	                         lone queued thread is better run elsewhere */
	CP_DONATE_ALL,        /* stuck (the poke's hand-off), a spare giving
	                         back: every thread that may leave, the inbox's
	                         too: the movable ones and the pinned ones with
	                         TLS of their own (with the worker's, errno's
	                         address is this worker's: they stay) */
};

/* First code of a fresh context: finishes the switch that led here. */
void cp_sched_arrived(struct cp_worker *w);
/* The entry of every new user thread's context (threads.c makes them). */
void cp_sched_thread_begin(void *arg);

/* t, running on w, last ran elsewhere (or nowhere yet): it now lives
 * here (threads.c). */
void cp_thread_rehome(struct cp_thread *t, struct cp_worker *w);

/* A push onto the caller's own run queue, safe against a steal poke. */
static inline void cp_local_push(struct cp_worker *w, struct cp_thread *t)
{
	uint32_t was = w->in_sched;
	w->in_sched = 1;
	cp_barrier();
	cp_runq_push(&w->rq, t);
	cp_barrier();
	w->in_sched = was;
}

/* Live user threads whose home is w (read racily by others). */
static inline uint32_t cp_worker_resident(const struct cp_worker *w)
{
	int32_t n = __atomic_load_n(&w->resident_own, __ATOMIC_RELAXED) +
	            __atomic_load_n(&w->resident_remote, __ATOMIC_RELAXED);
	return n > 0 ? (uint32_t)n : 0;
}

/* The owner: n more (or fewer) threads live at home here. */
static inline void cp_worker_resident_add(struct cp_worker *w, int32_t n)
{
	__atomic_store_n(&w->resident_own, w->resident_own + n, __ATOMIC_RELAXED);
}

/* ---- wakeups (wake.c) ---- */

/* Wakes w if it sleeps in its ring (after new work was handed to it);
 * under a runtime lock, only once the last one is released. */
void cp_worker_kick(struct cp_worker *w);
/* Hands a chain of runnable threads to w's inbox and kicks it. */
void cp_inbox_push(struct cp_worker *w, struct cp_thread *first, struct cp_thread *last);
/* Empties w's inbox (any thread may): a chain in arrival order. */
struct cp_thread *cp_inbox_take(struct cp_worker *w);
/* Moves the inbox, in arrival order, onto the run queue. */
void cp_inbox_drain(struct cp_worker *w);
/* Registers the kick deferral with the spinlock (at start-up). */
void cp_wake_init(void);
/* cp_wake_successor's wake: t runs next on the worker whose current
 * thread is finishing, straight after the switch away from that thread
 * (wake.c). */
void cp_wake_successor_thread(struct cp_worker *self, struct cp_thread *t);

/* ---- interruptible waits (wait.c, io.c) ----
 * A waiter publishes its wait (t->waiting or t->io_waiting) with a plain
 * store and then reads t->interrupted; an interrupter sets interrupted,
 * takes t->wait_lock and reads the wait.  The frequent side's barrier is
 * the compiler's (fence.h), the interrupter's is cp_fence_rare(), so
 * either the waiter sees the interrupt or the interrupter sees the wait,
 * and a wait costs no locked operation of its own (it took wait_lock
 * twice: two of a condvar handoff's seven). */
static inline unsigned cp_wait_publish(struct cp_thread *t, void **slot, void *wait,
                                       unsigned interrupt_by)
{
	__atomic_store_n(slot, wait, __ATOMIC_RELAXED);
	cp_fence_frequent();
	return interrupt_by & cp_interrupt_pending(t);
}

/* The wait is over: once this returns, no interrupter looks at it (one
 * that saw it holds wait_lock until it is done with it). */
static inline void cp_wait_withdraw(struct cp_thread *t, void **slot)
{
	__atomic_store_n(slot, NULL, __ATOMIC_RELAXED);
	cp_fence_frequent();
	cp_spin_wait_unlocked(&t->wait_lock);
}

/* ---- stealing and burst sharing (steal.c) ---- */

/* Hands part of our queue (all of it and the inbox, when stuck) to a
 * worker that asked for work. */
void cp_steal_serve(struct cp_worker *w, enum cp_donation how);
/* Moves threads from w (the caller's worker) to another worker's inbox. */
void cp_steal_give(struct cp_worker *w, struct cp_worker *to, enum cp_donation how);
/* The poke: hands w's runnable threads to a worker that asked, else to
 * one that sleeps, else to the spare covering w. */
void cp_steal_hand_off(struct cp_worker *w);
/* Wakes one sleeping worker so it can come and steal. */
void cp_steal_wake_thief(struct cp_worker *self);
/* Idle: takes threads from a busy worker's queue (runq.h), else asks one
 * for what only it can give, or pokes one that stopped switching.  True
 * when threads were taken onto w's queue. */
bool cp_steal_look_for_work(struct cp_worker *w, uint64_t now);
/* A queued thread is taken without its worker's help once that worker
 * has not switched for this long (a lone one; two or more at once). */
#define CP_LONE_AFTER_NS 20000ull
/* How long an idle worker watches such a queue before it sleeps. */
#define CP_THIEF_SPIN_NS 120000ull
/* Regular workers asleep, and idle workers watching others' queues: a
 * wakeup that queues a thread locally wakes a thief only when some worker
 * sleeps and none watches already (wake.c). */
extern uint32_t cp_idle_sleepers CP_HIDDEN, cp_thieves_spinning CP_HIDDEN;
/* Regular workers with nothing to run (asleep or not). */
extern uint32_t cp_idle_workers CP_HIDDEN;
/* The first regular worker after w that has nothing to run, or NULL
 * (steal.c; callers check cp_idle_workers first). */
struct cp_worker *cp_idle_other(struct cp_worker *w);
static inline void cp_idle_enter(struct cp_worker *w)
{
	if (!w->idle_now && !w->spare) {
		w->idle_now = 1;
		__atomic_add_fetch(&cp_idle_workers, 1, __ATOMIC_RELAXED);
	}
}
static inline void cp_idle_leave(struct cp_worker *w)
{
	if (w->idle_now) {
		w->idle_now = 0;
		__atomic_sub_fetch(&cp_idle_workers, 1, __ATOMIC_RELAXED);
	}
}
void cp_steal_offer_slow(struct cp_worker *self);
/* A thread parks on I/O while another worker idles: half of what is
 * queued here goes there, so that this worker is free to reap the
 * completion and run the thread again (only this worker can reap it,
 * and a thread woken from I/O may be pinned here) instead of running a
 * queued thread that may compute for milliseconds first. */
void cp_steal_share_at_io_park_slow(struct cp_worker *w);
static inline void cp_steal_share_at_io_park(struct cp_worker *w)
{
	if (cp_unlikely(__atomic_load_n(&cp_idle_workers, __ATOMIC_RELAXED) != 0))
		cp_steal_share_at_io_park_slow(w);
}
static inline void cp_steal_offer(struct cp_worker *self)
{
	/* one queued thread is the partner of a ping-pong pair, or a thread
	 * just made that its maker will join, more often than work to share:
	 * waking a worker for it costs the waker a system call */
	if (cp_unlikely(__atomic_load_n(&cp_idle_sleepers, __ATOMIC_RELAXED) != 0) &&
	    cp_runq_movable(&self->rq) >= 2)
		cp_steal_offer_slow(self);
}
/* After a batch of completions: share them when 4+ threads wait here. */
#define CP_SHARE_AT 4
void cp_steal_share_burst(struct cp_worker *w);
/* A victim silent this long is stuck and gets poked (see steal.c). */
#define CP_POKE_AFTER_NS 20000000ull

/* ---- threads (threads.c) and linked stacks (linked.c) ---- */
/* Lays a thread record of rec bytes out at the top of st. */
struct cp_thread *cp_thread_init(struct cp_stack st, size_t rec,
                                 void (*entry)(struct cp_thread *), int *err);
/* What switches must do beyond the plain switch, once some thread of the
 * process needs it (bits are set, never cleared): a program that uses
 * none of it pays one load and branch per switch for all of them. */
enum {
	CP_EXTRA_LINKED = 1,    /* carry the split-stack limit (linked.c) */
	CP_EXTRA_CPUCLOCK = 2,  /* account CPU time (cpuclock.c) */
	CP_EXTRA_REDIRECT = 4,  /* a thread may have a redirect (signals.c) */
};
extern uint32_t cp_switch_extras CP_HIDDEN;
/* Sets an extra, writing the word only the first time: every switch
 * reads it, and a write per linked thread created would bounce its line
 * between the cores. */
static inline void cp_switch_extras_add(uint32_t bit, int memorder)
{
	if (!(__atomic_load_n(&cp_switch_extras, __ATOMIC_RELAXED) & bit))
		__atomic_or_fetch(&cp_switch_extras, bit, memorder);
}
/* A kernel thread that runs user threads: limit 0, a scratch stack. */
void cp_linked_bind_kthread(void);
void cp_linked_release(struct cp_thread *t);
void cp_linked_free_alloca(struct cp_thread *t);

/* ---- thread CPU clocks (cpuclock.c) ---- */
static inline uint64_t cp_rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}
/* At a switch from prev to next: prev ran since it was switched in (0:
 * before the accounting started, not counted), next runs from now. */
static inline void cp_cpuclock_switch(struct cp_thread *prev, struct cp_thread *next)
{
	uint64_t now = cp_rdtsc();
	if (prev->run_since)
		prev->cpu_ticks += now - prev->run_since;
	prev->run_since = 0;
	__atomic_store_n(&next->run_since, now, __ATOMIC_RELAXED);
}

/* ---- where threads block (location.c) ---- */
/* A blocking point, a node of the graph: a hash of the call chain above
 * the runtime, and what threads that parked here did until they parked
 * again (the policies' predictions, policy.c). */
struct cp_loc_node {
	uint64_t key;          /* 0: free */
	void *ip;              /* the innermost frame above the runtime, to name it */
	uint64_t count;        /* parks here */
	uint64_t outs;         /* runs from here to a next blocking point */
	uint64_t next_ns;      /* EWMA of the CPU time of such a run */
	int32_t rest_fds;      /* descriptors a thread that parks here opens
	                          minus closes from here until it ends, x
	                          CP_FDS_ONE: an EWMA of each run's delta plus
	                          the next node's own (temporal-difference
	                          learning, which needs no path), within
	                          +-CP_FDS_REST_MAX; positive for an accept loop,
	                          negative for a connection that will close */
	int32_t next_kib;      /* EWMA of the KiB a thread that parks here takes
	                          from malloc minus gives back on its run to
	                          its next blocking point: positive where a
	                          request's buffers are about to be taken,
	                          negative where they are about to go */
};
#define CP_FDS_ONE 1024
#define CP_FDS_REST_MAX (8 * CP_FDS_ONE)
/* A thread that parked at least once ends (sched.c): its last run's
 * descriptor delta closes its path through the graph, and the bytes it
 * counted but had not posted go into the process's count. */
void cp_location_exit_slow(struct cp_worker *w, struct cp_thread *t);
void cp_mem_thread_done(struct cp_thread *t);
extern bool cp_sched_2d CP_HIDDEN;
/* The policies (policy.c): turned on with the graph; the monitor's look
 * keeps the descriptor count true. */
void cp_policy_configure(void);
void cp_policy_monitor_look(uint64_t now);
/* A worker with held threads and nothing else looks again this often. */
#define CP_HELD_LOOK_NS 1000000ull
void cp_location_configure(void);
void cp_location_park_slow(struct cp_worker *w, struct cp_thread *t);
/* The monitor's look: writes the graph when SIGUSR2 asked for it. */
void cp_location_monitor_look(void);
uint64_t cp_cpuclock_ticks_to_ns(uint64_t ticks);

/* ---- spare workers (spare.c) ---- */
/* Is w's kernel thread asleep in the kernel (state S or D) now?  Sets
 * *ran_ns to the CPU time it has run in all (0 if unknown). */
bool cp_spare_blocked_in_kernel(const struct cp_worker *w, uint64_t *ran_ns);
/* Opens what cp_spare_blocked_in_kernel reads, when w's kernel thread starts. */
void cp_spare_watch_open(struct cp_worker *w);
/* The monitor: a spare to run blocked w's threads, or NULL if none is free. */
struct cp_worker *cp_spare_cover(struct cp_worker *w);
/* The monitor: w runs again; its spare gives back what it holds. */
void cp_spare_release(struct cp_worker *w);
/* The spare covering w, or NULL. */
struct cp_worker *cp_spare_of(const struct cp_worker *w);
/* At a spare's look around: once retired, give back what is runnable. */
void cp_spare_look(struct cp_worker *s);

/* ---- the scheduler loop (sched.c) and idle policy (idle.c) ---- */
#define CP_IDLE_MIN_NS 1000000ull  /* idle look-around period, doubling */
/* Nothing queued: fire timers, reap the ring and, if still nothing, poll,
 * ask for work and sleep.  True when threads are queued now. */
bool cp_idle_nothing_queued(struct cp_worker *w, uint64_t *idle_period);
/* Never returns.  Not declared _Noreturn: ASan would then call
 * __asan_handle_no_return before it, which asks pthread_getattr_np about
 * the calling kernel thread, and that name is libthread's (user threads
 * only) in a sanitized build. */
void cp_idle_loop(struct cp_worker *w);
void cp_idle_entry(void *arg);
void cp_idle_configure(void);   /* CAPRICE_IDLE_SPIN_US */

/* ---- the monitor (monitor.c) ---- */
void cp_monitor_start(void);

/* ---- timers (timer.c) ---- */

/* Timers, on the calling worker's heap (cp_timer_add) or on whichever
 * heap holds t (cp_timer_cancel; a no-op if it already fired). */
int cp_timer_add(struct cp_worker *w, struct cp_timer *t);
void cp_timer_cancel(struct cp_timer *t);
/* Fires w's timers due by now.  From a signal handler (the interrupted
 * code may hold the heap lock) only try the lock: false if it was busy. */
bool cp_timers_fire(struct cp_worker *w, uint64_t now, bool from_handler);

/* ---- signals (signals.c, sigmask.c) ---- */
#define CP_POKE_SIGNAL SIGURG         /* ignored by default, rarely used */
void cp_signals_install(void);        /* overflow report and poke handler */
void cp_signals_bind_worker(void);    /* this kernel thread's altstack */
/* Applies the program's signal mask on w if it changed since. */
void cp_sigmask_apply(struct cp_worker *w);
static inline void cp_sigmask_check(struct cp_worker *w);
/* Records the mask the process started with (at start-up). */
void cp_sigmask_init(void);

/* ---- thread-local storage per user thread (tls.c) ---- */
extern bool cp_tls_per_thread CP_HIDDEN;
/* Defined (true) by the shim: unmodified programs get TLS per user thread
 * unless CAPRICE_TLS=worker; linked programs only with CAPRICE_TLS=thread.
 * Weak, and not hidden: gold gives a hidden weak symbol left undefined an
 * address that is not NULL, where a lookup through the GOT finds none. */
extern const bool cp_tls_thread_by_default CP_EXPORT __attribute__((weak));
void cp_tls_configure(void);
void *cp_tls_current(void);
int cp_tls_make(struct cp_thread *t);
void cp_tls_free(struct cp_thread *t);
void cp_tls_load(struct cp_worker *w, void *tcb);
/* What the C library does for a new thread in its own TCB, run by the
 * thread before its entry function. */
void cp_tls_thread_begin(void) CP_COLD;

/* ---- I/O (io.c) ---- */
/* Submits the cancellations other threads queued on w. */
struct cp_io_op;
void cp_io_run_cancels(struct cp_worker *w);

/* ---- threads (threads.c) ---- */

/* Marks a record live for debuggers; one not on a pooled stack (main's,
 * a stack of its own mapping or the caller's) also goes on their list. */
void cp_registry_add(struct cp_thread *t);
/* In the child of fork: only the surviving thread is live. */
void cp_registry_after_fork(struct cp_thread *survivor);

/* ---- start-up and fork (runtime.c, fork.c) ---- */

/* A thread record that does not live on its own stack (main's, or a
 * forking kernel thread's in the child), aligned like the ones that do. */
struct cp_thread *cp_record_alloc(void);
/* Makes the workers around `current`, which becomes worker 0's first
 * user thread on this kernel thread (worker 0 already made: made0). */
void cp_runtime_build(struct cp_thread *current, struct cp_worker *made0);
/* Where the C library put this kernel thread's stack. */
void cp_native_stack_bounds(struct cp_stack *st);
/* Takes a block of fresh thread ids (threads.c's per-worker blocks). */
uint64_t cp_thread_ids_take(uint64_t n);
void cp_fork_init(void);

/* ---- the program's signal mask, inline part ---- */
extern uint32_t cp_program_sigmask_gen CP_HIDDEN;
static inline void cp_sigmask_check(struct cp_worker *w)
{
	if (cp_unlikely(__atomic_load_n(&cp_program_sigmask_gen, __ATOMIC_RELAXED) !=
	                w->sigmask_gen))
		cp_sigmask_apply(w);
}

#endif
