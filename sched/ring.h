/* ring.h: a worker's io_uring.
 *
 * Each worker owns one ring (SINGLE_ISSUER, DEFER_TASKRUN where the kernel
 * takes them).  Idle workers sleep in it, other workers wake them through
 * an eventfd read that is always pending on it, and the blocking-call layer
 * submits its operations to it.  SQEs are prepared without a syscall and go
 * out together the next time the worker polls or sleeps. */
#ifndef CAPRICE_RING_H
#define CAPRICE_RING_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

struct cp_io_req;
/* Called on the owning worker, in scheduler context, for each completion. */
typedef void (*cp_io_done_fn)(struct cp_io_req *req, int res, uint32_t cqe_flags);

struct cp_io_req {
	cp_io_done_fn done;
};

struct cp_ring {
	struct io_uring uring;
	int kick_fd;              /* eventfd other threads write to wake us */
	uint64_t kick_buf;
	struct cp_io_req kick_req;
	uint32_t unsubmitted;     /* SQEs prepared since the last enter */
	uint32_t inflight;        /* operations submitted, not yet completed */
	unsigned setup_flags;
	bool ready;
	uint64_t enters;          /* io_uring_enter calls made (statistics) */
	/* the owner's run queue, while the 2D policy batches the threads a
	 * reap wakes by where they blocked (runq.h); NULL under fifo */
	struct cp_runq *batch_into;
};

/* Creates the kick eventfd; any thread may kick from now on. */
int cp_ring_prepare(struct cp_ring *r);
/* Creates the ring on the kernel thread that will own it; 0 or -errno. */
int cp_ring_init(struct cp_ring *r);
/* An SQE to fill, submitting the queue first if it is full; never NULL. */
struct io_uring_sqe *cp_ring_sqe(struct cp_ring *r);
/* Submits what is prepared and runs the completions that are ready,
 * without sleeping.  Returns the number of completions. */
unsigned cp_ring_poll(struct cp_ring *r);
/* cp_ring_poll for a worker that will wait in the ring next if this finds
 * nothing: prepared SQEs alone do not make it enter, since the wait's
 * enter submits them (one system call instead of two per sleep). */
unsigned cp_ring_poll_before_wait(struct cp_ring *r);
/* Submits what is prepared and sleeps until a completion, a kick, or
 * timeout_ns (UINT64_MAX: no timeout), then runs completions. */
void cp_ring_wait(struct cp_ring *r, uint64_t timeout_ns);
/* From any thread (racy, for the monitor): do completions wait for the
 * owner to reap them, or for an enter to post them (DEFER_TASKRUN)? */
bool cp_ring_completions_pending(struct cp_ring *r);
/* Wakes the owner from cp_ring_wait; callable from any thread or a
 * signal handler. */
void cp_ring_kick(struct cp_ring *r);

#endif
