/* signal_cases.c: signals and threads, from POSIX's XSH 2.4 "Signal
 * Concepts", pthread_kill, pthread_sigmask, sigpending, sigwait, raise,
 * and the EINTR of nanosleep, sem_wait and read (issue 10, item 1).
 *
 * Every wait for a signal's effect here is bounded, so that a runtime
 * that delivers elsewhere, or never interrupts, gives other output
 * instead of a hang: a thread blocked for a signal that does not cut its
 * call short is let go after 300 ms. */
#include "pcase.h"

#include <fcntl.h>
#include <sys/syscall.h>

static volatile int handled;
static volatile pthread_t handler_thread;

static void on_signal(int sig)
{
	(void)sig;
	handler_thread = pthread_self();
	__atomic_add_fetch(&handled, 1, __ATOMIC_SEQ_CST);
}

static void install(int sig, int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	MUST(sigaction(sig, &sa, NULL) == 0);
}

static void block(int sig, bool on)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, sig);
	MUST0(pthread_sigmask(on ? SIG_BLOCK : SIG_UNBLOCK, &s, NULL));
}

static bool blocked(int sig)
{
	sigset_t s;
	MUST0(pthread_sigmask(SIG_BLOCK, NULL, &s));
	return sigismember(&s, sig) == 1;
}

static bool pending(int sig)
{
	sigset_t s;
	MUST(sigpending(&s) == 0);
	return sigismember(&s, sig) == 1;
}

/* Waits (up to ms) for *flag to become nonzero. */
static bool wait_flag(volatile int *flag, long ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000u;
	while (!__atomic_load_n(flag, __ATOMIC_SEQ_CST)) {
		if (now_ns() > end)
			return false;
		sleep_ms(1);
	}
	return true;
}

/* The target announced it is about to block in a call (*about); wait
 * until its kernel task sleeps there (on NPTL), or 20 ms where its task
 * cannot be told apart (a user thread). */
static volatile int target_tid;

static void wait_blocked(volatile int *about)
{
	wait_flag(about, 2000);
	sleep_ms(5);
	char path[64];
	snprintf(path, sizeof path, "/proc/self/task/%d/stat", target_tid);
	uint64_t end = now_ns() + 20000000u;
	while (now_ns() < end) {
		char buf[512] = "";
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			break;
		ssize_t n = read(fd, buf, sizeof buf - 1);
		close(fd);
		buf[n > 0 ? n : 0] = 0;
		const char *p = strrchr(buf, ')');
		if (p && (p[2] == 'S' || p[2] == 'D') && target_tid != (int)getpid())
			return;
		sleep_ms(1);
	}
}

/* ---- where a directed signal's handler runs -------------------------- */

static int pipefd[2];
static volatile int about_to_block, done;
static volatile int call_rc, call_errno;

static void *blocked_reader(void *arg)
{
	(void)arg;
	target_tid = (int)syscall(SYS_gettid);
	char c;
	about_to_block = 1;
	call_rc = (int)read(pipefd[0], &c, 1);
	call_errno = errno;
	done = 1;
	return NULL;
}

/* pthread_kill: "The pthread_kill() function shall request that a signal
 * be delivered to the specified thread": its handler runs in that
 * thread, here one blocked in read (SA_RESTART: the read goes on and
 * returns the byte written afterwards). */
PCASE(sig_pthread_kill_handler_in_target,
      "kill=0 handled=1 in_target=1 read=1\n")
{
	install(SIGUSR1, SA_RESTART);
	MUST(pipe(pipefd) == 0);
	pthread_t t = spawn(blocked_reader, NULL);
	wait_blocked(&about_to_block);
	int k = pthread_kill(t, SIGUSR1);
	bool h = wait_flag(&handled, 300);
	bool in_target = h && pthread_equal(handler_thread, t);
	MUST(write(pipefd[1], "x", 1) == 1);
	join(t);
	say("kill=%s handled=%d in_target=%d read=%d", en(k), h, in_target, call_rc);
}

/* ---- EINTR ---------------------------------------------------------- */

static sem_t sem;
static volatile int slept_short, rem_set;

static void *nanosleeper(void *arg)
{
	(void)arg;
	target_tid = (int)syscall(SYS_gettid);
	struct timespec ts = { 0, 300000000L }, rem = { 0, 0 };
	uint64_t t0 = now_ns();
	about_to_block = 1;
	call_rc = nanosleep(&ts, &rem);
	call_errno = errno;
	slept_short = now_ns() - t0 < 250000000u;
	rem_set = rem.tv_sec > 0 || rem.tv_nsec > 0;
	done = 1;
	return NULL;
}

