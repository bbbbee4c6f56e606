/* io.h: one io_uring operation on behalf of a user thread.
 *
 * The caller fills an SQE on its worker's ring, then parks; the worker
 * submits everything prepared since its last look at the ring in one
 * io_uring_enter (when it runs dry, or every few dozen switches), reaps
 * completions in batches, and wakes each owner.  An operation record
 * lives on the waiting thread's stack and stays valid until every CQE
 * it expects has been reaped. */
#ifndef CAPRICE_IO_H
#define CAPRICE_IO_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "ring.h"
#include "scheduler.h"

struct cp_io_op {
	struct cp_io_req req;          /* the operation's completion */
	struct cp_io_req timeout_req;  /* its linked timeout's completion */
	struct cp_thread *thread;
	struct cp_worker *worker;      /* whose ring holds it */
	void (*done)(struct cp_io_op *op); /* cp_io_prep_cb's handler */
	int res;                       /* the operation's cqe->res */
	uint32_t cqe_flags;
	uint8_t pending;               /* CQEs still to come (1, or 2 with a timeout) */
	uint8_t timed_out;             /* the linked timeout fired */
	uint8_t cancel_queued;         /* 1: on its worker's cancel list,
	                                  2: the worker has let go of it */
	uint8_t interrupt_by;          /* CP_INTR_* its wait accepts */
	uint8_t signalled;             /* cancelled by cp_interrupt_wait: the
	                                  CP_INTR_* reasons that did it */
	uint8_t wake_first;            /* its thread runs next once it completes
	                                  (cp_wake_pinned_first: libthread's
	                                  accept sets it) */
	struct cp_io_op *cancel_next;
	struct io_uring_sqe *sqe;      /* until cp_io_wait links the timeout */
	struct __kernel_timespec ts;   /* read by the kernel at submission */
	/* for the layer above: the fd registry links ops on one fd */
	struct cp_io_op *fd_prev, *fd_next;
};

/* An SQE on the calling user thread's worker ring for op, followed in
 * the ring by a linked timeout when timeout_ns > 0 (on expiry the op is
 * cancelled and op->timed_out set).  NULL when the caller is not a user
 * thread: do the plain syscall instead.  Fill the SQE with an
 * io_uring_prep_* call, then call cp_io_wait before anything that could
 * switch. */
struct io_uring_sqe *cp_io_prep(struct cp_io_op *op, uint64_t timeout_ns);

/* For calls that wait on several operations at once (poll): like
 * cp_io_prep without a timeout, but the completion runs done(op) on the
 * op's worker, in scheduler context, instead of waking the thread; the
 * caller arranges its own waiting (a wait queue).  done must be quick and
 * must not block. */
struct io_uring_sqe *cp_io_prep_cb(struct cp_io_op *op, void (*done)(struct cp_io_op *op));

/* Parks until op (and its timeout) completed.  Returns op->res: a count,
 * or -errno.  An interrupt of the thread for a reason in interrupt_by
 * (CP_INTR_*) cancels the op (it then usually completes with -ECANCELED;
 * op->signalled says whether a signal's interrupt did). */
int cp_io_wait(struct cp_io_op *op, unsigned interrupt_by);

/* Before op's memory goes: waits until no worker holds a cancel request
 * for it.  Needed once anyone may have called cp_io_cancel on op. */
void cp_io_release(struct cp_io_op *op);

/* From any thread: asks op's worker to cancel it.  It then completes
 * with -ECANCELED unless it completed first.  op must still be pending
 * (the caller's own bookkeeping guarantees it, e.g. under a lock that the
 * op's owner takes before returning). */
void cp_io_cancel(struct cp_io_op *op);

#endif
