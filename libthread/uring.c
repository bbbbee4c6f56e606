/* uring.c: a program's own io_uring waits park only the calling user thread.
 *
 * A program that runs its own ring (InnoDB's native aio, for one) waits
 * for completions inside liburing, which enters the kernel with
 * IORING_ENTER_GETEVENTS: that would block the whole worker, and the
 * threads and I/O queued on it, until the program's completion arrives.
 * libthread defines liburing's exported waits; on a user thread, for a
 * ring that is not one of the runtime's own, a wait first submits what the
 * program prepared, then parks on a POLL_ADD of the program's ring
 * descriptor (readable once completions are ready) on the worker's ring,
 * and finally lets liburing itself hand out the completions, which are
 * there by then.  A signal mask passed to these calls is not applied while
 * parked.  These definitions match liburing 2.x's struct io_uring, the one
 * this library is built with; the runtime's own rings go straight through. */
#include <dlfcn.h>
#include <errno.h>
#include <liburing.h>
#include <poll.h>

#include "compiler.h"
#include "lt.h"
#include "lt_io.h"
#include "timespec.h"

#define RECHECK_NS 10000000ull /* see park_until_ready */

typedef int (*get_cqe_fn)(struct io_uring *, struct io_uring_cqe **, unsigned, unsigned,
                          sigset_t *);
typedef int (*submit_fn)(struct io_uring *);
typedef int (*submit_wait_fn)(struct io_uring *, unsigned);
typedef int (*wait_cqes_fn)(struct io_uring *, struct io_uring_cqe **, unsigned,
                            struct __kernel_timespec *, sigset_t *);
typedef int (*wait_timeout_fn)(struct io_uring *, struct io_uring_cqe **,
                               struct __kernel_timespec *);
typedef int (*submit_wait_timeout_fn)(struct io_uring *, struct io_uring_cqe **, unsigned,
                                      struct __kernel_timespec *, sigset_t *);

