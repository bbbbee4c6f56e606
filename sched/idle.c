/* idle.c: what a worker's scheduler loop (sched.c) does when nothing is
 * runnable: poll the ring for a while, ask for work, then sleep in the
 * ring until a kick, a completion, the next timer, or the next look.
 *
 * The spin window adapts, as a guest kernel's halt-polling does.  Under
 * load the next piece of work is microseconds away, and a sleep costs more
 * than that: the wake-up of a halted CPU took 60 to 470 us on this VM (a
 * kick's eventfd write to the sleeper's first instruction).  At low load
 * the polling is wasted CPU.  So the window follows how long idle spells
 * last: one that ended by work handed over from another worker within
 * SPIN_MAX_NS, after the window had run out, widens it to cover that
 * spell (at least doubling it); one that lasted longer than SPIN_MAX_NS,
 * or that the worker's own I/O ended, halves it; one that the window
 * covered leaves it.  (Halving every window that found nothing, as
 * before, undid each doubling: the window never grew past 2 us.)
 *
 * Why only handed-over work widens it: a thread woken on a busy worker
 * (a pipeline's stage fed through a condvar) waits there behind whatever
 * runs, and a poller takes it at once; that is a core's worth of work
 * gained.  A completion of the worker's own I/O gains only the sleep it
 * saves, and the poll that waits for it costs its whole length: Knot at
 * saturation spent 764 ms polling in a 5.5 s run for 11,275 completions
 * found so (68 us of CPU each, against a few us for a sleep and its
 * wake-up), and spent 6-10% more CPU per request than with no polling at
 * 1,000 and 10,000 connections (README, Halt versus spin).
 * CAPRICE_IDLE_SPIN_US fixes the window instead (0: never poll). */
#include "worker.h"

#include "compiler.h"
#include "env.h"

#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#define IDLE_MAX_NS    64000000ull
#define SPIN_MAX_NS    200000ull
#define SPIN_START_NS  2000ull
#define YIELD_EVERY_NS 10000ull
#define NOT_ASLEEP_NS  2000ull /* a ring wait that ended sooner did not sleep */

static int64_t fixed_spin_ns = -1;
/* More workers than CPUs to run them: a polling worker holds a CPU that
 * a busy one may wait for, so the adaptive window never polls (with 4
 * workers on 2 CPUs and idle workers polling, a condvar waiter timed out
 * 20 ms after its signal in tests/cond signal_racing_wait_entry_not_lost
 * on 4 workers, 2 runs in 28; a signaller kept off its CPU is the likely
 * cause, not traced). */
static bool oversubscribed;

void cp_idle_configure(void)
{
	long us = cp_env_long("CAPRICE_IDLE_SPIN_US", 0, 1000000, -1);
	fixed_spin_ns = us < 0 ? -1 : us * 1000;
	cpu_set_t allowed;
	int cpus = sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed)
	                                                               : (int)sysconf(_SC_NPROCESSORS_ONLN);
	oversubscribed = cpus > 0 && cp_nworkers > cpus;
}

/* Threads woken from other workers wait in w's inbox: work handed over,
 * the only kind that widens the window (the top of the file). */
static inline bool handed_over(const struct cp_worker *w)
{
	return __atomic_load_n(&w->inbox, __ATOMIC_RELAXED) != NULL;
}

static bool has_news(struct cp_worker *w)
{
	return cp_runq_len(&w->rq) || __atomic_load_n(&w->inbox, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&w->steal_req, __ATOMIC_RELAXED) ||
	       __atomic_load_n(&w->cancels, __ATOMIC_RELAXED);
}

/* Another worker has threads queued (or wakeups in its inbox) that it
 * may not get to soon. */
static bool others_have_work(struct cp_worker *w)
{
	for (int i = 1; i < cp_nworkers; i++) {
		struct cp_worker *v = cp_workers[(w->index + i) % cp_nworkers];
		if (cp_runq_movable(&v->rq) || __atomic_load_n(&v->inbox, __ATOMIC_RELAXED))
			return true;
	}
	return false;
}

