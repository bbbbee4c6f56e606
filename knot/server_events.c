/* server_events.c: knot-events, the event-driven build of the same HTTP
 * core (conn.c): one io_uring loop per core on its own kernel thread,
 * each with its own SO_REUSEPORT listener.  No thread per connection:
 * each connection is a state machine with at most one operation in
 * flight (multishot accept, recv, sendmsg; big files as read + send
 * chunks).  Timeouts: a 200 ms tick per loop scans its connections
 * and cancels any operation past its deadline (a cancelled read gets a
 * 408).  Cache misses open and read synchronously in the loop, as nginx
 * does without thread pools: files come from the page cache. */
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "options.h"

#define RING_ENTRIES 4096
#define CQ_ENTRIES   65536
#define CHUNK        (64 * 1024)
#define FREE_KEEP    256
#define TICK_MS      200  /* timeout resolution */

enum { OP_NONE, OP_ACCEPT, OP_TICK, OP_CANCEL, OP_CLOSE, OP_RECV, OP_SEND, OP_READ, OP_BSEND,
       OP_LINGER };
#define OP_MASK 15u

struct loop;

struct econn {
	struct kconn k;
	struct loop *loop;
	struct econn *next_free;
	int idx;                  /* in loop->conns */
	uint8_t op;               /* the operation in flight */
	bool timed_out;           /* the tick cancelled it */
	int64_t deadline;         /* ms, for the operation in flight */
	int iov_pos;
	struct msghdr msg;
	char *chunk;
	uint32_t chunk_len, chunk_sent;
};

struct loop {
	struct io_uring ring;
	int lfd;
	struct econn **conns;
	int nconns, cap;
	struct econn *free;
	int nfree;
	struct __kernel_timespec tick;
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct io_uring_sqe *sqe_get(struct loop *l)
{
	struct io_uring_sqe *s;
	while (!(s = io_uring_get_sqe(&l->ring)))
		io_uring_submit(&l->ring);
	return s;
}

static void arm_accept(struct loop *l)
{
	struct io_uring_sqe *s = sqe_get(l);
	io_uring_prep_multishot_accept(s, l->lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(s, OP_ACCEPT);
}

static void arm_tick(struct loop *l)
{
	struct io_uring_sqe *s = sqe_get(l);
	io_uring_prep_timeout(s, &l->tick, 0, 0);
	io_uring_sqe_set_data64(s, OP_TICK);
}

static void issued(struct econn *c, struct io_uring_sqe *s, int op, int64_t deadline)
{
	c->op = (uint8_t)op;
	c->deadline = deadline;
	io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)c | (uint64_t)op);
}

/* ---- connection life ---- */

static void conn_close(struct econn *c)
{
	struct loop *l = c->loop;
	struct io_uring_sqe *s = sqe_get(l);
	io_uring_prep_close(s, c->k.fd);
	io_uring_sqe_set_data64(s, OP_CLOSE);
	s->flags |= IOSQE_CQE_SKIP_SUCCESS;
	kconn_done(&c->k);
	struct econn *last = l->conns[--l->nconns];
	l->conns[c->idx] = last;
	last->idx = c->idx;
	if (c->chunk) {
		free(c->chunk);
		c->chunk = NULL;
	}
	if (l->nfree < FREE_KEEP) {
		c->next_free = l->free;
		l->free = c;
		l->nfree++;
	} else {
		free(c);
	}
	atomic_fetch_sub_explicit(&knot.active, 1, memory_order_relaxed);
}

static void start_recv(struct econn *c)
{
	int64_t deadline = kconn_read_deadline(&c->k, mono_ms());
	size_t room;
	char *p = kconn_rbuf(&c->k, &room);
	if (!room) {
		conn_close(c);
		return;
	}
	struct io_uring_sqe *s = sqe_get(c->loop);
	io_uring_prep_recv(s, c->k.fd, p, room, 0);
	issued(c, s, OP_RECV, deadline);
}

static void start_send(struct econn *c)
{
	int flags = MSG_NOSIGNAL | (c->k.big ? MSG_MORE : 0);
	struct io_uring_sqe *s = sqe_get(c->loop);
	if (c->k.iovcnt - c->iov_pos == 1) {
		struct iovec *v = &c->k.iov[c->iov_pos];
		io_uring_prep_send(s, c->k.fd, v->iov_base, v->iov_len, flags);
	} else {
		c->msg.msg_iov = c->k.iov + c->iov_pos;
		c->msg.msg_iovlen = (size_t)(c->k.iovcnt - c->iov_pos);
		io_uring_prep_sendmsg(s, c->k.fd, &c->msg, flags);
	}
	issued(c, s, OP_SEND, mono_ms() + (int64_t)knot.opt.send_s * 1000);
}

