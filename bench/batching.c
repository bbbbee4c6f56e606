/* batching.c: a workload where running threads grouped by where they
 * blocked should pay, to measure CAPRICE_SCHED=2d's batching by location
 * against plain FIFO.
 *
 * N threads pass T tokens (bytes) round a ring of pipes.  Each thread
 * loops through S stages; stage s blocks in read() of one byte on the
 * thread's own pipe from a call site of its own (wait_s), then walks W
 * cache lines (default: all) of stage s's own table (a dependent pointer
 * chase along a random cycle through its lines, so each load waits for
 * the one before and the walk's time is the table's latency: L1/L2 if
 * the table is still there, L3 or memory if another stage pushed it
 * out), then writes the byte to the next thread's pipe.
 * The tables are per stage, shared by every thread in that stage, and
 * sized so one fits in a core's L2 but all S together do not.  So the
 * cost of a stage-run depends on what ran just before it on that core:
 * the same stage (its table is warm) or another one (it is cold).
 *
 * Which stage a token finds a thread in depends only on how many tokens
 * that thread has had before (tokens cannot overtake one another round
 * the ring), not on timing, so the order can be set up:
 *   --order lockstep  every thread starts at stage 0, tokens evenly
 *                     spaced: tokens that have made as many hops are in
 *                     the same stage, and under FIFO the threads woken
 *                     together are mostly in one stage (the best case;
 *                     no scheduler needed)
 *   --order mixed     each thread starts at a pseudo-random stage: the
 *                     threads woken together are in any stage, and FIFO
 *                     runs them interleaved; batching by location could
 *                     run them grouped by stage (wait_s's return address
 *                     tells the stages apart)
 * fifo lockstep against fifo mixed is what interleaving costs; 2d mixed
 * against fifo mixed is what batching recovers of it.
 *
 * The write end of each pipe is O_NONBLOCK, so passing a token is the
 * plain write system call (a pipe never holds more than T bytes) and the
 * only park in a stage-run is the read: a blocking write would park
 * every thread a second time, at a site whose next run does no work.
 *
 * It prints one line of key=value pairs (--json: one JSON object): the
 * stage-runs per second, the process's CPU time (user+sys, every worker)
 * per stage-run, and the share of stage-runs that followed a run of
 * another stage on the same worker (stage_change: about (S-1)/S when the
 * order is random, near 0 when grouped).  The checksum sums every walk
 * so the work cannot be optimised away; it depends on how many runs each
 * thread made, so it differs between runs.
 *
 * usage: batching-caprice [--threads N] [--stages S] [--tokens T]
 *                         [--table-kib K] [--walk W] [--seconds D | --runs R]
 *                         [--order mixed|lockstep] [--small-pages] [--json]
 * Defaults: 256 threads, 4 stages, N/2 tokens, 384 KiB per stage, a walk
 * of the whole table (W = its lines, 6144), 3 seconds, mixed.  Sizes,
 * measured here (AMD EPYC VM: 48 KiB L1d and 1 MiB L2 per core, 32 MiB
 * L3 shared with neighbours): one 384 KiB table stays in L2 between two
 * runs of its stage, four (1.5 MiB) do not; a walk of the whole table
 * makes a run after one of the same stage find all of it warm, so a run
 * costs about "warm" or "cold" by what ran before it.  Smaller tables
 * fit together in L2 (256 KiB: interleaving costs 1.4x, 384 KiB: 1.8x);
 * bigger ones no longer stay in it alone with everything else a worker
 * touches.  --runs R stops after R stage-runs instead of D seconds.
 * --small-pages: 4 KiB pages for the tables (see make_tables). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "caprice.h"

#define BENCH_NAME "batching-caprice"
#include "bench_util.h"

#define MAX_STAGES  8
#define MAX_THREADS 8192
#define MAX_WORKERS 256
/* a run that hangs must not hang the comparison: this much past its
 * length, SIGALRM's default action ends it */
#define ALARM_SLACK_S 60

/* One cache line of a stage's table: the index of the next line to visit
 * (a single cycle through every line, so a walk never revisits a line
 * before it has seen them all) and a payload to sum. */
struct line {
	uint32_t next;
	uint32_t pad;
	uint64_t val[7];
} __attribute__((aligned(64)));

