/* nonblock.c: calls on descriptors with O_NONBLOCK that libthread does
 * not hand to io_uring the usual way, and the CAPRICE_* knobs' parsing.
 *
 * sendfile from a pipe: the kernel's own sendfile refuses a pipe as its
 * input (EINVAL, Linux 5.10 on), but Caprice's splices it through a pipe
 * of its own, so the answer to compare with is the kernel's splice(2)
 * from the same pipe: -EAGAIN when it is empty, the bytes when not.
 *
 * epoll_wait on an epoll fd with O_NONBLOCK: the flag does not change
 * epoll_wait (the kernel waits out the timeout all the same), so the
 * answers must be the plain epoll_pwait's, and the wait must park only
 * the caller.
 *
 * The knobs: a refused value (CAPRICE_HELPERS=banana) gets a one-line
 * warning and the default; the cases run this program again with the
 * variable set. */
#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

/* ------------------------------------------------------------------ */
/* sendfile from an O_NONBLOCK pipe                                   */

/* A pipe whose read end has O_NONBLOCK, and a blocking socket pair to
 * send into. */
struct sf_setup {
	int p[2];
	int s[2];
};

static struct sf_setup sf_setup(void)
{
	struct sf_setup x;
	CHECK_EQ(pipe2(x.p, O_NONBLOCK | O_CLOEXEC), 0);
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, x.s), 0);
	return x;
}

static void sf_close(struct sf_setup *x)
{
	close(x->p[0]);
	close(x->p[1]);
	close(x->s[0]);
	close(x->s[1]);
}

/* What the kernel's splice says for `n` bytes from an O_NONBLOCK pipe
 * holding `have` bytes (-errno or the count). */
static long kernel_splice_answer(const char *data, size_t have, size_t n)
{
	int src[2], dst[2];
	CHECK_EQ(pipe2(src, O_NONBLOCK | O_CLOEXEC), 0);
	CHECK_EQ(pipe2(dst, O_CLOEXEC), 0);
	if (have)
		tc_write_all(src[1], data, have);
	long r = syscall(SYS_splice, src[0], NULL, dst[1], NULL, n, 0U);
	long ans = r < 0 ? -errno : r;
	close(src[0]);
	close(src[1]);
	close(dst[0]);
	close(dst[1]);
	return ans;
}

TCASE(sendfile_from_empty_nonblocking_pipe_is_eagain)
{
	tc_case_limit(20);
	struct sf_setup x = sf_setup();
	CHECK_EQ(kernel_splice_answer("", 0, 100), -EAGAIN);
	uint64_t t0 = tc_now_ns();
	errno = 0;
	CHECK_EQ(sendfile(x.s[0], x.p[0], NULL, 100), -1);
	CHECK_EQ(errno, EAGAIN);
	CHECK_AT_ONCE(tc_now_ns() - t0);
	/* nothing reached the socket */
	char c;
	CHECK_EQ(recv(x.s[1], &c, 1, MSG_DONTWAIT), -1);
	CHECK_EQ(errno, EAGAIN);
	/* the second time too (the pool's pipe went back clean) */
	CHECK_EQ(sendfile(x.s[0], x.p[0], NULL, 100), -1);
	CHECK_EQ(errno, EAGAIN);
	sf_close(&x);
}

TCASE(sendfile_from_nonblocking_pipe_sends_what_it_holds)
{
	tc_case_limit(20);
	static const char msg[] = "caprice sends this";
	const size_t len = sizeof msg - 1;
	struct sf_setup x = sf_setup();
	CHECK_EQ(kernel_splice_answer(msg, len, 100), (long)len);
	tc_write_all(x.p[1], msg, len);
	/* asks for more than there is: the bytes there are, not EAGAIN */
	CHECK_EQ(sendfile(x.s[0], x.p[0], NULL, 100), (long)len);
	char buf[64] = { 0 };
	CHECK_EQ(recv(x.s[1], buf, sizeof buf, 0), (long)len);
	CHECK(memcmp(buf, msg, len) == 0);
	/* the pipe is empty again */
	CHECK_EQ(sendfile(x.s[0], x.p[0], NULL, 100), -1);
	CHECK_EQ(errno, EAGAIN);
	sf_close(&x);
}

