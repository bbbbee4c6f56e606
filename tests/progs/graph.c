/* graph.c: the blocking graph (sched/location.c): with CAPRICE_SCHED=2d
 * every park records where the thread blocked, and CAPRICE_GRAPH gets the
 * graph at exit: a node per blocking point, an edge per pair of
 * consecutive ones, with its count and the CPU time run between. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

#define ROUNDS 200

static int pipefd[2];

static void *writer(void *arg)
{
	(void)arg;
	for (int i = 0; i < ROUNDS; i++) {
		usleep(100);
		CHECK_EQ(write(pipefd[1], "x", 1), 1);
	}
	return NULL;
}

static __attribute__((noipa)) void wait_for_data(void)
{
	char c;
	CHECK_EQ(read(pipefd[0], &c, 1), 1);
}

/* (the empty asm keeps the call from being a tail call, which would
 * park with its caller's return address: the site is this function) */
#define NOT_A_TAIL_CALL() __asm__ volatile("" ::: "memory")

static __attribute__((noipa)) void nap(void)
{
	usleep(50);
	NOT_A_TAIL_CALL();
}

/* two blocking points in turn, with some work between */
static void two_points(void)
{
	CHECK_EQ(pipe(pipefd), 0);
	pthread_t t = tc_spawn(writer, NULL);
	for (int i = 0; i < ROUNDS; i++) {
		wait_for_data();
		volatile long s = 0;
		for (int j = 0; j < 20000; j++)
			s += j;
		nap();
	}
	tc_join(t);
}

