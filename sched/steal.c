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

/* Moves part of w's queue (with CP_DONATE_ALL, its inbox first) to
 * thief's inbox. */
void cp_steal_give(struct cp_worker *w, struct cp_worker *thief, enum cp_donation how)
{
	bool all = how == CP_DONATE_ALL;
	if (all) /* behind the queue: they were woken last */
		cp_inbox_drain(w);
	struct cp_thread *last = NULL, *chain = NULL;
	uint32_t k = 0;
	/* pinned threads stay (but those that may leave, for CP_DONATE_ALL):
	 * halves are of the rest */
	uint32_t len = all ? cp_runq_len(&w->rq) : cp_runq_movable(&w->rq);
	uint32_t n = all ? len : how == CP_DONATE_CEIL_HALF ? (len + 1) / 2 : len / 2;
	if (n)
		/* with the worker's TLS no pinned thread may leave: asking
		 * would only walk and re-queue every pinned one */
		chain = cp_runq_take(&w->rq, n, all && cp_tls_per_thread, &last, &k);
	if (!chain)
		return;
	__atomic_add_fetch(&w->st.steals_out, k, __ATOMIC_RELAXED);
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
			cp_steal_give(w, v, CP_DONATE_ALL);
			return;
		}
	}
	/* every other worker is busy: a spare runs them if this worker is
	 * blocked in the kernel (the monitor assigned one: spare.c) */
	struct cp_worker *s = cp_spare_of(w);
	if (s)
		cp_steal_give(w, s, CP_DONATE_ALL);
}

uint32_t cp_idle_sleepers CP_HIDDEN, cp_thieves_spinning CP_HIDDEN, cp_idle_workers CP_HIDDEN;

struct cp_worker *cp_idle_other(struct cp_worker *w)
{
	for (int i = 1; i < cp_nworkers; i++) {
		struct cp_worker *v = cp_workers[(w->index + i) % cp_nworkers];
		if (__atomic_load_n(&v->idle_now, __ATOMIC_RELAXED))
			return v;
	}
	return NULL;
}

void cp_steal_share_at_io_park_slow(struct cp_worker *w)
{
	if (!cp_runq_movable(&w->rq) || w->spare)
		return;
	struct cp_worker *v = cp_idle_other(w);
	if (!v)
		return;
	uint32_t was = w->in_sched; /* a poke must not take the queue mid-way */
	w->in_sched = 1;
	cp_barrier();
	cp_steal_give(w, v, CP_DONATE_CEIL_HALF);
	cp_barrier();
	w->in_sched = was;
}

void cp_steal_offer_slow(struct cp_worker *self)
{
	if (!cp_membarrier_ready || self->spare ||
	    __atomic_load_n(&cp_thieves_spinning, __ATOMIC_RELAXED))
		return;
	cp_steal_wake_thief(self);
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
	if (cp_runq_movable(&w->rq) >= CP_SHARE_AT && !w->spare) /* nobody steals from a spare */
		cp_steal_wake_thief(w);
}

/* Posts w's steal request on v, which donates at its next switch
 * (cp_steal_serve); false if another thief's request is pending there. */
static bool ask(struct cp_worker *w, struct cp_worker *v, uint64_t now)
{
	struct cp_worker *none = NULL;
	if (!__atomic_compare_exchange_n(&v->steal_req, &none, w, false, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_RELAXED))
		return false;
	w->victim = v;
	w->victim_beat = __atomic_load_n(&v->heartbeat, __ATOMIC_RELAXED);
	w->asked_at = now;
	return true;
}

/* Moves a chain (oldest first) onto w's own queue. */
static void take_chain(struct cp_worker *w, struct cp_thread *t)
{
	for (struct cp_thread *n; t; t = n) {
		n = t->next;
		cp_runq_push(&w->rq, t);
	}
}

/* Empties v's inbox (wakeups other workers sent it) onto w's queue. */
static uint32_t take_inbox(struct cp_worker *w, struct cp_worker *v)
{
	uint32_t k = 0;
	for (struct cp_thread *t = cp_inbox_take(v), *n; t; t = n) {
		n = t->next;
		t->next = NULL;
		if (cp_unlikely(__atomic_load_n(&t->pinned, __ATOMIC_RELAXED))) {
			cp_inbox_push(v, t, t); /* must run there */
		} else {
			cp_runq_push(&w->rq, t);
			k++;
		}
	}
	return k;
}

/* Takes threads from a worker that has stopped switching, without its
 * help: half its run queue, rounded up (runq.h), and the wakeups waiting
 * in its inbox, once it has not switched for CP_LONE_AFTER_NS.  A worker
 * that still switches is asked instead (steal_req), and donates at its
 * next switch: that costs neither side a system call, where a steal
 * costs the thief a membarrier and the victim's CPU an interrupt (under
 * load the echo benchmark lost 10% to steals that a request would have
 * answered), and it does not split a ping-pong pair whose partner runs
 * in a moment.  *watching: something may become takeable soon. */
