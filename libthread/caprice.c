/* caprice.c: the caprice_* extension API (see caprice.h). */
#include "caprice.h"

#include <errno.h>
#include <string.h>

#include "lt.h"

CP_EXPORT int caprice_worker_count(void)
{
	lt_ensure_started();
	return cp_worker_count();
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
	if (idx < 0 || idx >= cp_worker_count())
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
	return 0;
}
