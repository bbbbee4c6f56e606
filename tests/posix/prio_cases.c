/* prio_cases.c: SCHED_FIFO priorities on one processor, from POSIX's
 * "Scheduling Policies" (XSH 2.8.4), pthread_attr_setinheritsched,
 * pthread_setschedparam, pthread_setschedprio, and the wake order of
 * mutexes, condition variables and semaphores ("the scheduling policy
 * shall determine" which waiter goes first), and the priority protocols
 * (issue 10, items 3 and 6).
 *
 * The prio_ cases need one processor: each pins itself to the one it
 * runs on (sched_setaffinity, before it makes threads, which inherit it;
 * under Caprice the driver also sets CAPRICE_WORKERS=1, since a user
 * thread's priority orders only its own worker).  On NPTL, SCHED_FIFO
 * needs privilege (CAP_SYS_NICE): without it a case says "unsupported".
 * Every thread here runs for microseconds, so the real-time priorities
 * starve nothing else on the machine.
 *
 * How they see an order: a thread appends its mark to `seen` when it
 * gets past the point under test.  The main thread either runs above
 * the others and then lowers itself or blocks, or runs below them and
 * calls sched_yield after each step that makes one runnable (on NPTL the
 * higher thread has already run; on Caprice it runs at that switch). */
#include "pcase.h"

#include <sched.h>

static int seen[16];
static int nseen;

static void mark(int v)
{
	int i = __atomic_fetch_add(&nseen, 1, __ATOMIC_SEQ_CST);
	if (i < 16)
		seen[i] = v;
}

static const char *seen_str(void)
{
	static char buf[128];
	buf[0] = 0;
	int n = __atomic_load_n(&nseen, __ATOMIC_SEQ_CST);
	for (int i = 0; i < n && i < 16; i++)
		snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%d", i ? " " : "", seen[i]);
	return buf;
}

static int my_prio(void)
{
	int policy;
	struct sched_param p;
	if (pthread_getschedparam(pthread_self(), &policy, &p) != 0)
		return -1;
	return p.sched_priority;
}

/* One processor, and the main thread at SCHED_FIFO `prio`.  False (and
 * the line "unsupported: ...") when the system refuses. */
static bool fifo_setup(int prio)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	int cpu = sched_getcpu();
	CPU_SET(cpu >= 0 ? cpu : 0, &set);
	MUST(sched_setaffinity(0, sizeof set, &set) == 0);
	struct sched_param p = { .sched_priority = prio };
	int r = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p);
	if (r != 0) {
		say("unsupported: SCHED_FIFO refused (%s): needs CAP_SYS_NICE", en(r));
		return false;
	}
	return true;
}

static void set_self(int prio)
{
	struct sched_param p = { .sched_priority = prio };
	MUST0(pthread_setschedparam(pthread_self(), SCHED_FIFO, &p));
}

/* A SCHED_FIFO thread at `prio` (PTHREAD_EXPLICIT_SCHED). */
static pthread_t spawn_fifo(int prio, void *(*fn)(void *), void *arg)
{
	pthread_attr_t a;
	MUST0(pthread_attr_init(&a));
	MUST0(pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED));
	MUST0(pthread_attr_setschedpolicy(&a, SCHED_FIFO));
	struct sched_param p = { .sched_priority = prio };
	MUST0(pthread_attr_setschedparam(&a, &p));
	pthread_t t;
	int r = pthread_create(&t, &a, fn, arg);
	if (r != 0)
		die("pthread_create at SCHED_FIFO %d: %s", prio, en(r));
	pthread_attr_destroy(&a);
	return t;
}

static void *mark_prio(void *arg)
{
	(void)arg;
	mark(my_prio());
	return NULL;
}

/* "A thread whose priority is raised... the highest priority non-empty
 * thread list ... the thread at its head shall become the running
 * thread": threads made at 10, 20 and 30 while main runs at 50 run 30,
 * 20, 10 once main lowers itself to 1 (pthread_setschedparam on itself),
 * and main (marking 1) goes on only after them. */
