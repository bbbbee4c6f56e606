/* graph.c: the blocking graph (sched/location.c): with CAPRICE_SCHED=2d
 * every park records where the thread blocked, and CAPRICE_GRAPH gets the
 * graph at exit: a node per blocking point, an edge per pair of
 * consecutive ones, with its count and the CPU time run between. */
#include <fcntl.h>
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
