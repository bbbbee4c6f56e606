/* tcase.h: a tiny harness for test programs that link libthread.
 *
 * The runtime under test must not live inside the test runner (Criterion's
 * own threads would run on it), so each test program is an ordinary
 * program linked with -lthread holding many cases; tests/runner.c runs
 * every case as its own process under Criterion.  `prog --list` names the
 * cases, `prog CASE` runs one: exit 0 is a pass, TSKIP's exit a skip,
 * anything else (a failed CHECK, a crash, the runner's timeout) a
 * failure. */
#ifndef CAPRICE_TCASE_H
#define CAPRICE_TCASE_H

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef void (*tcase_fn)(void);
void tcase_register(const char *name, tcase_fn fn);
/* The name of the case this process runs. */
const char *tcase_current(void);
/* Set: once the case returns, main writes TCASE_RETURNED_LINE to stdout
 * (tc_rerun_on_workers's child, so its parent can tell a case that ran
 * to its end from a process that exited 0 halfway). */
extern bool tcase_report_return;
#define TCASE_RETURNED_LINE "tcase: the case returned\n"

#define TCASE(name)                                                         \
	static void tcase_##name(void);                                     \
	__attribute__((constructor)) static void tcase_reg_##name(void)     \
	{                                                                   \
		tcase_register(#name, tcase_##name);                        \
	}                                                                   \
	static void tcase_##name(void)

#define TFAIL(...)                                                          \
	do {                                                                \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);             \
		fprintf(stderr, __VA_ARGS__);                               \
		fputc('\n', stderr);                                        \
		fflush(NULL);                                               \
		_exit(1);                                                   \
	} while (0)

/* Ends the case as skipped, saying why (it cannot run in this build or on
 * this machine): a line TCASE_SKIP_MARK + the reason, then exit status
 * TCASE_SKIP_EXIT.  The runner counts the case as skipped, not passed,
 * and prints it with its reason; scripts/test lists the skips at the end. */
#define TCASE_SKIP_EXIT 77
#define TCASE_SKIP_MARK "tcase-skip: "
#define TSKIP(...)                                                          \
	do {                                                                \
		fflush(NULL);                                               \
		printf(TCASE_SKIP_MARK);                                    \
		printf(__VA_ARGS__);                                        \
		putchar('\n');                                              \
		fflush(NULL);                                               \
		_exit(TCASE_SKIP_EXIT);                                     \
	} while (0)

#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c))                                                   \
			TFAIL("CHECK failed: %s", #c);                      \
	} while (0)

