/* sigthread.c: signals for one user thread.
 *
 * The kernel delivers signals to kernel threads, and a user thread has
 * none of its own: a tgkill of the worker it last ran on would run the
 * handler in whatever thread that worker runs by then.  So a signal sent
 * to a user thread (pthread_kill, pthread_sigqueue) whose handler the
 * program installed is delivered here instead:
 *
 * - it is kept pending for that thread, in a table of pending signals
 *   (standard signals once, real-time ones queued, as the kernel does);
 * - the thread is made to run the handler as soon as it can: at once if
 *   it runs (its worker is poked, and the interrupted code calls it,
 *   sched's redirect), and a call it is parked in is cut short if POSIX
 *   lets a handler do that: sleeps, semaphore and signal waits, poll and
 *   the like return EINTR, and socket and pipe I/O too unless the handler
 *   has SA_RESTART; mutex, rwlock, barrier and join waits run the handler
 *   and go on waiting; a condition variable's wait returns, as a
 *   spurious wakeup may.  The call runs the handler before it returns;
 *   a thread switched out elsewhere runs it at its next call into the
 *   library;
 * - while its handler runs, the same signal waits, as the kernel blocks
 *   it for the handler's time.
 *
 * A signal blocked by the (process-wide) mask stays pending for its
 * thread: sigwait and friends in that thread take it (and are woken for
 * it), sigpending shows it, and unblocking delivers it.
 *
 * A signal the kernel delivers to a worker (lt_signal_route): one for the
 * whole process (kill, a terminal's SIGINT, alarm) goes to the main user
 * thread if that thread lets it in, as on NPTL, and runs where it was
 * caught only when main is parked in a wait it does not cut short; one
 * sent to the worker itself (raise) is the interrupted thread's.  Either
 * waits for a thread that blocks it. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lt.h"

#define SLOTS 64

struct pending {
	struct lt_thread *t;          /* NULL: a free slot */
	uint8_t running;              /* its handler runs now */
	siginfo_t info;
};

static struct pending table[SLOTS];
static cp_spinlock table_lock = CP_SPINLOCK_INIT;
uint32_t lt_signals_kept;         /* slots taken: most programs never take one */

static inline uint64_t bit(int sig)
{
	return 1ull << (sig - 1);
}

/* What cuts short the wait of a thread whose handler for sig must run:
 * every wait POSIX lets a handler interrupt, and I/O, which returns
 * EINTR, or with SA_RESTART is issued again once the handler ran */
static unsigned interrupts_for(int flags)
{
	return CP_INTR_SIGNAL | (flags & SA_RESTART ? CP_INTR_SIGNAL_RESTART : CP_INTR_SIGNAL_IO);
}

uint32_t lt_handlers_installed; /* set by sigaction, once a handler exists */

/* Under table_lock: a slot for (t, info), or NULL when full.  A standard
 * signal already pending for t is not queued twice (*fresh false). */
static struct pending *add(struct lt_thread *t, const siginfo_t *info, bool *fresh)
{
	*fresh = false;
	struct pending *free_slot = NULL;
	for (int i = 0; i < SLOTS; i++) {
		struct pending *p = &table[i];
		if (!p->t) {
			if (!free_slot)
				free_slot = p;
		} else if (p->t == t && !p->running && p->info.si_signo == info->si_signo &&
		           info->si_signo < SIGRTMIN) {
			return p;
		}
	}
	if (free_slot) {
		*fresh = true;
		free_slot->t = t;
		free_slot->running = 0;
		free_slot->info = *info;
		__atomic_add_fetch(&lt_signals_kept, 1, __ATOMIC_RELAXED);
	}
	return free_slot;
}

static void drop(struct pending *p)
{
	p->t = NULL;
	__atomic_sub_fetch(&lt_signals_kept, 1, __ATOMIC_RELAXED);
}

/* Under table_lock: the signals whose handlers t runs now */
static uint64_t running_for(struct lt_thread *t)
{
	uint64_t r = 0;
	for (int i = 0; i < SLOTS; i++)
		if (table[i].t == t && table[i].running)
			r |= bit(table[i].info.si_signo);
	return r;
}

