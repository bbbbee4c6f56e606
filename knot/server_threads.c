/* server_threads.c: knot and knot-pthread, one thread per connection in
 * plain blocking style: accept4, recv, sendmsg, sendfile, close.  Built
 * on Caprice (-DKNOT_CAPRICE, linked with libthread) each connection is a
 * user thread whose blocking calls become io_uring operations; built on
 * NPTL it is a kernel thread per connection.  Timeouts are socket options
 * (SO_RCVTIMEO, SO_SNDTIMEO), which both honour. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "options.h"

#ifdef KNOT_CAPRICE
#include "caprice.h"
#define PROG "knot"
#define THREADS_HELP "Caprice worker kernel threads (CAPRICE_WORKERS; auto: one per CPU)"
#else
#define PROG "knot-pthread"
#define THREADS_HELP "acceptor threads (auto: one per CPU); each connection gets its own thread"
#endif

#define BIG_CHUNK (64 * 1024)

static int listen_fd;

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_timeo(int fd, int name, int64_t ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
	setsockopt(fd, SOL_SOCKET, name, &tv, sizeof tv);
}

static bool send_all(int fd, struct iovec *iov, int cnt, bool more)
{
	struct msghdr m = { 0 };
	while (cnt > 0) {
		m.msg_iov = iov;
		m.msg_iovlen = (size_t)cnt;
		ssize_t r = sendmsg(fd, &m, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		while (cnt > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return true;
}

/* A blocking sendfile returns short only when the send timeout expired
 * (or the file shrank): either way the connection is done.  One call
 * per 64 KiB keeps "no progress for --send-timeout" honest: a single
 * large call may wait out the timeout once per internal chunk. */
static bool send_big(struct kconn *c)
{
	off_t off = (off_t)c->big_off, end = (off_t)c->big_end;
	while (off < end) {
		size_t want = (size_t)(end - off) > BIG_CHUNK ? BIG_CHUNK : (size_t)(end - off);
		ssize_t r = sendfile(c->fd, c->big->fd, &off, want);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || (size_t)r < want)
			return false;
	}
	return true;
}

/* Half-closes and reads what the client still sends (briefly), so the
 * error response is not destroyed by a reset from unread input. */
static void linger_close(struct kconn *c)
{
	shutdown(c->fd, SHUT_WR);
	set_timeo(c->fd, SO_RCVTIMEO, 500);
	int64_t end = mono_ms() + 2000;
	size_t total = 0;
	while (mono_ms() < end && total < (1u << 20)) {
		ssize_t r = recv(c->fd, c->buf, sizeof c->buf, 0);
		if (r <= 0)
			break;
		total += (size_t)r;
	}
}

static void *serve(void *arg)
{
	struct kconn c;
	int fd = (int)(intptr_t)arg;
	kconn_init(&c, fd, NULL);
	if (log_enabled) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof ss;
		if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
			kconn_peer_name(&c, &ss);
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	int64_t idle_ms = (int64_t)knot.opt.keepalive_s * 1000;
	int64_t timeo = idle_ms, deadline = 0;
	set_timeo(fd, SO_RCVTIMEO, timeo);
	set_timeo(fd, SO_SNDTIMEO, (int64_t)knot.opt.send_s * 1000);

	for (;;) {
		if (kconn_build(&c) > 0) {
			deadline = 0;
			bool ok = send_all(fd, c.iov, c.iovcnt, c.big != NULL) && (!c.big || send_big(&c));
			kconn_done(&c);
			if (!ok)
				goto out;
			continue;
		}
		if (!c.keep_open)
			break;
		int64_t want = idle_ms;
		if (kconn_partial(&c)) {
			/* part of a head is here: the whole of it must arrive in time */
			int64_t now = mono_ms();
			if (!deadline)
				deadline = now + (int64_t)knot.opt.header_s * 1000;
			want = deadline - now;
			if (want <= 0)
				goto timeout;
		} else {
			deadline = 0;
		}
		if (want != timeo) {
			timeo = want;
			set_timeo(fd, SO_RCVTIMEO, timeo);
		}
		size_t room;
		char *p = kconn_rbuf(&c, &room);
		ssize_t r = room ? recv(fd, p, room, 0) : 0;
		if (r > 0) {
			kconn_received(&c, (size_t)r);
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			goto timeout;
		goto out;
	}
	if (c.linger)
		linger_close(&c);
	goto out;
timeout:
	kconn_timeout(&c);
	send_all(fd, c.iov, c.iovcnt, false);
	kconn_done(&c);
	linger_close(&c);
out:
	close(fd);
	atomic_fetch_sub_explicit(&knot.active, 1, memory_order_relaxed);
	return NULL;
}

static void *acceptor(void *arg)
{
	(void)arg;
	for (;;) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (atomic_load(&knot.stopping))
				return NULL;
			switch (errno) {
			case EMFILE:
			case ENFILE:
				knot_accept_overload(listen_fd);
				continue;
			case ENOBUFS:
			case ENOMEM: {
				struct timespec ts = { 0, 10 * 1000 * 1000 };
				nanosleep(&ts, NULL);
				continue;
			}
			case EBADF:
			case EINVAL:
			case ENOTSOCK:
				return NULL;
			default: /* EINTR, ECONNABORTED, EPERM, network errors */
				continue;
			}
		}
		if (atomic_fetch_add_explicit(&knot.active, 1, memory_order_relaxed) >= knot.max_conns) {
			atomic_fetch_sub_explicit(&knot.active, 1, memory_order_relaxed);
			knot_refuse(fd);
			close(fd);
			continue;
		}
		pthread_t t;
		if (pthread_create(&t, NULL, serve, (void *)(intptr_t)fd) != 0) {
			atomic_fetch_sub_explicit(&knot.active, 1, memory_order_relaxed);
			knot_refuse(fd);
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
}

int main(int argc, char **argv)
{
	knot_parse_options(argc, argv, &knot.opt, PROG, THREADS_HELP);
#ifdef KNOT_CAPRICE
	/* the worker count is read when libthread loads: run again with it */
	if (knot.opt.threads && caprice_worker_count() != knot.opt.threads) {
		char v[16];
		snprintf(v, sizeof v, "%d", knot.opt.threads);
		const char *cur = getenv("CAPRICE_WORKERS");
		if (!cur || strcmp(cur, v) != 0) {
			setenv("CAPRICE_WORKERS", v, 1);
			execv("/proc/self/exe", argv);
			perror("knot: re-exec with CAPRICE_WORKERS");
		}
	}
	int acceptors = caprice_worker_count();
#else
	int acceptors = knot.opt.threads;
	if (!acceptors) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		acceptors = n > 0 ? (int)n : 1;
	}
#endif
	knot_setup();
	listen_fd = knot_listen(false, knot.opt.port);
	knot_announce(listen_fd);
	for (int i = 0; i < acceptors; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, acceptor, NULL) != 0) {
			perror("knot: pthread_create");
			exit(1);
		}
		pthread_detach(t);
	}
	knot_wait_for_signal();
	atomic_store(&knot.stopping, 1);
	log_flush();
	exit(0);
}
