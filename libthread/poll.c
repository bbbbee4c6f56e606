/* poll.c: poll, ppoll, select, pselect, epoll_wait and epoll_pwait that
 * park only the calling user thread.
 *
 * Each first asks the kernel without waiting (a busy loop's common case
 * costs one syscall).  If nothing is ready, poll arms one IORING_OP_POLL_ADD
 * per descriptor and sleeps on a wait queue until the first fires or the
 * deadline passes (the timer heap keeps it to the millisecond); the rest
 * are then cancelled and drained, and a last non-blocking poll reports
 * exact revents.  epoll_wait arms one POLL_ADD on the epoll descriptor.
 * Signal masks given to ppoll/pselect/epoll_pwait apply to the
 * non-blocking checks only: signals belong to workers (README). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdtable.h"
#include "lt_io.h"
#include "timespec.h"
#include "rtmem.h"

#define STACK_ITEMS 16

struct poll_wait;

struct poll_item {
	struct cp_io_op op;
	struct poll_wait *pw;
	struct lt_fd *f;
	bool completed;            /* its CQE is in (set once, atomically) */
};

struct poll_wait {
	cp_spinlock lock;
	struct cp_waitq q;
	unsigned outstanding;      /* CQEs still to come */
	bool fired;
};

/* Sets too big for the stack go to the heap, out of line: a call into
 * the C library moves its caller to a big chunk on a linked stack
 * (sched/linked.c). */
static CP_COLD void *heap_zeroed(size_t n, size_t size)
{
	return cp_rt_calloc(n, size);
}

static CP_COLD void heap_free(void *p)
{
	cp_rt_free(p);
}

static void item_done(struct cp_io_op *op)
{
	struct poll_item *it = cp_container_of(op, struct poll_item, op);
	struct poll_wait *pw = it->pw;
	cp_spin_lock(&pw->lock);
	__atomic_store_n(&it->completed, true, __ATOMIC_RELEASE);
	pw->outstanding--;
	pw->fired = true;
	cp_wake_all(&pw->q);
	cp_spin_unlock(&pw->lock);
}

static uint64_t deadline_after_ns(int64_t ns)
{
	return ns < 0 ? CP_NO_DEADLINE : cp_ns_add_sat(cp_now_ns(), (uint64_t)ns);
}

/* A timeout in ms as poll and epoll_wait take it (< 0: none) in ns (-1:
 * none). */
static int64_t ms_timeout_ns(int ms)
{
	return ms < 0 ? -1 : (int64_t)ms * (int64_t)CP_NS_PER_MS;
}

/* A timeout as ppoll, pselect and epoll_pwait2 take it (NULL: none) in
 * ns: -1 none, -2 invalid (EINVAL). */
static int64_t ts_timeout_ns(const struct timespec *ts)
{
	if (!ts)
		return -1;
	if (!cp_ts_valid_rel(ts))
		return -2;
	uint64_t ns = cp_ts_to_ns_sat(ts);
	return ns > INT64_MAX ? -1 : (int64_t)ns; /* 292 years: none */
}

/* The non-blocking checks retry EINTR: they never wait, and a worker
 * looping over them without switching can be poked by a thief (SIGURG),
 * which would otherwise surface as a spurious EINTR. */
static int raw_poll(struct pollfd *fds, nfds_t n, const sigset_t *mask)
{
	struct timespec zero = { 0, 0 };
	int r;
	do
		r = (int)syscall(SYS_ppoll, fds, n, &zero, mask, mask ? (long)(_NSIG / 8) : 0L);
	while (r < 0 && errno == EINTR);
	return r;
}

static int raw_epoll_check(int epfd, struct epoll_event *ev, int max, const sigset_t *mask)
{
	int r;
	do
		r = (int)syscall(SYS_epoll_pwait, epfd, ev, max, 0, mask, (long)(_NSIG / 8));
	while (r < 0 && errno == EINTR);
	return r;
}

/* The heart of poll/ppoll/select: timeout_ns < 0 waits forever; also
 * woken for `also` (CP_INTR_*: sigwait's signals). */
