/* pshared_cases.c: process-shared mutexes (normal, recursive,
 * errorcheck, robust), condition variables, rwlocks and barriers across
 * fork, and robust mutexes within a process, from POSIX's
 * pthread_mutexattr_setpshared, pthread_mutex_lock,
 * pthread_mutexattr_setrobust, pthread_mutex_consistent,
 * pthread_cond_timedwait, pthread_rwlock_* and pthread_barrier_wait
 * pages (issue 10, item 2).  The objects live in MAP_SHARED memory made
 * before the fork; parent and child step through each case by sending
 * each other bytes over pipes, and the child leaves what it saw in the
 * shared memory for the parent to print. */
#include "pcase.h"

#define SYNC_MS 5000

static int init_mutex(pthread_mutex_t *m, int type, bool robust)
{
	pthread_mutexattr_t a;
	MUST0(pthread_mutexattr_init(&a));
	int r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (r == 0)
		r = pthread_mutexattr_settype(&a, type);
	if (r == 0 && robust)
		r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (r == 0)
		r = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return r;
}

/* ---- normal -------------------------------------------------------- */

struct counted {
	pthread_mutex_t m;
	long count;
	int trylock_held, trylock_free;
};

#define INCREMENTS 2000

static void *increment(void *arg)
{
	struct counted *c = arg;
	for (int i = 0; i < INCREMENTS; i++) {
		pthread_mutex_lock(&c->m);
		long v = c->count;
		__asm__ volatile("" ::: "memory");
		c->count = v + 1;
		pthread_mutex_unlock(&c->m);
	}
	return NULL;
}

static void counted_child(struct link *l, void *arg)
{
	struct counted *c = arg;
	pthread_t a = spawn(increment, c), b = spawn(increment, c);
	join(a);
	join(b);
	link_send(l, 'd');
	if (link_recv(l, SYNC_MS) != 'L')
		_exit(3);
	c->trylock_held = pthread_mutex_trylock(&c->m);
	link_send(l, 'T');
	if (link_recv(l, SYNC_MS) != 'U')
		_exit(3);
	c->trylock_free = pthread_mutex_trylock(&c->m);
	if (c->trylock_free == 0)
		pthread_mutex_unlock(&c->m);
}

/* A PTHREAD_PROCESS_SHARED mutex "may be operated upon by any thread
 * that has access to the memory where the mutex is allocated, even if
 * the mutex is allocated in memory that is shared by multiple
 * processes": two threads in each of two processes count under it and
 * no increment is lost; pthread_mutex_trylock "shall return immediately"
 * with EBUSY while the other process holds it. */
PCASE(pshared_mutex_normal_fork,
      "init=0 count=8000 child=exit0\n"
      "child_trylock_held=EBUSY child_trylock_free=0\n")
{
	struct counted *c = shared_mem(sizeof *c);
	int r = init_mutex(&c->m, PTHREAD_MUTEX_NORMAL, false);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	struct link l;
	link_init(&l);
	pid_t pid = fork_child(&l, counted_child, c);
	pthread_t a = spawn(increment, c), b = spawn(increment, c);
	join(a);
	join(b);
	bool ok = link_recv(&l, SYNC_MS) == 'd';
	if (ok) {
		pthread_mutex_lock(&c->m);
		link_send(&l, 'L');
		ok = link_recv(&l, SYNC_MS) == 'T';
		pthread_mutex_unlock(&c->m);
		link_send(&l, 'U');
	}
	const char *child = wait_child(pid, SYNC_MS);
	say("init=0 count=%ld child=%s", c->count, child);
	if (ok)
		say("child_trylock_held=%s child_trylock_free=%s", en(c->trylock_held),
		    en(c->trylock_free));
}

/* ---- recursive ----------------------------------------------------- */

struct owned {
	pthread_mutex_t m;
	int r[8];
};

static void recursive_child(struct link *l, void *arg)
{
	struct owned *o = arg;
	if (link_recv(l, SYNC_MS) != 'H')
		_exit(3);
	o->r[0] = pthread_mutex_trylock(&o->m);
	o->r[1] = pthread_mutex_unlock(&o->m);
	link_send(l, 'h');
	if (link_recv(l, SYNC_MS) != 'F')
		_exit(3);
	o->r[2] = pthread_mutex_lock(&o->m);
	o->r[3] = pthread_mutex_trylock(&o->m);
	o->r[4] = pthread_mutex_unlock(&o->m);
	o->r[5] = pthread_mutex_unlock(&o->m);
	o->r[6] = pthread_mutex_unlock(&o->m);
	link_send(l, 'f');
}

