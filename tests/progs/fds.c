/* fds.c: the runtime's own descriptors (its rings, eventfds, /proc files
 * and pipes) against a program that closes what it did not open:
 * closefrom, close_range, a close of every number, dup2 onto one.  Each
 * case ends by running threads that park on the ring of every worker, so
 * a ring closed under the runtime fails it (io_uring_enter's EBADF stops
 * the process) rather than passing by luck. */
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "tcase.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1u << 2)
#endif

/* ---- the runtime at work ---- */

enum { PAIRS = 8, ROUNDS = 200 };

struct pair {
	int ping[2], pong[2];
	uint64_t workers; /* tc_note_worker's mask */
};

static void *echoer(void *arg)
{
	struct pair *p = arg;
	char c;
	for (int i = 0; i < ROUNDS; i++) {
		tc_note_worker(&p->workers);
		CHECK_EQ(read(p->ping[0], &c, 1), 1);
		CHECK_EQ(write(p->pong[1], &c, 1), 1);
	}
	return NULL;
}

static void *pinger(void *arg)
{
	struct pair *p = arg;
	for (int i = 0; i < ROUNDS; i++) {
		char c = (char)i, back;
		tc_note_worker(&p->workers);
		CHECK_EQ(write(p->ping[1], &c, 1), 1);
		CHECK_EQ(read(p->pong[0], &back, 1), 1);
		CHECK_EQ(back, c);
		if (i % 50 == 0)
			usleep(100); /* a timer, on this worker's ring */
	}
	return NULL;
}

/* Pipe ping-pong between PAIRS pairs of threads over both workers, and a
 * sendfile through the runtime's pooled pipe: all of it parks on the
 * rings, so it fails if one is gone. */
static void runtime_still_works(void)
{
	static struct pair pairs[PAIRS];
	pthread_t t[2 * PAIRS];
	uint64_t seen = 0;
	for (int i = 0; i < PAIRS; i++) {
		struct pair *p = &pairs[i];
		memset(p, 0, sizeof *p);
		CHECK_EQ(pipe(p->ping), 0);
		CHECK_EQ(pipe(p->pong), 0);
		t[2 * i] = tc_spawn(echoer, p);
		t[2 * i + 1] = tc_spawn(pinger, p);
	}
	for (int i = 0; i < 2 * PAIRS; i++)
		tc_join_within(t[i], 20000, "a thread of the ping-pong");
	for (int i = 0; i < PAIRS; i++) {
		seen |= pairs[i].workers;
		for (int k = 0; k < 2; k++) {
			CHECK_EQ(close(pairs[i].ping[k]), 0);
			CHECK_EQ(close(pairs[i].pong[k]), 0);
		}
	}
	if (sysconf(_SC_NPROCESSORS_ONLN) > 1 && !getenv("CAPRICE_WORKERS"))
		CHECK(tc_count_workers(&seen) > 1);

	/* sendfile from a socket splices through one of the runtime's pipes */
	int sv[2], out[2];
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	CHECK_EQ(pipe(out), 0);
	CHECK_EQ(write(sv[1], "sendfile", 8), 8);
	CHECK_EQ(sendfile(out[1], sv[0], NULL, 8), 8);
	char got[9] = { 0 };
	CHECK_EQ(read(out[0], got, 8), 8);
	CHECK(strcmp(got, "sendfile") == 0);
	for (int k = 0; k < 2; k++) {
		CHECK_EQ(close(sv[k]), 0);
		CHECK_EQ(close(out[k]), 0);
	}
}

/* ---- the runtime's descriptors ---- */

/* What /proc/self/fd/fd names ("" if it is not open). */
static void fd_target(int fd, char *out, size_t n)
{
	char link[64];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t got = readlink(link, out, n - 1);
	out[got > 0 ? got : 0] = 0;
}

/* The descriptors open in this process, from /proc, up to max. */
enum { OPEN_MAX_LISTED = 1024 };
static int open_fds(int *fds, int max)
{
	DIR *d = opendir("/proc/self/fd");
	CHECK(d != NULL);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL && n < max) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd != dirfd(d))
			fds[n++] = fd;
	}
	closedir(d);
	return n;
}

