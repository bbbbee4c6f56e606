/* ownring.c: a program's own io_uring waits (liburing's io_uring_wait_cqe
 * and friends, as InnoDB's native aio makes them) park only the calling
 * user thread: on one worker, a thread waiting on its own ring for a read
 * of an empty pipe leaves the worker to the others, one of which writes
 * the byte that completes the read. */
#include <errno.h>
#include <liburing.h>
#include <stdatomic.h>
#include <unistd.h>

#include "tcase.h"

struct own {
	int pipe_rd;
	int mode;          /* which liburing wait */
	atomic_int done;
	int res;
	char byte;
};

static void *wait_own_ring(void *arg)
{
	struct own *o = arg;
	struct io_uring ring;
	CHECK_EQ(io_uring_queue_init(8, &ring, 0), 0);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	io_uring_prep_read(sqe, o->pipe_rd, &o->byte, 1, 0);
	struct io_uring_cqe *cqe = NULL;
	switch (o->mode) {
	case 0: /* submit, then wait_cqe (__io_uring_get_cqe) */
		CHECK_EQ(io_uring_submit(&ring), 1);
		CHECK_EQ(io_uring_wait_cqe(&ring, &cqe), 0);
		break;
	case 1: /* submit_and_wait, then peek */
		CHECK_EQ(io_uring_submit_and_wait(&ring, 1), 1);
		CHECK_EQ(io_uring_peek_cqe(&ring, &cqe), 0);
		break;
	case 2: { /* wait_cqe_timeout: times out once, then completes */
		CHECK_EQ(io_uring_submit(&ring), 1);
		struct __kernel_timespec ts = { 0, 20 * 1000000L };
		uint64_t t0 = tc_now_ns();
		CHECK_EQ(io_uring_wait_cqe_timeout(&ring, &cqe, &ts), -ETIME);
		CHECK_MS_RANGE(tc_now_ns() - t0, 20, 20);
		ts.tv_sec = 10;
		ts.tv_nsec = 0;
		CHECK_EQ(io_uring_wait_cqe_timeout(&ring, &cqe, &ts), 0);
		break;
	}
	}
	CHECK(cqe != NULL);
	o->res = cqe->res;
	io_uring_cqe_seen(&ring, cqe);
	io_uring_queue_exit(&ring);
	atomic_store(&o->done, 1);
	return NULL;
}

static void own_ring_on_one_worker(int mode)
{
	tc_watchdog(20);
	int p[2];
	CHECK(pipe(p) == 0);
	struct own o = { .pipe_rd = p[0], .mode = mode };
	pthread_t t = tc_spawn(wait_own_ring, &o);
	/* were the wait a blocking io_uring_enter, these sleeps would never
	 * end: the waiter would hold the only worker */
	for (int i = 0; i < 40; i++)
		tc_msleep(1);
	CHECK(!atomic_load(&o.done));
	CHECK_EQ(write(p[1], "x", 1), 1);
	tc_join(t);
	CHECK_EQ(o.res, 1);
	CHECK_EQ(o.byte, 'x');
	close(p[0]);
	close(p[1]);
}

TCASE(wait_cqe_parks_only_the_caller)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	own_ring_on_one_worker(0);
}

TCASE(submit_and_wait_parks_only_the_caller)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	own_ring_on_one_worker(1);
}

TCASE(wait_cqe_timeout_parks_and_times_out)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	own_ring_on_one_worker(2);
}