/* Another regular worker runs a thread (or is blocked in one): work may
 * come from it at any moment. */
static bool others_busy(struct cp_worker *w)
{
	for (int i = 1; i < cp_nworkers; i++) {
		struct cp_worker *v = cp_workers[(w->index + i) % cp_nworkers];
		if (!__atomic_load_n(&v->idle_now, __ATOMIC_RELAXED))
			return true;
	}
	return false;
}

/* Polls for up to the spin window: the ring, this worker's own news, and
 * the other workers' queues, so that a thread woken behind one that
 * computes on (a pipeline's compute pool fed through a condvar) runs here
 * within microseconds instead of after this worker's wake-up from a
 * sleep in its ring.  The adaptive window polls only while another
 * worker is busy: when every worker idles, activity is low, the next
 * request is far away and polling for it would only burn CPU (the echo
 * server at 1,000 and 5,000 requests/s spent 1.5 to 2x the CPU per
 * request of never polling, for no better latency).  The poll gives the
 * core away now and then (sched_yield), so that a kernel thread or
 * another process woken on this CPU (io_uring's workers doing a file
 * write, a client on loopback) runs at once instead of waiting for the
 * kernel to preempt the poll; a yield that came back late says the CPU
 * is wanted, and ends the poll.  True if work turned up; the worker's
 * own I/O found so narrows the window (see the top of the file). */
static bool idle_spin(struct cp_worker *w, uint64_t now, bool *may_poll)
{
	bool adaptive = fixed_spin_ns < 0;
	uint64_t window = adaptive ? w->spin_ns : (uint64_t)fixed_spin_ns;
	*may_poll = !adaptive || !(oversubscribed || w->spare || !others_busy(w));
	if (!window || !*may_poll)
		return false;
	uint64_t until = now + window, give_way = now + YIELD_EVERY_NS;
	do {
		unsigned reaped = cp_ring_poll(&w->ring);
		if (reaped || has_news(w)) {
			if (adaptive && reaped && !handed_over(w))
				w->spin_ns /= 2;
			return true;
		}
		if (!w->spare && others_have_work(w) && cp_steal_look_for_work(w, now))
			return true;
		if (now >= give_way) {
			if (adaptive && !others_busy(w))
				return false;
			syscall(SYS_sched_yield);
			uint64_t back = cp_now_ns();
			if (adaptive && back - now > YIELD_EVERY_NS) {
				/* something else ran on this CPU meanwhile: it is
				 * wanted, polling would keep it waiting */
				w->spin_ns /= 2;
				return false;
			}
			give_way = back + YIELD_EVERY_NS;
		} else {
			cp_cpu_relax();
		}
	} while ((now = cp_now_ns()) < until);
	return false;
}

/* An idle spell that began spell_ns ago ended in a sleep: widen the
 * window when a longer one would have covered it and the work that ended
 * it came from another worker (handed), narrow it when no window could
 * or when it was the worker's own I/O.  Only a spell's first sleep tells
 * how long the spell was (later ones began after a look-around period,
 * CP_IDLE_MIN_NS, itself longer than any window). */
static void adapt_window(struct cp_worker *w, uint64_t spell_ns, bool first_sleep, bool handed)
{
	if (fixed_spin_ns >= 0)
		return;
	if (spell_ns > SPIN_MAX_NS || !first_sleep || !handed) {
		w->spin_ns /= 2;
	} else {
		uint64_t wider = w->spin_ns ? w->spin_ns * 2 : SPIN_START_NS;
		if (wider < spell_ns + spell_ns / 4)
			wider = spell_ns + spell_ns / 4;
		w->spin_ns = wider < SPIN_MAX_NS ? wider : SPIN_MAX_NS;
	}
}

/* Work turned up without the ring's wait: what the thread that parked
 * last prepared goes out before anything else runs. */
static void submit_before_running(struct cp_worker *w)
{
	if (w->ring.unsubmitted)
		cp_ring_poll(&w->ring);
}

