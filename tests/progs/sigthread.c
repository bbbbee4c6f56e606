/* sigthread.c: signals that reach the user thread they are meant for.
 *
 * POSIX (and NPTL): pthread_kill and pthread_sigqueue deliver to the
 * thread named, whose handler runs in that thread; a handler cuts short
 * the calls POSIX lets it interrupt (sleeps, semaphore waits, poll, pause,
 * and I/O on pipes and sockets unless the handler has SA_RESTART), which
 * return EINTR after the handler ran; mutex and condition variable waits
 * run the handler and wait on; a blocked signal stays pending for its
 * thread (sigpending, sigwait); a signal for the process goes to the main
 * thread when it does not block it. */
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

static volatile sig_atomic_t handled;
static volatile pthread_t handled_in;
static volatile int handled_value;
static volatile int handled_code;

static void on_signal(int sig)
{
	(void)sig;
	handled_in = pthread_self();
	handled++;
}

static void on_signal_info(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	handled_in = pthread_self();
	handled_value = si->si_value.sival_int;
	handled_code = si->si_code;
	handled++;
}

static void install(int sig, bool restart)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = restart ? SA_RESTART : 0;
	sigemptyset(&sa.sa_mask);
	CHECK_OK(sigaction(sig, &sa, NULL));
}

static void await_handled(int n)
{
	uint64_t t0 = tc_now_ns();
	while (handled < n) {
		if (tc_now_ns() - t0 > 10000000000ull)
			TFAIL("the handler did not run within 10 s (%d of %d)", (int)handled, n);
		usleep(1000);
	}
}

/* started tells the sender the target is about to block */
static volatile int started;

static void await_started(void)
{
	while (!started)
		usleep(1000);
	usleep(30000); /* and let it park */
}

static void reset(void)
{
	handled = 0;
	handled_in = 0;
	started = 0;
}

/* ---- where the handler runs ---- */

static volatile int spin_stop;

static void *spin(void *arg)
{
	(void)arg;
	started = 1;
	while (!spin_stop) /* never calls the library */
		__asm__ volatile("pause");
	return NULL;
}

TCASE(pthread_kill_runs_handler_in_target_that_computes)
{
	tc_watchdog(30);
	if (caprice_worker_count() < 2)
		TSKIP("the spinner would hold the only worker");
	reset();
	install(SIGUSR1, true);
	pthread_t t = tc_spawn(spin, NULL);
	await_started();
	CHECK_OK(pthread_kill(t, SIGUSR1));
	await_handled(1);
	CHECK(pthread_equal(handled_in, t));
	spin_stop = 1;
	tc_join(t);
}

/* A thread's sigaltstack is its own: the kernel's, one per worker, stays
 * the runtime's, so the poke that runs a handler in a computing thread
 * (SA_ONSTACK) writes no signal frame into the buffer the thread named,
 * which other threads may be using (varnishd gives all its threads one
 * buffer, and two workers' pokes ran on it at once). */
static unsigned char altbuf[64 * 1024];
static stack_t alt_seen;

static void *spin_on_altstack(void *arg)
{
	(void)arg;
	stack_t ss = { .ss_sp = altbuf, .ss_size = sizeof altbuf, .ss_flags = 0 };
	CHECK_OK(sigaltstack(&ss, NULL) == 0 ? 0 : errno);
	CHECK_OK(sigaltstack(NULL, &alt_seen) == 0 ? 0 : errno);
	return spin(NULL);
}

