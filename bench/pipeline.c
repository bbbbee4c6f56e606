/* pipeline.c: a parallel program of the pigz kind, to see whether its
 * threads use every core.  A reader thread reads a file in blocks with
 * pread(), a pool of compute threads does real CPU work on each block
 * (passes of a table-driven CRC-32 and a delta transform, about a
 * millisecond a block), and a writer thread takes the results in block
 * order and write()s them to a file.  The same source is built on
 * Caprice (pipeline-caprice) and on glibc's NPTL (pipeline-nptl); the NPTL
 * binary also runs unmodified under the shim.  bench/compare-pipeline
 * sets them side by side.
 *
 * Besides the wall time it measures, for every block handed to the pool,
 * the time to run: from the feeder's pthread_cond_signal (the block
 * becoming work for a waiting compute thread) to a compute thread taking
 * it.  The feeder hands a block only to a compute thread that waits for
 * one, so this is the time a woken thread takes to get a core, not time
 * spent queued behind other blocks.
 *
 * usage: pipeline [--input FILE] [--size MIB] [--block KIB] [--threads N]
 *                 [--passes N] [--out FILE] [--json]
 *        pipeline --make-input FILE [--size MIB]
 * Without --input it makes a file of --size MiB (default 64) in /tmp
 * before the clock starts and removes it at the end; --make-input makes
 * one and exits.  --threads: compute threads (default 2); --passes: CRC
 * passes per block (default 4); --block: KiB per block (default 128);
 * --out: where the writer writes (default a file in /tmp, removed).
 * The output checksum depends only on the input and the options, so it
 * must be the same on every threads package and worker count. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef BENCH_CAPRICE
#include "caprice.h"
#define IMPL "caprice"
#else
#define IMPL "nptl"
#endif

#define MAX_THREADS 64
#define MAX_CORES   256
/* blocks read ahead of the compute threads, and the writer's backlog:
 * together they bound the buffers in use */
#define READAHEAD   2
#define ALARM_S     120

static struct {
	const char *input, *out, *make_input;
	long size_mib, block_kib;
	int threads, passes;
	bool json;
} opt = { NULL, NULL, NULL, 64, 128, 2, 4, false };

#define BENCH_NAME "pipeline-" IMPL
#include "bench_util.h"

/* ---- the work ---------------------------------------------------------- */

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

/* One byte at a time: each byte waits for the one before, so the cost is
 * steady and no compiler turns it into something else. */