struct thr {
	pthread_t id;
	int rfd, next_wfd;    /* own pipe's read end; the next thread's write end */
	unsigned start_stage;
	uint32_t pos[MAX_STAGES]; /* where this thread's walk in each table resumes */
	uint64_t sum;
	uint64_t runs;
	uint64_t stage_runs[MAX_STAGES];
} __attribute__((aligned(64)));

/* per worker: the stage its last run was in, to count the runs that
 * follow another stage's (only the thread running on that worker writes
 * its slot, so no atomics) */
struct wslot {
	int last_stage;
	uint64_t runs, changes;
} __attribute__((aligned(64)));

static struct {
	long threads, stages, tokens, table_kib, walk, seconds, runs;
	bool lockstep, json, huge;
} opt = { .threads = 256, .stages = 4, .tokens = -1, .table_kib = 384, .walk = -1,
          .seconds = 3, .runs = 0, .huge = true };
static int huge_refused; /* madvise's errno, if it said no */

static struct line *tables[MAX_STAGES];
static uint32_t table_lines;
static struct thr *thr;
static struct wslot wslots[MAX_WORKERS + 1]; /* the last: not on a worker */

static int stop_flag;           /* threads seen it: they pass the token on and end */
static int stopped_once;        /* the first stop_now records the end */
static uint64_t total_runs;     /* --runs only: the shared count */
static uint64_t t_start, t_end;
static double cpu_start, cpu_end;

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The end of the measured interval: the clock and CPU time first, then
 * the flag, so nothing done after it is counted in the time. */
static void stop_now(void)
{
	if (__atomic_exchange_n(&stopped_once, 1, __ATOMIC_ACQ_REL))
		return;
	t_end = now_ns();
	cpu_end = cpu_s();
	__atomic_store_n(&stop_flag, 1, __ATOMIC_RELEASE);
}

/* splitmix64: fills the tables and picks starting stages and positions,
 * the same for every run of the same options */
static uint64_t mix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static _Noreturn __attribute__((noinline)) void read_failed(int stage, ssize_t r)
{
	die("stage %d: read of the token returned %zd (%s)", stage, r,
	    r < 0 ? strerror(errno) : "end of file");
}

/* Functions that must stay apart: GCC's identical-code folding
 * (-fipa-icf, on at -O2) would otherwise merge look-alikes into one,
 * which noipa forbids; clang has no such attribute and folds nothing. */
#ifdef __clang__
#define APART __attribute__((noinline))
#else
#define APART __attribute__((noinline, noipa))
#endif

/* One blocking point per stage, each with a return address of its own.
 * Checking the result after the call keeps read() from being a tail
 * call, whose return address would be the caller's, the same for all
 * stages. */
#define WAIT_FN(n)                                                     \
	static APART void wait_##n(struct thr *t)                      \
	{                                                              \
		char c;                                                \
		ssize_t r = read(t->rfd, &c, 1);                       \
		if (__builtin_expect(r != 1, 0))                       \
			read_failed(n, r);                             \
	}
WAIT_FN(0) WAIT_FN(1) WAIT_FN(2) WAIT_FN(3)
WAIT_FN(4) WAIT_FN(5) WAIT_FN(6) WAIT_FN(7)
static void (*const wait_stage[MAX_STAGES])(struct thr *) = {
	wait_0, wait_1, wait_2, wait_3, wait_4, wait_5, wait_6, wait_7,
};

/* The dependent chase: each line's address comes from the line before,
 * so the walk takes W times the latency of wherever the table is. */
static inline __attribute__((always_inline)) uint64_t walk(const struct line *tab, uint32_t *pos,
                                                           long w, uint64_t k)
{
	uint64_t sum = 0;
	uint32_t p = *pos;
	for (long i = 0; i < w; i++) {
		sum += tab[p].val[p & 3] ^ k;
		p = tab[p].next;
	}
	*pos = p;
	return sum;
}

/* each stage's work as code of its own too (a constant of its own keeps
 * them from being folded into one) */
#define WORK_FN(n)                                                             \
	static APART void work_##n(struct thr *t)                              \
	{                                                                      \
		t->sum += walk(tables[n], &t->pos[n], opt.walk, 0x1000193u * (n + 1)); \
	}
