/* rawfutex.c: a program's own futex waits (syscall(SYS_futex, ...), as
 * InnoDB's locks make them) park only the calling user thread, and are
 * woken by any FUTEX_WAKE: another user thread, or another process on a
 * shared word.  Every other syscall() goes to the kernel unchanged. */
#include <errno.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tcase.h"

static long futex(uint32_t *w, int op, uint32_t val, const struct timespec *ts, uint32_t val3)
{
	return syscall(SYS_futex, w, op, val, ts, NULL, val3);
}

struct waiter {
	uint32_t word;
	atomic_int returned;
	long ret;
	int err;
};

static void *wait_on_word(void *arg)
{
	struct waiter *w = arg;
	while (__atomic_load_n(&w->word, __ATOMIC_ACQUIRE) == 0) {
		w->ret = futex(&w->word, FUTEX_WAIT_PRIVATE, 0, NULL, 0);
		w->err = w->ret < 0 ? errno : 0;
	}
	atomic_store(&w->returned, 1);
	return NULL;
}

/* On one worker: were the wait a blocking syscall, this thread's sleeps
 * would never end (the waiter holds the only worker) and the case would
 * hang until the runner's limit. */
static void one_worker_wait_parks_only_the_caller(void)
{
	tc_watchdog(20);
	struct waiter w = { 0 };
	pthread_t t = tc_spawn(wait_on_word, &w);
	for (int i = 0; i < 20; i++)
		tc_msleep(1);
	CHECK(!atomic_load(&w.returned));
	__atomic_store_n(&w.word, 1, __ATOMIC_RELEASE);
	CHECK(futex(&w.word, FUTEX_WAKE_PRIVATE, 1, NULL, 0) >= 0);
	tc_join(t);
	CHECK(atomic_load(&w.returned));
}

TCASE(futex_wait_parks_only_the_caller)
{
	if (tc_rerun_on_workers(1, 30))
		return;
	one_worker_wait_parks_only_the_caller();
}

TCASE(shared_futex_woken_by_another_process)
{
	tc_watchdog(20);
	uint32_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(word != MAP_FAILED);
	*word = 0;
	uint64_t t0 = tc_now_ns(); /* before fork: the child's sleep starts there */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct timespec d = { 0, 100 * 1000000L };
		syscall(SYS_nanosleep, &d, NULL); /* the parent is waiting by now */
		__atomic_store_n(word, 1, __ATOMIC_RELEASE);
		syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
		_exit(0);
	}
	while (__atomic_load_n(word, __ATOMIC_ACQUIRE) == 0)
		CHECK(futex(word, FUTEX_WAIT, 0, NULL, 0) == 0 || errno == EAGAIN || errno == EINTR);
	uint64_t waited = tc_now_ns() - t0;
	if (waited < 50 * 1000000ull)
		TFAIL("woken after %.1f ms, before the child could have woken it", waited / 1e6);
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	munmap(word, 4096);
}

TCASE(futex_wait_timeouts_and_errors)
{
	uint32_t word = 0;
	/* relative timeout */
	struct timespec rel = { 0, 50 * 1000000L };
	uint64_t t0 = tc_now_ns();
	CHECK(futex(&word, FUTEX_WAIT_PRIVATE, 0, &rel, 0) == -1);
	CHECK_EQ(errno, ETIMEDOUT);
	CHECK_MS_RANGE(tc_now_ns() - t0, 50, 50);
	/* absolute timeout on CLOCK_MONOTONIC */
	struct timespec abs = tc_abs_ms(CLOCK_MONOTONIC, 50);
	t0 = tc_now_ns();
	CHECK(futex(&word, FUTEX_WAIT_BITSET_PRIVATE, 0, &abs, FUTEX_BITSET_MATCH_ANY) == -1);
	CHECK_EQ(errno, ETIMEDOUT);
	CHECK_MS_RANGE(tc_now_ns() - t0, 40, 50);
	/* a deadline already past, on CLOCK_REALTIME */
	struct timespec past = tc_abs_ms_ago(CLOCK_REALTIME, 10);
	CHECK(futex(&word, FUTEX_WAIT_BITSET_PRIVATE | FUTEX_CLOCK_REALTIME, 0, &past,
	            FUTEX_BITSET_MATCH_ANY) == -1);
	CHECK_EQ(errno, ETIMEDOUT);
	/* the word no longer holds the value: EAGAIN, at once */
	CHECK(futex(&word, FUTEX_WAIT_PRIVATE, 1, NULL, 0) == -1);
	CHECK_EQ(errno, EAGAIN);
	/* bad arguments, as the kernel answers them */
	struct timespec bad = { 0, 1000000000L };
	CHECK(futex(&word, FUTEX_WAIT_PRIVATE, 0, &bad, 0) == -1);
	CHECK_EQ(errno, EINVAL);
	CHECK(futex(&word, FUTEX_WAIT_BITSET_PRIVATE, 0, NULL, 0) == -1);
	CHECK_EQ(errno, EINVAL);
}

TCASE(other_syscalls_pass_through)
{
	CHECK_EQ(syscall(SYS_getpid), getpid());
	CHECK_EQ(syscall(SYS_close, -1), -1);
	CHECK_EQ(errno, EBADF);
	uint32_t word = 0;
	CHECK_EQ(futex(&word, FUTEX_WAKE_PRIVATE, 1, NULL, 0), 0); /* nobody waits */
}
