/* io.c: the blocking calls on descriptors — read, write and their vector
 * and positional forms, the socket calls, open, fsync, statx — each as an
 * io_uring operation that parks only the calling user thread.
 *
 * On a kernel thread that is not a user thread (or before the runtime
 * runs) each call is the plain system call.  So it is on an O_NONBLOCK
 * descriptor, which answers at once (io_uring would only say -EAGAIN the
 * same way, a round trip later); a poll is armed on one all the same.
 * The calls are cancellation points. */
/* Both names of each large-file pair are defined here (off_t is 64 bits
 * on x86-64 either way), so the headers must not rename one into the
 * other. */
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fdtable.h"
#include "debug.h"
#include "lt_io.h"
#include "timespec.h"

/* timeout: UINT64_MAX to take the socket's own for dir; poll: arm the
 * op on an O_NONBLOCK fd too */
static struct io_uring_sqe *begin(const char *call, struct lt_io *io, int fd,
                                  enum lt_io_dir dir, uint64_t timeout, bool poll)
{
	struct lt_thread *t = lt_self();
	/* runtime locks held: a signal handler interrupted the runtime
	 * itself (a handler's write to a self-pipe, say); parking there
	 * would switch away in the middle of a queue update */
	if (cp_unlikely(cp_in_runtime()))
		return NULL;
	if (!t) {
		if (lt_main)
			LT_DEBUG(call, "fd %d: called on a kernel thread that is not a user thread; "
			         "plain system call", fd);
		return NULL;
	}
	lt_testcancel(t);
	cp_safe_point(); /* fast paths too: a loop of nonblocking calls yields */
	io->poll = poll;
	io->f = lt_fd_get(fd);
	if (!poll && io->f && lt_fd_nonblocking(io->f, fd))
		return NULL; /* the plain call answers at once */
	if (io->f) {
		lt_fd_begin(io->f, &io->op);
		if (timeout == UINT64_MAX)
			timeout = dir == LT_IO_RCV ? io->f->rcvtimeo_ns
			        : dir == LT_IO_SND ? io->f->sndtimeo_ns : 0;
	}
	if (timeout == UINT64_MAX)
		timeout = 0;
	return cp_io_prep(&io->op, timeout);
}

struct io_uring_sqe *lt_io_begin_at(const char *call, struct lt_io *io, int fd,
                                    enum lt_io_dir dir)
{
	return begin(call, io, fd, dir, UINT64_MAX, false);
}

struct io_uring_sqe *lt_io_begin_poll_at(const char *call, struct lt_io *io, int fd,
                                         uint64_t timeout_ns)
{
	return begin(call, io, fd, LT_IO_NONE, timeout_ns, true);
}

long lt_io_finish(struct lt_io *io)
{
	struct lt_thread *self = (struct lt_thread *)io->op.thread;
	/* a signal handler cuts short I/O on sockets, pipes and terminals
	 * (with SA_RESTART, it lets it be), and a wait for readiness always;
	 * a regular file's I/O is never interrupted, as in the kernel */
	unsigned by = io->poll ? lt_interruptible(self) | CP_INTR_SIGNAL_IO
	            : io->f && io->f->kind == LT_FD_SEEKABLE ? lt_cancellable(self)
	                                              : lt_interruptible_io(self);
	/* an SA_RESTART handler cuts it short too, and it goes out again:
	 * I/O without a timeout of its own (which makes it EINTR, as in the
	 * kernel) and not a connect (a second one would say EALREADY) */
	struct io_uring_sqe again;
	if ((by & CP_INTR_SIGNAL_IO) && !io->poll && io->op.pending == 1 &&
	    io->op.sqe->opcode != IORING_OP_CONNECT &&
	    __atomic_load_n(&lt_handlers_installed, __ATOMIC_RELAXED)) {
		again = *io->op.sqe;
		by |= CP_INTR_SIGNAL_RESTART;
	}
	int res;
	for (;;) {
		res = cp_io_wait(&io->op, by);
		if (res != -ECANCELED || !(io->op.signalled & CP_INTR_SIGNAL_RESTART) ||
		    io->op.timed_out || (self->cancel_pending && lt_cancellable(self)))
			break;
		cp_io_release(&io->op);
		lt_interrupted(self); /* the handler, then the same operation */
		struct io_uring_sqe *sqe = cp_io_prep(&io->op, 0);
		*sqe = again;
	}
	if (io->f)
		lt_fd_end(io->f, &io->op);
	cp_io_release(&io->op);
	if (res == -ECANCELED) {
		if (io->op.timed_out) {
			res = -EAGAIN;       /* a socket timeout expired */
		} else if (self->cancel_pending && lt_cancellable(self)) {
			lt_testcancel(self); /* pthread_cancel: acts, never returns */
		} else if (io->op.signalled) {
			lt_interrupted(self);
			res = -EINTR;
		} else {
			res = -EBADF;        /* closed under us */
		}
	}
	return res;
}

