/* gdbview.c: gdb's view of the user threads (sched/caprice-gdb.py).
 *
 * `parked` makes four named threads wait in four ways (a condition
 * variable, a mutex, a sleep, a read on an empty pipe), stops at
 * gdbview_stop_here() with main running, then releases them and joins
 * them: on its own it checks only that they come back.  `gdb_listing`
 * runs gdb in batch mode on `parked`: the auto-loaded script must list
 * each thread by name as parked, where it waits, a backtrace of one from
 * its saved context, and `caprice apply all`; afterwards the registers
 * gdb borrowed are the same as before and the program, continued, gets
 * its threads back. */
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "tcase.h"

extern char **environ;

enum { T_COND, T_MUTEX, T_SLEEP, T_READ, NTHREADS };

static pthread_mutex_t cond_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int released;                    /* under cond_lock */
static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static int pipe_fds[2];
static int arrived[NTHREADS];           /* each thread, just before it waits */

static void arrive(int which, const char *name)
{
	CHECK_OK(pthread_setname_np(pthread_self(), name));
	__atomic_store_n(&arrived[which], 1, __ATOMIC_RELEASE);
}

static __attribute__((noinline)) void *cond_waiter(void *arg)
{
	(void)arg;
	CHECK_OK(pthread_mutex_lock(&cond_lock));
	arrive(T_COND, "gv-cond");
	while (!released)
		CHECK_OK(pthread_cond_wait(&cond, &cond_lock));
	CHECK_OK(pthread_mutex_unlock(&cond_lock));
	return NULL;
}

static __attribute__((noinline)) void *mutex_waiter(void *arg)
{
	(void)arg;
	arrive(T_MUTEX, "gv-mutex");
	CHECK_OK(pthread_mutex_lock(&held));
	CHECK_OK(pthread_mutex_unlock(&held));
	return NULL;
}

/* sleeps far past the stop; released by cancellation */
static __attribute__((noinline)) void *sleeper(void *arg)
{
	(void)arg;
	arrive(T_SLEEP, "gv-sleep");
	sleep(600);
	TFAIL("gv-sleep: woke up without being cancelled");
}

static __attribute__((noinline)) void *pipe_reader(void *arg)
{
	(void)arg;
	char c;
	arrive(T_READ, "gv-read");
	ssize_t n = read(pipe_fds[0], &c, 1);
	CHECK_EQ(n, 1);
	CHECK_EQ(c, 'x');
	return NULL;
}

/* gdb stops the program here (breakpoints); asm volatile keeps the calls */
__attribute__((noinline, used)) void gdbview_stop_here(void)
{
	__asm__ volatile("" ::: "memory");
}

/* and here once the threads are back, to kill it before its exit (gdb
 * can trip over kernel threads that end as it continues) */
__attribute__((noinline, used)) void gdbview_done(void)
{
	__asm__ volatile("" ::: "memory");
}

TCASE(parked)
{
	tc_case_limit(120);
	if (tc_in_child())
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* gdb gone (killed): so are we */
	CHECK_EQ(pipe(pipe_fds), 0);
	CHECK_OK(pthread_mutex_lock(&held));
	void *(*const fns[NTHREADS])(void *) = { cond_waiter, mutex_waiter, sleeper,
	                                          pipe_reader };
	pthread_t t[NTHREADS];
	for (int i = 0; i < NTHREADS; i++)
		t[i] = tc_spawn(fns[i], NULL);
	for (int i = 0; i < NTHREADS; i++)
		while (!__atomic_load_n(&arrived[i], __ATOMIC_ACQUIRE))
			tc_msleep(1);
	/* the condition variable waiter is in its wait once the lock is free;
	 * the others are a call away from parking: give them time for it */
	CHECK_OK(pthread_mutex_lock(&cond_lock));
	CHECK_OK(pthread_mutex_unlock(&cond_lock));
	tc_msleep(getenv("CAPRICE_TEST_SANITIZED") ? 500 : 200);

	gdbview_stop_here();

	CHECK_OK(pthread_mutex_lock(&cond_lock));
	released = 1;
	CHECK_OK(pthread_cond_broadcast(&cond));
	CHECK_OK(pthread_mutex_unlock(&cond_lock));
	CHECK_OK(pthread_mutex_unlock(&held));
	CHECK_OK(pthread_cancel(t[T_SLEEP]));
	tc_write_all(pipe_fds[1], "x", 1);
	for (int i = 0; i < NTHREADS; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK(r == (i == T_SLEEP ? PTHREAD_CANCELED : NULL));
	}
	tc_say("gdbview: all threads back\n");
	gdbview_done();
}