static uint32_t crc32_buf(uint32_t crc, const unsigned char *p, size_t n)
{
	crc = ~crc;
	for (size_t i = 0; i < n; i++)
		crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* What a compute thread does to one block: `passes` CRCs over it, each
 * seeded by the last, then a delta transform keyed by the result into
 * `out`, and the CRC of `out`, which is what the writer's checksum is
 * made of. */
static uint32_t work(const unsigned char *in, unsigned char *out, size_t n, uint64_t blk)
{
	uint32_t c = (uint32_t)blk * 2654435761u;
	for (int p = 0; p < opt.passes; p++)
		c = crc32_buf(c + (uint32_t)p, in, n);
	unsigned char prev = (unsigned char)c;
	for (size_t i = 0; i < n; i++) {
		out[i] = (unsigned char)(in[i] - prev) ^ (unsigned char)(c >> ((i & 3) * 8));
		prev = in[i];
	}
	return crc32_buf(c, out, n);
}

/* ---- the pipeline ------------------------------------------------------ */

struct slot {
	unsigned char *in, *out;
	size_t len;
};

static struct {
	int fd, out_fd;
	size_t block;
	long nblocks;
	uint64_t file_bytes;

	struct slot *slots;
	int nslots;

	pthread_mutex_t mu;     /* everything below */
	pthread_cond_t slot_cv; /* a slot was freed (reader waits) */
	pthread_cond_t feed_cv; /* a compute thread waits for work (reader waits) */
	pthread_cond_t work_cv; /* a block was handed out (compute threads wait) */
	pthread_cond_t done_cv; /* a block was finished (writer waits) */
	int *free_slots;
	int nfree;
	int idle;               /* compute threads waiting, less blocks handed to them */
	long *queue;            /* blocks handed out, not taken yet */
	int qhead, qlen;
	bool end;               /* no more blocks */

	/* per block */
	int *slot_of;
	bool *done;
	uint32_t *crc;
	uint64_t *t_signal, *t_start, *t_end;
	int *core;              /* worker (Caprice) or CPU (NPTL) that computed it */

	uint32_t checksum;      /* the writer's, over the blocks' CRCs in order */
	uint64_t written;
	const char *error;
} P;

static int where(void)
{
#ifdef BENCH_CAPRICE
	return caprice_worker_index();
#else
	return sched_getcpu();
#endif
}

static void *reader(void *arg)
{
	(void)arg;
	for (long b = 0; b < P.nblocks; b++) {
		pthread_mutex_lock(&P.mu);
		while (P.nfree == 0)
			pthread_cond_wait(&P.slot_cv, &P.mu);
		int s = P.free_slots[--P.nfree];
		pthread_mutex_unlock(&P.mu);

		/* real file I/O: the block is read from the file each time */
		off_t off = (off_t)b * (off_t)P.block;
		size_t want = P.block;
		if ((uint64_t)off + want > P.file_bytes)
			want = (size_t)(P.file_bytes - (uint64_t)off);
		size_t got = 0;
		while (got < want) {
			ssize_t r = pread(P.fd, P.slots[s].in + got, want - got, off + (off_t)got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				P.error = r < 0 ? strerror(errno) : "input file shrank";
				want = got;
				break;
			}
			got += (size_t)r;
		}
		P.slots[s].len = want;

		/* hand it out only to a compute thread that waits for one */
		pthread_mutex_lock(&P.mu);
		while (P.idle == 0)
			pthread_cond_wait(&P.feed_cv, &P.mu);
		P.idle--;
		P.slot_of[b] = s;
		P.queue[(P.qhead + P.qlen) % P.nslots] = b;
		P.qlen++;
		P.t_signal[b] = now_ns();
		pthread_cond_signal(&P.work_cv);
		pthread_mutex_unlock(&P.mu);
	}
	pthread_mutex_lock(&P.mu);
	P.end = true;
	pthread_cond_broadcast(&P.work_cv);
	pthread_mutex_unlock(&P.mu);
	return NULL;
}

static void *compute(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&P.mu);
		P.idle++;
		pthread_cond_signal(&P.feed_cv);
		while (P.qlen == 0 && !P.end)
			pthread_cond_wait(&P.work_cv, &P.mu);
		if (P.qlen == 0) {
			pthread_mutex_unlock(&P.mu);
			return NULL;
		}
		long b = P.queue[P.qhead];
		P.qhead = (P.qhead + 1) % P.nslots;
		P.qlen--;
		P.t_start[b] = now_ns();
		int s = P.slot_of[b];
		pthread_mutex_unlock(&P.mu);

		P.core[b] = where();
		uint32_t c = work(P.slots[s].in, P.slots[s].out, P.slots[s].len, (uint64_t)b);
		P.t_end[b] = now_ns();

		pthread_mutex_lock(&P.mu);
		P.crc[b] = c;
		P.done[b] = true;
		pthread_cond_signal(&P.done_cv);
		pthread_mutex_unlock(&P.mu);
	}
}

static void *writer(void *arg)
{
	(void)arg;
	for (long b = 0; b < P.nblocks; b++) {
		pthread_mutex_lock(&P.mu);
		while (!P.done[b])
			pthread_cond_wait(&P.done_cv, &P.mu);
		int s = P.slot_of[b];
		uint32_t c = P.crc[b];
		pthread_mutex_unlock(&P.mu);

		size_t off = 0, len = P.slots[s].len;
		while (off < len) {
			ssize_t w = write(P.out_fd, P.slots[s].out + off, len - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				P.error = w < 0 ? strerror(errno) : "short write";
				break;
			}
			off += (size_t)w;
		}
		P.written += off;
		unsigned char le[4] = { (unsigned char)c, (unsigned char)(c >> 8),
		                        (unsigned char)(c >> 16), (unsigned char)(c >> 24) };
		P.checksum = crc32_buf(P.checksum, le, 4);

		pthread_mutex_lock(&P.mu);
		P.free_slots[P.nfree++] = s;
		pthread_cond_signal(&P.slot_cv);
		pthread_mutex_unlock(&P.mu);
	}
	return NULL;
}

