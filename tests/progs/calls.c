/* calls.c: the calls libthread serves besides the plain I/O ones: waits
 * that run on a helper kernel thread (waitpid, flock, lockf, F_SETLKW),
 * the program-wide signal mask with sigwait, the names compilers emit
 * (__read_chk, __poll_chk, __open_2), and recvmmsg/sendmmsg, epoll_pwait2
 * and preadv2.
 *
 * Cases that show "only the caller waits" run on one worker (again, in a
 * child: tc_rerun_on_workers): a ticker thread must keep ticking while
 * the call waits, which it could not if the worker did. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

#define MS 1000000ull

/* A child process that holds an exclusive lock of `how` on path for
 * hold_ms, then exits; returns once the lock is held. */
enum lock_kind { BY_FLOCK, BY_FCNTL };

static pid_t child_holding_lock(const char *path, enum lock_kind how, long hold_ms)
{
	int ready[2];
	CHECK_EQ(pipe(ready), 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		int fd = open(path, O_RDWR);
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		int r = how == BY_FLOCK ? flock(fd, LOCK_EX) : fcntl(fd, F_SETLK, &fl);
		if (fd < 0 || r != 0)
			_exit(3);
		if (write(ready[1], "x", 1) != 1)
			_exit(4);
		usleep((useconds_t)hold_ms * 1000);
		_exit(0);
	}
	char c;
	CHECK_EQ(read(ready[0], &c, 1), 1);
	close(ready[0]);
	close(ready[1]);
	return pid;
}

static void reap(pid_t pid)
{
	int st;
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static char lock_path[] = "/tmp/caprice-calls-XXXXXX";

static int lock_file(void)
{
	int fd = mkstemp(lock_path);
	CHECK(fd >= 0);
	return fd;
}

TCASE(flock_waits_for_another_process_parking_only_the_caller)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	int fd = lock_file();
	pid_t pid = child_holding_lock(lock_path, BY_FLOCK, 300);
	CHECK_EQ(flock(fd, LOCK_EX | LOCK_NB), -1);
	CHECK_EQ(errno, EWOULDBLOCK);
	pthread_t t = tc_ticker_start();
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(flock(fd, LOCK_EX), 0);
	CHECK_MS_RANGE(tc_now_ns() - t0, 200, 300);
	long seen = tc_ticks;
	tc_ticker_stop(t);
	if (seen < 20)
		TFAIL("the ticker ticked %ld times while flock waited: the worker waited", seen);
	CHECK_EQ(flock(fd, LOCK_UN), 0);
	reap(pid);
	unlink(lock_path);
	close(fd);
}

TCASE(fcntl_setlkw_and_lockf_park_only_the_caller)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	int fd = lock_file();
	pid_t pid = child_holding_lock(lock_path, BY_FCNTL, 300);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	CHECK_EQ(fcntl(fd, F_SETLK, &fl), -1);
	CHECK(errno == EACCES || errno == EAGAIN);
	CHECK_EQ(lockf(fd, F_TEST, 0), -1);
	CHECK_EQ(lockf(fd, F_TLOCK, 0), -1);
	pthread_t t = tc_ticker_start();
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(fcntl(fd, F_SETLKW, &fl), 0);
	CHECK_MS_RANGE(tc_now_ns() - t0, 200, 300);
	long seen = tc_ticks;
	fl.l_type = F_UNLCK;
	CHECK_EQ(fcntl(fd, F_SETLK, &fl), 0);
	if (seen < 20)
		TFAIL("the ticker ticked %ld times while F_SETLKW waited", seen);
	reap(pid);

	/* lockf(F_LOCK) waits the same way */
	pid = child_holding_lock(lock_path, BY_FCNTL, 300);
	tc_ticks = 0;
	t0 = tc_now_ns();
	CHECK_EQ(lockf(fd, F_LOCK, 0), 0);
	CHECK_MS_RANGE(tc_now_ns() - t0, 200, 300);
	seen = tc_ticks;
	tc_ticker_stop(t);
	if (seen < 20)
		TFAIL("the ticker ticked %ld times while lockf waited", seen);
	CHECK_EQ(lockf(fd, F_ULOCK, 0), 0);
	errno = 0;
	CHECK_EQ(lockf(fd, 12345, 0), -1);
	CHECK_EQ(errno, EINVAL);
	reap(pid);
	unlink(lock_path);
	close(fd);
}