#define REAL(name, type)                                                           \
	static type real_##name;                                                    \
	if (cp_unlikely(!real_##name)) {                                             \
		real_##name = (type)dlsym(RTLD_NEXT, #name);                          \
		if (!real_##name)                                                   \
			cp_die("%s: liburing's definition is missing: %s", #name, dlerror()); \
	}

/* The library's own get_cqe, for the non-blocking submit and peek. */
static int get_cqe(struct io_uring *ring, struct io_uring_cqe **cqe, unsigned submit,
                   unsigned wait_nr, sigset_t *mask)
{
	REAL(__io_uring_get_cqe, get_cqe_fn);
	return real___io_uring_get_cqe(ring, cqe, submit, wait_nr, mask);
}

static int submit(struct io_uring *ring)
{
	REAL(io_uring_submit, submit_fn);
	return real_io_uring_submit(ring);
}

/* Should this wait park?  Only a user thread's, on a program's ring. */
static bool parks(struct io_uring *ring)
{
	return lt_self() && !cp_in_runtime() && !cp_is_runtime_ring(ring);
}

/* Parks until `want` completions are ready on ring, or the monotonic
 * deadline (CP_NO_DEADLINE: none) passes: 0, -ETIME, or 1 when it cannot
 * park here and the caller must wait the plain way. */
static int park_until_ready(struct io_uring *ring, unsigned want, uint64_t deadline)
{
	for (;;) {
		struct io_uring_cqe *cqe;
		/* posts completions that wait for an enter (DEFER_TASKRUN) */
		if (io_uring_cq_ready(ring) < want && (ring->flags & IORING_SETUP_DEFER_TASKRUN))
			get_cqe(ring, &cqe, 0, 0, NULL);
		if (io_uring_cq_ready(ring) >= want)
			return 0;
		/* a poll of a ring descriptor from another ring can miss a
		 * wake-up that races with its arming (the kernel activates a
		 * ring's poll wake-ups lazily), so look again at least this
		 * often rather than trust one */
		uint64_t timeout = RECHECK_NS;
		if (deadline != CP_NO_DEADLINE) {
			uint64_t now = cp_now_ns();
			if (now >= deadline)
				return -ETIME;
			if (deadline - now < timeout)
				timeout = deadline - now;
		}
		struct lt_io io;
		struct io_uring_sqe *sqe = lt_io_begin_poll(&io, ring->ring_fd, timeout);
		if (!sqe)
			return 1;
		io_uring_prep_poll_add(sqe, ring->ring_fd, POLLIN);
		long r = lt_io_finish(&io);
		if (r < 0 && r != -EAGAIN && r != -EINTR)
			return (int)r;
	}
}

static uint64_t deadline_of(const struct __kernel_timespec *ts)
{
	if (!ts)
		return CP_NO_DEADLINE;
	struct timespec t = { .tv_sec = (time_t)ts->tv_sec, .tv_nsec = (long)ts->tv_nsec };
	return cp_ns_add_sat(cp_now_ns(), cp_ts_to_ns_sat(&t));
}

CP_EXPORT int __io_uring_get_cqe(struct io_uring *ring, struct io_uring_cqe **cqe_ptr,
                                 unsigned submit_n, unsigned wait_nr, sigset_t *sigmask)
{
	if (wait_nr == 0 || !parks(ring))
		return get_cqe(ring, cqe_ptr, submit_n, wait_nr, sigmask);
	if (submit_n) {
		int r = get_cqe(ring, cqe_ptr, submit_n, 0, sigmask);
		if (r < 0 && r != -EAGAIN && r != -EINTR)
			return r;
	}
	int e = park_until_ready(ring, wait_nr, CP_NO_DEADLINE);
	if (e < 0)
		return e;
	return get_cqe(ring, cqe_ptr, 0, e ? wait_nr : 0, sigmask);
}

CP_EXPORT int io_uring_wait_cqes(struct io_uring *ring, struct io_uring_cqe **cqe_ptr,
                                 unsigned wait_nr, struct __kernel_timespec *ts,
                                 sigset_t *sigmask)
{
	REAL(io_uring_wait_cqes, wait_cqes_fn);
	if (wait_nr == 0 || !parks(ring))
		return real_io_uring_wait_cqes(ring, cqe_ptr, wait_nr, ts, sigmask);
	int r = submit(ring);
	if (r < 0)
		return r;
	int e = park_until_ready(ring, wait_nr, deadline_of(ts));
	if (e < 0)
		return e;
	if (e)
		return real_io_uring_wait_cqes(ring, cqe_ptr, wait_nr, ts, sigmask);
	return get_cqe(ring, cqe_ptr, 0, 0, NULL);
}

CP_EXPORT int io_uring_wait_cqe_timeout(struct io_uring *ring, struct io_uring_cqe **cqe_ptr,
                                        struct __kernel_timespec *ts)
{
	return io_uring_wait_cqes(ring, cqe_ptr, 1, ts, NULL);
}

CP_EXPORT int io_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr)
{
	REAL(io_uring_submit_and_wait, submit_wait_fn);
	if (wait_nr == 0 || !parks(ring))
		return real_io_uring_submit_and_wait(ring, wait_nr);
	int n = submit(ring);
	if (n < 0)
		return n;
	int e = park_until_ready(ring, wait_nr, CP_NO_DEADLINE);
	if (e < 0)
		return e;
	if (e)
		return real_io_uring_submit_and_wait(ring, wait_nr) + n;
	return n;
}

CP_EXPORT int io_uring_submit_and_wait_timeout(struct io_uring *ring,
                                               struct io_uring_cqe **cqe_ptr, unsigned wait_nr,
                                               struct __kernel_timespec *ts, sigset_t *sigmask)
{
	REAL(io_uring_submit_and_wait_timeout, submit_wait_timeout_fn);
	if (wait_nr == 0 || !parks(ring))
		return real_io_uring_submit_and_wait_timeout(ring, cqe_ptr, wait_nr, ts, sigmask);
	int n = submit(ring);
	if (n < 0)
		return n;
	int e = park_until_ready(ring, wait_nr, deadline_of(ts));
	if (e < 0)
		return e;
	if (e)
		return real_io_uring_submit_and_wait_timeout(ring, cqe_ptr, wait_nr, ts, sigmask);
	int r = get_cqe(ring, cqe_ptr, 0, 0, NULL);
	return r < 0 ? r : n;
}
