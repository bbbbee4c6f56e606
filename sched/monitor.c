/* monitor.c: no worker is held hostage.
 *
 * Scheduling is cooperative: a worker gets control back only when its
 * current user thread parks.  A thread that never parks (a loop over
 * nonblocking descriptors, a long computation) or blocks in a call the
 * runtime cannot see (a raw futex, the program's own io_uring wait) would
 * hold everything else on its worker: queued threads, SQEs prepared but
 * not submitted, completions not reaped (the rings are SINGLE_ISSUER and
 * DEFER_TASKRUN, so only the owner may do either).
 *
 * So a monitor kernel thread, like Go's sysmon, looks at every worker
 * about every millisecond.  A worker that has not switched for a time
 * slice while something waits on it is asked to yield at its next safe
 * point (any call into the library: cp_safe_point); one still silent after
 * another slice is poked with CP_POKE_SIGNAL, and the handler, which runs
 * on the owning kernel thread (so SINGLE_ISSUER holds), submits and reaps
 * its ring, fires its timers and hands its runnable threads to a worker
 * that sleeps (signals.c, steal.c), or, when none does and the worker is
 * blocked in the kernel or has computed for STUCK_SLICES, to a spare
 * worker (spare.c).  Never asynchronous preemption of the user thread
 * itself: glibc's internal locks belong to the kernel thread.
 *
 * The monitor sleeps longer while every worker sleeps, so an idle process
 * costs a wake-up every 20 ms at most. */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "compiler.h"
#include "env.h"
#include "kthread.h"
#include "timespec.h"
#include "rtmem.h"

#define TICK_NS      1000000ull   /* look at every worker this often */
#define IDLE_TICK_NS 20000000ull  /* when every worker sleeps */

static uint64_t slice_ns = 2000000ull;

/* A worker silent this many time slices while threads wait on it is
 * given a spare even when it computes (spare.c): what it spins for may be
 * one of the threads queued behind it. */
#define STUCK_SLICES 10

struct watch {
	uint64_t since;      /* when it last changed */
	uint64_t poked_at;
	uint64_t ran_ns;     /* its kernel thread's CPU time at the last poke */
	bool asleep;         /* and whether it was asleep in the kernel then */
	bool covered;        /* a spare runs its threads (spare.c) */
};

/* Does anything wait on w that only w can move?  Strictly: a poke cuts
 * short a blocking system call the program made outside the library
 * (nanosleep, poll... answer EINTR after a handler), so it is sent only
 * for threads that wait.  The ring's own wake-up read is always pending
 * (and after a wake-up, unsubmitted), so the ring counts only while some
 * thread's operation is in flight. */
static bool has_waiting_work(struct cp_worker *w, uint64_t now)
{
	if (cp_runq_len(&w->rq) || __atomic_load_n(&w->inbox, __ATOMIC_RELAXED))
		return true;
	if (__atomic_load_n(&w->ring.inflight, __ATOMIC_RELAXED) &&
	    (__atomic_load_n(&w->ring.unsubmitted, __ATOMIC_RELAXED) ||
	     (w->ring.ready && cp_ring_completions_pending(&w->ring))))
		return true;
	uint64_t nd = __atomic_load_n(&w->next_deadline, __ATOMIC_RELAXED);
	return nd != CP_NO_DEADLINE && nd <= now;
}