TCASE(sendfile_from_nonblocking_pipe_takes_no_more_than_asked)
{
	tc_case_limit(20);
	static const char msg[] = "0123456789abcdef";
	struct sf_setup x = sf_setup();
	CHECK_EQ(kernel_splice_answer(msg, 16, 10), 10);
	tc_write_all(x.p[1], msg, 16);
	CHECK_EQ(sendfile(x.s[0], x.p[0], NULL, 10), 10);
	char buf[32] = { 0 };
	CHECK_EQ(recv(x.s[1], buf, sizeof buf, 0), 10);
	CHECK(memcmp(buf, "0123456789", 10) == 0);
	/* the rest stayed in the pipe, in order */
	CHECK_EQ(read(x.p[0], buf, sizeof buf), 6);
	CHECK(memcmp(buf, "abcdef", 6) == 0);
	/* the writer gone and the pipe empty: end of file, 0 (as splice) */
	close(x.p[1]);
	x.p[1] = -1;
	CHECK_EQ(sendfile(x.s[0], x.p[0], NULL, 10), 0);
	sf_close(&x);
}

TCASE(sendfile_from_nonblocking_pipe_with_offset_is_espipe)
{
	tc_case_limit(20);
	struct sf_setup x = sf_setup();
	tc_write_all(x.p[1], "abc", 3);
	off_t off = 0;
	/* the kernel's sendfile says ESPIPE here too */
	long k = syscall(SYS_sendfile, x.s[0], x.p[0], &off, 3);
	CHECK_EQ(k, -1);
	CHECK_EQ(errno, ESPIPE);
	CHECK_EQ(sendfile(x.s[0], x.p[0], &off, 3), -1);
	CHECK_EQ(errno, ESPIPE);
	CHECK_EQ(off, 0);
	char buf[8];
	CHECK_EQ(read(x.p[0], buf, sizeof buf), 3); /* nothing was taken */
	sf_close(&x);
}

/* ------------------------------------------------------------------ */
/* epoll_wait on an O_NONBLOCK epoll fd                               */

#define EP_TAG 0x5ca1ab1eull

struct ep_setup {
	int ep;
	int p[2]; /* p[0] registered for EPOLLIN */
};

static struct ep_setup ep_setup(void)
{
	struct ep_setup x;
	x.ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK(x.ep >= 0);
	int fl = fcntl(x.ep, F_GETFL);
	CHECK(fl >= 0);
	CHECK_EQ(fcntl(x.ep, F_SETFL, fl | O_NONBLOCK), 0);
	CHECK(fcntl(x.ep, F_GETFL) & O_NONBLOCK);
	CHECK_EQ(pipe2(x.p, O_CLOEXEC), 0);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = EP_TAG };
	CHECK_EQ(epoll_ctl(x.ep, EPOLL_CTL_ADD, x.p[0], &ev), 0);
	return x;
}

static void ep_close(struct ep_setup *x)
{
	close(x->ep);
	close(x->p[0]);
	close(x->p[1]);
}

/* The kernel's answer: epoll_pwait as a plain system call. */
static int kernel_epoll_wait(int ep, struct epoll_event *ev, int max, int ms)
{
	return (int)syscall(SYS_epoll_pwait, ep, ev, max, ms, NULL, 8L);
}