/* ---- running gdb ---- */

/* Runs argv (gdb) in its own process group with env, stdin /dev/null and
 * stdout+stderr in a memory file, returned NUL-terminated in a malloc'd
 * buffer; the whole group is killed if it runs over limit_s. */
static char *run_collect(char *const argv[], char *const env[], int limit_s, int *status)
{
	int ofd = memfd_create("gdbview-output", MFD_CLOEXEC);
	CHECK(ofd >= 0);
	posix_spawn_file_actions_t fa;
	CHECK_OK(posix_spawn_file_actions_init(&fa));
	CHECK_OK(posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0));
	CHECK_OK(posix_spawn_file_actions_adddup2(&fa, ofd, 1));
	CHECK_OK(posix_spawn_file_actions_adddup2(&fa, ofd, 2));
	posix_spawnattr_t at;
	CHECK_OK(posix_spawnattr_init(&at));
	CHECK_OK(posix_spawnattr_setpgroup(&at, 0));
	CHECK_OK(posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP));
	pid_t pid;
	CHECK_OK(posix_spawnp(&pid, argv[0], &fa, &at, argv, env));
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);

	bool late = false;
	uint64_t give_up = tc_now_ns() + (uint64_t)limit_s * 1000000000ull;
	pid_t w;
	while ((w = waitpid(pid, status, WNOHANG)) == 0) {
		if (tc_now_ns() > give_up) {
			late = true;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			w = waitpid(pid, status, 0);
			break;
		}
		tc_msleep(10);
	}
	CHECK(w == pid);
	kill(-pid, SIGKILL); /* anything gdb left behind in its group */

	off_t size = lseek(ofd, 0, SEEK_END);
	CHECK(size >= 0);
	char *out = malloc((size_t)size + 1);
	CHECK(out != NULL);
	ssize_t got = syscall(SYS_pread64, ofd, out, (size_t)size, 0L);
	out[got > 0 ? got : 0] = 0;
	close(ofd);
	if (late)
		TFAIL("gdb ran over %d s; its output:\n%s", limit_s, out);
	return out;
}

/* The line of out that holds all of the words (NULL-terminated), copied
 * to line; false if none does. */
static bool line_with(const char *out, const char *const words[], char *line, size_t n)
{
	for (const char *p = out; *p;) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		char buf[1024];
		size_t k = len < sizeof buf - 1 ? len : sizeof buf - 1;
		memcpy(buf, p, k);
		buf[k] = 0;
		bool all = true;
		for (int i = 0; words[i] && all; i++)
			all = strstr(buf, words[i]) != NULL;
		if (all) {
			snprintf(line, n, "%s", buf);
			return true;
		}
		p += len + (e ? 1 : 0);
	}
	return false;
}

/* The text between the lines "MARK-<from>" and "MARK-<to>" gdb echoed. */
static char *section(const char *out, const char *from, const char *to)
{
	char a[64], b[64];
	snprintf(a, sizeof a, "MARK-%s\n", from);
	snprintf(b, sizeof b, "MARK-%s\n", to);
	const char *s = strstr(out, a), *e = s ? strstr(s, b) : NULL;
	if (!s || !e)
		TFAIL("no section %s..%s in gdb's output:\n%s", from, to, out);
	s += strlen(a);
	char *r = strndup(s, (size_t)(e - s));
	CHECK(r != NULL);
	return r;
}

#define EXPECT_LINE(text, what, ...)                                                    \
	do {                                                                            \
		const char *const w_[] = { __VA_ARGS__, NULL };                         \
		char l_[1024];                                                          \
		if (!line_with((text), w_, l_, sizeof l_))                              \
			TFAIL("%s: no line with all of " #__VA_ARGS__ " in:\n%s\n"      \
			      "(gdb's whole output:\n%s)", (what), (text), out);        \
	} while (0)