/* PTHREAD_MUTEX_RECURSIVE: relocking by the owner succeeds and "the
 * mutex shall become available when the count reaches zero"; unlocking
 * one "which another thread has locked" (or that is unlocked) "shall
 * return an error" (EPERM); the other process's trylock is EBUSY while
 * it is held, and it locks it (twice) once it is free. */
PCASE(pshared_mutex_recursive_fork,
      "init=0 lock=0 relock=0 relock=0\n"
      "child_trylock=EBUSY child_unlock=EPERM\n"
      "unlock=0 unlock=0 unlock=0 unlock_unowned=EPERM\n"
      "child_lock=0 child_relock=0 child_unlock=0 child_unlock=0 child_unlock_unowned=EPERM\n"
      "child=exit0\n")
{
	struct owned *o = shared_mem(sizeof *o);
	int r = init_mutex(&o->m, PTHREAD_MUTEX_RECURSIVE, false);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	struct link l;
	link_init(&l);
	pid_t pid = fork_child(&l, recursive_child, o);
	int a = pthread_mutex_lock(&o->m), b = pthread_mutex_lock(&o->m),
	    c = pthread_mutex_lock(&o->m);
	say("init=0 lock=%s relock=%s relock=%s", en(a), en(b), en(c));
	link_send(&l, 'H');
	if (link_recv(&l, SYNC_MS) == 'h')
		say("child_trylock=%s child_unlock=%s", en(o->r[0]), en(o->r[1]));
	a = pthread_mutex_unlock(&o->m);
	b = pthread_mutex_unlock(&o->m);
	c = pthread_mutex_unlock(&o->m);
	int d = pthread_mutex_unlock(&o->m);
	say("unlock=%s unlock=%s unlock=%s unlock_unowned=%s", en(a), en(b), en(c), en(d));
	link_send(&l, 'F');
	if (link_recv(&l, SYNC_MS) == 'f')
		say("child_lock=%s child_relock=%s child_unlock=%s child_unlock=%s "
		    "child_unlock_unowned=%s",
		    en(o->r[2]), en(o->r[3]), en(o->r[4]), en(o->r[5]), en(o->r[6]));
	say("child=%s", wait_child(pid, SYNC_MS));
}

/* ---- errorcheck ---------------------------------------------------- */

static void errorcheck_child(struct link *l, void *arg)
{
	struct owned *o = arg;
	if (link_recv(l, SYNC_MS) != 'H')
		_exit(3);
	o->r[0] = pthread_mutex_trylock(&o->m);
	o->r[1] = pthread_mutex_unlock(&o->m);
	link_send(l, 'h');
	if (link_recv(l, SYNC_MS) != 'F')
		_exit(3);
	o->r[2] = pthread_mutex_lock(&o->m);
	o->r[3] = pthread_mutex_lock(&o->m);
	o->r[4] = pthread_mutex_unlock(&o->m);
	link_send(l, 'f');
}

/* PTHREAD_MUTEX_ERRORCHECK: "If a thread attempts to relock a mutex that
 * it has already locked, an error shall be returned" (EDEADLK); "If a
 * thread attempts to unlock a mutex that it has not locked or a mutex
 * which is unlocked, an error shall be returned" (EPERM), from the other
 * process as from the owner's. */
PCASE(pshared_mutex_errorcheck_fork,
      "init=0 lock=0 relock=EDEADLK\n"
      "child_trylock=EBUSY child_unlock=EPERM\n"
      "unlock=0 unlock_unlocked=EPERM\n"
      "child_lock=0 child_relock=EDEADLK child_unlock=0\n"
      "child=exit0\n")
{
	struct owned *o = shared_mem(sizeof *o);
	int r = init_mutex(&o->m, PTHREAD_MUTEX_ERRORCHECK, false);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	struct link l;
	link_init(&l);
	pid_t pid = fork_child(&l, errorcheck_child, o);
	int a = pthread_mutex_lock(&o->m), b = pthread_mutex_lock(&o->m);
	say("init=0 lock=%s relock=%s", en(a), en(b));
	link_send(&l, 'H');
	if (link_recv(&l, SYNC_MS) == 'h')
		say("child_trylock=%s child_unlock=%s", en(o->r[0]), en(o->r[1]));
	a = pthread_mutex_unlock(&o->m);
	b = pthread_mutex_unlock(&o->m);
	say("unlock=%s unlock_unlocked=%s", en(a), en(b));
	link_send(&l, 'F');
	if (link_recv(&l, SYNC_MS) == 'f')
		say("child_lock=%s child_relock=%s child_unlock=%s", en(o->r[2]), en(o->r[3]),
		    en(o->r[4]));
	say("child=%s", wait_child(pid, SYNC_MS));
}