static void start_read(struct econn *c)
{
	if (!c->chunk && !(c->chunk = malloc(CHUNK))) {
		conn_close(c);
		return;
	}
	uint64_t n = c->k.big_end - c->k.big_off;
	struct io_uring_sqe *s = sqe_get(c->loop);
	io_uring_prep_read(s, c->k.big->fd, c->chunk, n > CHUNK ? CHUNK : (unsigned)n,
	                   c->k.big_off);
	issued(c, s, OP_READ, mono_ms() + (int64_t)knot.opt.send_s * 1000);
}

static void start_bsend(struct econn *c)
{
	struct io_uring_sqe *s = sqe_get(c->loop);
	io_uring_prep_send(s, c->k.fd, c->chunk + c->chunk_sent, c->chunk_len - c->chunk_sent,
	                   MSG_NOSIGNAL);
	issued(c, s, OP_BSEND, mono_ms() + (int64_t)knot.opt.send_s * 1000);
}

/* the last response is out and the connection ends */
static void finish(struct econn *c)
{
	if (!c->k.linger) {
		conn_close(c);
		return;
	}
	/* drain what the client still sends, so our answer is not reset */
	shutdown(c->k.fd, SHUT_WR);
	c->k.linger = false;
	c->k.start = c->k.len = 0;
	struct io_uring_sqe *s = sqe_get(c->loop);
	io_uring_prep_recv(s, c->k.fd, c->k.buf, sizeof c->k.buf, 0);
	issued(c, s, OP_LINGER, mono_ms() + 2000);
}

static void drive(struct econn *c)
{
	if (kconn_build(&c->k) > 0) {
		c->iov_pos = 0;
		start_send(c);
	} else if (!c->k.keep_open) {
		finish(c);
	} else {
		start_recv(c);
	}
}

static void sent_all(struct econn *c)
{
	kconn_done(&c->k);
	if (c->k.keep_open)
		drive(c);
	else
		finish(c);
}

static void on_conn(struct econn *c, unsigned op, int res)
{
	bool timed_out = c->timed_out;
	c->timed_out = false;
	c->op = OP_NONE;
	switch (op) {
	case OP_RECV:
		if (res > 0) {
			kconn_received(&c->k, (size_t)res);
			drive(c);
		} else if (timed_out && res == -ECANCELED) {
			kconn_timeout(&c->k);
			c->iov_pos = 0;
			start_send(c);
		} else {
			conn_close(c);
		}
		return;
	case OP_SEND: {
		if (res < 0 || timed_out) {
			conn_close(c);
			return;
		}
		size_t r = (size_t)res;
		struct iovec *iov = c->k.iov;
		while (c->iov_pos < c->k.iovcnt && r >= iov[c->iov_pos].iov_len)
			r -= iov[c->iov_pos++].iov_len;
		if (c->iov_pos < c->k.iovcnt) {
			iov[c->iov_pos].iov_base = (char *)iov[c->iov_pos].iov_base + r;
			iov[c->iov_pos].iov_len -= r;
			start_send(c);
		} else if (c->k.big) {
			start_read(c);
		} else {
			sent_all(c);
		}
		return;
	}
	case OP_READ:
		if (res <= 0 || timed_out) { /* the file shrank: the length is a lie now */
			conn_close(c);
			return;
		}
		c->chunk_len = (uint32_t)res;
		c->chunk_sent = 0;
		start_bsend(c);
		return;
	case OP_BSEND:
		if (res < 0 || timed_out) {
			conn_close(c);
			return;
		}
		c->chunk_sent += (uint32_t)res;
		if (c->chunk_sent < c->chunk_len) {
			start_bsend(c);
			return;
		}
		c->k.big_off += c->chunk_len;
		if (c->k.big_off < c->k.big_end)
			start_read(c);
		else
			sent_all(c);
		return;
	case OP_LINGER:
		if (res > 0 && !timed_out && mono_ms() < c->deadline) {
			struct io_uring_sqe *s = sqe_get(c->loop);
			io_uring_prep_recv(s, c->k.fd, c->k.buf, sizeof c->k.buf, 0);
			issued(c, s, OP_LINGER, c->deadline);
		} else {
			conn_close(c);
		}
		return;
	}
}