/* Under table_lock: t's first signal that may be delivered now */
static struct pending *deliverable(struct lt_thread *t, uint64_t blocked)
{
	blocked |= running_for(t);
	for (int i = 0; i < SLOTS; i++)
		if (table[i].t == t && !table[i].running && !(blocked & bit(table[i].info.si_signo)))
			return &table[i];
	return NULL;
}

/* The interrupts a handler's delivery answers (interrupts_for) */
#define HANDLER_INTERRUPTS (CP_INTR_SIGNAL | CP_INTR_SIGNAL_IO | CP_INTR_SIGNAL_RESTART)

void lt_signals_deliver(struct lt_thread *self)
{
	if (!self)
		return;
	for (;;) {
		/* cleared before the look: a signal sent after it marks the
		 * thread again, and its next wait ends at once */
		cp_interrupt_clear(&self->cp, HANDLER_INTERRUPTS);
		if (!__atomic_load_n(&lt_signals_kept, __ATOMIC_ACQUIRE))
			return;
		cp_spin_lock(&table_lock);
		struct pending *p = deliverable(self, __atomic_load_n(&self->sigmask, __ATOMIC_ACQUIRE));
		if (!p) {
			cp_spin_unlock(&table_lock);
			return;
		}
		p->running = 1;
		siginfo_t info = p->info;
		cp_spin_unlock(&table_lock);
		lt_signal_run_handler(info.si_signo, &info);
		cp_spin_lock(&table_lock);
		drop(p);
		cp_spin_unlock(&table_lock);
	}
}

/* Sends t on its way to its pending handlers: at once if it runs, and
 * out of a wait they may cut short.  True if it will run them soon. */
static bool prompt(struct lt_thread *t, int sig, bool in_handler)
{
	int flags = 0;
	lt_signal_handled(sig, &flags);
	bool running = cp_thread_redirect(&t->cp, lt_on_redirect);
	unsigned why = interrupts_for(flags);
	bool cut = in_handler ? cp_interrupt_wait_in_handler(&t->cp, why)
	                      : cp_interrupt_wait(&t->cp, why);
	return cut || running;
}

int lt_signal_thread(struct lt_thread *t, const siginfo_t *info)
{
	int sig = info->si_signo;
	bool blocked = __atomic_load_n(&t->sigmask, __ATOMIC_ACQUIRE) & bit(sig);
	if (!blocked && !lt_signal_handled(sig, NULL)) {
		/* default or ignored: the kernel's action concerns the whole
		 * process (or nothing), whoever takes it */
		int tid = cp_thread_kernel_tid(&t->cp);
		siginfo_t si = *info;
		if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tid ? tid : getpid(), sig, &si) != 0)
			return errno;
		return 0;
	}
	bool fresh;
	cp_spin_lock(&table_lock);
	struct pending *p = add(t, info, &fresh);
	cp_spin_unlock(&table_lock);
	if (!p)
		return EAGAIN; /* more pending than the table holds */
	if (blocked)
		cp_interrupt_wait(&t->cp, CP_INTR_SIGWAIT); /* a sigwait for it takes it */
	else if (t == lt_self())
		lt_signals_deliver(t); /* before pthread_kill returns, as the kernel does */
	else
		prompt(t, sig, false);
	return 0;
}

int lt_signals_take(struct lt_thread *self, uint64_t set, siginfo_t *info)
{
	if (!self || !__atomic_load_n(&lt_signals_kept, __ATOMIC_ACQUIRE))
		return 0;
	int sig = 0;
	cp_spin_lock(&table_lock);
	for (int i = 0; i < SLOTS && !sig; i++) {
		struct pending *p = &table[i];
		if (p->t == self && !p->running && (set & bit(p->info.si_signo))) {
			sig = p->info.si_signo;
			if (info)
				*info = p->info;
			drop(p);
		}
	}
	cp_spin_unlock(&table_lock);
	return sig;
}

uint64_t lt_signals_pending(struct lt_thread *self)
{
	uint64_t set = 0;
	if (!self || !__atomic_load_n(&lt_signals_kept, __ATOMIC_ACQUIRE))
		return 0;
	cp_spin_lock(&table_lock);
	for (int i = 0; i < SLOTS; i++)
		if (table[i].t == self && !table[i].running)
			set |= bit(table[i].info.si_signo);
	cp_spin_unlock(&table_lock);
	return set;
}

