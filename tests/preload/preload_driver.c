/* preload_driver.c: integration tests for the LD_PRELOAD shim.
 *
 * The programs under test (progs/, and a few Debian programs) are ordinary
 * binaries built with plain -pthread; they know nothing of Caprice.  This
 * driver, itself plain NPTL, runs each one under the shim (`caprice PROG`
 * or LD_PRELOAD=libthread-preload.so PROG) and sometimes without it, and
 * judges what they print and how they end.  Each case is one process
 * (tcase_main.c); tests/runner.c gives it 120 s. */
#include "tcase.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef CAPRICE_BIN
#error "CAPRICE_BIN must name the caprice launcher"
#endif
#ifndef PRELOAD_LIB
#error "PRELOAD_LIB must name libthread-preload.so"
#endif
#ifndef PROG_DIR
#error "PROG_DIR must name the directory holding the test programs"
#endif
#ifndef LIBASAN_PATH
#define LIBASAN_PATH ""
#endif

extern char **environ;

/* how many workers every shimmed run gets, and how many more kernel
 * threads (helpers, the runtime's own) a process may have on top */
#define WORKERS 2
#define EXTRA_KTHREADS 16

/* ---- running a program ------------------------------------------------ */

enum mode { PLAIN, LAUNCHER, PRELOAD };

struct buf {
	char *p;
	size_t len, cap;
};

struct spawn {
	enum mode mode;
	const char *prog;    /* a name under PROG_DIR, or an absolute path */
	const char *args[24];
	const char *env[8];  /* "K=V" added to (or replacing in) the environment */
	bool stdin_pipe;     /* else /dev/null */
	bool refuse_uring;   /* seccomp: io_uring_setup fails with EPERM */
	const char *stdout_path; /* stdout to this file instead of a pipe */
	bool keep_launcher;  /* sanitized runs too: see spawn() */
};

struct child {
	pid_t pid;
	int in, out, err;
	struct buf o, e;
	int status;
	bool reaped;
	bool stats_proof; /* CAPRICE_STATS=1 was added: a clean exit shows stats */
	char what[1024]; /* the command line, for messages */
};

static bool sanitized(void)
{
	const char *s = getenv("CAPRICE_TEST_SANITIZED");
	return s && *s && strcmp(s, "0") != 0;
}

static void buf_add(struct buf *b, const char *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (b->len + n + 1 > cap)
			cap *= 2;
		b->p = realloc(b->p, cap);
		if (!b->p)
			TFAIL("out of memory");
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = 0;
}

static const char *bstr(const struct buf *b)
{
	return b->p ? b->p : "";
}

/* The last `max` bytes of a buffer, for failure messages. */
static const char *tail(const struct buf *b, size_t max)
{
	const char *s = bstr(b);
	size_t n = strlen(s);
	return n > max ? s + n - max : s;
}

static void prog_path(const char *prog, char *out, size_t n)
{
	if (prog[0] == '/')
		snprintf(out, n, "%s", prog);
	else
		snprintf(out, n, "%s/%s", PROG_DIR, prog);
}

static void install_uring_filter(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
		fprintf(stderr, "driver: seccomp: %s\n", strerror(errno));
		_exit(126);
	}
	/* the filter really refuses */
	char params[120] = {0};
	long r = syscall(__NR_io_uring_setup, 4, params);
	if (r != -1 || errno != EPERM) {
		fprintf(stderr, "driver: io_uring_setup under the filter gave %ld errno %d\n", r,
		        errno);
		_exit(126);
	}
}

static void set_env(char ***envp, size_t *n, const char *kv)
{
	size_t klen = strcspn(kv, "=");
	for (size_t i = 0; i < *n; i++)
		if (strncmp((*envp)[i], kv, klen) == 0 && (*envp)[i][klen] == '=') {
			(*envp)[i] = (char *)kv;
			return;
		}
	(*envp)[(*n)++] = (char *)kv;
	(*envp)[*n] = NULL;
}

/* In a sanitized build the shim is an ASan library, and an ASan runtime
 * must come first in the initial library list: only LD_PRELOAD="libasan
 * shim" works, and the launcher puts its shim in front of whatever
 * LD_PRELOAD holds.  So sanitized runs start launcher cases the
 * LD_PRELOAD way, and launcher_sanitized_build checks the launcher itself. */
static enum mode effective_mode(const struct spawn *s)
{
	if (s->mode == LAUNCHER && sanitized() && !s->keep_launcher) {
		static bool said;
		if (!said)
			printf("note: sanitized build: launcher runs use LD_PRELOAD=\"libasan shim\"\n");
		said = true;
		return PRELOAD;
	}
	return s->mode;
}

static void spawn(const struct spawn *s0, struct child *c)
{
	struct spawn sv = *s0, *s = &sv;
	s->mode = effective_mode(s0);
	char path[1024];
	prog_path(s->prog, path, sizeof path);

	const char *argv[32];
	int ac = 0;
	if (s->mode == LAUNCHER)
		argv[ac++] = CAPRICE_BIN;
	argv[ac++] = path;
	for (int i = 0; s->args[i]; i++)
		argv[ac++] = s->args[i];
	argv[ac] = NULL;

	size_t nenv = 0;
	while (environ[nenv])
		nenv++;
	char **envp = calloc(nenv + 16, sizeof *envp);
	size_t ne = 0;
	for (size_t i = 0; i < nenv; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0 &&
		    strncmp(environ[i], "CAPRICE_", 8) != 0)
			envp[ne++] = environ[i];
	/* keep the test harness's own knobs */
	for (size_t i = 0; i < nenv; i++)
		if (strncmp(environ[i], "CAPRICE_TEST_", 13) == 0)
			envp[ne++] = environ[i];
	envp[ne] = NULL;
	static char preload[2048];
	if (s->mode == PRELOAD) {
		if (sanitized() && *LIBASAN_PATH)
			snprintf(preload, sizeof preload, "LD_PRELOAD=%s %s", LIBASAN_PATH, PRELOAD_LIB);
		else
			snprintf(preload, sizeof preload, "LD_PRELOAD=%s", PRELOAD_LIB);
		set_env(&envp, &ne, preload);
	} else if (s->mode == LAUNCHER && sanitized() && *LIBASAN_PATH) {
		snprintf(preload, sizeof preload, "LD_PRELOAD=%s", LIBASAN_PATH);
		set_env(&envp, &ne, preload);
	}
	/* every shimmed run proves that the shim ran it: unless the case
	 * says otherwise, it asks for the counters printed at exit */
	bool stats_proof = s->mode != PLAIN && !s->refuse_uring;
	for (int i = 0; s->env[i]; i++)
		if (strncmp(s->env[i], "CAPRICE_STATS=", 14) == 0)
			stats_proof = false;
	if (stats_proof)
		set_env(&envp, &ne, "CAPRICE_STATS=1");
	for (int i = 0; s->env[i]; i++)
		set_env(&envp, &ne, s->env[i]);

	memset(c, 0, sizeof *c);
	c->stats_proof = stats_proof;
	size_t w = 0;
	for (int i = 0; s->env[i] && w < sizeof c->what - 1; i++)
		w += (size_t)snprintf(c->what + w, sizeof c->what - w, "%s ", s->env[i]);
	if ((s->mode == PRELOAD || (s->mode == LAUNCHER && sanitized())) && w < sizeof c->what - 1)
		w += (size_t)snprintf(c->what + w, sizeof c->what - w, "%s ", preload);
	if (s->refuse_uring && w < sizeof c->what - 1)
		w += (size_t)snprintf(c->what + w, sizeof c->what - w, "[seccomp: io_uring_setup=EPERM] ");
	for (int i = 0; argv[i] && w < sizeof c->what - 1; i++)
		w += (size_t)snprintf(c->what + w, sizeof c->what - w, "%s%s", i ? " " : "", argv[i]);

	int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2];
	if ((s->stdin_pipe && pipe2(pin, O_CLOEXEC)) ||
	    (!s->stdout_path && pipe2(pout, O_CLOEXEC)) || pipe2(perr, O_CLOEXEC))
		TFAIL("pipe: %s", strerror(errno));
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		TFAIL("fork: %s", strerror(errno));
	if (pid == 0) {
		setpgid(0, 0);
		int in = s->stdin_pipe ? pin[0] : open("/dev/null", O_RDONLY);
		int out = s->stdout_path ? open(s->stdout_path, O_WRONLY | O_CREAT | O_TRUNC, 0644)
		                         : pout[1];
		if (in < 0 || out < 0)
			_exit(125);
		dup2(in, 0);
		dup2(out, 1);
		dup2(perr[1], 2);
		signal(SIGPIPE, SIG_DFL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (s->refuse_uring)
			install_uring_filter();
		execve(argv[0], (char **)argv, envp);
		fprintf(stderr, "driver: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	free(envp);
	c->pid = pid;
	c->in = s->stdin_pipe ? pin[1] : -1;
	c->out = s->stdout_path ? -1 : pout[0];
	c->err = perr[0];
	if (s->stdin_pipe)
		close(pin[0]);
	if (!s->stdout_path)
		close(pout[1]);
	close(perr[1]);
	if (c->out >= 0)
		fcntl(c->out, F_SETFL, O_NONBLOCK);
	fcntl(c->err, F_SETFL, O_NONBLOCK);
}

/* Reads what the child printed for up to `ms`; returns early once stdout
 * holds `until` at or after offset `from` (when until is not NULL), or
 * both streams are at EOF.  Returns true when `until` was found. */
static bool pump(struct child *c, long ms, const char *until, size_t from)
{
	uint64_t end = tc_now_ns() + (uint64_t)ms * 1000000u;
	for (;;) {
		if (until && c->o.len >= from && strstr(bstr(&c->o) + from, until))
			return true;
		struct pollfd p[2];
		int np = 0;
		if (c->out >= 0)
			p[np++] = (struct pollfd){.fd = c->out, .events = POLLIN};
		if (c->err >= 0)
			p[np++] = (struct pollfd){.fd = c->err, .events = POLLIN};
		if (np == 0)
			return false;
		uint64_t now = tc_now_ns();
		if (now >= end)
			return false;
		int left = (int)((end - now) / 1000000u) + 1;
		int r = poll(p, (nfds_t)np, left > 100 ? 100 : left);
		if (r < 0 && errno != EINTR)
			TFAIL("poll: %s", strerror(errno));
		for (int i = 0; i < np; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			bool is_out = p[i].fd == c->out;
			char tmp[65536];
			ssize_t n = read(p[i].fd, tmp, sizeof tmp);
			if (n > 0) {
				buf_add(is_out ? &c->o : &c->e, tmp, (size_t)n);
			} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
				close(p[i].fd);
				if (is_out)
					c->out = -1;
				else
					c->err = -1;
			}
		}
	}
}

/* Waits up to `ms` for the child to end, reading its output.  On timeout
 * it reports where the child's threads are, kills its process group and
 * fails the case. */
static void finish(struct child *c, long ms)
{
	uint64_t end = tc_now_ns() + (uint64_t)ms * 1000000u;
	if (c->in >= 0) {
		close(c->in);
		c->in = -1;
	}
	for (;;) {
		pump(c, 50, NULL, 0);
		int st;
		pid_t r = waitpid(c->pid, &st, WNOHANG);
		if (r == c->pid) {
			c->status = st;
			c->reaped = true;
			break;
		}
		if (tc_now_ns() > end) {
			fprintf(stderr, "TIMEOUT after %ld ms: %s\n", ms, c->what);
			tc_dump_tasks(c->pid);
			kill(-c->pid, SIGKILL);
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &st, 0);
			pump(c, 200, NULL, 0);
			TFAIL("timed out: %s\nstdout tail:\n%s\nstderr tail:\n%s", c->what,
			      tail(&c->o, 1500), tail(&c->e, 1500));
		}
	}
	pump(c, 2000, NULL, 0); /* grandchildren may still hold the pipes */
	if (c->out >= 0)
		close(c->out);
	if (c->err >= 0)
		close(c->err);
	c->out = c->err = -1;
}

static const char *status_str(int st)
{
	static char s[64];
	if (WIFEXITED(st))
		snprintf(s, sizeof s, "exit %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(s, sizeof s, "killed by signal %d (%s)", WTERMSIG(st),
		         strsignal(WTERMSIG(st)));
	else
		snprintf(s, sizeof s, "status %#x", st);
	return s;
}

