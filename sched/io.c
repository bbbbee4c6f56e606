/* io.c: parking a user thread on an io_uring operation (see io.h). */
#include "io.h"

#include <errno.h>

#include "compiler.h"
#include "worker.h"

static void op_settle(struct cp_io_op *op)
{
	if (--op->pending == 0) { /* the call returns with errno set */
		if (cp_unlikely(op->wake_first))
			cp_wake_pinned_first(op->thread);
		else
			cp_wake_pinned(op->thread);
	}
}

static void op_done(struct cp_io_req *req, int res, uint32_t flags)
{
	struct cp_io_op *op = cp_container_of(req, struct cp_io_op, req);
	op->res = res;
	op->cqe_flags = flags;
	if (op->done)
		op->done(op);
	else
		op_settle(op);
}

static void timeout_done(struct cp_io_req *req, int res, uint32_t flags)
{
	(void)flags;
	struct cp_io_op *op = cp_container_of(req, struct cp_io_op, timeout_req);
	/* -ECANCELED: the op completed first.  Otherwise it fired: -ETIME
	 * as a rule, but the result of cancelling the op for some kinds (a
	 * futex wait's cancel answers 1, the number cancelled) */
	op->timed_out = res != -ECANCELED;
	op_settle(op);
}

struct io_uring_sqe *cp_io_prep(struct cp_io_op *op, uint64_t timeout_ns)
{
	struct cp_thread *t = cp_self();
	if (!t)
		return NULL;
	struct cp_worker *w = cp_worker_self();
	struct cp_ring *r = &w->ring;
	op->req.done = op_done;
	op->done = NULL;
	op->thread = t;
	op->worker = w;
	op->pending = 1;
	op->timed_out = 0;
	op->cancel_queued = 0;
	op->wake_first = 0;
	op->res = 0;
	/* the op and its timeout must be adjacent and go out together */
	if (timeout_ns && io_uring_sq_space_left(&r->uring) < 2)
		cp_ring_poll(r);
	w->ring_busy = 1; /* until this thread switches: see monitor.c */
	op->sqe = cp_ring_sqe(r);
	r->inflight++;
	w->st.io_ops++;
	if (timeout_ns) {
		op->ts.tv_sec = (long long)(timeout_ns / 1000000000u);
		op->ts.tv_nsec = (long long)(timeout_ns % 1000000000u);
		op->timeout_req.done = timeout_done;
		op->pending = 2;
		struct io_uring_sqe *tsqe = cp_ring_sqe(r);
		io_uring_prep_link_timeout(tsqe, &op->ts, 0);
		io_uring_sqe_set_data(tsqe, &op->timeout_req);
		r->inflight++;
	}
	return op->sqe;
}

struct io_uring_sqe *cp_io_prep_cb(struct cp_io_op *op, void (*done)(struct cp_io_op *op))
{
	struct io_uring_sqe *sqe = cp_io_prep(op, 0);
	if (sqe) {
		op->done = done;
		io_uring_sqe_set_data(sqe, &op->req);
	}
	return sqe;
}

int cp_io_wait(struct cp_io_op *op, unsigned interrupt_by)
{
	cp_assert(op->worker == cp_worker_self());
	/* io_uring_prep_* cleared the flags and left user_data alone */
	io_uring_sqe_set_data(op->sqe, &op->req);
	if (op->pending == 2)
		op->sqe->flags |= IOSQE_IO_LINK;
	op->sqe = NULL;
	struct cp_thread *t = op->thread;
	op->interrupt_by = (uint8_t)interrupt_by;
	op->signalled = 0;
	if (interrupt_by) {
		unsigned early = cp_wait_publish(t, (void **)&t->io_waiting, op, interrupt_by);
		if (early) { /* interrupted before we got here */
			op->signalled = (uint8_t)(early & ~CP_INTR_CANCEL);
			cp_io_cancel(op);
		}
	}
	cp_steal_share_at_io_park(op->worker);
	cp_park(NULL);
	if (interrupt_by)
		cp_wait_withdraw(t, (void **)&t->io_waiting); /* waits out an interrupter */
	return op->res;
}

void cp_io_release(struct cp_io_op *op)
{
	while (__atomic_load_n(&op->cancel_queued, __ATOMIC_ACQUIRE) == 1)
		cp_yield();
}

/* Runs on the op's worker: turns queued cancel requests into SQEs. */
void cp_io_run_cancels(struct cp_worker *w)
{
	struct cp_io_op *list = __atomic_exchange_n(&w->cancels, NULL, __ATOMIC_ACQUIRE);
	while (list) {
		struct cp_io_op *next = list->cancel_next;
		struct io_uring_sqe *sqe = cp_ring_sqe(&w->ring);
		io_uring_prep_cancel(sqe, &list->req, 0);
		io_uring_sqe_set_data(sqe, NULL);
		/* the cancel names the op by address only: its owner may go */
		__atomic_store_n(&list->cancel_queued, 2, __ATOMIC_RELEASE);
		list = next;
	}
}

void cp_io_cancel(struct cp_io_op *op)
{
	/* once only: a second canceller (close() and pthread_cancel, or
	 * poll's own clean-up after a close) must not re-arm the flag the
	 * worker already cleared */
	uint8_t none = 0;
	if (!__atomic_compare_exchange_n(&op->cancel_queued, &none, 1, false,
	                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return;
	struct cp_worker *w = op->worker;
	struct cp_io_op *old = __atomic_load_n(&w->cancels, __ATOMIC_RELAXED);
	do
		op->cancel_next = old;
	while (!__atomic_compare_exchange_n(&w->cancels, &old, op, true,
	                                    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
	cp_worker_kick(w);
}
