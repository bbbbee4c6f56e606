/* sighandler.c: the program's signal handlers, followed so that pause and
 * sigsuspend can park, and so that a signal reaches its user thread.
 *
 * The kernel delivers signals to workers, in the middle of whatever user
 * thread runs there.  The handlers the program installs through
 * sigaction() and signal() are called through a trampoline, which hands a
 * signal to the user thread it is for where that is not the one the
 * kernel interrupted (sigthread.c, which also delivers the signals sent
 * to one user thread, through lt_signal_run_handler), and which, once a
 * handler returns,
 * bumps lt_signal_gen and wakes the futex waiters on it: pause() and
 * sigsuspend() must return once a handler has run, and blocking their
 * worker in the kernel until then would stop every thread queued on it,
 * so they park on that word (futex.c).  sigaction() reports the
 * program's own handler back, never the trampoline.  The runtime's own
 * handlers (sched/signals.c) are installed around this. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "lt.h"

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

uint32_t lt_signal_gen;
static uint32_t waiters;         /* pause/sigsuspend callers parked now */

/* What the program asked for, per signal, while a trampoline stands in. */
struct program_handler {
	void *fn;                 /* sa_handler or sa_sigaction */
	int flags;                /* the program's sa_flags */
	sigset_t mask;
	bool wrapped;
};
static struct program_handler handlers[_NSIG];
static cp_spinlock handlers_lock = CP_SPINLOCK_INIT;

static sigaction_fn real_sigaction(void)
{
	static sigaction_fn real;
	if (cp_unlikely(!real))
		real = (sigaction_fn)cp_c_library_symbol("sigaction");
	return real;
}

/* Calls the program's handler h for sig, then tells pause and sigsuspend. */
static CP_NO_SPLIT void call_handler(const struct program_handler *h, int sig, siginfo_t *info,
                                     void *uc)
{
	int saved = errno;
	/* a handler never sees the split-stack limit of the thread it
	 * interrupted: it runs where the kernel put it, not on that chunk */
	uintptr_t limit = cp_split_limit();
	cp_split_limit_set(0);
	errno = saved;
	if (h->flags & SA_SIGINFO)
		((void (*)(int, siginfo_t *, void *))h->fn)(sig, info, uc);
	else
		((void (*)(int))h->fn)(sig);
	saved = errno;
	__atomic_add_fetch(&lt_signal_gen, 1, __ATOMIC_RELEASE);
	if (__atomic_load_n(&waiters, __ATOMIC_ACQUIRE))
		lt_futex_wake_all(&lt_signal_gen);
	errno = saved;
	cp_split_limit_set(limit);
}

/* Signals the kernel sends to the thread whose instruction caused them:
 * they belong to whoever runs here, never to another thread. */
static bool synchronous(int sig)
{
	return sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL ||
	       sig == SIGTRAP || sig == SIGSYS || sig == SIGPIPE || sig == SIGXFSZ;
}

static CP_NO_SPLIT void trampoline(int sig, siginfo_t *info, void *uc)
{
	/* to the thread it is for, if not the one here (sigthread.c); a
	 * fault's signal is always the faulting thread's */
	if (!synchronous(sig) && lt_signal_route(sig, info))
		return;
	struct program_handler h = handlers[sig];
	call_handler(&h, sig, info, uc);
}

bool lt_signal_handled(int sig, int *flags)
{
	if (sig <= 0 || sig >= _NSIG)
		return false;
	struct program_handler h = handlers[sig];
	if (flags)
		*flags = h.flags;
	return h.wrapped;
}

void lt_signal_run_handler(int sig, siginfo_t *info)
{
	cp_spin_lock(&handlers_lock);
	struct program_handler h = handlers[sig];
	cp_spin_unlock(&handlers_lock);
	if (!h.wrapped) {
		/* the disposition changed since it was sent: the kernel's
		 * default action (or nothing, if ignored) is the answer */
		syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), sig);
		return;
	}
	if (h.flags & SA_RESETHAND) {
		struct sigaction dfl;
		memset(&dfl, 0, sizeof dfl);
		dfl.sa_handler = SIG_DFL;
		sigaction(sig, &dfl, NULL);
	}
	ucontext_t uc;
	if (h.flags & SA_SIGINFO)
		getcontext(&uc); /* a context to read, for a handler that looks */
	call_handler(&h, sig, info, h.flags & SA_SIGINFO ? &uc : NULL);
}

static bool wraps(int sig, const struct sigaction *act)
{
	/* the runtime's own signals keep their handlers as before */
	if (sig == SIGURG || sig == SIGSEGV || sig <= 0 || sig >= _NSIG)
		return false;
	void *fn = act->sa_flags & SA_SIGINFO ? (void *)act->sa_sigaction : (void *)act->sa_handler;
	return fn != (void *)SIG_DFL && fn != (void *)SIG_IGN;
}