PCASE(prio_runnable_highest_first,
      "order=30 20 10 1\n")
{
	if (!fifo_setup(50))
		return;
	pthread_t t[3];
	for (int i = 0; i < 3; i++)
		t[i] = spawn_fifo(10 * (i + 1), mark_prio, NULL);
	set_self(1);
	mark(my_prio()); /* last: the three ran before main went on */
	for (int i = 0; i < 3; i++)
		join(t[i]);
	say("order=%s", seen_str());
}

/* sched_setscheduler(0, ...) (Linux: the calling thread) does what
 * pthread_setschedparam on itself does: main at 50 lowering itself to 1
 * that way lets the threads at 10, 20 and 30 run first, highest first;
 * sched_getscheduler and sched_getparam then report it. */
PCASE(prio_sched_setscheduler_self,
      "setscheduler=0 order=30 20 10 1 getscheduler=FIFO getparam=1\n")
{
	if (!fifo_setup(50))
		return;
	pthread_t t[3];
	for (int i = 0; i < 3; i++)
		t[i] = spawn_fifo(10 * (i + 1), mark_prio, NULL);
	struct sched_param p = { .sched_priority = 1 };
	int r = sched_setscheduler(0, SCHED_FIFO, &p);
	/* not my_prio(): NPTL's pthread_getschedparam answers what the
	 * pthread calls last set, which sched_setscheduler does not update */
	mark(1);
	for (int i = 0; i < 3; i++)
		join(t[i]);
	int pol = sched_getscheduler(0);
	struct sched_param q = { .sched_priority = -1 };
	sched_getparam(0, &q);
	say("setscheduler=%s order=%s getscheduler=%s getparam=%d", r == 0 ? "0" : en(errno),
	    seen_str(), pol == SCHED_FIFO ? "FIFO" : "other", q.sched_priority);
}

static void *mark_arg(void *arg)
{
	mark((int)(intptr_t)arg);
	return NULL;
}

/* pthread_setschedparam and pthread_setschedprio change another
 * thread's priority, which then orders it: made at 10, 20 and 25 below
 * main's 50, the first raised to 30 and the third lowered to 5, they
 * run 1, 2, 3 (by their own marks) once main blocks.  Each then reports
 * its priority as set. */
PCASE(prio_setschedparam_other,
      "setschedparam=0 setschedprio=0 order=1 2 3\n"
      "priorities=30 20 5\n")
{
	if (!fifo_setup(50))
		return;
	pthread_t a = spawn_fifo(10, mark_arg, (void *)1);
	pthread_t b = spawn_fifo(20, mark_arg, (void *)2);
	pthread_t c = spawn_fifo(25, mark_arg, (void *)3);
	struct sched_param p = { .sched_priority = 30 };
	int r1 = pthread_setschedparam(a, SCHED_FIFO, &p);
	int r2 = pthread_setschedprio(c, 5);
	int pol[3], pr[3];
	pthread_t all[3] = { a, b, c };
	for (int i = 0; i < 3; i++) {
		struct sched_param q;
		MUST0(pthread_getschedparam(all[i], &pol[i], &q));
		pr[i] = q.sched_priority;
	}
	/* block: each runs to its end before main returns to them */
	for (int i = 0; i < 3; i++)
		join(all[i]);
	say("setschedparam=%s setschedprio=%s order=%s", en(r1), en(r2), seen_str());
	say("priorities=%d %d %d", pr[0], pr[1], pr[2]);
}

static void *report_sched(void *arg)
{
	int *out = arg;
	struct sched_param p;
	if (pthread_getschedparam(pthread_self(), &out[0], &p) == 0)
		out[1] = p.sched_priority;
	return NULL;
}

/* PTHREAD_INHERIT_SCHED (the default) takes the creator's policy and
 * priority, PTHREAD_EXPLICIT_SCHED the attribute's. */
