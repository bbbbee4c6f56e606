/* fdtable.h: what libthread knows about each file descriptor. */
#ifndef CAPRICE_FDTABLE_H
#define CAPRICE_FDTABLE_H

#include <stdint.h>

#include "io.h"
#include "lt.h"

struct lt_fd {
	cp_spinlock lock;
	uint32_t closing;           /* close() is cancelling and draining ops */
	struct cp_io_op *ops;       /* operations in flight on this fd */
	struct cp_waitq waiters;    /* close() waiting for ops to drain; ops
	                               waiting for a close to finish */
	uint64_t rcvtimeo_ns;       /* SO_RCVTIMEO, 0: none */
	uint64_t sndtimeo_ns;       /* SO_SNDTIMEO */
};

/* Called once at start-up (fork handling). */
void lt_fd_init(void) CP_HIDDEN;

/* The entry for fd, made on first use; NULL for a negative or huge fd. */
struct lt_fd *lt_fd_get(int fd) CP_HIDDEN;

/* Registers op as in flight on f (waiting out a close in progress). */
void lt_fd_begin(struct lt_fd *f, struct cp_io_op *op) CP_HIDDEN;
/* Unregisters op once it completed; a close() can no longer cancel it,
 * but one may already have: call cp_io_release(op) before op goes. */
void lt_fd_end(struct lt_fd *f, struct cp_io_op *op) CP_HIDDEN;
/* Cancels every operation in flight on fd, waits for them to end, closes
 * it, and forgets its per-fd settings.  Returns close(2)'s result. */
int lt_fd_close(int fd) CP_HIDDEN;

#endif
