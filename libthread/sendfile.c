/* sendfile.c: sendfile with only the caller parked.  io_uring has no
 * sendfile of its own.
 *
 * From a regular file it reads a chunk and writes it: io_uring runs a
 * splice only on its own worker threads (a splice may block), so the
 * zero-copy way cost two kernel-thread handoffs per chunk, while a
 * page-cache read completes inline; Knot measured the splices at ~1.5x
 * the CPU of the copy.  From anything else it splices through a pipe
 * (input → pipe → destination).  Pipes are pooled: a pipe costs two fds
 * and a syscall to make, and a sendfile needs one only while it runs. */
#undef _FILE_OFFSET_BITS /* defines sendfile and sendfile64 both */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdtable.h"
#include "lt_io.h"
#include "rtmem.h"

#define CHUNK     (64 * 1024)  /* a default pipe holds 64 KiB */
#define POOL_MAX  64

static cp_spinlock pool_lock = CP_SPINLOCK_INIT;
static int pool[POOL_MAX][2];
static int pool_len;

static int pipe_get(int p[2])
{
	cp_spin_lock(&pool_lock);
	if (pool_len) {
		pool_len--;
		p[0] = pool[pool_len][0];
		p[1] = pool[pool_len][1];
		cp_spin_unlock(&pool_lock);
		return 0;
	}
	cp_spin_unlock(&pool_lock);
	if (syscall(SYS_pipe2, p, O_CLOEXEC) < 0)
		return -1;
	/* the runtime's, not the program's: out of its way (sched/rtfd.c) */
	p[0] = cp_rtfd_adopt(p[0]);
	p[1] = cp_rtfd_adopt(p[1]);
	return 0;
}

/* An empty pipe goes back to the pool; one with data left is closed. */
static void pipe_put(int p[2], bool empty)
{
	if (empty) {
		cp_spin_lock(&pool_lock);
		if (pool_len < POOL_MAX) {
			pool[pool_len][0] = p[0];
			pool[pool_len][1] = p[1];
			pool_len++;
			cp_spin_unlock(&pool_lock);
			return;
		}
		cp_spin_unlock(&pool_lock);
	}
	cp_rtfd_release(p[0]);
	cp_rtfd_release(p[1]);
}

/* In the child of fork(): the pooled pipes are the parent's too, and two
 * processes splicing through one pipe would mix their bytes; the lock may
 * have been held by a thread that is gone. */
static void pool_after_fork_child(void)
{
	pool_lock = (cp_spinlock)CP_SPINLOCK_INIT;
	for (int i = 0; i < pool_len; i++) {
		cp_rtfd_release(pool[i][0]);
		cp_rtfd_release(pool[i][1]);
	}
	pool_len = 0;
}

void lt_sendfile_init(void)
{
	cp_at_fork_child(pool_after_fork_child);
}

/* One splice; the result or -errno.  reg_fd is the end that may wait
 * (the input, or the destination).  When it has O_NONBLOCK (or the caller
 * cannot park) this is the plain splice, which answers -EAGAIN at once
 * where it would wait. */
static long splice_op(int fd_in, int64_t off_in, int fd_out, unsigned n, int reg_fd,
                      enum lt_io_dir dir)
{
	struct lt_io io;
	struct io_uring_sqe *sqe = lt_io_begin(&io, reg_fd, dir);
	if (!sqe) {
		loff_t off = off_in;
		long r = syscall(SYS_splice, fd_in, off_in < 0 ? NULL : &off, fd_out, NULL,
		                 (size_t)n, 0U);
		return r < 0 ? -errno : r;
	}
	io_uring_prep_splice(sqe, fd_in, off_in, fd_out, -1, n, 0);
	return lt_io_finish(&io);
}

/* Regular files: read a chunk (a page-cache read completes inline when
 * the ring submits it), write it.
 * Returns -2 when no buffer could be had (the caller splices instead).
 * Out of line, like unread(): its calls into the C library move it to a
 * big chunk on a linked stack (sched/linked.c), and sendfile's other
 * paths need not follow. */
