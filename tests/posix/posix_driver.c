/* posix_driver.c: runs each POSIX case (the *_cases.c files beside it)
 * three ways and compares them, side by side in one run:
 *
 *   nptl    the cases built as a plain -pthread program, on NPTL
 *   shim    that same binary under LD_PRELOAD=libthread-preload.so
 *   linked  the same sources linked with libthread
 *
 * The NPTL run must print what the case says POSIX requires (its
 * --expect text): else the case or the machine is wrong, and the driver
 * fails saying so.  The two Caprice runs must print exactly what NPTL
 * printed, exit 0, and show that Caprice ran them (CAPRICE_STATS=1's
 * lines on stderr).  A case that does not yet match is listed in
 * `known[]` below with the runs that differ and why; it ends as skipped
 * (tcase.h's TSKIP, which the runner counts apart) while it differs, and
 * fails when a listed run matches, so the table stays true.
 *
 * The driver is itself plain NPTL; `posix_driver --list` names the
 * cases (the NPTL program's list), `posix_driver CASE` judges one.  Each
 * run has a time limit: a hang is a failure, known difference or not,
 * reported with the command, what it printed so far and where its
 * kernel threads were.  prio_ cases run on one processor (they pin
 * themselves) and, under Caprice, on one worker (one_worker). */
#include "tcase.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#ifndef CASES_NPTL
#error "CASES_NPTL must name the cases' NPTL build"
#endif
#ifndef CASES_LINKED
#error "CASES_LINKED must name the cases' libthread build"
#endif
#ifndef PRELOAD_LIB
#error "PRELOAD_LIB must name libthread-preload.so"
#endif
#ifndef LIBASAN_PATH
#define LIBASAN_PATH ""
#endif

extern char **environ;

enum run_kind { NPTL, SHIM, LINKED, NKINDS };
#define M_SHIM (1u << SHIM)
#define M_LINKED (1u << LINKED)
static const char *const kind_name[NKINDS] = { "nptl", "shim", "linked" };

/* ---- known differences ------------------------------------------------ */

static const struct known {
	const char *name;
	unsigned differs; /* M_SHIM | M_LINKED: the runs that do not match */
	const char *reason;
} known[] = {
	{ "cpuclock_excludes_time_preempted", M_SHIM | M_LINKED,
	  "a user thread's CPU-time clock counts the time it held its worker, from the "
	  "time-stamp counter, including time the kernel gave that core to another process "
	  "(README, What differs from NPTL)" },
	{ NULL, 0, NULL },
};

static const struct known *known_of(const char *name)
{
	for (const struct known *k = known; k->name; k++)
		if (strcmp(k->name, name) == 0)
			return k;
	return NULL;
}

/* ---- running one ------------------------------------------------------ */

struct run {
	enum run_kind kind;
	char cmd[2048];
	char *out, *err;
	int status;
	bool timed_out;
	double secs;
};

static bool sanitized(void)
{
	const char *s = getenv("CAPRICE_TEST_SANITIZED");
	return s && *s && strcmp(s, "0") != 0;
}

/* A run takes well under a second; three hung runs still end within
 * the runner's 120 s for the case. */
static long run_limit_ms(void)
{
	return sanitized() ? 30000 : 15000;
}

static char *read_fd(int fd)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		TFAIL("fstat: %s", strerror(errno));
	char *p = malloc((size_t)st.st_size + 1);
	if (!p)
		TFAIL("out of memory");
	ssize_t n = pread(fd, p, (size_t)st.st_size, 0);
	p[n > 0 ? n : 0] = 0;
	return p;
}

static bool has_prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

/* Under Caprice, prio_ cases run on one worker: a priority orders the
 * threads of one worker, as on NPTL (where the case pins itself) it
 * orders those of one processor. */
static bool one_worker(const char *cname)
{
	return has_prefix(cname, "prio_");
}

/* argv[0] and the environment of one run: the driver's own, less
 * LD_PRELOAD and the knobs this driver sets (CAPRICE_SCHED, the
 * sanitizers' options and CAPRICE_TEST_* go through as they are). */
