/* options.c: the command line and the start-up shared by every build. */
#include "options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cache.h"
#include "log.h"
#include "response.h"

struct knot_server knot;

static void usage(FILE *f, const char *prog, const char *threads_meaning)
{
	fprintf(f,
		"usage: %s --root DIR --port N [options]\n"
		"  --root DIR          document root (required)\n"
		"  --port N            TCP port; 0 picks one and prints \"listening on ADDR:PORT\"\n"
		"  --bind ADDR         IPv4 or IPv6 address (default 0.0.0.0)\n"
		"  --cache-mb N        file cache cap in MiB (default 128, 0: no cache)\n"
		"  --threads auto|N    %s\n"
		"  --access-log FILE   append a Common Log Format line per request\n"
		"  --max-conns N       connections served at once; more get 503\n"
		"                      (default: open-files limit minus 64)\n"
		"  --keepalive-timeout S  idle keep-alive connections get 408 after S seconds (15)\n"
		"  --header-timeout S  a request head must arrive within S seconds (10), else 408\n"
		"  --send-timeout S    a response write making no progress for S seconds\n"
		"                      closes the connection (30)\n",
		prog, threads_meaning);
}

static long number(const char *prog, const char *flag, const char *v, long lo, long hi)
{
	char *end;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (errno || end == v || *end || x < lo || x > hi) {
		fprintf(stderr, "%s: %s: bad value '%s'\n", prog, flag, v);
		exit(2);
	}
	return x;
}

void knot_parse_options(int argc, char **argv, struct knot_options *o, const char *prog,
                        const char *threads_meaning)
{
	*o = (struct knot_options){ .bind = "0.0.0.0", .port = -1, .cache_mb = 128,
	                            .keepalive_s = 15, .header_s = 10, .send_s = 30 };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout, prog, threads_meaning);
			exit(0);
		}
		const char *v = NULL;
		const char *eq = strchr(a, '=');
		char flag[64];
		if (strncmp(a, "--", 2) == 0 && eq && (size_t)(eq - a) < sizeof flag) {
			memcpy(flag, a, (size_t)(eq - a));
			flag[eq - a] = '\0';
			v = eq + 1;
			a = flag;
		} else if (i + 1 < argc) {
			v = argv[i + 1];
			i++;
		}
		if (!v) {
			fprintf(stderr, "%s: %s needs a value\n", prog, a);
			usage(stderr, prog, threads_meaning);
			exit(2);
		}
		if (strcmp(a, "--root") == 0)
			o->root = v;
		else if (strcmp(a, "--port") == 0)
			o->port = (int)number(prog, a, v, 0, 65535);
		else if (strcmp(a, "--bind") == 0)
			o->bind = v;
		else if (strcmp(a, "--cache-mb") == 0)
			o->cache_mb = number(prog, a, v, 0, 1L << 20);
		else if (strcmp(a, "--threads") == 0)
			o->threads = strcmp(v, "auto") == 0 ? 0 : (int)number(prog, a, v, 1, 1024);
		else if (strcmp(a, "--access-log") == 0)
			o->access_log = v;
		else if (strcmp(a, "--max-conns") == 0)
			o->max_conns = number(prog, a, v, 1, 1L << 30);
		else if (strcmp(a, "--keepalive-timeout") == 0)
			o->keepalive_s = (int)number(prog, a, v, 1, 86400);
		else if (strcmp(a, "--header-timeout") == 0)
			o->header_s = (int)number(prog, a, v, 1, 86400);
		else if (strcmp(a, "--send-timeout") == 0)
			o->send_s = (int)number(prog, a, v, 1, 86400);
		else {
			fprintf(stderr, "%s: unknown option %s\n", prog, a);
			usage(stderr, prog, threads_meaning);
			exit(2);
		}
	}
	if (!o->root || o->port < 0) {
		fprintf(stderr, "%s: --root and --port are required\n", prog);
		usage(stderr, prog, threads_meaning);
		exit(2);
	}
}

/* ---- signals ---- */

static int sig_pipe[2] = { -1, -1 };

static void on_signal(int sig)
{
	/* the raw syscall: under Caprice write() would try to park */
	int saved = errno;
	char c = (char)sig;
	syscall(SYS_write, sig_pipe[1], &c, 1);
	errno = saved;
}

void knot_wait_for_signal(void)
{
	for (;;) {
		struct pollfd p = { .fd = sig_pipe[0], .events = POLLIN };
		int r = poll(&p, 1, 1000);
		log_flush();
		if (r > 0)
			return;
	}
}

/* ---- overload ---- */

static int reserve_fd = -1;
static pthread_mutex_t reserve_lock = PTHREAD_MUTEX_INITIALIZER;