TCASE(sigaltstack_is_the_threads_own)
{
	tc_watchdog(30);
	if (caprice_worker_count() < 2)
		TSKIP("the spinner would hold the only worker");
	reset();
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	CHECK_OK(sigaction(SIGUSR1, &sa, NULL));
	memset(altbuf, 0xa5, sizeof altbuf);
	pthread_t t = tc_spawn(spin_on_altstack, NULL);
	await_started();
	CHECK(alt_seen.ss_sp == altbuf && alt_seen.ss_size == sizeof altbuf &&
	      !(alt_seen.ss_flags & SS_DISABLE));
	for (int i = 1; i <= 3; i++) { /* each a poke of the spinner's worker */
		CHECK_OK(pthread_kill(t, SIGUSR1));
		await_handled(i);
	}
	spin_stop = 1;
	tc_join(t);
	CHECK(pthread_equal(handled_in, t));
	size_t touched = 0;
	for (size_t i = 0; i < sizeof altbuf; i++)
		touched += altbuf[i] != 0xa5;
	if (touched)
		TFAIL("%zu bytes of the thread's alternate stack were written", touched);
	/* main never set one */
	stack_t mine;
	CHECK_OK(sigaltstack(NULL, &mine) == 0 ? 0 : errno);
	CHECK(mine.ss_flags & SS_DISABLE);
	/* what the kernel refuses, refused the same way */
	stack_t small = { .ss_sp = altbuf, .ss_size = 64, .ss_flags = 0 };
	errno = 0;
	CHECK_EQ(sigaltstack(&small, NULL), -1);
	CHECK_EQ(errno, ENOMEM);
	stack_t bad = { .ss_sp = altbuf, .ss_size = sizeof altbuf, .ss_flags = 12345 };
	errno = 0;
	CHECK_EQ(sigaltstack(&bad, NULL), -1);
	CHECK_EQ(errno, EINVAL);
	/* the threads' stacks are kept under a key of libthread's own: the
	 * program still has all PTHREAD_KEYS_MAX (a sanitizer holds one) */
	int keys = 0;
	pthread_key_t k;
	while (keys < PTHREAD_KEYS_MAX + 8 && pthread_key_create(&k, NULL) == 0)
		keys++;
	CHECK_EQ(keys, PTHREAD_KEYS_MAX - (getenv("CAPRICE_TEST_SANITIZED") ? 1 : 0));
}

TCASE(pthread_kill_to_self_runs_before_it_returns)
{
	reset();
	install(SIGUSR1, true);
	CHECK_OK(pthread_kill(pthread_self(), SIGUSR1));
	CHECK_EQ(handled, 1);
	CHECK(pthread_equal(handled_in, pthread_self()));
	CHECK_OK(pthread_kill(pthread_self(), 0));
	CHECK_EQ(pthread_kill(pthread_self(), 12345), EINVAL);
}

static void *sigqueue_target(void *arg)
{
	(void)arg;
	started = 1;
	while (!handled)
		usleep(1000);
	return NULL;
}

TCASE(pthread_sigqueue_carries_its_value)
{
	tc_watchdog(30);
	reset();
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_signal_info;
	sa.sa_flags = SA_SIGINFO;
	CHECK_OK(sigaction(SIGRTMIN + 1, &sa, NULL));
	pthread_t t = tc_spawn(sigqueue_target, NULL);
	await_started();
	CHECK_OK(pthread_sigqueue(t, SIGRTMIN + 1, (union sigval){ .sival_int = 4242 }));
	tc_join(t);
	CHECK(pthread_equal(handled_in, t));
	CHECK_EQ(handled_value, 4242);
	CHECK_EQ(handled_code, SI_QUEUE);
}

/* ---- calls a handler cuts short ---- */

struct outcome {
	int ret, err, handled_before;
	long left_ns;
};

/* Runs call(&outcome) in a thread and sends that thread SIGUSR1 once it
 * is parked in the call; the handler has SA_RESTART if asked. */
static struct outcome signal_parked(void *(*call)(void *), bool restart, pthread_t *who)
{
	reset();
	install(SIGUSR1, restart);
	struct outcome o = { 0 };
	pthread_t t = tc_spawn(call, &o);
	await_started();
	CHECK_OK(pthread_kill(t, SIGUSR1));
	tc_join(t);
	if (who)
		*who = t;
	return o;
}

/* The call said EINTR, and the handler had run before it returned. */
static void check_cut_short(const struct outcome *o)
{
	CHECK_EQ(o->ret, -1);
	CHECK_EQ(o->err, EINTR);
	CHECK_EQ(o->handled_before, 1);
}

static void *nanosleep_5s(void *arg)
{
	struct outcome *o = arg;
	struct timespec req = { 5, 0 }, rem = { 0, 0 };
	started = 1;
	o->ret = nanosleep(&req, &rem);
	o->err = errno;
	o->handled_before = handled;
	o->left_ns = rem.tv_sec * 1000000000L + rem.tv_nsec;
	return NULL;
}

TCASE(nanosleep_cut_short_with_time_left)
{
	tc_watchdog(30);
	uint64_t t0 = tc_now_ns();
	pthread_t t;
	struct outcome o = signal_parked(nanosleep_5s, true, &t); /* sleeps never restart */
	CHECK(tc_now_ns() - t0 < 4000000000ull);
	check_cut_short(&o);
	CHECK(pthread_equal(handled_in, t));
	CHECK(o.left_ns > 1000000000L && o.left_ns <= 5000000000L);
}

static sem_t sem;

static void *sem_waiter(void *arg)
{
	struct outcome *o = arg;
	started = 1;
	o->ret = sem_wait(&sem);
	o->err = errno;
	o->handled_before = handled;
	return NULL;
}