#define EXPECT_MSG(c, cond, ...)                                              \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                         \
			fprintf(stderr, "\ncommand: %s\nended: %s\nstdout tail:\n%s\nstderr tail:\n%s\n", \
			        (c)->what, (c)->reaped ? status_str((c)->status) : "running", \
			        tail(&(c)->o, 1500), tail(&(c)->e, 1500));    \
			fflush(NULL);                                         \
			_exit(1);                                             \
		}                                                             \
	} while (0)

#define EXPECT_EXIT(c, code)                                                  \
	do {                                                                  \
		EXPECT_MSG(c, (c)->reaped && WIFEXITED((c)->status) &&        \
		                  WEXITSTATUS((c)->status) == (code),         \
		           "wanted exit %d", (code));                         \
		EXPECT_MSG(c, !(c)->stats_proof || count_lines(&(c)->e, "caprice: stats: worker") > 0, \
		           "no \"caprice: stats: worker\" line on stderr with CAPRICE_STATS=1: " \
		           "was the shim in effect?");                        \
	} while (0)

#define EXPECT_OUT(c, needle)                                                 \
	EXPECT_MSG(c, strstr(bstr(&(c)->o), needle) != NULL, "stdout lacks \"%s\"", needle)

static void run(const struct spawn *s, struct child *c, long ms)
{
	spawn(s, c);
	finish(c, ms);
}

/* Lines of `b` containing `needle` (case-insensitive). */
static int count_lines(const struct buf *b, const char *needle)
{
	int n = 0;
	const char *s = bstr(b);
	while (*s) {
		const char *eol = strchr(s, '\n');
		size_t len = eol ? (size_t)(eol - s) : strlen(s);
		char line[4096];
		size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
		memcpy(line, s, l);
		line[l] = 0;
		if (strcasestr(line, needle))
			n++;
		s += len + (eol ? 1 : 0);
	}
	return n;
}

/* Sum of the numbers following `key ` on the "caprice:" lines of stderr,
 * -1 when there are no such lines. */
static long stat_sum(const struct buf *b, const char *key)
{
	long sum = -1;
	const char *s = bstr(b);
	char pat[64];
	snprintf(pat, sizeof pat, " %s ", key);
	while (*s) {
		const char *eol = strchr(s, '\n');
		size_t len = eol ? (size_t)(eol - s) : strlen(s);
		if (strncmp(s, "caprice:", 8) == 0) {
			char line[4096];
			size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
			memcpy(line, s, l);
			line[l] = 0;
			const char *k = strstr(line, pat);
			if (k && strstr(line, "worker")) {
				sum = (sum < 0 ? 0 : sum) + atol(k + strlen(pat));
			}
		}
		s += len + (eol ? 1 : 0);
	}
	return sum;
}

static long kthreads_of(pid_t pid)
{
	char p[64], line[256];
	snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
	FILE *f = fopen(p, "r");
	long n = -1;
	while (f && fgets(line, sizeof line, f))
		if (strncmp(line, "Threads:", 8) == 0)
			n = atol(line + 8);
	if (f)
		fclose(f);
	return n;
}

static void raise_nofile(rlim_t want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		TFAIL("getrlimit: %s", strerror(errno));
	if (rl.rlim_max < want)
		TFAIL("open-files hard limit %lu is below the %lu this case needs",
		      (unsigned long)rl.rlim_max, (unsigned long)want);
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		TFAIL("setrlimit: %s", strerror(errno));
}

#define SPAWN(...) ((struct spawn){__VA_ARGS__})
#define ARGS(...) .args = {__VA_ARGS__, NULL}
#define ENV(...) .env = {__VA_ARGS__, NULL}
#define W2 "CAPRICE_WORKERS=2"
#define W1 "CAPRICE_WORKERS=1"

/* ---- 1. thread-per-connection echo server ------------------------------ */

struct conn {
	int fd, len, sent, got;
};

static unsigned char pat_byte(int i, int j)
{
	return (unsigned char)(i * 131 + j * 7 + (j >> 8));
}

static int conn_len(int i)
{
	return 1 + (int)((i * 7919L) % 3000);
}

/* Runs the echo server under `mode` with `n` clients, all kept open until
 * every echo is back; returns the server's kernel-thread count taken then
 * (and the largest seen on the way in *peak). */
static long echo_case(enum mode mode, int n, long *peak)
{
	raise_nofile((rlim_t)n + 200);
	char nstr[16];
	snprintf(nstr, sizeof nstr, "%d", n);
	struct child srv;
	spawn(&SPAWN(.mode = mode, .prog = "pl_echo_server", ARGS(nstr), ENV(W2)), &srv);
	if (!pump(&srv, 20000, "\n", 0))
		EXPECT_MSG(&srv, 0, "the server printed no port within 20 s");
	int port = 0, spid = 0;
	EXPECT_MSG(&srv, sscanf(bstr(&srv.o), "port %d pid %d", &port, &spid) == 2,
	           "no \"port P pid N\" line");

	struct conn *cs = calloc((size_t)n, sizeof *cs);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int opened = 0, done = 0, inflight = 0;
	*peak = 0;
	uint64_t deadline = tc_now_ns() + 80ull * 1000000000u;
	unsigned char *out = malloc(4096), in[8192];
	while (done < n) {
		while (opened < n && inflight < 200) {
			struct conn *c = &cs[opened];
			c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (c->fd < 0)
				TFAIL("client socket #%d: %s", opened, strerror(errno));
			c->len = conn_len(opened);
			if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0 &&
			    errno != EINPROGRESS)
				TFAIL("client connect #%d: %s", opened, strerror(errno));
			struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)opened};
			epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
			opened++;
			inflight++;
		}
		struct epoll_event evs[256];
		int ne = epoll_wait(ep, evs, 256, 100);
		if (ne < 0 && errno != EINTR)
			TFAIL("epoll_wait: %s", strerror(errno));
		for (int k = 0; k < ne; k++) {
			int i = (int)evs[k].data.u32;
			struct conn *c = &cs[i];
			if ((evs[k].events & EPOLLOUT) && c->sent < c->len) {
				int m = c->len - c->sent;
				for (int j = 0; j < m; j++)
					out[j] = pat_byte(i, c->sent + j);
				ssize_t w = send(c->fd, out, (size_t)m, MSG_NOSIGNAL);
				if (w > 0)
					c->sent += (int)w;
				else if (errno != EAGAIN && errno != EINPROGRESS) {
					int soe = 0;
					socklen_t sl = sizeof soe;
					getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soe, &sl);
					EXPECT_MSG(&srv, 0, "client %d: send: %s (SO_ERROR %s), %d open, %d echoed",
					           i, strerror(errno), strerror(soe), opened, done);
				}
				if (c->sent == c->len) {
					struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
					epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
				}
			}
			if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
				ssize_t r = recv(c->fd, in, sizeof in, 0);
				if (r < 0 && (errno == EAGAIN || errno == EINPROGRESS))
					continue;
				EXPECT_MSG(&srv, r > 0, "client %d: recv returned %zd (%s) after %d of %d bytes; %d open, %d echoed",
				           i, r, r < 0 ? strerror(errno) : "EOF", c->got, c->len, opened, done);
				EXPECT_MSG(&srv, c->got + r <= c->sent, "client %d: %zd bytes back, more than the %d sent", i,
				           c->got + r, c->sent);
				for (int j = 0; j < r; j++)
					if (in[j] != pat_byte(i, c->got + j))
						EXPECT_MSG(&srv, 0, "client %d: byte %d echoed as %#x, sent %#x", i,
						           c->got + j, in[j], pat_byte(i, c->got + j));
				c->got += (int)r;
				if (c->got == c->len) {
					epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
					done++;
					inflight--;
					if (done % 250 == 0) {
						long t = kthreads_of(spid);
						if (t > *peak)
							*peak = t;
					}
				}
			}
		}
		pump(&srv, 0, NULL, 0);
		if (tc_now_ns() > deadline) {
			fprintf(stderr, "echo: %d of %d connections opened, %d echoed after 80 s\n", opened,
			        n, done);
			tc_dump_tasks(spid);
			EXPECT_MSG(&srv, 0, "echo clients did not finish");
		}
	}
	/* every connection is open and its handler is blocked in read */
	usleep(100000);
	long now = kthreads_of(spid);
	if (now > *peak)
		*peak = now;
	for (int i = 0; i < n; i++)
		close(cs[i].fd);
	close(ep);
	finish(&srv, 60000);
	EXPECT_EXIT(&srv, 0);
	long total = 0;
	for (int i = 0; i < n; i++)
		total += cs[i].len;
	char want[96];
	snprintf(want, sizeof want, "served %d bytes %ld\n", n, total);
	EXPECT_OUT(&srv, want);
	free(cs);
	free(out);
	return now;
}

TCASE(echo_5000_user_threads)
{
	long peak, open = echo_case(LAUNCHER, 5000, &peak);
	printf("kernel threads with 5000 connections open: %ld (peak %ld)\n", open, peak);
	if (peak > WORKERS + EXTRA_KTHREADS)
		TFAIL("the server had %ld kernel threads with 5000 connections (%ld at the end), "
		      "wanted <= %d: not user threads",
		      peak, open, WORKERS + EXTRA_KTHREADS);
}

TCASE(echo_500_preload_env)
{
	long peak, open = echo_case(PRELOAD, 500, &peak);
	if (peak > WORKERS + EXTRA_KTHREADS)
		TFAIL("the server had %ld kernel threads with 500 connections (%ld at the end), "
		      "wanted <= %d",
		      peak, open, WORKERS + EXTRA_KTHREADS);
}

/* The thread-count check tells the two apart: the same server on NPTL
 * holds one kernel thread per connection. */
TCASE(echo_500_nptl_reference)
{
	long peak, open = echo_case(PLAIN, 500, &peak);
	if (open < 500)
		TFAIL("without the shim the server had only %ld kernel threads for 500 connections", open);
}

/* ---- 2. producer/consumer ----------------------------------------------- */

static void prodcons_check(struct child *c)
{
	/* 4 producers x 50,000 items: id*1000003 + k*k */
	unsigned long long sum = 0;
	for (unsigned long long id = 1; id <= 4; id++)
		for (unsigned long long k = 0; k < 50000; k++)
			sum += id * 1000003ull + k * k;
	char want[128];
	snprintf(want, sizeof want, "produced 200000 %llu consumed 200000 %llu\n", sum, sum);
	EXPECT_EXIT(c, 0);
	EXPECT_OUT(c, want);
}

TCASE(prodcons_launcher)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_prodcons", ENV(W2)), &c, 90000);
	prodcons_check(&c);
}

TCASE(prodcons_preload_env)
{
	struct child c;
	run(&SPAWN(.mode = PRELOAD, .prog = "pl_prodcons", ENV(W2)), &c, 90000);
	prodcons_check(&c);
}

TCASE(prodcons_one_worker)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_prodcons", ENV(W1)), &c, 90000);
	prodcons_check(&c);
}

/* ---- 3. getaddrinfo ------------------------------------------------------ */

TCASE(getaddrinfo_100_threads)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_gai", ENV(W1)), &c, 90000);
	EXPECT_EXIT(&c, 0);
	int ok = -1, fail = -1;
	long ticks = -1, gap = -1, phase = -1;
	const char *l = strstr(bstr(&c.o), "gai ok");
	EXPECT_MSG(&c, l && sscanf(l, "gai ok %d fail %d ticks %ld maxgap_ms %ld phase_ms %ld", &ok,
	                           &fail, &ticks, &gap, &phase) == 5,
	           "no result line");
	EXPECT_MSG(&c, ok == 1000 && fail == 0, "lookups: %d ok, %d failed", ok, fail);
	/* the ticker sleeps 1 ms at a time; it must have kept going */
	EXPECT_MSG(&c, ticks >= phase / 100, "the ticker ticked %ld times in %ld ms", ticks, phase);
	EXPECT_MSG(&c, gap <= 500 + tc_slack_ms(), "the ticker stalled for %ld ms", gap);
}

/* CAPRICE_DEBUG=1 names the calls served the plain way, once each: the
 * resolver runs on a helper kernel thread, and 1,000 lookups say so once. */