/* The io_uring descriptors open in this process: the runtime's (the
 * program opened none).  Returns how many, up to max. */
static int runtime_rings(int *fds, int max)
{
	static int open[OPEN_MAX_LISTED];
	int nopen = open_fds(open, OPEN_MAX_LISTED), n = 0;
	for (int i = 0; i < nopen && n < max; i++) {
		char what[64];
		fd_target(open[i], what, sizeof what);
		if (strcmp(what, "anon_inode:[io_uring]") == 0)
			fds[n++] = open[i];
	}
	return n;
}

static bool is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* Where rtfd.c moves them: a window of 256 below RLIMIT_NOFILE or 1,024,
 * whichever is lower. */
static int runtime_floor(void)
{
	struct rlimit rl;
	CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
	long limit = rl.rlim_cur < 1024 ? (long)rl.rlim_cur : 1024;
	return (int)(limit > 512 ? limit - 256 : limit / 2);
}

TCASE(the_runtime_keeps_its_descriptors_out_of_the_way)
{
	runtime_still_works(); /* every worker has made its ring */
	int rings[64];
	int n = runtime_rings(rings, 64);
	CHECK(n >= 2); /* worker 0's and worker 1's at least (and spares') */
	int floor = runtime_floor();
	for (int i = 0; i < n; i++) {
		int r = rings[i];
		if (r < floor)
			TFAIL("the runtime's ring is descriptor %d, below %d", r, floor);
		/* not the program's: as if not open */
		errno = 0;
		CHECK_EQ(close(r), -1);
		CHECK_EQ(errno, EBADF);
		errno = 0;
		CHECK_EQ(syscall(SYS_close, r), -1);
		CHECK_EQ(errno, EBADF);
		errno = 0;
		CHECK_EQ(dup2(0, r), -1);
		CHECK_EQ(errno, EBADF);
		errno = 0;
		CHECK_EQ(dup3(0, r, O_CLOEXEC), -1);
		CHECK_EQ(errno, EBADF);
		errno = 0;
		CHECK_EQ(dup(r), -1);
		CHECK_EQ(errno, EBADF);
		CHECK_EQ(syscall(SYS_close_range, r, r, 0), 0); /* nothing of the program's there */
		CHECK(is_open(r));
	}
	/* the program's own, next to them, close as ever */
	int mine = fcntl(0, F_DUPFD, floor);
	CHECK(mine >= floor);
	CHECK_EQ(close(mine), 0);
	CHECK(!is_open(mine));
	runtime_still_works();
}

TCASE(closefrom_leaves_the_runtime_running)
{
	runtime_still_works();
	int p[2];
	CHECK_EQ(pipe(p), 0);
	int high = fcntl(p[0], F_DUPFD, runtime_floor() + 3); /* among the runtime's */
	CHECK(high >= 0);
	closefrom(3); /* what varnishd does first: close_range(3, ~0U, 0) in glibc */
	CHECK(!is_open(p[0]));
	CHECK(!is_open(p[1]));
	CHECK(!is_open(high));
	CHECK(is_open(0) && is_open(1) && is_open(2));
	runtime_still_works();
	/* and through the system call, as a program without closefrom does it */
	CHECK_EQ(pipe(p), 0);
	CHECK_EQ(syscall(SYS_close_range, 3, ~0u, 0), 0);
	CHECK(!is_open(p[0]));
	runtime_still_works();
}

TCASE(closing_every_number_leaves_the_runtime_running)
{
	runtime_still_works();
	long max = sysconf(_SC_OPEN_MAX);
	CHECK(max > 3);
	int closed = 0;
	for (long fd = 3; fd < max; fd++) /* the old daemon's loop */
		closed += close((int)fd) == 0;
	printf("closed %d of %ld numbers\n", closed, max - 3);
	runtime_still_works();
}