WORK_FN(0) WORK_FN(1) WORK_FN(2) WORK_FN(3)
WORK_FN(4) WORK_FN(5) WORK_FN(6) WORK_FN(7)
static void (*const work_stage[MAX_STAGES])(struct thr *) = {
	work_0, work_1, work_2, work_3, work_4, work_5, work_6, work_7,
};

static void pass_token(struct thr *t)
{
	ssize_t r = write(t->next_wfd, "t", 1);
	if (r != 1)
		die("passing the token: write returned %zd (%s)", r, r < 0 ? strerror(errno) : "?");
}

static void note_stage(unsigned s)
{
	int w = caprice_worker_index();
	struct wslot *ws = &wslots[w >= 0 && w < MAX_WORKERS ? w : MAX_WORKERS];
	if (ws->last_stage != (int)s)
		ws->changes++;
	ws->last_stage = (int)s;
	ws->runs++;
}

static void *thread_main(void *arg)
{
	struct thr *t = arg;
	unsigned s = t->start_stage, nstages = (unsigned)opt.stages;
	for (;;) {
		wait_stage[s](t);
		if (__atomic_load_n(&stop_flag, __ATOMIC_ACQUIRE)) {
			/* every byte read is passed on, so the thread after
			 * this one gets a byte after the stop too: one ending
			 * ends them all round the ring */
			pass_token(t);
			break;
		}
		note_stage(s);
		work_stage[s](t);
		t->runs++;
		t->stage_runs[s]++;
		pass_token(t);
		if (opt.runs &&
		    __atomic_add_fetch(&total_runs, 1, __ATOMIC_RELAXED) == (uint64_t)opt.runs)
			stop_now();
		s = s + 1 == nstages ? 0 : s + 1;
	}
	return NULL;
}

static void make_tables(void)
{
	table_lines = (uint32_t)((opt.table_kib << 10) / sizeof(struct line));
	if (table_lines < 2)
		die("--table-kib: at least 1 KiB");
	if (opt.walk < 0)
		opt.walk = table_lines;
	uint64_t seed = 0x5eed;
	uint32_t *perm = malloc(table_lines * sizeof *perm);
	if (!perm)
		die("out of memory");
	for (long s = 0; s < opt.stages; s++) {
		size_t bytes = (size_t)table_lines * sizeof(struct line);
		struct line *tab;
		if (opt.huge) {
			/* Huge pages: this VM's kernel isolates itself with PTI
			 * and the CPU shows no PCID, so system calls (each
			 * stage-run's write, every io_uring_enter) empty the
			 * TLB, and on 4 KiB pages a walk restarts with a page
			 * walk per page, whatever order the stages ran in: a
			 * cost batching cannot remove, which dilutes the
			 * cache's (measured: 4 KiB pages add 10-15 us to a
			 * 384 KiB stage-run, grouped or not).  One 2 MiB page
			 * per table needs one walk.  (madvise, not always, is
			 * this kernel's THP mode.) */
			size_t hp = 2u << 20;
			bytes = (bytes + hp - 1) / hp * hp;
			tab = aligned_alloc(hp, bytes);
			if (tab && madvise(tab, bytes, MADV_HUGEPAGE) != 0)
				huge_refused = errno;
		} else {
			tab = aligned_alloc(4096, bytes);
		}
		if (!tab)
			die("out of memory for a %ld KiB table", opt.table_kib);
		/* Sattolo's shuffle: one cycle through every line, in an order
		 * the hardware prefetchers cannot follow */
		for (uint32_t i = 0; i < table_lines; i++)
			perm[i] = i;
		for (uint32_t i = table_lines - 1; i > 0; i--) {
			uint32_t j = (uint32_t)(mix64(&seed) % i);
			uint32_t x = perm[i];
			perm[i] = perm[j];
			perm[j] = x;
		}
		for (uint32_t i = 0; i < table_lines; i++) {
			tab[i].next = perm[i];
			tab[i].pad = 0;
			for (int k = 0; k < 7; k++)
				tab[i].val[k] = mix64(&seed);
		}
		tables[s] = tab;
	}
	free(perm);
}

/* AnonHugePages of the process: whether the tables got their huge pages
 * (THP may find none free), so a run on 4 KiB pages says so */