/* With an event ready: 1, the event, at once, whatever the timeout. */
static void ready_event(int timeout_ms)
{
	tc_case_limit(20);
	struct ep_setup x = ep_setup();
	tc_write_all(x.p[1], "x", 1);
	struct epoll_event k[4], ev[4];
	memset(k, 0, sizeof k);
	memset(ev, 0, sizeof ev);
	CHECK_EQ(kernel_epoll_wait(x.ep, k, 4, timeout_ms), 1);
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(epoll_wait(x.ep, ev, 4, timeout_ms), 1);
	CHECK_AT_ONCE(tc_now_ns() - t0);
	CHECK_EQ(ev[0].events, k[0].events);
	CHECK_EQ(ev[0].events, EPOLLIN);
	CHECK_EQ(ev[0].data.u64, k[0].data.u64);
	CHECK_EQ(ev[0].data.u64, EP_TAG);
	ep_close(&x);
}

TCASE(epoll_wait_nonblocking_epfd_ready_timeout_0)
{
	ready_event(0);
}

TCASE(epoll_wait_nonblocking_epfd_ready_timeout_200)
{
	ready_event(200);
}

TCASE(epoll_wait_nonblocking_epfd_ready_no_timeout)
{
	ready_event(-1);
}

TCASE(epoll_wait_nonblocking_epfd_nothing_timeout_0)
{
	tc_case_limit(20);
	struct ep_setup x = ep_setup();
	struct epoll_event ev[4];
	CHECK_EQ(kernel_epoll_wait(x.ep, ev, 4, 0), 0);
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(epoll_wait(x.ep, ev, 4, 0), 0);
	CHECK_AT_ONCE(tc_now_ns() - t0);
	ep_close(&x);
}

/* Nothing comes: the kernel waits out the timeout despite O_NONBLOCK, and
 * so must Caprice (not answer 0 at once, not EAGAIN). */
TCASE(epoll_wait_nonblocking_epfd_nothing_timeout_100)
{
	tc_case_limit(20);
	struct ep_setup x = ep_setup();
	struct epoll_event ev[4];
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(kernel_epoll_wait(x.ep, ev, 4, 100), 0);
	CHECK_MS_RANGE(tc_now_ns() - t0, 100, 100);
	t0 = tc_now_ns();
	CHECK_EQ(epoll_wait(x.ep, ev, 4, 100), 0);
	CHECK_MS_RANGE(tc_now_ns() - t0, 100, 100);
	/* epoll_pwait2 takes the same path with a timespec */
	struct timespec ts = { 0, 100 * 1000000L };
	t0 = tc_now_ns();
	CHECK_EQ(epoll_pwait2(x.ep, ev, 4, &ts, NULL), 0);
	CHECK_MS_RANGE(tc_now_ns() - t0, 100, 100);
	ep_close(&x);
}

static void *write_later(void *arg)
{
	int fd = *(int *)arg;
	tc_msleep(150);
	tc_write_all(fd, "y", 1);
	return NULL;
}

/* The event comes while the caller waits: it wakes with it, and on one
 * worker a ticker kept ticking meanwhile (the wait parked only the
 * caller; the plain call would have stopped the worker). */
TCASE(epoll_wait_nonblocking_epfd_parks_only_the_caller)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	tc_case_limit(20);
	struct ep_setup x = ep_setup();
	pthread_t tk = tc_ticker_start();
	pthread_t wr = tc_spawn(write_later, &x.p[1]);
	struct epoll_event ev[4] = { 0 };
	uint64_t t0 = tc_now_ns();
	CHECK_EQ(epoll_wait(x.ep, ev, 4, 5000), 1);
	CHECK_MS_RANGE(tc_now_ns() - t0, 140, 150);
	CHECK_EQ(ev[0].data.u64, EP_TAG);
	long seen = tc_ticks;
	/* ~150 ticks of 1 ms if nothing stopped the worker; a blocked
	 * worker would show 0 */
	if (seen < 20)
		TFAIL("the ticker ticked %ld times while epoll_wait waited", seen);
	tc_ticker_stop(tk);
	tc_join(wr);
	ep_close(&x);
}

/* ------------------------------------------------------------------ */
/* CAPRICE_* knobs                                                    */