TCASE(debug_names_offloaded_calls_once)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_gai", ENV(W1, "CAPRICE_DEBUG=1")), &c, 90000);
	EXPECT_EXIT(&c, 0);
	EXPECT_MSG(&c, count_lines(&c.e, "caprice: debug: getaddrinfo: runs on a helper kernel thread") == 1,
	           "wanted one debug line for getaddrinfo");
	/* and nothing without it */
	struct child q;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_gai", ENV(W1)), &q, 90000);
	EXPECT_EXIT(&q, 0);
	EXPECT_MSG(&q, count_lines(&q.e, "caprice: debug:") == 0, "debug lines without CAPRICE_DEBUG");
}

/* ---- 4. printf from 1,000 threads ---------------------------------------- */

TCASE(printf_1000_threads)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_printf", ENV(W2)), &c, 90000);
	EXPECT_EXIT(&c, 0);
	static unsigned char seen[1000][20];
	const char *s = bstr(&c.o);
	int lines = 0, end = 0;
	while (*s) {
		const char *eol = strchr(s, '\n');
		EXPECT_MSG(&c, eol, "last line unterminated: \"%.200s\"", s);
		size_t len = (size_t)(eol - s);
		int id, l, off = 0;
		if (len == 3 && strncmp(s, "END", 3) == 0) {
			end++;
		} else {
			if (sscanf(s, "T %d L %d %n", &id, &l, &off) != 2 || id < 0 || id >= 1000 ||
			    l < 0 || l >= 20)
				EXPECT_MSG(&c, 0, "malformed line %d: \"%.*s\"", lines, (int)(len > 300 ? 300 : len), s);
			int plen = 20 + (id * 7 + l * 13) % 140;
			bool good = (size_t)off + (size_t)plen == len;
			for (int i = 0; good && i < plen; i++)
				good = s[off + i] == (char)('a' + (id + l + i) % 26);
			if (!good)
				EXPECT_MSG(&c, 0, "line %d broken or interleaved: \"%.*s\"", lines,
				           (int)(len > 300 ? 300 : len), s);
			EXPECT_MSG(&c, !seen[id][l], "line T %d L %d printed twice", id, l);
			seen[id][l] = 1;
		}
		lines++;
		s = eol + 1;
	}
	for (int i = 0; i < 1000; i++)
		for (int l = 0; l < 20; l++)
			EXPECT_MSG(&c, seen[i][l], "line T %d L %d missing (%d lines)", i, l, lines);
	EXPECT_MSG(&c, end == 1 && lines == 20001, "%d lines, %d END", lines, end);
}

/* ---- 5. main blocked reading a pipe -------------------------------------- */

/* One worker: if main's read held the kernel thread, nothing else could
 * run, and the ticks would stop. */
static void pipe_block_case(const char *how, enum mode mode)
{
	struct child c;
	spawn(&SPAWN(.mode = mode, .prog = "pl_pipe_block", ARGS(how), ENV(W1), .stdin_pipe = true),
	      &c);
	long wait_ms = 10000 + tc_slack_ms();
	if (!pump(&c, wait_ms, "blocking\n", 0))
		EXPECT_MSG(&c, 0, "no \"blocking\" line within %ld ms", wait_ms);
	size_t from = (size_t)(strstr(bstr(&c.o), "blocking\n") - bstr(&c.o)) + 9;
	/* five tick reports after main blocked, the count moving */
	long first = -1, last = -1;
	int reports = 0;
	uint64_t end = tc_now_ns() + (uint64_t)wait_ms * 1000000u;
	while (reports < 5 || last - first < 20) {
		if (tc_now_ns() > end) {
			fprintf(stderr, "no progress while main blocks in %s:\n", how);
			tc_dump_tasks(c.pid);
			kill(-c.pid, SIGKILL);
			finish(&c, 5000);
			EXPECT_MSG(&c, 0,
			           "main blocked in %s(stdin) and the other threads made no progress "
			           "for %ld ms (%d tick reports, ticks %ld..%ld)",
			           how, wait_ms, reports, first, last);
		}
		if (!pump(&c, 200, "\n", from))
			continue;
		const char *nl = strchr(bstr(&c.o) + from, '\n');
		long t;
		if (sscanf(bstr(&c.o) + from, "tick %ld", &t) == 1) {
			if (first < 0)
				first = t;
			last = t;
			reports++;
		}
		from = (size_t)(nl - bstr(&c.o)) + 1;
	}
	if (write(c.in, "hello\n", 6) != 6)
		TFAIL("write to the child's stdin: %s", strerror(errno));
	finish(&c, 30000);
	EXPECT_EXIT(&c, 0);
	EXPECT_OUT(&c, "got hello ticks_in_block ");
	long during = atol(strstr(bstr(&c.o), "ticks_in_block ") + 15);
	EXPECT_MSG(&c, during >= 20, "only %ld ticks while main was blocked", during);
}

TCASE(main_blocks_in_read)
{
	pipe_block_case("read", LAUNCHER);
}

TCASE(main_blocks_in_fgets)
{
	pipe_block_case("fgets", LAUNCHER);
}

TCASE(main_blocks_in_read_preload_env)
{
	pipe_block_case("read", PRELOAD);
}

/* ---- 6. fork, exec, system, popen ----------------------------------------- */

static void fork_case(const char *what)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_fork", ARGS(what), ENV(W2)), &c, 90000);
	EXPECT_EXIT(&c, 0);
	char want[64];
	snprintf(want, sizeof want, "%s ok", what);
	EXPECT_OUT(&c, want);
}

TCASE(fork_exec_waitpid)
{
	fork_case("exec");
}

TCASE(fork_child_uses_threads)
{
	fork_case("child");
}

TCASE(system_exit_3)
{
	fork_case("system");
}

TCASE(popen_echo_hi)
{
	fork_case("popen");
}

/* ---- 7. signals ------------------------------------------------------------ */

/* Runs pl_signals `what` without the shim, then under it: both must end
 * as `want_sig` (0: exit 0) says, and print `want_out` when they exit. */
static void signal_case(const char *what, int want_sig, const char *want_out)
{
	struct child ref, c;
	run(&SPAWN(.mode = PLAIN, .prog = "pl_signals", ARGS(what)), &ref, 30000);
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_signals", ARGS(what), ENV(W2)), &c, 60000);
	if (want_sig) {
		EXPECT_MSG(&ref, WIFSIGNALED(ref.status) && WTERMSIG(ref.status) == want_sig,
		           "the reference run (no shim) did not die of signal %d", want_sig);
		EXPECT_MSG(&c, WIFSIGNALED(c.status) && WTERMSIG(c.status) == want_sig,
		           "wanted death by signal %d (%s), as without the shim", want_sig,
		           strsignal(want_sig));
	} else {
		EXPECT_EXIT(&ref, 0);
		EXPECT_OUT(&ref, want_out);
		EXPECT_EXIT(&c, 0);
		EXPECT_OUT(&c, want_out);
	}
}

TCASE(signal_handler_runs)
{
	signal_case("handler", 0, "handler ok");
}

TCASE(sigwait_thread)
{
	signal_case("sigwait", 0, "sigwait ok");
}

TCASE(sigpipe_ignored_pipe_epipe)
{
	signal_case("pipe_ign", 0, "epipe ok");
}

TCASE(sigpipe_default_pipe_kills)
{
	signal_case("pipe_dfl", SIGPIPE, NULL);
}

TCASE(sigpipe_ignored_socket_epipe)
{
	signal_case("sock_ign", 0, "epipe ok");
}

TCASE(sigpipe_default_socket_kills)
{
	signal_case("sock_dfl", SIGPIPE, NULL);
}

/* ---- 8, 9. C++ threads; threads from a constructor -------------------------- */

TCASE(cxx_std_thread)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_cxx", ENV(W2)), &c, 90000);
	EXPECT_EXIT(&c, 0);
	EXPECT_OUT(&c, "cxx items 80000 sum 3199960000 want 3199960000");
}

/* __thread, thread_local (with its destructor) and errno belong to each
 * thread, as on NPTL, across parks and moves between workers: the shim
 * gives every user thread TLS of its own (sched/tls.c).  The same binary
 * on NPTL is the reference. */
TCASE(thread_local_storage_per_thread)
{
	if (sanitized())
		TSKIP("TLS per user thread is off in sanitized builds (ASan keeps its own "
		      "per-thread state in TLS)");
	struct child c;
	run(&SPAWN(.mode = PLAIN, .prog = "pl_tls"), &c, 90000);
	EXPECT_EXIT(&c, 0);
	EXPECT_OUT(&c, "tls ok 1000 dtors 1000 bad 0");
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_tls", ENV(W2)), &c, 90000);
	EXPECT_EXIT(&c, 0);
	EXPECT_OUT(&c, "tls ok 1000 dtors 1000 bad 0");
	run(&SPAWN(.mode = PRELOAD, .prog = "pl_tls", ENV(W2)), &c, 90000);
	EXPECT_EXIT(&c, 0);
	EXPECT_OUT(&c, "tls ok 1000 dtors 1000 bad 0");
}

/* CAPRICE_TLS=worker keeps the worker's TLS (faster switches, and what a
 * program that never relies on thread-local state needs): the same
 * program then sees other threads' values, which shows what the default
 * protects. */
TCASE(thread_local_storage_worker_mode_is_shared)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_tls", ENV(W2, "CAPRICE_TLS=worker")), &c, 90000);
	EXPECT_MSG(&c, c.reaped && WIFEXITED(c.status) && WEXITSTATUS(c.status) == 1,
	           "with worker TLS the program was expected to see other threads' values");
}

TCASE(threads_from_constructor)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_ctor", ENV(W2)), &c, 60000);
	EXPECT_EXIT(&c, 0);
	EXPECT_OUT(&c, "ctor ok");
	run(&SPAWN(.mode = PRELOAD, .prog = "pl_ctor", ENV(W2)), &c, 60000);
	EXPECT_EXIT(&c, 0);
	EXPECT_OUT(&c, "ctor ok");
}

/* ---- 10. the shim is in effect ------------------------------------------------ */

TCASE(stats_show_user_threads)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_prodcons", ENV(W2, "CAPRICE_STATS=1")), &c, 90000);
	prodcons_check(&c);
	EXPECT_MSG(&c, count_lines(&c.e, "caprice: stats: worker") == WORKERS,
	           "wanted one \"caprice: stats: worker\" line per worker (%d)", WORKERS);
	EXPECT_MSG(&c, stat_sum(&c.e, "switches") > 0, "no switches counted");
	run(&SPAWN(.mode = PRELOAD, .prog = "pl_prodcons", ENV(W2, "CAPRICE_STATS=1")), &c, 90000);
	prodcons_check(&c);
	EXPECT_MSG(&c, stat_sum(&c.e, "switches") > 0, "no switches counted");
	/* no stats unless asked, and none without the shim */
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_prodcons", ENV(W2, "CAPRICE_STATS=0")), &c, 90000);
	prodcons_check(&c);
	EXPECT_MSG(&c, count_lines(&c.e, "caprice:") == 0, "caprice: lines without CAPRICE_STATS");
	run(&SPAWN(.mode = PLAIN, .prog = "pl_prodcons", ENV("CAPRICE_STATS=1")), &c, 90000);
	prodcons_check(&c);
	EXPECT_MSG(&c, count_lines(&c.e, "caprice:") == 0, "caprice: lines without the shim");
}

TCASE(waiters_20000_on_one_condvar)
{
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_waiters", ARGS("20000"), ENV(W2)), &c, 100000);
	EXPECT_EXIT(&c, 0);
	long k = -1;
	const char *l = strstr(bstr(&c.o), "waiting 20000 kthreads ");
	EXPECT_MSG(&c, l && sscanf(l, "waiting 20000 kthreads %ld", &k) == 1, "no waiting line");
	EXPECT_MSG(&c, k > 0 && k <= WORKERS + EXTRA_KTHREADS,
	           "%ld kernel threads with 20000 threads waiting, wanted <= %d", k,
	           WORKERS + EXTRA_KTHREADS);
	EXPECT_OUT(&c, "joined 20000 woke 20000");
}

/* ---- 11. fallbacks ---------------------------------------------------------------- */

