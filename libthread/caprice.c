/* caprice.c: the caprice_* extension API (see caprice.h). */
#include "caprice.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "env.h"
#include "lt.h"
#include "offload.h"

CP_EXPORT int caprice_worker_count(void)
{
	lt_ensure_started();
	return cp_worker_count();
}

CP_EXPORT int caprice_spare_worker_count(void)
{
	lt_ensure_started();
	return cp_spare_worker_count();
}

CP_EXPORT int caprice_worker_index(void)
{
	return cp_worker_index();
}

CP_EXPORT int caprice_thread_stats(pthread_t h, struct caprice_thread_stats *out)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	out->id = t->cp.id;
	out->switches = t->cp.switches;
	out->stack_size = t->cp.stack.size;
	out->guard_size = t->guardsize;
	out->worker = cp_thread_worker_index(&t->cp);
	return 0;
}

CP_EXPORT int caprice_worker_stats(int idx, struct caprice_worker_stats *out)
{
	lt_ensure_started();
	if (idx < 0 || idx >= cp_worker_count() + cp_spare_worker_count())
		return EINVAL;
	struct cp_worker_stats s;
	cp_worker_stats(idx, &s);
	memset(out, 0, sizeof *out);
	out->switches = s.switches;
	out->parks = s.parks;
	out->wakes_local = s.wakes_local;
	out->wakes_remote = s.wakes_remote;
	out->kicks = s.kicks;
	out->steals_in = s.steals_in;
	out->steals_out = s.steals_out;
	out->sleeps = s.sleeps;
	out->timers_fired = s.timers_fired;
	out->runq_len = s.runq_len;
	out->io_ops = s.io_ops;
	out->enters = s.enters;
	out->pokes = s.pokes;
	out->preempts = s.preempts;
	out->yields = s.yields;
	out->tls_loads = s.tls_loads;
	out->covers = s.covers;
	out->steals_direct = s.steals_direct;
	out->big_chunks = s.big_chunks;
	out->held = s.held;
	out->deferred = s.deferred;
	out->held_now = s.held_now;
	return 0;
}

/* CAPRICE_STATS=1: the counters, on stderr, when the process exits.
 * Written to a copy of stderr taken at start: many programs close stderr
 * in their own exit handlers (gnulib's close_stdout does), which run
 * before ours. */
static int stats_fd = 2;

static void print_stats(void)
{
	uint64_t ops = 0, enters = 0;
	for (int i = 0; i < cp_worker_count(); i++) {
		struct caprice_worker_stats s;
		caprice_worker_stats(i, &s);
		cp_warn_to(stats_fd, "stats: worker %d: switches %llu parks %llu wakes %llu local %llu remote "
		        "kicks %llu steals %llu in %llu out sleeps %llu timers %llu io-ops %llu "
		        "enters %llu pokes %llu preempts %llu yields %llu tls-loads %llu "
		        "direct-steals %llu big-chunks %llu held %llu deferred %llu",
		        i, (unsigned long long)s.switches, (unsigned long long)s.parks,
		        (unsigned long long)s.wakes_local, (unsigned long long)s.wakes_remote,
		        (unsigned long long)s.kicks, (unsigned long long)s.steals_in,
		        (unsigned long long)s.steals_out, (unsigned long long)s.sleeps,
		        (unsigned long long)s.timers_fired, (unsigned long long)s.io_ops,
		        (unsigned long long)s.enters, (unsigned long long)s.pokes,
		        (unsigned long long)s.preempts, (unsigned long long)s.yields,
		        (unsigned long long)s.tls_loads, (unsigned long long)s.steals_direct,
		        (unsigned long long)s.big_chunks, (unsigned long long)s.held,
		        (unsigned long long)s.deferred);
		ops += s.io_ops;
		enters += s.enters;
	}
	for (int i = cp_worker_count(); i < cp_worker_count() + cp_spare_worker_count(); i++) {
		struct caprice_worker_stats s;
		caprice_worker_stats(i, &s);
		cp_warn_to(stats_fd, "stats: spare worker %d: covers %llu switches %llu parks %llu "
		        "steals %llu in %llu out io-ops %llu enters %llu", i,
		        (unsigned long long)s.covers, (unsigned long long)s.switches,
		        (unsigned long long)s.parks, (unsigned long long)s.steals_in,
		        (unsigned long long)s.steals_out, (unsigned long long)s.io_ops,
		        (unsigned long long)s.enters);
		ops += s.io_ops;
		enters += s.enters;
	}
	cp_warn_to(stats_fd, "stats: total: %llu io operations in %llu io_uring_enter calls (%.2f per call)",
	        (unsigned long long)ops, (unsigned long long)enters,
	        enters ? (double)ops / (double)enters : 0.0);
	unsigned long long offloaded;
	unsigned helpers;
	lt_offload_stats(&offloaded, &helpers);
	cp_warn_to(stats_fd, "stats: %llu calls ran on %u helper kernel threads (resolver, wait, file locks, "
	        "stdio reads)", offloaded, helpers);
}

void lt_stats_init(void)
{
	if (cp_env_long("CAPRICE_STATS", 0, 1, 0)) {
		long fd = syscall(SYS_fcntl, 2, F_DUPFD_CLOEXEC, 100);
		if (fd >= 0)
			stats_fd = (int)fd;
		atexit(print_stats);
	}
}

CP_EXPORT int caprice_stack_info(struct caprice_stack_info *out)
{
	struct cp_linked_info li;
	cp_linked_info(cp_self(), &li);
	out->linked = li.linked;
	out->bytes = li.bytes;
	out->big_bytes = li.big_bytes;
	out->cap = li.cap;
	out->chunks_mapped = li.chunks_mapped;
	out->big_calls = li.big_calls;
	return 0;
}
