/* lt.h: libthread's internal view of a thread and shared helpers.
 * A pthread_t is the address of a struct lt_thread, which the scheduler
 * places at the top of the thread's own stack. */
#ifndef CAPRICE_LT_H
#define CAPRICE_LT_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "compiler.h"
#include "scheduler.h"

#define LT_MAGIC       0x6b6e6f74u /* "knot" */
#define LT_KEYS_MAX    1024        /* PTHREAD_KEYS_MAX */
#define LT_KEYS_PER_PAGE 32        /* slots are allocated this many at a time */
#define LT_KEYS_RUNTIME  32         /* past the program's: libthread's own */
#define LT_KEYS_ALL      (LT_KEYS_MAX + LT_KEYS_RUNTIME)
#define LT_KEY_PAGES     (LT_KEYS_ALL / LT_KEYS_PER_PAGE)

enum lt_join_state {
	LT_JOINABLE = 0,
	LT_DETACHED,
	LT_EXITED,   /* joinable, finished, not yet joined */
	LT_JOINED,   /* a joiner has taken its result */
};

struct lt_key_slot {
	void *value;
	uint64_t seq;   /* the key's generation when value was set */
};

struct lt_thread {
	/* in an order without holes: on a linked stack the record shares the
	 * first small chunk (chunk.h) with the thread's frames */
	struct cp_thread cp;          /* must be first */
	uint32_t magic;
	uint32_t cpuclock_slot;       /* pthread_getcpuclockid's slot + 1, or 0 */
	void *(*start)(void *);
	union {
		void *arg;            /* until it starts */
		void *retval;         /* once it ends */
	};
	uint64_t sigmask;             /* its signal mask, bit sig-1 (signal.c) */

	/* join / detach */
	cp_spinlock join_lock;
	uint32_t join_state;          /* enum lt_join_state, under join_lock */
	struct cp_waitq joiners;
	struct lt_thread *joining;    /* whom we are joining: EDEADLK checks */

	/* cancellation */
	uint8_t cancel_enabled;       /* PTHREAD_CANCEL_ENABLE */
	uint8_t cancel_async;         /* PTHREAD_CANCEL_ASYNCHRONOUS (acted on at
	                                 cancellation points only) */
	uint8_t cancel_pending;
	uint8_t exiting;

	/* attributes, for pthread_getattr_np */
	int sched_policy;
	struct sched_param sched_param;
	bool user_stack;
	/* priority protocols (mutex.c): PTHREAD_PRIO_INHERIT and
	 * PTHREAD_PRIO_PROTECT mutexes held, and the priority they raised it
	 * to (kept until it holds none: see lt_prio_raise) */
	uint8_t prio_locks;
	uint8_t prio_raised;
	uint8_t robust_held;          /* robust mutexes held, stuck at 255 once
	                                 there (mutex_robust.c) */
	size_t guardsize;
	size_t stacksize;             /* as asked for (0: the stack's own size);
	                                 a smaller stack than the default is
	                                 served by a pooled default one */

	void *cleanup;                /* innermost __pthread_unwind_buf_t */

	/* thread-specific data: LT_KEY_PAGES page pointers, allocated with
	 * the first pthread_setspecific (NULL until then), so a thread that
	 * never sets a key carries 8 bytes for them */
	struct lt_key_slot **key_pages;
};
/* a linked thread's first chunk (2 KiB) holds its record, its slack (640
 * bytes) and 1 KiB of frames (sched/linked.c); sanitized builds, whose
 * record holds ASan's fake stack too, never use linked stacks */
#ifndef CP_ASAN
_Static_assert(sizeof(struct lt_thread) <= 384, "the thread record outgrew a linked stack's first chunk");
#endif

