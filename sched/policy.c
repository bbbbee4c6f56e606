/* policy.c: which level of its worker's run queue (runq.h) a thread that
 * becomes runnable waits on: real-time priorities first, then, with
 * CAPRICE_SCHED=2d, what the blocking graph (location.c) predicts about
 * the run it is about to start from where it blocked.
 *
 * - A thread with a priority (pthread_setschedparam with SCHED_FIFO or
 *   SCHED_RR and a priority of 1..99) waits on its priority's level, so it
 *   runs before every thread of lower priority queued on its worker.
 * - Resource-aware admission (Capriccio's resource-aware scheduling).
 *   Each blocking point learns how many descriptors a thread that parks
 *   there opens minus closes until it ends (rest_fds, location.c).  While
 *   descriptors run short (fewer than a reserve, 1/8 of RLIMIT_NOFILE,
 *   left), a thread whose point predicts it takes more (an accept loop)
 *   is held back, at its wakeup and again when it is picked, and one
 *   predicted to give some back (a connection on its way to its close)
 *   goes first.  Held threads go once the descriptors recover, one per
 *   pick, so that each sees the count the last one left; none waits
 *   longer than CP_HELD_MAX_NS (runq.h), after which it runs whatever the
 *   count, and meets the EMFILE it would have met without the policy.  A
 *   thread-per-connection server thus leaves new connections in the
 *   kernel's listen backlog instead of accepting them into a process
 *   that has no descriptor left to serve them with.
 * - Shortest predicted run first: a thread whose blocking point predicts a
 *   run of CP_LONG_RUN_NS or more waits behind the ring when other threads
 *   are queued there, for at most CP_DEFERRED_MAX_NS, so that short
 *   requests are not stuck behind long computations.  With nothing queued
 *   it goes on the ring, where idle workers can steal it.
 *
 * The descriptor count is the one at start-up plus the opens minus the
 * closes libthread serves (cp_fds_changed); what bypasses it (the C
 * library's internal opens, inherited descriptors closed behind its back)
 * is corrected by the monitor, which recounts /proc/self/fd while the
 * count is above half the limit, and by any EMFILE, which means the limit
 * is reached whatever the count says.
 *
 * Memory is not a resource here yet: the graph has no per-thread count of
 * bytes held (glibc's allocator keeps none, and interposing malloc in
 * every program was not worth its cost), so CAPRICE_MEM_LIMIT is not
 * read. */
#include "worker.h"

#include <dirent.h>
#include <stddef.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"

#define CP_LONG_RUN_NS   250000ull  /* a "long" predicted run */
#define WARM_RUNS        4          /* runs seen from a node before it predicts */
#define RECOUNT_NS       50000000ull

static int64_t fds_counted;     /* at start-up or at the last recount */
static int64_t fds_since;       /* opens minus closes since then */
static int64_t fds_limit;       /* RLIMIT_NOFILE's soft limit (0: none known) */
static uint64_t last_recount;
static bool fds_tight;          /* fewer than twice the reserve left: only
                                   then does a pick count descriptors */

static int64_t fds_open(void)
{
	return __atomic_load_n(&fds_counted, __ATOMIC_RELAXED) +
	       __atomic_load_n(&fds_since, __ATOMIC_RELAXED);
}

/* Descriptors left under the limit (INT64_MAX with none known). */
static int64_t fds_left(void)
{
	int64_t limit = __atomic_load_n(&fds_limit, __ATOMIC_RELAXED);
	return limit ? limit - fds_open() : INT64_MAX;
}

/* The reserve kept for the threads already admitted: 1/8 of the limit,
 * at least 8. */
static int64_t fds_reserve(void)
{
	int64_t limit = __atomic_load_n(&fds_limit, __ATOMIC_RELAXED);
	return limit / 8 > 8 ? limit / 8 : 8;
}

/* Keeps fds_tight true to the count, writing it only when it changes
 * (every pick of every worker reads it). */
static void tight_update(void)
{
	bool tight = fds_left() < 2 * fds_reserve();
	if (__atomic_load_n(&fds_tight, __ATOMIC_RELAXED) != tight)
		__atomic_store_n(&fds_tight, tight, __ATOMIC_RELAXED);
}

/* What a thread that parked at n does with descriptors until it ends. */
enum fds_use {
	FDS_NONE,
	FDS_TAKES,  /* opens more than it closes: an accept loop */
	FDS_GIVES,  /* closes more than it opens: a connection on its way out */
};

static enum fds_use fds_use(const struct cp_loc_node *n)
{
	int32_t rest = __atomic_load_n(&n->rest_fds, __ATOMIC_RELAXED);
	return rest > CP_FDS_ONE / 2 ? FDS_TAKES : rest < -CP_FDS_ONE / 2 ? FDS_GIVES : FDS_NONE;
}

static inline struct cp_worker *worker_of(struct cp_runq *q)
{
	return (struct cp_worker *)((char *)q - offsetof(struct cp_worker, rq));
}

