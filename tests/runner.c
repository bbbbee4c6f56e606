/* runner.c: runs every case of every test program as its own process,
 * under Criterion, so the suite ends in one Synthesis line.  The runner
 * itself runs on the C library's threads; only the programs it starts
 * link libthread.  Each case gets a time limit and its output is shown
 * when it fails.  A case that skips itself (TSKIP in tcase.h: a line
 * "tcase-skip: REASON" and exit status 77) is a skip in Criterion's
 * count, not a pass, and gets a line "SKIPPED prog case: REASON" here
 * (Criterion itself names skips only with --verbose); scripts/test
 * collects those lines. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PROGS_DIR
#error "PROGS_DIR must name the directory holding the test programs"
#endif

#define CASE_TIMEOUT_S 120

/* as in tcase.h, which this runner does not include (it is no test
 * program) */
#define TCASE_SKIP_EXIT 77
#define TCASE_SKIP_MARK "tcase-skip: "

struct tcase_param {
	char *prog;
	char *name;
};

static void free_params(struct criterion_test_params *crp)
{
	struct tcase_param *p = crp->params;
	for (size_t i = 0; i < crp->length; i++) {
		cr_free(p[i].prog);
		cr_free(p[i].name);
	}
	cr_free(crp->params);
}

static char *cr_strdup(const char *s)
{
	char *d = cr_malloc(strlen(s) + 1);
	strcpy(d, s);
	return d;
}

/* Asks `prog --list` for its cases.  The names are gathered first and
 * copied into Criterion's shared arena in one allocation: cr_realloc
 * returns unusable memory for arrays past a few entries. */
static struct criterion_test_params list_cases(const char *prog)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "'%s/%s' --list", PROGS_DIR, prog);
	FILE *f = popen(cmd, "r");
	size_t cap = 64, n = 0;
	char **names = malloc(cap * sizeof *names);
	char line[256];
	while (f && names && fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		if (!*line)
			continue;
		if (n == cap) {
			cap *= 2;
			names = realloc(names, cap * sizeof *names);
			if (!names)
				break;
		}
		names[n++] = strdup(line);
	}
	if (f)
		pclose(f);
	size_t count = n ? n : 1; /* none: one case that fails loudly */
	struct tcase_param *p = cr_malloc(count * sizeof *p);
	for (size_t i = 0; i < count; i++) {
		p[i].prog = cr_strdup(prog);
		p[i].name = cr_strdup(n ? names[i] : "--list-failed");
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return cr_make_param_array(struct tcase_param, p, count, free_params);
}

/* The reason a skipped case gave: the rest of its last line starting
 * with TCASE_SKIP_MARK in the output file fd, or NULL.  Reads the whole
 * file (the line comes last, however much the case printed first). */
static char *skip_reason(int fd)
{
	FILE *f = fdopen(dup(fd), "r");
	if (!f)
		return NULL;
	rewind(f);
	char *line = NULL, *reason = NULL;
	size_t cap = 0;
	ssize_t n;
	size_t mlen = strlen(TCASE_SKIP_MARK);
	while ((n = getline(&line, &cap, f)) > 0) {
		if (strncmp(line, TCASE_SKIP_MARK, mlen) != 0)
			continue;
		line[strcspn(line, "\n")] = 0;
		free(reason);
		reason = strdup(line + mlen);
	}
	free(line);
	fclose(f);
	return reason;
}

static void run_case(const struct tcase_param *tc)
{
	char path[1024], out[] = "/tmp/caprice-case-XXXXXX";
	snprintf(path, sizeof path, "%s/%s", PROGS_DIR, tc->prog);
	int fd = mkstemp(out);
	cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
	unlink(out);
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		setpgid(0, 0);
		/* tc_run_alone()'s lock (tcase.h) */
		setenv("TCASE_ALONE_LOCK", PROGS_DIR "/.run-alone.lock", 1);
		execl(path, path, tc->name, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	int status = 0;
	time_t start = time(NULL);
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (time(NULL) - start > CASE_TIMEOUT_S) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			status = -1;
			break;
		}
		usleep(2000);
	}
	if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == TCASE_SKIP_EXIT) {
		char *reason = skip_reason(fd);
		if (reason) {
			close(fd);
			cr_skip_test("%s %s: %s", tc->prog, tc->name, reason);
		}
	}
	char buf[8192];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	buf[n > 0 ? n : 0] = 0;
	close(fd);
	if (status == -1)
		cr_assert_fail("%s %s: timed out after %d s\n%s", tc->prog, tc->name, CASE_TIMEOUT_S, buf);
	else if (WIFSIGNALED(status))
		cr_assert_fail("%s %s: killed by signal %d (%s)\n%s", tc->prog, tc->name, WTERMSIG(status),
		        strsignal(WTERMSIG(status)), buf);
	else if (WEXITSTATUS(status) != 0)
		cr_assert_fail("%s %s: exit status %d\n%s", tc->prog, tc->name, WEXITSTATUS(status), buf);
}

/* One parameterized test per program; the cases come from --list.
 * `path` is the program's place under PROGS_DIR (tests/ in the build). */
#define PROGRAM_SUITE(suite, path)                                            \
	ParameterizedTestParameters(suite, cases)                            \
	{                                                                    \
		return list_cases(path);                                      \
	}                                                                    \
	ParameterizedTest(struct tcase_param *p, suite, cases, .timeout = CASE_TIMEOUT_S + 30) \
	{                                                                    \
		run_case(p);                                                  \
	}

#include "programs.h"

/* Criterion names skipped tests only with --verbose: name them always,
 * once each, as they end. */
ReportHook(POST_TEST)(struct criterion_test_stats *st)
{
	if (st->test_status == CR_STATUS_SKIPPED)
		fprintf(stderr, "SKIPPED %s\n", st->message ? st->message : "(no reason given)");
}
