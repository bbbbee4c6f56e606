/* mem_client.c: the load client of bench/compare-memory.  Plain C with
 * pthreads and epoll, never linked with libthread: what it measures must
 * not depend on the runtime under test.  Loopback only (it connects to
 * 127.0.0.1 and nothing else).
 *
 * Each of --conns connections runs a closed loop against memserver: send
 * "REQ", wait for the answer line ("OK ..." or "ERR"), send the next.
 * First a warm-up: connections are opened gradually (never more than a
 * window still waiting for their first answer, so the listen queue never
 * overflows into SYN retransmits) and each sends one "HELLO", which the
 * server answers without allocating; once every connection has its
 * answer (its server thread exists, and the server arms its wall), all
 * start at once, and after --warmup seconds of load (default 0: none;
 * what happens then is not counted) the measured window of --duration
 * seconds runs.
 *
 * Counted inside the window: OK and ERR answers, connection errors (a
 * connection refused, reset or closed by the server; it is opened again
 * after --reconnect-ms), the latency of every answer (its own histogram
 * for OK), and at the end the requests still unanswered and the oldest's
 * age, so that a server that stalls some connections cannot hide them
 * from the percentiles.  --err-pause-ms makes a connection wait that long
 * after an ERR before its next request (0, the default: at once, as a
 * client that retries would).
 *
 * usage: mem-client PORT [--conns N] [--duration S] [--warmup S] [--threads N]
 *                   [--err-pause-ms N] [--reconnect-ms N] [--ramp-timeout S]
 * Result: one line on stdout, "result key=value ...". */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "mem-client"
#include "bench_util.h"
#include "latency_hist.h"

#define MAX_EVENTS 256
#define RX_MAX     64

enum { IDLE, CONNECTING, HELLO_SENT, READY, REQ_SENT, PAUSED, DEAD };

struct conn {
	int fd;
	uint8_t state;
	uint8_t got;              /* bytes of the answer so far */
	uint64_t sent_ns;         /* the pending request's send time */
	uint64_t resume_ns;       /* PAUSED/DEAD: when to go on */
	char rx[RX_MAX];
};

struct worker {
	pthread_t thread;
	int epfd;
	struct conn *conns;
	int n;
	uint64_t ok, err, conn_err, ramp_fail;
	uint64_t *hist_ok, *hist_all;
	uint64_t unanswered, oldest_ns;
};

static struct {
	struct sockaddr_in addr;
	int conns, threads, window;
	double duration, warmup, ramp_timeout;
	long err_pause_ms, reconnect_ms;
} opt = { .conns = 400, .threads = 1, .window = 128, .duration = 5.0, .warmup = 0.0, .ramp_timeout = 30.0,
	  .err_pause_ms = 0, .reconnect_ms = 10 };

static _Atomic int g_ramped;                 /* connections ready or failed */
/* g_go: the load starts (after the HELLO round); g_start..g_end: the
 * measured window, --warmup seconds later */
static _Atomic uint64_t g_go = UINT64_MAX, g_start = UINT64_MAX, g_end = UINT64_MAX;
static volatile sig_atomic_t g_stop;

static void drop(struct worker *w, struct conn *c, uint64_t now)
{
	if (c->fd >= 0) {
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->state = DEAD;
	c->resume_ns = now + (uint64_t)opt.reconnect_ms * 1000000u;
}

static bool open_conn(struct worker *w, struct conn *c)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return false;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&opt.addr, sizeof opt.addr) < 0 && errno != EINPROGRESS) {
		close(fd);
		return false;
	}
	c->fd = fd;
	c->got = 0;
	c->state = CONNECTING;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c };
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev);
	return true;
}

/* A line of a few bytes into an empty socket buffer: it goes whole or the
 * connection is broken. */
static bool send_line(struct conn *c, const char *s, uint64_t now)
{
	size_t len = strlen(s);
	ssize_t n = send(c->fd, s, len, MSG_NOSIGNAL);
	c->sent_ns = now;
	c->got = 0;
	return n == (ssize_t)len;
}

static bool in_window(uint64_t t)
{
	return t >= atomic_load_explicit(&g_start, memory_order_relaxed) &&
	       t < atomic_load_explicit(&g_end, memory_order_relaxed);
}

static void send_req(struct worker *w, struct conn *c, uint64_t now)
{
	if (send_line(c, "REQ\n", now))
		c->state = REQ_SENT;
	else {
		if (in_window(now))
			w->conn_err++;
		drop(w, c, now);
	}
}

/* Reads what there is; true once a whole line is in c->rx. */
static int read_answer(struct conn *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->rx + c->got, RX_MAX - 1 - c->got, 0);
		if (n == 0)
			return -1;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		c->got += (uint8_t)n;
		if (memchr(c->rx, '\n', c->got))
			return 1;
		if (c->got >= RX_MAX - 1)
			return -1;
	}
}

