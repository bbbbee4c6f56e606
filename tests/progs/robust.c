/* robust.c: robust mutexes (POSIX pthread_mutexattr_setrobust) and the
 * process-shared mutexes that must know their owner: a thread or a
 * process that dies holding a robust mutex leaves it to the next locker
 * with EOWNERDEAD; pthread_mutex_consistent makes it whole, an unlock
 * without that makes it ENOTRECOVERABLE; process-shared recursive and
 * errorcheck mutexes count and refuse across processes, and glibc's own
 * code (what an NPTL process runs) shares them. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tcase.h"

static const int types[] = { PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_RECURSIVE,
                             PTHREAD_MUTEX_ERRORCHECK };

static void init_mutex(pthread_mutex_t *m, int type, bool robust, bool shared)
{
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	CHECK_OK(pthread_mutexattr_settype(&a, type));
	if (robust)
		CHECK_OK(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST));
	if (shared)
		CHECK_OK(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	CHECK_OK(pthread_mutex_init(m, &a));
	CHECK_OK(pthread_mutexattr_destroy(&a));
}

static int child_status(pid_t pid)
{
	int st = 0;
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	return st;
}

TCASE(mutexattr_robust)
{
	pthread_mutexattr_t a;
	CHECK_OK(pthread_mutexattr_init(&a));
	int v;
	CHECK_OK(pthread_mutexattr_getrobust(&a, &v));
	CHECK_EQ(v, PTHREAD_MUTEX_STALLED);
	CHECK_OK(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST));
	CHECK_OK(pthread_mutexattr_getrobust(&a, &v));
	CHECK_EQ(v, PTHREAD_MUTEX_ROBUST);
	CHECK_EQ(pthread_mutexattr_setrobust(&a, 12345), EINVAL);
	CHECK_OK(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_STALLED));
	CHECK_OK(pthread_mutexattr_getrobust(&a, &v));
	CHECK_EQ(v, PTHREAD_MUTEX_STALLED);
	/* only a robust mutex whose owner died can be made consistent */
	pthread_mutex_t m;
	CHECK_OK(pthread_mutex_init(&m, &a));
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_EQ(pthread_mutex_consistent(&m), EINVAL);
	CHECK_OK(pthread_mutex_unlock(&m));
	pthread_mutexattr_destroy(&a);
	init_mutex(&m, PTHREAD_MUTEX_NORMAL, true, false);
	CHECK_OK(pthread_mutex_lock(&m));
	CHECK_EQ(pthread_mutex_consistent(&m), EINVAL);
	CHECK_OK(pthread_mutex_unlock(&m));
	CHECK_OK(pthread_mutex_destroy(&m));
}

/* A robust mutex of each type behaves as that type while its owner lives:
 * recursion counts, errorcheck refuses, the non-owner's unlock is EPERM. */
static void *unlock_from_other(void *m)
{
	return (void *)(long)pthread_mutex_unlock(m);
}

static void *trylock_from_other(void *m)
{
	return (void *)(long)pthread_mutex_trylock(m);
}

TCASE(robust_types_while_owner_lives)
{
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		pthread_mutex_t m;
		init_mutex(&m, types[i], true, false);
		CHECK_OK(pthread_mutex_lock(&m));
		if (types[i] == PTHREAD_MUTEX_RECURSIVE) {
			CHECK_OK(pthread_mutex_lock(&m));
			CHECK_OK(pthread_mutex_trylock(&m));
			CHECK_OK(pthread_mutex_unlock(&m));
			CHECK_OK(pthread_mutex_unlock(&m));
		} else if (types[i] == PTHREAD_MUTEX_ERRORCHECK) {
			CHECK_EQ(pthread_mutex_lock(&m), EDEADLK);
		}
		CHECK_EQ(pthread_mutex_trylock(&m) == 0, types[i] == PTHREAD_MUTEX_RECURSIVE);
		if (types[i] == PTHREAD_MUTEX_RECURSIVE)
			CHECK_OK(pthread_mutex_unlock(&m));
		CHECK_EQ((long)tc_join(tc_spawn(trylock_from_other, &m)), EBUSY);
		CHECK_EQ((long)tc_join(tc_spawn(unlock_from_other, &m)), EPERM);
		CHECK_EQ(pthread_mutex_destroy(&m), EBUSY);
		CHECK_OK(pthread_mutex_unlock(&m));
		CHECK_EQ(pthread_mutex_unlock(&m), EPERM);
		CHECK_OK(pthread_mutex_destroy(&m));
	}
}

