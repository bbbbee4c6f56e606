/* linked.c: linked stacks (sched/linked.c, sched/morestack.S).  This
 * program is compiled with -fsplit-stack and linked by gold, as
 * `pkg-config --cflags --libs caprice` says, so threads whose start
 * routine is here run on chunks that grow and shrink with their calls. */
#include <execinfo.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

#define KiB 1024ul
#define MiB (1024ul * 1024)

/* gold gives a function that calls code without split-stack prologues
 * (the C library, libthread) a big chunk for its whole frame, so the
 * functions measured here call caprice_stack_info only through these,
 * which are never inlined */
static __attribute__((noinline)) struct caprice_stack_info info(void)
{
	struct caprice_stack_info s;
	CHECK_EQ(caprice_stack_info(&s), 0);
	return s;
}

static pthread_t spawn_capped(void *(*fn)(void *), void *arg, size_t cap)
{
	pthread_attr_t a;
	CHECK_OK(pthread_attr_init(&a));
	if (cap)
		CHECK_OK(pthread_attr_setstacksize(&a, cap));
	pthread_t t;
	CHECK_OK(pthread_create(&t, &a, fn, arg));
	pthread_attr_destroy(&a);
	return t;
}

/* what the thread's split-stack code runs on (info() itself runs on a big
 * chunk: its CHECK calls the C library) */
static __attribute__((noinline)) size_t small_bytes(void)
{
	struct caprice_stack_info s = info();
	return s.bytes - s.big_bytes;
}

static __attribute__((noinline)) int is_linked(void)
{
	return info().linked;
}

static __attribute__((noinline)) uint64_t chunks_mapped(void)
{
	return info().chunks_mapped;
}

/* about 1 KiB of frame per level, which the compiler cannot drop */
static __attribute__((noinline)) long deep(long n, size_t *deepest)
{
	volatile char pad[1000];
	pad[0] = (char)n;
	pad[999] = (char)(n >> 8);
	if (n == 0) {
		*deepest = small_bytes();
		return 0;
	}
	return n + deep(n - 1, deepest) + (pad[0] - (char)n) + (pad[999] - (char)(n >> 8));
}

/* ---- growth, shrinking, the cap ---- */

struct grow {
	size_t start, deepest, after;
	long levels, sum;
	int linked;
};

static void *grow_and_shrink(void *arg)
{
	struct grow *g = arg;
	g->linked = is_linked();
	g->start = small_bytes();
	g->sum = deep(g->levels, &g->deepest);
	g->after = small_bytes();
	return NULL;
}

TCASE(recursion_of_100_mib_grows_then_gives_back)
{
	struct grow g = { .levels = 100 * 1024 };
	tc_join(spawn_capped(grow_and_shrink, &g, 256 * MiB));
	printf("start %zu bytes, deepest %zu, after %zu\n", g.start, g.deepest, g.after);
	CHECK_EQ(g.linked, 1);
	CHECK(g.start <= 2 * KiB);
	CHECK(g.deepest >= 100 * MiB);
	CHECK_EQ(g.sum, g.levels * (g.levels + 1) / 2);
	/* what stays: the first chunk and the one kept for the next call */
	CHECK(g.after <= 2 * KiB + 128 * KiB);
}

TCASE(threads_start_on_one_small_chunk)
{
	struct grow g[50];
	pthread_t t[50];
	for (int i = 0; i < 50; i++) {
		g[i] = (struct grow){ .levels = 1 };
		t[i] = tc_spawn(grow_and_shrink, &g[i]);
	}
	for (int i = 0; i < 50; i++) {
		tc_join(t[i]);
		CHECK_EQ(g[i].linked, 1);
		CHECK_EQ(g[i].start, 2 * KiB);
	}
}

/* ---- a thread that blocks in the library stays on its first chunk ---- */

static __attribute__((noinline)) uint64_t big_calls(void)
{
	struct caprice_stack_info s;
	caprice_stack_info(&s); /* libthread is split-stack code itself */
	return s.big_calls;
}

struct blockers {
	pthread_mutex_t m;
	pthread_cond_t cv;
	sem_t sem;
	int pipe[2];
	int ready;
	uint64_t big_before, big_after;
	struct caprice_stack_info blocked;
	int bad;
};

/* Calls nothing but libthread, which is split-stack code: each wait parks
 * the thread on the chunk it started on */