TCASE(sem_wait_cut_short)
{
	tc_watchdog(30);
	CHECK_OK(sem_init(&sem, 0, 0));
	struct outcome o = signal_parked(sem_waiter, true, NULL); /* never restarted */
	check_cut_short(&o);
	CHECK_EQ(sem_post(&sem), 0); /* and the semaphore lost nothing */
	CHECK_OK(sem_trywait(&sem));
	CHECK_OK(sem_destroy(&sem));
}

static int pipefd[2];

static void *pipe_reader(void *arg)
{
	struct outcome *o = arg;
	char c = 0;
	started = 1;
	o->ret = (int)read(pipefd[0], &c, 1);
	o->err = errno;
	o->handled_before = handled;
	return NULL;
}

TCASE(pipe_read_cut_short_without_sa_restart)
{
	tc_watchdog(30);
	CHECK_OK(pipe(pipefd));
	struct outcome o = signal_parked(pipe_reader, false, NULL);
	check_cut_short(&o);
	/* the pipe lost nothing: a byte written now is still read */
	CHECK_EQ(write(pipefd[1], "x", 1), 1);
	char c = 0;
	CHECK_EQ(read(pipefd[0], &c, 1), 1);
	CHECK_EQ(c, 'x');
	close(pipefd[0]);
	close(pipefd[1]);
}

TCASE(pipe_read_goes_on_with_sa_restart)
{
	tc_watchdog(30);
	reset();
	install(SIGUSR1, true);
	CHECK_OK(pipe(pipefd));
	struct outcome o = { 0 };
	pthread_t t = tc_spawn(pipe_reader, &o);
	await_started();
	CHECK_OK(pthread_kill(t, SIGUSR1));
	usleep(50000);
	CHECK_EQ(write(pipefd[1], "y", 1), 1);
	tc_join(t);
	CHECK_EQ(o.ret, 1); /* restarted: the read got the byte */
	CHECK_EQ(handled, 1);
	CHECK(pthread_equal(handled_in, t));
	close(pipefd[0]);
	close(pipefd[1]);
}

static void *poller(void *arg)
{
	struct outcome *o = arg;
	struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
	started = 1;
	o->ret = poll(&p, 1, 5000);
	o->err = errno;
	o->handled_before = handled;
	return NULL;
}

TCASE(poll_cut_short_even_with_sa_restart)
{
	tc_watchdog(30);
	CHECK_OK(pipe(pipefd));
	struct outcome o = signal_parked(poller, true, NULL);
	check_cut_short(&o);
	close(pipefd[0]);
	close(pipefd[1]);
}

static void *pauser(void *arg)
{
	struct outcome *o = arg;
	started = 1;
	o->ret = pause();
	o->err = errno;
	o->handled_before = handled;
	return NULL;
}

TCASE(pause_returns_after_its_handler)
{
	tc_watchdog(30);
	pthread_t t;
	struct outcome o = signal_parked(pauser, true, &t);
	check_cut_short(&o);
	CHECK(pthread_equal(handled_in, t));
}

/* ---- waits a handler does not end ---- */

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;

static void *mutex_locker(void *arg)
{
	struct outcome *o = arg;
	started = 1;
	o->ret = pthread_mutex_lock(&held);
	o->handled_before = handled;
	pthread_mutex_unlock(&held);
	return NULL;
}

TCASE(mutex_wait_runs_handler_and_waits_on)
{
	tc_watchdog(30);
	reset();
	install(SIGUSR1, true);
	CHECK_OK(pthread_mutex_lock(&held));
	struct outcome o = { .ret = -1 };
	pthread_t t = tc_spawn(mutex_locker, &o);
	await_started();
	CHECK_OK(pthread_kill(t, SIGUSR1));
	await_handled(1); /* while the mutex is still ours */
	CHECK(pthread_equal(handled_in, t));
	usleep(20000);
	CHECK_EQ(o.ret, -1); /* still waiting */
	CHECK_OK(pthread_mutex_unlock(&held));
	tc_join(t);
	CHECK_EQ(o.ret, 0);
}

static pthread_mutex_t cm = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static volatile int predicate;

static void *cond_waiter(void *arg)
{
	struct outcome *o = arg;
	pthread_mutex_lock(&cm);
	started = 1;
	while (!predicate) {
		int e = pthread_cond_wait(&cv, &cm);
		if (e)
			o->err = e;
	}
	pthread_mutex_unlock(&cm);
	return NULL;
}

