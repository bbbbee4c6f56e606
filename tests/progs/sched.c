/* sched.c: scheduler behaviour a user can observe: queued threads, and a
 * joiner, are not stranded behind a worker stuck in a computation or in a
 * call the runtime cannot see; idle workers sleep; CAPRICE_WORKERS is
 * honoured; many sleepers wake in deadline order. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

#define QUEUED 6

static uint64_t created_at;
static uint64_t ran_after_ns[QUEUED];

static void *record_start(void *arg)
{
	long i = (long)arg;
	ran_after_ns[i] = tc_now_ns() - created_at;
	return NULL;
}

/* How long a hog holds its worker: well past the latest a queued thread
 * may start (150 ms plus the test slack), so "rescued" and "ran when the
 * hog let go" stay apart even on a loaded machine. */
static uint64_t hog_ns(void)
{
	return tc_late_ns(150) + 500000000ull;
}

static void *spin_hog(void *arg)
{
	(void)arg;
	uint64_t until = tc_now_ns() + hog_ns();
	while (tc_now_ns() < until)
		__asm__ volatile("" ::: "memory"); /* never yields */
	return NULL;
}

static int pipefd[2];

static void *blind_read(void *arg)
{
	(void)arg;
	char c;
	/* a raw system call: the runtime cannot park this thread */
	long n = syscall(SYS_read, pipefd[0], &c, 1);
	return (void *)n;
}

static void *late_writer(void *arg)
{
	(void)arg;
	usleep((useconds_t)(hog_ns() / 1000));
	if (write(pipefd[1], "x", 1) != 1)
		abort();
	return NULL;
}

/* Creates the hog, then QUEUED threads behind it on the same worker,
 * and checks they all ran long before the hog let go. */
static void check_not_stranded(void *(*hog)(void *))
{
	CHECK(caprice_worker_count() >= 2);
	pthread_t h, q[QUEUED];
	created_at = tc_now_ns();
	CHECK_OK(pthread_create(&h, NULL, hog, NULL));
	for (long i = 0; i < QUEUED; i++)
		CHECK_OK(pthread_create(&q[i], NULL, record_start, (void *)i));
	for (int i = 0; i < QUEUED; i++)
		CHECK_OK(pthread_join(q[i], NULL));
	uint64_t done = tc_now_ns() - created_at;
	for (int i = 0; i < QUEUED; i++)
		if (ran_after_ns[i] > tc_late_ns(150))
			TFAIL("queued thread %d waited %.1f ms behind a stuck worker", i,
			      ran_after_ns[i] / 1e6);
	CHECK(done < tc_late_ns(200));
	CHECK_OK(pthread_join(h, NULL));
}

TCASE(queued_threads_not_stranded_by_computation)
{
	check_not_stranded(spin_hog);
}

TCASE(queued_threads_not_stranded_by_unseen_blocking_call)
{
	CHECK_OK(pipe(pipefd) == 0 ? 0 : errno);
	pthread_t w;
	CHECK_OK(pthread_create(&w, NULL, late_writer, NULL));
	check_not_stranded(blind_read);
	CHECK_OK(pthread_join(w, NULL));
}

/* A joiner woken by its joinee's end on their worker runs there next, not
 * behind the threads queued ahead of it: one of those may block the
 * worker in a call the runtime cannot see, and a joiner kept on that
 * worker (as it must be until the joinee is off its stack) would wait
 * for that call to return. */
TCASE(joiner_runs_before_a_queued_thread_that_blocks_its_worker)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	CHECK_OK(pipe(pipefd) == 0 ? 0 : errno);
	pthread_t w, joinee, h;
	CHECK_OK(pthread_create(&w, NULL, late_writer, NULL));
	uint64_t start = tc_now_ns();
	/* the joinee first, then the blocker behind it, on the one worker */
	CHECK_OK(pthread_create(&joinee, NULL, record_start, (void *)0L));
	CHECK_OK(pthread_create(&h, NULL, blind_read, NULL));
	CHECK_OK(pthread_join(joinee, NULL));
	uint64_t joined = tc_now_ns() - start;
	if (joined > tc_late_ns(150))
		TFAIL("pthread_join returned after %.1f ms, behind a blocked worker", joined / 1e6);
	CHECK_OK(pthread_join(h, NULL));
	CHECK_OK(pthread_join(w, NULL));
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void *sleeper(void *arg)
{
	(void)arg;
	usleep(500000);
	return NULL;
}