/* Nothing to run: ask for work, then sleep in the ring until a kick, a
 * completion, the next timer, or the next look around. */
static void idle_sleep(struct cp_worker *w, uint64_t spell_from, uint64_t *idle_period)
{
	bool may_poll;
	if (idle_spin(w, spell_from, &may_poll))
		return;
	uint64_t now = cp_now_ns();
	/* work handed to this worker comes before work taken from others: a
	 * steal now would queue a thread it took ahead of a wakeup already in
	 * the inbox (tests/steal's placement case: the lone first thread,
	 * taken after 20 us, ran before the second, sent here at once) */
	if (has_news(w)) {
		submit_before_running(w);
		return;
	}
	/* a spare is handed work, never takes it */
	if (!w->spare && cp_steal_look_for_work(w, now)) {
		submit_before_running(w);
		return;
	}
	uint64_t timeout = w->victim ? CP_POKE_AFTER_NS : *idle_period;
	if (cp_runq_held(&w->rq) && timeout > CP_HELD_LOOK_NS)
		timeout = CP_HELD_LOOK_NS; /* admission may let them go by then */
	uint64_t nd = __atomic_load_n(&w->next_deadline, __ATOMIC_RELAXED);
	if (nd != CP_NO_DEADLINE && nd - now < timeout)
		timeout = nd > now ? nd - now : 0;
	__atomic_store_n(&w->sleeping, 1, __ATOMIC_SEQ_CST);
	if (!w->spare)
		__atomic_add_fetch(&cp_idle_sleepers, 1, __ATOMIC_SEQ_CST);
	if (!__atomic_load_n(&w->inbox, __ATOMIC_SEQ_CST) &&
	    !__atomic_load_n(&w->steal_req, __ATOMIC_SEQ_CST) &&
	    !__atomic_load_n(&w->cancels, __ATOMIC_SEQ_CST)) {
		uint64_t before = cp_now_ns();
		cp_ring_wait(&w->ring, timeout);
		uint64_t after = cp_now_ns();
		/* a kick for a thread woken elsewhere ended the sleep, not
		 * this ring's own I/O or a timer */
		bool handed = handed_over(w);
		/* the wait submitted what the last thread prepared (see
		 * cp_idle_nothing_queued), and a completion of that at once
		 * ended it before it slept: neither a sleep nor a spell */
		if (after - before >= NOT_ASLEEP_NS) {
			w->st.sleeps++;
			/* a spell in which the window could not poll says
			 * nothing about one in which it may (every worker idle:
			 * a client's requests one at a time had widened it, and
			 * the load that followed found it wide) */
			if (may_poll)
				adapt_window(w, after - spell_from, *idle_period == CP_IDLE_MIN_NS, handed);
			if (*idle_period < IDLE_MAX_NS)
				*idle_period *= 2;
		}
	} else {
		submit_before_running(w);
	}
	/* a kick clears it (and counts the sleeper out) first */
	if (__atomic_exchange_n(&w->sleeping, 0, __ATOMIC_ACQ_REL) && !w->spare)
		__atomic_sub_fetch(&cp_idle_sleepers, 1, __ATOMIC_RELAXED);
}

bool cp_idle_nothing_queued(struct cp_worker *w, uint64_t *idle_period)
{
	/* look at the clock and the ring */
	cp_sigmask_check(w);
	uint64_t now = cp_now_ns();
	if (now >= __atomic_load_n(&w->next_deadline, __ATOMIC_RELAXED))
		cp_timers_fire(w, now, false);
	/* what the parking thread prepared is submitted by the wait in the
	 * ring if nothing else turns up first: one io_uring_enter per idle
	 * spell that sleeps, not one to submit and one to wait */
	if (cp_ring_poll_before_wait(&w->ring) >= CP_SHARE_AT)
		cp_steal_share_burst(w);
	if (cp_runq_len(&w->rq)) {
		submit_before_running(w);
		return true;
	}
	idle_sleep(w, now, idle_period);
	cp_steal_share_burst(w); /* what the sleep's wait reaped */
	return false;
}