#define CHECK_EQ(a, b)                                                      \
	do {                                                                \
		long long va_ = (long long)(a), vb_ = (long long)(b);       \
		if (va_ != vb_)                                             \
			TFAIL("CHECK_EQ failed: %s == %lld, %s == %lld", #a, va_, #b, vb_); \
	} while (0)

/* A pthread call that must return 0 (they return error numbers). */
#define CHECK_OK(call)                                                      \
	do {                                                                \
		int e_ = (call);                                            \
		if (e_ != 0)                                                \
			TFAIL("%s returned %d (%s)", #call, e_, strerror(e_));   \
	} while (0)

static inline uint64_t tc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* How late a timed event may be before a case calls it a failure.
 * Deadlines are checked strictly on the early side (firing early is a bug),
 * but a 2-core CI machine running many sanitized cases at once can delay
 * any wakeup by hundreds of ms, so the late side gets this much slack:
 * enough to tell "late" from "never" or "waited for the wrong thing".
 * CAPRICE_TEST_SLACK_MS overrides it. */
static inline long tc_slack_ms(void)
{
	const char *env = getenv("CAPRICE_TEST_SLACK_MS");
	if (env && *env)
		return atol(env);
	return getenv("CAPRICE_TEST_SANITIZED") ? 2500 : 1000;
}

/* An upper bound of `ms` as the cases write it, plus the slack. */
static inline uint64_t tc_late_ns(long ms)
{
	return (uint64_t)(ms + tc_slack_ms()) * 1000000u;
}

/* elapsed (ns) must lie in [lo_ms, hi_ms + slack] */
#define CHECK_MS_RANGE(elapsed, lo_ms, hi_ms)                                   \
	tc_check_ms_range(__FILE__, __LINE__, #elapsed, (elapsed), (lo_ms), (hi_ms))

static inline void tc_check_ms_range(const char *file, int line, const char *what, uint64_t el,
                                     long lo, long hi)
{
	if (el < (uint64_t)lo * 1000000u || el > tc_late_ns(hi)) {
		fprintf(stderr, "%s:%d: %s took %.3f ms, wanted %ld..%ld ms (+%ld ms slack)\n", file,
		        line, what, el / 1e6, lo, hi, tc_slack_ms());
		fflush(NULL);
		_exit(1);
	}
}

/* "At once": how long a call that must not wait at all may take (a zero
 * timeout, descriptors already ready, EAGAIN, a refused connect, a close
 * beside a blocked call), and how long after its cause a blocked call
 * must end (a write, close or reset waking it).  Not tc_slack_ms(): with
 * a second of slack, a call that waited a whole timeout for nothing
 * would still pass.
 *
 * Measured on a 2-core machine running two cases at once (as the runner
 * does) and two busy loops besides: the slowest of these took 0.15 ms
 * optimized and 4.7 ms with ASan+UBSan.  What can make one late is losing
 * the CPU to a neighbour for a scheduler slice or two: loops of 2000 such
 * calls, which are all but sure to be preempted, saw a slowest call of
 * 28 ms (40 ms with ASan) there.  So 50 ms, and 150 ms in a sanitized
 * build (CAPRICE_TEST_SANITIZED), where everything is slower.
 * CAPRICE_TEST_AT_ONCE_MS overrides them; CAPRICE_TEST_SHOW_TIMES=1
 * prints every such time, to measure them again. */
static inline long tc_at_once_ms(void)
{
	const char *env = getenv("CAPRICE_TEST_AT_ONCE_MS");
	if (env && *env)
		return atol(env);
	return getenv("CAPRICE_TEST_SANITIZED") ? 150 : 50;
}

/* elapsed (ns) must be at most tc_at_once_ms() */
#define CHECK_AT_ONCE(elapsed) tc_check_at_once(__FILE__, __LINE__, #elapsed, (elapsed))

static inline void tc_check_at_once(const char *file, int line, const char *what, uint64_t el)
{
	if (getenv("CAPRICE_TEST_SHOW_TIMES"))
		fprintf(stderr, "%s:%d: %s took %.3f ms (at once)\n", file, line, what, el / 1e6);
	if (el > (uint64_t)tc_at_once_ms() * 1000000u) {
		fprintf(stderr, "%s:%d: %s took %.3f ms, wanted at once (%ld ms at most)\n", file,
		        line, what, el / 1e6, tc_at_once_ms());
		fflush(NULL);
		_exit(1);
	}
}

/* An absolute time `ms` from now on `clock`, for timed calls. */
static inline struct timespec tc_abs_ms(clockid_t clock, long ms)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}


/* An absolute time `ms` milliseconds ago on `clock` (tc_abs_ms wants
 * ms >= 0). */
static inline struct timespec tc_abs_ms_ago(clockid_t clock, long ms)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	ts.tv_sec -= ms / 1000;
	ts.tv_nsec -= (ms % 1000) * 1000000L;
	if (ts.tv_nsec < 0) {
		ts.tv_sec--;
		ts.tv_nsec += 1000000000L;
	}
	return ts;
}

/* Sleeps ms milliseconds, resuming after signals. */
static inline void tc_msleep(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* A case that hangs because of a runtime bug ends itself (SIGALRM's
 * default action) well before the runner's limit. */
static inline void tc_case_limit(unsigned s)
{
	alarm(s);
}

/* The byte at offset i of a test stream: no short period, so a lost,
 * duplicated or reordered chunk shows. */
static inline uint8_t tc_pattern(uint64_t seed, uint64_t i)
{
	uint64_t x = (i + seed * 0x9e3779b97f4a7c15ull) * 0xff51afd7ed558ccdull;
	return (uint8_t)(x >> 56 ^ x >> 29);
}

/* ---- tcase_util.c ---- */

/* pthread_create/pthread_join that must succeed. */
pthread_t tc_spawn(void *(*fn)(void *), void *arg);
void *tc_join(pthread_t t);
/* Joins t, failing the case if it has not ended within ms. */
void tc_join_within(pthread_t t, long ms, const char *what);
/* A thread body: stores its scheduling policy and priority in
 * ((int *)arg)[0] and [1]; returns 1 if it cannot read them. */
void *tc_report_sched(void *arg);

/* This process's resident memory in KiB (/proc/self/statm), and its
 * minor page faults so far. */
long tc_rss_kib(void);
long tc_minor_faults(void);
/* Waits up to ms for the resident memory to come within bound KiB above
 * base; returns the last reading. */
long tc_await_rss_within(long base, long bound, long ms);

/* Writes all n bytes (any short or failed write fails the case; EINTR
 * is not retried). */
void tc_write_all(int fd, const void *buf, size_t n);
/* Writes a line to stdout with one write(2), unbuffered and apart from
 * the I/O layer, so it survives however the process ends. */
void tc_say(const char *s);

/* Cases that run this program again: the child has TC_CHILD=1. */
bool tc_in_child(void);
/* This program's path, from /proc/self/exe. */
void tc_self_exe(char exe[PATH_MAX]);
/* A calloc'd environment for a child: this one without TC_CHILD and
 * without the names set in extra (NAME=VALUE strings, NULL-terminated,
 * may be NULL), then extra, then TC_CHILD=1.  Free the array only. */
char **tc_child_env(const char *const *extra);
/* Runs `this-program case_name` in the environment of tc_child_env(extra)
 * and waits for it; its stdout+stderr go to a memory file (no pipe or
 * poll(), so this does not depend on the I/O layer), of which up to
 * outsz - 1 bytes come back in out, NUL-terminated.  Returns its wait
 * status; kills it and fails the case if it runs over limit_s seconds. */
int tc_run_self(const char *case_name, const char *const *extra, char *out, size_t outsz,
                int limit_s);

/* Runs the calling case again on `workers` workers: in the case's own
 * process it runs `this-program CASE` with CAPRICE_WORKERS=workers
 * (tc_run_self, with limit_s), passes the child's output on, fails the
 * case unless the child ran the case to its end and exited 0, and
 * returns true: the caller then returns.  In that child it checks the
 * worker count and returns false: the caller goes on with the case's
 * body.  So:
 *     if (tc_rerun_on_workers(1, 30))
 *             return;
 *     ...the body, run on one worker... */
__attribute__((warn_unused_result)) bool tc_rerun_on_workers(int workers, int limit_s);

/* For a case whose body must end the process with a message: in the
 * case's own process it runs `this-program CASE` (tc_run_self, with the
 * NAME=VALUE strings of extra, may be NULL), passes the child's output on,
 * fails the case if the child exited 0 or its output lacks any of the
 * NULL-terminated `messages`, and returns true: the caller then returns.
 * In that child it returns false, and the body goes on. */
__attribute__((warn_unused_result)) bool tc_rerun_must_die(const char *const *extra,
                                                           const char *const *messages);

/* The C library's own definition of `name` (pthread_create, sem_post...),
 * past libthread's: what an NPTL program runs.  Fails the case if it is
 * missing. */
void *tc_libc_sym(const char *name);
/* A plain kernel thread made by the C library's pthread_create (it waits
 * on futexes instead of parking), and its join, which returns its result. */
void tc_foreign_run(void *(*fn)(void *), void *arg, pthread_t *t);
void *tc_foreign_join(pthread_t t);

/* A file's first line, without its newline ("" if unreadable); where
 * each kernel thread of pid is (name, state, wait channel, system call),
 * on stderr, for a hung child (tcase_proc.c). */
void tc_read_first_line(const char *path, char *out, size_t n);
void tc_dump_tasks(pid_t pid);

/* A system call the library cannot see, made with the instruction: its
 * syscall() keeps its caches, and a C library's own internal calls are
 * made this way. */
static inline long tc_invisible_syscall(long nr, long a1, long a2, long a3)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "0"(nr), "D"(a1), "S"(a2), "d"(a3)
	                 : "rcx", "r11", "memory");
	return r;
}

