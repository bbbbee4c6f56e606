/* tcase_util.c: helpers shared by the test programs (declared in
 * tcase.h): threads, running a case again as a child process, and the
 * watchdog and worker-spread helpers of the stress cases. */
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

extern char **environ;

/* ------------------------------------------------------------------ */
/* threads                                                            */

pthread_t tc_spawn(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, fn, arg));
	return t;
}

void *tc_join(pthread_t t)
{
	void *r;
	CHECK_OK(pthread_join(t, &r));
	return r;
}

void tc_join_within(pthread_t t, long ms, const char *what)
{
	struct timespec dl = tc_abs_ms(CLOCK_REALTIME, ms);
	int e = pthread_timedjoin_np(t, NULL, &dl);
	if (e == ETIMEDOUT)
		TFAIL("%s: still not back after %ld ms", what, ms);
	CHECK_OK(e);
}

void *tc_report_sched(void *arg)
{
	int *out = arg;
	struct sched_param p;
	if (pthread_getschedparam(pthread_self(), &out[0], &p) != 0)
		return (void *)1;
	out[1] = p.sched_priority;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* I/O                                                                */

long tc_rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	CHECK(f != NULL);
	long size = 0, resident = 0;
	CHECK_EQ(fscanf(f, "%ld %ld", &size, &resident), 2);
	fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

long tc_minor_faults(void)
{
	struct rusage ru;
	CHECK_OK(getrusage(RUSAGE_SELF, &ru));
	return ru.ru_minflt;
}

long tc_await_rss_within(long base, long bound, long ms)
{
	long now = tc_rss_kib();
	for (long waited = 0; now - base > bound && waited < ms; waited += 50) {
		tc_msleep(50);
		now = tc_rss_kib();
	}
	return now;
}

void tc_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n) {
		ssize_t r = write(fd, p, n);
		if (r <= 0)
			TFAIL("write on fd %d: %zd (%s)", fd, r, strerror(errno));
		p += r;
		n -= (size_t)r;
	}
}

void tc_say(const char *s)
{
	(void)syscall(SYS_write, 1, s, strlen(s));
}

/* ------------------------------------------------------------------ */
/* running this program again                                         */

bool tc_in_child(void)
{
	const char *c = getenv("TC_CHILD");
	return c && strcmp(c, "1") == 0;
}

void tc_self_exe(char exe[PATH_MAX])
{
	ssize_t n = readlink("/proc/self/exe", exe, PATH_MAX - 1);
	CHECK(n > 0);
	exe[n] = 0;
}

char **tc_child_env(const char *const *extra)
{
	size_t nenv = 0, nextra = 0;
	while (environ[nenv])
		nenv++;
	while (extra && extra[nextra])
		nextra++;
	char **env = calloc(nenv + nextra + 2, sizeof *env);
	CHECK(env != NULL);
	size_t k = 0;
	for (size_t i = 0; i < nenv; i++) {
		bool drop = strncmp(environ[i], "TC_CHILD=", 9) == 0;
		for (size_t j = 0; j < nextra && !drop; j++)
			drop = strncmp(environ[i], extra[j], strcspn(extra[j], "=") + 1) == 0;
		if (!drop)
			env[k++] = environ[i];
	}
	for (size_t j = 0; j < nextra; j++)
		env[k++] = (char *)extra[j];
	env[k++] = "TC_CHILD=1";
	env[k] = NULL;
	return env;
}

int tc_run_self(const char *case_name, const char *const *extra, char *out, size_t outsz,
                int limit_s)
{
	char exe[PATH_MAX];
	tc_self_exe(exe);
	char **env = tc_child_env(extra);

	/* the output goes to a memory file, read once the child is gone: no
	 * pipe or poll() here, so these cases do not depend on the I/O layer */
	int ofd = memfd_create("tc-child-output", MFD_CLOEXEC);
	CHECK(ofd >= 0);
	posix_spawn_file_actions_t fa;
	CHECK_OK(posix_spawn_file_actions_init(&fa));
	CHECK_OK(posix_spawn_file_actions_adddup2(&fa, ofd, 1));
	CHECK_OK(posix_spawn_file_actions_adddup2(&fa, ofd, 2));
	char *argv[] = { exe, (char *)case_name, NULL };
	pid_t pid;
	CHECK_OK(posix_spawn(&pid, exe, &fa, NULL, argv, env));
	posix_spawn_file_actions_destroy(&fa);
	free(env);
	int status = 0;
	pid_t w;
	uint64_t give_up = tc_now_ns() + (uint64_t)limit_s * 1000000000ull;
	while ((w = waitpid(pid, &status, WNOHANG)) == 0) {
		if (tc_now_ns() > give_up) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			ssize_t got = syscall(SYS_pread64, ofd, out, outsz - 1, 0L);
			out[got > 0 ? got : 0] = 0;
			TFAIL("child %s ran over %d s; its output:\n%s", case_name, limit_s, out);
		}
		usleep(5000);
	}
	CHECK(w == pid);
	ssize_t got = syscall(SYS_pread64, ofd, out, outsz - 1, 0L);
	out[got > 0 ? got : 0] = 0;
	close(ofd);
	return status;
}