static int poll_ns_for(struct pollfd *fds, nfds_t n, int64_t timeout_ns, const sigset_t *mask,
                       unsigned also)
{
	struct lt_thread *self = lt_self();
	if (!self) {
		struct timespec ts = cp_ns_to_ts((uint64_t)timeout_ns);
		return (int)syscall(SYS_ppoll, fds, n, timeout_ns < 0 ? NULL : &ts, mask,
		                    mask ? (long)(_NSIG / 8) : 0L);
	}
	lt_testcancel(self);
	cp_safe_point(); /* poll(0) in a loop yields too */
	int r = raw_poll(fds, n, mask);
	if (r != 0 || timeout_ns == 0)
		return r;
	uint64_t deadline = deadline_after_ns(timeout_ns);

	struct poll_item stack_items[STACK_ITEMS];
	struct poll_item *items = n <= STACK_ITEMS ? stack_items : heap_zeroed(n, sizeof *items);
	if (!items) {
		errno = ENOMEM;
		return -1;
	}
	struct poll_wait pw = { CP_SPINLOCK_INIT, CP_WAITQ_INIT, 0, false };
	nfds_t armed = 0;
	for (nfds_t i = 0; i < n; i++) {
		if (fds[i].fd < 0)
			continue;
		struct poll_item *it = &items[armed];
		it->pw = &pw;
		it->completed = false;
		it->f = lt_fd_get(fds[i].fd);
		if (it->f)
			lt_fd_begin(it->f, &it->op);
		struct io_uring_sqe *sqe = cp_io_prep_cb(&it->op, item_done);
		io_uring_prep_poll_add(sqe, fds[i].fd, (unsigned)(fds[i].events | POLLERR | POLLHUP));
		pw.outstanding++;
		armed++;
	}

	int e = 0;
	cp_spin_lock(&pw.lock);
	while (!pw.fired && e == 0) {
		struct cp_waiter w;
		e = cp_wait(&pw.q, &pw.lock, &w, deadline, lt_interruptible(self) | also);
		cp_spin_lock(&pw.lock);
	}
	/* cancel whatever has not fired and wait until every CQE is in:
	 * each item lives in this frame.  One whose CQE is in needs no
	 * cancel: a cancel's request must be turned into an SQE by the op's
	 * worker before the op may go (cp_io_release), which cost a poll
	 * that fired a kick and a yield or more (Apache under the shim, whose
	 * threads poll one socket at a time: 7.8 yields per request) */
	cp_spin_unlock(&pw.lock);
	for (nfds_t i = 0; i < armed; i++)
		if (!__atomic_load_n(&items[i].completed, __ATOMIC_ACQUIRE))
			cp_io_cancel(&items[i].op); /* completing meanwhile: harmless */
	cp_spin_lock(&pw.lock);
	while (pw.outstanding) {
		struct cp_waiter w;
		cp_wait(&pw.q, &pw.lock, &w, CP_NO_DEADLINE, false);
		cp_spin_lock(&pw.lock);
	}
	cp_spin_unlock(&pw.lock);
	for (nfds_t i = 0; i < armed; i++) {
		if (items[i].f) {
			lt_fd_end(items[i].f, &items[i].op);
			lt_fd_await_close(items[i].f);
		}
		cp_io_release(&items[i].op);
	}
	if (items != stack_items)
		heap_free(items);
	r = raw_poll(fds, n, mask);
	if (e == EINTR) {
		lt_interrupted(self);
		if (r == 0) {
			errno = EINTR; /* a handler ran, nothing is ready */
			return -1;
		}
	}
	return r;
}

static int poll_ns(struct pollfd *fds, nfds_t n, int64_t timeout_ns, const sigset_t *mask)
{
	return poll_ns_for(fds, n, timeout_ns, mask, 0);
}

int lt_poll_signalfd(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll_ns_for(&p, 1, ms_timeout_ns(timeout_ms), NULL, CP_INTR_SIGWAIT);
}

CP_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout_ms)
{
	return poll_ns(fds, n, ms_timeout_ns(timeout_ms), NULL);
}

CP_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask)
{
	int64_t ns = ts_timeout_ns(ts);
	if (ns == -2) {
		errno = EINVAL;
		return -1;
	}
	return poll_ns(fds, n, ns, mask);
}