TCASE(idle_workers_sleep)
{
	pthread_t t;
	double before = cpu_seconds();
	CHECK_OK(pthread_create(&t, NULL, sleeper, NULL));
	usleep(500000);
	CHECK_OK(pthread_join(t, NULL));
	double used = cpu_seconds() - before;
	if (used > 0.05)
		TFAIL("an idle process burned %.3f s of CPU in 0.5 s", used);
}

/* What the children of the CAPRICE_WORKERS cases run (TC_CHILD=1): no
 * case of its own, so that it is never counted as one. */
static void print_worker_count(void)
{
	printf("workers=%d\n", caprice_worker_count());
}

/* Runs this case again as a child with `env` (CAPRICE_WORKERS=...), which
 * prints its worker count; returns its exit status (128 + the signal if
 * one ended it), its output in out. */
static int rerun(const char *env, char *out, size_t outlen)
{
	const char *const extra[] = { env, NULL };
	int st = tc_run_self(tcase_current(), extra, out, outlen, 30);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TCASE(workers_env_honoured)
{
	if (tc_in_child()) {
		print_worker_count();
		return;
	}
	char out[4096];
	CHECK_EQ(rerun("CAPRICE_WORKERS=3", out, sizeof out), 0);
	CHECK(strstr(out, "workers=3") != NULL);
	CHECK_EQ(rerun("CAPRICE_WORKERS=1", out, sizeof out), 0);
	CHECK(strstr(out, "workers=1") != NULL);
}

TCASE(workers_env_refused_with_message)
{
	if (tc_in_child()) {
		print_worker_count();
		return;
	}
	char out[4096];
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	char want[64];
	snprintf(want, sizeof want, "workers=%ld", cpus);
	CHECK_EQ(rerun("CAPRICE_WORKERS=banana", out, sizeof out), 0);
	CHECK(strstr(out, "CAPRICE_WORKERS=banana ignored") != NULL);
	CHECK(strstr(out, want) != NULL);
	CHECK_EQ(rerun("CAPRICE_WORKERS=0", out, sizeof out), 0);
	CHECK(strstr(out, "CAPRICE_WORKERS=0 ignored") != NULL);
}

#define SLEEPERS 1000
static pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
static int woke_order[SLEEPERS];
static int woke_n;
static uint64_t late_ns[SLEEPERS];

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;

static void *timed_sleeper(void *arg)
{
	long i = (long)arg;
	/* every thread exists before the clock starts (creation is slow
	 * under sanitizers) */
	pthread_mutex_lock(&gate_lock);
	while (!gate_open)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	/* deadlines 1 ms apart, handed out in scrambled order */
	long slot = (i * 389) % SLEEPERS;
	uint64_t deadline = created_at + 200000000ull + (uint64_t)slot * 1000000ull;
	uint64_t now = tc_now_ns();
	if (deadline > now)
		usleep((useconds_t)((deadline - now) / 1000));
	uint64_t woke = tc_now_ns();
	pthread_mutex_lock(&order_lock);
	woke_order[woke_n++] = (int)slot;
	late_ns[slot] = woke - deadline;
	pthread_mutex_unlock(&order_lock);
	return NULL;
}

TCASE(sleepers_wake_in_deadline_order)
{
	static pthread_t t[SLEEPERS];
	for (long i = 0; i < SLEEPERS; i++)
		CHECK_OK(pthread_create(&t[i], NULL, timed_sleeper, (void *)i));
	pthread_mutex_lock(&gate_lock);
	created_at = tc_now_ns();
	gate_open = true;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
	for (int i = 0; i < SLEEPERS; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK_EQ(woke_n, SLEEPERS);
	int inversions = 0;
	for (int i = 1; i < SLEEPERS; i++)
		inversions += woke_order[i] < woke_order[i - 1];
	/* 1 ms apart: a worker preempted for a few ms (two test processes
	 * share two CPUs) swaps a few neighbours; a heap out of order would
	 * give about half */
	if (inversions > SLEEPERS * 15 / 100)
		TFAIL("%d of %d sleepers woke out of deadline order", inversions, SLEEPERS);
	/* generous: the suite runs two cases at once on two CPUs */
	int very_late = 0;
	for (int i = 0; i < SLEEPERS; i++)
		very_late += late_ns[i] > tc_late_ns(250);
	if (very_late > 0)
		TFAIL("%d sleepers woke more than %ld ms late", very_late, 250 + tc_slack_ms());
}

/* fork() from a user thread while others exist: the child has a working
 * runtime made around the forking thread (POSIX: it alone survives). */
/* More threads runnable than a run queue's ring holds (256): the rest
 * wait on its overflow lists, where threads woken from I/O (pinned to
 * the worker until they run) are kept apart from the others, and all of
 * them must still run in the order they were woken.  One worker: main
 * posts the semaphore waiters' semaphores, in an order of its own, then
 * makes the pipe readers' bytes ready behind the library's back, and
 * parks in a join; every reaped read queues behind the waiters. */
#define OVER_SEM 300
#define OVER_PIPE 300
static sem_t over_sem[OVER_SEM];
static int over_pipe[OVER_PIPE][2];
static int over_order[OVER_SEM + OVER_PIPE], over_ran, over_started;

static void *over_sem_waiter(void *arg)
{
	long i = (long)arg;
	over_started++; /* one worker and no spare: nothing runs beside it */
	if (sem_wait(&over_sem[i]))
		return (void *)1;
	over_order[over_ran++] = (int)i;
	return NULL;
}

static void *over_pipe_reader(void *arg)
{
	long i = (long)arg;
	over_started++;
	char c;
	if (read(over_pipe[i][0], &c, 1) != 1)
		return (void *)1;
	over_order[over_ran++] = OVER_SEM + (int)i;
	return NULL;
}

TCASE(threads_beyond_the_ring_run_in_the_order_they_were_woken)
{
	/* no spare either: one that covers the worker (when the monitor
	 * finds it blocked in the kernel, making 600 stacks) would run some
	 * of the threads beside it */
	setenv("CAPRICE_SPARE_WORKERS", "0", 1);
	if (tc_rerun_on_workers(1, 60))
		return;
	tc_watchdog(50);
	static pthread_t t[OVER_SEM + OVER_PIPE];
	for (long i = 0; i < OVER_SEM; i++) {
		CHECK_OK(sem_init(&over_sem[i], 0, 0));
		CHECK_OK(pthread_create(&t[i], NULL, over_sem_waiter, (void *)i));
	}
	for (long i = 0; i < OVER_PIPE; i++) {
		CHECK_OK(pipe(over_pipe[i]));
		CHECK_OK(pthread_create(&t[OVER_SEM + i], NULL, over_pipe_reader, (void *)i));
	}
	while (over_started < OVER_SEM + OVER_PIPE)
		tc_msleep(5);
	tc_msleep(20); /* the last ones get to their waits */
	/* the waiters from the last down: their own order is what they must
	 * run in, and they all go before the readers */
	for (int i = OVER_SEM - 1; i >= 0; i--)
		CHECK_OK(sem_post(&over_sem[i]));
	for (int i = 0; i < OVER_PIPE; i++)
		CHECK_EQ(tc_invisible_syscall(SYS_write, over_pipe[i][1], (long)"x", 1), 1);
	for (int i = 0; i < OVER_SEM + OVER_PIPE; i++) {
		void *r;
		CHECK_OK(pthread_join(t[i], &r));
		CHECK(r == NULL);
	}
	CHECK_EQ(over_ran, OVER_SEM + OVER_PIPE);
	static bool seen[OVER_PIPE];
	for (int k = 0; k < OVER_SEM + OVER_PIPE; k++) {
		int id = over_order[k];
		if (k < OVER_SEM && id != OVER_SEM - 1 - k)
			TFAIL("run %d was %d, where semaphore waiter %d was due (woken in "
			      "the order %d..0, before any reader)", k, id, OVER_SEM - 1 - k,
			      OVER_SEM - 1);
		if (k >= OVER_SEM) {
			CHECK(id >= OVER_SEM && !seen[id - OVER_SEM]);
			seen[id - OVER_SEM] = true;
		}
	}
	for (int i = 0; i < OVER_PIPE; i++) {
		CHECK_OK(close(over_pipe[i][0]));
		CHECK_OK(close(over_pipe[i][1]));
	}
}

static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cond = PTHREAD_COND_INITIALIZER;
static bool release_parked;

static void *parked(void *arg)
{
	pthread_mutex_lock(&park_lock);
	while (!release_parked)
		pthread_cond_wait(&park_cond, &park_lock);
	pthread_mutex_unlock(&park_lock);
	return arg;
}

static void *child_echo(void *arg)
{
	int *p = arg;
	char buf[8];
	ssize_t n = read(p[0], buf, sizeof buf);
	if (n > 0 && write(p[1], buf, (size_t)n) != n)
		return (void *)1;
	return NULL;
}

static void *forker(void *arg)
{
	(void)arg;
	pid_t pid = fork();
	if (pid == 0) {
		/* the child: threads, joins, parked I/O, timers all work */
		pthread_t t[100];
		for (long i = 0; i < 100; i++)
			if (pthread_create(&t[i], NULL, record_start, (void *)(i % QUEUED)))
				_exit(10);
		for (int i = 0; i < 100; i++)
			if (pthread_join(t[i], NULL))
				_exit(11);
		int to_child[2], from_child[2];
		if (pipe(to_child) || pipe(from_child))
			_exit(12);
		int ends[2] = { to_child[0], from_child[1] };
		pthread_t e;
		if (pthread_create(&e, NULL, child_echo, ends))
			_exit(13);
		usleep(10000);
		char buf[8] = { 0 };
		if (write(to_child[1], "ping", 4) != 4 || read(from_child[0], buf, 4) != 4 ||
		    memcmp(buf, "ping", 4) != 0)
			_exit(14);
		void *r;
		if (pthread_join(e, &r) || r)
			_exit(15);
		_exit(0);
	}
	int status = -1;
	if (pid > 0)
		waitpid(pid, &status, 0);
	return (void *)(long)status;
}

TCASE(fork_child_has_working_runtime)
{
	pthread_t p[8], f;
	for (int i = 0; i < 8; i++)
		CHECK_OK(pthread_create(&p[i], NULL, parked, NULL));
	usleep(10000);
	CHECK_OK(pthread_create(&f, NULL, forker, NULL));
	void *status;
	CHECK_OK(pthread_join(f, &status));
	int st = (int)(long)status;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		TFAIL("forked child failed: status %#x (exit %d)", st,
		      WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	pthread_mutex_lock(&park_lock);
	release_parked = true;
	pthread_cond_broadcast(&park_cond);
	pthread_mutex_unlock(&park_lock);
	for (int i = 0; i < 8; i++)
		CHECK_OK(pthread_join(p[i], NULL));
}

/* A process under RLIMIT_AS with no room to spare forks: the child rebuilds
 * the runtime (its rings, its workers' kernel threads) in the address
 * space the parent's old rings leave, with smaller rings if it must, and
 * a wait the parent offloads runs in place when no helper thread fits.
 * The child used to die with "io_uring_setup refused (Cannot allocate
 * memory)", and the parent's waitpid with "cannot start a helper". */
static void *rlimit_child_thread(void *arg)
{
	return arg;
}

static long vm_size_kib(void)
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	const char *p = strstr(buf, "VmSize:");
	return p ? atol(p + 7) : -1;
}

TCASE(fork_under_a_tight_rlimit_as)
{
	if (getenv("CAPRICE_TEST_SANITIZED"))
		TSKIP("AddressSanitizer's own allocator maps memory that a tight RLIMIT_AS "
		      "refuses, whatever the runtime does");
	long vm = vm_size_kib();
	CHECK(vm > 0);
	struct rlimit r = { (rlim_t)vm * 1024, (rlim_t)vm * 1024 };
	CHECK_EQ(setrlimit(RLIMIT_AS, &r), 0);
	pid_t pid = fork();
	if (pid == 0) {
		pthread_t t;
		if (pthread_create(&t, NULL, rlimit_child_thread, (void *)7))
			_exit(11);
		void *v;
		if (pthread_join(t, &v) || v != (void *)7)
			_exit(12);
		_exit(0);
	}
	CHECK(pid > 0);
	int st = -1;
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		TFAIL("the child failed: status %#x", st);
}

/* io_uring refused (as with kernel.io_uring_disabled or a container's
 * seccomp policy): the program stops at start-up with a message saying
 * so, instead of hanging or running without its I/O layer.  A seccomp
 * filter makes io_uring_setup fail with EPERM for the child only. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>

static void refuse_io_uring(void)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof code / sizeof code[0], code };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		_exit(120);
}

TCASE(io_uring_refused_is_reported_at_startup)
{
	if (tc_in_child()) {
		print_worker_count(); /* it should never get here */
		return;
	}
	/* not tc_run_self: the filter goes in between fork and exec */
	char exe[PATH_MAX];
	tc_self_exe(exe);
	char **env = tc_child_env(NULL);
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		dup2(p[1], 2);
		refuse_io_uring();
		execle(exe, exe, tcase_current(), (char *)NULL, env);
		_exit(127);
	}
	free(env);
	close(p[1]);
	char out[4096];
	size_t got = 0;
	ssize_t n;
	while (got < sizeof out - 1 && (n = read(p[0], out + got, sizeof out - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = 0;
	close(p[0]);
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0)); /* it must not run on */
	CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 120)); /* seccomp worked */
	if (!strstr(out, "io_uring_setup refused") || !strstr(out, "Operation not permitted"))
		TFAIL("no clear message; stderr was: %s", out);
}

