/* steal.c: moving runnable threads between workers.
 *
 * Run queues belong to their workers, so stealing is by request: an idle
 * worker sets a steal request on a busy one, which donates part of its
 * queue at its next switch.  A victim that has not switched for
 * CP_POKE_AFTER_NS cannot answer (a long computation, a call the runtime
 * does not see): it is poked with a signal whose handler (signals.c)
 * donates for it.  Burst sharing: a worker whose completions made many
 * threads runnable at once wakes a sleeping worker, which then asks. */
#include "worker.h"

#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"

/* Moves part of w's queue (and with CP_DONATE_ALL, its inbox) to
 * thief's inbox. */
void cp_steal_give(struct cp_worker *w, struct cp_worker *thief, enum cp_donation how)
{
	bool include_inbox = how == CP_DONATE_ALL;
	if (how == CP_DONATE_MOVABLE)
		cp_inbox_drain(w); /* so that its pinned threads (if any) stay */
	struct cp_thread *last = NULL, *chain = NULL;
	uint32_t k = 0;
	uint32_t len = cp_runq_len(&w->rq);
	uint32_t n = how == CP_DONATE_ALL || how == CP_DONATE_MOVABLE ? len
	           : how == CP_DONATE_CEIL_HALF ? (len + 1) / 2 : len / 2;
	if (n)
		chain = cp_runq_take(&w->rq, n, how == CP_DONATE_ALL, &last, &k);
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
	cp_inbox_push(thief, chain, last);
}

void cp_steal_serve(struct cp_worker *w, enum cp_donation how)
{
	struct cp_worker *thief = __atomic_exchange_n(&w->steal_req, NULL, __ATOMIC_ACQ_REL);
	if (thief)
		cp_steal_give(w, thief, how);
}

void cp_steal_hand_off(struct cp_worker *w)
{
	if (__atomic_load_n(&w->steal_req, __ATOMIC_RELAXED)) {
		cp_steal_serve(w, CP_DONATE_ALL);
		return;
	}
	if (cp_runq_len(&w->rq) == 0 && !__atomic_load_n(&w->inbox, __ATOMIC_RELAXED))
		return;
	/* nobody asked: only a worker with nothing to do takes them.  Moving
	 * a queue to a busy worker puts every thread at the back of another
	 * queue, and two busy workers poking each other would pass the same
	 * threads back and forth behind everyone else (a stress test saw a
	 * new thread never run that way); a busy worker that runs dry asks
	 * for work itself (cp_steal_look_for_work). */
	for (int i = 1; i < cp_nworkers; i++) {
		struct cp_worker *v = cp_workers[(w->index + i) % cp_nworkers];
		if (__atomic_load_n(&v->sleeping, __ATOMIC_RELAXED)) {
			cp_steal_give(w, v, CP_DONATE_MOVABLE);
			return;
		}
	}
	/* every other worker is busy: a spare runs them if this worker is
	 * blocked in the kernel (the monitor assigned one: spare.c) */
	struct cp_worker *s = cp_spare_of(w);
	if (s)
		cp_steal_give(w, s, CP_DONATE_MOVABLE);
}

void cp_steal_wake_thief(struct cp_worker *self)
{
	for (int i = 1; i < cp_nworkers; i++) {
		struct cp_worker *v = cp_workers[(self->index + i) % cp_nworkers];
		if (__atomic_load_n(&v->sleeping, __ATOMIC_RELAXED)) {
			cp_worker_kick(v);
			return;
		}
	}
}

/* A batch of completions made many threads runnable here at once, while
 * another worker may sleep: wake one, and it will ask for half of them.
 * Without this a worker that holds most connections keeps them (a thread
 * returning from I/O resumes where it parked) while the other idles. */
void cp_steal_share_burst(struct cp_worker *w)
{
	if (cp_runq_len(&w->rq) >= CP_SHARE_AT && !w->spare) /* nobody steals from a spare */
		cp_steal_wake_thief(w);
}

void cp_steal_look_for_work(struct cp_worker *w, uint64_t now)
{
	struct cp_worker *v = w->victim;
	if (v) {
		if (__atomic_load_n(&v->steal_req, __ATOMIC_RELAXED) != w) {
			w->victim = NULL; /* served, or taken back */
		} else if (__atomic_load_n(&v->heartbeat, __ATOMIC_RELAXED) == w->victim_beat &&
		           now - w->asked_at >= CP_POKE_AFTER_NS) {
			/* no switch for a while: it cannot answer by itself */
			syscall(SYS_tgkill, getpid(), v->tid, CP_POKE_SIGNAL);
			w->asked_at = now;
			return;
		} else {
			return;
		}
	}
	for (int i = 1; i < cp_nworkers; i++) {
		v = cp_workers[(w->index + i) % cp_nworkers];
		/* work queued there, or timers overdue there (a stuck worker
		 * cannot fire them; the poke handler will) */
		uint64_t nd = __atomic_load_n(&v->next_deadline, __ATOMIC_RELAXED);
		bool overdue = nd != CP_NO_DEADLINE && nd + CP_POKE_AFTER_NS <= now;
		if (cp_runq_len(&v->rq) == 0 && !__atomic_load_n(&v->inbox, __ATOMIC_RELAXED) &&
		    !overdue)
			continue;
		struct cp_worker *none = NULL;
		if (__atomic_compare_exchange_n(&v->steal_req, &none, w, false,
		                                __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
			w->victim = v;
			w->victim_beat = __atomic_load_n(&v->heartbeat, __ATOMIC_RELAXED);
			w->asked_at = now;
			cp_worker_kick(v); /* it may be asleep with work in its inbox */
			return;
		}
	}
}