static void *lock_and_exit(void *m)
{
	CHECK_OK(pthread_mutex_lock(m));
	return NULL; /* ends holding it */
}

/* POSIX: "If the owning thread of a robust mutex terminates while holding
 * the mutex lock, the next thread that acquires the mutex ... shall be
 * notified ... with the return value [EOWNERDEAD]", it then holds the
 * mutex, pthread_mutex_consistent makes it usable again. */
TCASE(robust_owner_thread_exits)
{
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		pthread_mutex_t m;
		init_mutex(&m, types[i], true, false);
		tc_join(tc_spawn(lock_and_exit, &m));
		CHECK_EQ(pthread_mutex_lock(&m), EOWNERDEAD);
		/* held by us now: another thread cannot take it */
		CHECK_EQ((long)tc_join(tc_spawn(trylock_from_other, &m)), EBUSY);
		CHECK_OK(pthread_mutex_consistent(&m));
		CHECK_EQ(pthread_mutex_consistent(&m), EINVAL);
		CHECK_OK(pthread_mutex_unlock(&m));
		CHECK_OK(pthread_mutex_lock(&m));
		CHECK_OK(pthread_mutex_unlock(&m));
		/* trylock reports it too */
		tc_join(tc_spawn(lock_and_exit, &m));
		CHECK_EQ(pthread_mutex_trylock(&m), EOWNERDEAD);
		CHECK_OK(pthread_mutex_consistent(&m));
		CHECK_OK(pthread_mutex_unlock(&m));
		CHECK_OK(pthread_mutex_destroy(&m));
	}
}

/* POSIX: "If the mutex is unlocked without a call to
 * pthread_mutex_consistent(), it shall be in a permanently unusable
 * state": every later lock is ENOTRECOVERABLE. */
TCASE(robust_unlock_without_consistent_is_not_recoverable)
{
	pthread_mutex_t m;
	init_mutex(&m, PTHREAD_MUTEX_NORMAL, true, false);
	tc_join(tc_spawn(lock_and_exit, &m));
	CHECK_EQ(pthread_mutex_lock(&m), EOWNERDEAD);
	CHECK_OK(pthread_mutex_unlock(&m));
	CHECK_EQ(pthread_mutex_lock(&m), ENOTRECOVERABLE);
	CHECK_EQ(pthread_mutex_trylock(&m), ENOTRECOVERABLE);
	struct timespec at = tc_abs_ms(CLOCK_REALTIME, 20);
	CHECK_EQ(pthread_mutex_timedlock(&m, &at), ENOTRECOVERABLE);
	CHECK_OK(pthread_mutex_destroy(&m));
}

/* A thread that made it consistent and then ends holding it hands it on
 * as owner-dead again; one that got EOWNERDEAD and ended without making
 * it consistent too. */
static void *take_dead_and_exit(void *m)
{
	CHECK_EQ(pthread_mutex_lock(m), EOWNERDEAD);
	return NULL;
}

TCASE(robust_owner_dead_twice)
{
	pthread_mutex_t m;
	init_mutex(&m, PTHREAD_MUTEX_ERRORCHECK, true, false);
	tc_join(tc_spawn(lock_and_exit, &m));
	tc_join(tc_spawn(take_dead_and_exit, &m));
	CHECK_EQ(pthread_mutex_lock(&m), EOWNERDEAD);
	CHECK_EQ(pthread_mutex_lock(&m), EDEADLK); /* ours, inconsistent or not */
	CHECK_OK(pthread_mutex_consistent(&m));
	CHECK_OK(pthread_mutex_unlock(&m));
	CHECK_OK(pthread_mutex_destroy(&m));
}

/* A waiter parked on the mutex wakes with EOWNERDEAD when the holder
 * ends; a thread holding several leaves them all. */
struct pair {
	pthread_mutex_t a, b;
	volatile int held;
	volatile int go;
};

static void *hold_two_until_told(void *arg)
{
	struct pair *p = arg;
	CHECK_OK(pthread_mutex_lock(&p->a));
	CHECK_OK(pthread_mutex_lock(&p->b));
	p->held = 1;
	while (!p->go)
		usleep(1000);
	return NULL;
}

