/* ring.c: per-worker io_uring setup, batching and completion dispatch. */
#include "ring.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"
#include "runq.h"

#define SQ_ENTRIES 1024
#define CQ_ENTRIES 8192

static void kick_rearm(struct cp_ring *r);

static void kick_done(struct cp_io_req *req, int res, uint32_t flags)
{
	(void)flags;
	struct cp_ring *r = cp_container_of(req, struct cp_ring, kick_req);
	if (res < 0 && res != -EINTR && res != -EAGAIN && res != -ECANCELED)
		cp_die("worker wake-up read on eventfd %d failed: %s", r->kick_fd, strerror(-res));
	kick_rearm(r);
}

static void kick_rearm(struct cp_ring *r)
{
	struct io_uring_sqe *sqe = cp_ring_sqe(r);
	io_uring_prep_read(sqe, r->kick_fd, &r->kick_buf, sizeof r->kick_buf, 0);
	io_uring_sqe_set_data(sqe, &r->kick_req);
	/* not counted in inflight: it is always pending and must not make
	 * every poll enter the kernel */
}

int cp_ring_prepare(struct cp_ring *r)
{
	memset(r, 0, sizeof *r);
	/* blocking on purpose: io_uring would answer -EAGAIN on O_NONBLOCK */
	r->kick_fd = cp_rtfd_adopt(eventfd(0, EFD_CLOEXEC));
	if (r->kick_fd < 0)
		return -errno;
	r->kick_req.done = kick_done;
	return 0;
}

/* Sets up `u` with the best flags this kernel takes; 0 or -errno. */
static int setup_uring(struct io_uring *u, unsigned *flags_out)
{
	static const unsigned tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
			IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_CQSIZE,
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
			IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE,
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE,
		IORING_SETUP_CQSIZE,
	};
	int ret = -EINVAL;
	/* ENOMEM: a smaller ring may still fit (a fork's child under a tight
	 * RLIMIT_AS must not die for want of 200 KiB); it only submits and
	 * reaps in smaller batches, and the kernel keeps completions that
	 * overflow it */
	for (unsigned sq = SQ_ENTRIES, cq = CQ_ENTRIES; sq >= 16; sq /= 4, cq /= 4) {
		for (unsigned i = 0; i < sizeof tries / sizeof tries[0]; i++) {
			struct io_uring_params p;
			memset(&p, 0, sizeof p);
			p.flags = tries[i];
			p.cq_entries = cq;
			ret = io_uring_queue_init_params(sq, u, &p);
			if (ret == 0) {
				*flags_out = p.flags;
				return 0;
			}
			if (ret != -EINVAL)
				break; /* EPERM, ENOMEM, ENOSYS: flags will not help */
		}
		if (ret != -ENOMEM)
			break;
	}
	return ret;
}

int cp_ring_init(struct cp_ring *r)
{
	int ret = setup_uring(&r->uring, &r->setup_flags);
	if (ret == 0) {
		/* liburing enters through enter_ring_fd and closes ring_fd */
		r->uring.ring_fd = r->uring.enter_ring_fd = cp_rtfd_adopt(r->uring.ring_fd);
		r->ready = true;
		kick_rearm(r);
	}
	return ret;
}

/* The SQ is full: submit (out of line: a call into liburing moves its
 * caller to a big chunk on a linked stack, sched/linked.c). */
static CP_COLD struct io_uring_sqe *sqe_when_full(struct cp_ring *r)
{
	struct io_uring_sqe *sqe = NULL;
	while (!sqe) {
		int ret = io_uring_submit(&r->uring);
		r->enters++;
		if (ret < 0 && ret != -EBUSY && ret != -EAGAIN && ret != -EINTR)
			cp_die("io_uring_submit with a full queue failed: %s", strerror(-ret));
		r->unsubmitted = 0;
		if (ret <= 0)
			cp_ring_poll(r); /* the CQ is backed up: drain it, then retry */
		sqe = io_uring_get_sqe(&r->uring);
	}
	return sqe;
}

struct io_uring_sqe *cp_ring_sqe(struct cp_ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);
	if (cp_unlikely(!sqe))
		sqe = sqe_when_full(r);
	r->unsubmitted++;
	return sqe;
}

/* How many completions ahead a reap starts loading the requests, which
 * live in the waiting threads' frames: with thousands of connections
 * each is a cache miss, and loaded ahead they overlap. */
#define REAP_PREFETCH 8