/* nanosleep: "If the nanosleep() function returns because it has been
 * interrupted by a signal, it shall return a value of -1 and set errno
 * to indicate the interruption" (EINTR), with the time left in rmtp;
 * a handler installed without SA_RESTART. */
PCASE(sig_eintr_nanosleep,
      "nanosleep=-1/EINTR cut_short=1 rem_set=1 handled=1\n")
{
	install(SIGUSR1, 0);
	pthread_t t = spawn(nanosleeper, NULL);
	wait_blocked(&about_to_block);
	pthread_kill(t, SIGUSR1);
	join(t);
	say("nanosleep=%d/%s cut_short=%d rem_set=%d handled=%d", call_rc,
	    call_rc ? en(call_errno) : "-", slept_short, rem_set, handled);
}

static void *sem_waiter(void *arg)
{
	(void)arg;
	target_tid = (int)syscall(SYS_gettid);
	about_to_block = 1;
	call_rc = sem_wait(&sem);
	call_errno = errno;
	done = 1;
	return NULL;
}

/* sem_wait: "[EINTR] A signal interrupted this function" (Linux: always,
 * whatever SA_RESTART says; here without it). */
PCASE(sig_eintr_sem_wait,
      "sem_wait=-1/EINTR handled=1\n")
{
	install(SIGUSR1, 0);
	MUST(sem_init(&sem, 0, 0) == 0);
	pthread_t t = spawn(sem_waiter, NULL);
	wait_blocked(&about_to_block);
	pthread_kill(t, SIGUSR1);
	if (!wait_flag(&done, 300))
		sem_post(&sem);
	join(t);
	say("sem_wait=%d/%s handled=%d", call_rc, call_rc ? en(call_errno) : "-", handled);
}

/* read: "[EINTR] The read operation was terminated due to the receipt of
 * a signal, and no data was transferred" (no SA_RESTART). */
PCASE(sig_eintr_read,
      "read=-1/EINTR handled=1\n")
{
	install(SIGUSR1, 0);
	MUST(pipe(pipefd) == 0);
	pthread_t t = spawn(blocked_reader, NULL);
	wait_blocked(&about_to_block);
	pthread_kill(t, SIGUSR1);
	if (!wait_flag(&done, 300))
		MUST(write(pipefd[1], "x", 1) == 1);
	join(t);
	say("read=%d/%s handled=%d", call_rc, call_rc < 0 ? en(call_errno) : "-", handled);
}

/* ---- masks and pending sets ------------------------------------------ */

static volatile int t2_unblocked, t1_reported, t2_handled;
static volatile int t1_blocked_seen, t2_blocked_seen, t1_inherited;

static void *keeps_mask(void *arg)
{
	(void)arg;
	t1_inherited = blocked(SIGUSR1);
	wait_flag(&t2_unblocked, 2000);
	t1_blocked_seen = blocked(SIGUSR1);
	t1_reported = 1;
	return NULL;
}

static void *unblocks(void *arg)
{
	(void)arg;
	block(SIGUSR1, false);
	t2_blocked_seen = blocked(SIGUSR1);
	t2_unblocked = 1;
	/* the process-directed signal comes to the one thread that does not
	 * block it: this one */
	t2_handled = wait_flag(&handled, 300);
	return NULL;
}

/* pthread_sigmask: "examine or change the calling thread's signal mask";
 * a new thread inherits its creator's.  One thread unblocking a signal
 * leaves it blocked in the others, and a process-directed signal
 * (kill(getpid())) goes to the thread that does not block it. */
PCASE(sig_mask_per_thread,
      "t1_inherited=1 t1_blocked=1 t2_blocked=0 main_blocked=1\n"
      "kill=0 handled_by=t2\n")
{
	install(SIGUSR1, SA_RESTART);
	block(SIGUSR1, true);
	pthread_t t1 = spawn(keeps_mask, NULL), t2 = spawn(unblocks, NULL);
	wait_flag(&t1_reported, 2000);
	bool main_blocked = blocked(SIGUSR1);
	say("t1_inherited=%d t1_blocked=%d t2_blocked=%d main_blocked=%d", t1_inherited,
	    t1_blocked_seen, t2_blocked_seen, main_blocked);
	int k = kill(getpid(), SIGUSR1);
	join(t1);
	join(t2);
	const char *by = !handled                              ? "none"
	                 : pthread_equal(handler_thread, t2)    ? "t2"
	                 : pthread_equal(handler_thread, t1)    ? "t1"
	                 : pthread_equal(handler_thread, pthread_self()) ? "main"
	                                                        : "other";
	say("kill=%s handled_by=%s", en(k), by);
	/* whatever is still pending must not end the process */
	signal(SIGUSR1, SIG_IGN);
}

