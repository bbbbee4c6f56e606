/* scheduler.h: what the layers above may use from the scheduler.
 *
 * The scheduler knows threads only as things that run, park and wake.
 * pthread semantics (join, keys, cancellation, attributes) live in
 * libthread/, which embeds struct cp_thread at the start of its own
 * thread record. */
#ifndef CAPRICE_SCHEDULER_H
#define CAPRICE_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "spinlock.h"
#include "stack.h"

struct cp_worker;
struct cp_waiter;
struct cp_loc_node;

struct cp_thread {
	void *sp;                    /* saved stack pointer while switched out */
	struct cp_thread *next;      /* run queue or inbox link */
	/* when it went on a deferred or held level; on an overflow list, the
	 * push number of the thread behind it (runq.h), read with `next` */
	uint64_t queued_at;
	struct cp_worker *home;      /* worker it last ran on: wakeups go there */
	int saved_errno;             /* errno is per user thread */
	uint32_t flags;              /* CP_TF_* */
	uint32_t pinned;             /* woken from I/O: stays on this worker
	                                until it has run (see cp_wake_pinned) */
	uint8_t done;                /* finished (for debuggers, who tell the other
	                                states from where the thread is linked) */
	uint8_t prio;                /* 0, or a real-time priority 1..99 */
	uint8_t level;               /* the run queue level it waits on (runq.h) */
	uint32_t live;               /* cp_live_tag from creation to release */
	int32_t mem_unposted;        /* bytes it counted that are not yet in the
	                                process's count (policy.c) */
	uint64_t id;                 /* 1 = main, then increasing */
	struct cp_stack stack;       /* this record lives at the stack's top */
	void (*entry)(struct cp_thread *);
	/* cancellable waits: an interrupter holds wait_lock while it looks
	 * at `waiting` or `io_waiting` (worker.h: cp_wait_publish) */
	cp_spinlock wait_lock;
	uint32_t interrupted;        /* CP_INTR_* pending: a cancel stays */
	struct cp_waiter *waiting;
	struct cp_io_op *io_waiting; /* an interruptible I/O wait in progress */
	uint64_t switches;           /* times switched in */
	char name[16];               /* pthread_setname_np; shown in fatal messages */
	void *tcb;                   /* its own TCB (CAPRICE_TLS=thread), or NULL */
	/* linked stacks (linked.c): the split-stack limit (%fs:0x70) while
	 * switched out, 0 on a contiguous stack; the first chunk; the bytes
	 * of all its chunks, and their cap */
	uintptr_t ss_limit;
	struct cp_chunk *chunk0;
	size_t chunk_bytes, chunk_cap;
	uint64_t big_calls;          /* calls it ran on a big chunk */
	void *alloca_blocks;         /* __morestack_allocate_stack_space's */
	/* what the thread must run at once, wherever it is (an asynchronous
	 * cancel): the poke makes its interrupted code call it (signals.c) */
	void (*redirect)(void);
	uint64_t cpu_ticks;          /* time-stamp counter ticks run (cpuclock.c) */
	uint64_t run_since;          /* the counter when it was switched in, or 0 */
	struct cp_loc_node *loc;     /* where it last blocked (location.c) */
	uint64_t loc_ticks;          /* its cpu_ticks then */
	/* since it last blocked: descriptors it opened minus closed, and
	 * bytes it took from malloc minus gave back (CAPRICE_SCHED=2d; within
	 * +-2 GiB) */
	int32_t fds_run, mem_run;
	void *tls_mem;               /* what holds the TCB and its static TLS */
	/* records not on a pooled stack: the list debuggers walk besides
	 * the stack slabs (sched/threads.c) */
	struct cp_thread *reg_prev, *reg_next;
#ifdef CP_ASAN
	void *asan_fake_stack;
#endif
};

#define CP_THREAD_LIVE 0x6576696cu /* "live": a debugger's test for a record */

