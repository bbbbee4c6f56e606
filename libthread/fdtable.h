/* fdtable.h: what libthread knows about each file descriptor. */
#ifndef CAPRICE_FDTABLE_H
#define CAPRICE_FDTABLE_H

#include <stdbool.h>
#include <stdint.h>

#include "io.h"
#include "lt.h"

/* What lseek and fstat said of a descriptor, asked once per descriptor
 * (a socket made by socket, socketpair or accept is known at once). */
enum lt_fd_kind {
	LT_FD_UNKNOWN,
	LT_FD_SEEKABLE, /* a regular file or a device with a position */
	LT_FD_STREAM,   /* a pipe, a terminal...: no position, not a socket */
	LT_FD_SOCKET,
};

struct lt_fd {
	cp_spinlock lock;
	uint32_t closing;           /* close() is cancelling and draining ops */
	struct cp_io_op *ops;       /* operations in flight on this fd */
	struct cp_waitq waiters;    /* close() waiting for ops to drain; ops
	                               waiting for a close to finish */
	uint64_t rcvtimeo_ns;       /* SO_RCVTIMEO, 0: none */
	uint64_t sndtimeo_ns;       /* SO_SNDTIMEO */
	/* caches, each one syscall to fill.  nonblock is valid while
	 * flags_gen matches the global generation: O_NONBLOCK lives in the
	 * open file description, which dups share, so an F_SETFL (or
	 * FIONBIO) on a dup'd fd bumps the generation and every fd asks
	 * again; on any other fd it updates only that fd's cache */
	uint32_t flags_gen;
	uint8_t nonblock;
	uint8_t kind;               /* enum lt_fd_kind */
	uint8_t no_cached_read;     /* RWF_NOWAIT refused here (io.c) */
	uint8_t shared;             /* dup'd: its open file description (and
	                               O_NONBLOCK) may be another fd's too */
};

/* Called once at start-up (fork handling). */
void lt_fd_init(void) CP_HIDDEN;
/* The same for sendfile's pool of pipes (sendfile.c). */
void lt_sendfile_init(void) CP_HIDDEN;

/* The entry for fd, made on first use; NULL for a negative or huge fd. */
struct lt_fd *lt_fd_get(int fd) CP_HIDDEN;

/* Whether fd has O_NONBLOCK.  Then a read, write, accept... is the plain
 * syscall, which answers at once: io_uring would answer -EAGAIN the same
 * way, a round trip later.  A poll waits whatever the flag says. */
bool lt_fd_nonblocking(struct lt_fd *f, int fd) CP_HIDDEN;
/* Whether positional I/O makes sense on fd (false: pipes, sockets). */
bool lt_fd_seekable(struct lt_fd *f, int fd) CP_HIDDEN;
/* Whether fd is a socket: its read and write go to the ring as a recv and
 * a send, which skip what io_uring's file read and write path does for
 * files (io.c). */
bool lt_fd_socket(struct lt_fd *f, int fd) CP_HIDDEN;
/* What f is must be asked again (it said ENOTSOCK). */
void lt_fd_kind_unknown(struct lt_fd *f) CP_HIDDEN;
/* fd's status flags are now `flags` (F_SETFL, FIONBIO).  Only fd's cache
 * changes, unless fd was dup'd: then every cached O_NONBLOCK is stale
 * (one program setting O_NONBLOCK on each accepted socket must not make
 * every later call on every descriptor ask the kernel again). */
void lt_fd_flags_set(int fd, long flags) CP_HIDDEN;
/* fd and newfd share an open file description (dup and friends). */
void lt_fd_dup_made(int fd, int newfd) CP_HIDDEN;
/* What the call that made a descriptor says of its O_NONBLOCK. */
enum lt_fd_nonblock { LT_NONBLOCK_ASK = -1, LT_NONBLOCK_NO = 0, LT_NONBLOCK_YES = 1 };
/* fd is a new descriptor (or an error, < 0, ignored): forget what was
 * cached for the number, and cache what the call that made it decided:
 * its kind, and whether it is nonblocking (a flag of that call: an
 * accepted socket's O_NONBLOCK is SOCK_NONBLOCK's, not the listener's).
 * Each one known saves a system call later (an fcntl per accepted
 * connection).  Returns fd, to wrap a call's result. */
int lt_fd_fresh_known(int fd, enum lt_fd_kind kind, enum lt_fd_nonblock nonblock) CP_HIDDEN;
static inline int lt_fd_fresh(int fd)
{
	return lt_fd_fresh_known(fd, LT_FD_UNKNOWN, LT_NONBLOCK_ASK);
}
/* The same for a socket (socket, accept4) made with or without
 * SOCK_NONBLOCK. */
static inline int lt_fd_fresh_socket(int fd, bool nonblock)
{
	return lt_fd_fresh_known(fd, LT_FD_SOCKET, nonblock ? LT_NONBLOCK_YES : LT_NONBLOCK_NO);
}
/* dup2/dup3 onto newfd: like close(newfd) for whoever is blocked on it. */
void lt_fd_forget(int fd) CP_HIDDEN;

/* Registers op as in flight on f (waiting out a close in progress). */
void lt_fd_begin(struct lt_fd *f, struct cp_io_op *op) CP_HIDDEN;
/* Unregisters op once it completed; a close() can no longer cancel it,
 * but one may already have: call cp_io_release(op) before op goes. */
void lt_fd_end(struct lt_fd *f, struct cp_io_op *op) CP_HIDDEN;
/* If a close() of f is under way, waits until it is done (poll reports
 * POLLNVAL for it, not a stale "nothing happened"). */
void lt_fd_await_close(struct lt_fd *f) CP_HIDDEN;
/* Cancels every operation in flight on fd, waits for them to end, closes
 * it, and forgets its per-fd settings.  Returns close(2)'s result; one of
 * the runtime's own descriptors is not closed (EBADF, as if not open). */
int lt_fd_close(int fd) CP_HIDDEN;
/* The same for every number in [lo, hi], around a close_range: the drain
 * before it (operations cancelled and waited out, new ones held back),
 * the undrain after. */
void lt_fd_drain_range(unsigned lo, unsigned hi) CP_HIDDEN;
void lt_fd_undrain_range(unsigned lo, unsigned hi) CP_HIDDEN;
/* dup, dup2 or dup3 of old (onto new; -1 for dup) touches one of the
 * runtime's descriptors: errno is EBADF and the call must fail
 * (closefrom.c). */
bool lt_fd_dup_refused(int old, int new) CP_HIDDEN;

#endif
