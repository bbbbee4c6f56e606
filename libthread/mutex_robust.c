/* mutex_robust.c: robust mutexes (pthread_mutexattr_setrobust), private
 * and process-shared, of every type.
 *
 * A robust mutex outlives its owner: when the thread holding it ends, or
 * the process holding it dies, the next locker gets EOWNERDEAD and the
 * mutex, which it then holds, until pthread_mutex_consistent says its
 * data is sound again; unlocked without that, it becomes unusable
 * (ENOTRECOVERABLE).
 *
 * The death of a whole process is the kernel's to report, through the
 * robust-futex protocol: the lock word holds the owner's thread id, and
 * the mutex sits on a list the kernel walks when the task whose list it is
 * exits, marking each word it still owns FUTEX_OWNER_DIED and waking a
 * waiter.  The kernel knows tasks, not user threads, and a user thread
 * moves between workers, so here every user thread locks with the
 * process's id (the first kernel thread's tid, which stays worker 0 for
 * the process's life) and every robust mutex the process holds is on one
 * list, registered by that kernel thread; the user thread that holds it is
 * named in __owner.  The list is changed under a spinlock, with
 * list_op_pending set across the change as the protocol asks, so a
 * process killed between taking a word and linking it is still seen.
 *
 * The death of one user thread is ours to report: a thread that ends
 * holding robust mutexes marks them as the kernel would (lt_robust_exit).
 *
 * The layout is glibc's (lock word, count, owner, kind, list node), so a
 * process on NPTL can share such a mutex: its threads lock with their own
 * tid, which is never our process id, and both sides wait on the word as
 * a shared futex, as glibc does for every robust mutex.  Priority
 * protocols are not applied to robust mutexes. */
#include <errno.h>
#include <linux/futex.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lt.h"
#include "mutex.h"
#include "timespec.h"

/* glibc's values for __owner once the owner died (pthreadP.h) */
#define OWNER_INCONSISTENT   0x7fffffff
#define OWNER_NOTRECOVERABLE 0x7ffffffe

static struct robust_list_head robust_head = {
	.list = { &robust_head.list },
	.futex_offset = (long)offsetof(pthread_mutex_t, __data.__lock) -
	                (long)offsetof(pthread_mutex_t, __data.__list.__next),
};
static cp_spinlock robust_lock = CP_SPINLOCK_INIT;

static inline struct __pthread_mutex_s *D(pthread_mutex_t *m) { return &m->__data; }

/* The list node of m, as the kernel sees it: its __list.__next; the
 * previous node is kept in __list.__prev. */
static inline struct robust_list *node_of(struct __pthread_mutex_s *d)
{
	return (struct robust_list *)&d->__list.__next;
}

static inline struct robust_list **prev_of(struct robust_list *n)
{
	return (struct robust_list **)((char *)n - offsetof(__pthread_list_t, __next) +
	                               offsetof(__pthread_list_t, __prev));
}

static inline struct __pthread_mutex_s *mutex_of(struct robust_list *n)
{
	return (struct __pthread_mutex_s *)((char *)n - offsetof(struct __pthread_mutex_s,
	                                                         __list.__next));
}

/* Under robust_lock */
static void link_held(struct __pthread_mutex_s *d)
{
	struct robust_list *n = node_of(d), *first = robust_head.list.next;
	n->next = first;
	*prev_of(n) = &robust_head.list;
	if (first != &robust_head.list)
		*prev_of(first) = n;
	robust_head.list.next = n;
}

/* Under robust_lock */
static void unlink_held(struct __pthread_mutex_s *d)
{
	struct robust_list *n = node_of(d), *prev = *prev_of(n), *next = n->next;
	prev->next = next;
	if (next != &robust_head.list)
		*prev_of(next) = prev;
}

/* This process's id, the tid every user thread locks with; refreshed in a
 * fork's child, whose id it is then */
static uint32_t process_tid;

void lt_robust_start(void)
{
	process_tid = (uint32_t)getpid();
	/* a child of fork holds nothing (its forking thread's mutexes carry
	 * the parent's id) */
	robust_head.list.next = &robust_head.list;
	robust_head.list_op_pending = NULL;
	robust_lock = (cp_spinlock)CP_SPINLOCK_INIT;
	long r = cp_syscall6(SYS_set_robust_list, (long)&robust_head, sizeof robust_head, 0, 0, 0, 0);
	if (r != 0)
		cp_die("set_robust_list refused (%s): robust mutexes could not report a dead "
		       "process", strerror(errno));
}

