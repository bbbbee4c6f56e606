/* echo_client.c: the load generator of bench/compare-echo.  Every server
 * under comparison faces this same client, so it must be cheap per round
 * trip (the machine has two cores and the client shares them with the
 * server) and must not depend on what it measures: plain C, one epoll
 * loop per client thread, no libthread.
 *
 * Each connection runs a closed loop: send one message, wait for the
 * whole echo, check it, send the next.  Connections are opened gradually,
 * never more than a window of them still waiting for their first echo, so
 * a slow accept loop never overflows the listen queue (a dropped SYN costs
 * a one-second retransmit and would measure TCP, not the server).  A
 * connection that has had its first echo idles until all have: were it to
 * go on, the first connections' traffic would slow the opening of the
 * last ones (at 10,000 connections, to tens of seconds).  Then all start
 * at once, a warm-up runs, then the measured window.
 *
 * Given --server-pid, it also reads the server's CPU time (utime+stime
 * from /proc/PID/stat) at both ends of the window and its RSS at the end,
 * so CPU per round trip covers exactly the round trips counted.  The
 * machine's other busy time (not server, not client) is reported too: on
 * a shared VM a perturbed run should say so.
 *
 * SIGUSR1 prints "mark rt=N" (round trips completed since the start) for
 * a driver that counts the server's syscalls over an interval of its
 * choosing; SIGTERM ends the run early.  The result is one line on stdout:
 * "result key=value ...". */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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

#include "latency_hist.h"

#define MSG_MAX    4096
#define MAX_EVENTS 1024

enum { CONNECTING, WAITING, IDLE, DEAD };

struct conn {
	int fd;
	uint8_t state;
	bool confirmed;         /* has had its first echo */
	uint32_t got;           /* bytes of the current echo received */
	uint32_t id;
	uint64_t seq;
	uint64_t sent_ns;
	char rx[];              /* msg_size bytes */
};

struct worker {
	pthread_t thread;
	int epfd;
	struct conn **conns;
	int n, opened, unconfirmed;
	_Atomic uint64_t ramped;   /* confirmed or failed */
	_Atomic uint64_t total;    /* round trips since the start */
	uint64_t measured, errors, corrupt, max_ns;
	uint64_t *hist;
};

static struct {
	struct sockaddr_in addr;
	int conns, threads, window;
	uint32_t msg_size;
	double warmup, duration, ramp_timeout;
	int server_pid;
} opt = {
	.conns = 100, .threads = 2, .window = 256, .msg_size = 64,
	.warmup = 1.0, .duration = 3.0, .ramp_timeout = 30.0, .server_pid = 0,
};

/* Set once by main; workers count only round trips that complete inside
 * [start, end) and stop at end. */
static _Atomic uint64_t g_start = UINT64_MAX, g_end = UINT64_MAX;
static atomic_bool g_go;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The message names its connection and its sequence number, so an echo
 * that went to the wrong connection, or came back stale, is caught. */
static void fill(char *buf, const struct conn *c)
{
	memcpy(buf, &c->id, sizeof c->id);
	memcpy(buf + 4, &c->seq, sizeof c->seq);
	for (uint32_t i = 12; i < opt.msg_size; i++)
		buf[i] = (char)(c->id + c->seq + i);
}

static void fail(struct worker *w, struct conn *c)
{
	w->errors++;
	if (!c->confirmed) {
		c->confirmed = true;
		w->unconfirmed--;
		atomic_fetch_add_explicit(&w->ramped, 1, memory_order_relaxed);
	}
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->state = DEAD;
}

static void send_msg(struct worker *w, struct conn *c, uint64_t now)
{
	char buf[MSG_MAX];
	fill(buf, c);
	c->sent_ns = now;
	c->got = 0;
	ssize_t n = write(c->fd, buf, opt.msg_size);
	/* an empty socket buffer always takes one small message whole */
	if (n != (ssize_t)opt.msg_size)
		fail(w, c);
}

static void open_one(struct worker *w)
{
	struct conn *c = w->conns[w->opened++];
	w->unconfirmed++;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (c->fd < 0) {
		perror("echo-client: socket");
		c->fd = -1;
		c->state = DEAD;
		w->errors++;
		c->confirmed = true;
		w->unconfirmed--;
		atomic_fetch_add_explicit(&w->ramped, 1, memory_order_relaxed);
		return;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->state = CONNECTING;
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev);
	if (connect(c->fd, (struct sockaddr *)&opt.addr, sizeof opt.addr) < 0 &&
	    errno != EINPROGRESS) {
		perror("echo-client: connect");
		fail(w, c);
	}
}

