/* idle.c: what a worker's scheduler loop (sched.c) does when nothing is
 * runnable: poll the ring for a while, ask for work, then sleep in the
 * ring until a kick, a completion, the next timer, or the next look.
 *
 * The spin window adapts.  Under load the next completion is microseconds
 * away, and a sleep plus wake-up costs more than that; at low load the
 * polling is wasted CPU.  A sleep that ends early (work came soon) doubles
 * the window, up to SPIN_MAX_NS; a window that found nothing halves it.
 * CAPRICE_IDLE_SPIN_US fixes it instead (0: never poll). */
#include "worker.h"

#include "compiler.h"
#include "env.h"

#define IDLE_MAX_NS    64000000ull
#define SPIN_MAX_NS    100000ull
#define SPIN_START_NS  2000ull
#define SHORT_SLEEP_NS 200000ull

static int64_t fixed_spin_ns = -1;

void cp_idle_configure(void)
{
	long us = cp_env_long("CAPRICE_IDLE_SPIN_US", 0, 1000000, -1);
	fixed_spin_ns = us < 0 ? -1 : us * 1000;
}

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
	/* a spare is handed work, never takes it */
	if (!w->spare && cp_steal_look_for_work(w, now))
		return;
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
	if (cp_ring_poll(&w->ring) >= CP_SHARE_AT)
		cp_steal_share_burst(w);
	if (cp_runq_len(&w->rq))
		return true;
	idle_sleep(w, now, idle_period);
	cp_steal_share_burst(w); /* what the sleep's wait reaped */
	return false;
}
