/* khttp.c: see khttp.h. */
#include "khttp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#ifndef KNOT_BIN
#error "KNOT_BIN must name the server binary under test"
#endif

char k_dir[256];
char k_root[300];
char k_secret[64];

/* The case's own time limit, under the runner's 120 s. */
#define CASE_LIMIT_S 110

long k_io_timeout_ms(void)
{
	return getenv("CAPRICE_TEST_SANITIZED") ? 40000 : 20000;
}

/* ------------------------------------------------------------------ */
/* supervisor and temporary tree                                      */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

/* The parent side: waits for the case, then for every orphan it
 * inherited as subreaper (the servers die of PDEATHSIG when the case
 * ends), removes the tree and exits with the case's status. */
static void supervise(pid_t child)
{
	int st = 0;
	while (waitpid(child, &st, 0) < 0 && errno == EINTR)
		;
	uint64_t until = tc_now_ns() + 10000000000ull;
	for (;;) {
		pid_t p = waitpid(-1, NULL, WNOHANG);
		if (p < 0 && errno == ECHILD)
			break;
		if (tc_now_ns() > until) {
			fprintf(stderr, "supervisor: a process of the case is still alive after 10 s\n");
			break;
		}
		if (p <= 0)
			usleep(5000);
	}
	rm_tree(k_dir);
	if (WIFSIGNALED(st)) {
		int sig = WTERMSIG(st);
		fprintf(stderr, "case killed by signal %d (%s)%s\n", sig, strsignal(sig),
		        sig == SIGALRM ? ": it ran past its own limit" : "");
		fflush(NULL);
		_exit(1);
	}
	fflush(NULL);
	_exit(WEXITSTATUS(st));
}

static void mkdirs_for(const char *path)
{
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + strlen(k_dir) + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = 0;
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			TFAIL("mkdir %s: %s", tmp, strerror(errno));
		*p = '/';
	}
}

static void write_abs(const char *path, const void *data, size_t len)
{
	mkdirs_for(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		TFAIL("create %s: %s", path, strerror(errno));
	const char *p = data;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n <= 0)
			TFAIL("write %s: %s", path, strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	CHECK_EQ(close(fd), 0);
}

void k_write(const char *rel, const void *data, size_t len)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", k_root, rel[0] == '/' ? rel + 1 : rel);
	write_abs(path, data, len);
}

char *k_write_random(const char *rel, size_t size, unsigned seed)
{
	char *d = malloc(size ? size : 1);
	CHECK(d != NULL);
	uint64_t x = 0x9e3779b97f4a7c15ull ^ seed;
	for (size_t i = 0; i < size; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		d[i] = (char)(x >> 24);
	}
	k_write(rel, d, size);
	return d;
}

void k_set_mtime(const char *rel, long t)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", k_root, rel[0] == '/' ? rel + 1 : rel);
	struct timespec ts[2] = { { t, 0 }, { t, 0 } };
	if (utimensat(AT_FDCWD, path, ts, 0) != 0)
		TFAIL("utimensat %s: %s", path, strerror(errno));
}

static void build_tree(void)
{
	char path[PATH_MAX];
	unsigned r = (unsigned)getpid() ^ (unsigned)tc_now_ns();
	snprintf(k_secret, sizeof k_secret, "TOP-SECRET-%08x-do-not-serve", r);

	/* outside the root: next to it, and in a sibling sharing its prefix */
	snprintf(path, sizeof path, "%s/secret.txt", k_dir);
	write_abs(path, k_secret, strlen(k_secret));
	snprintf(path, sizeof path, "%s/rootx/secret", k_dir);
	write_abs(path, k_secret, strlen(k_secret));

	snprintf(k_root, sizeof k_root, "%s/root", k_dir);
	if (mkdir(k_root, 0755) != 0)
		TFAIL("mkdir %s: %s", k_root, strerror(errno));
	k_write(HELLO_PATH, HELLO_BODY, strlen(HELLO_BODY));
	k_write("index.html", "<html>root index</html>\n", 24);
	k_write("sub/index.html", "<html>sub index</html>\n", 23);
	k_write("sub/inner.txt", "inner file\n", 11);
	k_write("sub/deeper/leaf.txt", "leaf\n", 5);
	k_write("noindex/file.txt", "no index here\n", 14);
	k_write("with space.txt", "space\n", 6);
}