/* ---- condition variable ---------------------------------------------- */

struct pingpong {
	pthread_mutex_t m;
	pthread_cond_t c;
	int turn, handoffs, timeouts;
};

#define TURNS 10

/* Waits for `me`'s turn, then hands it on: TURNS/2 times. */
static void play(struct pingpong *p, int me)
{
	for (int i = 0; i < TURNS / 2; i++) {
		pthread_mutex_lock(&p->m);
		while (p->turn != me) {
			struct timespec dl = abs_in_ms(CLOCK_REALTIME, SYNC_MS);
			if (pthread_cond_timedwait(&p->c, &p->m, &dl) == ETIMEDOUT) {
				p->timeouts++;
				pthread_mutex_unlock(&p->m);
				return;
			}
		}
		p->turn = !me;
		p->handoffs++;
		pthread_cond_broadcast(&p->c);
		pthread_mutex_unlock(&p->m);
	}
}

static void pingpong_child(struct link *l, void *arg)
{
	(void)l;
	play(arg, 1);
}

/* A PTHREAD_PROCESS_SHARED condition variable (with its mutex) in shared
 * memory carries wakeups between processes: ten turns handed back and
 * forth between a parent and its child. */
PCASE(pshared_cond_fork,
      "init=0 handoffs=10 timeouts=0 child=exit0\n")
{
	struct pingpong *p = shared_mem(sizeof *p);
	int r = init_mutex(&p->m, PTHREAD_MUTEX_NORMAL, false);
	pthread_condattr_t ca;
	MUST0(pthread_condattr_init(&ca));
	if (r == 0)
		r = pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
	if (r == 0)
		r = pthread_cond_init(&p->c, &ca);
	pthread_condattr_destroy(&ca);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	pid_t pid = fork_child(NULL, pingpong_child, p);
	play(p, 0);
	const char *child = wait_child(pid, SYNC_MS);
	say("init=0 handoffs=%d timeouts=%d child=%s", p->handoffs, p->timeouts, child);
}

/* pthread_cond_timedwait on a process-shared condition variable (with
 * CLOCK_MONOTONIC from pthread_condattr_setclock): "ETIMEDOUT: The time
 * specified by abstime has passed", not before it, and the mutex is held
 * again on return ("the mutex shall have been locked and shall be owned
 * by the calling thread"). */
PCASE(pshared_cond_timedwait_times_out,
      "init=0 timedwait=ETIMEDOUT not_early=1 mutex_held_again=1\n")
{
	struct pingpong *p = shared_mem(sizeof *p);
	int r = init_mutex(&p->m, PTHREAD_MUTEX_NORMAL, false);
	pthread_condattr_t ca;
	MUST0(pthread_condattr_init(&ca));
	if (r == 0)
		r = pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
	if (r == 0)
		r = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (r == 0)
		r = pthread_cond_init(&p->c, &ca);
	pthread_condattr_destroy(&ca);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	pthread_mutex_lock(&p->m);
	struct timespec dl = abs_in_ms(CLOCK_MONOTONIC, 20);
	r = pthread_cond_timedwait(&p->c, &p->m, &dl);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	bool not_early = now.tv_sec > dl.tv_sec || (now.tv_sec == dl.tv_sec && now.tv_nsec >= dl.tv_nsec);
	/* nobody else could hold it: trylock says whether this thread does */
	bool held = pthread_mutex_trylock(&p->m) == EBUSY;
	pthread_mutex_unlock(&p->m);
	say("init=0 timedwait=%s not_early=%d mutex_held_again=%d", en(r), not_early, held);
}

/* ---- rwlock -------------------------------------------------------- */

struct shared_rw {
	pthread_rwlock_t rw;
	int r[8];
};