static void look_at(struct cp_worker *w, struct watch *wt, uint64_t now)
{
	uint64_t beat = __atomic_load_n(&w->heartbeat, __ATOMIC_RELAXED);
	/* published, with the time, for the worker's brief yields (sched.c) */
	bool moved = beat != __atomic_load_n(&w->beat_seen, __ATOMIC_RELAXED);
	if (moved)
		__atomic_store_n(&w->beat_seen, beat, __ATOMIC_RELAXED);
	__atomic_store_n(&w->looked_at, now, __ATOMIC_RELAXED);
	if (moved || __atomic_load_n(&w->sleeping, __ATOMIC_RELAXED)) {
		wt->since = now;
		wt->asleep = false;
		if (wt->covered) {
			wt->covered = false;
			cp_spare_release(w);
		}
		return;
	}
	uint64_t silent = now - wt->since;
	if (silent < slice_ns)
		return;
	bool waiting = has_waiting_work(w, now);
	/* `preempt` already up while nothing waits: its thread must run a
	 * redirect (an asynchronous cancel) and has not reached a safe point */
	if (!waiting && !__atomic_load_n(&w->preempt, __ATOMIC_RELAXED))
		return;
	/* a safe point will yield; if none comes, the signal services it */
	__atomic_store_n(&w->preempt, 1, __ATOMIC_RELAXED);
	if (silent >= 2 * slice_ns && now - wt->poked_at >= slice_ns) {
		wt->poked_at = now;
		/* blocked in the kernel, not computing: its core is free, so a
		 * spare may run its threads (the poke's hand-off gives them);
		 * computing for STUCK_SLICES, it may be spinning for one of
		 * them, and the spare takes turns with it on the core */
		if (!wt->covered && !w->spare && cp_nall > cp_nworkers) {
			uint64_t ran;
			bool asleep = cp_spare_blocked_in_kernel(w, &ran);
			bool blocked = asleep && wt->asleep && ran - wt->ran_ns < slice_ns / 4;
			/* and on its core most of the last slice: a worker the
			 * kernel keeps waiting for a core is not spinning, and a
			 * spare would only add to the queue for cores */
			bool computing = !asleep && ran - wt->ran_ns >= slice_ns / 2;
			bool stuck = waiting && computing && silent >= STUCK_SLICES * slice_ns;
			if ((blocked || stuck) && cp_spare_cover(w))
				wt->covered = true;
			wt->asleep = asleep;
			wt->ran_ns = ran;
		}
		__atomic_add_fetch(&w->st.pokes, 1, __ATOMIC_RELAXED);
		syscall(SYS_tgkill, syscall(SYS_getpid), w->tid, CP_POKE_SIGNAL);
	}
}

static void *monitor_main(void *arg)
{
	struct watch *watches = arg;
	int n = cp_nall;
	for (;;) {
		uint64_t now = cp_now_ns();
		bool all_asleep = true;
		for (int i = 0; i < n; i++) {
			struct cp_worker *w = cp_workers[i];
			if (!__atomic_load_n(&w->sleeping, __ATOMIC_RELAXED))
				all_asleep = false;
			if (w->tid)
				look_at(w, &watches[i], now);
		}
		cp_location_monitor_look();
		cp_policy_monitor_look(cp_now_ns());
		cp_stack_decay(now);
		cp_chunk_decay(now);
		struct timespec ts = cp_ns_to_ts(all_asleep ? IDLE_TICK_NS : TICK_NS);
		syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &ts, NULL);
	}
	return NULL;
}

void cp_monitor_start(void)
{
	long us = cp_env_long("CAPRICE_SLICE_US", 100, 1000000, (long)(slice_ns / 1000));
	slice_ns = (uint64_t)us * 1000;
	/* allocated here, not by the monitor: its new kernel thread would
	 * need a malloc arena of its own (64 MiB of address space), which a
	 * fork's child under a tight RLIMIT_AS cannot get */
	struct watch *watches = cp_rt_calloc((size_t)cp_nall, sizeof *watches);
	if (!watches)
		cp_die("monitor: out of memory for %d workers", cp_nall);
	/* silent since now, not since boot: a worker that has not switched
	 * yet (main computing from the start) is not silent for hours */
	uint64_t now = cp_now_ns();
	for (int i = 0; i < cp_nall; i++)
		watches[i].since = now;
	int e = cp_kthread_spawn(monitor_main, watches);
	if (e)
		cp_die("cannot start the monitor kernel thread: %s", strerror(e));
}
