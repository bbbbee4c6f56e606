/* server_threads.c: knot and knot-pthread, one thread per connection in
 * plain blocking style: accept4, recv, sendmsg, sendfile, close.  Built
 * on Caprice (-DKNOT_CAPRICE, linked with libthread) each connection is a
 * user thread whose blocking calls become io_uring operations; built on
 * NPTL it is a kernel thread per connection.  Timeouts: a watchdog
 * thread shuts down connections past their deadline (watch.h). */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
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
#include "watch.h"

#ifdef KNOT_CAPRICE
#include "caprice.h"
#define PROG "knot"
#define THREADS_HELP "Caprice worker kernel threads (CAPRICE_WORKERS; auto: one per CPU);\n" \
	"                      4 acceptor user threads per worker, a user thread per connection"
#else
#define PROG "knot-pthread"
#define THREADS_HELP "acceptor threads (auto: one per CPU); each connection gets its own thread"
#endif

#define BIG_CHUNK (64 * 1024)

static int listen_fd;
static int64_t send_ms;

static bool send_all(int fd, struct watch *w, struct iovec *iov, int cnt, bool more)
{
	struct msghdr m = { 0 };
	while (cnt > 0) {
		if (!watch_arm(w, WATCH_SEND, watch_now_ms() + send_ms))
			return false;
		int flags = MSG_NOSIGNAL | (more ? MSG_MORE : 0);
		ssize_t r;
		if (cnt == 1) {
			r = send(fd, iov->iov_base, iov->iov_len, flags);
		} else {
			m.msg_iov = iov;
			m.msg_iovlen = (size_t)cnt;
			r = sendmsg(fd, &m, flags);
		}
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

/* A chunk per sendfile call, so each chunk re-arms the send deadline
 * ("no progress for --send-timeout"); a short count means the file
 * shrank or the watchdog shut the socket: the connection is done.  On
 * NPTL this is the kernel's zero-copy sendfile; under Caprice libthread's,
 * which for a regular file is itself a read + write of the chunk. */
static bool send_big(struct kconn *c, struct watch *w)
{
	off_t off = (off_t)c->big_off, end = (off_t)c->big_end;
	while (off < end) {
		if (!watch_arm(w, WATCH_SEND, watch_now_ms() + send_ms))
			return false;
		size_t want = (size_t)(end - off) > BIG_CHUNK ? BIG_CHUNK : (size_t)(end - off);
		ssize_t r = sendfile(c->fd, c->big->fd, &off, want);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || (size_t)r < want)
			return false;
	}
	return true;
}

/* Half-closes and reads what the client still sends (for at most 2 s),
 * so an error response is not destroyed by a reset from unread input. */
static void linger_close(struct kconn *c, struct watch *w)
{
	shutdown(c->fd, SHUT_WR);
	watch_arm(w, WATCH_READ, watch_now_ms() + 2000);
	size_t total = 0;
	while (total < (1u << 20)) {
		ssize_t r = recv(c->fd, c->buf, sizeof c->buf, 0);
		if (r <= 0)
			break;
		total += (size_t)r;
	}
}


static void *serve(void *arg)
{
	struct watch w;
	struct kconn c;
	int fd = (int)((uintptr_t)arg & 0xffffffffu);
	if (!watch_add(&w, fd)) { /* cannot happen: slots = --max-conns */
		knot_refuse(fd);
		goto out_noslot;
	}
	kconn_init(&c, fd);
	/* TCP_NODELAY comes from the listener (Linux copies it on accept) */

	for (;;) {
		if (kconn_build(&c) > 0) {
			bool ok = send_all(fd, &w, c.iov, c.iovcnt, c.big != NULL) &&
			          (!c.big || send_big(&c, &w));
			kconn_done(&c);
			if (!ok)
				goto out;
			continue;
		}
		if (!c.keep_open)
			break;
		int64_t now = watch_now_ms(), until = kconn_read_deadline(&c, now);
		if (until <= now || !watch_arm(&w, WATCH_READ, until))
			goto timeout;
		size_t room;
		char *p = kconn_rbuf(&c, &room);
		ssize_t r = room ? recv(fd, p, room, 0) : 0;
		if (r > 0) {
			kconn_received(&c, (size_t)r);
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (watch_fired(&w))
			goto timeout;
		goto out;
	}
	if (c.linger)
		linger_close(&c, &w);
	goto out;
timeout:
	/* the watchdog shut our reading side: the way out still works */
	kconn_timeout(&c);
	{
		struct msghdr m = { .msg_iov = c.iov, .msg_iovlen = (size_t)c.iovcnt };
		sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	kconn_done(&c);
	linger_close(&c, &w);
out:
	watch_remove(&w);
out_noslot:
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
		if (!knot_admit(fd))
			continue;
		uintptr_t targ = (uintptr_t)(unsigned)fd;
		pthread_t t;
		if (pthread_create(&t, NULL, serve, (void *)targ) != 0)
			knot_turn_away(fd);
		else
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
	/* several accepts in flight per worker: a burst of connections is
	 * taken a batch per ring round trip, before the listen queue fills */
	int acceptors = caprice_worker_count() * 4;
#else
	int acceptors = knot.opt.threads;
	if (!acceptors) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		acceptors = n > 0 ? (int)n : 1;
	}
#endif
	knot_setup();
	send_ms = (int64_t)knot.opt.send_s * 1000;
	pthread_t wt;
	if (watch_init(knot.max_conns + 16) != 0 ||
	    pthread_create(&wt, NULL, watch_thread, (void *)(intptr_t)200) != 0) {
		fprintf(stderr, PROG ": cannot start the watchdog\n");
		exit(1);
	}
	pthread_detach(wt);
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