/* The lowest descriptor number above `at` that is not open. */
static int lowest_free_after(int at)
{
	for (int fd = at + 1;; fd++)
		if (fcntl(fd, F_GETFD) < 0)
			return fd;
}

/* Once main runs, the runtime opens no descriptor behind its back (every
 * worker's ring exists before main starts): the daemon idiom of closing
 * fd 0 and opening /dev/null gets 0 back. */
TCASE(no_descriptor_opened_behind_main)
{
	if (tc_rerun_on_workers(2, 30))
		return;
	CHECK_EQ(close(0), 0);
	int fd = open("/dev/null", O_RDONLY);
	CHECK_EQ(fd, 0);
	tc_msleep(20); /* the workers have had time to do anything they would */
	int want = lowest_free_after(0);
	int fd2 = open("/dev/null", O_RDONLY);
	CHECK_EQ(fd2, want);
	close(fd2);
}

/* ---- yields that give way briefly, and acceptors that run at once ---- */

enum { OTHERS = 20, YIELDS = 5 };
static char yield_log[OTHERS + YIELDS + 8];
static int yield_log_len;
static long yielder_compute_ms;

static void busy_ms(long ms)
{
	uint64_t until = tc_now_ns() + (uint64_t)ms * 1000000u;
	while (tc_now_ns() < until)
		__asm__ volatile("" ::: "memory");
}