static volatile int t_ready, t_pending_seen, t_checked, main_checked, t_after;
static volatile int sigwait_got;

static void *pending_checker(void *arg)
{
	(void)arg;
	t_ready = 1;
	uint64_t end = now_ns() + 300000000u;
	while (!pending(SIGUSR2) && now_ns() < end)
		sleep_ms(1);
	t_pending_seen = pending(SIGUSR2);
	t_checked = 1;
	wait_flag(&main_checked, 2000); /* main looks while it is still pending */
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	int sig = 0;
	if (t_pending_seen && sigwait(&s, &sig) == 0)
		sigwait_got = sig;
	t_after = pending(SIGUSR2);
	return NULL;
}

/* sigpending: "the set of signals that are blocked from delivery and
 * pending on either the process or the calling thread": a blocked
 * signal sent to one thread with pthread_kill is pending there and not
 * in another thread; sigwait in the target takes it, after which it is
 * pending nowhere. */
PCASE(sig_sigpending_thread_directed,
      "target_pending=1 main_pending=0 target_sigwait=SIGUSR2 target_pending_after=0\n")
{
	block(SIGUSR2, true);
	pthread_t t = spawn(pending_checker, NULL);
	wait_flag(&t_ready, 2000);
	pthread_kill(t, SIGUSR2);
	wait_flag(&t_checked, 2000);
	bool main_pending = pending(SIGUSR2);
	main_checked = 1;
	join(t);
	say("target_pending=%d main_pending=%d target_sigwait=%s target_pending_after=%d",
	    t_pending_seen, main_pending, sigwait_got ? sn(sigwait_got) : "none", t_after);
	signal(SIGUSR2, SIG_IGN);
}

static void *sigwaiter(void *arg)
{
	(void)arg;
	target_tid = (int)syscall(SYS_gettid);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	int sig = 0;
	about_to_block = 1;
	if (sigwait(&s, &sig) == 0)
		sigwait_got = sig;
	done = 1;
	return NULL;
}

/* sigwait: "select a pending signal from set, atomically clear it from
 * the system's set of pending signals" — the calling thread's or the
 * process's.  A thread blocked in sigwait receives the signal another
 * sends it with pthread_kill (and, should it not, a process-directed one
 * sent 300 ms later lets it go). */
PCASE(sig_sigwait_receives_pthread_kill,
      "sigwait=SIGUSR2 from_pthread_kill=1\n")
{
	block(SIGUSR2, true);
	pthread_t t = spawn(sigwaiter, NULL);
	wait_blocked(&about_to_block);
	pthread_kill(t, SIGUSR2);
	bool direct = wait_flag(&done, 300);
	if (!direct)
		kill(getpid(), SIGUSR2);
	join(t);
	say("sigwait=%s from_pthread_kill=%d", sigwait_got ? sn(sigwait_got) : "none", direct);
	signal(SIGUSR2, SIG_IGN);
}

static volatile int new_pending;

static void *check_new_pending(void *arg)
{
	(void)arg;
	new_pending = pending(SIGUSR2);
	return NULL;
}

/* A new thread's "set of signals pending for the new thread shall be
 * empty": a signal pending for its creator is not pending for it. */
PCASE(sig_new_thread_empty_pending,
      "main_pending=1 new_thread_pending=0 main_sigwait=SIGUSR2\n")
{
	block(SIGUSR2, true);
	pthread_kill(pthread_self(), SIGUSR2);
	bool mp = pending(SIGUSR2);
	join(spawn(check_new_pending, NULL));
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	struct timespec zero = { 0, 0 };
	int got = sigtimedwait(&s, NULL, &zero);
	say("main_pending=%d new_thread_pending=%d main_sigwait=%s", mp, new_pending,
	    got > 0 ? sn(got) : en(errno));
	signal(SIGUSR2, SIG_IGN);
}

static void *raiser(void *arg)
{
	(void)arg;
	int r = raise(SIGUSR1);
	/* "If a signal handler is called, the raise() function shall not
	 * return until after the signal handler does" */
	return (void *)(intptr_t)(r == 0 && handled && pthread_equal(handler_thread, pthread_self()));
}

/* raise: "The effect of the raise() function shall be equivalent to
 * calling: pthread_kill(pthread_self(), sig)": the handler has run in
 * the calling thread by the time it returns. */
PCASE(sig_raise_in_calling_thread,
      "raise_handled_in_caller=1\n")
{
	install(SIGUSR1, SA_RESTART);
	intptr_t ok = (intptr_t)join(spawn(raiser, NULL));
	say("raise_handled_in_caller=%d", (int)ok);
}