/* ---- input ------------------------------------------------------------- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Lines of words from a fixed list, the same bytes every time. */
static void make_input(const char *path, uint64_t bytes)
{
	static const char *words[] = { "the", "quick", "brown", "fox", "jumps", "over", "lazy",
	                               "dog", "pack", "my", "box", "with", "five", "dozen",
	                               "liquor", "jugs", "sphinx", "of", "black", "quartz",
	                               "judge", "vow", "waltz", "nymph", "for", "jigs" };
	const int nwords = (int)(sizeof words / sizeof words[0]);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die("cannot create %s: %s", path, strerror(errno));
	static char buf[1 << 16];
	size_t n = 0;
	uint64_t total = 0;
	while (total < bytes) {
		int words_in_line = 3 + (int)(rng() % 9);
		for (int i = 0; i < words_in_line; i++) {
			const char *w = words[rng() % (uint64_t)nwords];
			size_t l = strlen(w);
			if (i)
				buf[n++] = ' ';
			memcpy(buf + n, w, l);
			n += l;
		}
		buf[n++] = '\n';
		if (n > sizeof buf - 256) {
			size_t take = n;
			if (total + take > bytes)
				take = (size_t)(bytes - total);
			if (write(fd, buf, take) != (ssize_t)take)
				die("write %s: %s", path, strerror(errno));
			total += take;
			n = 0;
		}
	}
	if (close(fd) != 0)
		die("close %s: %s", path, strerror(errno));
}

/* ---- report ------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* the q-quantile of sorted v[0..n) (nearest rank) */
static uint64_t quantile(const uint64_t *v, long n, double q)
{
	long i = (long)(q * (double)n + 0.999999) - 1;
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return v[i];
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: pipeline-%s [--input FILE] [--size MIB] [--block KIB] [--threads N]\n"
	           "                  [--passes N] [--out FILE] [--json]\n"
	           "       pipeline-%s --make-input FILE [--size MIB]\n",
	        IMPL, IMPL);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--json") == 0) {
			opt.json = true;
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
		if (strcmp(a, "--input") == 0)
			opt.input = v;
		else if (strcmp(a, "--out") == 0)
			opt.out = v;
		else if (strcmp(a, "--make-input") == 0)
			opt.make_input = v;
		else if (strcmp(a, "--size") == 0)
			opt.size_mib = bench_arg_long(a, v, 1, 4096);
		else if (strcmp(a, "--block") == 0)
			opt.block_kib = bench_arg_long(a, v, 1, 65536);
		else if (strcmp(a, "--threads") == 0)
			opt.threads = (int)bench_arg_long(a, v, 1, MAX_THREADS);
		else if (strcmp(a, "--passes") == 0)
			opt.passes = (int)bench_arg_long(a, v, 0, 1000);
		else {
			usage(stderr);
			die("unknown option %s", a);
		}
		i++;
	}
	if (opt.make_input) {
		make_input(opt.make_input, (uint64_t)opt.size_mib << 20);
		return 0;
	}
	/* a run that hangs must not hang the comparison */
	alarm(ALARM_S);
	crc_init();

	char tmp_in[64] = "", tmp_out[64] = "";
	const char *in_path = opt.input;
	if (!in_path) {
		snprintf(tmp_in, sizeof tmp_in, "/tmp/pipeline-in.XXXXXX");
		int fd = mkstemp(tmp_in);
		if (fd < 0)
			die("mkstemp: %s", strerror(errno));
		close(fd);
		make_input(tmp_in, (uint64_t)opt.size_mib << 20);
		in_path = tmp_in;
	}
	const char *out_path = opt.out;
	if (!out_path) {
		snprintf(tmp_out, sizeof tmp_out, "/tmp/pipeline-out.XXXXXX");
		int fd = mkstemp(tmp_out);
		if (fd < 0)
			die("mkstemp: %s", strerror(errno));
		close(fd);
		out_path = tmp_out;
	}

	P.fd = open(in_path, O_RDONLY);
	if (P.fd < 0)
		die("cannot open %s: %s", in_path, strerror(errno));
	struct stat st;
	if (fstat(P.fd, &st) != 0 || st.st_size <= 0)
		die("%s is empty or unreadable", in_path);
	P.out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (P.out_fd < 0)
		die("cannot create %s: %s", out_path, strerror(errno));
	P.file_bytes = (uint64_t)st.st_size;
	P.block = (size_t)opt.block_kib << 10;
	P.nblocks = (long)((P.file_bytes + P.block - 1) / P.block);

	/* every compute thread busy, READAHEAD blocks read ahead and as many
	 * again done but not written yet */
	P.nslots = opt.threads + 2 * READAHEAD + 2;
	P.slots = calloc((size_t)P.nslots, sizeof *P.slots);
	P.free_slots = calloc((size_t)P.nslots, sizeof *P.free_slots);
	P.queue = calloc((size_t)P.nslots, sizeof *P.queue);
	P.slot_of = calloc((size_t)P.nblocks, sizeof *P.slot_of);
	P.done = calloc((size_t)P.nblocks, sizeof *P.done);
	P.crc = calloc((size_t)P.nblocks, sizeof *P.crc);
	P.t_signal = calloc((size_t)P.nblocks, sizeof *P.t_signal);
	P.t_start = calloc((size_t)P.nblocks, sizeof *P.t_start);
	P.t_end = calloc((size_t)P.nblocks, sizeof *P.t_end);
	P.core = calloc((size_t)P.nblocks, sizeof *P.core);
	if (!P.slots || !P.free_slots || !P.queue || !P.slot_of || !P.done || !P.crc ||
	    !P.t_signal || !P.t_start || !P.t_end || !P.core)
		die("out of memory");
	for (int s = 0; s < P.nslots; s++) {
		P.slots[s].in = malloc(P.block);
		P.slots[s].out = malloc(P.block);
		if (!P.slots[s].in || !P.slots[s].out)
			die("out of memory");
		/* touched now, so page faults stay out of the timed part */
		memset(P.slots[s].in, 0, P.block);
		memset(P.slots[s].out, 0, P.block);
		P.free_slots[P.nfree++] = s;
	}
	pthread_mutex_init(&P.mu, NULL);
	pthread_cond_init(&P.slot_cv, NULL);
	pthread_cond_init(&P.feed_cv, NULL);
	pthread_cond_init(&P.work_cv, NULL);
	pthread_cond_init(&P.done_cv, NULL);

