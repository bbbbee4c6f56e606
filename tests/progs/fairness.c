/* fairness.c: no user thread holds its worker hostage.  A thread that
 * never parks (a loop over nonblocking descriptors, an event loop whose
 * events are always ready) must still let the other threads on its worker
 * run: the monitor asks it to yield at its next call into the library.
 * Each case runs on one worker (a child with CAPRICE_WORKERS=1), where
 * nothing but that can help. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "tcase.h"

#define SPIN_MS     1500
#define TICKS       100
/* The slice is 2 ms; a few slices plus a loaded machine's scheduling
 * noise, but far below the SPIN_MS a starved ticker would wait. */
#define MAX_GAP_MS  150

enum spin_kind { SPIN_READ, SPIN_POLL0, SPIN_EPOLL_READY };

struct spinner {
	enum spin_kind kind;
	atomic_int stop;
	long calls;
};

static void *spin(void *arg)
{
	struct spinner *s = arg;
	int p[2];
	CHECK(pipe2(p, O_NONBLOCK) == 0);
	int ep = epoll_create1(0);
	CHECK(ep >= 0);
	/* the write end is always writable: an event that is always ready */
	struct epoll_event ev = { .events = EPOLLOUT, .data.fd = p[1] };
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, p[1], &ev) == 0);
	uint64_t end = tc_now_ns() + SPIN_MS * 1000000ull;
	char c;
	while (!atomic_load(&s->stop) && tc_now_ns() < end) {
		switch (s->kind) {
		case SPIN_READ:
			CHECK(read(p[0], &c, 1) == -1 && errno == EAGAIN);
			break;
		case SPIN_POLL0: {
			struct pollfd pf = { .fd = p[0], .events = POLLIN };
			CHECK(poll(&pf, 1, 0) == 0);
			break;
		}
		case SPIN_EPOLL_READY: {
			struct epoll_event out;
			CHECK(epoll_wait(ep, &out, 1, -1) == 1);
			break;
		}
		}
		s->calls++;
	}
	close(ep);
	close(p[0]);
	close(p[1]);
	return NULL;
}

/* On one worker: the spinner starts first, then this thread sleeps 1 ms
 * TICKS times; the longest gap between ticks is what it was starved. */
static void ticker_beside(enum spin_kind kind)
{
	struct spinner s = { .kind = kind };
	pthread_t t = tc_spawn(spin, &s);
	tc_msleep(1); /* the spinner is running now */
	uint64_t worst = 0, prev = tc_now_ns();
	for (int i = 0; i < TICKS; i++) {
		tc_msleep(1);
		uint64_t now = tc_now_ns();
		if (now - prev > worst)
			worst = now - prev;
		prev = now;
	}
	atomic_store(&s.stop, 1);
	tc_join(t);
	fprintf(stderr, "longest gap %.1f ms beside %ld spinning calls\n", worst / 1e6, s.calls);
	CHECK(s.calls > 0);
	CHECK(worst < MAX_GAP_MS * 1000000ull);
}

TCASE(nonblocking_read_loop_does_not_starve_a_sleeper)
{
	tc_run_alone();
	if (tc_rerun_on_workers(1, 30))
		return;
	ticker_beside(SPIN_READ);
}

TCASE(poll_zero_loop_does_not_starve_a_sleeper)
{
	tc_run_alone();
	if (tc_rerun_on_workers(1, 30))
		return;
	ticker_beside(SPIN_POLL0);
}

TCASE(ready_epoll_loop_does_not_starve_a_sleeper)
{
	tc_run_alone();
	if (tc_rerun_on_workers(1, 30))
		return;
	ticker_beside(SPIN_EPOLL_READY);
}