long lt_io_ret(long res)
{
	if (res < 0) {
		errno = (int)-res;
		return -1;
	}
	return res;
}

/* send/sendmsg without MSG_NOSIGNAL on a broken socket: the operation
 * ran with the signal suppressed, so raise it here, in the caller's
 * context, exactly as the plain call would have.  So for write() and
 * writev() on a socket, which go out as a send and a sendmsg
 * (lt_ring_read).  On anything else they need no help: io_uring runs
 * them inline, or retries them from poll in the submitting worker, and
 * the kernel raises SIGPIPE there itself. */
static CP_COLD void raise_sigpipe(void)
{
	raise(SIGPIPE); /* out of line: a C library call (sched/linked.c) */
}

static long with_sigpipe(long res, int flags)
{
	if (cp_unlikely(res == -EPIPE) && !(flags & MSG_NOSIGNAL))
		raise_sigpipe();
	return res;
}

#define RAW(...) syscall(__VA_ARGS__)

/* Reads of a seekable file first try the page cache: a preadv2 with
 * RWF_NOWAIT copies what is cached at once, with no park and no ring
 * round trip, so a thread whose data is cached keeps running (a
 * pipeline's reader then feeds its pool at once instead of waiting for
 * its worker to come back to the ring).  Only what the kernel would have
 * to fetch goes through io_uring.  -EAGAIN: take the ring.  off -1: the
 * file position, which the call advances. */
static long cached_read(int fd, void *buf, size_t n, int64_t off)
{
	if (cp_unlikely(cp_in_runtime()) || !lt_self() || n == 0)
		return -EAGAIN;
	struct lt_fd *f = lt_fd_get(fd);
	if (!f || f->no_cached_read || !lt_fd_seekable(f, fd) || lt_fd_nonblocking(f, fd))
		return -EAGAIN;
	lt_testcancel(lt_self());
	cp_safe_point();
	struct iovec v = { .iov_base = buf, .iov_len = n };
	long r = RAW(SYS_preadv2, fd, &v, 1, (long)off, (long)((uint64_t)off >> 32), RWF_NOWAIT);
	if (r >= 0)
		return r;
	if (errno == EOPNOTSUPP)
		f->no_cached_read = 1; /* this file cannot: do not ask again */
	return -EAGAIN;
}

/* The rest of a read that found only part of its range cached: a regular
 * file returns less than asked only at its end, and callers rely on it.
 * A short cached read is either that end (the next cached read says 0)
 * or data not cached yet (it says -EAGAIN: the ring fetches the rest). */
static ssize_t finish_cached(ssize_t got, size_t n, ssize_t (*more)(int, void *, size_t, off_t),
                             int fd, char *buf, int64_t off)
{
	int saved = errno;
	while (got > 0 && (size_t)got < n) {
		long c = cached_read(fd, buf + got, n - (size_t)got, off < 0 ? -1 : off + got);
		if (c == 0)
			break; /* the end of the file */
		if (c == -EAGAIN) {
			ssize_t rest = more(fd, buf + got, n - (size_t)got, off < 0 ? -1 : off + got);
			if (rest > 0)
				got += rest;
			break;
		}
		got += c;
	}
	errno = saved;
	return got;
}


CP_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	long c = cached_read(fd, buf, n, -1);
	if (c != -EAGAIN)
		return finish_cached(c, n, lt_ring_read, fd, buf, -1);
	return lt_ring_read(fd, buf, n, -1);
}