/* Zeroed memory a fork's child shares with its parent (MAP_SHARED). */
void *tc_shared_alloc(size_t n);
/* Waits for a child and checks that it exited with status 0. */
void tc_child_ok(pid_t pid);

/* A thread that sleeps 1 ms at a time and counts in tc_ticks: a case on
 * one worker shows that a call parked only its caller by the ticks that
 * went on meanwhile (a call that held the worker would show none). */
extern volatile long tc_ticks;
pthread_t tc_ticker_start(void);
void tc_ticker_stop(pthread_t t);

/* Cases that measure how soon something runs, and cases that load both
 * cores for seconds (real servers under load), must not run beside each
 * other: the runner runs two cases at once, and a 1 ms ticker next to
 * MariaDB serving 512 clients waits hundreds of ms for a core whatever the
 * runtime does.  Such a case calls this first: it waits until no other
 * such case runs (an flock on the file the runner names in
 * TCASE_ALONE_LOCK; nothing when run by hand).  A rerun child (TC_CHILD)
 * runs under its parent's lock. */
void tc_run_alone(void);

/* A lost wakeup shows as a hang: after `s` seconds the case fails (exit
 * 3, with a message) instead. */
void tc_watchdog(unsigned s);
/* Sets the bit of the worker this runs on in *mask. */
void tc_note_worker(uint64_t *mask);
/* How many workers *mask has seen. */
int tc_count_workers(const uint64_t *mask);
/* Threads start on their creator's worker and idle workers steal only
 * now and then: noting each worker in *mask, yields (for 2 s at most)
 * until a second one has taken some, so that stress really runs in
 * parallel. */
void tc_spread(uint64_t *mask);
/* With two workers or more, *mask must have seen at least two. */
void tc_check_spread(const uint64_t *mask);

#endif