TCASE(cond_wait_runs_handler_and_never_says_eintr)
{
	tc_watchdog(30);
	reset();
	install(SIGUSR1, false);
	predicate = 0;
	struct outcome o = { 0 };
	pthread_t t = tc_spawn(cond_waiter, &o);
	await_started();
	CHECK_OK(pthread_kill(t, SIGUSR1));
	await_handled(1);
	CHECK(pthread_equal(handled_in, t));
	pthread_mutex_lock(&cm);
	predicate = 1;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&cm);
	tc_join(t);
	CHECK_EQ(o.err, 0); /* pthread_cond_wait never returns EINTR */
}

/* ---- blocked signals stay pending for their thread ---- */

static volatile int sigwait_got;

static void *sigwaiter(void *arg)
{
	(void)arg;
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	int sig = 0;
	started = 1;
	if (sigwait(&s, &sig) == 0)
		sigwait_got = sig;
	return NULL;
}

TCASE(sigwait_takes_a_signal_sent_to_its_thread)
{
	tc_watchdog(30);
	reset();
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	CHECK_OK(pthread_sigmask(SIG_BLOCK, &s, NULL));
	for (int i = 0; i < 3; i++) {
		sigwait_got = 0;
		started = 0;
		pthread_t t = tc_spawn(sigwaiter, NULL);
		await_started();
		CHECK_OK(pthread_kill(t, SIGUSR2));
		tc_join(t);
		CHECK_EQ(sigwait_got, SIGUSR2);
	}
	CHECK_OK(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
}

struct pend {
	volatile int stage;
	int pending_seen, handled_at_unblock;
	pthread_t self;
};

static void *pend_thread(void *arg)
{
	struct pend *p = arg;
	p->self = pthread_self();
	p->stage = 1;
	while (p->stage != 2)
		usleep(1000);
	sigset_t s;
	sigpending(&s);
	p->pending_seen = sigismember(&s, SIGUSR1);
	sigset_t u;
	sigemptyset(&u);
	sigaddset(&u, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &u, NULL);
	p->handled_at_unblock = handled; /* delivered before the call returned */
	return NULL;
}

TCASE(blocked_signal_pends_for_its_thread_until_unblocked)
{
	tc_watchdog(30);
	reset();
	install(SIGUSR1, true);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	CHECK_OK(pthread_sigmask(SIG_BLOCK, &s, NULL));
	struct pend p = { 0 };
	pthread_t t = tc_spawn(pend_thread, &p);
	while (p.stage != 1)
		usleep(1000);
	CHECK_OK(pthread_kill(t, SIGUSR1));
	usleep(20000);
	CHECK_EQ(handled, 0);
	sigset_t mine;
	CHECK_OK(sigpending(&mine));
	CHECK(!sigismember(&mine, SIGUSR1)); /* it is the other thread's */
	p.stage = 2;
	tc_join(t);
	CHECK_EQ(p.pending_seen, 1);
	CHECK_EQ(p.handled_at_unblock, 1);
	CHECK(pthread_equal(handled_in, t));
}

/* ---- a signal for the whole process ---- */

static void *kill_process_later(void *arg)
{
	(void)arg;
	usleep(50000);
	kill(getpid(), SIGUSR1);
	return NULL;
}

TCASE(process_signal_cuts_main_threads_sleep_short)
{
	tc_watchdog(30);
	reset();
	install(SIGUSR1, true);
	pthread_t t = tc_spawn(kill_process_later, NULL);
	struct timespec req = { 5, 0 }, rem;
	uint64_t t0 = tc_now_ns();
	int r = nanosleep(&req, &rem);
	int e = errno;
	CHECK(tc_now_ns() - t0 < 4000000000ull);
	CHECK_EQ(r, -1);
	CHECK_EQ(e, EINTR);
	CHECK_EQ(handled, 1);
	CHECK(pthread_equal(handled_in, pthread_self()));
	tc_join(t);
}

/* ---- masks are per thread ---- */

static sigset_t just(int sig)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, sig);
	return s;
}

static bool blocks(int sig)
{
	sigset_t now;
	pthread_sigmask(SIG_BLOCK, NULL, &now);
	return sigismember(&now, sig);
}

struct masks {
	volatile int inherited, unblocked_here, stage;
};

static void *unblock_in_self(void *arg)
{
	struct masks *m = arg;
	m->inherited = blocks(SIGUSR1);
	sigset_t s = just(SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL);
	m->unblocked_here = !blocks(SIGUSR1);
	m->stage = 1;
	while (!handled) /* the process's signal comes to this thread */
		usleep(1000);
	return NULL;
}