#define CP_TF_MAIN 1u     /* the process's initial thread, on the kernel's stack */

/* ---- runtime ---- */

/* Starts the runtime once.  The calling kernel thread becomes worker 0 and
 * its current execution becomes the first user thread (main), whose record
 * of thread_size bytes is zero-filled and returned.  CAPRICE_WORKERS sets
 * the worker count (default: online CPUs).  Later calls return the same
 * record.  If io_uring is refused (a seccomp filter, a sysctl, an old
 * kernel) it returns NULL with -errno in *refused, having changed
 * nothing; other failures (memory, kernel threads) end the process with
 * a message. */
struct cp_thread *cp_runtime_start(size_t thread_size, int *refused);
int cp_worker_count(void);
/* Spare workers (they follow the regular ones: cp_worker_stats takes
 * indexes up to cp_worker_count() + cp_spare_worker_count() - 1). */
int cp_spare_worker_count(void);
/* Runs fn in the child of fork(), once the runtime is rebuilt there, after
 * the hooks registered before it (sched/fork.c states the whole order). */
void cp_at_fork_child(void (*fn)(void));
/* Signal masks are per process here: a user thread moves between
 * workers, so a mask set on one kernel thread would follow nobody.  This
 * changes the mask (bit n-1 for signal n) every worker applies, as
 * sigprocmask's `how` says (SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK), and
 * returns the mask before: the caller's worker applies it at once, the
 * others at their next look around (a sleeping one is woken for it).  The
 * steal poke's signal is never blocked on workers. */
uint64_t cp_change_program_sigmask(int how, uint64_t bits);
uint64_t cp_program_sigmask(void);

/* The user thread running on this kernel thread, or NULL on a kernel
 * thread that is not a worker (a "foreign" thread) or in worker code.
 * Read through asm so the compiler never reuses a value from before a
 * context switch: a user thread may resume on another worker. */
extern __thread struct cp_thread *cp_tls_thread
	__attribute__((tls_model("initial-exec"))) __attribute__((visibility("hidden")));

static inline struct cp_thread *cp_self(void)
{
	struct cp_thread *t;
	CP_TLS_LOAD_PTR(cp_tls_thread, t);
	return t;
}
/* True while this kernel thread is inside the runtime (holds one of its
 * locks): a signal handler that interrupted the runtime itself must not
 * park, or it would switch away in the middle of a queue update. */
static inline bool cp_in_runtime(void)
{
	return cp_locks_held != 0;
}

/* True while this kernel thread runs the scheduler itself (between a
 * thread's park and the next switch): a lock taken there must spin, never
 * park (libunwind's own mutex, taken by location.c's backtraces). */
bool cp_in_scheduler(void);

/* Is ring (a struct io_uring *) one of the workers' own? */
bool cp_is_runtime_ring(const void *ring);

/* Index of this worker, or -1 on a foreign thread. */
int cp_worker_index(void);

/* ---- threads ---- */

/* Makes a zeroed thread record of thread_size bytes at the top of a new
 * stack; entry(t) runs when it is first scheduled and must end with
 * cp_thread_finish().  stack_addr non-NULL wraps a caller's stack.
 * Returns NULL and sets *err to EAGAIN/ENOMEM/EINVAL on failure. */
struct cp_thread *cp_thread_new(size_t thread_size, size_t stack_size, size_t guard,
                                enum cp_stack_fit fit, void *stack_addr,
                                void (*entry)(struct cp_thread *), int *err);
/* The same on a linked stack (linked.c): for a thread whose start routine
 * is split-stack code (cp_linked_code), whose chunks may hold cap bytes in
 * all (0: 8 MiB). */
struct cp_thread *cp_thread_new_linked(size_t thread_size, size_t cap,
                                       void (*entry)(struct cp_thread *), int *err);