static void rw_child(struct link *l, void *arg)
{
	struct shared_rw *s = arg;
	if (link_recv(l, SYNC_MS) != 'R')
		_exit(3);
	s->r[0] = pthread_rwlock_rdlock(&s->rw);
	s->r[1] = pthread_rwlock_trywrlock(&s->rw);
	if (s->r[0] == 0)
		s->r[2] = pthread_rwlock_unlock(&s->rw);
	link_send(l, 'r');
	if (link_recv(l, SYNC_MS) != 'W')
		_exit(3);
	s->r[3] = pthread_rwlock_wrlock(&s->rw);
	link_send(l, 'w');
	if (link_recv(l, SYNC_MS) != 'X')
		_exit(3);
	if (s->r[3] == 0)
		s->r[4] = pthread_rwlock_unlock(&s->rw);
	link_send(l, 'x');
}

/* A PTHREAD_PROCESS_SHARED rwlock: "The calling thread acquires the read
 * lock if a writer does not hold the lock and there are no writers
 * blocked on the lock": two processes read together; trywrlock fails
 * with EBUSY "if any thread currently holds rwlock (for reading or
 * writing)"; while the other process writes, tryrdlock and trywrlock are
 * EBUSY and a timed read lock times out (ETIMEDOUT); once it unlocks, a
 * write lock is had at once. */
PCASE(pshared_rwlock_fork,
      "init=0 rdlock=0\n"
      "child_rdlock_beside_reader=0 child_trywrlock=EBUSY child_unlock=0\n"
      "unlock=0\n"
      "child_wrlock=0\n"
      "tryrdlock=EBUSY trywrlock=EBUSY timedrdlock=ETIMEDOUT\n"
      "child_unlock=0 wrlock=0 unlock=0\n"
      "child=exit0\n")
{
	struct shared_rw *s = shared_mem(sizeof *s);
	pthread_rwlockattr_t a;
	MUST0(pthread_rwlockattr_init(&a));
	int r = pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (r == 0)
		r = pthread_rwlock_init(&s->rw, &a);
	pthread_rwlockattr_destroy(&a);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	struct link l;
	link_init(&l);
	pid_t pid = fork_child(&l, rw_child, s);
	say("init=0 rdlock=%s", en(pthread_rwlock_rdlock(&s->rw)));
	link_send(&l, 'R');
	if (link_recv(&l, SYNC_MS) == 'r')
		say("child_rdlock_beside_reader=%s child_trywrlock=%s child_unlock=%s", en(s->r[0]),
		    en(s->r[1]), en(s->r[2]));
	say("unlock=%s", en(pthread_rwlock_unlock(&s->rw)));
	link_send(&l, 'W');
	if (link_recv(&l, SYNC_MS) == 'w') {
		say("child_wrlock=%s", en(s->r[3]));
		int a1 = pthread_rwlock_tryrdlock(&s->rw), a2 = pthread_rwlock_trywrlock(&s->rw);
		struct timespec dl = abs_in_ms(CLOCK_REALTIME, 20);
		int a3 = pthread_rwlock_timedrdlock(&s->rw, &dl);
		say("tryrdlock=%s trywrlock=%s timedrdlock=%s", en(a1), en(a2), en(a3));
	}
	link_send(&l, 'X');
	if (link_recv(&l, SYNC_MS) == 'x') {
		int w = pthread_rwlock_wrlock(&s->rw);
		say("child_unlock=%s wrlock=%s unlock=%s", en(s->r[4]), en(w),
		    en(pthread_rwlock_unlock(&s->rw)));
	}
	say("child=%s", wait_child(pid, SYNC_MS));
}

/* ---- barrier ------------------------------------------------------- */

#define CYCLES 5

struct shared_barrier {
	pthread_barrier_t b;
	int arrived[CYCLES], serial[CYCLES];
	int early, errors;
};

