/* pl_fork.c: process creation from a threaded program.
 *   pl_fork exec     a thread forks+execs /bin/echo, /bin/true, /bin/false
 *                    and reaps them with waitpid while other threads run
 *   pl_fork child    a thread forks; the child keeps running C code,
 *                    creates and joins a thread, exits 42 when it worked
 *   pl_fork system   system("exit 3") from a thread
 *   pl_fork popen    popen("echo hi") from a thread
 * Prints "<what> ok" (and the busy threads' progress) and exits 0 when
 * every status is right; otherwise says what was wrong and exits 1. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_long ticks;
static atomic_bool stop;
static int failed;

#define EXPECT(c, ...)                                                         \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, __VA_ARGS__);                          \
			fputc('\n', stderr);                                   \
			failed = 1;                                            \
		}                                                              \
	} while (0)

static void *busy(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		usleep(500);
		atomic_fetch_add(&ticks, 1);
	}
	return NULL;
}

static int run_exec(const char *path, const char *arg)
{
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return -1;
	}
	if (pid == 0) {
		execl(path, path, arg, (char *)NULL);
		_exit(127);
	}
	int st = 0;
	pid_t w;
	while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
		;
	EXPECT(w == pid, "waitpid(%d) returned %d", (int)pid, (int)w);
	return st;
}

static void *child_fn(void *arg)
{
	int *v = arg;
	usleep(1000);
	*v = 21;
	return NULL;
}

static void *job(void *arg)
{
	const char *what = arg;
	if (strcmp(what, "exec") == 0) {
		for (int i = 0; i < 3; i++) {
			int st = run_exec("/bin/echo", "child-echo");
			EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "echo status %#x", st);
			st = run_exec("/bin/true", NULL);
			EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "true status %#x", st);
			st = run_exec("/bin/false", NULL);
			EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 1, "false status %#x", st);
		}
	} else if (strcmp(what, "child") == 0) {
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0) {
			int v = 0;
			pthread_t t;
			if (pthread_create(&t, NULL, child_fn, &v) != 0)
				_exit(10);
			if (pthread_join(t, NULL) != 0)
				_exit(11);
			_exit(v * 2); /* 42 */
		}
		EXPECT(pid > 0, "fork failed");
		int st = 0;
		EXPECT(waitpid(pid, &st, 0) == pid, "waitpid failed");
		EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 42, "child status %#x, wanted exit 42",
		       st);
	} else if (strcmp(what, "system") == 0) {
		int st = system("exit 3");
		EXPECT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 3,
		       "system(\"exit 3\") returned %#x", st);
	} else if (strcmp(what, "popen") == 0) {
		FILE *p = popen("echo hi", "r");
		char buf[64] = "";
		EXPECT(p != NULL, "popen failed");
		if (p) {
			EXPECT(fgets(buf, sizeof buf, p) != NULL, "fgets from popen got nothing");
			EXPECT(strcmp(buf, "hi\n") == 0, "popen read \"%s\"", buf);
			int st = pclose(p);
			EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "pclose returned %#x", st);
		}
	} else {
		fprintf(stderr, "unknown mode %s\n", what);
		failed = 1;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "exec";
	pthread_t b[3], j;
	for (int i = 0; i < 3; i++)
		if (pthread_create(&b[i], NULL, busy, NULL))
			return 2;
	usleep(10000);
	long t0 = atomic_load(&ticks);
	if (pthread_create(&j, NULL, job, (void *)what))
		return 2;
	pthread_join(j, NULL);
	/* the busy threads are still alive and going */
	long t1 = atomic_load(&ticks);
	usleep(20000);
	long t2 = atomic_load(&ticks);
	atomic_store(&stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(b[i], NULL);
	EXPECT(t2 > t1, "busy threads stopped after the %s job (ticks %ld then %ld)", what, t1, t2);
	printf("%s %s ticks %ld\n", what, failed ? "FAILED" : "ok", t2 - t0);
	return failed;
}
