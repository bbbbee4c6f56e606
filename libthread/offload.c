/* offload.c: a pool of helper kernel threads for calls that must block in
 * the kernel (see offload.h).
 *
 * Helpers are made on demand, up to CAPRICE_HELPERS (default 32), and stay
 * for the life of the process, asleep on a futex when idle.  A job lives
 * on the parked caller's stack; the helper wakes the caller through a wait
 * queue whose lock the caller holds until it is queued, so a job that ends
 * at once cannot wake it too early. */
#include "offload.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "debug.h"
#include "env.h"
#include "kthread.h"
#include "lt.h"

struct job {
	struct job *next;
	const char *what;
	long (*fn)(void *);
	void *arg;
	long ret;
	int err;
	bool done;
	cp_spinlock lock;       /* guards done and waitq */
	struct cp_waitq waitq;
};

static struct {
	cp_spinlock lock;       /* guards everything below */
	struct job *head, *tail;
	unsigned helpers;       /* made so far */
	unsigned idle;          /* asleep on futex */
	unsigned max;
	uint32_t futex;         /* bumped to wake an idle helper */
	unsigned long long calls;
} pool = { .lock = CP_SPINLOCK_INIT };

static void futex_wait(uint32_t *addr, uint32_t val)
{
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(uint32_t *addr)
{
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void *helper_main(void *unused)
{
	(void)unused;
	/* born with every signal blocked; a job runs under the program's
	 * mask, which the processes it starts (system, popen) inherit */
	uint64_t mask = ~0ull;
	for (;;) {
		cp_spin_lock(&pool.lock);
		while (!pool.head) {
			uint32_t seen = pool.futex;
			pool.idle++;
			cp_spin_unlock(&pool.lock);
			futex_wait(&pool.futex, seen);
			cp_spin_lock(&pool.lock);
			pool.idle--;
		}
		struct job *j = pool.head;
		pool.head = j->next;
		if (!pool.head)
			pool.tail = NULL;
		cp_spin_unlock(&pool.lock);

		uint64_t want = cp_program_sigmask();
		if (want != mask) {
			syscall(SYS_rt_sigprocmask, SIG_SETMASK, &want, NULL, sizeof want);
			mask = want;
		}
		errno = 0;
		long ret = j->fn(j->arg);
		int err = errno;

		cp_spin_lock(&j->lock);
		j->ret = ret;
		j->err = err;
		__atomic_store_n(&j->done, true, __ATOMIC_RELEASE);
		cp_wake_one(&j->waitq);
		cp_spin_unlock(&j->lock); /* runs the deferred kick, if any */
	}
	return NULL;
}

static unsigned helper_cap(void)
{
	return (unsigned)cp_env_long("CAPRICE_HELPERS", 1, 1024, 32);
}

/* With pool.lock: takes j back off the queue. */
static void unqueue(struct job *j)
{
	struct job *prev = NULL;
	for (struct job *q = pool.head; q; prev = q, q = q->next) {
		if (q != j)
			continue;
		if (prev)
			prev->next = j->next;
		else
			pool.head = j->next;
		if (pool.tail == j)
			pool.tail = prev;
		return;
	}
}

/* Queues j; makes a helper when none is idle and the cap allows.  False
 * when j could not be queued: no helper exists and none can be made. */
static bool submit(struct job *j)
{
	bool spawn = false;
	cp_spin_lock(&pool.lock);
	if (!pool.max)
		pool.max = helper_cap();
	j->next = NULL;
	if (pool.tail)
		pool.tail->next = j;
	else
		pool.head = j;
	pool.tail = j;
	pool.calls++;
	if (pool.idle > 0) {
		pool.futex++;
	} else if (pool.helpers < pool.max) {
		pool.helpers++;
		spawn = true;
	}
	cp_spin_unlock(&pool.lock);
	if (!spawn) {
		futex_wake(&pool.futex);
		return true;
	}
	int e = cp_kthread_spawn(helper_main, NULL);
	if (e) {
		cp_spin_lock(&pool.lock);
		pool.helpers--;
		bool none = pool.helpers == 0;
		if (none)
			unqueue(j);
		cp_spin_unlock(&pool.lock);
		/* with no helper at all the job would wait forever: the caller
		 * runs it itself, blocking its worker (the monitor then hands
		 * the worker's other threads on) */
		if (none) {
			cp_warn("%s: cannot start a helper kernel thread (%s); the call blocks its "
			        "worker", j->what, strerror(e));
			return false;
		}
		cp_warn("%s: cannot start another helper kernel thread (%s); the call waits "
		        "for a busy one", j->what, strerror(e));
	}
	return true;
}

long lt_offload(const char *what, long (*fn)(void *), void *arg)
{
	struct lt_thread *self = lt_self();
	if (!self)
		return fn(arg);
	if (cp_unlikely(lt_debug_level))
		lt_debug_say(NULL, what, "runs on a helper kernel thread (it blocks inside the C "
		             "library or the kernel where no io_uring operation can stand in)");
	struct job j = { .what = what, .fn = fn, .arg = arg, .lock = CP_SPINLOCK_INIT,
	                 .waitq = CP_WAITQ_INIT };
	struct cp_waiter w = { 0 };
	cp_spin_lock(&j.lock);
	if (!submit(&j)) {
		cp_spin_unlock(&j.lock);
		return fn(arg);
	}
	/* the helper takes j.lock to report, so it waits until we are queued */
	while (!__atomic_load_n(&j.done, __ATOMIC_ACQUIRE)) {
		cp_wait(&j.waitq, &j.lock, &w, CP_NO_DEADLINE, false);
		cp_spin_lock(&j.lock);
	}
	cp_spin_unlock(&j.lock);
	errno = j.err;
	return j.ret;
}

struct syscall_args {
	long nr, a, b, c, d, e;
};

static long run_syscall(void *p)
{
	struct syscall_args *s = p;
	return syscall(s->nr, s->a, s->b, s->c, s->d, s->e);
}

long lt_offload_syscall(const char *what, long nr, long a, long b, long c, long d, long e)
{
	struct syscall_args s = { nr, a, b, c, d, e };
	return lt_offload(what, run_syscall, &s);
}

void lt_offload_stats(unsigned long long *calls, unsigned *helpers)
{
	cp_spin_lock(&pool.lock);
	*calls = pool.calls;
	*helpers = pool.helpers;
	cp_spin_unlock(&pool.lock);
}

void lt_offload_after_fork(void)
{
	/* only the forking thread survives: no helper, and any job queued
	 * belonged to a thread that is gone */
	pool.lock = (cp_spinlock)CP_SPINLOCK_INIT;
	pool.head = pool.tail = NULL;
	pool.helpers = pool.idle = 0;
	pool.futex = 0;
}