static void *lock_result(void *m)
{
	return (void *)(long)pthread_mutex_lock(m);
}

TCASE(robust_waiter_wakes_when_holder_exits)
{
	tc_watchdog(20);
	struct pair p = { .held = 0 };
	init_mutex(&p.a, PTHREAD_MUTEX_NORMAL, true, false);
	init_mutex(&p.b, PTHREAD_MUTEX_RECURSIVE, true, false);
	pthread_t holder = tc_spawn(hold_two_until_told, &p);
	while (!p.held)
		usleep(1000);
	pthread_t waiter = tc_spawn(lock_result, &p.a);
	usleep(20000); /* let it park */
	p.go = 1;
	tc_join(holder);
	CHECK_EQ((long)tc_join(waiter), EOWNERDEAD);
	CHECK_EQ(pthread_mutex_lock(&p.b), EOWNERDEAD);
	CHECK_OK(pthread_mutex_consistent(&p.b));
	CHECK_OK(pthread_mutex_unlock(&p.b));
	CHECK_OK(pthread_mutex_destroy(&p.b));
}

/* A condition variable's wait reacquires a robust mutex: EOWNERDEAD
 * comes back through pthread_cond_wait, with the mutex held. */
struct cv_case {
	pthread_mutex_t m;
	pthread_cond_t c;
	volatile int stage;
};

static void *grab_and_die(void *arg)
{
	struct cv_case *k = arg;
	CHECK_OK(pthread_mutex_lock(&k->m));
	k->stage = 2;
	CHECK_OK(pthread_cond_signal(&k->c));
	return NULL; /* ends holding the mutex the waiter wants back */
}

TCASE(robust_owner_dead_through_cond_wait)
{
	tc_watchdog(20);
	struct cv_case k = { .stage = 0 };
	init_mutex(&k.m, PTHREAD_MUTEX_NORMAL, true, false);
	CHECK_OK(pthread_cond_init(&k.c, NULL));
	CHECK_OK(pthread_mutex_lock(&k.m));
	pthread_t t = tc_spawn(grab_and_die, &k);
	int e = 0;
	while (k.stage != 2 && e == 0)
		e = pthread_cond_wait(&k.c, &k.m);
	CHECK_EQ(e, EOWNERDEAD);
	CHECK_OK(pthread_mutex_consistent(&k.m));
	CHECK_OK(pthread_mutex_unlock(&k.m));
	tc_join(t);
	CHECK_OK(pthread_cond_destroy(&k.c));
}

/* ---- across processes ---- */

struct shared_robust {
	pthread_mutex_t m;
	volatile int child_holds;
	volatile int counted;
	long count;
};

static void *kill_later(void *pid)
{
	usleep(30000);
	kill(*(pid_t *)pid, SIGKILL);
	return NULL;
}

/* POSIX: the owning process terminating counts as the owner terminating.
 * The child locks and exits (and, the second time, is killed); the parent
 * is parked in the lock the while, with a ticker of its own running, and
 * gets EOWNERDEAD. */
TCASE(robust_owner_process_dies)
{
	tc_watchdog(30);
	struct shared_robust *s = tc_shared_alloc(sizeof *s);
	init_mutex(&s->m, PTHREAD_MUTEX_NORMAL, true, true);
	for (int round = 0; round < 2; round++) {
		s->child_holds = 0;
		pid_t pid = fork();
		if (pid == 0) {
			if (pthread_mutex_lock(&s->m))
				_exit(2);
			s->child_holds = 1;
			if (round == 0) {
				usleep(50000);
				_exit(0); /* holding it */
			}
			for (;;)
				pause(); /* killed holding it */
		}
		CHECK(pid > 0);
		while (!s->child_holds)
			usleep(1000);
		CHECK_EQ(pthread_mutex_trylock(&s->m), EBUSY);
		pthread_t ticker = tc_ticker_start(), killer = 0;
		if (round == 1)
			killer = tc_spawn(kill_later, &pid);
		long before = tc_ticks;
		CHECK_EQ(pthread_mutex_lock(&s->m), EOWNERDEAD);
		long ticked = tc_ticks - before;
		tc_ticker_stop(ticker);
		if (killer)
			tc_join(killer);
		int st = child_status(pid);
		CHECK(round == 0 ? WIFEXITED(st) && WEXITSTATUS(st) == 0 : WIFSIGNALED(st));
		/* the wait parked only this thread: the ticker went on */
		if (ticked < 2)
			TFAIL("round %d: %ld ticks while parked", round, ticked);
		CHECK_OK(pthread_mutex_consistent(&s->m));
		CHECK_OK(pthread_mutex_unlock(&s->m));
	}
	CHECK_OK(pthread_mutex_lock(&s->m));
	CHECK_OK(pthread_mutex_unlock(&s->m));
	munmap(s, sizeof *s);
}