/* read(2) and write(2) on a socket go to the ring as a recv and a send
 * (readv and writev as a recvmsg and a sendmsg): what the kernel's calls
 * do there, while io_uring's file read and write path costs a socket
 * more (its nowait check, and an fsnotify hook on completion: 0.87 us of
 * an echo round trip at 10,000 connections, perf, of which 0.39 came
 * back where the same cache misses were then taken).  A descriptor
 * cached as a socket that is no longer one (closed and reused behind the
 * library's back, by a C library call that does not come here) says
 * ENOTSOCK: it is asked again, and the call goes out as a read or a
 * write. */
static bool as_socket_op(struct lt_io *io, int fd, off_t off)
{
	return off < 0 && io->f && lt_fd_socket(io->f, fd);
}

static bool socket_op_missed(struct lt_io *io, bool as_socket, long res)
{
	if (cp_likely(res != -ENOTSOCK || !as_socket))
		return false;
	lt_fd_kind_unknown(io->f);
	return true;
}

ssize_t lt_ring_read(int fd, void *buf, size_t n, off_t off)
{
	unsigned len = (unsigned)(n > UINT32_MAX ? UINT32_MAX : n);
	for (;;) {
		struct lt_io io;
		struct io_uring_sqe *sqe = lt_io_begin_at(off < 0 ? "read" : "pread", &io, fd,
		                                          off < 0 ? LT_IO_RCV : LT_IO_NONE);
		if (!sqe)
			return off < 0 ? RAW(SYS_read, fd, buf, n) : RAW(SYS_pread64, fd, buf, n, off);
		bool as_socket = as_socket_op(&io, fd, off);
		if (as_socket)
			io_uring_prep_recv(sqe, fd, buf, len, 0);
		else
			io_uring_prep_read(sqe, fd, buf, len, off < 0 ? (uint64_t)-1 : (uint64_t)off);
		long res = lt_io_finish(&io);
		if (!socket_op_missed(&io, as_socket, res))
			return lt_io_ret(res);
	}
}

static long write_op(int fd, const void *buf, size_t n, int64_t off)
{
	unsigned len = (unsigned)(n > UINT32_MAX ? UINT32_MAX : n);
	for (;;) {
		struct lt_io io;
		struct io_uring_sqe *sqe = lt_io_begin(&io, fd, LT_IO_SND);
		if (!sqe)
			return off < 0 ? RAW(SYS_write, fd, buf, n) : RAW(SYS_pwrite64, fd, buf, n, off);
		bool as_socket = as_socket_op(&io, fd, off);
		if (as_socket) /* the signal is raised here, as send() does */
			io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
		else
			io_uring_prep_write(sqe, fd, buf, len, (uint64_t)off);
		long res = lt_io_finish(&io);
		if (!socket_op_missed(&io, as_socket, res))
			return lt_io_ret(as_socket ? with_sigpipe(res, 0) : res);
	}
}

CP_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	return write_op(fd, buf, n, -1);
}

/* io_uring ignores the offset on pipes and sockets; the calls must not */
static bool positional_ok(int fd, int64_t off)
{
	if (off < 0) {
		errno = EINVAL;
		return false;
	}
	struct lt_fd *f = lt_fd_get(fd);
	if (f && !lt_fd_seekable(f, fd)) {
		errno = ESPIPE;
		return false;
	}
	return true;
}

CP_EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	if (!positional_ok(fd, off))
		return -1;
	long c = cached_read(fd, buf, n, off);
	if (c != -EAGAIN)
		return finish_cached(c, n, lt_ring_read, fd, buf, off);
	return lt_ring_read(fd, buf, n, off);
}
CP_EXPORT ssize_t pread64(int fd, void *buf, size_t n, off_t off) __attribute__((alias("pread")));

CP_EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (!positional_ok(fd, off))
		return -1;
	return write_op(fd, buf, n, off);
}
CP_EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) __attribute__((alias("pwrite")));