TCASE(static_binary_runs_without_shim)
{
#ifdef NO_STATIC_PROG
	TSKIP("no static test program in this build (%s)", NO_STATIC_PROG);
#else
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_static", ENV(W2, "CAPRICE_STATS=1")), &c, 60000);
	EXPECT_EXIT(&c, 0);
	EXPECT_OUT(&c, "static ok 6");
	EXPECT_MSG(&c, count_lines(&c.e, "caprice: stats") == 0, "stats from a static program?");
	EXPECT_MSG(&c, count_lines(&c.e, "static") == 1,
	           "wanted one stderr line saying the binary is static, got %d",
	           count_lines(&c.e, "static"));
#endif
}

static void uring_refused(enum mode mode)
{
	struct child c;
	run(&SPAWN(.mode = mode, .prog = "pl_prodcons", ENV(W2), .refuse_uring = true), &c, 90000);
	prodcons_check(&c);
	EXPECT_MSG(&c, count_lines(&c.e, "io_uring") == 1,
	           "wanted exactly one stderr line mentioning io_uring, got %d",
	           count_lines(&c.e, "io_uring"));
	/* and a program that blocks in I/O */
	run(&SPAWN(.mode = mode, .prog = "pl_fork", ARGS("popen"), ENV(W2), .refuse_uring = true),
	    &c, 90000);
	EXPECT_EXIT(&c, 0);
	EXPECT_OUT(&c, "popen ok");
	EXPECT_MSG(&c, count_lines(&c.e, "io_uring") == 1,
	           "wanted exactly one stderr line mentioning io_uring, got %d",
	           count_lines(&c.e, "io_uring"));
}

TCASE(uring_refused_launcher)
{
	uring_refused(LAUNCHER);
}

TCASE(uring_refused_preload_env)
{
	uring_refused(PRELOAD);
}

/* ---- 12. real programs ---------------------------------------------------------- */

static char tmpdir[256];

static void cleanup_tmp(void)
{
	if (tmpdir[0]) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tmpdir);
	}
}

static const char *make_tmpdir(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/caprice-preload-XXXXXX");
	if (!mkdtemp(tmpdir))
		TFAIL("mkdtemp: %s", strerror(errno));
	atexit(cleanup_tmp);
	return tmpdir;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Text lines of pseudo-random words: compressible, sortable. */
static void gen_text(const char *path, size_t bytes)
{
	static const char *words[] = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot",
	                              "golf", "hotel", "india", "juliet", "kilo", "lima",
	                              "mike", "november", "oscar", "papa", "quebec", "romeo"};
	FILE *f = fopen(path, "w");
	if (!f)
		TFAIL("fopen %s: %s", path, strerror(errno));
	size_t n = 0;
	while (n < bytes) {
		int w = 2 + (int)(next_rand() % 6);
		for (int i = 0; i < w; i++)
			n += (size_t)fprintf(f, "%s%s", i ? " " : "", words[next_rand() % 18]);
		n += (size_t)fprintf(f, " %llu\n", (unsigned long long)(next_rand() % 1000000));
	}
	if (fclose(f) != 0)
		TFAIL("write %s failed", path);
}

static bool same_file(const char *a, const char *b, char *why, size_t n)
{
	FILE *fa = fopen(a, "r"), *fb = fopen(b, "r");
	if (!fa || !fb) {
		snprintf(why, n, "cannot open %s or %s", a, b);
		return false;
	}
	long off = 0;
	for (;; off++) {
		int ca = getc(fa), cb = getc(fb);
		if (ca != cb) {
			snprintf(why, n, "%s and %s differ at byte %ld (%d vs %d)", a, b, off, ca, cb);
			fclose(fa);
			fclose(fb);
			return false;
		}
		if (ca == EOF)
			break;
	}
	fclose(fa);
	fclose(fb);
	return true;
}

static long file_size(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

#define CHECK_SAME(c, a, b)                                                 \
	do {                                                                \
		char why_[600];                                             \
		EXPECT_MSG(c, same_file(a, b, why_, sizeof why_), "%s", why_); \
	} while (0)

static void require_tool(const char *path)
{
	if (access(path, X_OK) != 0)
		TFAIL("%s is not installed (scripts/setup installs it)", path);
}

TCASE(real_xz_threads)
{
	require_tool("/usr/bin/xz");
	const char *d = make_tmpdir();
	char in[300], xzf[300], back[300], back2[300];
	snprintf(in, sizeof in, "%s/data", d);
	snprintf(xzf, sizeof xzf, "%s/data.xz", d);
	snprintf(back, sizeof back, "%s/data.back", d);
	snprintf(back2, sizeof back2, "%s/data.back2", d);
	gen_text(in, 6u << 20);
	struct child c;
	/* 1 MiB blocks: the 6 MiB spread over both encoder threads */
	run(&SPAWN(.mode = LAUNCHER, .prog = "/usr/bin/xz",
	           ARGS("-T2", "-3", "--block-size=1MiB", "-c", in), ENV(W2, "CAPRICE_STATS=1"),
	           .stdout_path = xzf),
	    &c, 100000);
	EXPECT_EXIT(&c, 0);
	EXPECT_MSG(&c, file_size(xzf) > 1000 && file_size(xzf) < file_size(in), "xz output is %ld bytes",
	           file_size(xzf));
	/* decompress without the shim: the bytes must come back */
	struct child u;
	run(&SPAWN(.mode = PLAIN, .prog = "/usr/bin/xz", ARGS("-dc", xzf), .stdout_path = back), &u,
	    60000);
	EXPECT_EXIT(&u, 0);
	CHECK_SAME(&c, in, back);
	/* and with it */
	run(&SPAWN(.mode = LAUNCHER, .prog = "/usr/bin/xz", ARGS("-T2", "-dc", xzf), ENV(W2),
	           .stdout_path = back2),
	    &u, 60000);
	EXPECT_EXIT(&u, 0);
	CHECK_SAME(&u, in, back2);
	/* the proof that xz's threads were user threads */
	long sw = stat_sum(&c.e, "switches");
	EXPECT_MSG(&c, sw > 0, "no \"caprice: stats\" switches on stderr: did the shim run xz's threads?");
	printf("xz: %ld -> %ld bytes, %ld switches\n", file_size(in), file_size(xzf), sw);
}

/* pigz: a reader, a pool of -p compressing threads handed 128 KiB blocks
 * through its own lock and condition variables, an ordered writer.  Under
 * the shim with -p 2, 4 and 8 (more threads than workers), the gzip
 * stream must decompress to the input and be the bytes pigz writes
 * without the shim.  How fast it goes is bench/pigz/compare-pigz's
 * business: the times are printed, never judged. */
TCASE(real_pigz_parallel)
{
	tc_run_alone();
	require_tool("/usr/bin/pigz");
	const char *d = make_tmpdir();
	char in[300];
	snprintf(in, sizeof in, "%s/data", d);
	gen_text(in, 16u << 20);
	static const char *const procs[] = {"2", "4", "8"};
	for (size_t i = 0; i < sizeof procs / sizeof procs[0]; i++) {
		const char *p = procs[i];
		char gz[300], ref[300], back[300];
		snprintf(gz, sizeof gz, "%s/data.%s.gz", d, p);
		snprintf(ref, sizeof ref, "%s/data.%s.plain.gz", d, p);
		snprintf(back, sizeof back, "%s/data.%s.back", d, p);
		struct child c, u;
		uint64_t t0 = tc_now_ns();
		run(&SPAWN(.mode = LAUNCHER, .prog = "/usr/bin/pigz", ARGS("-p", p, "-c", in),
		           ENV(W2, "CAPRICE_STATS=1"), .stdout_path = gz),
		    &c, 100000);
		uint64_t t1 = tc_now_ns();
		EXPECT_EXIT(&c, 0);
		EXPECT_MSG(&c, file_size(gz) > 1000 && file_size(gz) < file_size(in),
		           "pigz -p %s output is %ld bytes", p, file_size(gz));
		/* decompress without the shim: the bytes must come back */
		run(&SPAWN(.mode = PLAIN, .prog = "/usr/bin/pigz", ARGS("-dc", gz), .stdout_path = back),
		    &u, 60000);
		EXPECT_EXIT(&u, 0);
		CHECK_SAME(&c, in, back);
		/* and pigz without the shim writes the same stream */
		uint64_t t2 = tc_now_ns();
		run(&SPAWN(.mode = PLAIN, .prog = "/usr/bin/pigz", ARGS("-p", p, "-c", in),
		           .stdout_path = ref),
		    &u, 60000);
		uint64_t t3 = tc_now_ns();
		EXPECT_EXIT(&u, 0);
		CHECK_SAME(&c, ref, gz);
		/* the proof that pigz's threads were user threads */
		long sw = stat_sum(&c.e, "switches");
		EXPECT_MSG(&c, sw > 0,
		           "no \"caprice: stats\" switches on stderr: did the shim run pigz's threads?");
		printf("pigz -p %s: %ld -> %ld bytes, %ld switches; wall %.2f s under the shim, "
		       "%.2f s plain (for information)\n",
		       p, file_size(in), file_size(gz), sw, (double)(t1 - t0) / 1e9,
		       (double)(t3 - t2) / 1e9);
		unlink(back);
	}
}

TCASE(real_sort_parallel)
{
	require_tool("/usr/bin/sort");
	const char *d = make_tmpdir();
	char in[300], ref[300], got[300], got2[300], tmpenv[320];
	snprintf(in, sizeof in, "%s/lines", d);
	snprintf(ref, sizeof ref, "%s/ref", d);
	snprintf(got, sizeof got, "%s/got", d);
	snprintf(got2, sizeof got2, "%s/got2", d);
	snprintf(tmpenv, sizeof tmpenv, "TMPDIR=%s", d);
	gen_text(in, 12u << 20); /* ~330,000 lines */
	struct child c;
	run(&SPAWN(.mode = PLAIN, .prog = "/usr/bin/sort", ARGS("-S", "100M", "-o", ref, in),
	           ENV("LC_ALL=C", tmpenv)),
	    &c, 60000);
	EXPECT_EXIT(&c, 0);
	/* in memory: sort splits the lines between two threads */
	run(&SPAWN(.mode = LAUNCHER, .prog = "/usr/bin/sort",
	           ARGS("--parallel=2", "-S", "100M", "-o", got, in),
	           ENV(W2, "LC_ALL=C", tmpenv, "CAPRICE_STATS=1")),
	    &c, 90000);
	EXPECT_EXIT(&c, 0);
	CHECK_SAME(&c, ref, got);
	struct child first = c;
	/* 1 MiB of buffer: temporary files and merges */
	run(&SPAWN(.mode = LAUNCHER, .prog = "/usr/bin/sort",
	           ARGS("--parallel=2", "-S", "1M", "-o", got2, in), ENV(W2, "LC_ALL=C", tmpenv)),
	    &c, 90000);
	EXPECT_EXIT(&c, 0);
	CHECK_SAME(&c, ref, got2);
	/* the proof that sort's threads were user threads */
	long sw = stat_sum(&first.e, "switches");
	EXPECT_MSG(&first, sw > 0, "no \"caprice: stats\" switches on stderr: did the shim run sort's threads?");
	printf("sort: %ld bytes sorted, %ld switches\n", file_size(in), sw);
}

/* A small HTTP/1.1 server on NPTL threads in the driver, for curl and
 * varnishd: each path's body is BODY_LEN bytes made from the path, one
 * request per connection. */
static int http_fd;
static volatile int http_stop;
static int http_requests; /* served so far */

static void body_for(const char *path, char *out, size_t n)
{
	unsigned h = 5381;
	for (const char *p = path; *p; p++)
		h = h * 33 + (unsigned char)*p;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)('A' + (h + i * 31 + (i >> 10)) % 57);
}

#define BODY_LEN (1u << 20)