static void count_robust(struct shared_robust *s, int n)
{
	for (int i = 0; i < n; i++) {
		CHECK_OK(pthread_mutex_lock(&s->m));
		long v = s->count;
		if (i % 64 == 0)
			sched_yield(); /* hold it a while: the other side waits */
		s->count = v + 1;
		CHECK_OK(pthread_mutex_unlock(&s->m));
	}
}

TCASE(robust_process_shared_counts_across_fork)
{
	tc_watchdog(30);
	struct shared_robust *s = tc_shared_alloc(sizeof *s);
	init_mutex(&s->m, PTHREAD_MUTEX_NORMAL, true, true);
	s->count = 0;
	pid_t pid = fork();
	if (pid == 0) {
		count_robust(s, 20000);
		_exit(0);
	}
	CHECK(pid > 0);
	count_robust(s, 20000);
	tc_child_ok(pid);
	CHECK_EQ(s->count, 40000);
	munmap(s, sizeof *s);
}

/* glibc's own robust lock (what an NPTL process runs), on a plain kernel
 * thread, shares the mutex with user threads; and when that kernel
 * thread ends holding it, the kernel's owner-died mark reaches us. */
static void *glibc_robust_counter(void *arg)
{
	struct shared_robust *s = arg;
	int (*lk)(pthread_mutex_t *) = (int (*)(pthread_mutex_t *))tc_libc_sym("pthread_mutex_lock");
	int (*ul)(pthread_mutex_t *) = (int (*)(pthread_mutex_t *))tc_libc_sym("pthread_mutex_unlock");
	for (int i = 0; i < 20000; i++) {
		if (lk(&s->m))
			return (void *)2;
		long v = s->count;
		if (i % 64 == 0)
			usleep(10);
		s->count = v + 1;
		if (ul(&s->m))
			return (void *)3;
	}
	while (!s->counted)
		usleep(1000);
	if (lk(&s->m)) /* and ends holding it */
		return (void *)4;
	return NULL;
}

TCASE(robust_speaks_glibcs_protocol)
{
	tc_watchdog(30);
	struct shared_robust *s = tc_shared_alloc(sizeof *s);
	init_mutex(&s->m, PTHREAD_MUTEX_NORMAL, true, true);
	s->count = 0;
	pthread_t t;
	tc_foreign_run(glibc_robust_counter, s, &t);
	count_robust(s, 20000);
	s->counted = 1;
	CHECK(tc_foreign_join(t) == NULL);
	CHECK_EQ(s->count, 40000);
	CHECK_EQ(pthread_mutex_lock(&s->m), EOWNERDEAD);
	CHECK_OK(pthread_mutex_consistent(&s->m));
	CHECK_OK(pthread_mutex_unlock(&s->m));
	munmap(s, sizeof *s);
}

/* Process-shared recursive and errorcheck mutexes (not robust): each side
 * knows its own holds and refuses the other's. */
struct shared_typed {
	pthread_mutex_t rec, chk;
	volatile int child_holds;
	volatile int parent_done;
	int child_saw[4];
};