void kcase_begin(void)
{
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	snprintf(k_dir, sizeof k_dir, "/tmp/knot-test-XXXXXX");
	if (!mkdtemp(k_dir))
		TFAIL("mkdtemp: %s", strerror(errno));
	chmod(k_dir, 0755); /* a server running as nobody must get in */
	fflush(NULL);
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	pid_t sup = getpid();
	pid_t p = fork();
	if (p < 0)
		TFAIL("fork: %s", strerror(errno));
	if (p > 0)
		supervise(p);
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* the supervisor killed: end too */
	if (getppid() != sup)
		_exit(1);
	alarm(CASE_LIMIT_S);
	build_tree();
}

/* ------------------------------------------------------------------ */
/* the server                                                          */

static int srv_seq;

void ksrv_start(struct ksrv *s, const char *const *extra)
{
	ksrv_start_as(s, extra, false);
}

void ksrv_start_as(struct ksrv *s, const char *const *extra, bool as_nobody)
{
	char out[PATH_MAX];
	snprintf(out, sizeof out, "%s/server-%d.out", k_dir, srv_seq++);
	int ofd = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	CHECK(ofd >= 0);

	const char *argv[64];
	int n = 0;
	argv[n++] = KNOT_BIN;
	argv[n++] = "--root";
	argv[n++] = k_root;
	argv[n++] = "--port";
	argv[n++] = "0";
	argv[n++] = "--bind";
	argv[n++] = "127.0.0.1";
	for (int i = 0; extra && extra[i]; i++) {
		CHECK(n < 62);
		argv[n++] = extra[i];
	}
	argv[n] = NULL;

	uid_t uid = 0;
	gid_t gid = 0;
	if (as_nobody && geteuid() == 0) {
		struct passwd *pw = getpwnam("nobody");
		CHECK(pw != NULL);
		uid = pw->pw_uid;
		gid = pw->pw_gid;
	}

	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		TFAIL("fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		signal(SIGPIPE, SIG_DFL);
		dup2(ofd, 1);
		if (uid != 0) {
			if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
				perror("drop to nobody");
				_exit(127);
			}
			/* setuid clears PDEATHSIG */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(127);
		}
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	s->pid = pid;
	s->port = 0;
	s->reaped = 0;
	s->status = 0;

	/* startup may be slow under sanitizers on a loaded machine */
	uint64_t until = tc_now_ns() + (uint64_t)(10000 + 4 * tc_slack_ms()) * 1000000u;
	char buf[4096];
	for (;;) {
		ssize_t len = pread(ofd, buf, sizeof buf - 1, 0);
		buf[len > 0 ? len : 0] = 0;
		char *l = strstr(buf, "listening on ");
		char *nl = l ? strchr(l, '\n') : NULL;
		if (nl) {
			*nl = 0;
			char *colon = strrchr(l, ':');
			CHECK(colon != NULL);
			s->port = atoi(colon + 1);
			if (s->port <= 0 || s->port > 65535)
				TFAIL("bad listening line: \"%s\"", l);
			break;
		}
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			s->reaped = 1;
			TFAIL("%s exited before listening (status 0x%x); stdout: %s", KNOT_BIN, st, buf);
		}
		if (tc_now_ns() > until)
			TFAIL("%s printed no \"listening on\" line in time; stdout: \"%s\"", KNOT_BIN, buf);
		usleep(5000);
	}
	close(ofd);
}

static void describe_status(int st, char *out, size_t n)
{
	if (WIFEXITED(st))
		snprintf(out, n, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(out, n, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(out, n, "wait status 0x%x", st);
}

void ksrv_check_alive(struct ksrv *s)
{
	if (s->reaped)
		TFAIL("the server is gone");
	int st;
	if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
		char d[128];
		describe_status(st, d, sizeof d);
		s->reaped = 1;
		s->status = st;
		TFAIL("the server died during the case: %s", d);
	}
}

int ksrv_signal_wait(struct ksrv *s, int sig, long ms)
{
	CHECK(!s->reaped);
	CHECK_EQ(kill(s->pid, sig), 0);
	uint64_t t0 = tc_now_ns();
	for (;;) {
		int st;
		pid_t p = waitpid(s->pid, &st, WNOHANG);
		if (p == s->pid) {
			s->reaped = 1;
			s->status = st;
			return st;
		}
		if (tc_now_ns() - t0 > tc_late_ns(ms)) {
			kill(s->pid, SIGKILL);
			waitpid(s->pid, &st, 0);
			s->reaped = 1;
			TFAIL("the server did not exit within %ld ms (+%ld slack) of signal %d", ms,
			      tc_slack_ms(), sig);
		}
		usleep(2000);
	}
}

void ksrv_stop(struct ksrv *s)
{
	ksrv_check_alive(s);
	int st = ksrv_signal_wait(s, SIGTERM, 5000);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char d[128];
		describe_status(st, d, sizeof d);
		TFAIL("on SIGTERM the server %s, wanted a clean exit 0", d);
	}
}