static void on_connected(struct worker *w, struct conn *c, uint64_t now)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
		if (w->errors < 3)
			fprintf(stderr, "echo-client: connect: %s\n", strerror(err ? err : errno));
		fail(w, c);
		return;
	}
	c->state = WAITING;
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
	epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	send_msg(w, c, now);
}

static void on_readable(struct worker *w, struct conn *c)
{
	ssize_t n = read(c->fd, c->rx + c->got, opt.msg_size - c->got);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (w->errors < 3)
			fprintf(stderr, "echo-client: connection %u: %s\n", c->id,
			        n == 0 ? "closed by the server" : strerror(errno));
		fail(w, c);
		return;
	}
	c->got += (uint32_t)n;
	if (c->got < opt.msg_size)
		return;

	uint64_t t = now_ns();
	char want[MSG_MAX];
	fill(want, c);
	if (memcmp(want, c->rx, opt.msg_size)) {
		if (w->corrupt++ < 3)
			fprintf(stderr, "echo-client: connection %u: echo %" PRIu64 " differs\n",
			        c->id, c->seq);
	}
	uint64_t lat = t - c->sent_ns;
	c->seq++;
	if (!c->confirmed) {
		c->confirmed = true;
		w->unconfirmed--;
		atomic_fetch_add_explicit(&w->ramped, 1, memory_order_relaxed);
		if (!atomic_load_explicit(&g_go, memory_order_relaxed)) {
			c->state = IDLE;
			return;
		}
	}
	if (t >= atomic_load_explicit(&g_start, memory_order_relaxed) &&
	    t < atomic_load_explicit(&g_end, memory_order_relaxed)) {
		w->measured++;
		w->hist[hist_index(lat)]++;
		if (lat > w->max_ns)
			w->max_ns = lat;
	}
	atomic_store_explicit(&w->total, atomic_load_explicit(&w->total, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
	send_msg(w, c, t);
}

/* An idle connection is readable only if the server closed it, or sent
 * what nobody asked for. */
static void on_idle(struct worker *w, struct conn *c)
{
	char b;
	ssize_t n = read(c->fd, &b, 1);
	if (n > 0)
		w->corrupt++;
	else if (n == 0 || (errno != EAGAIN && errno != EINTR))
		fail(w, c);
}

static void *run(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	int window = opt.window / opt.threads > 0 ? opt.window / opt.threads : 1;
	bool going = false;

	for (;;) {
		while (w->opened < w->n && w->unconfirmed < window)
			open_one(w);
		if (!going && atomic_load_explicit(&g_go, memory_order_relaxed)) {
			going = true;
			uint64_t t = now_ns();
			for (int i = 0; i < w->n; i++)
				if (w->conns[i]->state == IDLE) {
					w->conns[i]->state = WAITING;
					send_msg(w, w->conns[i], t);
				}
		}
		int n = epoll_wait(w->epfd, evs, MAX_EVENTS, 10);
		if (n < 0 && errno != EINTR) {
			perror("echo-client: epoll_wait");
			exit(1);
		}
		/* round trips that complete at or after the end are not
		 * counted (on_readable checks); past it, stop */
		uint64_t end = atomic_load_explicit(&g_end, memory_order_relaxed);
		if (now_ns() >= end)
			break;
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c->state == CONNECTING)
				on_connected(w, c, now_ns());
			else if (c->state == WAITING)
				on_readable(w, c);
			else if (c->state == IDLE)
				on_idle(w, c);
		}
	}
	return NULL;
}

/* --- what the server and the machine spent ------------------------------ */

struct sample {
	long long srv_ticks;    /* server utime+stime, clock ticks */
	long long busy_ticks;   /* the whole machine's busy time */
	double cli_s;           /* this process's CPU seconds */
};

static long long server_ticks(void)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", opt.server_pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	/* the command name may hold spaces: count fields after its ')' */
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	unsigned long long ut = 0, st = 0;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (long long)(ut + st);
}

static long long machine_busy_ticks(void)
{
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return -1;
	unsigned long long v[8] = { 0 };
	int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
	               &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (k != 8)
		return -1;
	/* user nice system [idle iowait] irq softirq steal */
	return (long long)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
}

static void take(struct sample *s)
{
	s->srv_ticks = opt.server_pid ? server_ticks() : -1;
	s->busy_ticks = machine_busy_ticks();
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	s->cli_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static long status_kib(const char *key)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", opt.server_pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long v = -1;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = atol(line + kl + 1);
			break;
		}
	fclose(f);
	return v;
}

/* --- main ---------------------------------------------------------------- */

static struct worker *workers;