TCASE(waitpid_parks_only_the_caller)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		usleep(300000);
		_exit(7);
	}
	int st = -1;
	CHECK_EQ(waitpid(pid, &st, WNOHANG), 0); /* still running: at once */
	pthread_t t = tc_ticker_start();
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK_MS_RANGE(tc_now_ns() - t0, 200, 300);
	long seen = tc_ticks;
	tc_ticker_stop(t);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7);
	if (seen < 20)
		TFAIL("the ticker ticked %ld times while waitpid waited", seen);
	errno = 0;
	CHECK_EQ(wait(&st), -1); /* no children left */
	CHECK_EQ(errno, ECHILD);
	siginfo_t si;
	errno = 0;
	CHECK_EQ(waitid(P_ALL, 0, &si, WEXITED), -1);
	CHECK_EQ(errno, ECHILD);
}

/* ---- the signal mask is the program's, and sigwait parks -------------- */

static void *sigwaiter(void *arg)
{
	sigset_t *set = arg;
	int sig = 0;
	int e = sigwait(set, &sig);
	return (void *)(long)(e ? -e : sig);
}

TCASE(sigmask_is_process_wide_and_sigwait_parks)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	sigset_t set, old, now;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	CHECK_OK(pthread_sigmask(SIG_BLOCK, &set, &old));
	CHECK(!sigismember(&old, SIGUSR1));
	CHECK_OK(pthread_sigmask(SIG_BLOCK, NULL, &now));
	CHECK(sigismember(&now, SIGUSR1));
	CHECK_EQ(pthread_sigmask(12345, &set, NULL), EINVAL);
	errno = 0;
	CHECK_EQ(sigprocmask(12345, &set, NULL), -1);
	CHECK_EQ(errno, EINVAL);

	pthread_t t = tc_ticker_start();
	pthread_t w;
	CHECK_OK(pthread_create(&w, NULL, sigwaiter, &set));
	usleep(100000); /* the ticker runs while the waiter waits */
	CHECK(tc_ticks >= 20);
	CHECK_EQ(kill(getpid(), SIGUSR1), 0); /* to the process, as a shell would */
	void *r;
	CHECK_OK(pthread_join(w, &r));
	CHECK_EQ((long)r, SIGUSR1);
	tc_ticker_stop(t);

	/* a timed wait that times out, and bad arguments */
	siginfo_t si;
	struct timespec ts = { 0, 100 * 1000000L };
	uint64_t t0 = tc_now_ns();
	errno = 0;
	CHECK_EQ(sigtimedwait(&set, &si, &ts), -1);
	CHECK_EQ(errno, EAGAIN);
	CHECK_MS_RANGE(tc_now_ns() - t0, 99, 300);
	ts.tv_nsec = 1000000000L;
	errno = 0;
	CHECK_EQ(sigtimedwait(&set, &si, &ts), -1);
	CHECK_EQ(errno, EINVAL);
	/* sigwaitinfo reports who sent it */
	CHECK_EQ(kill(getpid(), SIGUSR1), 0);
	CHECK_EQ(sigwaitinfo(&set, &si), SIGUSR1);
	CHECK_EQ(si.si_pid, getpid());
	CHECK_OK(pthread_sigmask(SIG_SETMASK, &old, NULL));
}

/* ---- the names compilers emit ------------------------------------------ */

extern ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
extern int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
extern int __open_2(const char *path, int flags);

static int late_fd;

static void *late_writer(void *arg)
{
	(void)arg;
	usleep(150000);
	if (write(late_fd, "late", 4) != 4)
		abort();
	return NULL;
}

TCASE(fortified_names_park_like_the_plain_ones)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	int p[2];
	CHECK_EQ(pipe(p), 0);
	late_fd = p[1];
	pthread_t t = tc_ticker_start(), w;
	CHECK_OK(pthread_create(&w, NULL, late_writer, NULL));
	struct pollfd pf = { .fd = p[0], .events = POLLIN };
	CHECK_EQ(__poll_chk(&pf, 1, -1, sizeof pf), 1);
	char buf[8];
	CHECK_EQ(__read_chk(p[0], buf, 4, sizeof buf), 4);
	CHECK(memcmp(buf, "late", 4) == 0);
	long seen = tc_ticks;
	CHECK_OK(pthread_join(w, NULL));
	tc_ticker_stop(t);
	if (seen < 20)
		TFAIL("the ticker ticked %ld times while __poll_chk waited", seen);
	int fd = __open_2("/proc/self/stat", O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(close(fd), 0);

	/* a length past the buffer is the C library's overflow abort */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 2);
		__read_chk(p[0], buf, sizeof buf + 1, sizeof buf);
		_exit(0);
	}
	int st;
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
	close(p[0]);
	close(p[1]);
}

