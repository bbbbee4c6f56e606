/* signals.c: the runtime's own signal handlers.  SIGSEGV on a guard page
 * names the thread whose stack overflowed; the poke signal (CP_POKE_SIGNAL,
 * SIGURG) lets a thief take the queue of a worker that stopped switching
 * (steal.c).  Both run on a per-worker alternate stack, since the
 * faulting stack is the one that has no room left. */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "compiler.h"

#define ALTSTACK_SIZE (64u * 1024)

static struct sigaction prev_segv, prev_poke;

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

/* The monitor or a thief found this worker silent while work waits on
 * it: fire its overdue timers, submit and reap its ring (this handler
 * runs on the ring's owner), and hand what is runnable to other workers.
 * Not while the worker is inside the scheduler (it will look around by
 * itself in a moment), holds a runtime lock, or has SQEs half-prepared. */
static void on_poke(int sig, siginfo_t *si, void *uc)
{
	struct cp_worker *w = cp_worker_self();
	if (w && !w->in_sched) {
		if (w->ring_busy || cp_in_runtime())
			return; /* the monitor pokes again */
		int saved = errno;
		w->in_sched = 1;
		cp_barrier();
		cp_timers_fire(w, cp_now_ns(), true);
		if (w->ring.ready)
			cp_ring_poll(&w->ring);
		cp_steal_hand_off(w);
		cp_barrier();
		w->in_sched = 0;
		errno = saved;
		return;
	}
	if (!w && prev_poke.sa_flags & SA_SIGINFO && prev_poke.sa_sigaction)
		prev_poke.sa_sigaction(sig, si, uc);
	else if (!w && prev_poke.sa_handler != SIG_DFL && prev_poke.sa_handler != SIG_IGN)
		prev_poke.sa_handler(sig);
}

void cp_signals_bind_worker(void)
{
	stack_t ss = { .ss_sp = malloc(ALTSTACK_SIZE), .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
	if (ss.ss_sp)
		sigaltstack(&ss, NULL);
}

void cp_signals_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &prev_segv);
	sa.sa_sigaction = on_poke;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigaction(CP_POKE_SIGNAL, &sa, &prev_poke);
}