static uint64_t sum_total(void)
{
	uint64_t s = 0;
	for (int i = 0; i < opt.threads; i++)
		s += atomic_load_explicit(&workers[i].total, memory_order_relaxed);
	return s;
}

/* Waits until deadline, or until done() says so, answering SIGUSR1 with a
 * mark; false when told to stop. */
static bool wait_until(uint64_t deadline, const sigset_t *set, bool (*done)(void))
{
	for (;;) {
		uint64_t now = now_ns();
		if (now >= deadline || (done && done()))
			return true;
		uint64_t left = deadline - now;
		if (done && left > 5000000)
			left = 5000000;
		struct timespec ts = { (time_t)(left / 1000000000u), (long)(left % 1000000000u) };
		int sig = sigtimedwait(set, NULL, &ts);
		if (sig == SIGUSR1) {
			printf("mark rt=%" PRIu64 " t_ns=%" PRIu64 "\n", sum_total(), now_ns());
			fflush(stdout);
		} else if (sig == SIGTERM || sig == SIGINT) {
			return false;
		}
	}
}

static bool all_ramped(void)
{
	uint64_t s = 0;
	for (int i = 0; i < opt.threads; i++)
		s += atomic_load_explicit(&workers[i].ramped, memory_order_relaxed);
	return s >= (uint64_t)opt.conns;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: echo-client -p PORT [-c CONNS] [-t THREADS] [-s MSG_BYTES]\n"
	        "                   [-w WARMUP_S] [-d DURATION_S] [-r RAMP_TIMEOUT_S]\n"
	        "                   [-W RAMP_WINDOW] [-P SERVER_PID]\n");
}