PCASE(prio_attr_inherit_explicit,
      "default_inheritsched=INHERIT inherited=FIFO/40 explicit=FIFO/15\n")
{
	if (!fifo_setup(40))
		return;
	pthread_attr_t a;
	MUST0(pthread_attr_init(&a));
	int inh = -1;
	MUST0(pthread_attr_getinheritsched(&a, &inh));
	int got[2] = { -1, -1 }, got2[2] = { -1, -1 };
	pthread_t t;
	MUST0(pthread_create(&t, &a, report_sched, got));
	join(t);
	pthread_attr_destroy(&a);
	join(spawn_fifo(15, report_sched, got2));
	say("default_inheritsched=%s inherited=%s/%d explicit=%s/%d",
	    inh == PTHREAD_INHERIT_SCHED ? "INHERIT" : "EXPLICIT",
	    got[0] == SCHED_FIFO ? "FIFO" : "other", got[1],
	    got2[0] == SCHED_FIFO ? "FIFO" : "other", got2[1]);
}

/* ---- wake order ------------------------------------------------------ */

static pthread_mutex_t wm = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wc = PTHREAD_COND_INITIALIZER;
static sem_t ws;
static int tokens;

static void *mutex_waiter(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&wm);
	mark(my_prio());
	pthread_mutex_unlock(&wm);
	return NULL;
}

/* Three threads, made at 10, 20 and 30 in that order, each blocking at
 * once (main runs at 5 and yields after each), so they arrive lowest
 * first; `release` then lets them through one at a time. */
static void arrive_low_first(void *(*fn)(void *), pthread_t t[3])
{
	for (int i = 0; i < 3; i++) {
		t[i] = spawn_fifo(10 * (i + 1), fn, NULL);
		sched_yield();
	}
}

/* pthread_mutex_unlock: "If there are threads blocked on the mutex
 * object ... the scheduling policy shall determine which thread shall
 * acquire the mutex": the highest priority first. */
PCASE(prio_mutex_wakes_highest,
      "order=30 20 10\n")
{
	if (!fifo_setup(5))
		return;
	pthread_mutex_lock(&wm);
	pthread_t t[3];
	arrive_low_first(mutex_waiter, t);
	pthread_mutex_unlock(&wm);
	sched_yield();
	for (int i = 0; i < 3; i++)
		join(t[i]);
	say("order=%s", seen_str());
}

static void *cond_waiter(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&wm);
	while (tokens == 0)
		pthread_cond_wait(&wc, &wm);
	tokens--;
	mark(my_prio());
	pthread_mutex_unlock(&wm);
	return NULL;
}

/* pthread_cond_signal: "If more than one thread is blocked on a
 * condition variable, the scheduling policy shall determine the order in
 * which threads are unblocked": three signals, one at a time, release
 * 30, 20, 10. */
PCASE(prio_cond_signal_wakes_highest,
      "order=30 20 10\n")
{
	if (!fifo_setup(5))
		return;
	pthread_t t[3];
	arrive_low_first(cond_waiter, t);
	for (int i = 0; i < 3; i++) {
		pthread_mutex_lock(&wm);
		tokens++;
		pthread_cond_signal(&wc);
		pthread_mutex_unlock(&wm);
		sched_yield();
	}
	for (int i = 0; i < 3; i++)
		join(t[i]);
	say("order=%s", seen_str());
}

static void *sem_waiter(void *arg)
{
	(void)arg;
	while (sem_wait(&ws) != 0)
		;
	mark(my_prio());
	return NULL;
}

/* sem_post: "If the Process Scheduling option is supported, the thread
 * to be unblocked shall be chosen in a manner appropriate to the
 * scheduling policies and parameters in effect for the blocked threads.
 * In the case of the schedulers SCHED_FIFO and SCHED_RR, the highest
 * priority waiting thread shall be unblocked". */