/* What t's stack is (caprice_stack_info); t may be NULL (no thread). */
struct cp_linked_info {
	bool linked;
	size_t bytes, big_bytes, cap;
	uint64_t chunks_mapped, big_calls;
};
void cp_linked_info(const struct cp_thread *t, struct cp_linked_info *out);
/* A thread about to park gives back the chunk it keeps for its next deep
 * call (chunk.h's `newer` beyond the one it runs on): a blocked thread
 * holds only the stack it uses. */
void cp_linked_park_trim(void);
/* Before a longjmp to a frame at addr (cancellation's), on an older chunk
 * of the caller's linked stack: the limit becomes that chunk's. */
void cp_linked_unwind_to(const void *addr);
/* Does the function at fn start with a split-stack prologue (and are
 * linked stacks on: CAPRICE_STACKS=contiguous turns them off)? */
bool cp_linked_code(const void *fn);
/* The split-stack limit of the code running now (%fs:0x70 in the TCB,
 * where -fsplit-stack prologues read it); 0 means no limit. */
static inline uintptr_t cp_split_limit(void)
{
	uintptr_t v;
	__asm__ volatile("movq %%fs:0x70, %0" : "=r"(v));
	return v;
}
static inline void cp_split_limit_set(uintptr_t v)
{
	__asm__ volatile("movq %0, %%fs:0x70" : : "r"(v) : "memory");
}
/* Makes a new thread runnable (on this worker, or any worker from a
 * foreign thread). */
void cp_thread_start(struct cp_thread *t);
/* What runs once a finished thread t is off its stack for good: in the
 * next context, on the same worker, when t's stack is no longer in use
 * (the place to free it or to tell a joiner). */
typedef void cp_on_dead_fn(struct cp_thread *t);
/* Ends the calling thread.  leaving(t) runs first, still on t's stack but
 * inside the scheduler: nothing switches t out, nor moves what it wakes
 * with cp_wake_successor, until t is gone.  It returns what is to run
 * once t is off its stack, or NULL. */
_Noreturn void cp_thread_finish(cp_on_dead_fn *(*leaving)(struct cp_thread *t));
/* Frees a finished thread's stack (and so its record). */
void cp_thread_release(struct cp_thread *t);

/* The kernel thread id of the worker t last ran on (for pthread_kill). */
int cp_thread_kernel_tid(const struct cp_thread *t);
/* The index of the worker t last ran on, or -1 if it has not run. */
int cp_thread_worker_index(const struct cp_thread *t);

/* A safe point: every call into the library passes one.  If the monitor
 * found this worker running one thread for a time slice while others
 * wait, the caller yields here (monitor.c). */
void cp_safe_point(void);

/* Makes t run fn as soon as possible, wherever it is, even in the middle
 * of code that never calls the library (asynchronous cancellation): a
 * running t is poked, and its interrupted code calls fn with every
 * register kept, so fn may return; a t switched out at a safe point calls
 * it when it resumes there.  True if t was running (and so was poked). */
bool cp_thread_redirect(struct cp_thread *t, void (*fn)(void));

/* In a signal handler: may it take runtime locks, and so interrupt a
 * thread's wait (cp_interrupt_wait_in_handler)?  Not when it interrupted
 * a runtime lock's holder on this kernel thread. */
static inline bool cp_signal_may_interrupt(void)
{
	return !cp_in_runtime();
}

/* Thread CPU time (cpuclock.c): accounting starts at the first call of
 * cp_cpuclock_start; cp_thread_cpu_ns is t's time run since then, in ns. */
void cp_cpuclock_start(void);
uint64_t cp_thread_cpu_ns(struct cp_thread *t);

/* Puts the caller at the back of its worker's run queue (behind the
 * threads of its priority and above). */
void cp_yield(void);
/* The program's sched_yield: while more than 8 threads wait on the
 * worker, a thread that has run 2 ms at most (it started after the
 * monitor's last look, and that look is at most 2 ms old) gives way to
 * the next of them only and then runs again, as the kernel's scheduler
 * runs a yielder that has used little CPU again at once; one that
 * computed longer goes behind them all, as cp_yield does, and so does
 * every yield under CAPRICE_SCHED=2d, whose policy orders the queue. */
