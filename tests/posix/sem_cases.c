/* sem_cases.c: semaphores, from POSIX's sem_open, sem_close, sem_unlink,
 * sem_init, sem_post, sem_wait, sem_trywait, sem_timedwait and
 * sem_getvalue pages (issue 10, items 0 and 2). */
#include "pcase.h"

#include <fcntl.h>
#include <sys/stat.h>

static int value_of(sem_t *s)
{
	int v = -1;
	MUST(sem_getvalue(s, &v) == 0);
	return v;
}

/* sem_wait's result: "0" or the errno's name */
static const char *wait_rc(int r)
{
	return r == 0 ? "0" : en(errno);
}

static sem_t *waited_on;
static volatile int posted;

static void *sem_waiter(void *arg)
{
	(void)arg;
	int r = sem_wait(waited_on);
	return (void *)(intptr_t)(r == 0 ? (posted ? 1 : 2) : 3);
}

/* "If a process makes multiple successful calls to sem_open() with the
 * same value for name, the same semaphore address shall be returned";
 * O_CREAT|O_EXCL fails with EEXIST if it exists; sem_trywait fails with
 * EAGAIN when the value is zero; a sem_post unblocks a waiter; after
 * sem_unlink the name is gone (ENOENT) but the semaphore stays usable by
 * those that have it open. */
PCASE(sem_named_one_process,
      "open=0 reopen_same=1 excl_again=EEXIST\n"
      "value=1 trywait=0 trywait_empty=EAGAIN\n"
      "waiter=woken_by_post value_after=0\n"
      "unlink=0 open_after_unlink=ENOENT unlink_again=ENOENT still_usable_value=2\n"
      "close=0 close_second_open=0\n")
{
	const char *name = unique_name("one");
	sem_t *s = sem_open(name, O_CREAT | O_EXCL, 0600, 1);
	if (s == SEM_FAILED) {
		say("open=%s", en(errno));
		return;
	}
	sem_t *s2 = sem_open(name, 0);
	sem_t *s3 = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
	say("open=0 reopen_same=%d excl_again=%s", s2 == s, s3 == SEM_FAILED ? en(errno) : "opened");

	int v = value_of(s);
	int t1 = sem_trywait(s);
	const char *t1s = wait_rc(t1);
	int t2 = sem_trywait(s);
	say("value=%d trywait=%s trywait_empty=%s", v, t1s, wait_rc(t2));

	waited_on = s;
	posted = 0;
	pthread_t t = spawn(sem_waiter, NULL);
	sleep_ms(10);
	posted = 1;
	MUST(sem_post(s) == 0);
	intptr_t how = (intptr_t)join(t);
	say("waiter=%s value_after=%d",
	    how == 1 ? "woken_by_post" : how == 2 ? "returned_before_post" : "failed", value_of(s));

	int u1 = sem_unlink(name);
	const char *u1s = u1 == 0 ? "0" : en(errno);
	sem_t *s4 = sem_open(name, 0);
	const char *o4 = s4 == SEM_FAILED ? en(errno) : "opened";
	int u2 = sem_unlink(name);
	const char *u2s = u2 == 0 ? "0" : en(errno);
	MUST(sem_post(s) == 0);
	MUST(sem_post(s2) == 0);
	say("unlink=%s open_after_unlink=%s unlink_again=%s still_usable_value=%d", u1s, o4, u2s,
	    value_of(s));
	int c1 = sem_close(s2);
	const char *c1s = c1 == 0 ? "0" : en(errno);
	int c2 = sem_close(s);
	say("close=%s close_second_open=%s", c1s, c2 == 0 ? "0" : en(errno));
}

/* ---- across fork ---------------------------------------------------- */

struct fork_sems {
	const char *req, *ack;
	int *counter; /* shared */
	int opened;
};

static void named_child(struct link *l, void *arg)
{
	(void)l;
	struct fork_sems *f = arg;
	/* the child opens them again by name: a second reference */
	sem_t *req = sem_open(f->req, 0), *ack = sem_open(f->ack, 0);
	if (req == SEM_FAILED || ack == SEM_FAILED)
		_exit(3);
	for (int i = 0; i < 5; i++) {
		struct timespec dl = abs_in_ms(CLOCK_REALTIME, 5000);
		if (sem_timedwait(req, &dl) != 0)
			_exit(4);
		__atomic_add_fetch(f->counter, 1, __ATOMIC_SEQ_CST);
		if (sem_post(ack) != 0)
			_exit(5);
	}
	sem_close(req);
	sem_close(ack);
}

/* A named semaphore is shared by every process that opens its name: five
 * turns handed between a parent and its child, each side waiting on one
 * semaphore and posting the other. */