/* ------------------------------------------------------------------ */
/* the client                                                          */

void kconn_open(struct kconn *c, int port)
{
	kconn_open_rcvbuf(c, port, 0);
}

void kconn_open_rcvbuf(struct kconn *c, int port, int rcvbuf)
{
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(c->fd >= 0);
	if (rcvbuf)
		CHECK(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0);
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);
	long to = k_io_timeout_ms();
	struct timeval tv = { to / 1000, (to % 1000) * 1000 };
	CHECK(setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
	CHECK(setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0)
		TFAIL("connect to 127.0.0.1:%d: %s", port, strerror(errno));
	c->cap = 65536;
	c->len = 0;
	c->buf = malloc(c->cap);
	CHECK(c->buf != NULL);
}

void kconn_close(struct kconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	c->buf = NULL;
	c->len = c->cap = 0;
}

bool kconn_try_send(struct kconn *c, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

void kconn_send(struct kconn *c, const void *data, size_t len)
{
	if (!kconn_try_send(c, data, len))
		TFAIL("send of %zu bytes: %s", len, strerror(errno));
}

void kconn_sends(struct kconn *c, const char *s)
{
	kconn_send(c, s, strlen(s));
}

/* Reads more into the buffer: >0 bytes, 0 EOF, -1 error (errno). */
static ssize_t kconn_fill(struct kconn *c)
{
	if (c->cap - c->len < 16384) {
		size_t nc = c->cap * 2;
		char *nb = realloc(c->buf, nc);
		CHECK(nb != NULL);
		c->buf = nb;
		c->cap = nc;
	}
	for (;;) {
		ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0)
			c->len += (size_t)n;
		return n;
	}
}

static void consume(struct kconn *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

int kconn_read(struct kconn *c, struct kresp *r, bool head, char *err, size_t errlen)
{
	memset(r, 0, sizeof *r);
	r->clen = -1;
	char *end;
	while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL) {
		if (c->len > (1u << 20)) {
			snprintf(err, errlen, "no end of headers in %zu bytes", c->len);
			return KR_ERR;
		}
		ssize_t n = kconn_fill(c);
		if (n == 0 && c->len == 0) {
			snprintf(err, errlen, "EOF before the response");
			return KR_EOF;
		}
		if (n <= 0) {
			snprintf(err, errlen, "%s after %zu bytes of headers",
			         n == 0 ? "EOF" : strerror(errno), c->len);
			return KR_ERR;
		}
	}
	size_t hlen = (size_t)(end - c->buf) + 4;
	r->head = malloc(hlen + 1);
	CHECK(r->head != NULL);
	memcpy(r->head, c->buf, hlen);
	r->head[hlen] = 0;
	consume(c, hlen);

	/* status line */
	char *line = r->head;
	char *eol = strstr(line, "\r\n");
	*eol = 0;
	int major = 0, minor = 0, status = 0, used = 0;
	if (sscanf(line, "HTTP/%d.%d %3d%n", &major, &minor, &status, &used) != 3 || major != 1 ||
	    (line[used] != ' ' && line[used] != 0) || status < 100 || status > 599) {
		snprintf(err, errlen, "bad status line \"%.80s\"", line);
		return KR_ERR;
	}
	r->status = status;
	r->minor = minor;
	for (line = eol + 2; *line; line = eol + 2) {
		eol = strstr(line, "\r\n");
		*eol = 0;
		if (!*line)
			break;
		char *colon = strchr(line, ':');
		if (!colon || colon == line || r->nhdr == K_MAX_HDRS) {
			snprintf(err, errlen, "bad header line \"%.80s\"", line);
			return KR_ERR;
		}
		*colon = 0;
		char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		char *ve = v + strlen(v);
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			*--ve = 0;
		r->hdr[r->nhdr].name = line;
		r->hdr[r->nhdr].value = v;
		r->nhdr++;
	}

	const char *cl = kresp_hdr(r, "Content-Length");
	if (cl) {
		char *e;
		r->clen = strtoll(cl, &e, 10);
		if (e == cl || *e || r->clen < 0) {
			snprintf(err, errlen, "bad Content-Length \"%s\"", cl);
			return KR_ERR;
		}
	}
	if (kresp_hdr(r, "Transfer-Encoding")) {
		snprintf(err, errlen, "unexpected Transfer-Encoding: %s", kresp_hdr(r, "Transfer-Encoding"));
		return KR_ERR;
	}
	bool nobody = head || status == 304 || status == 204 || status < 200;
	if (nobody)
		return KR_OK;
	if (r->clen >= 0) {
		size_t want = (size_t)r->clen;
		while (c->len < want) {
			ssize_t n = kconn_fill(c);
			if (n <= 0) {
				snprintf(err, errlen, "%s after %zu of %zu body bytes",
				         n == 0 ? "EOF" : strerror(errno), c->len, want);
				return KR_ERR;
			}
		}
		r->body = malloc(want + 1);
		CHECK(r->body != NULL);
		memcpy(r->body, c->buf, want);
		r->body[want] = 0;
		r->body_len = want;
		consume(c, want);
		return KR_OK;
	}
	/* no length: the body runs to EOF */
	for (;;) {
		ssize_t n = kconn_fill(c);
		if (n == 0)
			break;
		if (n < 0) {
			snprintf(err, errlen, "%s reading a body without length", strerror(errno));
			return KR_ERR;
		}
	}
	r->until_eof = true;
	r->body = malloc(c->len + 1);
	CHECK(r->body != NULL);
	memcpy(r->body, c->buf, c->len);
	r->body[c->len] = 0;
	r->body_len = c->len;
	c->len = 0;
	return KR_OK;
}