void cp_yield_brief(void);

/* t's real-time priority: 0 (SCHED_OTHER, every thread's by default) or
 * 1..99 (SCHED_FIFO/SCHED_RR).  It orders t among its worker's runnable
 * threads from its next wakeup or yield, and among the waiters of a wait
 * queue from its next wait (policy.c). */
void cp_thread_set_priority(struct cp_thread *t, int prio);

/* The runtime's own descriptors (rtfd.c): rings, eventfds, /proc files,
 * pipes, which a program under NPTL would not have, kept out of its way.
 * cp_rtfd_adopt moves a new one up, into the 256 numbers below
 * RLIMIT_NOFILE or 1,024, and marks it, returning the number to use (a
 * negative fd passes through);
 * cp_rtfd_release unmarks and closes one, cp_rtfd_forget only unmarks
 * (something else closes it).  The program's close, close_range,
 * closefrom and dup2/dup3 (libthread) pass over marked ones:
 * cp_rtfd_owned, and cp_rtfd_next, the lowest marked number >= from or
 * -1.  Numbers from CP_RTFD_LIMIT up are not marked. */
#define CP_RTFD_LIMIT 65536
extern uint64_t cp_rtfd_bits[CP_RTFD_LIMIT / 64] CP_HIDDEN;
int cp_rtfd_adopt(int fd);
void cp_rtfd_release(int fd);
void cp_rtfd_forget(int fd);
int cp_rtfd_next(int from);
static inline bool cp_rtfd_owned(int fd)
{
	return (unsigned)fd < CP_RTFD_LIMIT &&
	       (__atomic_load_n(&cp_rtfd_bits[(unsigned)fd / 64], __ATOMIC_ACQUIRE) >>
	        ((unsigned)fd % 64)) & 1;
}

/* Descriptors the calling user thread t (NULL: a kernel thread) opened
 * (delta > 0) or closed: the blocking graph's deltas and the admission
 * policy's count (policy.c).  cp_fds_exhausted: a call failed with
 * EMFILE, so none is left, whatever the count says. */
void cp_fds_changed(struct cp_thread *t, int delta);
void cp_fds_exhausted(void);

/* Bytes the calling thread took from the allocator (delta > 0) or gave
 * back, as libthread's malloc family counts them while cp_mem_counting
 * (CAPRICE_SCHED=2d): the blocking graph's memory deltas and the
 * admission policy's count of bytes held (policy.c). */
extern bool cp_mem_counting CP_HIDDEN;
void cp_mem_changed(int64_t delta);

/* Makes a parked thread runnable on the worker it parked on.  Call it
 * once per park, from any thread, kernel or user, on any worker. */
void cp_wake(struct cp_thread *t);

/* Like cp_wake, and the thread may not be handed to a thief before it
 * has run: it is returning from a call that set errno, and the caller
 * may hold errno's address from before the call (glibc declares
 * __errno_location const), which is this worker's. */
void cp_wake_pinned(struct cp_thread *t);
/* The same, from the thread's own worker (a completion it reaps): t runs
 * next, before the threads queued there, if the front slot is free. */
void cp_wake_pinned_first(struct cp_thread *t);

/* Makes a parked thread runnable on the caller's worker (its home worker
 * from a foreign thread): threads that wake each other end up together,
 * with no kick per handoff, and stealing spreads real load.  Only for a
 * waker that holds the lock the sleeper released after switching out
 * (a wait queue's): t's context must already be saved. */
void cp_wake_here(struct cp_thread *t);

/* Runs the calling thread's C++ thread_local destructors when each user
 * thread has TLS of its own (CAPRICE_TLS=thread); else nothing. */
void cp_tls_thread_exit(void);