/* A node that predicts, once it has seen a few runs. */
static struct cp_loc_node *predicting(const struct cp_thread *t)
{
	struct cp_loc_node *n = t->loc;
	return n && __atomic_load_n(&n->outs, __ATOMIC_RELAXED) >= WARM_RUNS ? n : NULL;
}

/* Fewer descriptors left than the reserve (the tight flag first: it is
 * one read of a line that rarely changes). */
static bool fds_short(void)
{
	return __atomic_load_n(&fds_tight, __ATOMIC_RELAXED) && fds_left() < fds_reserve();
}

/* Held back: a taker, while descriptors are short. */
static bool must_hold(enum fds_use use)
{
	return use == FDS_TAKES && fds_short();
}

uint32_t cp_policy_level(struct cp_runq *q, struct cp_thread *t)
{
	if (t->prio)
		return CP_LEVEL_PRIO99 + 99u - t->prio;
	struct cp_loc_node *n = cp_sched_2d ? predicting(t) : NULL;
	if (!n)
		return CP_LEVEL_RING;
	enum fds_use use = fds_use(n);
	if (must_hold(use)) {
		worker_of(q)->st.held++;
		return CP_LEVEL_HELD;
	}
	if (use == FDS_GIVES && fds_short())
		return CP_LEVEL_FAVOURED;
	if (__atomic_load_n(&n->next_ns, __ATOMIC_RELAXED) >= CP_LONG_RUN_NS &&
	    cp_runq_len(q) != 0) {
		worker_of(q)->st.deferred++;
		return CP_LEVEL_DEFERRED;
	}
	return CP_LEVEL_RING;
}

bool cp_policy_holds(struct cp_runq *q, struct cp_thread *t)
{
	struct cp_loc_node *n = t->prio ? NULL : predicting(t);
	if (!n || !must_hold(fds_use(n)))
		return false;
	worker_of(q)->st.held++;
	return true;
}

bool cp_policy_admits(struct cp_thread *t)
{
	struct cp_loc_node *n = predicting(t);
	return !n || !must_hold(fds_use(n));
}

void cp_fds_changed(struct cp_thread *t, int delta)
{
	if (t)
		t->fds_net += delta;
	if (cp_unlikely(cp_sched_2d)) {
		__atomic_add_fetch(&fds_since, delta, __ATOMIC_RELAXED);
		tight_update();
	}
}

void cp_fds_exhausted(void)
{
	int64_t limit = __atomic_load_n(&fds_limit, __ATOMIC_RELAXED);
	if (cp_sched_2d && limit) {
		__atomic_store_n(&fds_counted, limit - __atomic_load_n(&fds_since, __ATOMIC_RELAXED),
		                 __ATOMIC_RELAXED);
		tight_update();
	}
}

/* Descriptors open now, by the kernel's count; -1 if it cannot tell. */
static int64_t count_open_fds(void)
{
	int dfd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/fd",
	                       O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	int64_t n = 0;
	char buf[4096] __attribute__((aligned(8)));
	for (;;) {
		long got = syscall(SYS_getdents64, dfd, buf, sizeof buf);
		if (got <= 0)
			break;
		for (long at = 0; at < got;) {
			const struct dirent64 *d = (const void *)(buf + at);
			if (d->d_name[0] != '.')
				n++;
			at += d->d_reclen;
		}
	}
	syscall(SYS_close, dfd);
	return n - 1; /* not the one that read them */
}

static void read_limit(void)
{
	struct rlimit rl;
	int64_t limit = 0;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		limit = (int64_t)rl.rlim_cur;
	__atomic_store_n(&fds_limit, limit, __ATOMIC_RELAXED);
}

static void recount(void)
{
	/* the opens and closes made while the kernel counted may or may not
	 * be in its count: a blur of a few, corrected at the next recount */
	int64_t before = __atomic_load_n(&fds_since, __ATOMIC_RELAXED);
	int64_t n = count_open_fds();
	if (n >= 0)
		__atomic_store_n(&fds_counted, n - before, __ATOMIC_RELAXED);
}

void cp_policy_monitor_look(uint64_t now)
{
	if (!cp_sched_2d || now - last_recount < RECOUNT_NS)
		return;
	last_recount = now;
	read_limit(); /* the program may raise its own */
	int64_t limit = __atomic_load_n(&fds_limit, __ATOMIC_RELAXED);
	if (limit && fds_open() >= limit / 2)
		recount();
	tight_update();
}

void cp_policy_configure(void)
{
	read_limit();
	recount();
	tight_update();
	cp_runq_levels_start();
}

void cp_thread_set_priority(struct cp_thread *t, int prio)
{
	cp_assert(prio >= 0 && prio <= 99);
	if (prio)
		cp_runq_levels_start();
	__atomic_store_n(&t->prio, (uint8_t)prio, __ATOMIC_RELAXED);
}
