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

static __attribute__((noinline)) void wait_for_data(void)
{
	char c;
	CHECK_EQ(read(pipefd[0], &c, 1), 1);
}

static __attribute__((noinline)) void nap(void)
{
	usleep(50);
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
	static char buf[65536];
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

static __attribute__((noinline)) void nap_before_open(void)
{
	usleep(50);
}

static __attribute__((noinline)) void nap_holding_two(void)
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