static void *yielder(void *arg)
{
	(void)arg;
	for (int i = 0; i < YIELDS; i++) {
		yield_log[yield_log_len++] = 'y';
		busy_ms(yielder_compute_ms);
		sched_yield();
	}
	return NULL;
}

static void *other(void *arg)
{
	(void)arg;
	yield_log[yield_log_len++] = 'o';
	return NULL;
}

/* On one worker: the yielder, then OTHERS threads, all queued before any
 * runs.  Returns the log of who ran, in order. */
static const char *run_yielder_among_others(long compute_ms)
{
	yielder_compute_ms = compute_ms;
	yield_log_len = 0;
	/* a busy worker, so that the monitor looks every millisecond again
	 * (after an idle spell it sleeps 20 ms, and a yield then counts as
	 * one after a long run: ran_briefly in sched.c) */
	busy_ms(25);
	pthread_t y = tc_spawn(yielder, NULL), o[OTHERS];
	for (int i = 0; i < OTHERS; i++)
		o[i] = tc_spawn(other, NULL);
	tc_join(y);
	for (int i = 0; i < OTHERS; i++)
		tc_join(o[i]);
	yield_log[yield_log_len] = 0;
	printf("compute %ld ms between yields: %s\n", compute_ms, yield_log);
	return yield_log;
}