/* ---- time ---- */
uint64_t cp_now_ns(void);    /* CLOCK_MONOTONIC in ns */
/* The C library's clock_gettime, whatever the program interposes, and
 * safe on a linked stack's small chunk (timer.c). */
int cp_clock_gettime(clockid_t clock, struct timespec *ts);
#define CP_NO_DEADLINE UINT64_MAX

/* ---- waiting ----
 *
 * A wait queue is a list of waiters guarded by a spinlock the caller owns
 * (a mutex's, a condvar's...).  A waiter lives on the waiting thread's
 * stack.  Kernel threads that are not workers can wait too: they sleep on
 * a futex in the waiter instead of parking. */

enum {
	CP_W_WAITING = 0,
	CP_W_WOKEN,
	CP_W_TIMEDOUT,
	CP_W_INTERRUPTED,
};

struct cp_timer {
	uint64_t deadline;           /* CLOCK_MONOTONIC ns */
	uint32_t heap_idx;           /* position in its worker's heap, or NONE */
	struct cp_worker *owner;
	void (*fire)(struct cp_timer *);
};

struct cp_waiter {
	struct cp_waiter *prev, *next; /* NULL next: not queued */
	struct cp_thread *thread;      /* NULL: a foreign kernel thread */
	uint32_t state;                /* CP_W_* */
	uint32_t contended;            /* a timer or an interrupt may race the
	                                  waker: wake with a CAS, not a store */
	uint32_t interrupt_by;         /* CP_INTR_*: what may cut it short */
	uint32_t futex;                /* foreign waiters sleep here */
	uintptr_t data;                /* for the primitive's own use */
	cp_spinlock *lock;             /* the queue's lock, which the sleeper
	                                  holds until it has switched out */
	struct cp_timer timer;
};

struct cp_waitq {
	struct cp_waiter *head;        /* circular; head->prev is the tail */
};
#define CP_WAITQ_INIT { NULL }

/* Under the queue's lock, exact; without it, a hint (a waiter may be
 * coming or going). */
static inline bool cp_waitq_empty(const struct cp_waitq *q)
{
	return __atomic_load_n(&q->head, __ATOMIC_RELAXED) == NULL;
}
static inline struct cp_waiter *cp_waitq_first(const struct cp_waitq *q) { return q->head; }
static inline struct cp_waiter *cp_waitq_next(const struct cp_waitq *q, const struct cp_waiter *w)
{
	return w->next == q->head ? NULL : w->next;
}

/* What may cut a wait short, its interrupt_by: a pthread_cancel
 * (cp_interrupt, sticky: a wait that accepts it and starts later ends at
 * once); a signal handler for the thread (cp_interrupt_wait, only a wait
 * under way), for calls the kernel never restarts (CP_INTR_SIGNAL) and
 * I/O, which a handler without SA_RESTART interrupts (CP_INTR_SIGNAL_IO)
 * and one with it restarts (CP_INTR_SIGNAL_RESTART); or a signal for
 * sigwait (CP_INTR_SIGWAIT).
 * CP_INTR_CANCEL is 1, so a wait given `true` accepts a cancel. */
#define CP_INTR_CANCEL         1u
#define CP_INTR_SIGNAL         2u
#define CP_INTR_SIGWAIT        4u
#define CP_INTR_SIGNAL_IO      8u
#define CP_INTR_SIGNAL_RESTART 16u /* SA_RESTART's: I/O cut short to run
                                      the handler, then issued again */

/* Appends w (data preset by the caller) and sleeps until woken, the
 * monotonic deadline passes, or the thread is interrupted for one of the
 * reasons in interrupt_by (CP_INTR_*).  `lk` must be held on entry; it is
 * released while asleep and NOT held on return.  Returns 0, ETIMEDOUT,
 * EINTR, or ENOMEM when a deadline needs a timer and the worker's timer
 * heap cannot grow (then the thread did not sleep).  On return w is off
 * the queue. */