TCASE(close_range_cloexec_only_marks)
{
	int p[2];
	CHECK_EQ(pipe(p), 0);
	CHECK_EQ(fcntl(p[0], F_GETFD) & FD_CLOEXEC, 0);
	CHECK_EQ(close_range(3, ~0u, CLOSE_RANGE_CLOEXEC), 0);
	CHECK(fcntl(p[0], F_GETFD) & FD_CLOEXEC);
	CHECK(fcntl(p[1], F_GETFD) & FD_CLOEXEC);
	CHECK_EQ(write(p[1], "x", 1), 1);
	char c;
	CHECK_EQ(read(p[0], &c, 1), 1);
	runtime_still_works();
}

static int blocked_pipe[2];
static long blocked_read, blocked_errno;

static void *read_blocked(void *arg)
{
	(void)arg;
	char c;
	errno = 0;
	blocked_read = read(blocked_pipe[0], &c, 1);
	blocked_errno = errno;
	return NULL;
}

/* A thread parked in a read of a descriptor that close_range closes
 * comes back with EBADF, as from close(), instead of waiting for good on
 * an operation nobody will complete. */
TCASE(close_range_wakes_a_reader_of_a_descriptor_it_closes)
{
	CHECK_EQ(pipe(blocked_pipe), 0);
	pthread_t t = tc_spawn(read_blocked, NULL);
	tc_msleep(50); /* parked in its read */
	int lo = blocked_pipe[0] < blocked_pipe[1] ? blocked_pipe[0] : blocked_pipe[1];
	int hi = blocked_pipe[0] ^ blocked_pipe[1] ^ lo;
	CHECK_EQ(close_range((unsigned)lo, (unsigned)hi, 0), 0);
	tc_join_within(t, 5000, "the reader of the closed pipe");
	CHECK_EQ(blocked_read, -1);
	CHECK_EQ(blocked_errno, EBADF);
	CHECK(!is_open(blocked_pipe[0]) && !is_open(blocked_pipe[1]));
	runtime_still_works();
}

/* What the runtime's descriptors name that only this process should use:
 * sendfile's pooled pipes ("pipe:[N]") and the monitor's files of this
 * process's tasks ("/proc/PID/task/..."), up to max, from /proc. */
enum { OWN_MAX = 64 };
static int process_own_targets(char (*out)[64], int max)
{
	char task_prefix[32];
	snprintf(task_prefix, sizeof task_prefix, "/proc/%d/task/", (int)getpid());
	static int open[OPEN_MAX_LISTED];
	int nopen = open_fds(open, OPEN_MAX_LISTED), n = 0;
	for (int i = 0; i < nopen && n < max; i++) {
		if (open[i] < runtime_floor())
			continue;
		fd_target(open[i], out[n], sizeof out[n]);
		if (strncmp(out[n], "pipe:", 5) == 0 ||
		    strncmp(out[n], task_prefix, strlen(task_prefix)) == 0)
			n++;
	}
	return n;
}

/* A forked child gets rings of its own, and closes what it inherited. */
TCASE(a_forked_child_closes_what_it_inherited)
{
	runtime_still_works(); /* a sendfile leaves a pipe in the pool */
	static char parents[OWN_MAX][64];
	int nparent = process_own_targets(parents, OWN_MAX);
	CHECK(nparent > 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		/* the parent's pooled pipes (two processes splicing through one
		 * would mix their bytes) and its /proc task files are closed */
		static int open[OPEN_MAX_LISTED];
		int nopen = open_fds(open, OPEN_MAX_LISTED);
		for (int k = 0; k < nopen; k++) {
			char what[64];
			fd_target(open[k], what, sizeof what);
			for (int i = 0; i < nparent; i++)
				if (strcmp(what, parents[i]) == 0)
					TFAIL("the child still holds the parent's %s (fd %d)", what,
					      open[k]);
		}
		closefrom(3);
		runtime_still_works();
		fflush(NULL);
		_exit(0);
	}
	tc_child_ok(pid);
	runtime_still_works();
}