static void *barrier_thread(void *arg)
{
	struct shared_barrier *s = arg;
	for (int c = 0; c < CYCLES; c++) {
		__atomic_add_fetch(&s->arrived[c], 1, __ATOMIC_SEQ_CST);
		int r = pthread_barrier_wait(&s->b);
		if (r == PTHREAD_BARRIER_SERIAL_THREAD)
			__atomic_add_fetch(&s->serial[c], 1, __ATOMIC_SEQ_CST);
		else if (r != 0) {
			__atomic_add_fetch(&s->errors, 1, __ATOMIC_SEQ_CST);
			return NULL;
		}
		if (__atomic_load_n(&s->arrived[c], __ATOMIC_SEQ_CST) != 4)
			__atomic_add_fetch(&s->early, 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

static void barrier_pair(struct shared_barrier *s)
{
	pthread_t a = spawn(barrier_thread, s), b = spawn(barrier_thread, s);
	join(a);
	join(b);
}

static void barrier_child(struct link *l, void *arg)
{
	(void)l;
	barrier_pair(arg);
}

/* A PTHREAD_PROCESS_SHARED barrier of count 4, two threads in each of
 * two processes, five cycles: no thread passes before all four arrived
 * ("the calling thread shall block until the required number of threads
 * have called pthread_barrier_wait()"), and in each cycle exactly one of
 * them gets PTHREAD_BARRIER_SERIAL_THREAD, the others zero. */
PCASE(pshared_barrier_fork,
      "init=0 serial_per_cycle=1 1 1 1 1 early=0 errors=0 child=exit0\n")
{
	struct shared_barrier *s = shared_mem(sizeof *s);
	pthread_barrierattr_t a;
	MUST0(pthread_barrierattr_init(&a));
	int r = pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (r == 0)
		r = pthread_barrier_init(&s->b, &a, 4);
	pthread_barrierattr_destroy(&a);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	pid_t pid = fork_child(NULL, barrier_child, s);
	barrier_pair(s);
	const char *child = wait_child(pid, SYNC_MS);
	char per[64] = "";
	for (int c = 0; c < CYCLES; c++)
		snprintf(per + strlen(per), sizeof per - strlen(per), "%s%d", c ? " " : "",
		         s->serial[c]);
	say("init=0 serial_per_cycle=%s early=%d errors=%d child=%s", per, s->early, s->errors,
	    child);
}

/* ---- robust mutexes ------------------------------------------------ */

static int init_private_robust(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	MUST0(pthread_mutexattr_init(&a));
	int r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (r == 0)
		r = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return r;
}

static void *lock_and_exit(void *arg)
{
	return (void *)(intptr_t)pthread_mutex_lock(arg);
}

/* "If mutex is a robust mutex and the process containing the owning
 * thread terminated while holding the mutex lock, a call to
 * pthread_mutex_lock() shall return the error value [EOWNERDEAD]" (the
 * same when the owning thread terminated); pthread_mutex_consistent then
 * makes it consistent, and it unlocks and locks as any other; trylock
 * too reports EOWNERDEAD. */
PCASE(robust_thread_exit_owner_dead,
      "init=0 owner_locked=0 lock=EOWNERDEAD consistent=0 unlock=0 relock=0 unlock=0\n"
      "trylock=EOWNERDEAD consistent=0 unlock=0\n")
{
	pthread_mutex_t m, m2;
	int r = init_private_robust(&m);
	if (r == 0)
		r = init_private_robust(&m2);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	intptr_t owner = (intptr_t)join(spawn(lock_and_exit, &m));
	int a = pthread_mutex_lock(&m);
	int b = a == EOWNERDEAD ? pthread_mutex_consistent(&m) : -1;
	int c = pthread_mutex_unlock(&m);
	int d = pthread_mutex_lock(&m);
	int e = pthread_mutex_unlock(&m);
	say("init=0 owner_locked=%s lock=%s consistent=%s unlock=%s relock=%s unlock=%s",
	    en((int)owner), en(a), b < 0 ? "skipped" : en(b), en(c), en(d), en(e));
	join(spawn(lock_and_exit, &m2));
	a = pthread_mutex_trylock(&m2);
	b = a == EOWNERDEAD ? pthread_mutex_consistent(&m2) : -1;
	c = pthread_mutex_unlock(&m2);
	say("trylock=%s consistent=%s unlock=%s", en(a), b < 0 ? "skipped" : en(b), en(c));
}

/* "If the thread which acquired the mutex lock with the return value
 * [EOWNERDEAD] terminates or unlocks the mutex without calling
 * pthread_mutex_consistent(), the mutex shall be made permanently
 * unusable": later locks and trylocks fail with ENOTRECOVERABLE. */
PCASE(robust_unlock_without_consistent,
      "init=0 lock=EOWNERDEAD unlock=0 lock_again=ENOTRECOVERABLE trylock=ENOTRECOVERABLE\n")
{
	pthread_mutex_t m;
	int r = init_private_robust(&m);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	join(spawn(lock_and_exit, &m));
	int a = pthread_mutex_lock(&m);
	int b = pthread_mutex_unlock(&m);
	int c = pthread_mutex_lock(&m);
	int d = pthread_mutex_trylock(&m);
	say("init=0 lock=%s unlock=%s lock_again=%s trylock=%s", en(a), en(b), en(c), en(d));
}

/* pthread_mutex_consistent: "[EINVAL] The mutex object referenced by
 * mutex is not robust or does not protect an inconsistent state": on a
 * robust mutex held consistently, and a free one. */
PCASE(robust_consistent_on_consistent_einval,
      "init=0 held=EINVAL free=EINVAL\n")
{
	pthread_mutex_t m;
	int r = init_private_robust(&m);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	MUST0(pthread_mutex_lock(&m));
	int a = pthread_mutex_consistent(&m);
	MUST0(pthread_mutex_unlock(&m));
	int b = pthread_mutex_consistent(&m);
	say("init=0 held=%s free=%s", en(a), en(b));
}

/* The same on mutexes that are not robust, held and free. */
PCASE(mutex_consistent_not_robust_einval,
      "held=EINVAL free=EINVAL\n")
{
	pthread_mutex_t plain = PTHREAD_MUTEX_INITIALIZER;
	MUST0(pthread_mutex_lock(&plain));
	int a = pthread_mutex_consistent(&plain);
	MUST0(pthread_mutex_unlock(&plain));
	int b = pthread_mutex_consistent(&plain);
	say("held=%s free=%s", en(a), en(b));
}

struct robust_shm {
	pthread_mutex_t m;
	int child_lock;
};

static void robust_child_hold(struct link *l, void *arg)
{
	struct robust_shm *s = arg;
	s->child_lock = pthread_mutex_lock(&s->m);
	link_send(l, 'L');
	/* killed here by the parent; the alarm ends it otherwise */
	for (;;)
		pause();
}

static void robust_child_exit(struct link *l, void *arg)
{
	struct robust_shm *s = arg;
	s->child_lock = pthread_mutex_lock(&s->m);
	link_send(l, 'L');
	_exit(0);
}

static void robust_across_fork(void (*child_fn)(struct link *, void *), bool kill_it)
{
	struct robust_shm *s = shared_mem(sizeof *s);
	int r = init_mutex(&s->m, PTHREAD_MUTEX_NORMAL, true);
	if (r != 0) {
		say("init=%s", en(r));
		return;
	}
	struct link l;
	link_init(&l);
	pid_t pid = fork_child(&l, child_fn, s);
	if (link_recv(&l, SYNC_MS) != 'L') {
		say("init=0 child_never_locked child=%s", wait_child(pid, SYNC_MS));
		return;
	}
	if (kill_it)
		kill(pid, SIGKILL);
	const char *child = wait_child(pid, SYNC_MS);
	int a = pthread_mutex_lock(&s->m);
	int b = a == EOWNERDEAD ? pthread_mutex_consistent(&s->m) : -1;
	int c = pthread_mutex_unlock(&s->m);
	int d = pthread_mutex_lock(&s->m);
	int e = pthread_mutex_unlock(&s->m);
	say("init=0 child_lock=%s child=%s", en(s->child_lock), child);
	say("lock=%s consistent=%s unlock=%s relock=%s unlock=%s", en(a), b < 0 ? "skipped" : en(b),
	    en(c), en(d), en(e));
}

/* A process-shared robust mutex whose owner process is killed (SIGKILL)
 * while holding it: the survivor's lock is EOWNERDEAD, then consistent. */
PCASE(robust_pshared_child_killed,
      "init=0 child_lock=0 child=SIGKILL\n"
      "lock=EOWNERDEAD consistent=0 unlock=0 relock=0 unlock=0\n")
{
	robust_across_fork(robust_child_hold, true);
}

/* The same when the owner process _exits holding it. */
PCASE(robust_pshared_child_exits,
      "init=0 child_lock=0 child=exit0\n"
      "lock=EOWNERDEAD consistent=0 unlock=0 relock=0 unlock=0\n")
{
	robust_across_fork(robust_child_exit, false);
}
