/* policy.c: which level of its worker's run queue (runq.h) a thread that
 * becomes runnable waits on: real-time priorities first, then, with
 * CAPRICE_SCHED=2d, what the blocking graph (location.c) predicts about
 * the run it is about to start from where it blocked.
 *
 * - A thread with a priority (pthread_setschedparam with SCHED_FIFO or
 *   SCHED_RR and a priority of 1..99) waits on its priority's level, so it
 *   runs before every thread of lower priority queued on its worker.
 * - Resource-aware admission (Capriccio's resource-aware scheduling), for
 *   two resources.
 *   - Descriptors: each blocking point learns how many descriptors a
 *     thread that parks there opens minus closes until it ends (rest_fds,
 *     location.c).  Short: fewer than a reserve (1/8 of RLIMIT_NOFILE)
 *     left.  A thread whose point predicts it takes more (an accept loop)
 *     is a taker; one predicted to give some back (a connection on its
 *     way to its close) a giver.
 *   - Memory: each blocking point learns how many bytes a thread that
 *     parks there takes from malloc minus gives back on its next run
 *     (next_kib).  Short: the bytes the program holds from malloc within
 *     a reserve (1/8) of the budget, CAPRICE_MEM_LIMIT or the cgroup's
 *     memory.high, whichever is lower.  A run that takes 64 KiB or more
 *     is a taker (a request about to allocate its buffers), one that gives
 *     back as much a giver.
 *   While a resource is short, its takers are held back, at their wakeup
 *   and again when picked, and its givers go first; while some are held,
 *   a taker of a resource that is near short joins their line, so takers
 *   go in the order they came.  Held threads go once the resource
 *   recovers, oldest first, one per pick and before the ring, so that each
 *   sees the count the last one left.  While it does not recover, one
 *   goes every CP_HELD_MAX_NS (runq.h) whatever the count, and meets the
 *   EMFILE or the budget it would have met without the policy.  A thread-per-connection server
 *   thus leaves new connections in the kernel's listen backlog, and new
 *   requests in their sockets, instead of taking them into a process that
 *   has nothing left to serve them with.
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
 * The byte count is what glibc's allocator held at start-up (mallinfo2)
 * plus what libthread's malloc family (malloc.c) saw taken and given
 * since: bytes held, not resident memory, which glibc does not give back
 * to the kernel when a thread frees (it keeps it for the next malloc).
 * Each thread counts its own bytes and, when there is a budget, posts
 * them to the process's count in steps of MEM_POST_BYTES, so that two workers' mallocs do not share a
 * cache line; the count is off by less than a step per thread. */
#include "worker.h"

#include <dirent.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"
#include "env.h"

#define CP_LONG_RUN_NS   250000ull  /* a "long" predicted run */
#define WARM_RUNS        4          /* runs seen from a node before it predicts */
#define RECOUNT_NS       50000000ull
#define MEM_POST_BYTES   (64 << 10) /* a thread's bytes not yet posted, at most */
#define MEM_TAKES_KIB    64         /* a run that takes (gives) this much is a
                                       taker (giver) */

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

/* What a thread that parked at n does with a resource. */
enum use {
	USE_NONE,
	USE_TAKES,  /* an accept loop; a request about to allocate its buffers */
	USE_GIVES,  /* a connection on its way to its close; a request done */
};

/* with descriptors, until it ends */
static enum use fds_use(const struct cp_loc_node *n)
{
	int32_t rest = __atomic_load_n(&n->rest_fds, __ATOMIC_RELAXED);
	return rest > CP_FDS_ONE / 2 ? USE_TAKES : rest < -CP_FDS_ONE / 2 ? USE_GIVES : USE_NONE;
}