static void on_accept(struct loop *l, int res, unsigned flags)
{
	if (!(flags & IORING_CQE_F_MORE))
		arm_accept(l); /* multishot ended (an error, or the kernel's choice) */
	if (res < 0) {
		if (res == -EMFILE || res == -ENFILE)
			knot_accept_overload(l->lfd);
		return;
	}
	int fd = res;
	if (!knot_admit(fd))
		return;
	struct econn *c = l->free;
	if (c) {
		l->free = c->next_free;
		l->nfree--;
	} else if (!(c = aligned_alloc(64, (sizeof *c + 63) & ~(size_t)63))) {
		knot_turn_away(fd);
		return;
	}
	if (l->nconns == l->cap) {
		int cap = l->cap ? l->cap * 2 : 1024;
		struct econn **n = realloc(l->conns, (size_t)cap * sizeof *n);
		if (!n) {
			free(c);
			knot_turn_away(fd);
			return;
		}
		l->conns = n;
		l->cap = cap;
	}
	kconn_init(&c->k, fd);
	c->loop = l;
	c->op = OP_NONE;
	c->timed_out = false;
	c->iov_pos = 0;
	memset(&c->msg, 0, sizeof c->msg);
	c->chunk = NULL;
	c->idx = l->nconns;
	l->conns[l->nconns++] = c;
	/* TCP_NODELAY comes from the listener (Linux copies it on accept) */
	start_recv(c);
}

static void on_tick(struct loop *l)
{
	int64_t now = mono_ms();
	for (int i = 0; i < l->nconns; i++) {
		struct econn *c = l->conns[i];
		if (c->op != OP_NONE && !c->timed_out && now >= c->deadline) {
			c->timed_out = true;
			struct io_uring_sqe *s = sqe_get(l);
			io_uring_prep_cancel64(s, (uint64_t)(uintptr_t)c | c->op, 0);
			io_uring_sqe_set_data64(s, OP_CANCEL);
			s->flags |= IOSQE_CQE_SKIP_SUCCESS;
		}
	}
	arm_tick(l);
}

static int ring_init(struct io_uring *ring)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	p.cq_entries = CQ_ENTRIES;
	if (io_uring_queue_init_params(RING_ENTRIES, ring, &p) == 0)
		return 0;
	memset(&p, 0, sizeof p); /* older kernels */
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = CQ_ENTRIES;
	return io_uring_queue_init_params(RING_ENTRIES, ring, &p);
}

static void *loop_main(void *arg)
{
	struct loop *l = arg;
	int r = ring_init(&l->ring);
	if (r < 0) {
		fprintf(stderr, "knot-events: io_uring_queue_init: %s\n", strerror(-r));
		exit(1);
	}
	l->tick.tv_sec = 0;
	l->tick.tv_nsec = TICK_MS * 1000000L;
	arm_accept(l);
	arm_tick(l);
	for (;;) {
		r = io_uring_submit_and_wait(&l->ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			fprintf(stderr, "knot-events: io_uring_submit_and_wait: %s\n", strerror(-r));
			exit(1);
		}
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&l->ring, head, cqe) {
			uint64_t ud = cqe->user_data;
			unsigned op = (unsigned)(ud & OP_MASK);
			struct econn *c = (struct econn *)(uintptr_t)(ud & ~(uint64_t)OP_MASK);
			seen++;
			if (c)
				on_conn(c, op, cqe->res);
			else if (op == OP_ACCEPT)
				on_accept(l, cqe->res, cqe->flags);
			else if (op == OP_TICK)
				on_tick(l);
			/* OP_CANCEL / OP_CLOSE failures: nothing to do */
		}
		io_uring_cq_advance(&l->ring, seen);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	knot_parse_options(argc, argv, &knot.opt, "knot-events",
	                   "event loops, one kernel thread and listener each (auto: one per CPU)");
	int n = knot.opt.threads;
	if (!n) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);
		n = c > 0 ? (int)c : 1;
	}
	knot_setup();
	struct loop *loops = calloc((size_t)n, sizeof *loops);
	if (!loops) {
		perror("knot-events");
		return 1;
	}
	loops[0].lfd = knot_listen(true, knot.opt.port);
	int port = knot_announce(loops[0].lfd);
	for (int i = 1; i < n; i++)
		loops[i].lfd = knot_listen(true, port);
	for (int i = 0; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, loop_main, &loops[i]) != 0) {
			perror("knot-events: pthread_create");
			return 1;
		}
		pthread_detach(t);
	}
	knot_wait_for_signal();
	atomic_store(&knot.stopping, 1);
	log_flush();
	exit(0);
}
