/* echo_epoll.c: the event-loop baseline for bench/compare-echo — the
 * hand-written server that Caprice's thread-per-connection echo server
 * has to match.  It is what a careful programmer would write without a
 * threads package: one level-triggered epoll loop per core, each with its
 * own SO_REUSEPORT listening socket so the kernel spreads connections
 * across the loops and no state is shared between them.
 *
 * Level-triggered on purpose: an edge-triggered loop must read until
 * EAGAIN, one extra read() per request; here a readable socket costs one
 * read() and one write().  Plain NPTL, no libthread.
 *
 * usage: echo-epoll [PORT [LOOPS]]   (port 0: any free port; loops
 * default to the online CPUs).  Prints "port N" once listening. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BENCH_NAME "echo-epoll"
#include "bench_util.h"

#define BUF_SIZE   4096
#define MAX_EVENTS 512

/* Bytes a connection still owes its peer when a write came up short.
 * With 64-byte messages this never happens in practice, but a baseline
 * that drops data under pressure would not be a fair one. */
struct pending {
	size_t len, off;
	char data[];
};

struct loop {
	int lfd, epfd;
	pthread_t thread;
};

/* Indexed by fd: descriptors are per process and never shared between
 * loops, so each slot is only touched by the loop that owns that fd. */
static struct pending **pending;
static int max_fd;

static int listener(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	struct sockaddr_in sa = {
		.sin_family = AF_INET,
		.sin_port = htons(port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 65535) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void drop(struct loop *l, int fd)
{
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	free(pending[fd]);
	pending[fd] = NULL;
	close(fd);
}

static void accept_all(struct loop *l)
{
	for (;;) {
		int fd = accept4(l->lfd, NULL, NULL, SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				perror("echo-epoll: accept4");
			return;
		}
		if (fd >= max_fd) {
			fprintf(stderr, "echo-epoll: fd %d over the table\n", fd);
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
		if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			perror("echo-epoll: epoll_ctl");
			close(fd);
		}
	}
}

/* Writes what is owed; 1 when all is out, 0 when the socket is full,
 * -1 on error. */
static int flush(int fd, const char *p, size_t len, size_t *off)
{
	while (*off < len) {
		ssize_t w = write(fd, p + *off, len - *off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -1;
		}
		*off += (size_t)w;
	}
	return 1;
}

static void on_readable(struct loop *l, int fd)
{
	char buf[BUF_SIZE];
	ssize_t n = read(fd, buf, sizeof buf);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		drop(l, fd);
		return;
	}
	size_t off = 0;
	int r = flush(fd, buf, (size_t)n, &off);
	if (r < 0) {
		drop(l, fd);
	} else if (r == 0) {
		/* stop reading until the peer drains what we owe it: the
		 * same back-pressure a blocking write() gives a thread */
		struct pending *p = malloc(sizeof *p + (size_t)n - off);
		if (!p) {
			drop(l, fd);
			return;
		}
		p->len = (size_t)n - off;
		p->off = 0;
		memcpy(p->data, buf + off, p->len);
		pending[fd] = p;
		struct epoll_event ev = { .events = EPOLLOUT, .data.fd = fd };
		epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
	}
}

static void on_writable(struct loop *l, int fd)
{
	struct pending *p = pending[fd];
	if (!p)
		return;
	int r = flush(fd, p->data, p->len, &p->off);
	if (r < 0) {
		drop(l, fd);
	} else if (r > 0) {
		free(p);
		pending[fd] = NULL;
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
		epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
	}
}

static void *run(void *arg)
{
	struct loop *l = arg;
	struct epoll_event evs[MAX_EVENTS];

	for (;;) {
		int n = epoll_wait(l->epfd, evs, MAX_EVENTS, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("echo-epoll: epoll_wait");
			exit(1);
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == l->lfd)
				accept_all(l);
			else if (evs[i].events & EPOLLOUT)
				on_writable(l, fd);
			else
				on_readable(l, fd); /* EPOLLIN, or HUP/ERR: read says which */
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf("usage: %s [PORT [LOOPS]]   (port 0: any free port; loops: the online "
		       "CPUs)\n", argv[0]);
		return 0;
	}
	if (argc > 3)
		die("two arguments at most, the port and the loops");
	int port = argc > 1 ? (int)bench_arg_long("PORT", argv[1], 0, 65535) : 0;
	long loops = argc > 2 ? bench_arg_long("LOOPS", argv[2], 1, 1024)
	                      : sysconf(_SC_NPROCESSORS_ONLN);
	if (loops < 1)
		loops = 1;

	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	max_fd = rl.rlim_cur > 1 << 24 ? 1 << 24 : (int)rl.rlim_cur;
	pending = calloc((size_t)max_fd, sizeof *pending);
	struct loop *ls = calloc((size_t)loops, sizeof *ls);
	if (!pending || !ls) {
		perror("echo-epoll: calloc");
		return 1;
	}

	/* the first listener picks the port; the rest join it */
	for (long i = 0; i < loops; i++) {
		ls[i].lfd = listener((uint16_t)port);
		if (ls[i].lfd < 0) {
			perror("echo-epoll: listen");
			return 1;
		}
		if (i == 0 && port == 0) {
			struct sockaddr_in sa;
			socklen_t len = sizeof sa;
			getsockname(ls[0].lfd, (struct sockaddr *)&sa, &len);
			port = ntohs(sa.sin_port);
		}
		ls[i].epfd = epoll_create1(0);
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = ls[i].lfd };
		if (ls[i].epfd < 0 || epoll_ctl(ls[i].epfd, EPOLL_CTL_ADD, ls[i].lfd, &ev) < 0) {
			perror("echo-epoll: epoll");
			return 1;
		}
	}
	for (long i = 1; i < loops; i++) {
		int err = pthread_create(&ls[i].thread, NULL, run, &ls[i]);
		if (err) {
			fprintf(stderr, "echo-epoll: pthread_create: %s\n", strerror(err));
			return 1;
		}
	}
	printf("port %d\n", port);
	fflush(stdout);
	run(&ls[0]);
	return 0;
}
