/* linked.c: linked stacks against contiguous ones, in one binary.
 *
 * Built with -fsplit-stack and gold as `pkg-config --cflags --libs
 * caprice` says, so a thread whose start routine is here runs on a linked
 * stack; start routines marked no_split_stack get today's contiguous
 * pooled stacks.  Every figure is measured both ways in the same run:
 *   - the hot split: a call whose frame never fits in the chunk it is
 *     made from, in a loop (so every call and return crosses a chunk
 *     boundary), against the same call on a contiguous stack;
 *   - create+join and a yield ping-pong between two threads;
 *   - memory per blocked thread (RSS and page tables over N threads
 *     waiting on one condition variable), each kind in a fresh process.
 * Timings are medians of --rounds runs.
 *
 *   linked [--threads N] [--rounds R] [--json]
 *   linked --census linked|contiguous [--threads N]
 *       only the memory census, of one kind (5,000,000 linked threads fit
 *       on a 24 GiB machine; as many contiguous ones do not)
 */
#define BENCH_NAME "linked"
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"

#define NO_SPLIT __attribute__((no_split_stack, noinline))

static long opt_threads = 100000;
static int opt_rounds = 5;
static bool opt_json;

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return v[n / 2];
}

/* ---- the hot split -------------------------------------------------- */

#define CALLS 2000000

/* 7.5 KiB: never fits beside the thread record in the first 8 KiB chunk,
 * so on a linked stack every call enters the kept chunk and every return
 * leaves it */
static __attribute__((noinline)) int big_frame(int i)
{
	volatile char buf[7680];
	buf[i & 4095] = (char)i;
	return buf[i & 4095];
}

/* the loop itself calls nothing without prologues (which would put its
 * whole frame on a big chunk, where big_frame fits) */
static __attribute__((noinline)) long call_loop(void)
{
	long sum = 0;
	for (int i = 0; i < CALLS; i++)
		sum += big_frame(i);
	return sum;
}

static __attribute__((noinline)) long call_loop_plain(void)
{
	long sum = 0;
	for (int i = 0; i < CALLS; i++)
		sum += big_frame(i);
	return sum;
}

static __attribute__((noinline)) uint64_t clock_now(void)
{
	return now_ns();
}

static void *time_loop_linked(void *arg)
{
	double *ns = arg;
	call_loop(); /* the kept chunk exists from here on */
	uint64_t t0 = clock_now();
	long s = call_loop();
	*ns = (double)(clock_now() - t0) / CALLS + (s == 42 ? 1e-9 : 0);
	return NULL;
}

NO_SPLIT static void *time_loop_contiguous(void *arg)
{
	double *ns = arg;
	call_loop_plain();
	uint64_t t0 = now_ns();
	long s = call_loop_plain();
	*ns = (double)(now_ns() - t0) / CALLS + (s == 42 ? 1e-9 : 0);
	return NULL;
}

static void run_thread(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	int e = pthread_create(&t, NULL, fn, arg);
	if (e)
		die("pthread_create: %s", strerror(e));
	pthread_join(t, NULL);
}

/* ---- create+join, yield -------------------------------------------- */

#define CREATES 200000
#define YIELDS  2000000

static void *empty_linked(void *arg)
{
	return arg;
}

NO_SPLIT static void *empty_contiguous(void *arg)
{
	return arg;
}

static double create_join(void *(*fn)(void *))
{
	uint64_t t0 = now_ns();
	for (int i = 0; i < CREATES; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, fn, NULL))
			die("pthread_create failed");
		pthread_join(t, NULL);
	}
	return (double)(now_ns() - t0) / CREATES;
}

static void *yielder_linked(void *arg)
{
	(void)arg;
	for (int i = 0; i < YIELDS; i++)
		sched_yield();
	return NULL;
}

NO_SPLIT static void *yielder_contiguous(void *arg)
{
	(void)arg;
	for (int i = 0; i < YIELDS; i++)
		sched_yield();
	return NULL;
}

static double yield_pair(void *(*fn)(void *))
{
	pthread_t a, b;
	uint64_t t0 = now_ns();
	pthread_create(&a, NULL, fn, NULL);
	pthread_create(&b, NULL, fn, NULL);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	return (double)(now_ns() - t0) / (2.0 * YIELDS);
}

/* ---- memory per blocked thread (in a child process) ------------------ */

static void *census_linked(void *arg)
{
	census_arrive_and_wait(arg);
	return NULL;
}

NO_SPLIT static void *census_contiguous(void *arg)
{
	census_arrive_and_wait(arg);
	return NULL;
}

static long status_kib(const char *text, const char *name)
{
	const char *p = strstr(text, name);
	return p ? strtol(p + strlen(name), NULL, 10) : -1;
}

static void read_vm(long *rss_kib, long *pte_kib)
{
	char buf[8192];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		die("/proc/self/status: %s", strerror(errno));
	buf[n] = 0;
	*rss_kib = status_kib(buf, "\nVmRSS:");
	*pte_kib = status_kib(buf, "\nVmPTE:");
}