static long vec_op(int fd, const struct iovec *iov, int cnt, int64_t off, bool out)
{
	if (cnt < 0 || cnt > IOV_MAX) {
		errno = EINVAL;
		return -1;
	}
	if (!out && cnt == 1) { /* one buffer: a read like any other */
		long c = cached_read(fd, iov[0].iov_base, iov[0].iov_len, off);
		if (c != -EAGAIN)
			return finish_cached(c, iov[0].iov_len, lt_ring_read, fd, iov[0].iov_base, off);
	}
	for (;;) {
		struct lt_io io;
		struct io_uring_sqe *sqe = lt_io_begin(&io, fd, out ? LT_IO_SND : LT_IO_RCV);
		if (!sqe) {
			if (off < 0)
				return RAW(out ? SYS_writev : SYS_readv, fd, iov, cnt);
			return RAW(out ? SYS_pwritev : SYS_preadv, fd, iov, cnt, (long)off, 0L);
		}
		/* on a socket, a sendmsg or recvmsg (see lt_ring_read) */
		bool as_socket = as_socket_op(&io, fd, off);
		struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt };
		if (as_socket && out)
			io_uring_prep_sendmsg(sqe, fd, &msg, MSG_NOSIGNAL);
		else if (as_socket)
			io_uring_prep_recvmsg(sqe, fd, &msg, 0);
		else if (out)
			io_uring_prep_writev(sqe, fd, iov, (unsigned)cnt, (uint64_t)off);
		else
			io_uring_prep_readv(sqe, fd, iov, (unsigned)cnt, (uint64_t)off);
		long res = lt_io_finish(&io);
		if (!socket_op_missed(&io, as_socket, res))
			return lt_io_ret(as_socket && out ? with_sigpipe(res, 0) : res);
	}
}

CP_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	return vec_op(fd, iov, cnt, -1, false);
}

CP_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	return vec_op(fd, iov, cnt, -1, true);
}

CP_EXPORT ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
	if (!positional_ok(fd, off))
		return -1;
	return vec_op(fd, iov, cnt, off, false);
}
CP_EXPORT ssize_t preadv64(int fd, const struct iovec *iov, int cnt, off_t off)
	__attribute__((alias("preadv")));

CP_EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	if (!positional_ok(fd, off))
		return -1;
	return vec_op(fd, iov, cnt, off, true);
}
CP_EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
	__attribute__((alias("pwritev")));

/* With flags (RWF_NOWAIT, RWF_HIPRI...) the caller asked for the kernel's
 * own behaviour: a plain call. */
CP_EXPORT ssize_t preadv2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	if (flags) {
		LT_DEBUG("preadv2", "fd %d: flags 0x%x; plain system call", fd, flags);
		return RAW(SYS_preadv2, fd, iov, cnt, (long)off, (long)((uint64_t)off >> 32), flags);
	}
	return off == -1 ? readv(fd, iov, cnt) : preadv(fd, iov, cnt, off);
}
CP_EXPORT ssize_t preadv64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
	__attribute__((alias("preadv2")));

CP_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	if (flags) {
		LT_DEBUG("pwritev2", "fd %d: flags 0x%x; plain system call", fd, flags);
		return RAW(SYS_pwritev2, fd, iov, cnt, (long)off, (long)((uint64_t)off >> 32), flags);
	}
	return off == -1 ? writev(fd, iov, cnt) : pwritev(fd, iov, cnt, off);
}
CP_EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
	__attribute__((alias("pwritev2")));

CP_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	struct lt_io io;
	struct io_uring_sqe *sqe = lt_io_begin(&io, fd, LT_IO_RCV);
	if (!sqe)
		return RAW(SYS_recvfrom, fd, buf, n, flags, NULL, NULL);
	io_uring_prep_recv(sqe, fd, buf, n, flags);
	return lt_io_ret(lt_io_finish(&io));
}

CP_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	struct lt_io io;
	struct io_uring_sqe *sqe = lt_io_begin(&io, fd, LT_IO_RCV);
	if (!sqe)
		return RAW(SYS_recvmsg, fd, msg, flags);
	io_uring_prep_recvmsg(sqe, fd, msg, (unsigned)flags);
	return lt_io_ret(lt_io_finish(&io));
}

