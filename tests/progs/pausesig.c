/* pausesig.c: pause() and sigsuspend() park only the calling user thread
 * and return -1/EINTR once a handler has run; sigaction() reports the
 * program's own handler back. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "tcase.h"

static atomic_int handled;

static void on_usr(int sig)
{
	(void)sig;
	atomic_fetch_add(&handled, 1);
}

static void on_usr_info(int sig, siginfo_t *si, void *uc)
{
	(void)sig; (void)si; (void)uc;
	atomic_fetch_add(&handled, 1);
}

struct pauser {
	int use_sigsuspend;
	atomic_int returned;
	int ret, err;
};

static void *do_pause(void *arg)
{
	struct pauser *p = arg;
	if (p->use_sigsuspend) {
		sigset_t none;
		sigemptyset(&none);
		p->ret = sigsuspend(&none);
	} else {
		p->ret = pause();
	}
	p->err = errno;
	atomic_store(&p->returned, 1);
	return NULL;
}

/* On one worker: were the wait blocking in the kernel, the sleeps here
 * would never end. */
static void waits_for_a_handler(int use_sigsuspend, int sig)
{
	tc_watchdog(20);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr;
	CHECK(sigaction(sig, &sa, NULL) == 0);
	atomic_store(&handled, 0);
	struct pauser p = { .use_sigsuspend = use_sigsuspend };
	pthread_t t = tc_spawn(do_pause, &p);
	for (int i = 0; i < 20; i++)
		tc_msleep(1);
	CHECK(!atomic_load(&p.returned));
	CHECK(kill(getpid(), sig) == 0);
	tc_join(t);
	CHECK_EQ(p.ret, -1);
	CHECK_EQ(p.err, EINTR);
	CHECK(atomic_load(&handled) >= 1);
}

TCASE(pause_parks_until_a_handler_runs)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	waits_for_a_handler(0, SIGUSR1);
}

TCASE(sigsuspend_takes_a_blocked_signal_and_restores_the_mask)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	sigset_t usr2, now;
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	CHECK(sigprocmask(SIG_BLOCK, &usr2, NULL) == 0);
	/* pending while blocked: only sigsuspend's mask lets it in */
	waits_for_a_handler(1, SIGUSR2);
	CHECK(sigprocmask(SIG_BLOCK, NULL, &now) == 0);
	CHECK(sigismember(&now, SIGUSR2));
}

TCASE(sigaction_reports_the_programs_handler)
{
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_usr_info;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	CHECK(sigaction(SIGUSR1, NULL, &old) == 0);
	CHECK(old.sa_sigaction == on_usr_info);
	CHECK(old.sa_flags & SA_SIGINFO);
	CHECK(old.sa_flags & SA_RESTART);
	/* signal() answers with the handler before it */
	CHECK((void *)signal(SIGUSR1, on_usr) == (void *)on_usr_info);
	CHECK(signal(SIGUSR1, SIG_IGN) == on_usr);
	CHECK(signal(SIGUSR1, SIG_DFL) == SIG_IGN);
	/* the handler runs, through whatever stands in for it */
	atomic_store(&handled, 0);
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	CHECK(raise(SIGUSR1) == 0);
	CHECK_EQ(atomic_load(&handled), 1);
	CHECK(signal(SIGUSR1, SIG_DFL) != SIG_ERR);
	/* bad signal numbers, as the kernel answers them */
	CHECK(sigaction(0, &sa, NULL) == -1 && errno == EINVAL);
	CHECK(sigaction(SIGKILL, &sa, NULL) == -1 && errno == EINVAL);
}