/* with memory, on its next run */
static enum use mem_use(const struct cp_loc_node *n)
{
	int32_t kib = __atomic_load_n(&n->next_kib, __ATOMIC_RELAXED);
	return kib >= MEM_TAKES_KIB ? USE_TAKES : kib <= -MEM_TAKES_KIB ? USE_GIVES : USE_NONE;
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

/* ---- memory ---- */

bool cp_mem_counting CP_HIDDEN;
static int64_t mem_held;        /* bytes held from malloc, by the count */
static int64_t mem_limit;       /* the budget (0: none) */
static bool mem_tight;          /* fewer than twice the reserve left */

static int64_t mem_left(void)
{
	int64_t limit = __atomic_load_n(&mem_limit, __ATOMIC_RELAXED);
	return limit ? limit - __atomic_load_n(&mem_held, __ATOMIC_RELAXED) : INT64_MAX;
}

static int64_t mem_reserve(void)
{
	return __atomic_load_n(&mem_limit, __ATOMIC_RELAXED) / 8;
}

static void mem_tight_update(void)
{
	bool tight = mem_left() < 2 * mem_reserve();
	if (__atomic_load_n(&mem_tight, __ATOMIC_RELAXED) != tight)
		__atomic_store_n(&mem_tight, tight, __ATOMIC_RELAXED);
}

static bool mem_short(void)
{
	return __atomic_load_n(&mem_tight, __ATOMIC_RELAXED) && mem_left() < mem_reserve();
}

static void mem_post(int64_t bytes)
{
	__atomic_add_fetch(&mem_held, bytes, __ATOMIC_RELAXED);
	mem_tight_update();
}

void cp_mem_changed(int64_t delta)
{
	struct cp_thread *t = cp_self();
	if (!t) { /* a kernel thread of the program's, or the runtime's own */
		if (__atomic_load_n(&mem_limit, __ATOMIC_RELAXED))
			mem_post(delta);
		return;
	}
	int64_t run = t->mem_run + delta;
	t->mem_run = run > INT32_MAX ? INT32_MAX : run < -INT32_MAX ? -INT32_MAX : (int32_t)run;
	if (!__atomic_load_n(&mem_limit, __ATOMIC_RELAXED))
		return; /* no budget: the graph's delta is all there is to count */
	int64_t unposted = t->mem_unposted + delta;
	if (unposted > MEM_POST_BYTES || unposted < -MEM_POST_BYTES) {
		mem_post(unposted);
		unposted = 0;
	}
	t->mem_unposted = (int32_t)unposted;
}

void cp_mem_thread_done(struct cp_thread *t)
{
	if (t->mem_unposted) {
		mem_post(t->mem_unposted);
		t->mem_unposted = 0;
	}
}

/* cgroup v2's memory.high for this process's group, 0 if none is set or
 * it cannot be read (cgroup v1, or no such file). */
static int64_t cgroup_memory_high(void)
{
	char line[4096], path[4200];
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return 0;
	int64_t high = 0;
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, "0::", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = 0;
		static const char *const mounts[] = { "/sys/fs/cgroup", "/sys/fs/cgroup/unified" };
		for (size_t i = 0; i < sizeof mounts / sizeof mounts[0] && !high; i++) {
			snprintf(path, sizeof path, "%s%s/memory.high", mounts[i],
			         strcmp(line + 3, "/") == 0 ? "" : line + 3);
			FILE *h = fopen(path, "re");
			if (!h)
				continue;
			char v[64];
			if (fgets(v, sizeof v, h) && v[0] >= '0' && v[0] <= '9')
				high = strtoll(v, NULL, 10);
			fclose(h);
		}
	}
	fclose(f);
	return high;
}

static void mem_configure(void)
{
	int64_t limit = (int64_t)cp_env_size("CAPRICE_MEM_LIMIT", 1 << 20, (size_t)1 << 50, 0);
	int64_t high = cgroup_memory_high();
	if (high && (!limit || high < limit))
		limit = high;
	struct mallinfo2 mi = mallinfo2();
	__atomic_store_n(&mem_held, (int64_t)(mi.uordblks + mi.hblkhd), __ATOMIC_RELAXED);
	__atomic_store_n(&mem_limit, limit, __ATOMIC_RELAXED);
	mem_tight_update();
	__atomic_store_n(&cp_mem_counting, true, __ATOMIC_RELEASE);
}

/* Whether n's thread does `use` with descriptors while `fds` holds, or
 * with memory while `mem` holds. */
static bool uses_while(const struct cp_loc_node *n, enum use use, bool fds, bool mem)
{
	return (fds && fds_use(n) == use) || (mem && mem_use(n) == use);
}

/* Held back: a taker of a resource that is short (the short tests read
 * the tight flags first: each is one read of a line that rarely
 * changes); and, while some are held on q, a taker of a resource that is
 * tight (within twice its reserve) joins their line, so that takers go
 * in the order they came instead of newcomers taking what the held ones
 * wait for.  Counted in the worker's statistics. */