void knot_refuse(int fd)
{
	char buf[512];
	size_t sl, bl;
	const char *line = resp_status_line(503, &sl);
	const char *body = resp_error_body(503, &bl);
	int n = snprintf(buf, sizeof buf,
	                 "%.*sServer: " RESP_SERVER "\r\nDate: %.29s\r\nContent-Type: text/html\r\n"
	                 "Content-Length: %zu\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
	                 (int)sl, line, resp_date(), bl, body);
	send(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
}

bool knot_admit(int fd)
{
	if (atomic_fetch_add_explicit(&knot.active, 1, memory_order_relaxed) < knot.max_conns)
		return true;
	knot_turn_away(fd);
	return false;
}

void knot_turn_away(int fd)
{
	atomic_fetch_sub_explicit(&knot.active, 1, memory_order_relaxed);
	knot_refuse(fd);
	close(fd);
}

void knot_accept_overload(int lfd)
{
	pthread_mutex_lock(&reserve_lock);
	if (reserve_fd >= 0) {
		close(reserve_fd);
		reserve_fd = -1;
	}
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	if (poll(&p, 1, 0) == 1) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0) {
			knot_refuse(fd);
			close(fd);
		}
	}
	reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pthread_mutex_unlock(&reserve_lock);
}

/* ---- setup ---- */

void knot_setup(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	knot.max_conns = knot.opt.max_conns;
	if (!knot.max_conns) {
		long lim = rl.rlim_cur == RLIM_INFINITY ? 1L << 20 : (long)rl.rlim_cur;
		knot.max_conns = lim > 128 ? lim - 64 : lim / 2;
	}

	signal(SIGPIPE, SIG_IGN);
	if (pipe2(sig_pipe, O_CLOEXEC) != 0) {
		perror("knot: pipe2");
		exit(1);
	}
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	knot.rootfd = open(knot.opt.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (knot.rootfd < 0) {
		fprintf(stderr, "knot: --root %s: %s\n", knot.opt.root, strerror(errno));
		exit(1);
	}
	knot.cache = cache_new(knot.rootfd, (size_t)knot.opt.cache_mb << 20);
	if (!knot.cache) {
		fprintf(stderr, "knot: out of memory\n");
		exit(1);
	}
	if (knot.opt.access_log && log_open(knot.opt.access_log) != 0) {
		fprintf(stderr, "knot: --access-log %s: %s\n", knot.opt.access_log, strerror(errno));
		exit(1);
	}
	reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

int knot_listen(bool reuseport, int port)
{
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} a;
	memset(&a, 0, sizeof a);
	socklen_t len;
	int family;
	const char *host = knot.opt.bind;
	char tmp[64];
	if (host[0] == '[') { /* [v6] */
		snprintf(tmp, sizeof tmp, "%s", host + 1);
		char *e = strchr(tmp, ']');
		if (e)
			*e = '\0';
		host = tmp;
	}
	if (inet_pton(AF_INET, host, &a.in.sin_addr) == 1) {
		family = a.in.sin_family = AF_INET;
		a.in.sin_port = htons((uint16_t)port);
		len = sizeof a.in;
	} else if (inet_pton(AF_INET6, host, &a.in6.sin6_addr) == 1) {
		family = a.in6.sin6_family = AF_INET6;
		a.in6.sin6_port = htons((uint16_t)port);
		len = sizeof a.in6;
	} else {
		fprintf(stderr, "knot: --bind %s: not an IPv4 or IPv6 address\n", knot.opt.bind);
		exit(2);
	}
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("knot: socket");
		exit(1);
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	/* accepted sockets inherit it */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (bind(fd, &a.sa, len) != 0) {
		fprintf(stderr, "knot: bind %s:%d: %s\n", knot.opt.bind, port, strerror(errno));
		exit(1);
	}
	if (listen(fd, 4096) != 0) {
		perror("knot: listen");
		exit(1);
	}
	return fd;
}

int knot_announce(int fd)
{
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
		struct sockaddr_in6 in6;
	} a;
	socklen_t len = sizeof a;
	getsockname(fd, &a.sa, &len);
	int port = ntohs(a.sa.sa_family == AF_INET6 ? a.in6.sin6_port : a.in.sin_port);
	if (knot.opt.port == 0) {
		char host[INET6_ADDRSTRLEN];
		if (a.sa.sa_family == AF_INET6) {
			inet_ntop(AF_INET6, &a.in6.sin6_addr, host, sizeof host);
			printf("listening on [%s]:%d\n", host, port);
		} else {
			inet_ntop(AF_INET, &a.in.sin_addr, host, sizeof host);
			printf("listening on %s:%d\n", host, port);
		}
		fflush(stdout);
	}
	return port;
}