TCASE(gdb_listing)
{
	tc_case_limit(200);
	char exe[PATH_MAX], dir[PATH_MAX];
	tc_self_exe(exe);
	/* <build>/tests/gdbview: the libraries and their -gdb.py are in <build> */
	snprintf(dir, sizeof dir, "%s", exe);
	char *build = dirname(dirname(dir));
	char safe[PATH_MAX + 64];
	snprintf(safe, sizeof safe, "add-auto-load-safe-path %s", build);

	char *argv[] = {
		"gdb", "-nx", "-batch",
		"-iex", "set debuginfod enabled off",
		"-iex", safe,
		"-ex", "set pagination off",
		"-ex", "set confirm off",
		"-ex", "set width 0",
		"-ex", "handle SIGURG nostop noprint pass",
		"-ex", "break gdbview_stop_here",
		"-ex", "break gdbview_done",
		"-ex", "run",
		"-ex", "python print('SP-BEFORE', int(gdb.parse_and_eval('$sp')), int(gdb.parse_and_eval('$pc')))",
		"-ex", "echo MARK-threads\\n",
		"-ex", "caprice threads",
		"-ex", "echo MARK-workers\\n",
		"-ex", "caprice workers",
		"-ex", "echo MARK-bt\\n",
		"-ex", "caprice bt gv-cond",
		"-ex", "echo MARK-apply\\n",
		"-ex", "caprice apply all frame 1",
		"-ex", "echo MARK-end\\n",
		"-ex", "python print('SP-AFTER', int(gdb.parse_and_eval('$sp')), int(gdb.parse_and_eval('$pc')))",
		"-ex", "continue",
		"-ex", "kill",
		"--args", exe, "parked", NULL,
	};
	/* gdb must not run with a sanitizer runtime preloaded (the program
	 * links its own); the program runs on two workers */
	const char *const extra[] = { "CAPRICE_WORKERS=2", "LD_PRELOAD=", NULL };
	char **env = tc_child_env(extra);
	int status;
	char *out = run_collect(argv, env, 150, &status);
	free(env);

	if (!strstr(out, "gdbview_stop_here"))
		TFAIL("the program never stopped at gdbview_stop_here; gdb said:\n%s", out);
	char *list = section(out, "threads", "workers");
	char *bt = section(out, "bt", "apply");
	char *apply = section(out, "apply", "end");

	/* the listing: each thread by name, parked, with where it waits */
	EXPECT_LINE(list, "listing", "Id", "Name", "State", "Worker", "Where");
	EXPECT_LINE(list, "main", "1 ", "running", "gdbview_stop_here");
	EXPECT_LINE(list, "gv-cond", "gv-cond", "parked", "pthread_cond_wait <- cond_waiter at gdbview.c:");
	EXPECT_LINE(list, "gv-mutex", "gv-mutex", "parked", "pthread_mutex_lock <- mutex_waiter at gdbview.c:");
	EXPECT_LINE(list, "gv-sleep", "gv-sleep", "parked", "<- sleeper at gdbview.c:");
	EXPECT_LINE(list, "gv-read", "gv-read", "parked", "read <- pipe_reader at gdbview.c:");

	/* one backtrace, from the saved context down to the thread's start */
	EXPECT_LINE(bt, "bt header", "Caprice thread", "gv-cond", "parked");
	EXPECT_LINE(bt, "bt frame 0", "#0", "cp_ctx_switch");
	EXPECT_LINE(bt, "bt wait", "pthread_cond_wait");
	EXPECT_LINE(bt, "bt caller", "cond_waiter", "gdbview.c:");

	/* apply: a header and the command's output per thread */
	EXPECT_LINE(apply, "apply main", "Caprice thread 1 ", "running");
	EXPECT_LINE(apply, "apply gv-read", "Caprice thread", "gv-read", "parked");
	EXPECT_LINE(apply, "apply gv-mutex", "Caprice thread", "gv-mutex", "parked");

	/* the borrowed registers are back and the program carries on */
	const char *b = strstr(out, "SP-BEFORE "), *a = strstr(out, "SP-AFTER ");
	CHECK(b && a);
	size_t lb = strcspn(b + 10, "\n"), la = strcspn(a + 9, "\n");
	if (lb != la || strncmp(b + 10, a + 9, lb) != 0)
		TFAIL("registers not restored: %.*s against %.*s", (int)lb, b + 10, (int)la, a + 9);
	EXPECT_LINE(out, "the program's end", "gdbview: all threads back");
	EXPECT_LINE(out, "the program's end", "Breakpoint 2, gdbview_done");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		TFAIL("gdb ended with status 0x%x:\n%s", status, out);
	free(list);
	free(bt);
	free(apply);
	free(out);
}