PCASE(prio_sem_post_wakes_highest,
      "order=30 20 10\n")
{
	if (!fifo_setup(5))
		return;
	MUST(sem_init(&ws, 0, 0) == 0);
	pthread_t t[3];
	arrive_low_first(sem_waiter, t);
	for (int i = 0; i < 3; i++) {
		sem_post(&ws);
		sched_yield();
	}
	for (int i = 0; i < 3; i++)
		join(t[i]);
	say("order=%s", seen_str());
}

/* ---- priority protocols ---------------------------------------------- */

static pthread_mutex_t pm;
static sem_t go;

static void *protect_locker(void *arg)
{
	int *out = arg;
	out[0] = pthread_mutex_lock(&pm);
	if (out[0] == 0)
		pthread_mutex_unlock(&pm);
	return NULL;
}

static void *protect_middle(void *arg)
{
	(void)arg;
	while (sem_wait(&go) != 0)
		;
	mark(2);
	return NULL;
}

static void *protect_holder(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&pm);
	sem_post(&go); /* the middle thread (15) is ready: below the ceiling */
	mark(1);
	pthread_mutex_unlock(&pm);
	mark(3);
	return NULL;
}

/* PTHREAD_PRIO_PROTECT: pthread_mutex_lock fails with EINVAL when "the
 * calling thread's priority is higher than the mutex's current priority
 * ceiling"; a thread below it locks it and "shall execute at the higher
 * of its priority or the priority ceiling" while it holds it: a holder
 * at 10 under a ceiling of 20 that makes a thread at 15 ready goes on
 * (marks 1) until it unlocks, and the thread at 15 runs (2) before it
 * goes on (3).  getprioceiling and setprioceiling read and change the
 * ceiling ("old_ceiling" is the previous one). */
PCASE(prio_protect_ceiling,
      "above=EINVAL below=0 order=1 2 3\n"
      "getprioceiling=0/20 setprioceiling=0/old=20 now=25\n")
{
	if (!fifo_setup(50))
		return;
	pthread_mutexattr_t a;
	MUST0(pthread_mutexattr_init(&a));
	MUST0(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_PROTECT));
	MUST0(pthread_mutexattr_setprioceiling(&a, 20));
	MUST0(pthread_mutex_init(&pm, &a));
	pthread_mutexattr_destroy(&a);
	MUST(sem_init(&go, 0, 0) == 0);
	int hi = -1, lo = -1;
	join(spawn_fifo(30, protect_locker, &hi));
	join(spawn_fifo(10, protect_locker, &lo));
	/* the middle one runs first and waits; then the holder */
	pthread_t m = spawn_fifo(15, protect_middle, NULL);
	pthread_t h = spawn_fifo(10, protect_holder, NULL);
	join(m);
	join(h);
	say("above=%s below=%s order=%s", en(hi), en(lo), seen_str());
	set_self(15); /* setprioceiling locks the mutex: at most its ceiling */
	int c = -1, old = -1, now = -1;
	int g = pthread_mutex_getprioceiling(&pm, &c);
	int s = pthread_mutex_setprioceiling(&pm, 25, &old);
	pthread_mutex_getprioceiling(&pm, &now);
	say("getprioceiling=%s/%d setprioceiling=%s/old=%d now=%d", en(g), c, en(s), old, now);
}

static pthread_mutex_t im;
static volatile int low_holds, high_started;

static void *inherit_low(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&im);
	mark(1); /* holds it */
	low_holds = 1;
	while (sem_wait(&go) != 0)
		;
	mark(2); /* runs again: before the middle one only when boosted */
	pthread_mutex_unlock(&im);
	return NULL;
}

static void *inherit_high(void *arg)
{
	(void)arg;
	high_started = 1;
	pthread_mutex_lock(&im);
	mark(3);
	pthread_mutex_unlock(&im);
	return NULL;
}

static void *inherit_middle(void *arg)
{
	(void)arg;
	mark(4);
	return NULL;
}

/* PTHREAD_PRIO_INHERIT: "When a thread is blocking higher priority
 * threads because of owning one or more mutexes with the
 * PTHREAD_PRIO_INHERIT protocol attribute, it shall execute at the
 * higher of its priority or the priority of the highest priority thread
 * waiting on any of the mutexes owned by this thread".  A holder at 10
 * with a waiter at 30 runs before a ready thread at 20: marks 1 (low
 * holds), 2 (low runs again), 3 (high gets it), 4 (middle). */