CP_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr,
                           socklen_t *addrlen)
{
	if (!addr)
		return recv(fd, buf, n, flags);
	if (!lt_self())
		return RAW(SYS_recvfrom, fd, buf, n, flags, addr, addrlen);
	struct iovec iov = { buf, n };
	struct msghdr msg = {
		.msg_name = addr,
		.msg_namelen = addrlen ? *addrlen : 0,
		.msg_iov = &iov,
		.msg_iovlen = 1,
	};
	ssize_t r = recvmsg(fd, &msg, flags);
	if (r >= 0 && addrlen)
		*addrlen = msg.msg_namelen;
	return r;
}

/* The first message parks like recvmsg; the rest are taken only if they
 * are already there, which is what the kernel's call returns too.  A
 * timeout (rarely used, and measured only between messages) is left to
 * the kernel. */
CP_EXPORT int recvmmsg(int fd, struct mmsghdr *v, unsigned n, int flags, struct timespec *tmo)
{
	if (tmo || n == 0) {
		if (tmo)
			LT_DEBUG("recvmmsg", "fd %d: with a timeout; plain system call", fd);
		return (int)RAW(SYS_recvmmsg, fd, v, n, flags, tmo);
	}
	ssize_t r = recvmsg(fd, &v[0].msg_hdr, flags & ~MSG_WAITFORONE);
	if (r < 0)
		return -1;
	v[0].msg_len = (unsigned)r;
	if (n == 1)
		return 1;
	long more = syscall(SYS_recvmmsg, fd, v + 1, n - 1, (flags & ~MSG_WAITFORONE) | MSG_DONTWAIT,
	                    NULL);
	return 1 + (int)(more > 0 ? more : 0); /* an error there is seen next call */
}

CP_EXPORT int sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags)
{
	unsigned i;
	for (i = 0; i < n; i++) {
		ssize_t r = sendmsg(fd, &v[i].msg_hdr, flags);
		if (r < 0)
			return i > 0 ? (int)i : -1;
		v[i].msg_len = (unsigned)r;
	}
	return (int)i;
}

CP_EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	struct lt_io io;
	struct io_uring_sqe *sqe = lt_io_begin(&io, fd, LT_IO_SND);
	if (!sqe)
		return RAW(SYS_sendto, fd, buf, n, flags, NULL, 0);
	io_uring_prep_send(sqe, fd, buf, n, flags | MSG_NOSIGNAL);
	return lt_io_ret(with_sigpipe(lt_io_finish(&io), flags));
}

CP_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct lt_io io;
	struct io_uring_sqe *sqe = lt_io_begin(&io, fd, LT_IO_SND);
	if (!sqe)
		return RAW(SYS_sendmsg, fd, msg, flags);
	io_uring_prep_sendmsg(sqe, fd, msg, (unsigned)(flags | MSG_NOSIGNAL));
	return lt_io_ret(with_sigpipe(lt_io_finish(&io), flags));
}

CP_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                         const struct sockaddr *addr, socklen_t addrlen)
{
	if (!addr)
		return send(fd, buf, n, flags);
	if (!lt_self())
		return RAW(SYS_sendto, fd, buf, n, flags, addr, addrlen);
	struct iovec iov = { (void *)buf, n };
	struct msghdr msg = {
		.msg_name = (void *)addr,
		.msg_namelen = addrlen,
		.msg_iov = &iov,
		.msg_iovlen = 1,
	};
	return sendmsg(fd, &msg, flags);
}

CP_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	struct lt_io io;
	struct io_uring_sqe *sqe = lt_io_begin(&io, fd, LT_IO_RCV);
	if (!sqe)
		return lt_fd_fresh_socket((int)RAW(SYS_accept4, fd, addr, addrlen, flags),
		                          (flags & SOCK_NONBLOCK) != 0);
	io_uring_prep_accept(sqe, fd, addr, addrlen, flags);
	/* an acceptor runs as soon as its connection is there, as the
	 * kernel's scheduler runs a thread that slept, not behind every
	 * connection's thread: each accept waited a turn of the whole queue
	 * (varnishd under a burst of 1,000 connects took 150 a second) */
	io.op.wake_first = 1;
	return lt_fd_fresh_socket((int)lt_io_ret(lt_io_finish(&io)), (flags & SOCK_NONBLOCK) != 0);
}

CP_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	return accept4(fd, addr, addrlen, 0);
}