static CP_NOINLINE ssize_t copy_file(int out, int in, off_t *offset, size_t count)
{
	char *buf = cp_rt_malloc(count < CHUNK ? count : CHUNK);
	if (!buf)
		return -2;
	int64_t off = offset ? *offset : 0;
	size_t total = 0;
	int err = 0;
	while (total < count) {
		size_t want = count - total > CHUNK ? CHUNK : count - total;
		/* through the ring, not the page-cache try of read(): the
		 * write parks anyway, and the read then costs no system call
		 * of its own (it is submitted with the worker's next enter;
		 * knot: 0.085 preadv2 calls per request) */
		ssize_t n = lt_ring_read(in, buf, want, offset ? (off_t)off : -1);
		if (n <= 0) {
			err = n < 0 ? errno : 0; /* 0: end of file */
			break;
		}
		if (offset)
			off += n;
		ssize_t sent = 0;
		while (sent < n) {
			/* write, not send: out may be any file, and a broken
			 * socket raises SIGPIPE as sendfile's would */
			ssize_t m = write(out, buf + sent, (size_t)(n - sent));
			if (m <= 0) {
				err = m < 0 ? errno : EIO;
				break;
			}
			sent += m;
			total += (size_t)m;
		}
		if (sent < n) {
			/* read but not sent: the offset must not count it */
			if (offset)
				off -= n - sent;
			else
				lseek(in, -(off_t)(n - sent), SEEK_CUR);
			break;
		}
	}
	cp_rt_free(buf);
	if (offset)
		*offset = off;
	if (total == 0 && err) {
		errno = err;
		return -1;
	}
	return (ssize_t)total;
}

static CP_NOINLINE void unread(int fd, long n)
{
	lseek(fd, -n, SEEK_CUR);
}

CP_EXPORT ssize_t sendfile(int out, int in, off_t *offset, size_t count)
{
	struct lt_fd *fo = lt_fd_get(out);
	if (!lt_self() || (fo && lt_fd_nonblocking(fo, out)))
		return syscall(SYS_sendfile, out, in, offset, count);
	if (offset && *offset < 0) {
		errno = EINVAL;
		return -1;
	}
	struct lt_fd *fi = lt_fd_get(in);
	if (fi && lt_fd_seekable(fi, in)) {
		ssize_t r = copy_file(out, in, offset, count);
		if (r != -2)
			return r;
	}
	int p[2];
	if (pipe_get(p) < 0)
		return -1; /* EMFILE/ENFILE from pipe2 */
	int64_t off = offset ? *offset : -1; /* *offset >= 0: checked above */
	size_t total = 0;
	long err = 0;
	bool empty = true;
	while (total < count) {
		unsigned want = count - total > CHUNK ? CHUNK : (unsigned)(count - total);
		long n = splice_op(in, off, p[1], want, in, LT_IO_NONE);
		if (n <= 0) {
			err = n; /* 0: end of file */
			break;
		}
		if (offset)
			off += n;
		empty = false;
		long left = n;
		while (left > 0) {
			long m = splice_op(p[0], -1, out, (unsigned)left, out, LT_IO_SND);
			if (m <= 0) {
				err = m ? m : -EIO;
				break;
			}
			left -= m;
			total += (size_t)m;
		}
		if (left > 0) {
			/* bytes read from the file but not sent: the file offset
			 * must not count them */
			if (offset)
				off -= left;
			else
				unread(in, left);
			break;
		}
		empty = true;
	}
	pipe_put(p, empty);
	if (offset)
		*offset = off;
	if (total == 0 && err < 0)
		return lt_io_ret(err);
	return (ssize_t)total;
}
CP_EXPORT ssize_t sendfile64(int out, int in, off_t *offset, size_t count)
	__attribute__((alias("sendfile")));