/* A thread that yields after running briefly gives way to one queued
 * thread, then runs again (as the kernel runs a yielder that used little
 * CPU again at once): varnishd's pool herder yields after each thread it
 * makes, and went behind every queued thread each time. */
/* Under the location-aware policy the policy orders the queue (its
 * admission may hold an accept loop back), and there is no front slot. */
static void skip_under_2d(void)
{
	const char *sched = getenv("CAPRICE_SCHED");
	if (sched && strcmp(sched, "2d") == 0)
		TSKIP("CAPRICE_SCHED=2d orders the queue by its policy: no front slot");
}

TCASE(a_brief_yield_gives_way_to_one_thread)
{
	skip_under_2d();
	tc_run_alone();
	if (tc_rerun_on_workers(1, 30))
		return;
	/* "yoyoyoyoyo" then the rest.  A look of the monitor between the
	 * yielder's start and its yield makes that yield a full one, and a
	 * monitor kept off its core for 2 ms (a loaded machine) every one:
	 * CI's first pass once saw three tries in a row so, hence ten (each
	 * takes about 25 ms) */
	const char *log = "";
	for (int attempt = 0; attempt < 10; attempt++) {
		log = run_yielder_among_others(0);
		int alternations = 0;
		for (int i = 0; i + 1 < 2 * YIELDS && log[i]; i += 2)
			alternations += log[i] == 'y' && log[i + 1] == 'o';
		if (alternations >= YIELDS - 1)
			return;
	}
	TFAIL("the yielder waited behind the queue: %s", log);
}