static inline void prefetch_req(const struct io_uring *u, unsigned at)
{
	__builtin_prefetch(io_uring_cqe_get_data(&u->cq.cqes[at & u->cq.ring_mask]));
}

static unsigned reap_all(struct cp_ring *r)
{
	unsigned n = 0;
	struct io_uring_cqe *cqe;
	unsigned head = *r->uring.cq.khead;
	unsigned ready = io_uring_cq_ready(&r->uring);
	for (unsigned k = 0; k < ready && k < REAP_PREFETCH; k++)
		prefetch_req(&r->uring, head + k);
	/* completions may queue new SQEs (re-arms); that is fine mid-loop */
	while (io_uring_peek_cqe(&r->uring, &cqe) == 0) {
		if (n + REAP_PREFETCH < ready)
			prefetch_req(&r->uring, head + n + REAP_PREFETCH);
		struct cp_io_req *req = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		uint32_t flags = cqe->flags;
		io_uring_cqe_seen(&r->uring, cqe);
		n++;
		if (!req)
			continue; /* fire-and-forget (cancel requests) */
		if (req != &r->kick_req && !(flags & IORING_CQE_F_MORE))
			r->inflight--;
		req->done(req, res, flags);
	}
	return n;
}

static unsigned reap(struct cp_ring *r)
{
	if (cp_likely(!r->batch_into) || io_uring_cq_ready(&r->uring) < 2)
		return reap_all(r);
	cp_runq_batch_begin(r->batch_into);
	unsigned n = reap_all(r);
	cp_runq_batch_end(r->batch_into);
	return n;
}

/* Whether completions wait for an enter to be posted.  DEFER_TASKRUN
 * runs completion work only inside an enter; with TASKRUN_FLAG the
 * kernel raises IORING_SQ_TASKRUN when there is some, so a look that
 * finds nothing costs a memory read instead of a system call (the
 * eventfd read always in flight would otherwise make every look an
 * enter: one per request under load, and a syscall storm when an idle
 * worker polls). */
static inline bool completions_waiting(struct cp_ring *r)
{
	if (!(r->setup_flags & IORING_SETUP_DEFER_TASKRUN) || !r->inflight)
		return false;
	if (!(r->setup_flags & IORING_SETUP_TASKRUN_FLAG))
		return true;
	return (IO_URING_READ_ONCE(*r->uring.sq.kflags) & IORING_SQ_TASKRUN) != 0;
}

unsigned cp_ring_poll(struct cp_ring *r)
{
	bool need_enter = r->unsubmitted || completions_waiting(r) ||
	                  io_uring_cq_has_overflow(&r->uring);
	if (need_enter) {
		/* DEFER_TASKRUN runs completion work only inside an enter with
		 * GETEVENTS; wait_nr 0 makes that a non-blocking visit. */
		int ret = io_uring_submit_and_get_events(&r->uring);
		r->enters++;
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			cp_die("io_uring_enter (submit) failed: %s", strerror(-ret));
		r->unsubmitted = 0;
	}
	return reap(r);
}

unsigned cp_ring_poll_before_wait(struct cp_ring *r)
{
	if (completions_waiting(r) || io_uring_cq_has_overflow(&r->uring))
		return cp_ring_poll(r);
	return reap(r);
}

void cp_ring_wait(struct cp_ring *r, uint64_t timeout_ns)
{
	struct io_uring_cqe *cqe;
	int ret;
	if (timeout_ns == UINT64_MAX) {
		ret = io_uring_submit_and_wait(&r->uring, 1);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = (long long)(timeout_ns / 1000000000u),
			.tv_nsec = (long long)(timeout_ns % 1000000000u),
		};
		ret = io_uring_submit_and_wait_timeout(&r->uring, &cqe, 1, &ts, NULL);
	}
	r->enters++;
	r->unsubmitted = 0;
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
		cp_die("io_uring_enter (wait) failed: %s", strerror(-ret));
	reap(r);
}

bool cp_ring_completions_pending(struct cp_ring *r)
{
	if (io_uring_cq_ready(&r->uring))
		return true;
	return (r->setup_flags & IORING_SETUP_TASKRUN_FLAG) &&
	       (IO_URING_READ_ONCE(*r->uring.sq.kflags) & IORING_SQ_TASKRUN);
}

void cp_ring_kick(struct cp_ring *r)
{
	uint64_t one = 1;
	/* raw syscall: write() may be interposed by the blocking-call layer */
	(void)syscall(SYS_write, r->kick_fd, &one, sizeof one);
}