static char lock_path[] = "/tmp/caprice-nonblock-XXXXXX";

/* Run as a child: makes one offloaded call (a flock that must wait runs
 * on a helper kernel thread, so the pool reads CAPRICE_HELPERS), then
 * says it ran. */
TCASE(knob_child_offloads_a_call)
{
	tc_case_limit(20);
	int fd = mkstemp(lock_path);
	CHECK(fd >= 0);
	unlink(lock_path);
	CHECK_EQ(flock(fd, LOCK_EX), 0);
	CHECK_EQ(flock(fd, LOCK_UN), 0);
	close(fd);
	tc_say("knob child ran\n");
}

/* Runs the child with `setting`; it must exit 0 having run, and its
 * output must hold `warning` (NULL: no "caprice:" line at all). */
static void knob_run(const char *setting, const char *warning)
{
	const char *env[] = { setting, NULL };
	char out[4096];
	int st = tc_run_self("knob_child_offloads_a_call", env, out, sizeof out, 30);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		TFAIL("child with %s failed (status %#x):\n%s", setting, st, out);
	if (!strstr(out, "knob child ran\n"))
		TFAIL("child with %s did not run to the end:\n%s", setting, out);
	if (warning && !strstr(out, warning))
		TFAIL("child with %s: no \"%s\" in its output:\n%s", setting, warning, out);
	if (!warning && strstr(out, "caprice:"))
		TFAIL("child with %s said something:\n%s", setting, out);
	if (warning) {
		/* one line, said once */
		const char *first = strstr(out, warning);
		CHECK(strstr(first + 1, warning) == NULL);
	}
}

TCASE(helpers_banana_warns_and_runs)
{
	knob_run("CAPRICE_HELPERS=banana",
	         "caprice: CAPRICE_HELPERS=banana ignored: want a whole number from 1 to 1024\n");
}

TCASE(helpers_junk_or_out_of_range_warns)
{
	knob_run("CAPRICE_HELPERS=7x", "caprice: CAPRICE_HELPERS=7x ignored: ");
	knob_run("CAPRICE_HELPERS=0", "caprice: CAPRICE_HELPERS=0 ignored: ");
	knob_run("CAPRICE_HELPERS=1025", "caprice: CAPRICE_HELPERS=1025 ignored: ");
	knob_run("CAPRICE_HELPERS=99999999999999999999", "caprice: CAPRICE_HELPERS=9999");
}

TCASE(helpers_good_or_empty_is_silent)
{
	knob_run("CAPRICE_HELPERS=1", NULL);
	knob_run("CAPRICE_HELPERS=1024", NULL);
	knob_run("CAPRICE_HELPERS=", NULL);
}

TCASE(stats_and_debug_refused_values_warn)
{
	/* a refused CAPRICE_STATS is off: the warning and no stats */
	knob_run("CAPRICE_STATS=yes",
	         "caprice: CAPRICE_STATS=yes ignored: want a whole number from 0 to 1\n");
	const char *env[] = { "CAPRICE_STATS=yes", NULL };
	char out[4096];
	tc_run_self("knob_child_offloads_a_call", env, out, sizeof out, 30);
	CHECK(strstr(out, "stats:") == NULL);
	knob_run("CAPRICE_DEBUG=banana",
	         "caprice: CAPRICE_DEBUG=banana ignored: want a whole number from 0 to 2\n");
	knob_run("CAPRICE_DEBUG=0", NULL);
	knob_run("CAPRICE_STATS=0", NULL);
}

TCASE(stats_1_still_prints)
{
	const char *env[] = { "CAPRICE_STATS=1", NULL };
	char out[8192];
	int st = tc_run_self("knob_child_offloads_a_call", env, out, sizeof out, 30);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(strstr(out, "caprice: stats: worker 0:") != NULL);
	/* the flock ran on a helper */
	CHECK(strstr(out, "calls ran on 1 helper kernel threads") != NULL);
}