/* Our layout inside the 56 opaque bytes of pthread_attr_t. */
struct lt_attr {
	size_t stacksize;             /* 0: the default */
	char *stackaddr;              /* lowest byte, or NULL */
	size_t guardsize;
	int detachstate;
	int schedpolicy;
	int inheritsched;
	int scope;
	struct sched_param param;
	uint32_t flags;
};
#define LT_ATTR_GUARD_SET 1u
_Static_assert(sizeof(struct lt_attr) <= sizeof(pthread_attr_t), "lt_attr too big");

extern struct lt_thread *lt_main CP_HIDDEN;

void lt_start(void) CP_HIDDEN;
/* Defined by the preload shim only: the runtime cannot start (err is an
 * errno from io_uring_setup).  It runs the program without Caprice and
 * does not return; a linked program dies with a message instead. */
void lt_runtime_refused(int err) CP_EXPORT __attribute__((weak)); /* not hidden:
                                                      see cp_tls_thread_by_default */
void lt_stats_init(void) CP_HIDDEN;
void lt_threads_after_fork(void) CP_HIDDEN;
/* Registers the process's robust-mutex list with the kernel, on the
 * process's first kernel thread (at start, and in a fork's child); a
 * thread ending with robust mutexes held leaves them to the next locker
 * as owner-dead (mutex_robust.c). */
void lt_robust_start(void) CP_HIDDEN;
void lt_robust_exit(struct lt_thread *t) CP_HIDDEN;
/* The caller's name among all processes' threads, never 0: the owner a
 * process-shared lock records (this process's id, then the thread's) */
uint64_t lt_process_owner(void) CP_HIDDEN;
/* A thread's CPU clock id names nothing once it is gone (cpuclock.c). */
void lt_cpuclock_thread_gone(struct lt_thread *t) CP_HIDDEN;
/* A futex wait that parks only the calling user thread (futex.c); 0 or -1
 * with errno (EAGAIN: *word was not val). */
long lt_futex_wait(uint32_t *word, uint32_t val) CP_HIDDEN;
long lt_futex_wake_all(uint32_t *word) CP_HIDDEN;
/* The same with the whole of FUTEX_WAIT_BITSET: a process-shared word or
 * not, an absolute deadline on clock (CLOCK_REALTIME or CLOCK_MONOTONIC;
 * abs NULL: none), and cut short (-1, EINTR) by what interrupt_by names
 * (CP_INTR_*).  lt_futex_wait is cut short by a signal handler, as the
 * kernel's.  lt_futex_wake wakes n. */
long lt_futex_wait_until(uint32_t *word, uint32_t val, bool shared, clockid_t clock,
                         const struct timespec *abs, unsigned interrupt_by) CP_HIDDEN;
long lt_futex_wake(uint32_t *word, int n, bool shared) CP_HIDDEN;
/* Bumped after every program signal handler returns (sighandler.c):
 * pause and sigsuspend wait for it to move. */
extern uint32_t lt_signal_gen CP_HIDDEN;
static inline void lt_ensure_started(void)
{
	if (cp_unlikely(!__atomic_load_n(&lt_main, __ATOMIC_ACQUIRE)))
		lt_start();
}

/* The calling user thread, or NULL on a kernel thread that is not one. */
static inline struct lt_thread *lt_self(void)
{
	return (struct lt_thread *)cp_self();
}

/* True when pthread_t names a live-looking thread record. */
/* The priority protocols' side of a thread's rank (thread.c):
 * lt_prio_raise lifts t to at least prio, from t or from a thread that
 * waits for a mutex t holds; lt_prio_locks_changed counts the caller's
 * protocol mutexes, and once it holds none drops what they raised (and
 * yields if that lowered it); lt_prio_base is the priority t set itself. */
void lt_prio_raise(struct lt_thread *t, int prio) CP_HIDDEN;
void lt_prio_locks_changed(struct lt_thread *self, int delta) CP_HIDDEN;
int lt_prio_base(const struct lt_thread *t) CP_HIDDEN;

