/* wait.c: wait queues, timed waits and interrupts (see scheduler.h).
 *
 * Every way out of a wait (woken, timed out, interrupted) is decided by
 * one compare-and-swap on the waiter's state, so exactly one party wins
 * and a wakeup is never lost or doubled: a waker whose CAS fails moves on
 * to the next waiter.  The loser of the race must not touch the waiter
 * afterwards, which the waiting thread ensures by taking the lock the
 * winner held (queue lock, timer heap lock, or wait_lock) before its
 * frame, and so the waiter, goes away. */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "compiler.h"
#include "io.h"
#include "worker.h"

static inline bool claim(struct cp_waiter *w, uint32_t outcome)
{
	uint32_t expect = CP_W_WAITING;
	return __atomic_compare_exchange_n(&w->state, &expect, outcome, false,
	                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline unsigned waiter_prio(const struct cp_waiter *w)
{
	return w->thread ? w->thread->prio : 0;
}

/* Waiters are in priority order, FIFO within a priority: the default
 * priority 0 appends at the tail, O(1); a real-time one walks back past
 * the lower ones. */
static void q_append(struct cp_waitq *q, struct cp_waiter *w)
{
	struct cp_waiter *h = q->head;
	if (!h) {
		w->next = w->prev = w;
		q->head = w;
		return;
	}
	unsigned prio = waiter_prio(w);
	struct cp_waiter *after = h->prev; /* the tail */
	bool first = false;
	if (cp_unlikely(prio != 0)) {
		while (waiter_prio(after) < prio && after != h)
			after = after->prev;
		if (waiter_prio(after) < prio) { /* above everyone: behind the
		                                    tail of the ring, as head */
			after = h->prev;
			first = true;
		}
	}
	w->prev = after;
	w->next = after->next;
	after->next->prev = w;
	after->next = w;
	if (first)
		q->head = w;
}

static void q_unlink(struct cp_waitq *q, struct cp_waiter *w)
{
	if (w->next == w) {
		q->head = NULL;
	} else {
		w->prev->next = w->next;
		w->next->prev = w->prev;
		if (q->head == w)
			q->head = w->next;
	}
	w->next = w->prev = NULL;
}

/* Where a woken user thread runs. */
enum resume_at {
	RESUME_HOME,     /* the worker it parked on */
	RESUME_HERE,     /* the waker's */
	RESUME_AFTER_ME, /* the waker's, once the finishing waker is gone */
};

/* Called with the queue's lock held, which the sleeper released only
 * after its switch: safe to run it on the waker's worker, which keeps a
 * 1:1 handoff on one worker.  A broadcast sends each home instead, or
 * every barrier or broadcast would gather all its threads on one. */
static void resume(struct cp_waiter *w, enum resume_at at)
{
	if (w->thread) {
		if (at == RESUME_HERE)
			cp_wake_here(w->thread);
		else if (at == RESUME_AFTER_ME)
			cp_wake_successor_thread(w->thread->home, w->thread);
		else
			cp_wake(w->thread);
	} else {
		__atomic_store_n(&w->futex, 1, __ATOMIC_RELEASE);
		syscall(SYS_futex, &w->futex, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	}
}

static void on_timeout(struct cp_timer *t)
{
	struct cp_waiter *w = cp_container_of(t, struct cp_waiter, timer);
	if (claim(w, CP_W_TIMEDOUT))
		cp_wake(w->thread);
}

static int outcome_errno(uint32_t state)
{
	switch (state) {
	case CP_W_WOKEN: return 0;
	case CP_W_TIMEDOUT: return ETIMEDOUT;
	default: return EINTR;
	}
}

/* A kernel thread that is not a worker cannot park: it sleeps on a futex. */
static int foreign_wait(struct cp_waitq *q, cp_spinlock *lk, struct cp_waiter *w,
                        uint64_t deadline)
{
	cp_spin_unlock(lk);
	while (__atomic_load_n(&w->state, __ATOMIC_ACQUIRE) == CP_W_WAITING) {
		struct timespec ts, *tsp = NULL;
		if (deadline != CP_NO_DEADLINE) {
			ts.tv_sec = (time_t)(deadline / 1000000000u);
			ts.tv_nsec = (long)(deadline % 1000000000u);
			tsp = &ts;
		}
		long r = syscall(SYS_futex, &w->futex, FUTEX_WAIT_BITSET_PRIVATE, 0, tsp, NULL,
		                 FUTEX_BITSET_MATCH_ANY);
		if (r < 0 && errno == ETIMEDOUT && claim(w, CP_W_TIMEDOUT))
			break;
	}
	cp_spin_lock(lk); /* the waker held lk while it touched w */
	if (w->next)
		q_unlink(q, w);
	cp_spin_unlock(lk);
	return outcome_errno(__atomic_load_n(&w->state, __ATOMIC_ACQUIRE));
}

int cp_wait(struct cp_waitq *q, cp_spinlock *lk, struct cp_waiter *w,
            uint64_t deadline, unsigned interrupt_by)
{
	return cp_wait_then(q, lk, w, deadline, interrupt_by, NULL, NULL);
}

int cp_wait_then(struct cp_waitq *q, cp_spinlock *lk, struct cp_waiter *w,
                 uint64_t deadline, unsigned interrupt_by, void (*enqueued)(void *), void *arg)
{
	struct cp_thread *t = cp_self();
	w->thread = t;
	w->state = CP_W_WAITING;
	w->contended = !t || deadline != CP_NO_DEADLINE || interrupt_by;
	w->interrupt_by = interrupt_by;
	w->futex = 0;
	w->timer.heap_idx = CP_TIMER_NONE;
	if (deadline != CP_NO_DEADLINE && deadline <= cp_now_ns()) {
		if (enqueued)
			enqueued(arg);
		cp_spin_unlock(lk);
		return ETIMEDOUT;
	}
	q_append(q, w);
	if (enqueued)
		enqueued(arg);
	if (!t)
		return foreign_wait(q, lk, w, deadline);

	if (interrupt_by) {
		w->lock = lk;
		if (cp_wait_publish(t, (void **)&t->waiting, w, interrupt_by) &&
		    claim(w, CP_W_INTERRUPTED)) {
			cp_wait_withdraw(t, (void **)&t->waiting);
			q_unlink(q, w);
			cp_spin_unlock(lk);
			return EINTR;
		}
	}
	if (deadline != CP_NO_DEADLINE) {
		w->timer.deadline = deadline;
		w->timer.fire = on_timeout;
		if (cp_timer_add(cp_worker_self(), &w->timer)) {
			q_unlink(q, w);
			cp_spin_unlock(lk);
			if (interrupt_by)
				cp_wait_withdraw(t, (void **)&t->waiting);
			return ENOMEM;
		}
	}

	cp_park(lk);

	uint32_t state = __atomic_load_n(&w->state, __ATOMIC_ACQUIRE);
	if (deadline != CP_NO_DEADLINE)
		cp_timer_cancel(&w->timer); /* waits out a firing timer */
	if (interrupt_by)
		cp_wait_withdraw(t, (void **)&t->waiting); /* waits out an interrupter */
	if (state != CP_W_WOKEN) {
		cp_spin_lock(lk);
		if (w->next)
			q_unlink(q, w);
		cp_spin_unlock(lk);
	}
	return outcome_errno(state);
}

static bool wake_waiter(struct cp_waitq *q, struct cp_waiter *w, enum resume_at at)
{
	q_unlink(q, w);
	if (!w->contended)
		/* only wakers, who hold the queue's lock, decide this one */
		__atomic_store_n(&w->state, CP_W_WOKEN, __ATOMIC_RELEASE);
	else if (!claim(w, CP_W_WOKEN))
		return false;
	resume(w, at);
	return true;
}

bool cp_wake_waiter(struct cp_waitq *q, struct cp_waiter *w)
{
	return wake_waiter(q, w, RESUME_HERE);
}

bool cp_wake_one(struct cp_waitq *q)
{
	struct cp_waiter *w;
	while ((w = q->head) != NULL)
		if (cp_wake_waiter(q, w))
			return true;
	return false;
}

unsigned cp_wake_all(struct cp_waitq *q)
{
	unsigned n = 0;
	struct cp_waiter *w;
	while ((w = q->head) != NULL)
		n += wake_waiter(q, w, RESUME_HOME);
	return n;
}

bool cp_wake_successor(struct cp_waitq *q)
{
	struct cp_waiter *w = q->head;
	/* only one that parked on this worker (its home, which
	 * cp_wake_successor_thread runs it on): run here, one that parked
	 * elsewhere would return from its call on another worker, and its
	 * caller may keep errno's address across the call (a pthread_join
	 * then a failing recv read the other worker's errno) */
	return w && w->thread && w->thread->home == cp_worker_self() &&
	       wake_waiter(q, w, RESUME_AFTER_ME);
}

int cp_sleep_until(uint64_t deadline, unsigned interrupt_by)
{
	cp_spinlock lk = CP_SPINLOCK_INIT;
	struct cp_waitq q = CP_WAITQ_INIT;
	struct cp_waiter w;
	cp_spin_lock(&lk);
	int r = cp_wait(&q, &lk, &w, deadline, interrupt_by);
	return r == ETIMEDOUT ? 0 : r;
}

/* Under t->wait_lock: claims t's wait if it accepts one of reasons, and
 * sets *lk to the queue lock to take before waking it (NULL: none to
 * wake, or an I/O wait, which its cancel ends).  True if t had such a
 * wait. */
static bool interrupt_locked(struct cp_thread *t, unsigned reasons, cp_spinlock **lk)
{
	struct cp_waiter *w = t->waiting;
	struct cp_io_op *op = t->io_waiting;
	bool waits = w && (w->interrupt_by & reasons);
	*lk = waits && claim(w, CP_W_INTERRUPTED) ? w->lock : NULL;
	if (op && (op->interrupt_by & reasons)) {
		waits = true;
		op->signalled = (uint8_t)(reasons & op->interrupt_by & ~CP_INTR_CANCEL);
		cp_io_cancel(op);
	}
	return waits;
}

static void wake_interrupted(struct cp_thread *t, cp_spinlock *lk, bool via_inbox)
{
	/* t publishes its waiter before it parks, so it may still be
	 * running: woken now, an idle worker could take it from the inbox
	 * and resume its context before it is saved (a sanitized run of keys
	 * once_cancelled_runs_again jumped into a stale frame 1 time in 15).
	 * It holds the queue's lock until it has switched out, and nobody
	 * else can wake it now that the claim is ours, so its waiter (and the
	 * lock) stay until we do. */
	cp_spin_lock(lk);
	cp_spin_unlock(lk);
	if (via_inbox) {
		/* from a signal handler, which may have interrupted its own
		 * worker's scheduler: never a push on that run queue */
		t->next = NULL;
		cp_inbox_push(t->home, t, t);
	} else {
		cp_wake(t);
	}
}

static bool interrupt_wait(struct cp_thread *t, unsigned reasons, bool via_inbox)
{
	/* before the look: a wait t registers after it ends at once */
	__atomic_fetch_or(&t->interrupted, reasons, __ATOMIC_ACQ_REL);
	cp_spinlock *lk;
	cp_spin_lock(&t->wait_lock);
	cp_fence_rare(); /* t publishes its wait with no barrier (worker.h) */
	bool waits = interrupt_locked(t, reasons, &lk);
	cp_spin_unlock(&t->wait_lock);
	if (lk)
		wake_interrupted(t, lk, via_inbox);
	return waits;
}

void cp_interrupt(struct cp_thread *t)
{
	interrupt_wait(t, CP_INTR_CANCEL, false);
}

bool cp_interrupt_wait(struct cp_thread *t, unsigned reasons)
{
	return interrupt_wait(t, reasons, false);
}

bool cp_interrupt_wait_in_handler(struct cp_thread *t, unsigned reasons)
{
	return interrupt_wait(t, reasons, true);
}
