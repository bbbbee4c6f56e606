/* pl_signals.c: signal behaviour a threaded program relies on.
 *   pl_signals handler     sigaction handlers run for raise() and for
 *                          kill(getpid()) while threads run
 *   pl_signals sigwait     main blocks SIGUSR1 before creating threads, a
 *                          dedicated thread sigwaits, main kill()s itself
 *   pl_signals pipe_ign    SIGPIPE ignored: write to a pipe whose reader
 *   pl_signals pipe_dfl    closed, from a thread; _ign expects EPIPE,
 *   pl_signals sock_ign    _dfl expects death by SIGPIPE (the same with a
 *   pl_signals sock_dfl    socketpair and send(2) in the sock_ variants)
 * Prints what happened; exits 0 when it was what POSIX says. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_long ticks;
static atomic_bool stop;
static volatile sig_atomic_t got_usr1, got_usr2;

static void *busy(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		usleep(500);
		atomic_fetch_add(&ticks, 1);
	}
	return NULL;
}

static void on_usr1(int sig)
{
	if (sig == SIGUSR1)
		got_usr1++;
}

static void on_usr2(int sig)
{
	if (sig == SIGUSR2)
		got_usr2++;
}

static int handler_case(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	raise(SIGUSR1);
	if (got_usr1 != 1) {
		printf("raise(SIGUSR1): handler ran %d times before raise returned\n", (int)got_usr1);
		return 1;
	}
	kill(getpid(), SIGUSR2);
	for (int i = 0; i < 5000 && !got_usr2; i++)
		usleep(1000);
	if (got_usr2 != 1) {
		printf("kill(getpid(), SIGUSR2): handler ran %d times within 5 s\n", (int)got_usr2);
		return 1;
	}
	printf("handler ok\n");
	return 0;
}

static void *waiter(void *arg)
{
	sigset_t *set = arg;
	int sig = 0;
	int e = sigwait(set, &sig);
	printf("sigwait returned %d sig %d\n", e, sig);
	fflush(stdout);
	return (void *)(long)(e == 0 && sig == SIGUSR1 ? 0 : 1);
}

static int sigwait_case(pthread_t *busy_threads)
{
	(void)busy_threads;
	static sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_t w;
	if (pthread_create(&w, NULL, waiter, &set))
		return 2;
	usleep(50000); /* let the waiter reach sigwait */
	kill(getpid(), SIGUSR1);
	void *ret;
	pthread_join(w, &ret);
	if (ret != NULL)
		return 1;
	printf("sigwait ok\n");
	return 0;
}

static int broken_fd, use_sock;

static void *writer(void *arg)
{
	(void)arg;
	char c = 'x';
	ssize_t n = use_sock ? send(broken_fd, &c, 1, 0) : write(broken_fd, &c, 1);
	int e = errno;
	printf("%s returned %zd errno %d (%s)\n", use_sock ? "send" : "write", n, n < 0 ? e : 0,
	       n < 0 ? strerror(e) : "-");
	fflush(stdout);
	return (void *)(long)(n == -1 && e == EPIPE ? 0 : 1);
}

static int pipe_case(int ignore)
{
	if (ignore)
		signal(SIGPIPE, SIG_IGN);
	int fds[2];
	if (use_sock ? socketpair(AF_UNIX, SOCK_STREAM, 0, fds) : pipe(fds))
		return 2;
	close(use_sock ? fds[1] : fds[0]);
	broken_fd = use_sock ? fds[0] : fds[1];
	pthread_t w;
	if (pthread_create(&w, NULL, writer, NULL))
		return 2;
	void *ret;
	pthread_join(w, &ret);
	if (!ignore) {
		printf("still alive after writing to a broken %s with SIGPIPE at default\n",
		       use_sock ? "socket" : "pipe");
		return 1;
	}
	if (ret != NULL)
		return 1;
	printf("epipe ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "handler";
	if (strcmp(what, "sigwait") == 0) {
		/* the classic pattern: block in main, every thread inherits it */
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGUSR1);
		pthread_sigmask(SIG_BLOCK, &set, NULL);
	}
	pthread_t b[3];
	for (int i = 0; i < 3; i++)
		if (pthread_create(&b[i], NULL, busy, NULL))
			return 2;
	usleep(5000);
	int rc;
	if (strcmp(what, "handler") == 0)
		rc = handler_case();
	else if (strcmp(what, "sigwait") == 0)
		rc = sigwait_case(b);
	else if (strncmp(what, "pipe_", 5) == 0 || strncmp(what, "sock_", 5) == 0) {
		use_sock = what[0] == 's';
		rc = pipe_case(strcmp(what + 5, "ign") == 0);
	} else {
		fprintf(stderr, "unknown mode %s\n", what);
		rc = 2;
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(b[i], NULL);
	fflush(stdout);
	return rc;
}