static void *http_conn(void *arg)
{
	int fd = (int)(long)arg;
	char req[4096];
	size_t got = 0;
	while (got < sizeof req - 1) {
		ssize_t r = read(fd, req + got, sizeof req - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		req[got] = 0;
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	req[got] = 0;
	char path[256] = "/";
	sscanf(req, "GET %255s", path);
	__atomic_add_fetch(&http_requests, 1, __ATOMIC_RELAXED);
	char *body = malloc(BODY_LEN);
	body_for(path, body, BODY_LEN);
	char head[256];
	int hl = snprintf(head, sizeof head,
	                  "HTTP/1.1 200 OK\r\nContent-Length: %u\r\nConnection: close\r\n\r\n",
	                  BODY_LEN);
	if (write(fd, head, (size_t)hl) == hl) {
		for (size_t off = 0; off < BODY_LEN;) {
			ssize_t w = write(fd, body + off, BODY_LEN - off);
			if (w <= 0)
				break;
			off += (size_t)w;
		}
	}
	free(body);
	close(fd);
	return NULL;
}

static void *http_server(void *arg)
{
	(void)arg;
	while (!http_stop) {
		int fd = accept4(http_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		pthread_t t;
		if (pthread_create(&t, NULL, http_conn, (void *)(long)fd) == 0)
			pthread_detach(t);
		else
			close(fd);
	}
	return NULL;
}

/* Starts the server on every local address; returns its port. */
static int http_backend_start(void)
{
	http_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
	socklen_t al = sizeof a;
	if (http_fd < 0 || bind(http_fd, (struct sockaddr *)&a, sizeof a) || listen(http_fd, 128) ||
	    getsockname(http_fd, (struct sockaddr *)&a, &al))
		TFAIL("http listen: %s", strerror(errno));
	pthread_t srv;
	CHECK_OK(pthread_create(&srv, NULL, http_server, NULL));
	return ntohs(a.sin_port);
}

/* A host name that resolves through /etc/hosts (so curl's resolver thread
 * runs getaddrinfo: curl answers "localhost" itself) to an address of
 * this machine. */
static void pick_host(char *host, size_t n)
{
	char hn[256];
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
	if (gethostname(hn, sizeof hn) == 0 && getaddrinfo(hn, NULL, &hints, &res) == 0 && res) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = *(struct sockaddr_in *)res->ai_addr;
		a.sin_port = 0;
		bool ok = s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0;
		if (s >= 0)
			close(s);
		freeaddrinfo(res);
		if (ok) {
			snprintf(host, n, "%s", hn);
			return;
		}
	}
	printf("note: the host name does not resolve to a local address; curl gets \"localhost\"\n");
	snprintf(host, n, "localhost");
}

TCASE(real_curl_threaded_resolver)
{
	require_tool("/usr/bin/curl");
	if (sanitized() && *LIBASAN_PATH) {
		/* Debian's curl hangs at start-up (setlocale, on glibc's locale
		 * lock) with libasan preloaded, Caprice or not: see whether
		 * this one does before blaming the shim */
		struct child p;
		static char asan_only[1100];
		snprintf(asan_only, sizeof asan_only, "LD_PRELOAD=%s", LIBASAN_PATH);
		spawn(&SPAWN(.mode = PLAIN, .prog = "/usr/bin/curl", ARGS("--version"), ENV(asan_only)),
		      &p);
		pump(&p, 10000, NULL, 0);
		int st;
		if (waitpid(p.pid, &st, WNOHANG) != p.pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			kill(-p.pid, SIGKILL);
			kill(p.pid, SIGKILL);
			waitpid(p.pid, &st, 0);
			TSKIP("curl --version does not finish with only libasan preloaded "
			      "(no shim), so curl cannot run in a sanitized build");
		}
		close(p.out);
		close(p.err);
	}
	const char *d = make_tmpdir();
	char host[256];
	pick_host(host, sizeof host);
	int port = http_backend_start();
	char urls[4][512], outs[4][300];
	for (int i = 0; i < 4; i++) {
		snprintf(urls[i], sizeof urls[i], "http://%s:%d/file%d", host, port, i);
		snprintf(outs[i], sizeof outs[i], "%s/out%d", d, i);
	}
	struct child c;
	/* -Z: the four transfers at once */
	run(&SPAWN(.mode = LAUNCHER, .prog = "/usr/bin/curl",
	           ARGS("-sS", "--fail", "-Z", "-o", outs[0], urls[0], "-o", outs[1], urls[1], "-o",
	                outs[2], urls[2], "-o", outs[3], urls[3]),
	           ENV(W2, "CAPRICE_STATS=1", "http_proxy=", "no_proxy=*")),
	    &c, 60000);
	EXPECT_EXIT(&c, 0);
	char *want = malloc(BODY_LEN), *got = malloc(BODY_LEN + 1);
	for (int i = 0; i < 4; i++) {
		char path[32];
		snprintf(path, sizeof path, "/file%d", i);
		body_for(path, want, BODY_LEN);
		FILE *f = fopen(outs[i], "r");
		size_t n = f ? fread(got, 1, BODY_LEN + 1, f) : 0;
		if (f)
			fclose(f);
		EXPECT_MSG(&c, n == BODY_LEN && memcmp(want, got, BODY_LEN) == 0,
		           "%s: %zu bytes, wanted %u matching bytes", outs[i], n, BODY_LEN);
	}
	long sw = stat_sum(&c.e, "switches");
	EXPECT_MSG(&c, sw > 0, "no user-thread switches counted");
	printf("curl: 4 x %u bytes from %s, %ld switches\n", BODY_LEN, host, sw);
	free(want);
	free(got);
}

/* memcached, unmodified under the shim: a listener thread hands each
 * connection through a pipe to one of -t 4 worker threads, each a
 * libevent loop around epoll_wait on nonblocking sockets.  32 client
 * connections, each on a kernel thread of this driver, set 150 values of
 * 10 bytes to 64 KiB (the big ones take several reads and writes on both
 * sides), read each back, fetch them all in multi-gets and delete half,
 * beside 4 connections that asked for the version once and then stay
 * quiet (one per memcached thread, which hands connections round-robin:
 * a read on a quiet one must answer EAGAIN, not wait, or its thread's
 * other connections wait with it); every byte must come back,
 * memcached's own counters must agree with what was sent, and SIGTERM
 * must end it with exit 0. */
#define MC_CLIENTS 32
#define MC_KEYS    150

struct mc_client {
	int port, id;
	char err[256];
};

static size_t mc_len(int id, int k)
{
	/* mostly small, every seventh big */
	return k % 7 == 3 ? 16384u + (size_t)((id * 7919 + k * 104729) % 49152)
	                  : 10u + (size_t)((id * 31 + k * 17) % 500);
}

static void mc_value(int id, int k, char *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		v[i] = (char)('a' + (id * 131 + k * 7 + (int)i) % 26);
}

static bool mc_send(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* Reads until `end` closes what buf holds (reply ends are unique per
 * command here); returns the length, or -1. */
static long mc_reply(int fd, char *buf, size_t cap, const char *end)
{
	size_t len = 0, elen = strlen(end);
	for (;;) {
		if (len >= elen && memcmp(buf + len - elen, end, elen) == 0)
			return (long)len;
		if (len == cap)
			return -1;
		ssize_t r = recv(fd, buf + len, cap - len, 0);
		if (r <= 0)
			return -1;
		len += (size_t)r;
	}
}

#define MC_FAIL(c, ...)                                                     \
	do {                                                                \
		snprintf((c)->err, sizeof (c)->err, __VA_ARGS__);           \
		goto out;                                                   \
	} while (0)

/* A connection to memcached whose replies must come within 10 s (a
 * server thread stuck elsewhere fails the case instead of hanging it). */
static int mc_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct timeval tv = {.tv_sec = 10};
	if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
	                connect(fd, (struct sockaddr *)&a, sizeof a) != 0)) {
		close(fd);
		return -1;
	}
	return fd;
}

static void *mc_client_main(void *arg)
{
	struct mc_client *c = arg;
	size_t cap = 2u << 20;
	char *buf = malloc(cap), *val = malloc(65536), *cmd = malloc(65536 + 128);
	int fd = mc_connect(c->port);
	if (!buf || !val || !cmd || fd < 0)
		MC_FAIL(c, "client %d: connect: %s", c->id, strerror(errno));
	for (int k = 0; k < MC_KEYS; k++) {
		size_t n = mc_len(c->id, k);
		mc_value(c->id, k, val, n);
		int h = snprintf(cmd, 128, "set c%d_k%d %d 0 %zu\r\n", c->id, k, k, n);
		memcpy(cmd + h, val, n);
		memcpy(cmd + h + n, "\r\n", 2);
		if (!mc_send(fd, cmd, (size_t)h + n + 2) ||
		    mc_reply(fd, buf, cap, "\r\n") != 8 || memcmp(buf, "STORED\r\n", 8) != 0)
			MC_FAIL(c, "client %d: set of key %d (%zu bytes) not STORED", c->id, k, n);
		h = snprintf(cmd, 128, "get c%d_k%d\r\n", c->id, k);
		long r = mc_send(fd, cmd, (size_t)h) ? mc_reply(fd, buf, cap, "END\r\n") : -1;
		char head[128];
		int hl = snprintf(head, sizeof head, "VALUE c%d_k%d %d %zu\r\n", c->id, k, k, n);
		if (r != hl + (long)n + 7 || memcmp(buf, head, (size_t)hl) != 0 ||
		    memcmp(buf + hl, val, n) != 0)
			MC_FAIL(c, "client %d: get of key %d (%zu bytes) came back wrong (%ld bytes)",
			        c->id, k, n, r);
	}
	/* all of them again, 30 keys per multi-get */
	for (int k0 = 0; k0 < MC_KEYS; k0 += 30) {
		int h = snprintf(cmd, 64, "get");
		for (int k = k0; k < k0 + 30; k++)
			h += snprintf(cmd + h, 64, " c%d_k%d", c->id, k);
		h += snprintf(cmd + h, 8, "\r\n");
		long r = mc_send(fd, cmd, (size_t)h) ? mc_reply(fd, buf, cap, "END\r\n") : -1;
		if (r < 0)
			MC_FAIL(c, "client %d: multi-get from key %d: no END", c->id, k0);
		const char *p = buf;
		for (int k = k0; k < k0 + 30; k++) {
			size_t n = mc_len(c->id, k);
			mc_value(c->id, k, val, n);
			char head[128];
			int hl = snprintf(head, sizeof head, "VALUE c%d_k%d %d %zu\r\n", c->id, k, k, n);
			if (memcmp(p, head, (size_t)hl) != 0 || memcmp(p + hl, val, n) != 0)
				MC_FAIL(c, "client %d: multi-get: key %d came back wrong", c->id, k);
			p += hl + n + 2;
		}
	}
	for (int k = 0; k < MC_KEYS; k += 2) {
		int h = snprintf(cmd, 128, "delete c%d_k%d\r\n", c->id, k);
		if (!mc_send(fd, cmd, (size_t)h) || mc_reply(fd, buf, cap, "\r\n") != 9 ||
		    memcmp(buf, "DELETED\r\n", 9) != 0)
			MC_FAIL(c, "client %d: delete of key %d not DELETED", c->id, k);
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(val);
	free(cmd);
	return NULL;
}

/* memcached's "stats" value for name, or -1. */
static long mc_stat(int port, const char *name)
{
	int fd = mc_connect(port);
	static char buf[65536];
	long v = -1;
	if (fd >= 0 && mc_send(fd, "stats\r\n", 7) && mc_reply(fd, buf, sizeof buf - 1, "END\r\n") > 0) {
		char key[96];
		snprintf(key, sizeof key, "STAT %s ", name);
		const char *p = strstr(buf, key);
		if (p)
			v = atol(p + strlen(key));
	}
	if (fd >= 0)
		close(fd);
	return v;
}

/* A loopback port free now, for a server to listen on (another process
 * could take it before the server does: the server then exits, and
 * await_server says so). */
static int free_loopback_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || getsockname(s, (struct sockaddr *)&a, &al))
		TFAIL("cannot find a free port: %s", strerror(errno));
	close(s);
	return ntohs(a.sin_port);
}

/* Waits up to ms for the server c started to answer on port
 * (answers(port) true), reading its output; fails the case if it ends
 * or stays silent. */
static void await_server_within(struct child *c, const char *name, int port,
                                bool (*answers)(int port), long ms)
{
	uint64_t give_up = tc_now_ns() + (uint64_t)ms * 1000000u;
	while (!answers(port)) {
		int st;
		if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
			c->status = st;
			c->reaped = true;
			pump(c, 200, NULL, 0);
			EXPECT_MSG(c, false, "%s ended before it answered on port %d", name, port);
		}
		EXPECT_MSG(c, tc_now_ns() < give_up, "%s did not answer on port %d in %ld ms", name,
		           port, ms);
		pump(c, 20, NULL, 0);
	}
}