/* The holder's name in __owner: a user thread's id, or a kernel thread's
 * tid with bit 30 set; never 0 and never glibc's two marks above. */
static uint32_t self_name(struct lt_thread *t)
{
	if (t)
		return (uint32_t)((t->cp.id - 1) % 0x3fffffffu) + 1;
	return 0x40000000u | (uint32_t)syscall(SYS_gettid);
}

/* Who holds d if this process does: __owner, or, while the data is
 * inconsistent (__owner says so, where NPTL looks), __nusers, which NPTL
 * only counts in */
static inline uint32_t holder_name(struct __pthread_mutex_s *d)
{
	int owner = __atomic_load_n(&d->__owner, __ATOMIC_RELAXED);
	return owner == OWNER_INCONSISTENT ? d->__nusers : (uint32_t)owner;
}

uint64_t lt_process_owner(void)
{
	return (uint64_t)process_tid << 32 | self_name(lt_self());
}

static inline bool held_by(struct __pthread_mutex_s *d, uint32_t me)
{
	uint32_t w = __atomic_load_n((uint32_t *)&d->__lock, __ATOMIC_RELAXED);
	return (w & FUTEX_TID_MASK) == process_tid && holder_name(d) == me;
}

/* One try, under robust_lock: the word free (or left by a dead owner)
 * becomes ours and the mutex goes on the list, with list_op_pending
 * covering the moment between.  0, EOWNERDEAD, ENOTRECOVERABLE, or EBUSY
 * with the word as seen. */
static int try_take(struct __pthread_mutex_s *d, uint32_t me, bool waited, uint32_t *seen)
{
	uint32_t *word = (uint32_t *)&d->__lock;
	int e = EBUSY;
	cp_spin_lock(&robust_lock);
	robust_head.list_op_pending = node_of(d);
	uint32_t w = __atomic_load_n(word, __ATOMIC_RELAXED);
	/* after a wait others may wait too: keep them in the word */
	uint32_t want = process_tid | (waited ? FUTEX_WAITERS : (w & FUTEX_WAITERS));
	if ((w & FUTEX_TID_MASK) == 0 &&
	    __atomic_compare_exchange_n(word, &w, want, false, __ATOMIC_ACQUIRE,
	                                __ATOMIC_RELAXED)) {
		if (d->__owner == OWNER_NOTRECOVERABLE) {
			/* taken only to be refused: give it straight back */
			uint32_t old = __atomic_exchange_n(word, 0, __ATOMIC_RELEASE);
			robust_head.list_op_pending = NULL;
			cp_spin_unlock(&robust_lock);
			if (old & FUTEX_WAITERS)
				lt_futex_wake(word, 1, true);
			return ENOTRECOVERABLE;
		}
		link_held(d);
		e = (w & FUTEX_OWNER_DIED) ? EOWNERDEAD : 0;
		d->__nusers = me;
		d->__owner = e ? OWNER_INCONSISTENT : (int)me;
		d->__count = 1;
	}
	robust_head.list_op_pending = NULL;
	cp_spin_unlock(&robust_lock);
	*seen = w;
	return e;
}