/* What sigaction answers for a handler the trampoline stands in for. */
static void report(const struct program_handler *h, struct sigaction *old)
{
	old->sa_flags = h->flags;
	old->sa_mask = h->mask;
	if (h->flags & SA_SIGINFO)
		old->sa_sigaction = (void (*)(int, siginfo_t *, void *))h->fn;
	else
		old->sa_handler = (void (*)(int))h->fn;
}

CP_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	if (!act) {
		int r = real_sigaction()(sig, NULL, old);
		if (r == 0 && old && sig > 0 && sig < _NSIG) {
			cp_spin_lock(&handlers_lock);
			struct program_handler h = handlers[sig];
			cp_spin_unlock(&handlers_lock);
			if (h.wrapped)
				report(&h, old);
		}
		return r;
	}
	bool wrap = wraps(sig, act);
	struct sigaction mine = *act;
	if (wrap) {
		mine.sa_sigaction = trampoline;
		mine.sa_flags |= SA_SIGINFO;
		/* a handler of split-stack code may interrupt a thread on a
		 * small chunk, below which the kernel's signal frame (1 KiB and
		 * more) has no room: it runs on the worker's alternate stack */
		if (cp_linked_code(act->sa_flags & SA_SIGINFO ? (void *)act->sa_sigaction
		                                             : (void *)act->sa_handler))
			mine.sa_flags |= SA_ONSTACK;
		/* SA_RESETHAND: the kernel puts SIG_DFL back itself; the table
		 * then still names the handler, which only sigaction reports */
	}
	cp_spin_lock(&handlers_lock);
	struct program_handler before = sig > 0 && sig < _NSIG ? handlers[sig]
	                                                      : (struct program_handler){ 0 };
	if (wrap) {
		__atomic_store_n(&lt_handlers_installed, 1, __ATOMIC_RELAXED); /* (lt.h) */
		/* the trampoline may run as soon as the kernel has it: fill
		 * the entry first */
		handlers[sig] = (struct program_handler){
			act->sa_flags & SA_SIGINFO ? (void *)act->sa_sigaction : (void *)act->sa_handler,
			act->sa_flags, act->sa_mask, true };
	}
	int r = real_sigaction()(sig, &mine, old);
	if (r != 0 && wrap)
		handlers[sig] = before;
	else if (r == 0 && !wrap && sig > 0 && sig < _NSIG)
		handlers[sig].wrapped = false;
	cp_spin_unlock(&handlers_lock);
	if (r == 0 && old && before.wrapped)
		report(&before, old);
	return r;
}

/* glibc's signal() calls its internal sigaction, past this one */
CP_EXPORT sighandler_t signal(int sig, sighandler_t handler)
{
	struct sigaction act, old;
	memset(&act, 0, sizeof act);
	act.sa_handler = handler;
	act.sa_flags = SA_RESTART; /* BSD semantics, as glibc's signal() */
	sigemptyset(&act.sa_mask);
	sigaddset(&act.sa_mask, sig);
	if (sigaction(sig, &act, &old) < 0)
		return SIG_ERR;
	return old.sa_handler;
}

/* Parks until a program handler has run after `gen` was read. */
static int wait_for_handler(uint32_t gen)
{
	__atomic_add_fetch(&waiters, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&lt_signal_gen, __ATOMIC_ACQUIRE) == gen) {
		if (lt_futex_wait(&lt_signal_gen, gen) == 0 || errno == EAGAIN)
			continue;
		if (errno != EINTR)
			break;
		lt_interrupted(lt_self()); /* a handler sent to this thread */
	}
	__atomic_sub_fetch(&waiters, 1, __ATOMIC_ACQ_REL);
	errno = EINTR;
	return -1;
}

CP_EXPORT int pause(void)
{
	struct lt_thread *self = lt_self();
	if (!self)
		return (int)syscall(SYS_pause);
	lt_testcancel(self);
	return wait_for_handler(__atomic_load_n(&lt_signal_gen, __ATOMIC_ACQUIRE));
}

CP_EXPORT int sigsuspend(const sigset_t *mask)
{
	struct lt_thread *self = lt_self();
	if (!self)
		return (int)syscall(SYS_rt_sigsuspend, mask, sizeof(uint64_t));
	lt_testcancel(self);
	uint32_t gen = __atomic_load_n(&lt_signal_gen, __ATOMIC_ACQUIRE);
	/* this thread's mask holds until a handler has run (one pending for
	 * it runs as the mask is set), then the one before comes back */
	uint64_t bits;
	memcpy(&bits, mask, sizeof bits);
	uint64_t before = lt_sigmask_change(self, SIG_SETMASK, bits);
	wait_for_handler(gen);
	lt_sigmask_change(self, SIG_SETMASK, before);
	errno = EINTR;
	return -1;
}