#ifdef BENCH_CAPRICE
	int ncores = caprice_worker_count();
	struct caprice_worker_stats ws0[MAX_CORES];
	int nstat = ncores + caprice_spare_worker_count();
	if (nstat > MAX_CORES)
		nstat = MAX_CORES;
	for (int w = 0; w < nstat; w++)
		caprice_worker_stats(w, &ws0[w]);
#else
	cpu_set_t cs;
	int ncores = sched_getaffinity(0, sizeof cs, &cs) == 0 ? CPU_COUNT(&cs) : -1;
#endif

	double cpu0 = cpu_s();
	uint64_t t0 = now_ns();
	pthread_t rd, wr, comp[MAX_THREADS];
	if (pthread_create(&rd, NULL, reader, NULL) != 0 ||
	    pthread_create(&wr, NULL, writer, NULL) != 0)
		die("pthread_create failed");
	for (int i = 0; i < opt.threads; i++)
		if (pthread_create(&comp[i], NULL, compute, NULL) != 0)
			die("pthread_create failed");
	pthread_join(rd, NULL);
	for (int i = 0; i < opt.threads; i++)
		pthread_join(comp[i], NULL);
	pthread_join(wr, NULL);
	uint64_t t1 = now_ns();
	double cpu = cpu_s() - cpu0;

	if (P.error)
		die("%s", P.error);
	if (close(P.out_fd) != 0)
		die("close %s: %s", out_path, strerror(errno));
	close(P.fd);
	if (tmp_in[0])
		unlink(tmp_in);
	if (tmp_out[0])
		unlink(tmp_out);

	/* time to run, and time computing, per block */
	long n = P.nblocks;
	uint64_t *ttr = malloc((size_t)n * sizeof *ttr), *busy = malloc((size_t)n * sizeof *busy);
	if (!ttr || !busy)
		die("out of memory");
	uint64_t ttr_sum = 0, over_50us = 0;
	for (long b = 0; b < n; b++) {
		ttr[b] = P.t_start[b] - P.t_signal[b];
		busy[b] = P.t_end[b] - P.t_start[b];
		ttr_sum += ttr[b];
		over_50us += ttr[b] > 50000;
	}
	qsort(ttr, (size_t)n, sizeof *ttr, cmp_u64);
	qsort(busy, (size_t)n, sizeof *busy, cmp_u64);

	/* blocks per core, and how many of them ran on the busiest one */
	long per_core[MAX_CORES] = { 0 };
	int max_core = -1;
	for (long b = 0; b < n; b++)
		if (P.core[b] >= 0 && P.core[b] < MAX_CORES) {
			per_core[P.core[b]]++;
			if (P.core[b] > max_core)
				max_core = P.core[b];
		}
	char cores_str[1024] = "";
	size_t cl = 0;
	long top = 0;
	for (int c = 0; c <= max_core && cl < sizeof cores_str - 32; c++) {
		cl += (size_t)snprintf(cores_str + cl, sizeof cores_str - cl, "%s%ld", c ? " " : "",
		                       per_core[c]);
		if (per_core[c] > top)
			top = per_core[c];
	}

	double wall = (double)(t1 - t0) / 1e9;
	char ck[16];
	snprintf(ck, sizeof ck, "%08x", P.checksum);