static int acquire(struct __pthread_mutex_s *d, uint32_t me, uint64_t deadline, bool try)
{
	uint32_t *word = (uint32_t *)&d->__lock;
	struct timespec abs, *at = NULL;
	if (deadline != CP_NO_DEADLINE && !try) {
		abs = cp_ns_to_ts(deadline);
		at = &abs;
	}
	bool waited = false;
	for (;;) {
		uint32_t w;
		int e = try_take(d, me, waited, &w);
		if (e != EBUSY)
			return e;
		if (try)
			return EBUSY;
		if ((w & FUTEX_TID_MASK) == 0)
			continue; /* freed meanwhile */
		if (!(w & FUTEX_WAITERS) &&
		    !__atomic_compare_exchange_n(word, &w, w | FUTEX_WAITERS, false,
		                                 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
			continue;
		if (lt_futex_wait_until(word, w | FUTEX_WAITERS, true, CLOCK_MONOTONIC, at, false) < 0 &&
		    errno == ETIMEDOUT)
			return ETIMEDOUT;
		waited = true;
	}
}

int lt_robust_lock(pthread_mutex_t *m, uint64_t deadline, bool try)
{
	struct __pthread_mutex_s *d = D(m);
	struct lt_thread *t = lt_self();
	uint32_t me = self_name(t);
	int type = d->__kind & LT_MUTEX_TYPE_MASK;
	if (held_by(d, me)) {
		if (type == PTHREAD_MUTEX_RECURSIVE) {
			if (d->__count == UINT32_MAX)
				return EAGAIN;
			d->__count++;
			return 0;
		}
		if (type == PTHREAD_MUTEX_ERRORCHECK)
			return try ? EBUSY : EDEADLK;
		/* a normal one deadlocks, as on NPTL */
	}
	if (__atomic_load_n(&d->__owner, __ATOMIC_RELAXED) == OWNER_NOTRECOVERABLE)
		return ENOTRECOVERABLE;
	int e = acquire(d, me, deadline, try);
	if ((e == 0 || e == EOWNERDEAD) && t && t->robust_held != UINT8_MAX)
		t->robust_held++;
	return e;
}

bool lt_robust_held_by_caller(pthread_mutex_t *m)
{
	return held_by(D(m), self_name(lt_self()));
}

/* Lets go of the word; `dead` leaves FUTEX_OWNER_DIED in it for the next
 * locker (a thread that ended holding it). */
static void release(struct __pthread_mutex_s *d, bool dead)
{
	uint32_t *word = (uint32_t *)&d->__lock;
	cp_spin_lock(&robust_lock);
	robust_head.list_op_pending = node_of(d);
	unlink_held(d);
	uint32_t old;
	if (dead) {
		uint32_t w = __atomic_load_n(word, __ATOMIC_RELAXED);
		while (!__atomic_compare_exchange_n(word, &w, (w & FUTEX_WAITERS) | FUTEX_OWNER_DIED,
		                                    false, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
			;
		old = w;
	} else {
		if (d->__owner == OWNER_INCONSISTENT)
			d->__owner = OWNER_NOTRECOVERABLE; /* unlocked before consistent */
		else
			d->__owner = 0;
		old = __atomic_exchange_n(word, 0, __ATOMIC_RELEASE);
	}
	robust_head.list_op_pending = NULL;
	cp_spin_unlock(&robust_lock);
	if (old & FUTEX_WAITERS)
		lt_futex_wake(word, 1, true);
}

int lt_robust_unlock(pthread_mutex_t *m)
{
	struct __pthread_mutex_s *d = D(m);
	if (!lt_robust_held_by_caller(m))
		return EPERM;
	if ((d->__kind & LT_MUTEX_TYPE_MASK) == PTHREAD_MUTEX_RECURSIVE && d->__count > 1) {
		d->__count--;
		return 0;
	}
	d->__count = 0;
	release(d, false);
	struct lt_thread *t = lt_self();
	if (t && t->robust_held && t->robust_held != UINT8_MAX)
		t->robust_held--; /* at the cap, exit looks over them all */
	return 0;
}

int lt_robust_consistent(pthread_mutex_t *m)
{
	struct __pthread_mutex_s *d = D(m);
	uint32_t w = __atomic_load_n((uint32_t *)&d->__lock, __ATOMIC_RELAXED);
	if (d->__owner != OWNER_INCONSISTENT || (w & FUTEX_TID_MASK) != process_tid)
		return EINVAL;
	d->__owner = (int)self_name(lt_self());
	return 0;
}

/* A user thread ends holding robust mutexes: each is left to the next
 * locker with FUTEX_OWNER_DIED, as the kernel does for a dead task. */
void lt_robust_exit(struct lt_thread *t)
{
	uint32_t me = self_name(t);
	for (;;) {
		struct __pthread_mutex_s *mine = NULL;
		cp_spin_lock(&robust_lock);
		for (struct robust_list *n = robust_head.list.next; n != &robust_head.list;
		     n = n->next) {
			if (held_by(mutex_of(n), me)) {
				mine = mutex_of(n);
				break;
			}
		}
		cp_spin_unlock(&robust_lock);
		if (!mine)
			break;
		release(mine, true);
	}
}