static __attribute__((noinline)) int block_in_library(struct blockers *b)
{
	int bad = 0;
	b->big_before = big_calls();
	pthread_mutex_lock(&b->m);
	b->ready = 1;
	pthread_cond_signal(&b->cv);
	while (b->ready != 2)
		bad |= pthread_cond_wait(&b->cv, &b->m);
	pthread_mutex_unlock(&b->m);
	bad |= sem_wait(&b->sem);
	char c;
	bad |= read(b->pipe[0], &c, 1) != 1;
	struct timespec ms = { 0, 1000000 };
	bad |= nanosleep(&ms, NULL);
	caprice_stack_info(&b->blocked); /* libthread alone: no CHECK */
	b->big_after = big_calls();
	return bad;
}

static void *blocker(void *arg)
{
	struct blockers *b = arg;
	b->bad = block_in_library(b); /* checked by the main thread: a CHECK
	                                 here would call the C library */
	return NULL;
}

TCASE(a_thread_blocked_in_the_library_stays_on_its_first_chunk)
{
	/* one worker: under the 2D policy each worker keeps its own cache of
	 * call sites (sched/location.c), so a thread that moved to the other
	 * worker walked a site there again (CI's 2d pass once counted 5) */
	if (tc_rerun_on_workers(1, 30))
		return;
	struct blockers b = { .m = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	CHECK_OK(sem_init(&b.sem, 0, 0));
	CHECK_EQ(pipe(b.pipe), 0);
	pthread_t t = tc_spawn(blocker, &b);
	pthread_mutex_lock(&b.m);
	while (b.ready != 1)
		pthread_cond_wait(&b.cv, &b.m);
	b.ready = 2;
	pthread_cond_signal(&b.cv);
	pthread_mutex_unlock(&b.m);
	usleep(2000);
	CHECK_OK(sem_post(&b.sem));
	usleep(2000);
	CHECK_EQ(write(b.pipe[1], "x", 1), 1);
	tc_join(t);
	printf("calls on a big chunk while blocking: %llu; stack %zu bytes, %zu of them big\n",
	       (unsigned long long)(b.big_after - b.big_before), b.blocked.bytes,
	       b.blocked.big_bytes);
	CHECK_EQ(b.bad, 0);
	/* under the 2D policy, a call site's first park walks the program's
	 * frames with libgcc's unwinder, code without split-stack prologues:
	 * one big-chunk call for each of the four sites, never again */
	const char *sched = getenv("CAPRICE_SCHED");
	unsigned long long first_walks = sched && strcmp(sched, "2d") == 0 ? 4 : 0;
	CHECK(b.big_after - b.big_before <= first_walks);
	CHECK_EQ(b.blocked.big_bytes, 0);
	CHECK_EQ(b.blocked.bytes, 2 * KiB);
	close(b.pipe[0]);
	close(b.pipe[1]);
	sem_destroy(&b.sem);
}

static __attribute__((no_split_stack)) void *plain_start(void *arg)
{
	struct caprice_stack_info *s = arg;
	caprice_stack_info(s);
	return NULL;
}

TCASE(code_without_prologues_gets_a_contiguous_stack)
{
	struct caprice_stack_info s;
	tc_join(tc_spawn(plain_start, &s));
	CHECK_EQ(s.linked, 0);
	CHECK(s.bytes >= 64 * KiB);
}

TCASE(caprice_stacks_contiguous_turns_them_off)
{
	if (!tc_in_child()) {
		const char *const env[] = { "CAPRICE_STACKS=contiguous", NULL };
		static char out[8192];
		int st = tc_run_self(tcase_current(), env, out, sizeof out, 30);
		fputs(out, stdout);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		return;
	}
	struct grow g = { .levels = 10 };
	tc_join(tc_spawn(grow_and_shrink, &g));
	CHECK_EQ(g.linked, 0);
}

static void *overflow(void *arg)
{
	(void)arg;
	size_t deepest;
	deep(1L << 40, &deepest);
	return NULL;
}

TCASE(going_past_the_cap_ends_with_a_message)
{
	static const char *const said[] = { "stack overflow in thread",
		                            "pthread_attr_setstacksize", NULL };
	if (tc_rerun_must_die(NULL, said))
		return;
	tc_join(spawn_capped(overflow, NULL, 1 * MiB));
	TFAIL("a recursion without end returned");
}

/* ---- the hot split ---- */

static __attribute__((noinline)) int big_frame(int i)
{
	volatile char buf[7500]; /* never fits in the first chunk (2 KiB) */
	buf[i % 7500] = (char)i;
	return buf[i % 7500];
}

static __attribute__((noinline)) long hot_loop(void)
{
	long sum = 0;
	for (int i = 0; i < 200000; i++)
		sum += big_frame(i);
	return sum;
}

static void *hot_split(void *arg)
{
	uint64_t *mapped = arg;
	big_frame(1); /* the first call takes a chunk; the rest reuse it */
	mapped[0] = chunks_mapped();
	mapped[2] = small_bytes();
	mapped[3] = (uint64_t)hot_loop();
	mapped[1] = chunks_mapped();
	mapped[4] = small_bytes();
	return NULL;
}

TCASE(a_call_in_a_loop_at_a_chunk_boundary_allocates_nothing)
{
	uint64_t mapped[5];
	tc_join(tc_spawn(hot_split, mapped));
	printf("chunks mapped: %llu before the loop, %llu after; the thread's chunks: %llu bytes, "
	       "%llu after\n", (unsigned long long)mapped[0], (unsigned long long)mapped[1],
	       (unsigned long long)mapped[2], (unsigned long long)mapped[4]);
	CHECK(mapped[0] >= 2); /* its first chunk and the one big_frame needs */
	CHECK_EQ(mapped[0], mapped[1]);
	CHECK_EQ(mapped[2], mapped[4]);
	CHECK(mapped[3] != 0);
}

/* ---- calls out and back in ---- */

static int by_value(const void *a, const void *b)
{
	size_t deepest;
	/* each comparison grows the stack a little: split code called back
	 * from the C library, on the big chunk that call runs on */
	long x = *(const int *)a, y = *(const int *)b;
	return (int)((x + deep(3, &deepest) - 6) - y);
}

static void *sort_and_search(void *arg)
{
	(void)arg;
	enum { N = 2000 };
	static int v[N];
	for (int i = 0; i < N; i++)
		v[i] = (i * 7919) % N;
	qsort(v, N, sizeof v[0], by_value);
	for (int i = 0; i < N; i++)
		CHECK_EQ(v[i], i);
	for (int k = 0; k < N; k += 37) {
		int *hit = bsearch(&k, v, N, sizeof v[0], by_value);
		CHECK(hit && *hit == k);
	}
	return NULL;
}

TCASE(qsort_and_bsearch_call_back_into_split_code)
{
	tc_join(tc_spawn(sort_and_search, NULL));
}

static __attribute__((noinline)) long many_args(long a, long b, long c, long d, long e, long f,
                                                long g, long h, long i, long j)
{
	volatile char pad[3000];
	pad[0] = 1;
	return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h + 9 * i + 10 * j + pad[0] - 1;
}

static __attribute__((noinline)) int format(char *buf, size_t n, const char *fmt, ...)
{
	volatile char pad[3000];
	pad[0] = 0;
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	return r + pad[0];
}

static long args_at_depth(long n)
{
	volatile char pad[500];
	pad[0] = 0;
	if (n > 0)
		return args_at_depth(n - 1) + pad[0];
	char buf[128];
	format(buf, sizeof buf, "%d %s %ld %d %d %d %d %d %d %.1f", 1, "two", 3L, 4, 5, 6, 7, 8, 9,
	       10.5);
	CHECK(strcmp(buf, "1 two 3 4 5 6 7 8 9 10.5") == 0);
	return many_args(1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
}

static void *args_everywhere(void *arg)
{
	(void)arg;
	/* at every depth, so that some calls land right at a boundary */
	for (long n = 0; n < 60; n++)
		CHECK_EQ(args_at_depth(n), 385);
	return NULL;
}

TCASE(stack_and_variadic_arguments_cross_chunks)
{
	tc_join(tc_spawn(args_everywhere, NULL));
}

/* ---- what must keep working on a linked stack ---- */

static int backtrace_depth;

static __attribute__((noinline)) int count_frames(void)
{
	void *frames[4096];
	return backtrace(frames, 4096);
}

static __attribute__((noinline)) int trace_at(long n)
{
	volatile char pad[1000];
	pad[0] = 0;
	if (n > 0)
		return trace_at(n - 1) + pad[0];
	return count_frames();
}

static void *trace(void *arg)
{
	(void)arg;
	backtrace_depth = trace_at(1000);
	return NULL;
}

TCASE(backtrace_crosses_chunks)
{
	tc_join(tc_spawn(trace, NULL));
	printf("backtrace() saw %d frames below 1000 levels of about 1 KiB\n", backtrace_depth);
	CHECK(backtrace_depth > 1000);
}

static volatile sig_atomic_t handled;

static void on_usr1(int sig)
{
	(void)sig;
	volatile char pad[4000]; /* more than a small chunk's slack */
	pad[0] = 1;
	handled += pad[0];
}

static __attribute__((noinline)) long signal_at(long n)
{
	volatile char pad[200];
	pad[0] = 0;
	if (n > 0)
		return signal_at(n - 1) + pad[0];
	raise(SIGUSR1);
	return 1;
}

static void *signalled(void *arg)
{
	(void)arg;
	long r = 0;
	for (long n = 0; n < 40; n++)
		r += signal_at(n);
	return (void *)r;
}

TCASE(signal_handlers_run_while_threads_are_on_small_chunks)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
	CHECK_EQ((long)tc_join(tc_spawn(signalled, NULL)), 40);
	CHECK_EQ(handled, 40);
}

static volatile int never_true;

static __attribute__((noinline)) long exit_at(long n)
{
	volatile char pad[1000];
	pad[0] = 0;
	if (n > 0)
		return exit_at(n - 1) + pad[0];
	if (never_true)
		return 0;
	pthread_exit((void *)42);
}

static void *exits_deep(void *arg)
{
	(void)arg;
	exit_at(500);
	return NULL;
}

static __attribute__((noinline)) long cancel_at(long n)
{
	volatile char pad[1000];
	pad[0] = 0;
	if (n > 0)
		return cancel_at(n - 1) + pad[0];
	while (!never_true)
		pthread_testcancel();
	return 0;
}

static void *cancelled_deep(void *arg)
{
	(void)arg;
	cancel_at(500);
	return NULL;
}

TCASE(exit_and_cancel_deep_in_a_linked_stack)
{
	uint64_t before = chunks_mapped();
	for (int round = 0; round < 20; round++) {
		CHECK_EQ((long)tc_join(tc_spawn(exits_deep, NULL)), 42);
		pthread_t t = tc_spawn(cancelled_deep, NULL);
		tc_msleep(1);
		CHECK_OK(pthread_cancel(t));
		CHECK(tc_join(t) == PTHREAD_CANCELED);
	}
	/* their chunks went back to the pools, and were used again */
	uint64_t grown = chunks_mapped() - before;
	printf("chunks mapped for 40 threads 500 KiB deep: %llu\n", (unsigned long long)grown);
	CHECK(grown < 40);
}

long linked_cxx_throw_from(long depth); /* linked_cxx.cpp */

static void *throws(void *arg)
{
	(void)arg;
	long r = 0;
	/* twice, so the second throw finds the chunks the first left */
	for (int i = 0; i < 2; i++)
		r += linked_cxx_throw_from(3000);
	size_t deepest;
	/* and the limit is right afterwards: a deep call grows again */
	r += deep(5000, &deepest) == 5000L * 5001 / 2 ? 0 : 1000000;
	return (void *)r;
}

TCASE(cxx_exceptions_cross_chunks)
{
	long r = (long)tc_join(tc_spawn(throws, NULL));
	CHECK_EQ(r, 2 * 3001);
}

static long cleanup_sum;
static size_t cleanup_deepest;

static void deep_cleanup(void *arg)
{
	(void)arg;
	/* cancellation jumped here from 500 KiB down: the cleanup can still
	 * call deep, on a limit that is this chunk's (with the limit of the
	 * chunk it jumped from, the calls would run on unchecked, past this
	 * chunk's end) */
	cleanup_sum = deep(3000, &cleanup_deepest);
}

static void *cancelled_with_cleanup(void *arg)
{
	(void)arg;
	long r = 0;
	pthread_cleanup_push(deep_cleanup, NULL);
	r = cancel_at(500);
	pthread_cleanup_pop(0);
	return (void *)r;
}

TCASE(cancellation_cleanup_runs_deep_calls)
{
	pthread_t t = tc_spawn(cancelled_with_cleanup, NULL);
	tc_msleep(5);
	CHECK_OK(pthread_cancel(t));
	CHECK(tc_join(t) == PTHREAD_CANCELED);
	CHECK_EQ(cleanup_sum, 3000L * 3001 / 2);
	printf("the cleanup's deep call grew the stack to %zu bytes\n", cleanup_deepest);
	CHECK(cleanup_deepest >= 2 * MiB); /* the first levels run on the big chunk of this frame */
}

static void *forks_deep(void *arg)
{
	(void)arg;
	size_t deepest;
	long r = deep(200, &deepest);
	pid_t pid = fork();
	if (pid == 0) {
		/* the child's copy of this thread goes on growing */
		long c = deep(2000, &deepest);
		_exit(c == 2000L * 2001 / 2 ? 0 : 1);
	}
	int st = 0;
	CHECK(pid > 0);
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	return (void *)r;
}

TCASE(fork_from_a_linked_stack)
{
	CHECK_EQ((long)tc_join(tc_spawn(forks_deep, NULL)), 200L * 201 / 2);
}

/* ---- the depots keep what a load needs (stackalloc/depot.h) ---- */

/* A burst of linked threads alive at once, each about 24 KiB deep (a 2,
 * an 8 and a 32 KiB chunk), then all gone: a server's connections. */
enum { BURST = 3000, BURST_LEVELS = 24 };
static pthread_mutex_t burst_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t burst_c = PTHREAD_COND_INITIALIZER;
static int burst_waiting, burst_open;

static __attribute__((noinline)) long burst_deep(long n)
{
	volatile char pad[1000];
	pad[0] = (char)n;
	if (n == 0) {
		pthread_mutex_lock(&burst_m);
		burst_waiting++;
		pthread_cond_broadcast(&burst_c);
		while (!burst_open)
			pthread_cond_wait(&burst_c, &burst_m);
		pthread_mutex_unlock(&burst_m);
		return 0;
	}
	return 1 + burst_deep(n - 1) + (pad[0] - (char)n);
}

static void *burst_body(void *arg)
{
	(void)arg;
	return (void *)burst_deep(BURST_LEVELS);
}

static void burst(void)
{
	static pthread_t t[BURST];
	burst_waiting = burst_open = 0;
	for (int i = 0; i < BURST; i++)
		CHECK_OK(pthread_create(&t[i], NULL, burst_body, NULL));
	pthread_mutex_lock(&burst_m);
	while (burst_waiting < BURST)
		pthread_cond_wait(&burst_c, &burst_m);
	burst_open = 1;
	pthread_cond_broadcast(&burst_c);
	pthread_mutex_unlock(&burst_m);
	for (int i = 0; i < BURST; i++)
		CHECK_EQ((long)tc_join(t[i]), BURST_LEVELS);
}

/* A burst that comes back soon finds its chunks committed (giving them
 * back as each thread ended made the second burst fault its 32 KiB
 * chunks in again, 7 pages each past the depot's first 64). */
TCASE(chunks_of_a_burst_come_back_committed)
{
	burst();
	long before = tc_minor_faults();
	burst();
	long faults = tc_minor_faults() - before;
	printf("second burst of %d linked threads: %ld page faults\n", BURST, faults);
	/* ASan's shadow of each chunk faults in again: only the plain build
	 * can say */
	if (getenv("CAPRICE_TEST_SANITIZED"))
		return;
	CHECK(faults < BURST);
}

/* ...and what stays unneeded gives its pages back within seconds: all
 * but the depots' hot parts, the workers' pools, and a header page of
 * each chunk of 8 KiB or more. */
TCASE(chunks_left_idle_give_their_memory_back)
{
	long base = tc_rss_kib();
	burst();
	long after_burst = tc_rss_kib();
	/* per thread 10 KiB: its 2 KiB chunk (which shares its page and
	 * keeps it) and the header pages of its 8 and 32 KiB chunks; then
	 * the depots' hot parts (10 MiB), the pools and some slack */
	long bound = BURST * 10L + 48 * 1024;
	long now = tc_await_rss_within(base, bound, 5000);
	printf("RSS %ld KiB before the burst, %ld KiB after, %ld KiB later\n", base, after_burst,
	       now);
	if (getenv("CAPRICE_TEST_SANITIZED"))
		return;
	if (now - base > bound)
		TFAIL("RSS still %ld KiB above where it was 5 s after the burst, expected %ld KiB "
		      "or less", now - base, bound);
}
