/* spare.c: spare workers, which run the threads of a worker that is
 * blocked in the kernel, or that spins for one of them.
 *
 * A user thread that blocks in a call the runtime cannot see (a system
 * call made with the `syscall` instruction, a library's own wait) holds
 * its whole worker.  The monitor's poke (signals.c) still submits and
 * reaps that worker's ring and hands its runnable threads to a worker
 * that sleeps; but when every other worker is busy there is none, and the
 * blocked worker's core sits idle while its threads wait.  Go answers the
 * same problem by handing the processor of a thread in a system call to
 * another kernel thread (handoffp).  Here a spare worker, made at start-up
 * with its own ring and normally asleep, does that:
 *
 *  - the monitor sees a worker silent for two time slices while threads
 *    wait on it, and its kernel thread blocked in the kernel (state S or D
 *    in /proc, not R: a worker that computes keeps its core, and a spare
 *    would only take turns with it) at two pokes a slice apart, having run
 *    almost nothing in between (a computing thread also shows D for a
 *    moment, waiting for a page or the mmap lock, and on a loaded machine
 *    that moment can be long), and assigns it a free spare (`covering`);
 *    also a worker that has computed for ten slices while threads wait
 *    on it: a thread spinning until another thread does something (a
 *    spin-wait with no call into the library, an application's spinlock
 *    whose holder waits behind it) would otherwise spin for good, so the
 *    spare takes turns with it on the core (redis-server's io-threads and
 *    haproxy's threads both spin so);
 *  - the poke's hand-off then gives the blocked worker's movable threads,
 *    its inbox included, to that spare, which runs them like any worker;
 *  - once the blocked worker switches again, the monitor retires the
 *    spare, which gives back what is runnable on it at its next look
 *    around, and its threads that wait for I/O on its ring at their next
 *    switch there.  A spare never steals, and no worker steals from it.
 *
 * So a spare costs a kernel thread and a ring, and CPU time only while a
 * worker is blocked.  CAPRICE_SPARE_WORKERS sets how many (default 1;
 * 0 turns them off). */
#include "worker.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"

/* The files the monitor reads are opened once, when the worker starts,
 * like its ring: opened at each look, they would take the lowest free
 * descriptor for a moment, and a program that just closed 0 to open
 * something there would get another number. */
void cp_spare_watch_open(struct cp_worker *w)
{
	char path[64];
	w->stat_fd = w->schedstat_fd = -1;
	if (cp_nall <= cp_nworkers)
		return; /* no spares: nobody looks */
	snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)w->tid);
	w->stat_fd = cp_rtfd_adopt((int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC));
	snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", (int)w->tid);
	w->schedstat_fd =
		cp_rtfd_adopt((int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC));
}

/* Only the monitor calls this.  Its buffer is static, not on the stack:
 * the monitor's kernel thread is made without the sanitizer's knowledge,
 * and ASan, describing a stack address on it inside an interceptor, fails
 * its own check. */
__attribute__((no_sanitize_address)) static bool read_task_file(int fd, char *buf, size_t size)
{
	if (fd < 0)
		return false;
	long n = syscall(SYS_pread64, fd, buf, size - 1, 0);
	if (n <= 0)
		return false;
	buf[n] = 0;
	return true;
}

__attribute__((no_sanitize_address)) bool cp_spare_blocked_in_kernel(const struct cp_worker *w,
                                                                     uint64_t *ran_ns)
{
	static char buf[256];
	*ran_ns = 0;
	/* "RUN_NS WAIT_NS SLICES": CPU time in ns, whatever the tick */
	if (read_task_file(w->schedstat_fd, buf, sizeof buf))
		for (const char *p = buf; *p >= '0' && *p <= '9'; p++)
			*ran_ns = *ran_ns * 10 + (uint64_t)(*p - '0');
	if (!read_task_file(w->stat_fd, buf, sizeof buf))
		return false;
	/* "tid (comm) S ...": comm may hold spaces and parentheses */
	const char *p = strrchr(buf, ')');
	return p && p[1] == ' ' && (p[2] == 'S' || p[2] == 'D');
}

struct cp_worker *cp_spare_cover(struct cp_worker *w)
{
	for (int i = cp_nworkers; i < cp_nall; i++) {
		struct cp_worker *s = cp_workers[i];
		struct cp_worker *none = NULL;
		if (__atomic_load_n(&s->covering, __ATOMIC_ACQUIRE) == w)
			return s;
		if (__atomic_compare_exchange_n(&s->covering, &none, w, false, __ATOMIC_ACQ_REL,
		                                __ATOMIC_RELAXED)) {
			s->covered_last = w;
			__atomic_add_fetch(&s->st.covers, 1, __ATOMIC_RELAXED);
			return s;
		}
	}
	return NULL;
}

void cp_spare_release(struct cp_worker *w)
{
	for (int i = cp_nworkers; i < cp_nall; i++) {
		struct cp_worker *s = cp_workers[i];
		struct cp_worker *mine = w;
		if (__atomic_compare_exchange_n(&s->covering, &mine, NULL, false, __ATOMIC_ACQ_REL,
		                                __ATOMIC_RELAXED))
			cp_worker_kick(s); /* to give back what it holds */
	}
}

struct cp_worker *cp_spare_of(const struct cp_worker *w)
{
	for (int i = cp_nworkers; i < cp_nall; i++)
		if (__atomic_load_n(&cp_workers[i]->covering, __ATOMIC_ACQUIRE) == w)
			return cp_workers[i];
	return NULL;
}

void cp_spare_look(struct cp_worker *s)
{
	if (__atomic_load_n(&s->covering, __ATOMIC_ACQUIRE))
		return;
	if (cp_runq_len(&s->rq) || __atomic_load_n(&s->inbox, __ATOMIC_RELAXED)) {
		struct cp_worker *to = s->covered_last ? s->covered_last : cp_workers[0];
		cp_steal_give(s, to, CP_DONATE_ALL);
	}
}
