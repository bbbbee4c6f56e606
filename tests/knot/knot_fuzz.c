/* knot_fuzz.c: runs Knot's bounded libFuzzer script,
 * knot/fuzz/run-fuzz OUTDIR SECONDS, and fails if it exits non-zero (a
 * crash, a sanitizer report, or a failed build).  The script needs clang;
 * without one the case fails and says so. */
#include <fcntl.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "tcase.h"

#ifndef KNOT_FUZZ_SCRIPT
#error "KNOT_FUZZ_SCRIPT must name knot/fuzz/run-fuzz"
#endif
#ifndef KNOT_FUZZ_OUT
#error "KNOT_FUZZ_OUT must name the output directory"
#endif

#define FUZZ_SECONDS "15"
#define LIMIT_S 105 /* building and running, under the runner's 120 s */

static bool in_path(const char *name)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	char dir[4096];
	while (*path) {
		size_t n = strcspn(path, ":");
		snprintf(dir, sizeof dir, "%.*s/%s", (int)n, path, name);
		if (access(dir, X_OK) == 0)
			return true;
		path += n;
		if (*path == ':')
			path++;
	}
	return false;
}

TCASE(fuzz_http_parser)
{
	if (access(KNOT_FUZZ_SCRIPT, X_OK) != 0)
		TFAIL("%s is missing or not executable: %s", KNOT_FUZZ_SCRIPT, strerror(errno));
	bool clang = in_path("clang");
	for (int v = 13; v <= 20 && !clang; v++) {
		char n[32];
		snprintf(n, sizeof n, "clang-%d", v);
		clang = in_path(n);
	}
	if (!clang)
		TFAIL("clang is not installed: the fuzz run needs clang with libFuzzer "
		      "(scripts/setup installs it; on Debian: apt-get install clang)");
	mkdir(KNOT_FUZZ_OUT, 0755);
	fflush(NULL);
	pid_t parent = getpid();
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		execl(KNOT_FUZZ_SCRIPT, KNOT_FUZZ_SCRIPT, KNOT_FUZZ_OUT, FUZZ_SECONDS, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", KNOT_FUZZ_SCRIPT, strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid);
	uint64_t t0 = tc_now_ns();
	int st;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		if (tc_now_ns() - t0 > (uint64_t)LIMIT_S * 1000000000u) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			TFAIL("%s %s %s ran for more than %d s", KNOT_FUZZ_SCRIPT, KNOT_FUZZ_OUT,
			      FUZZ_SECONDS, LIMIT_S);
		}
		usleep(20000);
	}
	kill(-pid, SIGKILL); /* anything it left behind */
	if (WIFSIGNALED(st))
		TFAIL("%s was killed by signal %d (%s)", KNOT_FUZZ_SCRIPT, WTERMSIG(st),
		      strsignal(WTERMSIG(st)));
	if (WEXITSTATUS(st) != 0)
		TFAIL("%s %s %s exited with status %d (a crash, a sanitizer report, or a failed "
		      "build: see its output above and %s)",
		      KNOT_FUZZ_SCRIPT, KNOT_FUZZ_OUT, FUZZ_SECONDS, WEXITSTATUS(st), KNOT_FUZZ_OUT);
}