/* POSIX: pthread_sigmask changes "the calling thread's signal mask", a
 * new thread inherits its creator's, and a signal for the process goes to
 * a thread that does not block it. */
TCASE(masks_are_per_thread_and_a_process_signal_finds_the_one_letting_it_in)
{
	tc_watchdog(30);
	reset();
	install(SIGUSR1, true);
	sigset_t s = just(SIGUSR1);
	CHECK_OK(pthread_sigmask(SIG_BLOCK, &s, NULL));
	struct masks m = { 0 };
	pthread_t t = tc_spawn(unblock_in_self, &m);
	while (m.stage != 1)
		usleep(1000);
	CHECK_EQ(m.inherited, 1);
	CHECK_EQ(m.unblocked_here, 1);
	CHECK(blocks(SIGUSR1)); /* still blocked here */
	CHECK_OK(kill(getpid(), SIGUSR1));
	tc_join(t);
	CHECK_EQ(handled, 1);
	CHECK(pthread_equal(handled_in, t));
	CHECK_OK(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
}

/* raise() of a signal the caller blocks stays pending for the caller and
 * runs when it unblocks it, before pthread_sigmask returns. */
TCASE(raise_of_a_blocked_signal_waits_for_its_thread)
{
	reset();
	install(SIGUSR1, true);
	sigset_t s = just(SIGUSR1);
	CHECK_OK(pthread_sigmask(SIG_BLOCK, &s, NULL));
	CHECK_OK(raise(SIGUSR1));
	CHECK_EQ(handled, 0);
	sigset_t p;
	CHECK_OK(sigpending(&p));
	CHECK(sigismember(&p, SIGUSR1));
	CHECK_OK(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
	CHECK_EQ(handled, 1);
	CHECK(pthread_equal(handled_in, pthread_self()));
}

/* ---- a process signal while main waits where a handler cannot reach it ---- */

static volatile uint64_t handled_at;

static void on_signal_timed(int sig)
{
	(void)sig;
	handled_at = tc_now_ns();
	handled++;
}

static void *kill_process_soon(void *arg)
{
	(void)arg;
	usleep(100000);
	kill(getpid(), SIGUSR1);
	return NULL;
}

/* main waits in waitpid, which the runtime serves on a helper kernel
 * thread (a wait no handler cuts short there): the process's signal must
 * still run its handler at once, not when main comes back (a hung main's
 * watchdog must fire). */
TCASE(process_signal_runs_while_main_waits_on_a_helper)
{
	tc_watchdog(30);
	reset();
	handled_at = 0;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal_timed;
	sa.sa_flags = SA_RESTART;
	CHECK_OK(sigaction(SIGUSR1, &sa, NULL));
	pid_t pid = fork();
	if (pid == 0) {
		usleep(1500000);
		_exit(0);
	}
	CHECK(pid > 0);
	pthread_t t = tc_spawn(kill_process_soon, NULL);
	int st = 0;
	pid_t w;
	do
		w = waitpid(pid, &st, 0);
	while (w < 0 && errno == EINTR);
	uint64_t back = tc_now_ns();
	CHECK_EQ(w, pid);
	tc_join(t);
	CHECK_EQ(handled, 1);
	CHECK(handled_at != 0 && back - handled_at > 500000000ull); /* long before */
}

/* ---- a full table of pending signals answers EAGAIN, and loses nothing ---- */

static volatile int drain_go, drained;

static void *drain_later(void *arg)
{
	(void)arg;
	sigset_t s = just(SIGRTMIN + 2);
	started = 1;
	while (!drain_go)
		usleep(1000);
	siginfo_t si;
	while (drained < 64 && sigwaitinfo(&s, &si) == SIGRTMIN + 2)
		drained++;
	return NULL;
}

TCASE(pending_signals_beyond_the_table_are_refused_with_eagain)
{
	tc_watchdog(30);
	reset();
	sigset_t s = just(SIGRTMIN + 2);
	CHECK_OK(pthread_sigmask(SIG_BLOCK, &s, NULL)); /* the target inherits it */
	pthread_t t = tc_spawn(drain_later, NULL);
	await_started();
	int sent = 0, e = 0;
	while (sent < 100 && (e = pthread_sigqueue(t, SIGRTMIN + 2, (union sigval){ sent })) == 0)
		sent++;
	CHECK_EQ(e, EAGAIN);
	CHECK_EQ(sent, 64);
	drain_go = 1;
	tc_join(t);
	CHECK_EQ(drained, 64); /* every one accepted was kept */
	CHECK_OK(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
}