/* ---- recvmmsg/sendmmsg, epoll_pwait2, preadv2 ----------------------------- */

static int dgram_fd;

static void *late_sendmmsg(void *arg)
{
	(void)arg;
	usleep(100000);
	struct iovec iov[3] = { { "one", 3 }, { "two!", 4 }, { "three", 5 } };
	struct mmsghdr m[3];
	memset(m, 0, sizeof m);
	for (int i = 0; i < 3; i++) {
		m[i].msg_hdr.msg_iov = &iov[i];
		m[i].msg_hdr.msg_iovlen = 1;
	}
	return (void *)(long)sendmmsg(dgram_fd, m, 3, 0);
}

TCASE(mmsg_pwait2_and_preadv2)
{
	int sv[2];
	CHECK_EQ(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
	dgram_fd = sv[0];
	pthread_t w;
	CHECK_OK(pthread_create(&w, NULL, late_sendmmsg, NULL));
	char b[3][8];
	struct iovec iov[3];
	struct mmsghdr m[3];
	memset(m, 0, sizeof m);
	for (int i = 0; i < 3; i++) {
		iov[i] = (struct iovec){ b[i], sizeof b[i] };
		m[i].msg_hdr.msg_iov = &iov[i];
		m[i].msg_hdr.msg_iovlen = 1;
	}
	uint64_t t0 = tc_now_ns();
	int got = recvmmsg(sv[1], m, 3, 0, NULL); /* parks for the first */
	CHECK(tc_now_ns() - t0 >= 50 * MS);
	void *sent;
	CHECK_OK(pthread_join(w, &sent));
	CHECK_EQ((long)sent, 3);
	int total = got;
	while (total < 3) { /* the rest, if they had not all arrived together */
		int more = recvmmsg(sv[1], m + total, 3 - (unsigned)total, 0, NULL);
		CHECK(more > 0);
		total += more;
	}
	CHECK_EQ(m[0].msg_len, 3);
	CHECK(memcmp(b[0], "one", 3) == 0);
	CHECK_EQ(m[2].msg_len, 5);
	CHECK(memcmp(b[2], "three", 5) == 0);

	int ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK(ep >= 0);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = sv[1] };
	CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, sv[1], &ev), 0);
	struct timespec ts = { 0, 100 * 1000000L };
	t0 = tc_now_ns();
	CHECK_EQ(epoll_pwait2(ep, &ev, 1, &ts, NULL), 0);
	CHECK_MS_RANGE(tc_now_ns() - t0, 99, 300);
	ts.tv_nsec = -1;
	errno = 0;
	CHECK_EQ(epoll_pwait2(ep, &ev, 1, &ts, NULL), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(send(sv[0], "x", 1, 0), 1);
	CHECK_EQ(epoll_pwait2(ep, &ev, 1, NULL, NULL), 1);

	char path[] = "/tmp/caprice-calls-XXXXXX";
	int f = mkstemp(path);
	CHECK(f >= 0);
	unlink(path);
	CHECK_EQ(write(f, "abcdefgh", 8), 8);
	char r[4];
	struct iovec riov = { r, 4 };
	CHECK_EQ(preadv2(f, &riov, 1, 2, 0), 4);
	CHECK(memcmp(r, "cdef", 4) == 0);
	CHECK_EQ(preadv2(f, &riov, 1, 4, RWF_HIPRI), 4); /* with flags: the kernel's call */
	CHECK(memcmp(r, "efgh", 4) == 0);
	CHECK_EQ(lseek(f, 0, SEEK_SET), 0);
	CHECK_EQ(preadv2(f, &riov, 1, -1, 0), 4); /* -1: the file position, which moves */
	CHECK_EQ(lseek(f, 0, SEEK_CUR), 4);
	close(f);
	close(ep);
	close(sv[0]);
	close(sv[1]);
}