void kconn_expect(struct kconn *c, struct kresp *r, bool head)
{
	char err[256];
	int rc = kconn_read(c, r, head, err, sizeof err);
	if (rc != KR_OK)
		TFAIL("reading a response: %s", err);
}

static int wait_readable(int fd, long ms)
{
	struct pollfd p = { fd, POLLIN, 0 };
	uint64_t until = tc_now_ns() + (uint64_t)ms * 1000000u;
	for (;;) {
		uint64_t now = tc_now_ns();
		int left = now >= until ? 0 : (int)((until - now) / 1000000u);
		int r = poll(&p, 1, left);
		if (r < 0 && errno == EINTR)
			continue;
		return r;
	}
}

bool kconn_closed_within(struct kconn *c, long ms)
{
	if (c->len)
		return false;
	if (wait_readable(c->fd, ms) <= 0)
		return false;
	char b[256];
	ssize_t n = recv(c->fd, b, sizeof b, MSG_DONTWAIT);
	if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE)))
		return true;
	if (n > 0) {
		fprintf(stderr, "unexpected data where EOF was wanted: \"%.*s\"\n", (int)n, b);
	}
	return false;
}

bool kconn_quiet_for(struct kconn *c, long ms)
{
	if (c->len)
		return false;
	return wait_readable(c->fd, ms) == 0;
}

void kresp_free(struct kresp *r)
{
	free(r->head);
	free(r->body);
	memset(r, 0, sizeof *r);
}

const char *kresp_hdr(const struct kresp *r, const char *name)
{
	for (int i = 0; i < r->nhdr; i++)
		if (strcasecmp(r->hdr[i].name, name) == 0)
			return r->hdr[i].value;
	return NULL;
}

bool kresp_hdr_has(const struct kresp *r, const char *name, const char *token)
{
	const char *v = kresp_hdr(r, name);
	return v && strcasestr(v, token) != NULL;
}

bool kresp_body_has(const struct kresp *r, const char *s)
{
	return r->body && memmem(r->body, r->body_len, s, strlen(s)) != NULL;
}

void k_get(int port, const char *target, struct kresp *r)
{
	struct kconn c;
	kconn_open(&c, port);
	char req[8192];
	snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
	         target);
	kconn_sends(&c, req);
	char err[256];
	if (kconn_read(&c, r, false, err, sizeof err) != KR_OK)
		TFAIL("GET %s: %s", target, err);
	kconn_close(&c);
}

void k_expect_body(const struct kresp *r, const void *body, size_t len, const char *what)
{
	if (r->status != 200)
		TFAIL("%s: status %d, wanted 200", what, r->status);
	if (r->body_len != len)
		TFAIL("%s: body of %zu bytes, wanted %zu", what, r->body_len, len);
	if (memcmp(r->body, body, len) != 0) {
		size_t i = 0;
		while (((const char *)body)[i] == r->body[i])
			i++;
		TFAIL("%s: body differs from byte %zu on", what, i);
	}
}