#ifdef BENCH_CAPRICE
	uint64_t steals = 0, remote = 0, kicks = 0, sleeps = 0, covers = 0;
	for (int w = 0; w < nstat; w++) {
		struct caprice_worker_stats s;
		if (caprice_worker_stats(w, &s) != 0)
			continue;
		steals += s.steals_in - ws0[w].steals_in;
		remote += s.wakes_remote - ws0[w].wakes_remote;
		kicks += s.kicks - ws0[w].kicks;
		sleeps += s.sleeps - ws0[w].sleeps;
		covers += s.covers - ws0[w].covers;
	}
#endif
	if (opt.json) {
		printf("{\n");
		printf("  \"impl\": \"%s\",\n", IMPL);
		printf("  \"cores\": %d,\n", ncores);
		printf("  \"threads\": %d,\n", opt.threads);
		printf("  \"passes\": %d,\n", opt.passes);
		printf("  \"block_bytes\": %zu,\n", P.block);
		printf("  \"blocks\": %ld,\n", n);
		printf("  \"input_bytes\": %llu,\n", (unsigned long long)P.file_bytes);
		printf("  \"output_bytes\": %llu,\n", (unsigned long long)P.written);
		printf("  \"checksum\": \"%s\",\n", ck);
		printf("  \"wall_s\": %.4f,\n", wall);
		printf("  \"cpu_s\": %.4f,\n", cpu);
		printf("  \"block_compute_median_us\": %.1f,\n", (double)quantile(busy, n, 0.5) / 1e3);
		printf("  \"ttr_median_us\": %.1f,\n", (double)quantile(ttr, n, 0.5) / 1e3);
		printf("  \"ttr_p90_us\": %.1f,\n", (double)quantile(ttr, n, 0.9) / 1e3);
		printf("  \"ttr_p99_us\": %.1f,\n", (double)quantile(ttr, n, 0.99) / 1e3);
		printf("  \"ttr_max_us\": %.1f,\n", (double)ttr[n - 1] / 1e3);
		printf("  \"ttr_mean_us\": %.1f,\n", (double)ttr_sum / (double)n / 1e3);
		printf("  \"ttr_over_50us\": %llu,\n", (unsigned long long)over_50us);
		printf("  \"blocks_per_core\": \"%s\",\n", cores_str);
		printf("  \"busiest_core_share\": %.3f", (double)top / (double)n);
#ifdef BENCH_CAPRICE
		printf(",\n  \"steals\": %llu,\n  \"remote_wakes\": %llu,\n  \"kicks\": %llu,\n"
		       "  \"sleeps\": %llu,\n  \"covers\": %llu",
		       (unsigned long long)steals, (unsigned long long)remote,
		       (unsigned long long)kicks, (unsigned long long)sleeps,
		       (unsigned long long)covers);
#endif
		printf("\n}\n");
	} else {
		printf("pipeline-%s: %d %s, %d compute threads, %ld blocks of %zu KiB, %d CRC passes\n",
		       IMPL, ncores,
#ifdef BENCH_CAPRICE
		       "workers",
#else
		       "CPUs",
#endif
		       opt.threads, n, P.block >> 10, opt.passes);
		printf("  wall %.3f s, CPU %.3f s, %.0f us of compute per block (median)\n", wall, cpu,
		       (double)quantile(busy, n, 0.5) / 1e3);
		printf("  time to run: median %.1f us, p90 %.1f, p99 %.1f, max %.1f; %llu of %ld over 50 us\n",
		       (double)quantile(ttr, n, 0.5) / 1e3, (double)quantile(ttr, n, 0.9) / 1e3,
		       (double)quantile(ttr, n, 0.99) / 1e3, (double)ttr[n - 1] / 1e3,
		       (unsigned long long)over_50us, n);
		printf("  blocks computed per %s: %s\n",
#ifdef BENCH_CAPRICE
		       "worker",
#else
		       "CPU",
#endif
		       cores_str);
#ifdef BENCH_CAPRICE
		printf("  scheduler: %llu steals, %llu cross-worker wakes, %llu kicks, %llu sleeps, %llu covers\n",
		       (unsigned long long)steals, (unsigned long long)remote,
		       (unsigned long long)kicks, (unsigned long long)sleeps,
		       (unsigned long long)covers);
#endif
		printf("  output %llu bytes, checksum %s\n", (unsigned long long)P.written, ck);
	}
	return 0;
}
