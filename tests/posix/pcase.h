/* pcase.h: the harness of the POSIX side-by-side cases (tests/posix/).
 *
 * The same sources are built twice: as a plain -pthread program (NPTL)
 * and linked with libthread, and posix_driver.c runs the NPTL build
 * plainly, the NPTL build under the shim and the linked build, and wants
 * the same output from all three.  So a case does not judge: it prints
 * what it observed, a few deterministic lines (`trylock=EBUSY`,
 * `order=30 20 10`), never a time or an id, and returns.  Each case also
 * states what POSIX (or NPTL's documentation, where POSIX is silent)
 * says it must observe; the driver holds NPTL's run to that first.
 *
 *   prog --list            the cases, one a line
 *   prog --expect CASE     what the case must print
 *   prog CASE              runs it: exit 0 unless something broke (a
 *                          harness call failed, or a crash)
 *
 * A case that cannot run here prints a line "unsupported: REASON" first
 * and returns (the driver then skips it).  Nothing here may assume
 * libthread: this header and pcase_main.c are plain C and pthreads. */
#ifndef CAPRICE_PCASE_H
#define CAPRICE_PCASE_H

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

typedef void (*pcase_fn)(void);
void pcase_register(const char *name, const char *expect, pcase_fn fn);

/* PCASE(name, "line\nline\n") { body }: the expected output is the
 * whole of what the body prints through say(). */
#define PCASE(name, expect)                                                 \
	static void pcase_##name(void);                                     \
	__attribute__((constructor)) static void pcase_reg_##name(void)     \
	{                                                                   \
		pcase_register(#name, expect, pcase_##name);                \
	}                                                                   \
	static void pcase_##name(void)

/* One line of output, written at once with write(2) (no stdio buffer a
 * fork could copy). */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A harness call that failed (not an observation): message on stderr,
 * exit 1. */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define MUST(c)                                                             \
	do {                                                                \
		if (!(c))                                                   \
			die("%s:%d: %s failed (errno %d)", __FILE__, __LINE__, #c, errno); \
	} while (0)
/* a pthread call that must return 0 */
#define MUST0(call)                                                         \
	do {                                                                \
		int e_ = (call);                                            \
		if (e_ != 0)                                                \
			die("%s:%d: %s returned %d", __FILE__, __LINE__, #call, e_); \
	} while (0)

/* "0" or the errno's name (EBUSY).  Distinct static buffers for a few
 * calls in one say(). */
const char *en(int e);
/* a signal's name (SIGUSR1) */
const char *sn(int sig);

uint64_t now_ns(void);
void sleep_ms(long ms);                         /* resumes after EINTR */
struct timespec abs_in_ms(clockid_t clock, long ms);

pthread_t spawn(void *(*fn)(void *), void *arg);
void *join(pthread_t t);

/* Anonymous MAP_SHARED memory, zeroed: shared with children forked after. */
void *shared_mem(size_t n);

/* Two pipes between a parent and the child it forks next.  After
 * fork_child, each side sends one byte with link_send and waits for one
 * with link_recv, which gives up after ms (returns -1: timeout or the
 * other side gone). */
struct link {
	int down[2], up[2];
	bool child;
};
void link_init(struct link *l);
void link_send(struct link *l, char c);
int link_recv(struct link *l, long ms);

/* Forks; the child runs fn(arg) and _exits 0 (a backstop alarm ends a
 * child that hangs).  l, when not NULL, is set up for that side. */
pid_t fork_child(struct link *l, void (*fn)(struct link *, void *), void *arg);
/* Waits up to ms for the child; kills it past that.  Returns a short
 * description: "exit0", "exit3", "SIGKILL", "hung". */
const char *wait_child(pid_t pid, long ms);

/* A string unique to this process, for the names of named semaphores. */
const char *unique_name(const char *tag);

#endif
