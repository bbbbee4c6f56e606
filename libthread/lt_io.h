/* lt_io.h: the shape every parking I/O call takes (see io.c):
 *     sqe = lt_io_begin(&io, fd, dir);  if (!sqe) return plain syscall;
 *     io_uring_prep_xxx(sqe, ...);      return lt_io_ret(lt_io_finish(&io)); */
#ifndef CAPRICE_LT_IO_H
#define CAPRICE_LT_IO_H

#include <fcntl.h>
#include <stdarg.h>
#include <sys/types.h>

#include "fdtable.h"

enum lt_io_dir {
	LT_IO_NONE, /* no socket timeout applies */
	LT_IO_RCV,  /* SO_RCVTIMEO applies */
	LT_IO_SND,  /* SO_SNDTIMEO applies */
};

struct lt_io {
	struct cp_io_op op;
	struct lt_fd *f;
	bool poll;                    /* a wait for readiness: never restarted */
};

/* A cancellation point; registers the op on fd (fd < 0: none) and returns
 * its SQE, or NULL when the caller is not a user thread. */
struct io_uring_sqe *lt_io_begin_at(const char *call, struct lt_io *io, int fd,
                                    enum lt_io_dir dir) CP_HIDDEN;
#define lt_io_begin(io, fd, dir) lt_io_begin_at(__func__, io, fd, dir)
/* The same for a poll of fd, with an explicit timeout (0: none) instead
 * of a socket's.  O_NONBLOCK does not make a poll answer at once, so this
 * arms one on a non-blocking fd too: NULL only where the caller cannot
 * park (not a user thread, or inside the runtime). */
struct io_uring_sqe *lt_io_begin_poll_at(const char *call, struct lt_io *io, int fd,
                                         uint64_t timeout_ns) CP_HIDDEN;
#define lt_io_begin_poll(io, fd, t) lt_io_begin_poll_at(__func__, io, fd, t)
/* Parks until done; returns the result or -errno (a timed-out op gives
 * -EAGAIN, one cancelled by close() -EBADF). */
long lt_io_finish(struct lt_io *io) CP_HIDDEN;
/* -errno to -1 with errno set, as the C library returns. */
long lt_io_ret(long res) CP_HIDDEN;
/* read (off -1) or pread through the ring, without the page-cache try
 * first (io.c) */
ssize_t lt_ring_read(int fd, void *buf, size_t n, off_t off) CP_HIDDEN;

/* open's mode argument, there only with O_CREAT or O_TMPFILE. */
static inline mode_t lt_open_mode(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

#endif