PCASE(prio_inherit_boosts_holder,
      "order=1 2 3 4\n")
{
	if (!fifo_setup(50))
		return;
	pthread_mutexattr_t a;
	MUST0(pthread_mutexattr_init(&a));
	MUST0(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT));
	MUST0(pthread_mutex_init(&im, &a));
	pthread_mutexattr_destroy(&a);
	MUST(sem_init(&go, 0, 0) == 0);
	/* main (50) sleeps to let each run, on the one processor; a thread
	 * can take longer than a sleep to start (sanitized builds), so it
	 * says when it got there */
	pthread_t low = spawn_fifo(10, inherit_low, NULL);
	while (!low_holds) /* low runs, takes the mutex, waits on go */
		sleep_ms(1);
	pthread_t high = spawn_fifo(30, inherit_high, NULL);
	while (!high_started)
		sleep_ms(1);
	sleep_ms(2); /* high blocks on the mutex, lending low its 30 */
	sem_post(&go);
	pthread_t mid = spawn_fifo(20, inherit_middle, NULL);
	join(low);
	join(high);
	join(mid);
	say("order=%s", seen_str());
}

/* Not prio_: no privilege or single processor needed. */

/* pthread_mutex_getprioceiling and setprioceiling on a mutex whose
 * protocol is not PTHREAD_PRIO_PROTECT: EINVAL (NPTL's documented
 * answer; POSIX lets them fail so). */
PCASE(prioceiling_not_protect_einval,
      "get_default=EINVAL set_default=EINVAL get_inherit=EINVAL set_inherit=EINVAL\n")
{
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER, mi;
	pthread_mutexattr_t a;
	MUST0(pthread_mutexattr_init(&a));
	MUST0(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT));
	MUST0(pthread_mutex_init(&mi, &a));
	pthread_mutexattr_destroy(&a);
	int c, old;
	int g1 = pthread_mutex_getprioceiling(&m, &c);
	int s1 = pthread_mutex_setprioceiling(&m, sched_get_priority_min(SCHED_FIFO), &old);
	int g2 = pthread_mutex_getprioceiling(&mi, &c);
	int s2 = pthread_mutex_setprioceiling(&mi, sched_get_priority_min(SCHED_FIFO), &old);
	say("get_default=%s set_default=%s get_inherit=%s set_inherit=%s", en(g1), en(s1), en(g2),
	    en(s2));
}

/* A priority ceiling is a SCHED_FIFO priority: the default one of a
 * PTHREAD_PRIO_PROTECT attribute and mutex lies within
 * sched_get_priority_min/max(SCHED_FIFO); a ceiling outside it is
 * refused (EINVAL). */
PCASE(prioceiling_default_in_fifo_range,
      "attr_get=0 attr_in_range=1 mutex_get=0 mutex_in_range=1 attr_set_above_max=EINVAL\n")
{
	int lo = sched_get_priority_min(SCHED_FIFO), hi = sched_get_priority_max(SCHED_FIFO);
	pthread_mutexattr_t a;
	MUST0(pthread_mutexattr_init(&a));
	MUST0(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_PROTECT));
	int c = -1000;
	int g = pthread_mutexattr_getprioceiling(&a, &c);
	pthread_mutex_t m;
	MUST0(pthread_mutex_init(&m, &a));
	int mc = -1000;
	int mg = pthread_mutex_getprioceiling(&m, &mc);
	int s = pthread_mutexattr_setprioceiling(&a, hi + 1);
	pthread_mutexattr_destroy(&a);
	say("attr_get=%s attr_in_range=%d mutex_get=%s mutex_in_range=%d attr_set_above_max=%s",
	    en(g), c >= lo && c <= hi, en(mg), mc >= lo && mc <= hi, en(s));
}