int main(int argc, char **argv)
{
	int port = 0, o;
	while ((o = getopt(argc, argv, "p:c:t:s:w:d:r:W:P:h")) != -1) {
		switch (o) {
		case 'p': port = atoi(optarg); break;
		case 'c': opt.conns = atoi(optarg); break;
		case 't': opt.threads = atoi(optarg); break;
		case 's': opt.msg_size = (uint32_t)atoi(optarg); break;
		case 'w': opt.warmup = atof(optarg); break;
		case 'd': opt.duration = atof(optarg); break;
		case 'r': opt.ramp_timeout = atof(optarg); break;
		case 'W': opt.window = atoi(optarg); break;
		case 'P': opt.server_pid = atoi(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (port <= 0 || opt.conns < 1 || opt.threads < 1 || opt.msg_size < 12 ||
	    opt.msg_size > MSG_MAX || opt.window < 1) {
		usage(stderr);
		return 2;
	}
	if (opt.threads > opt.conns)
		opt.threads = opt.conns;
	opt.addr = (struct sockaddr_in){
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	/* the workers inherit this mask; only main takes these signals */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	workers = calloc((size_t)opt.threads, sizeof *workers);
	size_t csize = (sizeof(struct conn) + opt.msg_size + 15) & ~(size_t)15;
	char *cmem = calloc((size_t)opt.conns, csize);
	if (!workers || !cmem) {
		perror("echo-client: calloc");
		return 1;
	}
	for (int i = 0; i < opt.threads; i++) {
		struct worker *w = &workers[i];
		int lo = (int)((long)opt.conns * i / opt.threads);
		int hi = (int)((long)opt.conns * (i + 1) / opt.threads);
		w->n = hi - lo;
		w->conns = calloc((size_t)w->n, sizeof *w->conns);
		w->hist = calloc(HIST_LEN, sizeof *w->hist);
		w->epfd = epoll_create1(0);
		if (!w->conns || !w->hist || w->epfd < 0) {
			perror("echo-client: setup");
			return 1;
		}
		for (int k = 0; k < w->n; k++) {
			struct conn *c = (struct conn *)(cmem + (size_t)(lo + k) * csize);
			c->id = (uint32_t)(lo + k);
			c->fd = -1;
			w->conns[k] = c;
		}
	}

	uint64_t t0 = now_ns();
	for (int i = 0; i < opt.threads; i++) {
		int err = pthread_create(&workers[i].thread, NULL, run, &workers[i]);
		if (err) {
			fprintf(stderr, "echo-client: pthread_create: %s\n", strerror(err));
			return 1;
		}
	}

	int status = 0;
	bool go = wait_until(t0 + (uint64_t)(opt.ramp_timeout * 1e9), &set, all_ramped);
	uint64_t t_ramped = now_ns();
	double ramp_s = (double)(t_ramped - t0) / 1e9;
	struct sample s0 = { 0 }, s1 = { 0 };
	uint64_t start = t_ramped, end = t_ramped;
	if (!all_ramped()) {
		uint64_t r = 0;
		for (int i = 0; i < opt.threads; i++)
			r += workers[i].ramped;
		fprintf(stderr, "echo-client: only %" PRIu64 " of %d connections had an echo after %.1f s\n",
		        r, opt.conns, ramp_s);
		status = 3;
		atomic_store(&g_end, end);
	} else {
		printf("ramped conns=%d secs=%.3f\n", opt.conns, ramp_s);
		fflush(stdout);
		start = t_ramped + (uint64_t)(opt.warmup * 1e9);
		end = start + (uint64_t)(opt.duration * 1e9);
		atomic_store(&g_start, start);
		atomic_store(&g_end, end);
		atomic_store(&g_go, true);
		if (go)
			go = wait_until(start, &set, NULL);
		take(&s0);
		if (go)
			go = wait_until(end, &set, NULL);
		uint64_t now = now_ns();
		if (!go && now < end) {
			end = now < start ? start : now;
			atomic_store(&g_end, end);
		}
		take(&s1);
	}
	long rss = opt.server_pid ? status_kib("VmRSS") : -1;
	long hwm = opt.server_pid ? status_kib("VmHWM") : -1;
	long sthreads = opt.server_pid ? status_kib("Threads") : -1;
	for (int i = 0; i < opt.threads; i++)
		pthread_join(workers[i].thread, NULL);

	/* merge; a connection still waiting for an echo sent more than a
	 * second before the end has stalled, whatever the percentiles say */
	uint64_t *hist = calloc(HIST_LEN, sizeof *hist);
	uint64_t measured = 0, errors = 0, corrupt = 0, max_ns = 0, stalled = 0, alive = 0;
	for (int i = 0; i < opt.threads; i++) {
		struct worker *w = &workers[i];
		measured += w->measured;
		errors += w->errors;
		corrupt += w->corrupt;
		if (w->max_ns > max_ns)
			max_ns = w->max_ns;
		for (unsigned k = 0; k < HIST_LEN; k++)
			hist[k] += w->hist[k];
		for (int k = 0; k < w->n; k++) {
			struct conn *c = w->conns[k];
			if (c->state == WAITING) {
				alive++;
				if (c->sent_ns + 1000000000u < end)
					stalled++;
			}
			/* reset rather than close: no TIME_WAIT pile-up across
			 * runs of 10,000 connections */
			if (c->fd >= 0) {
				struct linger lg = { 1, 0 };
				setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
				close(c->fd);
			}
		}
	}
	double pct[] = { 0.50, 0.90, 0.99, 0.999 };
	double pv[4] = { 0 };
	for (int j = 0; j < 4; j++) {
		uint64_t rank = (uint64_t)(pct[j] * (double)measured), seen = 0;
		for (unsigned k = 0; k < HIST_LEN && measured; k++) {
			seen += hist[k];
			if (seen > rank) {
				pv[j] = (double)hist_value(k) / 1e3;
				break;
			}
		}
	}

	double secs = (double)(end - start) / 1e9;
	long hz = sysconf(_SC_CLK_TCK);
	double srv_s = s0.srv_ticks >= 0 && s1.srv_ticks >= 0
	                       ? (double)(s1.srv_ticks - s0.srv_ticks) / (double)hz
	                       : -1;
	double cli_s = s1.cli_s - s0.cli_s;
	double busy_s = (double)(s1.busy_ticks - s0.busy_ticks) / (double)hz;
	double other_s = busy_s - cli_s - (srv_s > 0 ? srv_s : 0);
	if (other_s < 0)
		other_s = 0;
	printf("result conns=%d threads=%d msg=%u secs=%.3f rt=%" PRIu64 " rps=%.0f"
	       " p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f"
	       " errors=%" PRIu64 " corrupt=%" PRIu64 " alive=%" PRIu64 " stalled=%" PRIu64
	       " ramp_s=%.3f srv_cpu_s=%.2f srv_us_per_rt=%.3f srv_rss_kib=%ld srv_hwm_kib=%ld"
	       " srv_threads=%ld cli_cpu_pct=%.0f other_cpu_pct=%.0f\n",
	       opt.conns, opt.threads, opt.msg_size, secs, measured,
	       secs > 0 ? (double)measured / secs : 0, pv[0], pv[1], pv[2], pv[3],
	       (double)max_ns / 1e3, errors, corrupt, alive, stalled, ramp_s, srv_s,
	       srv_s >= 0 && measured ? srv_s * 1e6 / (double)measured : -1, rss, hwm, sthreads,
	       secs > 0 ? 100 * cli_s / secs : 0, secs > 0 ? 100 * other_s / secs : 0);
	fflush(stdout);
	if (!status && (errors || corrupt || stalled || !measured))
		status = 4;
	return status;
}