static void on_event(struct worker *w, struct conn *c, uint32_t ev, uint64_t now)
{
	if (c->state == CONNECTING) {
		int err = 0;
		socklen_t l = sizeof err;
		if ((ev & (EPOLLERR | EPOLLHUP)) ||
		    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0 || err) {
			goto broken;
		}
		if (!(ev & EPOLLOUT))
			return;
		/* connected: from now on only answers matter */
		struct epoll_event e = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
		epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &e);
		if (atomic_load_explicit(&g_go, memory_order_relaxed) == UINT64_MAX) {
			if (!send_line(c, "HELLO\n", now))
				goto broken;
			c->state = HELLO_SENT;
		} else {
			send_req(w, c, now);
		}
		return;
	}
	if (c->state != HELLO_SENT && c->state != REQ_SENT) {
		/* an answer nobody asked for, or the peer closing an idle one */
		if (ev & (EPOLLERR | EPOLLHUP | EPOLLRDHUP))
			goto broken;
		return;
	}
	int r = read_answer(c);
	if (r == 0)
		return;
	if (r < 0)
		goto broken;
	if (c->state == HELLO_SENT) {
		c->state = READY;
		atomic_fetch_add(&g_ramped, 1);
		return;
	}
	/* an answer to REQ */
	bool ok = strncmp(c->rx, "OK", 2) == 0;
	if (in_window(now)) {
		uint64_t lat = now - c->sent_ns;
		w->hist_all[hist_index(lat)]++;
		if (ok) {
			w->ok++;
			w->hist_ok[hist_index(lat)]++;
		} else {
			w->err++;
		}
	}
	if (now >= atomic_load_explicit(&g_end, memory_order_relaxed)) {
		c->state = READY;   /* the window is over: ask no more */
		return;
	}
	if (!ok && opt.err_pause_ms > 0) {
		c->state = PAUSED;
		c->resume_ns = now + (uint64_t)opt.err_pause_ms * 1000000u;
		return;
	}
	send_req(w, c, now);
	return;
broken:
	if (c->state == CONNECTING || c->state == HELLO_SENT) {
		if (atomic_load_explicit(&g_go, memory_order_relaxed) == UINT64_MAX) {
			/* the warm-up lost this one: it counts as ramped and is
			 * opened again once the window starts */
			w->ramp_fail++;
			atomic_fetch_add(&g_ramped, 1);
			drop(w, c, now);
			return;
		}
	}
	if (in_window(now))
		w->conn_err++;
	drop(w, c, now);
}

static void *run_worker(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	int next = 0, pending = 0;
	bool started = false;

	for (;;) {
		uint64_t now = now_ns();
		uint64_t go = atomic_load(&g_go), end = atomic_load(&g_end);
		if (g_stop || (end != UINT64_MAX && now >= end + 100000000u))
			break;   /* 100 ms after the window: late answers do not count */
		/* warm-up: open more while few are waiting for their HELLO */
		if (go == UINT64_MAX) {
			pending = 0;
			for (int i = 0; i < next; i++)
				pending += w->conns[i].state == CONNECTING || w->conns[i].state == HELLO_SENT;
			while (next < w->n && pending < opt.window) {
				struct conn *c = &w->conns[next++];
				if (open_conn(w, c))
					pending++;
				else {
					w->ramp_fail++;
					atomic_fetch_add(&g_ramped, 1);
					drop(w, c, now);
				}
			}
		} else if (!started) {
			/* the load starts: every ready connection asks at once;
			 * any not yet opened (a slow warm-up) opens now */
			started = true;
			for (int i = 0; i < w->n; i++) {
				struct conn *c = &w->conns[i];
				if (c->state == READY)
					send_req(w, c, now);
				else if (c->state == IDLE)
					drop(w, c, now), c->resume_ns = now;
			}
		}
		/* timed resumptions: paused after an ERR, or to reconnect */
		int timeout = 10;
		if (started && now < end) {
			for (int i = 0; i < w->n; i++) {
				struct conn *c = &w->conns[i];
				if (c->state == PAUSED && now >= c->resume_ns)
					send_req(w, c, now);
				else if (c->state == DEAD && now >= c->resume_ns && !open_conn(w, c)) {
					if (in_window(now))
						w->conn_err++;
					drop(w, c, now);
				}
			}
			timeout = 1;
		}
		int n = epoll_wait(w->epfd, evs, MAX_EVENTS, timeout);
		now = now_ns();
		for (int i = 0; i < n; i++)
			on_event(w, evs[i].data.ptr, evs[i].events, now);
	}
	/* requests the window left unanswered, and how long the oldest waited */
	uint64_t end = atomic_load(&g_end);
	for (int i = 0; i < w->n; i++) {
		struct conn *c = &w->conns[i];
		if (c->state == REQ_SENT && c->sent_ns < end) {
			w->unanswered++;
			if (end - c->sent_ns > w->oldest_ns)
				w->oldest_ns = end - c->sent_ns;
		}
		if (c->fd >= 0)
			close(c->fd);
	}
	return NULL;
}