static bool steal_directly(struct cp_worker *w, uint64_t now, bool *watching)
{
	for (int i = 1; i < cp_nworkers; i++) {
		struct cp_worker *v = cp_workers[(w->index + i) % cp_nworkers];
		uint32_t len = cp_runq_movable(&v->rq); /* pinned ones run there */
		bool inbox = __atomic_load_n(&v->inbox, __ATOMIC_RELAXED) != NULL;
		if (!len && !inbox)
			continue;
		/* asleep (it was kicked), or in its scheduler loop about to run
		 * what it has: it runs them itself in a moment.  (Its heartbeat
		 * stands still meanwhile, which must not read as "busy".) */
		if (__atomic_load_n(&v->sleeping, __ATOMIC_RELAXED) ||
		    __atomic_load_n(&v->idle_now, __ATOMIC_RELAXED))
			continue;
		struct cp_thread *first, *last;
		uint32_t k = 0;
		{
			uint64_t beat = __atomic_load_n(&v->heartbeat, __ATOMIC_RELAXED);
			if (w->lone_victim != v || w->lone_beat != beat) {
				w->lone_victim = v;
				w->lone_beat = beat;
				w->lone_since = now;
			}
			if (now - w->lone_since < CP_LONE_AFTER_NS) {
				/* it switches: ask, and it donates at its next
				 * switch (no system call on either side); only a
				 * worker that stops switching is stolen from */
				if ((len || inbox) && !w->victim)
					ask(w, v, now);
				*watching = true;
				continue;
			}
			if (len)
				k = cp_runq_steal(&v->rq, &v->in_sched, true, &first, &last);
		}
		if (k)
			take_chain(w, first);
		if (inbox && now - w->lone_since >= CP_LONE_AFTER_NS && w->lone_victim == v)
			k += take_inbox(w, v);
		if (!k)
			continue;
		w->lone_victim = NULL;
		__atomic_add_fetch(&w->st.steals_in, k, __ATOMIC_RELAXED);
		__atomic_add_fetch(&v->st.steals_out, k, __ATOMIC_RELAXED);
		__atomic_add_fetch(&w->st.steals_direct, 1, __ATOMIC_RELAXED);
		return true;
	}
	return false;
}

/* Idle: spins a while over the other workers' queues while one holds a
 * lone thread that may become takeable, stealing as soon as it is. */
static bool steal_watching(struct cp_worker *w, uint64_t now)
{
	bool watching = false;
	w->lone_victim = NULL; /* silence is timed from what we see now */
	if (steal_directly(w, now, &watching))
		return true;
	if (!watching)
		return false;
	__atomic_add_fetch(&cp_thieves_spinning, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&w->watching, 1, __ATOMIC_RELAXED);
	bool got = false;
	/* A victim that switches twice while we watch runs its queue itself,
	 * short threads one after another: what it has left runs there in a
	 * moment, and a thread it wakes for us comes by its offer (a kick).
	 * Watching on would burn the core a server's other processes want
	 * (echo, 1,000 connections: 13.7 against 12.0 µs of server CPU per
	 * round trip with no watching at all).  One that stops switching is
	 * the case watching is for: a thread queued behind a computation. */
	struct cp_worker *v0 = w->lone_victim;
	uint64_t beat0 = v0 ? __atomic_load_n(&v0->heartbeat, __ATOMIC_RELAXED) : 0;
	for (uint64_t until = now + CP_THIEF_SPIN_NS; now < until; now = cp_now_ns()) {
		for (int i = 0; i < 64; i++)
			cp_cpu_relax();
		if (__atomic_load_n(&w->inbox, __ATOMIC_RELAXED)) {
			got = true; /* a victim answered our request */
			break;
		}
		if (__atomic_load_n(&w->steal_req, __ATOMIC_RELAXED))
			break;
		if (v0 && __atomic_load_n(&v0->heartbeat, __ATOMIC_RELAXED) - beat0 >= 2)
			break;
		watching = false;
		if (steal_directly(w, now, &watching)) {
			got = true;
			break;
		}
		if (!watching)
			break;
	}
	__atomic_store_n(&w->watching, 0, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&cp_thieves_spinning, 1, __ATOMIC_RELAXED);
	return got;
}

bool cp_steal_look_for_work(struct cp_worker *w, uint64_t now)
{
	if (cp_membarrier_ready && steal_watching(w, now))
		return true;
	/* what only the victim can give: its inbox, its overdue timers (and
	 * everything, where the kernel has no expedited membarrier) */
	struct cp_worker *v = w->victim;
	if (v) {
		if (__atomic_load_n(&v->steal_req, __ATOMIC_RELAXED) != w) {
			w->victim = NULL; /* served, or taken back */
		} else if (__atomic_load_n(&v->heartbeat, __ATOMIC_RELAXED) == w->victim_beat &&
		           now - w->asked_at >= CP_POKE_AFTER_NS) {
			/* no switch for a while: it cannot answer by itself */
			syscall(SYS_tgkill, syscall(SYS_getpid), v->tid, CP_POKE_SIGNAL);
			w->asked_at = now;
			return false;
		} else {
			return false;
		}
	}
	for (int i = 1; i < cp_nworkers; i++) {
		v = cp_workers[(w->index + i) % cp_nworkers];
		/* work queued there, or timers overdue there (a stuck worker
		 * cannot fire them; the poke handler will) */
		uint64_t nd = __atomic_load_n(&v->next_deadline, __ATOMIC_RELAXED);
		bool overdue = nd != CP_NO_DEADLINE && nd + CP_POKE_AFTER_NS <= now;
		if (cp_runq_movable(&v->rq) == 0 && !__atomic_load_n(&v->inbox, __ATOMIC_RELAXED) &&
		    !overdue)
			continue;
		if (ask(w, v, now)) {
			cp_worker_kick(v); /* it may be asleep with work in its inbox */
			return false;
		}
	}
	return false;
}