static void await_server(struct child *c, const char *name, int port, bool (*answers)(int port))
{
	await_server_within(c, name, port, answers, 10000);
}

static bool mc_answers(int port)
{
	return mc_stat(port, "pid") >= 0;
}

TCASE(real_memcached_clients)
{
	tc_run_alone();
	require_tool("/usr/bin/memcached");
	int port = free_loopback_port();
	char port_s[16];
	snprintf(port_s, sizeof port_s, "%d", port);
	struct child c;
	if (geteuid() == 0)
		spawn(&SPAWN(.mode = LAUNCHER, .prog = "/usr/bin/memcached",
		             ARGS("-p", port_s, "-l", "127.0.0.1", "-U", "0", "-t", "4", "-c", "256",
		                  "-u", "root"),
		             ENV(W2, "CAPRICE_STATS=1")),
		      &c);
	else
		spawn(&SPAWN(.mode = LAUNCHER, .prog = "/usr/bin/memcached",
		             ARGS("-p", port_s, "-l", "127.0.0.1", "-U", "0", "-t", "4", "-c", "256"),
		             ENV(W2, "CAPRICE_STATS=1")),
		      &c);
	await_server(&c, "memcached", port, mc_answers);
	int quiet[4];
	for (int i = 0; i < 4; i++) {
		char r[64];
		quiet[i] = mc_connect(port);
		EXPECT_MSG(&c, quiet[i] >= 0 && mc_send(quiet[i], "version\r\n", 9) &&
		                   mc_reply(quiet[i], r, sizeof r, "\r\n") > 0 &&
		                   strncmp(r, "VERSION ", 8) == 0,
		           "quiet connection %d: no VERSION", i);
	}
	static struct mc_client cl[MC_CLIENTS];
	pthread_t t[MC_CLIENTS];
	for (int i = 0; i < MC_CLIENTS; i++) {
		cl[i] = (struct mc_client){.port = port, .id = i};
		CHECK_OK(pthread_create(&t[i], NULL, mc_client_main, &cl[i]));
	}
	for (int i = 0; i < MC_CLIENTS; i++) {
		CHECK_OK(pthread_join(t[i], NULL));
		EXPECT_MSG(&c, !cl[i].err[0], "%s", cl[i].err);
	}
	long sets = mc_stat(port, "cmd_set"), hits = mc_stat(port, "get_hits"),
	     misses = mc_stat(port, "get_misses"), items = mc_stat(port, "curr_items"),
	     threads = mc_stat(port, "threads");
	EXPECT_MSG(&c, sets == MC_CLIENTS * MC_KEYS && hits == 2 * MC_CLIENTS * MC_KEYS && misses == 0 &&
	                   items == MC_CLIENTS * MC_KEYS / 2 && threads == 4,
	           "memcached's counters: %ld sets, %ld hits, %ld misses, %ld items, %ld threads",
	           sets, hits, misses, items, threads);
	for (int i = 0; i < 4; i++)
		close(quiet[i]);
	kill(c.pid, SIGTERM);
	finish(&c, 20000);
	EXPECT_EXIT(&c, 0);
	long sw = stat_sum(&c.e, "switches");
	EXPECT_MSG(&c, sw > 0, "no user-thread switches counted");
	printf("memcached: %d clients x %d keys set, got twice, half deleted; %ld switches\n",
	       MC_CLIENTS, MC_KEYS, sw);
}

/* varnishd, Debian's 7.1, unmodified under the shim: a manager process
 * that closes every descriptor past stderr at start-up (closefrom: the
 * runtime's rings must survive it), compiles its VCL with cc, and forks
 * the cache process, whose two pools of 100 threads each serve a session
 * at a time and hand idle kept-alive sessions to a waiter thread's
 * epoll_wait.  8 client connections, each on a kernel thread of this
 * driver, GET 12 objects of 1 MiB from the driver's backend twice over
 * one kept-alive connection: every byte must be the backend's, the second
 * round all cache hits, the backend asked once per object (varnish
 * coalesces concurrent misses), the cache process's threads user threads
 * (a few kernel threads, not 200), and SIGTERM must end the manager with
 * exit 0. */
#define VN_CLIENTS 8
#define VN_PATHS   12

struct vn_client {
	int port, id;
	long hits_second_round;
	char err[256];
};

/* One GET on kept-alive connection fd: its body into body (up to
 * BODY_LEN bytes), and whether varnish served it from its cache
 * (X-Varnish names the request's transaction and, on a hit, the one that
 * fetched the object).  Returns the body's length, or -1. */
static long vn_get(int fd, const char *path, char *body, bool *hit)
{
	char req[300], head[4096];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: caprice\r\n\r\n", path);
	if (!mc_send(fd, req, (size_t)n))
		return -1;
	size_t len = 0;
	char *end = NULL;
	while (!end) {
		if (len == sizeof head - 1)
			return -1;
		ssize_t r = recv(fd, head + len, sizeof head - 1 - len, 0);
		if (r <= 0)
			return -1;
		len += (size_t)r;
		head[len] = 0;
		end = strstr(head, "\r\n\r\n");
	}
	end[2] = 0; /* the header lines, each ended by \r\n */
	const char *cl = strcasestr(head, "\r\nContent-Length:");
	const char *xv = strcasestr(head, "\r\nX-Varnish:");
	if (strncmp(head, "HTTP/1.1 200 ", 13) != 0 || !cl || !xv)
		return -1;
	long clen = strtol(cl + 17, NULL, 10);
	char *after;
	strtol(xv + 12, &after, 10);
	*hit = *after == ' ' && isdigit((unsigned char)after[1]);
	size_t have = len - (size_t)(end + 4 - head);
	if (clen < 0 || clen > (long)BODY_LEN || have > (size_t)clen)
		return -1;
	memcpy(body, end + 4, have);
	while (have < (size_t)clen) {
		ssize_t r = recv(fd, body + have, (size_t)clen - have, 0);
		if (r <= 0)
			return -1;
		have += (size_t)r;
	}
	return clen;
}

static void *vn_client_main(void *arg)
{
	struct vn_client *c = arg;
	char *want = malloc(BODY_LEN), *got = malloc(BODY_LEN);
	int fd = mc_connect(c->port);
	if (fd < 0 || !want || !got)
		MC_FAIL(c, "client %d: cannot connect", c->id);
	for (int round = 0; round < 2; round++)
		for (int k = 0; k < VN_PATHS; k++) {
			char path[64];
			snprintf(path, sizeof path, "/object%d", (k + c->id) % VN_PATHS);
			bool hit = false;
			long n = vn_get(fd, path, got, &hit);
			body_for(path, want, BODY_LEN);
			if (n != (long)BODY_LEN || memcmp(want, got, BODY_LEN) != 0)
				MC_FAIL(c, "client %d: GET %s: %ld bytes, wanted the backend's %u", c->id,
				        path, n, BODY_LEN);
			c->hits_second_round += round == 1 && hit;
		}
out:
	if (fd >= 0)
		close(fd);
	free(want);
	free(got);
	return NULL;
}