static long anon_huge_kib(void)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char buf[256];
	long kib = -1;
	if (!f)
		return -1;
	while (fgets(buf, sizeof buf, f))
		if (sscanf(buf, "AnonHugePages: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: " BENCH_NAME " [--threads N] [--stages S] [--tokens T] [--table-kib K]\n"
	           "           [--walk W] [--seconds D | --runs R] [--order mixed|lockstep]\n"
	           "           [--small-pages] [--json]\n");
}

/* each thread holds two descriptors: raise the soft limit if they would
 * not fit */
static void enough_fds(void)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)opt.threads * 2 + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
		die("%ld threads need %lu descriptors; RLIMIT_NOFILE's hard limit is %lu",
		    opt.threads, (unsigned long)want, (unsigned long)rl.rlim_max);
	rl.rlim_cur = want;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		die("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--json") == 0) {
			opt.json = true;
			continue;
		}
		if (strcmp(a, "--small-pages") == 0) {
			opt.huge = false;
			continue;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (!v) {
			usage(stderr);
			die("%s: unknown option, or it wants a value", a);
		}
		if (strcmp(a, "--threads") == 0)
			opt.threads = bench_arg_long(a, v, 2, MAX_THREADS);
		else if (strcmp(a, "--stages") == 0)
			opt.stages = bench_arg_long(a, v, 1, MAX_STAGES);
		else if (strcmp(a, "--tokens") == 0)
			opt.tokens = bench_arg_long(a, v, 1, MAX_THREADS);
		else if (strcmp(a, "--table-kib") == 0)
			opt.table_kib = bench_arg_long(a, v, 1, 1 << 20);
		else if (strcmp(a, "--walk") == 0)
			opt.walk = bench_arg_long(a, v, 0, 100000000);
		else if (strcmp(a, "--seconds") == 0)
			opt.seconds = bench_arg_long(a, v, 1, 3600);
		else if (strcmp(a, "--runs") == 0)
			opt.runs = bench_arg_long(a, v, 1, 1L << 40);
		else if (strcmp(a, "--order") == 0) {
			if (strcmp(v, "lockstep") == 0)
				opt.lockstep = true;
			else if (strcmp(v, "mixed") == 0)
				opt.lockstep = false;
			else
				die("--order wants mixed or lockstep");
		} else {
			usage(stderr);
			die("unknown option %s", a);
		}
		i++;
	}
	if (opt.tokens < 0)
		opt.tokens = opt.threads / 2;
	if (opt.tokens > opt.threads)
		die("--tokens: at most one per thread (%ld)", opt.threads);

	/* --runs has no clock of its own: a generous bound all the same */
	alarm((unsigned)(opt.runs ? 600 : opt.seconds + ALARM_SLACK_S));
	enough_fds();
	make_tables();

	thr = aligned_alloc(64, (size_t)opt.threads * sizeof *thr);
	if (!thr)
		die("out of memory");
	memset(thr, 0, (size_t)opt.threads * sizeof *thr);
	int (*fds)[2] = malloc((size_t)opt.threads * sizeof *fds);
	if (!fds)
		die("out of memory");
	for (long i = 0; i < opt.threads; i++) {
		if (pipe(fds[i]) != 0)
			die("pipe: %s", strerror(errno));
		/* only the write end: reads must block (and park) */
		if (fcntl(fds[i][1], F_SETFL, O_NONBLOCK) != 0)
			die("fcntl: %s", strerror(errno));
	}
	uint64_t seed = 0xba7c4;
	for (long i = 0; i < opt.threads; i++) {
		struct thr *t = &thr[i];
		t->rfd = fds[i][0];
		t->next_wfd = fds[(i + 1) % opt.threads][1];
		t->start_stage = opt.lockstep ? 0 : (unsigned)(mix64(&seed) % (uint64_t)opt.stages);
		for (long s = 0; s < opt.stages; s++)
			t->pos[s] = (uint32_t)(mix64(&seed) % table_lines);
	}
	for (int w = 0; w <= MAX_WORKERS; w++)
		wslots[w].last_stage = -1;

	/* every thread up and blocked in its first read before the clock
	 * starts: creating them is not what is measured */
	for (long i = 0; i < opt.threads; i++) {
		int e = pthread_create(&thr[i].id, NULL, thread_main, &thr[i]);
		if (e)
			die("pthread_create: %s", strerror(e));
	}
	struct timespec settle = { 0, 50 * 1000 * 1000 };
	nanosleep(&settle, NULL);

	t_start = now_ns();
	cpu_start = cpu_s();
	/* evenly spaced: in lockstep order the tokens that have made as many
	 * hops then meet threads in the same stage */
	for (long k = 0; k < opt.tokens; k++) {
		long i = k * opt.threads / opt.tokens;
		if (write(fds[i][1], "t", 1) != 1)
			die("placing a token: %s", strerror(errno));
	}
	if (!opt.runs) {
		struct timespec d = { opt.seconds, 0 };
		while (nanosleep(&d, &d) != 0 && errno == EINTR)
			;
		stop_now();
	}
	for (long i = 0; i < opt.threads; i++) {
		int e = pthread_join(thr[i].id, NULL);
		if (e)
			die("pthread_join: %s", strerror(e));
	}
	for (long i = 0; i < opt.threads; i++) {
		close(fds[i][0]);
		close(fds[i][1]);
	}

	uint64_t runs = 0, sum = 0, per_stage[MAX_STAGES] = { 0 }, wruns = 0, changes = 0;
	for (long i = 0; i < opt.threads; i++) {
		runs += thr[i].runs;
		sum += thr[i].sum;
		for (long s = 0; s < opt.stages; s++)
			per_stage[s] += thr[i].stage_runs[s];
	}
	for (int w = 0; w <= MAX_WORKERS; w++) {
		wruns += wslots[w].runs;
		changes += wslots[w].changes;
	}
	if (runs == 0)
		die("no stage ran");
	double secs = (double)(t_end - t_start) / 1e9;
	double cpu = cpu_end - cpu_start;
	const char *sched = getenv("CAPRICE_SCHED");
	if (!sched || !*sched)
		sched = "fifo";
	double rate = (double)runs / secs, cpu_ns = cpu * 1e9 / (double)runs;
	double change = wruns ? (double)changes / (double)wruns : 0;
	long huge_kib = anon_huge_kib();
	if (opt.huge && huge_refused)
		fprintf(stderr, BENCH_NAME ": madvise(MADV_HUGEPAGE): %s; tables on 4 KiB pages\n",
		        strerror(huge_refused));
	if (opt.json) {
		printf("{\n  \"bench\": \"batching\",\n  \"sched\": \"%s\",\n  \"workers\": %d,\n"
		       "  \"order\": \"%s\",\n  \"threads\": %ld,\n  \"stages\": %ld,\n"
		       "  \"tokens\": %ld,\n  \"table_kib\": %ld,\n  \"walk\": %ld,\n"
		       "  \"runs\": %llu,\n  \"secs\": %.4f,\n  \"cpu_s\": %.4f,\n"
		       "  \"runs_per_s\": %.1f,\n  \"cpu_ns_per_run\": %.1f,\n"
		       "  \"stage_change\": %.4f,\n  \"huge_kib\": %ld,\n  \"checksum\": \"%016llx\"\n}\n",
		       sched, caprice_worker_count(), opt.lockstep ? "lockstep" : "mixed",
		       opt.threads, opt.stages, opt.tokens, opt.table_kib, opt.walk,
		       (unsigned long long)runs, secs, cpu, rate, cpu_ns, change, huge_kib,
		       (unsigned long long)sum);
	} else {
		printf("batching sched=%s workers=%d order=%s threads=%ld stages=%ld tokens=%ld "
		       "table_kib=%ld walk=%ld runs=%llu secs=%.4f cpu_s=%.4f runs_per_s=%.1f "
		       "cpu_ns_per_run=%.1f stage_change=%.4f huge_kib=%ld checksum=%016llx\n",
		       sched, caprice_worker_count(), opt.lockstep ? "lockstep" : "mixed",
		       opt.threads, opt.stages, opt.tokens, opt.table_kib, opt.walk,
		       (unsigned long long)runs, secs, cpu, rate, cpu_ns, change, huge_kib,
		       (unsigned long long)sum);
	}
	/* a stage that never ran would mean a broken ring, not a result */
	for (long s = 0; s < opt.stages; s++)
		if (per_stage[s] == 0)
			die("stage %ld never ran", s);
	return 0;
}