CP_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct lt_io io;
	struct io_uring_sqe *sqe = lt_io_begin(&io, fd, LT_IO_SND);
	if (!sqe)
		return (int)RAW(SYS_connect, fd, addr, len);
	io_uring_prep_connect(sqe, fd, addr, len);
	long r = lt_io_finish(&io);
	if (r == -EAGAIN && io.op.timed_out)
		r = -EINPROGRESS; /* what connect says when SO_SNDTIMEO expires */
	return (int)lt_io_ret(r);
}

/* Socket timeouts become linked timeouts; the kernel keeps its copy too,
 * for the plain calls of kernel threads that are not user threads. */
CP_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	int r = (int)RAW(SYS_setsockopt, fd, level, name, val, len);
	if (r == 0 && level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO) &&
	    len >= sizeof(struct timeval)) {
		const struct timeval *tv = val;
		uint64_t ns = cp_tv_to_ns(tv); /* tv_sec < 0: UINT64_MAX, none */
		struct lt_fd *f = lt_fd_get(fd);
		if (f) {
			cp_spin_lock(&f->lock);
			if (name == SO_RCVTIMEO)
				f->rcvtimeo_ns = ns;
			else
				f->sndtimeo_ns = ns;
			cp_spin_unlock(&f->lock);
		}
	}
	return r;
}

CP_EXPORT int close(int fd)
{
	if (!lt_main)
		return (int)RAW(SYS_close, fd);
	return lt_fd_close(fd);
}

static int open_op(int dfd, const char *path, int flags, mode_t mode)
{
	struct lt_io io;
	struct io_uring_sqe *sqe = lt_io_begin(&io, -1, LT_IO_NONE);
	enum lt_fd_nonblock nb = flags & O_NONBLOCK ? LT_NONBLOCK_YES : LT_NONBLOCK_NO;
	if (!sqe)
		return lt_fd_fresh_known((int)RAW(SYS_openat, dfd, path, flags, mode), LT_FD_UNKNOWN,
		                         nb);
	io_uring_prep_openat(sqe, dfd, path, flags, mode);
	return lt_fd_fresh_known((int)lt_io_ret(lt_io_finish(&io)), LT_FD_UNKNOWN, nb);
}

CP_EXPORT int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = lt_open_mode(flags, ap);
	va_end(ap);
	return open_op(AT_FDCWD, path, flags, mode);
}
CP_EXPORT int open64(const char *path, int flags, ...) __attribute__((alias("open")));

CP_EXPORT int openat(int dfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = lt_open_mode(flags, ap);
	va_end(ap);
	return open_op(dfd, path, flags, mode);
}
CP_EXPORT int openat64(int dfd, const char *path, int flags, ...) __attribute__((alias("openat")));

CP_EXPORT int creat(const char *path, mode_t mode)
{
	return open_op(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
CP_EXPORT int creat64(const char *path, mode_t mode) __attribute__((alias("creat")));

static int sync_op(int fd, unsigned flags)
{
	struct lt_io io;
	struct io_uring_sqe *sqe = lt_io_begin(&io, fd, LT_IO_NONE);
	if (!sqe)
		return (int)RAW(flags ? SYS_fdatasync : SYS_fsync, fd);
	io_uring_prep_fsync(sqe, fd, flags);
	return (int)lt_io_ret(lt_io_finish(&io));
}

CP_EXPORT int fsync(int fd)
{
	return sync_op(fd, 0);
}

CP_EXPORT int fdatasync(int fd)
{
	return sync_op(fd, IORING_FSYNC_DATASYNC);
}

/* Path lookups can wait on the disk; fstat on an open fd does not, so it
 * stays a plain call. */
CP_EXPORT int statx(int dfd, const char *path, int flags, unsigned mask, struct statx *buf)
{
	struct lt_io io;
	struct io_uring_sqe *sqe = lt_io_begin(&io, -1, LT_IO_NONE);
	if (!sqe)
		return (int)RAW(SYS_statx, dfd, path, flags, mask, buf);
	io_uring_prep_statx(sqe, dfd, path, flags, mask, buf);
	return (int)lt_io_ret(lt_io_finish(&io));
}
