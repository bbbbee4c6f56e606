/* rate_client.c: a constant-rate (open-loop) echo client, as wrk2 is for
 * HTTP.  Requests are due at a fixed rate whatever the server does, spread
 * round-robin over the connections, and each one's latency counts from
 * when it was due, not from when it could be sent: a server that stalls
 * shows in the tail instead of slowing the load down (what wrk2 calls
 * coordinated omission).  At low load, where a closed-loop client would
 * measure little but its own round trips, this is what makes latency
 * mean something.
 *
 * usage: rate-client PORT RATE [--conns N] [--seconds S] [--size B]
 * Prints one line:
 *   rate R sent N done M late L p50 X p90 X p99 X p999 X max X us
 * (late: requests not sent within 1 ms of being due, which the client
 * itself fell behind on; the first tenth of the run is left out of the
 * percentiles as warm-up). */
#define BENCH_NAME "rate-client"
#include "bench_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
	int fd;
	uint32_t got;         /* bytes of the oldest answer read so far */
	uint32_t unsent;      /* requests due but not yet written (EAGAIN) */
	uint64_t *due;        /* due times of the requests in flight, FIFO */
	uint32_t head, count, cap;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void push_due(struct conn *c, uint64_t t)
{
	if (c->count == c->cap) {
		uint32_t cap = c->cap ? 2 * c->cap : 64;
		uint64_t *d = malloc(cap * sizeof *d);
		if (!d)
			die("out of memory");
		for (uint32_t i = 0; i < c->count; i++)
			d[i] = c->due[(c->head + i) % c->cap];
		free(c->due);
		c->due = d;
		c->head = 0;
		c->cap = cap;
	}
	c->due[(c->head + c->count++) % c->cap] = t;
}

static uint64_t pop_due(struct conn *c)
{
	uint64_t t = c->due[c->head];
	c->head = (c->head + 1) % c->cap;
	c->count--;
	return t;
}

/* Writes what is due on c; false when the socket is full (EAGAIN). */
static bool send_due(struct conn *c, const char *msg, uint32_t size)
{
	while (c->unsent) {
		ssize_t w = send(c->fd, msg, size, MSG_NOSIGNAL);
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return false;
		if (w != (ssize_t)size)
			die("send: %s", w < 0 ? strerror(errno) : "short write of a small message");
		c->unsent--;
	}
	return true;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: rate-client PORT RATE [--conns N] [--seconds S] [--size B]");
	int port = atoi(argv[1]);
	double rate = atof(argv[2]);
	long nconn = 64;
	double seconds = 4;
	uint32_t size = 64;
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--conns") && i + 1 < argc)
			nconn = atol(argv[++i]);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--size") && i + 1 < argc)
			size = (uint32_t)atol(argv[++i]);
		else
			die("unknown option %s", argv[i]);
	}
	if (port <= 0 || rate <= 0 || nconn < 1 || seconds <= 0 || size < 1 || size > 4096)
		die("bad arguments");

	struct conn *cs = calloc((size_t)nconn, sizeof *cs);
	char *msg = malloc(size), buf[65536];
	if (!cs || !msg)
		die("out of memory");
	memset(msg, 'x', size);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
		                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	for (long i = 0; i < nconn; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
			die("connect to 127.0.0.1:%d: %s", port, strerror(errno));
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0)
			die("fcntl: %s", strerror(errno));
		cs[i].fd = fd;
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)i };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
			die("epoll_ctl: %s", strerror(errno));
	}

	uint64_t total = (uint64_t)(rate * seconds), warm = total / 10;
	uint64_t *lat = malloc(total * sizeof *lat);
	if (!lat)
		die("out of memory");
	double period = 1e9 / rate;
	uint64_t t0 = now_ns() + 1000000, sent = 0, done = 0, measured = 0, late = 0;
	uint64_t give_up = t0 + (uint64_t)(seconds * 1e9) + 5000000000ull;
	struct epoll_event evs[256];
	while (done < total) {
		uint64_t now = now_ns();
		if (now > give_up)
			die("%llu of %llu answers after the run and 5 s more",
			    (unsigned long long)done, (unsigned long long)total);
		/* everything due by now goes out */
		while (sent < total) {
			uint64_t due = t0 + (uint64_t)((double)sent * period);
			if (due > now)
				break;
			if (now - due > 1000000)
				late++;
			struct conn *c = &cs[sent % (uint64_t)nconn];
			push_due(c, due);
			c->unsent++;
			if (!send_due(c, msg, size)) {
				struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT,
					                  .data.u64 = (uint64_t)(c - cs) };
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
			}
			sent++;
		}
		int64_t wait_ns = 100000000;
		if (sent < total) {
			uint64_t due = t0 + (uint64_t)((double)sent * period);
			now = now_ns();
			wait_ns = due > now ? (int64_t)(due - now) : 0;
		}
		struct timespec ts = { wait_ns / 1000000000, wait_ns % 1000000000 };
		int n = epoll_pwait2(ep, evs, 256, &ts, NULL);
		if (n < 0 && errno != EINTR)
			die("epoll_pwait2: %s", strerror(errno));
		for (int k = 0; k < n; k++) {
			struct conn *c = &cs[evs[k].data.u64];
			if ((evs[k].events & EPOLLOUT) && send_due(c, msg, size)) {
				struct epoll_event ev = { .events = EPOLLIN,
					                  .data.u64 = (uint64_t)(c - cs) };
				epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
			}
			if (!(evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
				continue;
			ssize_t r = recv(c->fd, buf, sizeof buf, 0);
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				continue;
			if (r <= 0)
				die("recv: %s", r < 0 ? strerror(errno) : "the server closed a connection");
			uint64_t back = now_ns();
			for (c->got += (uint32_t)r; c->got >= size; c->got -= size) {
				if (!c->count)
					die("an answer no request was sent for");
				uint64_t due = pop_due(c);
				if (done++ >= warm)
					lat[measured++] = back - due;
			}
		}
	}
	qsort(lat, measured, sizeof *lat, cmp_u64);
#define PCT(p) ((double)lat[(uint64_t)((double)(measured - 1) * (p))] / 1000.0)
	printf("rate %.0f sent %llu done %llu late %llu p50 %.1f p90 %.1f p99 %.1f p999 %.1f "
	       "max %.1f us\n",
	       (double)total / seconds, (unsigned long long)sent, (unsigned long long)done,
	       (unsigned long long)late, PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999), PCT(1.0));
	return 0;
}