static bool vn_answers(int port)
{
	static char body[BODY_LEN];
	int fd = mc_connect(port);
	bool hit, ok = fd >= 0 && vn_get(fd, "/probe", body, &hit) == (long)BODY_LEN;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* The pid in varnishd's "Child (PID) Started" line, or -1. */
static pid_t vn_cache_pid(const struct buf *b)
{
	const char *p = b->p ? strstr(b->p, "Child (") : NULL;
	return p ? (pid_t)atol(p + 7) : -1;
}

TCASE(real_varnish_cache)
{
	tc_run_alone();
	require_tool("/usr/sbin/varnishd");
	require_tool("/usr/bin/cc"); /* varnishd compiles its VCL to C */
	const char *d = make_tmpdir();
	int backend = http_backend_start();
	int port = free_loopback_port();
	char listen_at[64], backend_at[64], workdir[400];
	snprintf(listen_at, sizeof listen_at, "127.0.0.1:%d", port);
	snprintf(backend_at, sizeof backend_at, "127.0.0.1:%d", backend);
	snprintf(workdir, sizeof workdir, "%s/varnish", d);
	struct child c;
	/* -j none: as root it would run as the vcache user, who cannot enter
	 * the test's private directory */
	spawn(&SPAWN(.mode = LAUNCHER, .prog = "/usr/sbin/varnishd",
	             ARGS("-F", "-j", "none", "-a", listen_at, "-b", backend_at, "-n", workdir, "-s",
	                  "malloc,64m"),
	             ENV(W2, "CAPRICE_STATS=1")),
	      &c);
	/* the VCL compile alone takes a few seconds on a busy machine */
	await_server_within(&c, "varnishd", port, vn_answers, 60000);
	int before = __atomic_load_n(&http_requests, __ATOMIC_RELAXED);
	static struct vn_client cl[VN_CLIENTS];
	pthread_t t[VN_CLIENTS];
	for (int i = 0; i < VN_CLIENTS; i++) {
		cl[i] = (struct vn_client){.port = port, .id = i};
		CHECK_OK(pthread_create(&t[i], NULL, vn_client_main, &cl[i]));
	}
	long hits = 0;
	for (int i = 0; i < VN_CLIENTS; i++) {
		CHECK_OK(pthread_join(t[i], NULL));
		EXPECT_MSG(&c, !cl[i].err[0], "%s", cl[i].err);
		hits += cl[i].hits_second_round;
	}
	int fetched = __atomic_load_n(&http_requests, __ATOMIC_RELAXED) - before;
	EXPECT_MSG(&c, hits == VN_CLIENTS * VN_PATHS && fetched == VN_PATHS,
	           "%ld of %d second-round GETs were cache hits; the backend was asked %d times "
	           "for %d objects",
	           hits, VN_CLIENTS * VN_PATHS, fetched, VN_PATHS);
	pump(&c, 50, NULL, 0);
	pid_t cache = vn_cache_pid(&c.e); /* varnishd speaks on stderr */
	long kthreads = cache > 0 ? kthreads_of(cache) : -1;
	EXPECT_MSG(&c, kthreads > 0 && kthreads < 50,
	           "varnishd's cache process (pid %d) runs %ld kernel threads: its 200 pool "
	           "threads should be user threads on a few",
	           (int)cache, kthreads);
	kill(c.pid, SIGTERM);
	finish(&c, 30000);
	EXPECT_EXIT(&c, 0);
	EXPECT_MSG(&c, c.e.p && strstr(c.e.p, "manager dies"), "no \"manager dies\" from varnishd");
	printf("varnishd: %d clients x %d objects of %u bytes twice, all second GETs hits, "
	       "%d backend fetches; cache process on %ld kernel threads\n",
	       VN_CLIENTS, VN_PATHS, BODY_LEN, fetched, kthreads);
}

/* redis-server, Debian's 7.0, unmodified under the shim: an event loop
 * on its main thread, background threads (lazy freeing, closing files)
 * fed through condition variables, and jemalloc, a library the program
 * links for its allocator: the shim's allocator family must pass redis's
 * calls on to it, and the runtime's own blocks must not come from it
 * (jemalloc's start-up closes a descriptor through syscall(), which the
 * runtime serves).  16 clients, each on a kernel thread of this driver,
 * SET, GET and MGET 150 values of 10 bytes to 64 KiB, INCR a shared
 * counter and UNLINK a 20,000-element list (freed by a background
 * thread), while one more connection waits in a BLPOP until the end
 * pushes to it; every byte must come back, the counter and DBSIZE must
 * agree, and SIGTERM must end redis with exit 0. */
#define RD_CLIENTS 16
#define RD_KEYS    150

struct rd_conn {
	int fd;
	char buf[1 << 17];
	size_t start, len;
	char cmd[1 << 17];
};

static bool rd_open(struct rd_conn *c, int port)
{
	c->start = c->len = 0;
	c->fd = mc_connect(port);
	return c->fd >= 0;
}

/* Sends one command, in one send (pieces would wait on Nagle and the
 * server's delayed ACK): argc arguments, argument i of len[i] bytes
 * (len NULL: strings). */
static bool rd_send(struct rd_conn *c, int argc, const char *const *argv, const size_t *len)
{
	size_t o = (size_t)snprintf(c->cmd, 32, "*%d\r\n", argc);
	for (int i = 0; i < argc; i++) {
		size_t n = len ? len[i] : strlen(argv[i]);
		if (o + n + 40 > sizeof c->cmd)
			return false;
		o += (size_t)snprintf(c->cmd + o, 32, "$%zu\r\n", n);
		memcpy(c->cmd + o, argv[i], n);
		memcpy(c->cmd + o + n, "\r\n", 2);
		o += n + 2;
	}
	return mc_send(c->fd, c->cmd, o);
}

/* The next n bytes of the reply stream into out (NULL: dropped). */
static bool rd_take(struct rd_conn *c, char *out, size_t n)
{
	while (n) {
		if (c->start == c->len) {
			ssize_t r = recv(c->fd, c->buf, sizeof c->buf, 0);
			if (r <= 0)
				return false;
			c->start = 0;
			c->len = (size_t)r;
		}
		size_t k = c->len - c->start < n ? c->len - c->start : n;
		if (out) {
			memcpy(out, c->buf + c->start, k);
			out += k;
		}
		c->start += k;
		n -= k;
	}
	return true;
}

/* One reply line (type byte and text, without CRLF) into line. */
static bool rd_line(struct rd_conn *c, char *line, size_t cap)
{
	size_t n = 0;
	for (;;) {
		char ch;
		if (n + 1 >= cap || !rd_take(c, &ch, 1))
			return false;
		if (ch == '\n' && n && line[n - 1] == '\r') {
			line[n - 1] = 0;
			return true;
		}
		line[n++] = ch;
	}
}

/* A bulk string's reply: its length (-1: nil, -2: not a bulk string or
 * cut short), its bytes into out (cap). */
static long rd_bulk(struct rd_conn *c, char *out, size_t cap)
{
	char line[64];
	if (!rd_line(c, line, sizeof line) || line[0] != '$')
		return -2;
	long n = atol(line + 1);
	if (n < 0)
		return -1;
	if ((size_t)n > cap || !rd_take(c, out, (size_t)n) || !rd_take(c, NULL, 2))
		return -2;
	return n;
}

/* A simple or integer reply into line (its type byte first). */
static bool rd_simple(struct rd_conn *c, char *line, size_t cap)
{
	return rd_line(c, line, cap) && (line[0] == '+' || line[0] == ':');
}

struct rd_client {
	int port, id;
	char err[256];
};

#define RD_FAIL(c, ...) MC_FAIL(c, __VA_ARGS__)

static void *rd_client_main(void *arg)
{
	struct rd_client *c = arg;
	struct rd_conn *rc = malloc(sizeof *rc);
	char *val = malloc(65536), *got = malloc(65536), line[128], key[64];
	if (rc)
		rc->fd = -1;
	if (!rc || !val || !got || !rd_open(rc, c->port))
		RD_FAIL(c, "client %d: connect: %s", c->id, strerror(errno));
	for (int k = 0; k < RD_KEYS; k++) {
		size_t n = mc_len(c->id, k);
		mc_value(c->id, k, val, n);
		snprintf(key, sizeof key, "c%d_k%d", c->id, k);
		const char *set[] = {"SET", key, val};
		size_t setlen[] = {3, strlen(key), n};
		if (!rd_send(rc, 3, set, setlen) || !rd_simple(rc, line, sizeof line) ||
		    strcmp(line, "+OK") != 0)
			RD_FAIL(c, "client %d: SET of key %d (%zu bytes) not OK", c->id, k, n);
		const char *get[] = {"GET", key};
		long r = rd_send(rc, 2, get, NULL) ? rd_bulk(rc, got, 65536) : -2;
		if (r != (long)n || memcmp(got, val, n) != 0)
			RD_FAIL(c, "client %d: GET of key %d (%zu bytes) came back wrong (%ld)", c->id,
			        k, n, r);
		const char *incr[] = {"INCR", "shared_counter"};
		if (!rd_send(rc, 2, incr, NULL) || !rd_simple(rc, line, sizeof line) || line[0] != ':')
			RD_FAIL(c, "client %d: INCR: %s", c->id, line);
	}
	/* all of them again, 30 keys per MGET */
	for (int k0 = 0; k0 < RD_KEYS; k0 += 30) {
		char keys[30][64];
		const char *mget[31] = {"MGET"};
		for (int i = 0; i < 30; i++) {
			snprintf(keys[i], sizeof keys[i], "c%d_k%d", c->id, k0 + i);
			mget[i + 1] = keys[i];
		}
		if (!rd_send(rc, 31, mget, NULL) || !rd_line(rc, line, sizeof line) ||
		    strcmp(line, "*30") != 0)
			RD_FAIL(c, "client %d: MGET from key %d: %s", c->id, k0, line);
		for (int i = 0; i < 30; i++) {
			size_t n = mc_len(c->id, k0 + i);
			mc_value(c->id, k0 + i, val, n);
			if (rd_bulk(rc, got, 65536) != (long)n || memcmp(got, val, n) != 0)
				RD_FAIL(c, "client %d: MGET: key %d came back wrong", c->id, k0 + i);
		}
	}
	/* a big list, given to a background thread to free */
	snprintf(key, sizeof key, "c%d_list", c->id);
	for (int i = 0; i < 20000; i += 500) {
		const char *push[502] = {"RPUSH", key};
		char items[500][16];
		for (int j = 0; j < 500; j++) {
			snprintf(items[j], sizeof items[j], "%d", i + j);
			push[j + 2] = items[j];
		}
		if (!rd_send(rc, 502, push, NULL) || !rd_simple(rc, line, sizeof line) ||
		    atol(line + 1) != i + 500)
			RD_FAIL(c, "client %d: RPUSH: %s", c->id, line);
	}
	const char *unlink_[] = {"UNLINK", key};
	if (!rd_send(rc, 2, unlink_, NULL) || !rd_simple(rc, line, sizeof line) ||
	    strcmp(line, ":1") != 0)
		RD_FAIL(c, "client %d: UNLINK: %s", c->id, line);
	for (int k = 0; k < RD_KEYS; k += 2) {
		snprintf(key, sizeof key, "c%d_k%d", c->id, k);
		const char *del[] = {"DEL", key};
		if (!rd_send(rc, 2, del, NULL) || !rd_simple(rc, line, sizeof line) ||
		    strcmp(line, ":1") != 0)
			RD_FAIL(c, "client %d: DEL of key %d: %s", c->id, k, line);
	}
out:
	if (rc && rc->fd >= 0)
		close(rc->fd);
	free(rc);
	free(val);
	free(got);
	return NULL;
}

/* A command whose reply is an integer; -1 if it is not. */
static long rd_integer(int port, int argc, const char *const *argv)
{
	static struct rd_conn conn;
	char line[128];
	if (!rd_open(&conn, port))
		return -1;
	long v = rd_send(&conn, argc, argv, NULL) && rd_simple(&conn, line, sizeof line) &&
	                 line[0] == ':'
	             ? atol(line + 1)
	             : -1;
	close(conn.fd);
	return v;
}

static bool rd_answers(int port)
{
	const char *dbsize[] = {"DBSIZE"};
	return rd_integer(port, 1, dbsize) >= 0;
}

TCASE(real_redis_clients)
{
	tc_run_alone();
	require_tool("/usr/bin/redis-server");
	int port = free_loopback_port();
	char port_s[16], dir[] = "/tmp/caprice-redis-XXXXXX";
	snprintf(port_s, sizeof port_s, "%d", port);
	CHECK(mkdtemp(dir) != NULL);
	struct child c;
	spawn(&SPAWN(.mode = LAUNCHER, .prog = "/usr/bin/redis-server",
	             ARGS("--port", port_s, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
	                  "--dir", dir, "--logfile", "", "--lazyfree-lazy-user-del", "yes"),
	             ENV(W2, "CAPRICE_STATS=1")),
	      &c);
	await_server(&c, "redis-server", port, rd_answers);
	/* a client parked in a blocking pop until the others are done */
	static struct rd_conn waiter;
	const char *blpop[] = {"BLPOP", "wakeup", "30"};
	EXPECT_MSG(&c, rd_open(&waiter, port) && rd_send(&waiter, 3, blpop, NULL),
	           "BLPOP not sent");
	static struct rd_client cl[RD_CLIENTS];
	pthread_t t[RD_CLIENTS];
	for (int i = 0; i < RD_CLIENTS; i++) {
		cl[i] = (struct rd_client){.port = port, .id = i};
		CHECK_OK(pthread_create(&t[i], NULL, rd_client_main, &cl[i]));
	}
	for (int i = 0; i < RD_CLIENTS; i++) {
		CHECK_OK(pthread_join(t[i], NULL));
		EXPECT_MSG(&c, !cl[i].err[0], "%s", cl[i].err);
	}
	const char *push[] = {"RPUSH", "wakeup", "done"};
	EXPECT_MSG(&c, rd_integer(port, 3, push) == 1, "RPUSH wakeup: not 1");
	char line[64], k[16], v[16];
	EXPECT_MSG(&c, rd_line(&waiter, line, sizeof line) && strcmp(line, "*2") == 0 &&
	                   rd_bulk(&waiter, k, sizeof k) == 6 && rd_bulk(&waiter, v, sizeof v) == 4 &&
	                   memcmp(k, "wakeup", 6) == 0 && memcmp(v, "done", 4) == 0,
	           "the BLPOP did not answer [wakeup, done]");
	close(waiter.fd);
	const char *ctr[] = {"INCRBY", "shared_counter", "0"};
	const char *dbsize[] = {"DBSIZE"};
	long counter = rd_integer(port, 3, ctr), keys = rd_integer(port, 1, dbsize);
	/* half the keys of every client, and the counter */
	EXPECT_MSG(&c, counter == RD_CLIENTS * RD_KEYS && keys == RD_CLIENTS * RD_KEYS / 2 + 1,
	           "redis's counts: counter %ld, %ld keys", counter, keys);
	kill(c.pid, SIGTERM);
	finish(&c, 20000);
	EXPECT_EXIT(&c, 0);
	long sw = stat_sum(&c.e, "switches");
	EXPECT_MSG(&c, sw > 0, "no user-thread switches counted");
	EXPECT_MSG(&c, strstr(bstr(&c.o), "ready to exit, bye bye") != NULL,
	           "redis did not log its clean shutdown");
	rmdir(dir);
	printf("redis: %d clients x %d keys set, got, got again, half deleted; %ld switches\n",
	       RD_CLIENTS, RD_KEYS, sw);
}

/* Apache httpd with the worker MPM, unmodified under the shim: a
 * thread-per-connection server (a listener thread hands each connection
 * to one of 64 threads, which reads, answers and keeps it open), in a
 * child process apache forks after it starts (as root, that child runs
 * as nobody).  24 keep-alive connections, each on a kernel thread of this
 * driver, GET 40 responses of 200 bytes to 300 KB each, while one more
 * connection sends half a request line and finishes it a second later
 * (its apache thread waits in a read, parked); every response must be a
 * 200 with the file's bytes, the error log must hold no error, and
 * SIGTERM must end apache with exit 0. */
#define AP_CLIENTS 24
#define AP_GETS    40

static const char *const ap_files[] = {"small.txt", "f20k.txt", "f300k.txt"};
static const size_t ap_sizes[] = {200, 20000, 300000};
static char *ap_body[3];

struct ap_client {
	int port, id;
	bool slow;
	char err[256];
};

/* One response on fd: status, then Content-Length bytes of body into
 * out (cap bytes).  Returns the body length, or -1 with why in err. */
static long ap_response(int fd, char *out, size_t cap, int *status, char *err, size_t errn)
{
	char head[4096];
	size_t hl = 0;
	while (hl < 4 || memcmp(head + hl - 4, "\r\n\r\n", 4) != 0) {
		if (hl == sizeof head - 1 || recv(fd, head + hl, 1, 0) != 1) {
			snprintf(err, errn, "response head cut short after %zu bytes", hl);
			return -1;
		}
		hl++;
	}
	head[hl] = 0;
	const char *cl = strcasestr(head, "\r\nContent-Length:");
	if (sscanf(head, "HTTP/1.1 %d", status) != 1 || !cl) {
		snprintf(err, errn, "odd response head: %.100s", head);
		return -1;
	}
	long n = atol(cl + 17);
	if (n < 0 || (size_t)n > cap) {
		snprintf(err, errn, "Content-Length %ld", n);
		return -1;
	}
	for (long got = 0; got < n;) {
		ssize_t r = recv(fd, out + got, (size_t)(n - got), 0);
		if (r <= 0) {
			snprintf(err, errn, "body cut short at %ld of %ld bytes", got, n);
			return -1;
		}
		got += r;
	}
	return n;
}

static void *ap_client_main(void *arg)
{
	struct ap_client *c = arg;
	char *body = malloc(ap_sizes[2]);
	int fd = mc_connect(c->port); /* a TCP connection with a 10 s read timeout */
	if (!body || fd < 0) {
		snprintf(c->err, sizeof c->err, "client %d: connect: %s", c->id, strerror(errno));
		goto out;
	}
	for (int i = 0; i < (c->slow ? 1 : AP_GETS); i++) {
		int f = (c->id + i) % 3;
		char req[256];
		int n = snprintf(req, sizeof req, "GET /%s HTTP/1.1\r\nHost: localhost\r\n\r\n", ap_files[f]);
		if (c->slow) {
			/* half the request line, then the rest a second later */
			if (!mc_send(fd, req, 6))
				break;
			usleep(1000000);
			if (!mc_send(fd, req + 6, (size_t)n - 6))
				break;
		} else if (!mc_send(fd, req, (size_t)n)) {
			snprintf(c->err, sizeof c->err, "client %d: send: %s", c->id, strerror(errno));
			goto out;
		}
		int status = 0;
		char why[200];
		long len = ap_response(fd, body, ap_sizes[2], &status, why, sizeof why);
		if (len < 0 || status != 200 || (size_t)len != ap_sizes[f] ||
		    memcmp(body, ap_body[f], ap_sizes[f]) != 0) {
			snprintf(c->err, sizeof c->err, "client %d, GET %d of /%s: status %d, %ld bytes%s%s",
			         c->id, i, ap_files[f], status, len, len < 0 ? ": " : " (wrong bytes?)",
			         len < 0 ? why : "");
			goto out;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	free(body);
	return NULL;
}

static bool ap_answers(int port)
{
	int fd = mc_connect(port), status = 0;
	char why[200], body[256];
	bool ok = fd >= 0 && mc_send(fd, "GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n", 37) &&
	          ap_response(fd, body, sizeof body, &status, why, sizeof why) >= 0 && status == 200;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* The served files, in a new directory that a server running as nobody
 * may read; returns the directory. */
static const char *http_docroot(void)
{
	const char *d = make_tmpdir();
	CHECK(chmod(d, 0755) == 0);
	for (int i = 0; i < 3; i++) {
		char path[400];
		snprintf(path, sizeof path, "%s/%s", d, ap_files[i]);
		ap_body[i] = malloc(ap_sizes[i]);
		for (size_t k = 0; k < ap_sizes[i]; k++)
			ap_body[i][k] = (char)('A' + (next_rand() % 26));
		FILE *f = fopen(path, "w");
		if (!f || fwrite(ap_body[i], 1, ap_sizes[i], f) != ap_sizes[i] || fclose(f) != 0)
			TFAIL("write %s failed", path);
		chmod(path, 0644);
	}
	return d;
}

/* AP_CLIENTS keep-alive clients and a slow one against the server c
 * runs on port; fails the case with the first client's complaint. */
static void http_clients(struct child *c, int port)
{
	static struct ap_client cl[AP_CLIENTS + 1];
	pthread_t t[AP_CLIENTS + 1];
	for (int i = 0; i <= AP_CLIENTS; i++) {
		cl[i] = (struct ap_client){.port = port, .id = i, .slow = i == AP_CLIENTS};
		CHECK_OK(pthread_create(&t[i], NULL, ap_client_main, &cl[i]));
	}
	for (int i = 0; i <= AP_CLIENTS; i++) {
		CHECK_OK(pthread_join(t[i], NULL));
		EXPECT_MSG(c, !cl[i].err[0], "%s", cl[i].err);
	}
}

/* The lines of the log at path that do not hold `allowed`, into out. */
static void log_lines_but(const char *path, const char *allowed, struct buf *out)
{
	FILE *lf = fopen(path, "r");
	char line[2048];
	while (lf && fgets(line, sizeof line, lf))
		if (!strstr(line, allowed))
			buf_add(out, line, strlen(line));
	if (lf)
		fclose(lf);
}

TCASE(real_apache_worker_mpm)
{
	tc_run_alone();
	require_tool("/usr/sbin/apache2");
	const char *d = http_docroot(); /* apache's child runs as nobody */
	char conf[400], elog[400];
	int port = free_loopback_port();
	snprintf(conf, sizeof conf, "%s/httpd.conf", d);
	snprintf(elog, sizeof elog, "%s/error.log", d);
	FILE *f = fopen(conf, "w");
	if (!f)
		TFAIL("fopen %s: %s", conf, strerror(errno));
	const char *mods = "/usr/lib/apache2/modules";
	fprintf(f,
	        "ServerRoot %s\nPidFile %s/httpd.pid\nListen 127.0.0.1:%d\nServerName localhost\n"
	        "LoadModule mpm_worker_module %s/mod_mpm_worker.so\n"
	        "LoadModule authz_core_module %s/mod_authz_core.so\n"
	        "LoadModule mime_module %s/mod_mime.so\nTypesConfig /dev/null\n"
	        "DocumentRoot %s\nErrorLog %s\nLogLevel warn\n"
	        "StartServers 1\nServerLimit 1\nThreadLimit 64\nThreadsPerChild 64\n"
	        "MaxRequestWorkers 64\nMinSpareThreads 1\nMaxSpareThreads 64\n"
	        "KeepAlive On\nMaxKeepAliveRequests 0\n"
	        "<Directory %s>\n  Require all granted\n</Directory>\n",
	        d, d, port, mods, mods, mods, d, elog, d);
	if (geteuid() == 0)
		fprintf(f, "User nobody\nGroup nogroup\n");
	if (fclose(f) != 0)
		TFAIL("write %s failed", conf);
	struct child c;
	spawn(&SPAWN(.mode = LAUNCHER, .prog = "/usr/sbin/apache2", ARGS("-f", conf, "-DFOREGROUND"),
	             ENV(W2, "CAPRICE_STATS=1")),
	      &c);
	await_server(&c, "apache", port, ap_answers);
	http_clients(&c, port);
	kill(c.pid, SIGTERM);
	finish(&c, 20000);
	EXPECT_EXIT(&c, 0);
	/* what apache logged at warn and above: only its notices */
	struct buf log = {0};
	log_lines_but(elog, ":notice]", &log);
	EXPECT_MSG(&c, log.len == 0, "apache's error log:\n%s", bstr(&log));
	long sw = stat_sum(&c.e, "switches");
	EXPECT_MSG(&c, sw > 0, "no user-thread switches counted");
	printf("apache: %d connections x %d GETs and a slow one, %ld switches\n", AP_CLIENTS, AP_GETS,
	       sw);
}

/* nginx, unmodified under the shim: a master process and two worker
 * processes, each a single-threaded epoll loop (the shim serves its
 * epoll_wait from the ring), the clients of the Apache case against it,
 * and SIGQUIT (graceful shutdown) must end it with exit 0 and an error
 * log without errors. */
TCASE(real_nginx_workers)
{
	tc_run_alone();
	require_tool("/usr/sbin/nginx");
	const char *d = http_docroot(); /* workers run as nobody under root */
	char conf[400], elog[400];
	int port = free_loopback_port();
	snprintf(conf, sizeof conf, "%s/nginx.conf", d);
	snprintf(elog, sizeof elog, "%s/error.log", d);
	FILE *f = fopen(conf, "w");
	if (!f)
		TFAIL("fopen %s: %s", conf, strerror(errno));
	fprintf(f,
	        "worker_processes 2;\nerror_log %s warn;\npid %s/nginx.pid;\n"
	        "events { worker_connections 256; }\n"
	        "http {\n  access_log off;\n  keepalive_requests 100000;\n"
	        "  client_body_temp_path %s/cb; proxy_temp_path %s/px; fastcgi_temp_path %s/fc;\n"
	        "  uwsgi_temp_path %s/uw; scgi_temp_path %s/sc;\n"
	        "  server { listen 127.0.0.1:%d; root %s; }\n}\n",
	        elog, d, d, d, d, d, d, port, d);
	if (fclose(f) != 0)
		TFAIL("write %s failed", conf);
	struct child c;
	spawn(&SPAWN(.mode = LAUNCHER, .prog = "/usr/sbin/nginx",
	             ARGS("-p", d, "-c", conf, "-g", "daemon off;"), ENV(W2, "CAPRICE_STATS=1")),
	      &c);
	await_server(&c, "nginx", port, ap_answers);
	http_clients(&c, port);
	kill(c.pid, SIGQUIT);
	finish(&c, 20000);
	EXPECT_EXIT(&c, 0);
	struct buf log = {0};
	log_lines_but(elog, "[notice]", &log);
	EXPECT_MSG(&c, log.len == 0, "nginx's error log:\n%s", bstr(&log));
	printf("nginx: %d connections x %d GETs and a slow one, %d processes' statistics\n",
	       AP_CLIENTS, AP_GETS, count_lines(&c.e, "caprice: stats: worker 0"));
}

/* MariaDB's server, unmodified under the shim, loaded by sysbench: the
 * real server that once hung at start-up (a worker held by a raw
 * io_uring or futex wait with main's I/O unsubmitted) and crashed (its
 * thread_local session pointer shared by the threads of one worker).  The
 * benchmark bench/mariadb/compare-mariadb does the work, in caprice mode
 * only and with short runs; its exit status says whether the server
 * started, ran and shut down cleanly, and its table gives sysbench's
 * error counts, which must be 0. */
TCASE(real_mariadb_oltp)
{
	tc_run_alone();
	require_tool("/usr/sbin/mariadbd");
	require_tool("/usr/bin/sysbench");
	if (geteuid() != 0)
		TSKIP("MariaDB's server runs here with --user=root, so this test needs root");
	if (sanitized())
		TSKIP("MariaDB keeps its session in a thread_local, and TLS per user thread "
		      "is off in sanitized builds (ASan keeps its own per-thread state in TLS): "
		      "sysbench's connections are lost there, as on any shared-TLS runtime");
	char script[600], build[600], work[400];
	snprintf(script, sizeof script, "%s/bench/mariadb/compare-mariadb", SOURCE_ROOT);
	/* CAPRICE_BIN is BUILD/preload/caprice */
	snprintf(build, sizeof build, "%s", CAPRICE_BIN);
	for (int up = 0; up < 2; up++)
		*strrchr(build, '/') = 0;
	snprintf(work, sizeof work, "%s/mariadb", make_tmpdir());
	struct child c;
	run(&SPAWN(.mode = PLAIN, .prog = "/bin/bash",
	           ARGS(script, "--build-dir", build, "--only", "caprice", "--duration", "8",
	                "--threads", "64 512", "--workers", "2", "--workdir", work, "--no-diagnose")),
	    &c, 110000);
	EXPECT_EXIT(&c, 0);
	EXPECT_OUT(&c, "caprice: ok");
	int rows = 0;
	for (const char *l = bstr(&c.o); (l = strstr(l, " errors ")) != NULL; l++) {
		long n = -1;
		/* "errors  PLAIN  CAPRICE": plain is "-" here */
		EXPECT_MSG(&c, sscanf(l, " errors %*s %ld", &n) == 1 && n == 0,
		           "sysbench counted errors under the shim");
		rows++;
	}
	EXPECT_MSG(&c, rows == 2, "wanted an errors row for 64 and 512 threads, found %d", rows);
	printf("%s", bstr(&c.o));
}

/* ---- the launcher in a sanitized build ----------------------------------------- */

/* An ASan-built shim works only behind the ASan runtime, so the launcher
 * must keep an LD_PRELOAD=libasan... it is given in front of its shim. */
TCASE(launcher_sanitized_build)
{
	if (!sanitized())
		TSKIP("not a sanitized build");
	struct child c;
	run(&SPAWN(.mode = LAUNCHER, .prog = "pl_prodcons", ENV(W2), .keep_launcher = true), &c,
	    90000);
	prodcons_check(&c);
}