/* prints "rss_bytes pte_bytes made" per thread */
static void child_census(bool linked)
{
	pthread_t *h = calloc((size_t)opt_threads, sizeof *h);
	if (!h)
		die("out of memory");
	memset(h, 0xff, (size_t)opt_threads * sizeof *h);
	struct census c = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
	                    PTHREAD_COND_INITIALIZER, 0, opt_threads, false };
	long rss0, pte0, rss1, pte1;
	read_vm(&rss0, &pte0);
	long made = 0;
	for (; made < opt_threads; made++)
		if (pthread_create(&h[made], NULL, linked ? census_linked : census_contiguous, &c))
			break;
	pthread_mutex_lock(&c.m);
	c.target = made;
	while (c.arrived < made)
		pthread_cond_wait(&c.all_in, &c.m);
	pthread_mutex_unlock(&c.m);
	read_vm(&rss1, &pte1);
	pthread_mutex_lock(&c.m);
	c.released = true;
	pthread_cond_broadcast(&c.cv);
	pthread_mutex_unlock(&c.m);
	for (long i = 0; i < made; i++)
		pthread_join(h[i], NULL);
	printf("%.1f %.1f %ld\n", (double)(rss1 - rss0) * 1024 / (double)made,
	       (double)(pte1 - pte0) * 1024 / (double)made, made);
	fflush(stdout);
	_exit(0);
}

static void census(const char *self, const char *kind, double *rss, double *pte, long *made)
{
	int p[2];
	if (pipe(p))
		die("pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		char n[32];
		snprintf(n, sizeof n, "%ld", opt_threads);
		execl(self, self, "--child", kind, "--threads", n, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	char buf[256] = "";
	ssize_t r = read(p[0], buf, sizeof buf - 1);
	close(p[0]);
	int st;
	waitpid(pid, &st, 0);
	if (r <= 0 || sscanf(buf, "%lf %lf %ld", rss, pte, made) != 3)
		die("census child (%s) printed nothing usable (status %#x)", kind, st);
}

int main(int argc, char **argv)
{
	const char *child = NULL, *census_only = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			opt_threads = atol(argv[++i]);
		else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
			opt_rounds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--child") && i + 1 < argc)
			child = argv[++i];
		else if (!strcmp(argv[i], "--census") && i + 1 < argc)
			census_only = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			opt_json = true;
		else
			die("usage: linked [--threads N] [--rounds R] [--json] | --census KIND [--threads N]");
	}
	if (child) {
		child_census(strcmp(child, "linked") == 0);
		return 0;
	}
	if (census_only) {
		if (strcmp(census_only, "linked") && strcmp(census_only, "contiguous"))
			die("--census: linked or contiguous");
		double rss, pte;
		long made;
		uint64_t t0 = now_ns();
		census(argv[0], census_only, &rss, &pte, &made);
		printf("%ld blocked %s threads: %.0f bytes RSS and %.0f bytes of page tables each "
		       "(%.1f s in all)\n", made, census_only, rss, pte, (double)(now_ns() - t0) / 1e9);
		return 0;
	}
	if (opt_rounds < 1 || opt_rounds > 99)
		die("--rounds: 1 to 99");
	double split[99], plain[99], cj_l[99], cj_c[99], y_l[99], y_c[99];
	for (int r = 0; r < opt_rounds; r++) {
		run_thread(time_loop_linked, &split[r]);
		run_thread(time_loop_contiguous, &plain[r]);
		cj_l[r] = create_join(empty_linked);
		cj_c[r] = create_join(empty_contiguous);
		y_l[r] = yield_pair(yielder_linked);
		y_c[r] = yield_pair(yielder_contiguous);
	}
	double ms = median(split, opt_rounds), mp = median(plain, opt_rounds);
	double cl = median(cj_l, opt_rounds), cc = median(cj_c, opt_rounds);
	double yl = median(y_l, opt_rounds), yc = median(y_c, opt_rounds);
	double rss_l, pte_l, rss_c, pte_c;
	long made_l, made_c;
	census(argv[0], "linked", &rss_l, &pte_l, &made_l);
	census(argv[0], "contiguous", &rss_c, &pte_c, &made_c);
	if (opt_json) {
		printf("{\"hot_split_ns\": %.2f, \"plain_call_ns\": %.2f, \"create_join_linked_ns\": %.1f, "
		       "\"create_join_contiguous_ns\": %.1f, \"yield_linked_ns\": %.2f, "
		       "\"yield_contiguous_ns\": %.2f, \"blocked_rss_linked_bytes\": %.0f, "
		       "\"blocked_pte_linked_bytes\": %.0f, \"blocked_rss_contiguous_bytes\": %.0f, "
		       "\"blocked_pte_contiguous_bytes\": %.0f, \"threads\": %ld}\n",
		       ms, mp, cl, cc, yl, yc, rss_l, pte_l, rss_c, pte_c, made_l);
		return 0;
	}
	printf("linked stacks against contiguous ones (medians of %d rounds)\n\n", opt_rounds);
	printf("%-44s %10s %12s %7s\n", "", "linked", "contiguous", "ratio");
	printf("%-44s %10.2f %12.2f %6.2fx\n", "call+return across a chunk boundary (ns)", ms, mp,
	       ms / mp);
	printf("%-44s %10.1f %12.1f %6.2fx\n", "create+join (ns)", cl, cc, cl / cc);
	printf("%-44s %10.2f %12.2f %6.2fx\n", "yield, two threads (ns per yield)", yl, yc, yl / yc);
	printf("%-44s %10.0f %12.0f %6.2fx\n", "RSS per blocked thread (bytes)", rss_l, rss_c,
	       rss_l / rss_c);
	printf("%-44s %10.0f %12.0f\n", "page tables per blocked thread (bytes)", pte_l, pte_c);
	printf("%-44s %10ld %12ld\n", "blocked threads", made_l, made_c);
	return 0;
}