static char *read_file(const char *path)
{
	static char buf[4 << 20]; /* a graph of a thousand nodes is a few hundred KiB */
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return NULL;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

static char graph_path[128];

/* runs the case again with env, whose graph file is graph_path */
static bool rerun_with(const char *sched)
{
	if (tc_in_child())
		return false;
	snprintf(graph_path, sizeof graph_path, "/tmp/caprice-graph-%d.dot", (int)getpid());
	unlink(graph_path);
	char s[64], g[160];
	snprintf(s, sizeof s, "CAPRICE_SCHED=%s", sched);
	snprintf(g, sizeof g, "CAPRICE_GRAPH=%s", graph_path);
	const char *const env[] = { s, g, NULL };
	static char out[16384];
	int st = tc_run_self(tcase_current(), env, out, sizeof out, 60);
	fputs(out, stdout);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	return true;
}

/* how many edges of the graph were taken at least `min` times */
static int edges_taken(const char *dot, unsigned long min)
{
	int n = 0;
	for (const char *p = dot; (p = strstr(p, "count=")) != NULL; p++)
		if (strtoul(p + 6, NULL, 10) >= min)
			n++;
	return n;
}

TCASE(blocking_graph_has_the_points_and_their_edges)
{
	if (rerun_with("2d")) {
		const char *dot = read_file(graph_path);
		CHECK(dot != NULL);
		fputs(dot, stdout);
		/* the main loop's two points, one after the other, both ways (a
		 * read that finds its byte there already does not park, so not
		 * every round adds to them) */
		CHECK(strstr(dot, "digraph blocking") != NULL);
		CHECK(edges_taken(dot, ROUNDS / 4) >= 2);
		CHECK(strstr(dot, "200 parks") != NULL); /* the naps always park */
		unlink(graph_path);
		return;
	}
	two_points();
}

TCASE(fifo_records_no_graph)
{
	if (rerun_with("fifo")) {
		CHECK(read_file(graph_path) == NULL);
		return;
	}
	two_points();
}

/* ---- SIGUSR2, descriptors, DOT ---- */

static bool file_has(const char *path, const char *text)
{
	const char *dot = read_file(path);
	return dot && strstr(dot, text);
}

/* Graphviz's own parser reads the file (scripts/setup installs it). */
static void check_dot_parses(const char *path)
{
	char cmd[512];
	snprintf(cmd, sizeof cmd, "dot -Tsvg -o /dev/null %s", path);
	int st = system(cmd);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		TFAIL("dot could not read %s (status %#x)", path, st);
}

TCASE(sigusr2_writes_the_graph_while_the_program_runs)
{
	if (rerun_with("2d")) {
		check_dot_parses(graph_path);
		unlink(graph_path);
		return;
	}
	two_points();
	const char *path = getenv("CAPRICE_GRAPH");
	CHECK(path != NULL);
	CHECK_EQ(kill(getpid(), SIGUSR2), 0);
	/* the monitor writes it within a tick or two */
	for (int i = 0; i < 2000 && !file_has(path, "digraph blocking"); i++)
		usleep(1000);
	if (!file_has(path, "digraph blocking"))
		TFAIL("no graph in %s 2 s after SIGUSR2", path);
	CHECK(file_has(path, "200 parks"));
	check_dot_parses(path);
	unlink(path);
}

static __attribute__((noipa)) void nap_before_open(void)
{
	usleep(50);
}

static __attribute__((noipa)) void nap_holding_two(void)
{
	usleep(50);
}

/* between the first nap and the second the thread opens two descriptors,
 * and closes them before the first again */
TCASE(edges_carry_the_descriptors_opened_between_their_points)
{
	if (rerun_with("2d")) {
		const char *dot = read_file(graph_path);
		CHECK(dot != NULL);
		fputs(dot, stdout);
		if (!strstr(dot, "fds=2.00"))
			TFAIL("no edge that opened 2 descriptors");
		if (!strstr(dot, "fds=-2.00"))
			TFAIL("no edge that closed 2 descriptors");
		check_dot_parses(graph_path);
		unlink(graph_path);
		return;
	}
	for (int i = 0; i < 100; i++) {
		nap_before_open();
		int p[2];
		CHECK_EQ(pipe(p), 0);
		nap_holding_two();
		close(p[0]);
		close(p[1]);
	}
}

/* ---- names, and a bound ---- */

/* one node per call site, named after the function that parks there */
TCASE(each_call_site_is_one_node_named_by_its_function)
{
	if (rerun_with("2d")) {
		const char *dot = read_file(graph_path);
		CHECK(dot != NULL);
		const char *nap_at = strstr(dot, "\"nap+");
		if (!nap_at)
			TFAIL("no node named nap+...");
		CHECK(strstr(nap_at + 1, "\"nap+") == NULL); /* stable: one node */
		/* (in a sanitized build ASan's interceptor of read stands between
		 * wait_for_data and the library, and names that node) */
		if (!getenv("CAPRICE_TEST_SANITIZED")) {
			const char *wait_at = strstr(dot, "\"wait_for_data+");
			if (!wait_at)
				TFAIL("no node named wait_for_data+...");
			CHECK(strstr(wait_at + 1, "\"wait_for_data+") == NULL);
		}
		unlink(graph_path);
		return;
	}
	two_points();
}

/* 2,048 distinct call sites, each parking once: more than a worker's
 * table holds (1,024 nodes), which stays that size and counts the rest.
 * (noipa here and above: GCC would fold identical functions into one) */
#define SITE(n) \
	static __attribute__((noipa)) void site_##n(void) \
	{                                                  \
		usleep(1);                                 \
		NOT_A_TAIL_CALL();                         \
	}
#define SITES8(n) SITE(n##0) SITE(n##1) SITE(n##2) SITE(n##3) SITE(n##4) SITE(n##5) \
	SITE(n##6) SITE(n##7)
#define SITES64(n) SITES8(n##0) SITES8(n##1) SITES8(n##2) SITES8(n##3) SITES8(n##4) \
	SITES8(n##5) SITES8(n##6) SITES8(n##7)
#define SITES512(n) SITES64(n##0) SITES64(n##1) SITES64(n##2) SITES64(n##3) \
	SITES64(n##4) SITES64(n##5) SITES64(n##6) SITES64(n##7)
SITES512(1) SITES512(2) SITES512(3) SITES512(4)
#define REF(n) site_##n,
#define REFS8(n) REF(n##0) REF(n##1) REF(n##2) REF(n##3) REF(n##4) REF(n##5) REF(n##6) REF(n##7)
#define REFS64(n) REFS8(n##0) REFS8(n##1) REFS8(n##2) REFS8(n##3) REFS8(n##4) REFS8(n##5) \
	REFS8(n##6) REFS8(n##7)
#define REFS512(n) REFS64(n##0) REFS64(n##1) REFS64(n##2) REFS64(n##3) REFS64(n##4) \
	REFS64(n##5) REFS64(n##6) REFS64(n##7)
static void (*const sites[])(void) = { REFS512(1) REFS512(2) REFS512(3) REFS512(4) };

TCASE(the_graph_stays_bounded_past_its_table)
{
	if (rerun_with("2d")) {
		const char *dot = read_file(graph_path);
		CHECK(dot != NULL);
		int nodes = 0;
		for (const char *p = dot; (p = strstr(p, " parks\"")) != NULL; p++)
			nodes++;
		const char *d = strstr(dot, "dropped (a full table): ");
		unsigned long dropped = d ? strtoul(d + 24, NULL, 10) : 0;
		printf("%d nodes written, %lu parks dropped\n", nodes, dropped);
		CHECK(nodes <= 1024);
		CHECK(nodes >= 1000);
		CHECK(dropped > 0);
		unlink(graph_path);
		return;
	}
	for (size_t i = 0; i < sizeof sites / sizeof sites[0]; i++)
		sites[i]();
}

/* a graph file that cannot be written: the program goes on, and says so */
TCASE(an_unwritable_graph_file_is_reported_not_fatal)
{
	if (!tc_in_child()) {
		const char *const env[] = { "CAPRICE_SCHED=2d",
			                    "CAPRICE_GRAPH=/nonexistent-caprice-dir/graph.dot", NULL };
		static char out[16384];
		int st = tc_run_self(tcase_current(), env, out, sizeof out, 60);
		fputs(out, stdout);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		CHECK(strstr(out, "CAPRICE_GRAPH=/nonexistent-caprice-dir/graph.dot: cannot write it: "
		                  "No such file or directory") != NULL);
		return;
	}
	two_points();
}