bool tc_rerun_on_workers(int workers, int limit_s)
{
	if (tc_in_child()) {
		CHECK_EQ(caprice_worker_count(), workers);
		tcase_report_return = true;
		return false;
	}
	char wenv[32];
	snprintf(wenv, sizeof wenv, "CAPRICE_WORKERS=%d", workers);
	const char *const extra[] = { wenv, NULL };
	static char out[65536];
	int st = tc_run_self(tcase_current(), extra, out, sizeof out, limit_s);
	fputs(out, stdout);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		TFAIL("the case on %d worker(s) failed (status %#x); its output is above", workers,
		      st);
	if (!strstr(out, TCASE_RETURNED_LINE))
		TFAIL("the case on %d worker(s) exited 0 before its end; its output is above", workers);
	return true;
}

bool tc_rerun_must_die(const char *const *extra, const char *const *messages)
{
	if (tc_in_child())
		return false;
	static char out[8192];
	int st = tc_run_self(tcase_current(), extra, out, sizeof out, 30);
	fputs(out, stdout);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		TFAIL("the case's child exited 0; it had to end with a message");
	for (const char *const *m = messages; *m; m++)
		if (!strstr(out, *m))
			TFAIL("the child's output lacks \"%s\"", *m);
	return true;
}

void *tc_libc_sym(const char *name)
{
	void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
	if (!libc)
		TFAIL("dlopen(libc.so.6): %s", dlerror());
	void *f = dlsym(libc, name);
	if (!f)
		TFAIL("the C library has no %s: %s", name, dlerror());
	return f;
}

void tc_foreign_run(void *(*fn)(void *), void *arg, pthread_t *t)
{
	int (*create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
		(int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))
			tc_libc_sym("pthread_create");
	CHECK((void *)create != (void *)pthread_create);
	CHECK_OK(create(t, NULL, fn, arg));
}

void *tc_foreign_join(pthread_t t)
{
	int (*join)(pthread_t, void **) = (int (*)(pthread_t, void **))tc_libc_sym("pthread_join");
	void *r = NULL;
	CHECK_OK(join(t, &r));
	return r;
}

void *tc_shared_alloc(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		TFAIL("mmap(%zu bytes, MAP_SHARED): %s", n, strerror(errno));
	return p;
}

void tc_child_ok(pid_t pid)
{
	int st = 0;
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		TFAIL("child %d ended with wait status %#x, not exit 0", (int)pid, st);
}

/* ------------------------------------------------------------------ */
/* stress cases                                                       */

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "watchdog: the case hung (a lost wakeup?)\n";
	if (write(2, msg, sizeof msg - 1) < 0)
		_exit(4);
	_exit(3);
}

void tc_watchdog(unsigned s)
{
	signal(SIGALRM, on_alarm);
	alarm(s);
}

void tc_note_worker(uint64_t *mask)
{
	int w = caprice_worker_index();
	if (w >= 0 && w < 64)
		__atomic_fetch_or(mask, 1ull << w, __ATOMIC_RELAXED);
}

int tc_count_workers(const uint64_t *mask)
{
	return __builtin_popcountll(__atomic_load_n(mask, __ATOMIC_RELAXED));
}

void tc_spread(uint64_t *mask)
{
	uint64_t t0 = tc_now_ns();
	tc_note_worker(mask);
	while (caprice_worker_count() >= 2 && tc_count_workers(mask) < 2 &&
	       tc_now_ns() - t0 < 2000000000ull) {
		sched_yield();
		tc_note_worker(mask);
	}
}

void tc_check_spread(const uint64_t *mask)
{
	if (caprice_worker_count() >= 2)
		CHECK(tc_count_workers(mask) >= 2);
}

volatile long tc_ticks;
static volatile int ticker_stop;

static void *ticker(void *arg)
{
	(void)arg;
	while (!ticker_stop) {
		usleep(1000);
		tc_ticks++;
	}
	return NULL;
}

pthread_t tc_ticker_start(void)
{
	ticker_stop = 0;
	tc_ticks = 0;
	return tc_spawn(ticker, NULL);
}

void tc_ticker_stop(pthread_t t)
{
	ticker_stop = 1;
	tc_join(t);
}