static void run_one(enum run_kind kind, const char *cname, struct run *r)
{
	memset(r, 0, sizeof *r);
	r->kind = kind;
	const char *prog = kind == LINKED ? CASES_LINKED : CASES_NPTL;
	size_t nenv = 0;
	while (environ[nenv])
		nenv++;
	char **envp = calloc(nenv + 8, sizeof *envp);
	size_t ne = 0;
	for (size_t i = 0; i < nenv; i++) {
		const char *e = environ[i];
		if (has_prefix(e, "LD_PRELOAD=") || has_prefix(e, "CAPRICE_WORKERS=") ||
		    has_prefix(e, "CAPRICE_STATS="))
			continue;
		if (kind == NPTL && has_prefix(e, "CAPRICE_") && !has_prefix(e, "CAPRICE_TEST_"))
			continue;
		envp[ne++] = (char *)e;
	}
	static char preload[2048];
	size_t w = 0;
	if (kind != NPTL) {
		envp[ne++] = "CAPRICE_STATS=1";
		envp[ne++] = one_worker(cname) ? "CAPRICE_WORKERS=1" : "CAPRICE_WORKERS=2";
		w += (size_t)snprintf(r->cmd + w, sizeof r->cmd - w, "%s ", envp[ne - 1]);
	}
	if (kind == SHIM) {
		/* an ASan-built shim must come after the ASan runtime, first in
		 * the initial library list (as tests/preload does) */
		if (sanitized() && *LIBASAN_PATH)
			snprintf(preload, sizeof preload, "LD_PRELOAD=%s %s", LIBASAN_PATH, PRELOAD_LIB);
		else
			snprintf(preload, sizeof preload, "LD_PRELOAD=%s", PRELOAD_LIB);
		envp[ne++] = preload;
		w += (size_t)snprintf(r->cmd + w, sizeof r->cmd - w, "%s ", preload);
	}
	envp[ne] = NULL;
	snprintf(r->cmd + w, sizeof r->cmd - w, "%s %s", prog, cname);

	int ofd = memfd_create("posix-out", MFD_CLOEXEC), efd = memfd_create("posix-err", MFD_CLOEXEC);
	if (ofd < 0 || efd < 0)
		TFAIL("memfd_create: %s", strerror(errno));
	fflush(NULL);
	uint64_t t0 = tc_now_ns();
	pid_t pid = fork();
	if (pid < 0)
		TFAIL("fork: %s", strerror(errno));
	if (pid == 0) {
		setpgid(0, 0);
		int in = open("/dev/null", O_RDONLY);
		if (in < 0 || dup2(in, 0) < 0 || dup2(ofd, 1) < 0 || dup2(efd, 2) < 0)
			_exit(125);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		char *argv[] = { (char *)prog, (char *)cname, NULL };
		execve(prog, argv, envp);
		fprintf(stderr, "driver: exec %s: %s\n", prog, strerror(errno));
		_exit(127);
	}
	free(envp);
	uint64_t end = t0 + (uint64_t)run_limit_ms() * 1000000u;
	for (;;) {
		int st;
		pid_t got = waitpid(pid, &st, WNOHANG);
		if (got == pid) {
			r->status = st;
			break;
		}
		if (got < 0 && errno != EINTR)
			TFAIL("waitpid: %s", strerror(errno));
		if (tc_now_ns() > end) {
			fprintf(stderr, "%s HUNG: where its kernel threads were:\n", r->cmd);
			tc_dump_tasks(pid);
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			r->status = st;
			r->timed_out = true;
			break;
		}
		usleep(2000);
	}
	r->secs = (double)(tc_now_ns() - t0) / 1e9;
	/* children a case forked (and left) end with their group */
	kill(-pid, SIGKILL);
	r->out = read_fd(ofd);
	r->err = read_fd(efd);
	close(ofd);
	close(efd);
}

static const char *status_str(const struct run *r)
{
	static char s[4][96];
	static int next;
	char *b = s[next++ % 4];
	if (r->timed_out)
		snprintf(b, sizeof s[0], "HUNG: killed after %ld ms", run_limit_ms());
	else if (WIFEXITED(r->status))
		snprintf(b, sizeof s[0], "exit %d", WEXITSTATUS(r->status));
	else if (WIFSIGNALED(r->status))
		snprintf(b, sizeof s[0], "killed by signal %d (%s)", WTERMSIG(r->status),
		         strsignal(WTERMSIG(r->status)));
	else
		snprintf(b, sizeof s[0], "status %#x", r->status);
	return b;
}