void lt_signals_unblocked(void)
{
	if (!__atomic_load_n(&lt_signals_kept, __ATOMIC_ACQUIRE))
		return;
	struct lt_thread *self = lt_self();
	/* other threads' first: our own handlers may not return (longjmp) */
	struct { struct lt_thread *t; int sig; } due[SLOTS];
	int n = 0;
	cp_spin_lock(&table_lock);
	for (int i = 0; i < SLOTS; i++) {
		struct pending *p = &table[i];
		if (p->t && p->t != self && !p->running &&
		    !(__atomic_load_n(&p->t->sigmask, __ATOMIC_ACQUIRE) & bit(p->info.si_signo))) {
			due[n].t = p->t;
			due[n++].sig = p->info.si_signo;
		}
	}
	cp_spin_unlock(&table_lock);
	for (int i = 0; i < n; i++)
		prompt(due[i].t, due[i].sig, false);
	lt_signals_deliver(self);
}

void lt_signals_forget(struct lt_thread *t)
{
	cp_spin_lock(&table_lock);
	for (int i = 0; i < SLOTS; i++)
		if (table[i].t == t)
			drop(&table[i]);
	cp_spin_unlock(&table_lock);
}

/* Queues info for t (takes table_lock): false if the table is full */
static bool pend(struct lt_thread *t, const siginfo_t *info, bool *fresh)
{
	cp_spin_lock(&table_lock);
	struct pending *p = add(t, info, fresh);
	cp_spin_unlock(&table_lock);
	return p != NULL;
}

bool lt_signal_route(int sig, const siginfo_t *info)
{
	if (!cp_signal_may_interrupt())
		return false;
	struct lt_thread *x = lt_self(); /* the thread the kernel interrupted */
	bool x_blocks = x && (__atomic_load_n(&x->sigmask, __ATOMIC_ACQUIRE) & bit(sig));
	bool fresh;
	if (info->si_code == SI_TKILL) {
		/* sent to this worker (raise, tgkill): the thread it ran is the
		 * one, and keeps it pending while it blocks it */
		return x_blocks && pend(x, info, &fresh);
	}
	/* for the process: its main thread, as on NPTL, if it lets it in */
	struct lt_thread *m = __atomic_load_n(&lt_main, __ATOMIC_ACQUIRE);
	if (m && m != x && !m->exiting && !m->cp.done &&
	    !(__atomic_load_n(&m->sigmask, __ATOMIC_ACQUIRE) & bit(sig))) {
		if (!pend(m, info, &fresh))
			return false;
		if (prompt(m, sig, true) || !fresh || x_blocks)
			return true; /* at once, or at its next call into the library */
		/* main is switched out in a wait the handler does not cut short
		 * (a call served on a helper, say), and nothing here blocks it:
		 * it runs here after all, as it always did, unless main took it
		 * meanwhile (a hung main's watchdog must still fire) */
		return !lt_signals_take(m, bit(sig), NULL);
	}
	/* caught where no user thread runs (an idle worker): a thread that
	 * set its mask to let it in is the one, as on NPTL, where it runs in
	 * a thread that does not block it (sig_mask_per_thread's handler ran
	 * on the idle worker once main ran on the other one, whose kernel
	 * thread the kernel offers process signals first) */
	if (!x) {
		struct lt_thread *o = lt_sigmask_admits(sig, NULL);
		if (o && pend(o, info, &fresh)) {
			prompt(o, sig, true);
			return true;
		}
		return false; /* no thread that set its mask lets it in: one that
		               * never set one does, and it runs here */
	}
	if (!x_blocks)
		return false; /* the thread here lets it in: it runs here */
	/* another thread that set its mask may let it in (some thread does,
	 * or the workers would have kept it pending); else it waits for the
	 * thread here */
	struct lt_thread *o = lt_sigmask_admits(sig, x);
	if (o && pend(o, info, &fresh)) {
		prompt(o, sig, true);
		return true;
	}
	return pend(x, info, &fresh);
}