PCASE(sem_named_across_fork,
      "turns=5 child_counted=5 child=exit0 value_req=0 value_ack=0\n")
{
	struct fork_sems f = { unique_name("req"), unique_name("ack"), shared_mem(4096), 0 };
	sem_t *req = sem_open(f.req, O_CREAT | O_EXCL, 0600, 0);
	sem_t *ack = sem_open(f.ack, O_CREAT | O_EXCL, 0600, 0);
	if (req == SEM_FAILED || ack == SEM_FAILED) {
		say("open=%s", en(errno));
		return;
	}
	pid_t pid = fork_child(NULL, named_child, &f);
	int turns = 0;
	for (int i = 0; i < 5; i++) {
		MUST(sem_post(req) == 0);
		struct timespec dl = abs_in_ms(CLOCK_REALTIME, 5000);
		if (sem_timedwait(ack, &dl) != 0)
			break;
		turns++;
	}
	const char *child = wait_child(pid, 5000);
	say("turns=%d child_counted=%d child=%s value_req=%d value_ack=%d", turns,
	    __atomic_load_n(f.counter, __ATOMIC_SEQ_CST), child, value_of(req), value_of(ack));
	sem_unlink(f.req);
	sem_unlink(f.ack);
	sem_close(req);
	sem_close(ack);
}

struct pshared_sems {
	sem_t a, b;
	char log[32];
	int n;
};

static void unnamed_child(struct link *l, void *arg)
{
	(void)l;
	struct pshared_sems *p = arg;
	for (int i = 0; i < 5; i++) {
		struct timespec dl = abs_in_ms(CLOCK_REALTIME, 5000);
		if (sem_timedwait(&p->a, &dl) != 0)
			_exit(4);
		p->log[p->n++] = 'c';
		if (sem_post(&p->b) != 0)
			_exit(5);
	}
}

/* sem_init with pshared nonzero: "the semaphore is shared between
 * processes", any process that can reach its memory (MAP_SHARED, kept
 * across fork) may use it. */
PCASE(sem_unnamed_pshared_fork,
      "init=0 log=pcpcpcpcpc child=exit0 value_a=0 value_b=0 destroy=0\n")
{
	struct pshared_sems *p = shared_mem(sizeof *p);
	int r = sem_init(&p->a, 1, 0);
	if (r != 0 || sem_init(&p->b, 1, 0) != 0) {
		say("init=%s", en(errno));
		return;
	}
	pid_t pid = fork_child(NULL, unnamed_child, p);
	for (int i = 0; i < 5; i++) {
		p->log[p->n++] = 'p';
		MUST(sem_post(&p->a) == 0);
		struct timespec dl = abs_in_ms(CLOCK_REALTIME, 5000);
		if (sem_timedwait(&p->b, &dl) != 0)
			break;
	}
	const char *child = wait_child(pid, 5000);
	p->log[p->n] = 0;
	int va = value_of(&p->a), vb = value_of(&p->b);
	int d = sem_destroy(&p->a);
	sem_destroy(&p->b);
	say("init=0 log=%s child=%s value_a=%d value_b=%d destroy=%s", p->log, child, va, vb,
	    d == 0 ? "0" : en(errno));
}

/* sem_timedwait: "If the semaphore cannot be locked without waiting for
 * another process or thread to unlock the semaphore by performing a
 * sem_post() function, this wait shall be terminated when the specified
 * timeout expires" with ETIMEDOUT, and not before it (CLOCK_REALTIME);
 * an abstime already past times out at once; a nanoseconds field out of
 * range is EINVAL when the call would block.  For an unnamed and a named
 * semaphore alike. */
PCASE(sem_timedwait_times_out,
      "unnamed=ETIMEDOUT not_early=1\n"
      "named=ETIMEDOUT not_early=1\n"
      "past_deadline=ETIMEDOUT bad_nsec=EINVAL\n")
{
	sem_t s;
	MUST(sem_init(&s, 0, 0) == 0);
	struct timespec dl = abs_in_ms(CLOCK_REALTIME, 20);
	int r = sem_timedwait(&s, &dl);
	const char *rs = wait_rc(r);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	bool not_early = now.tv_sec > dl.tv_sec || (now.tv_sec == dl.tv_sec && now.tv_nsec >= dl.tv_nsec);
	say("unnamed=%s not_early=%d", rs, not_early);

	const char *name = unique_name("timed");
	sem_t *n = sem_open(name, O_CREAT | O_EXCL, 0600, 0);
	if (n == SEM_FAILED) {
		say("named_open=%s", en(errno));
	} else {
		sem_unlink(name);
		dl = abs_in_ms(CLOCK_REALTIME, 20);
		r = sem_timedwait(n, &dl);
		rs = wait_rc(r);
		clock_gettime(CLOCK_REALTIME, &now);
		not_early = now.tv_sec > dl.tv_sec ||
		            (now.tv_sec == dl.tv_sec && now.tv_nsec >= dl.tv_nsec);
		say("named=%s not_early=%d", rs, not_early);
		sem_close(n);
	}

	struct timespec past;
	clock_gettime(CLOCK_REALTIME, &past);
	past.tv_sec -= 1;
	r = sem_timedwait(&s, &past);
	rs = wait_rc(r);
	struct timespec bad = { time(NULL) + 1, 1000000000L };
	r = sem_timedwait(&s, &bad);
	say("past_deadline=%s bad_nsec=%s", rs, wait_rc(r));
	sem_destroy(&s);
}
