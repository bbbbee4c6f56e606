/* signals.c: the runtime's own signal handlers.  SIGSEGV on a guard page
 * names the thread whose stack overflowed; the poke signal (CP_POKE_SIGNAL,
 * SIGURG) lets a thief take the queue of a worker that stopped switching
 * (steal.c).  Both run on a per-worker alternate stack, since the
 * faulting stack is the one that has no room left. */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "compiler.h"
#include "context.h"
#include "rtmem.h"

#define ALTSTACK_SIZE (64u * 1024)

static struct sigaction prev_segv, prev_poke;

static void segv(int sig, siginfo_t *si, void *uc)
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

/* Runs the current thread's redirect with the vector and x87 state kept,
 * in an xsave area as big as this CPU's state (CPUID leaf 0xD), on the
 * thread's stack (cp_redirect_trampoline aligned it to 64). */
__attribute__((target("xsave"))) CP_HIDDEN void cp_run_redirect(void)
{
	static uint32_t area_size;
	if (!area_size) {
		uint32_t a, b, c, d;
		__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0xd), "c"(0));
		area_size = c ? c : 4096;
	}
	char *area = __builtin_alloca(area_size + 64);
	area = (char *)(((uintptr_t)area + 63) & ~(uintptr_t)63);
	memset(area + 512, 0, 64); /* the header, which xsave reads */
	__builtin_ia32_xsave64(area, ~0ull);
	struct cp_thread *t = cp_self();
	void (*fn)(void) = t ? __atomic_exchange_n(&t->redirect, NULL, __ATOMIC_ACQ_REL) : NULL;
	if (fn)
		fn();
	__builtin_ia32_xrstor64(area, ~0ull);
}

/* The interrupted code of w's current thread calls its `redirect` once
 * the handler returns: a call pushed onto its stack, past the red zone. */
static void redirect_interrupted(struct cp_worker *w, ucontext_t *uc)
{
	struct cp_thread *cur = w->current;
	if (cur == &w->idle || !__atomic_load_n(&cur->redirect, __ATOMIC_ACQUIRE))
		return;
	/* a small chunk of a linked stack has no room for the saved state;
	 * such a thread runs its redirect at its next safe point */
	if (cur->stack.kind == CP_STACK_LINKED)
		return;
	greg_t *g = uc->uc_mcontext.gregs;
	/* as after a call from just past the red zone; the trampoline's
	 * `ret $128` then gives the code back its own stack pointer, exactly
	 * (the trampoline aligns the stack itself) */
	uint64_t sp = (uint64_t)g[REG_RSP] - 128 - 8;
	*(uint64_t *)sp = (uint64_t)g[REG_RIP];
	g[REG_RSP] = (greg_t)sp;
	g[REG_RIP] = (greg_t)(uintptr_t)cp_redirect_trampoline;
}

bool cp_thread_redirect(struct cp_thread *t, void (*fn)(void))
{
	cp_switch_extras_add(CP_EXTRA_REDIRECT, __ATOMIC_RELAXED);
	__atomic_store_n(&t->redirect, fn, __ATOMIC_RELEASE);
	struct cp_worker *w = t->home;
	if (w && __atomic_load_n(&w->current, __ATOMIC_ACQUIRE) == t && w->tid) {
		__atomic_add_fetch(&w->st.pokes, 1, __ATOMIC_RELAXED);
		syscall(SYS_tgkill, syscall(SYS_getpid), w->tid, CP_POKE_SIGNAL);
		return true;
	}
	return false;
}

/* The monitor or a thief found this worker silent while work waits on
 * it: fire its overdue timers, submit and reap its ring (this handler
 * runs on the ring's owner), and hand what is runnable to other workers.
 * Not while the worker is inside the scheduler (it will look around by
 * itself in a moment), holds a runtime lock, or has SQEs half-prepared.
 * A thread that must run a redirect (cp_thread_redirect) is sent to it. */
static void poke(int sig, siginfo_t *si, void *uc)
{
	struct cp_worker *w = cp_worker_self();
	if (w && !w->in_sched) {
		if (w->ring_busy || cp_in_runtime())
			return; /* the monitor pokes again */
		redirect_interrupted(w, uc);
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

/* The handlers run on the worker's alternate stack, not on the chunk of
 * a linked thread they interrupt: with no prologue of their own, they run
 * what they call with the split-stack limit at 0 (no limit). */
static CP_NO_SPLIT void on_segv(int sig, siginfo_t *si, void *uc)
{
	uintptr_t limit = cp_split_limit();
	cp_split_limit_set(0);
	segv(sig, si, uc);
	cp_split_limit_set(limit);
}

static CP_NO_SPLIT void on_poke(int sig, siginfo_t *si, void *uc)
{
	uintptr_t limit = cp_split_limit();
	cp_split_limit_set(0);
	poke(sig, si, uc);
	cp_split_limit_set(limit);
}

void cp_signals_bind_worker(void)
{
	stack_t ss = { .ss_sp = cp_rt_malloc(ALTSTACK_SIZE), .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
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