/* One that computed past the monitor's look and 2 ms goes behind every
 * queued thread, as a time slice's end sends it. */
TCASE(a_yield_after_computing_goes_behind_the_queue)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	const char *log = run_yielder_among_others(5);
	if (strncmp(log, "yoooooooooooooooooooo", OTHERS + 1) != 0)
		TFAIL("the computing yielder kept its place: %s", log);
}

/* A thread woken by its accept runs before the threads queued on its
 * worker: 200 threads that compute 50 us each are queued when the
 * connection comes; the acceptor must not wait for all of them.  The
 * connection comes from a kernel thread on the other CPU, which another
 * process may hold: a connect made once half the crowd had run is too
 * late to tell, and the scene is set again (3 tries). */
enum { ACCEPT_CROWD = 200, ACCEPT_TRIES = 3 };
static int accept_listener;
static int crowd_ran, crowd_ran_at_accept, crowd_ran_at_connect;

static void *acceptor(void *arg)
{
	(void)arg;
	int c = accept(accept_listener, NULL, NULL);
	CHECK(c >= 0);
	crowd_ran_at_accept = __atomic_load_n(&crowd_ran, __ATOMIC_RELAXED);
	close(c);
	return NULL;
}

static void *crowd(void *arg)
{
	(void)arg;
	uint64_t until = tc_now_ns() + 50000;
	while (tc_now_ns() < until)
		__asm__ volatile("" ::: "memory");
	__atomic_add_fetch(&crowd_ran, 1, __ATOMIC_RELAXED);
	return NULL;
}

static void *connect_loopback(void *arg)
{
	int port = (int)(long)arg;
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	CHECK(s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0);
	crowd_ran_at_connect = __atomic_load_n(&crowd_ran, __ATOMIC_RELAXED);
	return (void *)(long)s;
}

TCASE(an_acceptor_runs_before_the_queued_threads)
{
	skip_under_2d();
	if (tc_rerun_on_workers(1, 30))
		return;
	accept_listener = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	CHECK(accept_listener >= 0 && bind(accept_listener, (struct sockaddr *)&a, sizeof a) == 0 &&
	      listen(accept_listener, 8) == 0 &&
	      getsockname(accept_listener, (struct sockaddr *)&a, &al) == 0);
	for (int try = 1;; try++) {
		crowd_ran = 0;
		crowd_ran_at_accept = crowd_ran_at_connect = -1;
		pthread_t acc = tc_spawn(acceptor, NULL);
		tc_msleep(20); /* parked in its accept */
		pthread_t t[ACCEPT_CROWD];
		for (int i = 0; i < ACCEPT_CROWD; i++)
			t[i] = tc_spawn(crowd, NULL);
		/* the connection comes from a kernel thread of the C library's,
		 * so that nothing on this worker parks for it */
		pthread_t k;
		tc_foreign_run(connect_loopback, (void *)(long)ntohs(a.sin_port), &k);
		int s = (int)(long)tc_foreign_join(k);
		tc_join(acc);
		for (int i = 0; i < ACCEPT_CROWD; i++)
			tc_join(t[i]);
		close(s);
		printf("try %d: connected after %d of %d queued threads had run, accepted after %d\n",
		       try, crowd_ran_at_connect, ACCEPT_CROWD, crowd_ran_at_accept);
		if (crowd_ran_at_connect < ACCEPT_CROWD / 2 || try == ACCEPT_TRIES)
			break;
	}
	CHECK(crowd_ran_at_connect >= 0 && crowd_ran_at_connect < ACCEPT_CROWD / 2);
	/* the worker looks at its ring every 64 switches while it is busy;
	 * behind the queue, the acceptor would wait for all that was left */
	CHECK(crowd_ran_at_accept >= crowd_ran_at_connect &&
	      crowd_ran_at_accept - crowd_ran_at_connect < ACCEPT_CROWD / 2);
}