/* select and pselect by way of poll: an fd_set becomes pollfds and back */
static int select_ns(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, int64_t ns,
                     const sigset_t *mask)
{
	if (nfds < 0 || nfds > FD_SETSIZE) {
		errno = EINVAL;
		return -1;
	}
	struct pollfd stack_pfd[64];
	struct pollfd *pfd = nfds <= 64 ? stack_pfd : heap_zeroed((size_t)nfds, sizeof *pfd);
	if (!pfd) {
		errno = ENOMEM;
		return -1;
	}
	nfds_t n = 0;
	for (int fd = 0; fd < nfds; fd++) {
		short ev = 0;
		if (rd && FD_ISSET(fd, rd))
			ev |= POLLIN;
		if (wr && FD_ISSET(fd, wr))
			ev |= POLLOUT;
		if (ex && FD_ISSET(fd, ex))
			ev |= POLLPRI;
		if (ev)
			pfd[n++] = (struct pollfd){ fd, ev, 0 };
	}
	int r = poll_ns(pfd, n, ns, mask);
	if (r >= 0) {
		int bad = 0;
		if (rd)
			FD_ZERO(rd);
		if (wr)
			FD_ZERO(wr);
		if (ex)
			FD_ZERO(ex);
		r = 0;
		for (nfds_t i = 0; i < n; i++) {
			short re = pfd[i].revents;
			if (re & POLLNVAL)
				bad = 1;
			if (rd && (re & (POLLIN | POLLHUP | POLLERR)) && (pfd[i].events & POLLIN)) {
				FD_SET(pfd[i].fd, rd);
				r++;
			}
			if (wr && (re & (POLLOUT | POLLERR)) && (pfd[i].events & POLLOUT)) {
				FD_SET(pfd[i].fd, wr);
				r++;
			}
			if (ex && (re & POLLPRI)) {
				FD_SET(pfd[i].fd, ex);
				r++;
			}
		}
		if (bad) {
			errno = EBADF;
			r = -1;
		}
	}
	if (pfd != stack_pfd)
		heap_free(pfd);
	return r;
}

CP_EXPORT int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
	int64_t ns = -1;
	if (tv) {
		if (!cp_tv_valid_rel(tv)) {
			errno = EINVAL;
			return -1;
		}
		uint64_t t = cp_tv_to_ns(tv);
		ns = t > INT64_MAX ? -1 : (int64_t)t; /* 292 years: none */
	}
	uint64_t start = cp_now_ns();
	int r = select_ns(nfds, rd, wr, ex, ns, NULL);
	if (tv && ns >= 0) { /* Linux reports the time left */
		uint64_t spent = cp_now_ns() - start;
		*tv = cp_ns_to_tv((uint64_t)ns > spent ? (uint64_t)ns - spent : 0);
	}
	return r;
}

CP_EXPORT int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *ts,
                      const sigset_t *mask)
{
	int64_t ns = ts_timeout_ns(ts);
	if (ns == -2) {
		errno = EINVAL;
		return -1;
	}
	return select_ns(nfds, rd, wr, ex, ns, mask);
}

static int epoll_ns(int epfd, struct epoll_event *ev, int max, int64_t ns, const sigset_t *mask)
{
	struct lt_thread *self = lt_self();
	if (!self || max <= 0) {
		int ms = ns < 0 ? -1 : cp_ns_to_ms_ceil((uint64_t)ns);
		return (int)syscall(SYS_epoll_pwait, epfd, ev, max, ms, mask, (long)(_NSIG / 8));
	}
	lt_testcancel(self);
	cp_safe_point(); /* an event loop whose events are always ready yields */
	uint64_t deadline = deadline_after_ns(ns);
	for (;;) {
		int r = raw_epoll_check(epfd, ev, max, mask);
		if (r != 0 || ns == 0)
			return r;
		uint64_t now = cp_now_ns();
		if (deadline != CP_NO_DEADLINE && now >= deadline)
			return 0;
		uint64_t left = deadline == CP_NO_DEADLINE ? 0 : deadline - now;
		struct lt_io io;
		/* armed on an O_NONBLOCK epoll fd too: the flag does not make
		 * epoll_wait answer at once */
		struct io_uring_sqe *sqe = lt_io_begin_poll(&io, epfd, left);
		if (!sqe) /* inside the runtime (a signal handler): wait the plain way */
			return (int)syscall(SYS_epoll_pwait, epfd, ev, max,
			                    left ? cp_ns_to_ms_ceil(left) : -1, mask, (long)(_NSIG / 8));
		io_uring_prep_poll_add(sqe, epfd, POLLIN);
		long res = lt_io_finish(&io);
		if (res < 0 && res != -EAGAIN)
			return (int)lt_io_ret(res);
	}
}

CP_EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout_ms)
{
	return epoll_ns(epfd, ev, max, ms_timeout_ns(timeout_ms), NULL);
}

CP_EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout_ms,
                          const sigset_t *mask)
{
	return epoll_ns(epfd, ev, max, ms_timeout_ns(timeout_ms), mask);
}

CP_EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *ts,
                           const sigset_t *mask)
{
	int64_t ns = ts_timeout_ns(ts);
	if (ns == -2) {
		errno = EINVAL;
		return -1;
	}
	return epoll_ns(epfd, ev, max, ns, mask);
}