TCASE(process_shared_recursive_and_errorcheck)
{
	tc_watchdog(30);
	struct shared_typed *s = tc_shared_alloc(sizeof *s);
	init_mutex(&s->rec, PTHREAD_MUTEX_RECURSIVE, false, true);
	init_mutex(&s->chk, PTHREAD_MUTEX_ERRORCHECK, false, true);
	pid_t pid = fork();
	if (pid == 0) {
		s->child_saw[0] = pthread_mutex_lock(&s->rec);
		s->child_saw[1] = pthread_mutex_lock(&s->rec); /* a second hold */
		s->child_saw[2] = pthread_mutex_lock(&s->chk);
		s->child_saw[3] = pthread_mutex_lock(&s->chk); /* EDEADLK */
		s->child_holds = 1;
		while (!s->parent_done)
			usleep(1000);
		int e = pthread_mutex_unlock(&s->rec) | pthread_mutex_unlock(&s->rec) |
		        pthread_mutex_unlock(&s->chk);
		_exit(e == 0 && pthread_mutex_unlock(&s->rec) == EPERM ? 0 : 1);
	}
	CHECK(pid > 0);
	while (!s->child_holds)
		usleep(1000);
	CHECK_EQ(s->child_saw[0], 0);
	CHECK_EQ(s->child_saw[1], 0);
	CHECK_EQ(s->child_saw[2], 0);
	CHECK_EQ(s->child_saw[3], EDEADLK);
	/* the child's holds are not ours */
	CHECK_EQ(pthread_mutex_trylock(&s->rec), EBUSY);
	CHECK_EQ(pthread_mutex_unlock(&s->rec), EPERM);
	CHECK_EQ(pthread_mutex_trylock(&s->chk), EBUSY);
	CHECK_EQ(pthread_mutex_unlock(&s->chk), EPERM);
	s->parent_done = 1;
	CHECK_OK(pthread_mutex_lock(&s->rec)); /* waits for both of its holds to go */
	CHECK_OK(pthread_mutex_lock(&s->rec));
	CHECK_OK(pthread_mutex_lock(&s->chk));
	CHECK_EQ(pthread_mutex_lock(&s->chk), EDEADLK);
	tc_child_ok(pid);
	CHECK_OK(pthread_mutex_unlock(&s->rec));
	CHECK_OK(pthread_mutex_unlock(&s->rec));
	CHECK_EQ(pthread_mutex_unlock(&s->rec), EPERM);
	CHECK_OK(pthread_mutex_unlock(&s->chk));
	munmap(s, sizeof *s);
}

/* glibc's recursive lock on a plain kernel thread (an NPTL process's)
 * and ours: neither takes the other's holds for its own. */
static void *glibc_hold_recursive(void *arg)
{
	struct shared_typed *s = arg;
	int (*lk)(pthread_mutex_t *) = (int (*)(pthread_mutex_t *))tc_libc_sym("pthread_mutex_lock");
	int (*ul)(pthread_mutex_t *) = (int (*)(pthread_mutex_t *))tc_libc_sym("pthread_mutex_unlock");
	int (*tl)(pthread_mutex_t *) =
		(int (*)(pthread_mutex_t *))tc_libc_sym("pthread_mutex_trylock");
	if (lk(&s->rec) || lk(&s->rec))
		return (void *)1;
	s->child_holds = 1;
	while (!s->parent_done)
		usleep(1000);
	if (ul(&s->rec) || ul(&s->rec))
		return (void *)2;
	while (s->child_holds != 2)
		usleep(1000);
	/* ours now: glibc's side sees someone else's hold */
	if (tl(&s->rec) != EBUSY || ul(&s->rec) != EPERM)
		return (void *)3;
	s->child_holds = 3;
	return NULL;
}

TCASE(process_shared_recursive_speaks_glibcs_protocol)
{
	tc_watchdog(30);
	struct shared_typed *s = tc_shared_alloc(sizeof *s);
	init_mutex(&s->rec, PTHREAD_MUTEX_RECURSIVE, false, true);
	pthread_t t;
	tc_foreign_run(glibc_hold_recursive, s, &t);
	while (!s->child_holds)
		usleep(1000);
	CHECK_EQ(pthread_mutex_trylock(&s->rec), EBUSY);
	CHECK_EQ(pthread_mutex_unlock(&s->rec), EPERM);
	s->parent_done = 1;
	CHECK_OK(pthread_mutex_lock(&s->rec));
	CHECK_OK(pthread_mutex_lock(&s->rec));
	s->child_holds = 2;
	CHECK(tc_foreign_join(t) == NULL);
	CHECK_EQ(s->child_holds, 3);
	CHECK_OK(pthread_mutex_unlock(&s->rec));
	CHECK_OK(pthread_mutex_unlock(&s->rec));
	munmap(s, sizeof *s);
}
