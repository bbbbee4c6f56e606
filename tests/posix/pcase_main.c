/* pcase_main.c: main() and the helpers of the POSIX side-by-side cases
 * (pcase.h).  Plain C and pthreads only, so that the same file serves the
 * NPTL build and the libthread one. */
#include "pcase.h"
#include "tcase.h" /* its inline clock helpers only: this is no tcase program */

#include <poll.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define MAX_CASES 128

static struct {
	const char *name, *expect;
	pcase_fn fn;
} cases[MAX_CASES];
static int ncases;

void pcase_register(const char *name, const char *expect, pcase_fn fn)
{
	if (ncases == MAX_CASES) {
		fprintf(stderr, "pcase: more than %d cases\n", MAX_CASES);
		exit(2);
	}
	cases[ncases].name = name;
	cases[ncases].expect = expect;
	cases[ncases].fn = fn;
	ncases++;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(1);
		p += w;
		n -= (size_t)w;
	}
}

/* One formatted line to fd, in one write (cut at 1 KiB). */
static void line_to(int fd, const char *fmt, va_list ap)
{
	char buf[1024];
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	if (n < 0)
		n = 0;
	if (n > (int)sizeof buf - 2)
		n = (int)sizeof buf - 2;
	buf[n++] = '\n';
	write_all(fd, buf, (size_t)n);
}

void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	line_to(1, fmt, ap);
	va_end(ap);
}

void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	line_to(2, fmt, ap);
	va_end(ap);
	_exit(1);
}

const char *en(int e)
{
	static char bufs[8][32];
	static int next;
	if (e == 0)
		return "0";
	const char *name = strerrorname_np(e);
	if (name)
		return name;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof bufs[0], "errno%d", e);
	return b;
}

const char *sn(int sig)
{
	static char bufs[8][32];
	static int next;
	const char *abbrev = sigabbrev_np(sig);
	char *b = bufs[next++ % 8];
	if (abbrev)
		snprintf(b, sizeof bufs[0], "SIG%s", abbrev);
	else
		snprintf(b, sizeof bufs[0], "signal%d", sig);
	return b;
}

uint64_t now_ns(void)
{
	return tc_now_ns();
}

void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

struct timespec abs_in_ms(clockid_t clock, long ms)
{
	return tc_abs_ms(clock, ms);
}

pthread_t spawn(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	MUST0(pthread_create(&t, NULL, fn, arg));
	return t;
}

void *join(pthread_t t)
{
	void *r;
	MUST0(pthread_join(t, &r));
	return r;
}

void *shared_mem(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	MUST(p != MAP_FAILED);
	return p;
}

void link_init(struct link *l)
{
	MUST(pipe(l->down) == 0);
	MUST(pipe(l->up) == 0);
	l->child = false;
}

void link_send(struct link *l, char c)
{
	write_all(l->child ? l->up[1] : l->down[1], &c, 1);
}

int link_recv(struct link *l, long ms)
{
	int fd = l->child ? l->down[0] : l->up[0];
	uint64_t end = now_ns() + (uint64_t)ms * 1000000u;
	for (;;) {
		uint64_t now = now_ns();
		if (now >= end)
			return -1;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, (int)((end - now) / 1000000u) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("poll: %s", strerror(errno));
		if (r == 0)
			continue;
		char c;
		ssize_t n = read(fd, &c, 1);
		if (n == 1)
			return (unsigned char)c;
		if (n < 0 && errno == EINTR)
			continue;
		return -1; /* EOF: the other side is gone */
	}
}

pid_t fork_child(struct link *l, void (*fn)(struct link *, void *), void *arg)
{
	pid_t pid = fork();
	MUST(pid >= 0);
	if (pid == 0) {
		alarm(20); /* default action: a hung child ends */
		if (l) {
			l->child = true;
			close(l->down[1]);
			close(l->up[0]);
		}
		fn(l, arg);
		_exit(0);
	}
	if (l) {
		close(l->down[0]);
		close(l->up[1]);
	}
	return pid;
}

const char *wait_child(pid_t pid, long ms)
{
	static char buf[32];
	uint64_t end = now_ns() + (uint64_t)ms * 1000000u;
	int st;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			die("waitpid: %s", strerror(errno));
		if (now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return "hung";
		}
		sleep_ms(1);
	}
	if (WIFEXITED(st))
		snprintf(buf, sizeof buf, "exit%d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, sizeof buf, "%s", sn(WTERMSIG(st)));
	else
		snprintf(buf, sizeof buf, "status%#x", st);
	return buf;
}

const char *unique_name(const char *tag)
{
	static char bufs[4][64];
	static int next;
	char *b = bufs[next++ % 4];
	snprintf(b, sizeof bufs[0], "/caprice-posix-%d-%s", (int)getpid(), tag);
	return b;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		for (int i = 0; i < ncases; i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	bool expect = argc == 3 && strcmp(argv[1], "--expect") == 0;
	if (argc != 2 && !expect) {
		fprintf(stderr, "usage: %s --list | --expect CASE | CASE\n", argv[0]);
		return 2;
	}
	const char *name = argv[argc - 1];
	for (int i = 0; i < ncases; i++) {
		if (strcmp(cases[i].name, name) != 0)
			continue;
		if (expect) {
			fputs(cases[i].expect, stdout);
			return 0;
		}
		cases[i].fn();
		return 0;
	}
	fprintf(stderr, "%s: no case named %s\n", argv[0], name);
	return 2;
}