static inline struct lt_thread *lt_from_handle(pthread_t h)
{
	struct lt_thread *t = (struct lt_thread *)h;
	if (!t || ((uintptr_t)t & 63) != 0 || __atomic_load_n(&t->magic, __ATOMIC_RELAXED) != LT_MAGIC)
		return NULL;
	return t;
}

/* Cancellation: whether waits at cancellation points may be interrupted,
 * and acting on a pending request (does not return if it acts). */
static inline bool lt_cancellable(const struct lt_thread *t)
{
	return t && t->cancel_enabled && !t->exiting;
}
void lt_testcancel(struct lt_thread *t) CP_HIDDEN;
/* What cuts short a call that is a cancellation point and that a signal
 * handler interrupts (EINTR), and one that is I/O as well (SA_RESTART
 * leaves I/O be): the interrupt_by of its wait. */
static inline unsigned lt_interruptible(const struct lt_thread *t)
{
	return t ? (lt_cancellable(t) ? CP_INTR_CANCEL : 0) | CP_INTR_SIGNAL : 0;
}
static inline unsigned lt_interruptible_io(const struct lt_thread *t)
{
	return t ? (lt_cancellable(t) ? CP_INTR_CANCEL : 0) | CP_INTR_SIGNAL_IO : 0;
}
/* A call whose wait ended with EINTR: acts on a cancel (never returns
 * then), and runs the handlers of the signals that interrupted it, which
 * must run before it returns (sigthread.c). */
void lt_interrupted(struct lt_thread *t) CP_HIDDEN;

/* Signals for one user thread (sigthread.c); sets are the kernel's first
 * 64 signals, bit sig-1.  lt_signal_thread sends info to t (0 or an
 * errno); lt_signals_deliver runs the calling thread's deliverable
 * handlers; lt_signals_take takes one of `set` pending for it (its
 * number, or 0); lt_signals_unblocked delivers what a mask change let
 * through; lt_signal_route hands a signal caught in the trampoline to the
 * thread it is for (false: run it here). */
int lt_signal_thread(struct lt_thread *t, const siginfo_t *info) CP_HIDDEN;
/* poll() of a signalfd for sigwait: also woken when a signal is sent to
 * the calling thread alone (poll.c) */
int lt_poll_signalfd(int fd, int timeout_ms) CP_HIDDEN;
void lt_signals_deliver(struct lt_thread *self) CP_HIDDEN;
int lt_signals_take(struct lt_thread *self, uint64_t set, siginfo_t *info) CP_HIDDEN;
uint64_t lt_signals_pending(struct lt_thread *self) CP_HIDDEN;
void lt_signals_unblocked(void) CP_HIDDEN;
/* Signal masks per user thread (signal.c): a new thread takes its
 * creator's (creator NULL: the process's first, or a foreign creator's),
 * and an ending one gives its up; signals every live thread blocks stay
 * blocked on the workers, so the kernel keeps them pending for the
 * process. */
void lt_sigmask_start_counted(struct lt_thread *t, struct lt_thread *creator) CP_HIDDEN;
void lt_sigmask_exit_counted(struct lt_thread *t) CP_HIDDEN;
/* Set once any user thread blocked a signal (or the process started with
 * some blocked): until then every mask is empty, and a thread's start and
 * end change nothing, which is all most programs ever see. */
extern uint32_t lt_masks_used CP_HIDDEN;
static inline void lt_sigmask_thread_start(struct lt_thread *t, struct lt_thread *creator)
{
	if (cp_unlikely(__atomic_load_n(&lt_masks_used, __ATOMIC_RELAXED)))
		lt_sigmask_start_counted(t, creator);
}
static inline void lt_sigmask_thread_exit(struct lt_thread *t)
{
	if (cp_unlikely(__atomic_load_n(&lt_masks_used, __ATOMIC_RELAXED)))
		lt_sigmask_exit_counted(t);
}
void lt_sigmask_after_fork(struct lt_thread *self) CP_HIDDEN;
void lt_sigmask_main(struct lt_thread *m) CP_HIDDEN;
/* Sets the calling user thread's mask (how: SIG_BLOCK...), returning the
 * one before. */