static void on_term(int sig)
{
	(void)sig;
	g_stop = 1;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: %s PORT [--conns N] [--duration S] [--warmup S] [--threads N] [--err-pause-ms N] "
		    "[--reconnect-ms N] [--ramp-timeout S]", "mem-client");
	int port = (int)bench_arg_long("PORT", argv[1], 1, 65535);
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc)
			die("%s wants a value", a);
		const char *v = argv[++i];
		if (!strcmp(a, "--conns"))
			opt.conns = (int)bench_arg_long(a, v, 1, 100000);
		else if (!strcmp(a, "--duration"))
			opt.duration = (double)bench_arg_long(a, v, 1, 3600);
		else if (!strcmp(a, "--threads"))
			opt.threads = (int)bench_arg_long(a, v, 1, 64);
		else if (!strcmp(a, "--err-pause-ms"))
			opt.err_pause_ms = bench_arg_long(a, v, 0, 10000);
		else if (!strcmp(a, "--reconnect-ms"))
			opt.reconnect_ms = bench_arg_long(a, v, 0, 10000);
		else if (!strcmp(a, "--warmup"))
			opt.warmup = (double)bench_arg_long(a, v, 0, 3600);
		else if (!strcmp(a, "--ramp-timeout"))
			opt.ramp_timeout = (double)bench_arg_long(a, v, 1, 3600);
		else
			die("unknown option %s", a);
	}
	if (opt.threads > opt.conns)
		opt.threads = opt.conns;
	opt.addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
	                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	/* one descriptor per connection, and some to spare */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.conns + 64) {
		rl.rlim_cur = rl.rlim_max < (rlim_t)opt.conns + 64 ? rl.rlim_max : (rlim_t)opt.conns + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	struct worker *ws = calloc((size_t)opt.threads, sizeof *ws);
	struct conn *all = calloc((size_t)opt.conns, sizeof *all);
	if (!ws || !all)
		die("%s", "out of memory");
	for (int i = 0; i < opt.conns; i++)
		all[i].fd = -1;
	int per = opt.conns / opt.threads, extra = opt.conns % opt.threads, at = 0;
	for (int t = 0; t < opt.threads; t++) {
		struct worker *w = &ws[t];
		w->n = per + (t < extra);
		w->conns = all + at;
		at += w->n;
		w->epfd = epoll_create1(0);
		w->hist_ok = calloc(HIST_LEN, sizeof *w->hist_ok);
		w->hist_all = calloc(HIST_LEN, sizeof *w->hist_all);
		if (w->epfd < 0 || !w->hist_ok || !w->hist_all)
			die("%s", "epoll_create1 or calloc failed");
		pthread_create(&w->thread, NULL, run_worker, w);
	}

	/* the warm-up: wait until every connection has its HELLO answered
	 * (or failed), bounded by --ramp-timeout */
	uint64_t ramp0 = now_ns();
	while (atomic_load(&g_ramped) < opt.conns && !g_stop &&
	       now_ns() - ramp0 < (uint64_t)(opt.ramp_timeout * 1e9))
		usleep(1000);
	int ready = atomic_load(&g_ramped);
	uint64_t go = now_ns(), start = go + (uint64_t)(opt.warmup * 1e9);
	atomic_store(&g_end, start + (uint64_t)(opt.duration * 1e9));
	atomic_store(&g_start, start);
	atomic_store(&g_go, go);
	for (int t = 0; t < opt.threads; t++)
		pthread_join(ws[t].thread, NULL);
	double secs = (double)(atomic_load(&g_end) - start) / 1e9;

	uint64_t ok = 0, err = 0, conn_err = 0, ramp_fail = 0, unanswered = 0, oldest = 0;
	uint64_t *hok = calloc(HIST_LEN, sizeof *hok), *hall = calloc(HIST_LEN, sizeof *hall);
	for (int t = 0; t < opt.threads; t++) {
		struct worker *w = &ws[t];
		ok += w->ok;
		err += w->err;
		conn_err += w->conn_err;
		ramp_fail += w->ramp_fail;
		unanswered += w->unanswered;
		if (w->oldest_ns > oldest)
			oldest = w->oldest_ns;
		for (unsigned i = 0; i < HIST_LEN; i++) {
			hok[i] += w->hist_ok[i];
			hall[i] += w->hist_all[i];
		}
	}
	printf("result conns=%d ramped=%d ramp_fail=%llu ramp_ms=%.0f warmup=%.0f seconds=%.2f "
	       "ok=%llu err=%llu "
	       "conn_err=%llu ok_per_s=%.1f err_per_s=%.1f ok_p50_us=%.0f ok_p99_us=%.0f "
	       "ok_max_us=%.0f all_p50_us=%.0f all_p99_us=%.0f unanswered=%llu oldest_ms=%.0f\n",
	       opt.conns, ready, (unsigned long long)ramp_fail, (go - ramp0) / 1e6, opt.warmup, secs,
	       (unsigned long long)ok, (unsigned long long)err, (unsigned long long)conn_err,
	       ok / secs, err / secs, hist_percentile(hok, ok, 0.50) / 1e3, hist_percentile(hok, ok, 0.99) / 1e3,
	       hist_percentile(hok, ok, 1.0) / 1e3, hist_percentile(hall, ok + err, 0.50) / 1e3,
	       hist_percentile(hall, ok + err, 0.99) / 1e3, (unsigned long long)unanswered, oldest / 1e6);
	return 0;
}