int cp_wait(struct cp_waitq *q, cp_spinlock *lk, struct cp_waiter *w,
            uint64_t deadline, unsigned interrupt_by);

/* cp_wait, running enqueued(arg) once w is on the queue and before the
 * thread sleeps, still under lk: a condition variable releases its mutex
 * there, so a signaller that takes the mutex afterwards always finds the
 * waiter queued. */
int cp_wait_then(struct cp_waitq *q, cp_spinlock *lk, struct cp_waiter *w,
                 uint64_t deadline, unsigned interrupt_by, void (*enqueued)(void *), void *arg);

/* With the queue's lock held: removes w and wakes it.  False if it was
 * already leaving (timed out or interrupted); it is off the queue anyway. */
bool cp_wake_waiter(struct cp_waitq *q, struct cp_waiter *w);
/* With the queue's lock held: wakes the first waiter that can still be
 * woken.  True if one was. */
bool cp_wake_one(struct cp_waitq *q);
/* With the queue's lock held: wakes everyone; returns how many. */
unsigned cp_wake_all(struct cp_waitq *q);
/* With the queue's lock held, from cp_thread_finish's `leaving`: wakes the
 * first waiter, if it parked on this worker, to run next here, once the
 * finishing thread is off its stack, so it may free that stack.  False
 * if there is none, if it is a kernel thread's (it could run at once), if
 * it parked on another worker (it must return where its errno is), or if
 * it was already leaving. */
bool cp_wake_successor(struct cp_waitq *q);

/* Sleeps the caller until the monotonic deadline (0, or EINTR if
 * interrupted for a reason in interrupt_by). */
int cp_sleep_until(uint64_t deadline, unsigned interrupt_by);

/* Interrupts t's current or next wait that accepts a cancel
 * (pthread_cancel). */
void cp_interrupt(struct cp_thread *t);
/* The reasons t was interrupted for and has not yet dealt with (a
 * cancel stays): a wait that accepts one of them ends at once. */
static inline unsigned cp_interrupt_pending(const struct cp_thread *t)
{
	return __atomic_load_n(&t->interrupted, __ATOMIC_ACQUIRE);
}
/* t has dealt with these reasons (a signal's handler ran). */
static inline void cp_interrupt_clear(struct cp_thread *t, unsigned reasons)
{
	__atomic_fetch_and(&t->interrupted, ~reasons, __ATOMIC_ACQ_REL);
}
/* Interrupts t's wait under way if it accepts one of `reasons` (CP_INTR_*
 * but CANCEL); an I/O wait so cut short completes with -ECANCELED and its
 * op's `signalled` set.  True if there was one.  The reasons stay pending
 * (a wait t starts later ends at once) until cp_interrupt_clear. */
bool cp_interrupt_wait(struct cp_thread *t, unsigned reason);
/* The same from a signal handler on any kernel thread, when
 * cp_signal_may_interrupt() says so. */
bool cp_interrupt_wait_in_handler(struct cp_thread *t, unsigned reasons);

/* ---- statistics ---- */
struct cp_worker_stats {
	uint64_t switches, parks, wakes_local, wakes_remote, kicks;
	uint64_t steals_in, steals_out, sleeps, timers_fired, io_ops;
	uint64_t enters;             /* io_uring_enter system calls */
	uint64_t pokes, preempts;    /* monitor signals; yields at safe points */
	uint64_t yields;             /* cp_yield calls (sched_yield, spins, preempts) */
	uint64_t tls_loads;          /* FS base loads (TLS per user thread) */
	uint64_t covers;             /* spare: times it took a blocked worker's threads */
	uint64_t steals_direct;      /* steals made without the victim's help */
	uint64_t big_chunks;         /* calls of linked threads run on a big chunk */
	uint64_t held, deferred;     /* wakeups the 2D policy held back (admission)
	                                or put behind the ring (policy.c) */
	uint32_t runq_len, held_now;
};
void cp_worker_stats(int idx, struct cp_worker_stats *out);

#endif