uint64_t lt_sigmask_change(struct lt_thread *self, int how, uint64_t bits) CP_HIDDEN;
/* A live thread other than `besides` that set a mask letting sig in, or
 * NULL (one that never set a mask is not looked for). */
struct lt_thread *lt_sigmask_admits(int sig, struct lt_thread *besides) CP_HIDDEN;
/* User threads alive (thread.c). */
uint64_t lt_live_threads(void) CP_HIDDEN;

/* Set once the program installed a signal handler: only then does I/O
 * keep what it needs to be issued again after an SA_RESTART handler. */
extern uint32_t lt_handlers_installed CP_HIDDEN;
void lt_signals_forget(struct lt_thread *t) CP_HIDDEN;
/* Signals kept for their threads now (sigthread.c) */
extern uint32_t lt_signals_kept CP_HIDDEN;
static inline void lt_signals_thread_gone(struct lt_thread *t)
{
	if (cp_unlikely(__atomic_load_n(&lt_signals_kept, __ATOMIC_ACQUIRE)))
		lt_signals_forget(t);
}
bool lt_signal_route(int sig, const siginfo_t *info) CP_HIDDEN;
/* The program's handler for sig, if it installed one (sighandler.c),
 * with its sa_flags; and a delivery of sig in the calling thread. */
bool lt_signal_handled(int sig, int *flags) CP_HIDDEN;
void lt_signal_run_handler(int sig, siginfo_t *info) CP_HIDDEN;
/* What a user thread asked to run at once does (sched's redirect): its
 * pending signal handlers, and an asynchronous cancel. */
void lt_on_redirect(void) CP_HIDDEN;

/* Thread exit: runs cleanup handlers and key destructors, then ends. */
_Noreturn void lt_exit(struct lt_thread *t, void *retval) CP_HIDDEN;
void lt_keys_run_destructors(struct lt_thread *t) CP_HIDDEN;
/* A key of libthread's own, past the program's PTHREAD_KEYS_MAX (0 or
 * EAGAIN once LT_KEYS_RUNTIME are taken). */
int lt_key_create_runtime(pthread_key_t *key, void (*dtor)(void *)) CP_HIDDEN;
/* Makes the key the threads' alternate signal stacks live under
 * (signal.c); at start-up, before any user thread but main. */
void lt_altstack_init(void) CP_HIDDEN;
/* Moves values this kernel thread set before it became a user thread
 * (main, before the runtime started) into t. */
void lt_keys_adopt_foreign(struct lt_thread *t) CP_HIDDEN;
/* Called as each user thread starts: forgets sanitizer thread state left
 * on this kernel thread by the previous one (see key.c). */
void lt_keys_thread_start(void) CP_HIDDEN;

/* The pshared argument of pthread_{mutex,cond,rwlock,barrier}attr_setpshared:
 * 0, or EINVAL for a value that is neither. */
static inline int lt_pshared_check(int pshared)
{
	return pshared == PTHREAD_PROCESS_PRIVATE || pshared == PTHREAD_PROCESS_SHARED ? 0 : EINVAL;
}

/* Absolute timespec on `clock` to a CLOCK_MONOTONIC deadline in ns.
 * EINVAL for a malformed timespec or clock. */
int lt_deadline(clockid_t clock, const struct timespec *abstime, uint64_t *out) CP_HIDDEN;

/* Whether addr is a sanitizer runtime's code (see sanitizer.c). */
bool lt_is_sanitizer_code(const void *addr) CP_HIDDEN;

/* Defaults that pthread_setattr_default_np may change. */
struct lt_defaults {
	size_t stacksize;
	size_t guardsize;
};
extern struct lt_defaults lt_defaults CP_HIDDEN;

#endif