static bool exited_0(const struct run *r)
{
	return !r->timed_out && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

static void show(FILE *f, const struct run *r)
{
	fprintf(f, "--- %s: %s (%s, %.2f s)\n", kind_name[r->kind], r->cmd, status_str(r), r->secs);
	fprintf(f, "stdout:\n%s", r->out);
	if (*r->out && r->out[strlen(r->out) - 1] != '\n')
		fputc('\n', f);
	const char *e = r->err;
	size_t n = strlen(e);
	if (n > 3000) /* the tail: stats lines, or the last of a long report */
		e += n - 3000;
	fprintf(f, "stderr%s:\n%s", n > 3000 ? " (tail)" : "", e);
	if (*e && e[strlen(e) - 1] != '\n')
		fputc('\n', f);
}

/* How a Caprice run differs from the NPTL one, or NULL when it matches. */
static const char *difference(const struct run *r, const struct run *ref)
{
	if (r->timed_out)
		return "it hung";
	if (!exited_0(r))
		return "it did not exit 0";
	if (!strstr(r->err, "caprice: stats: worker"))
		return "no \"caprice: stats: worker\" line on stderr with CAPRICE_STATS=1: "
		       "Caprice did not run it";
	if (strcmp(r->out, ref->out) != 0)
		return "its output differs from NPTL's";
	return NULL;
}

static void judge(const char *name)
{
	/* what POSIX requires, as the case states it */
	static char expect[8192];
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "'%s' --expect '%s'", CASES_NPTL, name);
	FILE *p = popen(cmd, "r");
	if (!p)
		TFAIL("popen %s: %s", cmd, strerror(errno));
	size_t n = fread(expect, 1, sizeof expect - 1, p);
	expect[n] = 0;
	int st = pclose(p);
	if (st != 0 || n == 0)
		TFAIL("%s gave no expectation (status %#x)", cmd, st);

	struct run r[NKINDS];
	for (int k = 0; k < NKINDS; k++)
		run_one((enum run_kind)k, name, &r[k]);
	for (int k = 0; k < NKINDS; k++)
		printf("%s: %s, %.2f s\n", kind_name[k], status_str(&r[k]), r[k].secs);

	/* the reference first */
	if (exited_0(&r[NPTL]) && has_prefix(r[NPTL].out, "unsupported: ")) {
		show(stdout, &r[NPTL]);
		char reason[256];
		snprintf(reason, sizeof reason, "%s", r[NPTL].out + strlen("unsupported: "));
		reason[strcspn(reason, "\n")] = 0;
		TSKIP("NPTL cannot run it here: %s", reason);
	}
	if (!exited_0(&r[NPTL]) || strcmp(r[NPTL].out, expect) != 0) {
		fprintf(stderr, "%s: the NPTL run does not show what the case says POSIX requires "
		        "(the case, or this machine, is wrong)\nexpected:\n%s",
		        name, expect);
		for (int k = 0; k < NKINDS; k++)
			show(stderr, &r[k]);
		fflush(NULL);
		_exit(1);
	}

	const struct known *kn = known_of(name);
	unsigned differ = 0;
	const char *why[NKINDS] = { 0 };
	for (int k = SHIM; k < NKINDS; k++)
		if ((why[k] = difference(&r[k], &r[NPTL])))
			differ |= 1u << k;
	unsigned listed = kn ? kn->differs : 0;
	if (differ == 0 && !kn) {
		printf("%s: shim and linked print what NPTL printed:\n%s", name, r[NPTL].out);
		return;
	}
	for (int k = 0; k < NKINDS; k++)
		show(stderr, &r[k]);
	for (int k = SHIM; k < NKINDS; k++) {
		unsigned bit = 1u << k;
		if ((listed & bit) && !(differ & bit))
			fprintf(stderr, "%s: the %s run now matches NPTL, but the known-differences "
			        "table (posix_driver.c) still lists it: take it out\n",
			        name, kind_name[k]);
		if (!(listed & bit) && (differ & bit))
			fprintf(stderr, "%s: the %s run differs from NPTL: %s\n", name, kind_name[k],
			        why[k]);
	}
	bool hung = false;
	for (int k = SHIM; k < NKINDS; k++)
		if (r[k].timed_out) {
			fprintf(stderr, "%s: the %s run hung (a case's waits are bounded: a hang is "
			        "always a failure, known difference or not)\n", name, kind_name[k]);
			hung = true;
		}
	if (differ != listed || hung) {
		fflush(NULL);
		_exit(1);
	}
	TSKIP("known difference (%s%s%s): %s", differ & M_SHIM ? "shim" : "",
	      differ == (M_SHIM | M_LINKED) ? ", " : "", differ & M_LINKED ? "linked" : "",
	      kn->reason);
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		/* the cases are the NPTL program's, whatever its list holds */
		char *lv[] = { CASES_NPTL, "--list", NULL };
		execv(CASES_NPTL, lv);
		fprintf(stderr, "exec %s: %s\n", CASES_NPTL, strerror(errno));
		return 1;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: %s --list | CASE\n", argv[0]);
		return 2;
	}
	/* every case listed in the table must exist */
	for (const struct known *k = known; k->name; k++) {
		char cmd[1024];
		snprintf(cmd, sizeof cmd, "'%s' --expect '%s' >/dev/null 2>&1", CASES_NPTL, k->name);
		if (system(cmd) != 0)
			TFAIL("the known-differences table names %s, which is no case", k->name);
	}
	judge(argv[1]);
	return 0;
}