static bool holds_back(struct cp_runq *q, const struct cp_loc_node *n)
{
	if (!uses_while(n, USE_TAKES, fds_short(), mem_short()) &&
	    !(cp_runq_held(q) && uses_while(n, USE_TAKES,
	                                    __atomic_load_n(&fds_tight, __ATOMIC_RELAXED),
	                                    __atomic_load_n(&mem_tight, __ATOMIC_RELAXED))))
		return false;
	worker_of(q)->st.held++;
	return true;
}

uint32_t cp_policy_level(struct cp_runq *q, struct cp_thread *t)
{
	if (t->prio)
		return CP_LEVEL_PRIO99 + 99u - t->prio;
	struct cp_loc_node *n = cp_sched_2d ? predicting(t) : NULL;
	if (!n)
		return CP_LEVEL_RING;
	if (holds_back(q, n))
		return CP_LEVEL_HELD;
	if (uses_while(n, USE_GIVES, fds_short(), mem_short())) /* a giver of a short one */
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
	return n && holds_back(q, n);
}

bool cp_policy_admits(struct cp_thread *t)
{
	struct cp_loc_node *n = predicting(t);
	return !n || !uses_while(n, USE_TAKES, fds_short(), mem_short());
}

void cp_fds_changed(struct cp_thread *t, int delta)
{
	if (t)
		t->fds_run += delta;
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

/* Descriptors open now below limit (0: no limit), by the kernel's count;
 * -1 if it cannot tell.  Only those count against RLIMIT_NOFILE: a new
 * descriptor needs a free number below it, and the runtime's own sit
 * above it when the program lowered it after start-up (rtfd.c). */
static int64_t count_open_fds(int64_t limit)
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
			if (d->d_name[0] != '.' && (!limit || atoll(d->d_name) < limit))
				n++;
			at += d->d_reclen;
		}
	}
	syscall(SYS_close, dfd);
	return n - 1; /* not the one that read them */
}

/* Returns whether the limit changed since the last read. */
static bool read_limit(void)
{
	struct rlimit rl;
	int64_t limit = 0;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		limit = (int64_t)rl.rlim_cur;
	return __atomic_exchange_n(&fds_limit, limit, __ATOMIC_RELAXED) != limit;
}

static void recount(void)
{
	/* the opens and closes made while the kernel counted may or may not
	 * be in its count: a blur of a few, corrected at the next recount */
	int64_t before = __atomic_load_n(&fds_since, __ATOMIC_RELAXED);
	int64_t n = count_open_fds(__atomic_load_n(&fds_limit, __ATOMIC_RELAXED));
	if (n >= 0)
		__atomic_store_n(&fds_counted, n - before, __ATOMIC_RELAXED);
}

void cp_policy_monitor_look(uint64_t now)
{
	if (!cp_sched_2d || now - last_recount < RECOUNT_NS)
		return;
	last_recount = now;
	/* the program may change its own; lowered, it leaves the runtime's
	 * descriptors above it, where they no longer count */
	bool changed = read_limit();
	int64_t limit = __atomic_load_n(&fds_limit, __ATOMIC_RELAXED);
	if (limit && (changed || fds_open() >= limit / 2))
		recount();
	tight_update();
	mem_tight_update();
}

void cp_policy_configure(void)
{
	read_limit();
	recount();
	tight_update();
	mem_configure();
	cp_runq_levels_start();
}

void cp_thread_set_priority(struct cp_thread *t, int prio)
{
	cp_assert(prio >= 0 && prio <= 99);
	if (prio)
		cp_runq_levels_start();
	__atomic_store_n(&t->prio, (uint8_t)prio, __ATOMIC_RELAXED);
	/* waiting on a priority level of the caller's own worker (whose
	 * level lists only their owner touches, and the caller runs there):
	 * moved to its new one now, so that a lent priority (mutex.c's
	 * PTHREAD_PRIO_INHERIT) acts before the holder's next switch */
	struct cp_worker *self = cp_worker_self();
	if (self && t != self->current && __atomic_load_n(&t->home, __ATOMIC_RELAXED) == self &&
	    !self->in_sched)
		cp_runq_relevel(&self->rq, t);
}
