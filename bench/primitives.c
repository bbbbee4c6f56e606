/* primitives.c: what Caprice's basic thread operations cost next to
 * glibc's NPTL on the same machine.  The one source is built twice, once
 * linked with libthread (primitives-caprice) and once with plain -pthread
 * (primitives-nptl), so both sides run exactly the same calls; the driver
 * bench/compare-primitives sets the two reports side by side against the
 * targets.
 *
 * Measurements that need both threads on one core (yield, same-core
 * ping-pong) run in a child re-executed from /proc/self/exe: with
 * CAPRICE_WORKERS=1 for Caprice, pinned to one CPU for NPTL.  Each
 * blocked-threads census runs in a fresh child too, so its RSS is not
 * blurred by stacks the earlier measurements left pooled. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef BENCH_CAPRICE
#include "caprice.h"
#define IMPL      "caprice"
#define ONE_CORE  "1 worker"
#define DEF_CORES "%d workers"
#else
#define IMPL      "nptl"
#define ONE_CORE  "1 CPU, pinned"
#define DEF_CORES "%d CPUs, unpinned"
#endif

extern char **environ;

#define MAX_REPS        99
#define REP_TARGET_NS   20000000ull   /* one timed run: long enough to swamp timer noise */
#define CALIB_MIN_NS    2000000ull    /* a calibration run this long scales reliably */
#define MAX_ITERS       (1ull << 30)
/* Fewer ops per run would let start-up (a thread's first switch, a
 * worker's first wakeup) pass for the rate. */
#define MIN_ITERS       16
#define SMALL_STACK_KIB 64
/* The blocked-threads census must not take every pid on the machine: other
 * processes would see fork() fail while it runs. */
#define PID_HEADROOM    2048
/* Time budget: past it, measurements are cut short or skipped, and say
 * so, so that an overloaded machine gives partial numbers instead of none.
 * The alarm is the backstop for a run that hangs outright. */
#define BUDGET_MS       40000
#define ALARM_SLACK_S   10

static struct {
	bool json;
	int reps;
	long blocked;           /* threads in the census; 0 skips it */
	long pid_headroom;      /* NPTL census: pids left free */
	long budget_ms;         /* see BUDGET_MS */
	const char *child;      /* internal: "onecore" or "blocked" */
	long stack_kib;         /* internal, census: 0 = default attributes */
} opt = { false, 7, 100000, PID_HEADROOM, BUDGET_MS, NULL, 0 };

#define BENCH_NAME "primitives-" IMPL
#include "bench_util.h"

/* ------------------------------------------------------------------ */
/* results: an ordered key/value list, printed as a table or JSON, and
 * passed from a child to its parent as "key value" lines               */

struct result {
	char key[64];
	bool is_num;
	double num;
	char str[200];
};
static struct result results[160];
static int nresults;

static struct result *slot(const char *key)
{
	for (int i = 0; i < nresults; i++)
		if (strcmp(results[i].key, key) == 0)
			return &results[i];
	if (nresults == (int)(sizeof results / sizeof results[0]))
		die("too many results");
	struct result *r = &results[nresults++];
	snprintf(r->key, sizeof r->key, "%s", key);
	return r;
}

static void put_num(const char *key, double v)
{
	struct result *r = slot(key);
	r->is_num = true;
	r->num = v;
}

static void put_str(const char *key, const char *fmt, ...)
{
	struct result *r = slot(key);
	va_list ap;
	va_start(ap, fmt);
	r->is_num = false;
	vsnprintf(r->str, sizeof r->str, fmt, ap);
	va_end(ap);
}

static const struct result *get(const char *key)
{
	for (int i = 0; i < nresults; i++)
		if (strcmp(results[i].key, key) == 0)
			return &results[i];
	return NULL;
}

static bool get_num(const char *key, double *v)
{
	const struct result *r = get(key);
	if (!r || !r->is_num || r->num != r->num)
		return false;
	*v = r->num;
	return true;
}

static void print_number(FILE *f, double v)
{
	if (v != v)
		fputs("null", f);              /* NaN: JSON has no spelling for it */
	else if (v == (double)(long long)v)
		fprintf(f, "%lld", (long long)v);
	else
		fprintf(f, "%.3f", v);
}

static void print_kv(FILE *f)
{
	for (int i = 0; i < nresults; i++) {
		fprintf(f, "%s ", results[i].key);
		if (results[i].is_num)
			print_number(f, results[i].num);
		else
			fputs(results[i].str, f);
		fputc('\n', f);
	}
}

/* One key per line, so the shell driver can read it without a JSON tool. */
static void print_json(FILE *f)
{
	fputs("{\n", f);
	for (int i = 0; i < nresults; i++) {
		fprintf(f, "  \"%s\": ", results[i].key);
		if (results[i].is_num) {
			print_number(f, results[i].num);
		} else {
			fputc('"', f);
			for (const char *s = results[i].str; *s; s++) {
				if (*s == '"' || *s == '\\')
					fputc('\\', f);
				fputc((unsigned char)*s < 0x20 ? ' ' : *s, f);
			}
			fputc('"', f);
		}
		fputs(i + 1 < nresults ? ",\n" : "\n", f);
	}
	fputs("}\n", f);
}

static void parse_kv(char *text)
{
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		char *sp = strchr(line, ' ');
		if (!sp)
			continue;
		*sp = 0;
		char *val = sp + 1, *end;
		double v = strtod(val, &end);
		if (end != val && *end == 0)
			put_num(line, v);
		else if (strcmp(val, "null") == 0)
			put_num(line, 0.0 / 0.0);
		else
			put_str(line, "%s", val);
	}
}

/* ------------------------------------------------------------------ */
/* timing harness                                                      */

struct sample {
	uint64_t ns;
	uint64_t ops;
};
typedef struct sample (*bench_fn)(void *ctx, uint64_t iters);

/* A run stops early at this much, so that a rate that changes between
 * calibration and the timed runs cannot stretch the bench unboundedly. */
#define RUN_CAP_NS (5 * REP_TARGET_NS)

static uint64_t budget_end;
static bool budget_hit;

static bool out_of_time(void)
{
	if (now_ns() <= budget_end)
		return false;
	budget_hit = true;
	return true;
}

/* When a run that starts at t0 must stop. */
static uint64_t run_deadline(uint64_t t0)
{
	return t0 + RUN_CAP_NS < budget_end ? t0 + RUN_CAP_NS : budget_end;
}

/* Set while measure() does the timed runs: side statistics count only
 * those, not the calibration runs. */
static bool timed_phase;

struct measured {
	double median, min, max;
	int runs;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Grows the iteration count until a run is long enough to scale from
 * (this also warms caches and stack pools), then times opt.reps runs of
 * about REP_TARGET_NS each and reports ns/op over them.  Out of time, it
 * reports the runs it managed, maybe none (NaN). */
static struct measured measure(bench_fn fn, void *ctx)
{
	const double nan = 0.0 / 0.0;
	if (out_of_time())
		return (struct measured){ nan, nan, nan, 0 };
	uint64_t iters = 1;
	struct sample s;
	for (;;) {
		s = fn(ctx, iters);
		if ((s.ns >= CALIB_MIN_NS && iters >= MIN_ITERS) || s.ops < iters ||
		    iters >= MAX_ITERS || out_of_time())
			break;
		iters *= 2;
	}
	double rate = s.ops ? (double)s.ns / (double)s.ops : 1;
	double want = (double)REP_TARGET_NS / (rate > 0 ? rate : 1);
	iters = want < MIN_ITERS ? MIN_ITERS : want > (double)MAX_ITERS ? MAX_ITERS : (uint64_t)want;
	double v[MAX_REPS];
	int n = 0;
	timed_phase = true;
	while (n < opt.reps && !out_of_time()) {
		s = fn(ctx, iters);
		if (s.ops)
			v[n++] = (double)s.ns / (double)s.ops;
	}
	timed_phase = false;
	if (!n)
		return (struct measured){ nan, nan, nan, 0 };
	qsort(v, (size_t)n, sizeof v[0], cmp_double);
	return (struct measured){ n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v[0], v[n - 1],
	                          n };
}

static void put_measured(const char *key, struct measured m)
{
	char k[80];
	put_num(key, m.median);
	snprintf(k, sizeof k, "%s_min", key);
	put_num(k, m.min);
	snprintf(k, sizeof k, "%s_max", key);
	put_num(k, m.max);
	if (m.runs < opt.reps) {
		snprintf(k, sizeof k, "%s_runs", key);
		put_num(k, m.runs);
	}
}

static void start(pthread_t *t, void *(*fn)(void *), void *arg)
{
	int e = pthread_create(t, NULL, fn, arg);
	if (e)
		die("pthread_create: %s", strerror(e));
}

static void join(pthread_t t)
{
	int e = pthread_join(t, NULL);
	if (e)
		die("pthread_join: %s", strerror(e));
}

static void max_into(uint64_t *dst, uint64_t v)
{
	uint64_t old = __atomic_load_n(dst, __ATOMIC_RELAXED);
	while (v > old && !__atomic_compare_exchange_n(dst, &old, v, true, __ATOMIC_RELAXED,
	                                               __ATOMIC_RELAXED))
		;
}

/* Which core the caller is on: the worker for Caprice, the CPU for NPTL. */
static int where(void)
{
#ifdef BENCH_CAPRICE
	return caprice_worker_index();
#else
	return sched_getcpu();
#endif
}

/* What the kernel did for a handoff.  sleeps: for Caprice, workers idling
 * in io_uring_enter; for NPTL, voluntary context switches (futex waits).
 * Either way a handoff that needs one pays for a syscall.  Caprice also
 * says how often a wakeup or a steal crossed workers. */
struct kstats {
	uint64_t sleeps, remote_wakes, steals;
};

static struct kstats kstats_now(void)
{
	struct kstats k = { 0, 0, 0 };
#ifdef BENCH_CAPRICE
	for (int i = 0; i < caprice_worker_count(); i++) {
		struct caprice_worker_stats s;
		if (caprice_worker_stats(i, &s) == 0) {
			k.sleeps += s.sleeps;
			k.remote_wakes += s.wakes_remote;
			k.steals += s.steals_in;
		}
	}
#else
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	k.sleeps = (uint64_t)ru.ru_nvcsw;
#endif
	return k;
}

/* ------------------------------------------------------------------ */
/* 1. create+join                                                       */

static void *nop_thread(void *arg)
{
	return arg;
}

static struct sample bench_create_join(void *ctx, uint64_t iters)
{
	(void)ctx;
	uint64_t t0 = now_ns(), deadline = run_deadline(t0), i;
	for (i = 0; i < iters; i++) {
		if ((i & 63) == 63 && now_ns() > deadline)
			break;
		pthread_t t;
		start(&t, nop_thread, NULL);
		join(t);
	}
	return (struct sample){ now_ns() - t0, i };
}

/* ------------------------------------------------------------------ */
/* 2. yield switch                                                      */

struct yield_run {
	uint64_t iters, deadline;
	int ready, stop;
	int last;             /* who ran last: counting changes counts real switches */
	uint64_t t0, t_end;
	uint64_t switches;
};
struct yield_arg {
	struct yield_run *run;
	int id;
};

static void *yield_thread(void *p)
{
	struct yield_arg *a = p;
	struct yield_run *r = a->run;
	/* start together, or the first would yield alone for a while */
	if (__atomic_add_fetch(&r->ready, 1, __ATOMIC_ACQ_REL) == 2) {
		r->t0 = now_ns();
		r->deadline = run_deadline(r->t0);
		__atomic_store_n(&r->ready, 3, __ATOMIC_RELEASE);
	} else {
		while (__atomic_load_n(&r->ready, __ATOMIC_ACQUIRE) < 3)
			sched_yield();
	}
	uint64_t sw = 0, done = 0;
	while (done < r->iters) {
		/* the checks every 1024 yields stay out of the measured path */
		uint64_t n = r->iters - done < 1024 ? r->iters - done : 1024;
		for (uint64_t i = 0; i < n; i++) {
			if (__atomic_load_n(&r->last, __ATOMIC_RELAXED) != a->id) {
				sw++;
				__atomic_store_n(&r->last, a->id, __ATOMIC_RELAXED);
			}
			sched_yield();
		}
		done += n;
		if (__atomic_load_n(&r->stop, __ATOMIC_RELAXED))
			break;
		if (now_ns() > r->deadline) {
			__atomic_store_n(&r->stop, 1, __ATOMIC_RELAXED);
			break;
		}
	}
	max_into(&r->t_end, now_ns());
	__atomic_add_fetch(&r->switches, sw, __ATOMIC_RELAXED);
	return NULL;
}

struct yield_ctx {
	uint64_t switches, yields;   /* over the timed runs: did they alternate? */
};

static struct sample bench_yield(void *ctx, uint64_t iters)
{
	struct yield_ctx *c = ctx;
	struct yield_run r = { .iters = iters, .last = -1 };
	struct yield_arg a[2] = { { &r, 0 }, { &r, 1 } };
	pthread_t t[2];
	start(&t[0], yield_thread, &a[0]);
	start(&t[1], yield_thread, &a[1]);
	join(t[0]);
	join(t[1]);
	if (timed_phase) {
		c->switches += r.switches;
		c->yields += 2 * iters;
	}
	return (struct sample){ r.t_end - r.t0, r.switches };
}

/* ------------------------------------------------------------------ */
/* 3. uncontended mutex                                                 */

static struct sample bench_mutex(void *ctx, uint64_t iters)
{
	pthread_mutex_t *m = ctx;
	uint64_t t0 = now_ns();
	for (uint64_t i = 0; i < iters; i++) {
		pthread_mutex_lock(m);
		pthread_mutex_unlock(m);
	}
	return (struct sample){ now_ns() - t0, iters };
}

/* ------------------------------------------------------------------ */
/* 4. condvar ping-pong                                                 */

struct pp_run {
	pthread_mutex_t m;
	pthread_cond_t cv[2];
	uint64_t limit, deadline;
	uint64_t passes;        /* one-way handoffs so far */
	int turn, ready, done;
	uint64_t t0, t_end;
	struct kstats k0, k1;
	int where[2];
};
struct pp_arg {
	struct pp_run *run;
	int id;
};

static void *pp_thread(void *p)
{
	struct pp_arg *a = p;
	struct pp_run *r = a->run;
	int me = a->id, other = !a->id;
	pthread_mutex_lock(&r->m);
	if (++r->ready == 2) {
		r->k0 = kstats_now();
		r->t0 = now_ns();
		r->deadline = run_deadline(r->t0);
		pthread_cond_signal(&r->cv[other]);
	} else {
		while (r->ready < 2)
			pthread_cond_wait(&r->cv[me], &r->m);
	}
	for (;;) {
		while (r->turn != me && !r->done)
			pthread_cond_wait(&r->cv[me], &r->m);
		if (r->done)
			break;
		r->passes++;
		if (r->passes >= r->limit || ((r->passes & 63) == 0 && now_ns() > r->deadline)) {
			/* the last pass: tell the other to leave instead */
			r->t_end = now_ns();
			r->k1 = kstats_now();
			r->done = 1;
		}
		r->turn = other;
		pthread_cond_signal(&r->cv[other]);
	}
	r->where[me] = where();
	pthread_mutex_unlock(&r->m);
	return NULL;
}

struct pp_ctx {
	uint64_t handoffs, runs, split_runs;
	struct kstats k;
};

static struct sample bench_pingpong(void *ctx, uint64_t iters)
{
	struct pp_ctx *c = ctx;
	struct pp_run r = {
		.m = PTHREAD_MUTEX_INITIALIZER,
		.cv = { PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER },
		.limit = iters,
	};
	struct pp_arg a[2] = { { &r, 0 }, { &r, 1 } };
	pthread_t t[2];
	start(&t[0], pp_thread, &a[0]);
	start(&t[1], pp_thread, &a[1]);
	join(t[0]);
	join(t[1]);
	if (timed_phase) {
		c->handoffs += r.passes;
		c->runs++;
		c->split_runs += r.where[0] != r.where[1];
		c->k.sleeps += r.k1.sleeps - r.k0.sleeps;
		c->k.remote_wakes += r.k1.remote_wakes - r.k0.remote_wakes;
		c->k.steals += r.k1.steals - r.k0.steals;
	}
	return (struct sample){ r.t_end - r.t0, r.passes };
}

static void run_pingpong(const char *prefix)
{
	char k[80];
	struct pp_ctx c = { 0 };
	snprintf(k, sizeof k, "%s_ns", prefix);
	put_measured(k, measure(bench_pingpong, &c));
	double h = c.handoffs ? (double)c.handoffs : 0.0 / 0.0;
	snprintf(k, sizeof k, "%s_kernel_sleeps_per_handoff", prefix);
	put_num(k, (double)c.k.sleeps / h);
#ifdef BENCH_CAPRICE
	snprintf(k, sizeof k, "%s_remote_wakes_per_handoff", prefix);
	put_num(k, (double)c.k.remote_wakes / h);
	snprintf(k, sizeof k, "%s_steals_per_handoff", prefix);
	put_num(k, (double)c.k.steals / h);
#endif
	snprintf(k, sizeof k, "%s_split_runs", prefix);
	put_num(k, (double)c.split_runs);
	snprintf(k, sizeof k, "%s_runs", prefix);
	put_num(k, (double)c.runs);
}

/* ------------------------------------------------------------------ */
/* 5. many blocked threads                                              */

struct vm_status {
	long rss_kib, pte_kib, size_kib;
};

static long status_field(const char *text, const char *name)
{
	const char *p = strstr(text, name);
	return p ? strtol(p + strlen(name), NULL, 10) : -1;
}

/* Read with plain read(): one buffer, no stdio state. */
static struct vm_status read_status(void)
{
	char buf[8192];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("/proc/self/status: %s", strerror(errno));
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = 0;
	return (struct vm_status){ status_field(buf, "\nVmRSS:"), status_field(buf, "\nVmPTE:"),
	                           status_field(buf, "\nVmSize:") };
}

#ifndef BENCH_CAPRICE
static long read_long_file(const char *path, int field_after_slash)
{
	char buf[256];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	const char *p = buf;
	if (field_after_slash) {
		p = strchr(buf, '/');
		if (!p)
			return -1;
		p++;
	}
	return strtol(p, NULL, 10);
}
#endif

static void *census_thread(void *p)
{
	census_arrive_and_wait(p);
	return NULL;
}

static void child_blocked(void)
{
	char prefix[32], k[96];
	if (opt.stack_kib)
		snprintf(prefix, sizeof prefix, "blocked_%ldk", opt.stack_kib);
	else
		snprintf(prefix, sizeof prefix, "blocked_default");
#define PUT(name, v) (snprintf(k, sizeof k, "%s_%s", prefix, name), put_num(k, (double)(v)))

	long want = opt.blocked, cap = want;
	long pid_max = -1;
#ifndef BENCH_CAPRICE
	/* each NPTL thread is a kernel task with a pid; leave some for others */
	pid_max = read_long_file("/proc/sys/kernel/pid_max", 0);
	long tasks = read_long_file("/proc/loadavg", 1);
	if (pid_max > 0 && tasks > 0) {
		long room = pid_max - tasks - opt.pid_headroom;
		if (room < cap)
			cap = room > 0 ? room : 0;
	}
#endif
	pthread_t *h = calloc((size_t)want + 1, sizeof *h);
	if (!h)
		die("out of memory for %ld handles", want);
	memset(h, 0xff, ((size_t)want + 1) * sizeof *h); /* fault it in before the baseline */

	struct census c = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
	                    PTHREAD_COND_INITIALIZER, 0, LONG_MAX, false };
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	if (opt.stack_kib) {
		int e = pthread_attr_setstacksize(&attr, (size_t)opt.stack_kib * 1024);
		if (e)
			die("pthread_attr_setstacksize(%ld KiB): %s", opt.stack_kib, strerror(e));
	}
	size_t stack = 0;
	pthread_attr_getstacksize(&attr, &stack);

	struct vm_status before = read_status();
	uint64_t t0 = now_ns();
	long made = 0;
	char stopped[200] = "";
	for (; made < cap; made++) {
		if ((made & 255) == 255 && out_of_time()) {
			snprintf(stopped, sizeof stopped, "time budget exhausted");
			break;
		}
		int e = pthread_create(&h[made], &attr, census_thread, &c);
		if (e) {
			snprintf(stopped, sizeof stopped, "%s", strerror(e));
			break;
		}
	}
	uint64_t t1 = now_ns();
	if (made == cap && cap < want)
		snprintf(stopped, sizeof stopped,
		         "capped to keep %ld of kernel.pid_max=%ld pids free for other processes "
		         "(--pid-headroom 0 runs into EAGAIN)", opt.pid_headroom, pid_max);
	pthread_mutex_lock(&c.m);
	c.target = made;
	while (c.arrived < made)
		pthread_cond_wait(&c.all_in, &c.m);
	pthread_mutex_unlock(&c.m);
	uint64_t t2 = now_ns();
	struct vm_status after = read_status();

	pthread_mutex_lock(&c.m);
	c.released = true;
	pthread_cond_broadcast(&c.cv);
	pthread_mutex_unlock(&c.m);
	for (long i = 0; i < made; i++)
		join(h[i]);
	uint64_t t3 = now_ns();
	pthread_attr_destroy(&attr);
	free(h);

	double n = made ? (double)made : 0.0 / 0.0;
	PUT("requested", want);
	PUT("created", made);
	PUT("stack_bytes", stack);
	PUT("rss_per_thread_bytes", (double)(after.rss_kib - before.rss_kib) * 1024 / n);
	PUT("pte_per_thread_bytes", (double)(after.pte_kib - before.pte_kib) * 1024 / n);
	PUT("vm_per_thread_bytes", (double)(after.size_kib - before.size_kib) * 1024 / n);
	PUT("create_ns_per_thread", (double)(t1 - t0) / n);
	PUT("until_blocked_ns_per_thread", (double)(t2 - t0) / n);
	PUT("release_join_ns_per_thread", (double)(t3 - t2) / n);
	snprintf(k, sizeof k, "%s_stopped", prefix);
	put_str(k, "%s", stopped);
#undef PUT
}

/* ------------------------------------------------------------------ */
/* children                                                             */

/* Both threads of a pair on one core.  Caprice gets there through
 * CAPRICE_WORKERS=1 in our environment; NPTL threads inherit this pin. */
static void child_onecore(void)
{
#ifdef BENCH_CAPRICE
	put_num("onecore_workers", caprice_worker_count());
	if (caprice_worker_count() != 1)
		die("one-worker child started with %d workers", caprice_worker_count());
#else
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) != 0)
		die("sched_getaffinity: %s", strerror(errno));
	int cpu = 0;
	while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &set))
		cpu++;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) != 0)
		die("sched_setaffinity: %s", strerror(errno));
	put_num("onecore_cpu", cpu);
#endif
	put_measured("create_join_1_ns", measure(bench_create_join, NULL));
	struct yield_ctx y = { 0 };
	put_measured("yield_switch_ns", measure(bench_yield, &y));
	put_num("yield_alternation", (double)y.switches / (double)y.yields);
	run_pingpong("pingpong_1");
}

/* Runs this program again with args; its "key value" lines join our
 * results.  False (with a note in the results) if it failed. */
static bool run_child(const char *what, const char *const *args, bool one_worker)
{
	char exe[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (len < 0)
		die("readlink /proc/self/exe: %s", strerror(errno));
	exe[len] = 0;

	char key[64];
	snprintf(key, sizeof key, "%s_error", what);
	/* the child gets what is left of our budget */
	uint64_t now = now_ns();
	if (now + 1000000000u > budget_end) {
		budget_hit = true;
		put_str(key, "skipped: time budget exhausted");
		return false;
	}
	char budget[32], reps[16];
	snprintf(budget, sizeof budget, "%llu", (unsigned long long)((budget_end - now) / 1000000u));
	snprintf(reps, sizeof reps, "%d", opt.reps);
	const char *argv[32];
	int ac = 0;
	argv[ac++] = exe;
	argv[ac++] = "--budget-ms";
	argv[ac++] = budget;
	argv[ac++] = "--reps";
	argv[ac++] = reps;
	while (*args && ac < 31)
		argv[ac++] = *args++;
	argv[ac] = NULL;

	size_t nenv = 0;
	while (environ[nenv])
		nenv++;
	char **envp = calloc(nenv + 2, sizeof *envp);
	if (!envp)
		die("out of memory");
	size_t ne = 0;
	for (size_t i = 0; i < nenv; i++)
		if (!one_worker || strncmp(environ[i], "CAPRICE_WORKERS=", 16) != 0)
			envp[ne++] = environ[i];
	if (one_worker)
		envp[ne++] = "CAPRICE_WORKERS=1";
	envp[ne] = NULL;

	int fd[2];
	if (pipe2(fd, O_CLOEXEC) != 0)
		die("pipe: %s", strerror(errno));
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
	pid_t pid;
	int e = posix_spawn(&pid, exe, &fa, NULL, (char *const *)argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	free(envp);
	close(fd[1]);
	if (e) {
		close(fd[0]);
		put_str("error", "%s: cannot start child: %s", what, strerror(e));
		return false;
	}
	size_t cap = 1 << 16, n = 0;
	char *out = malloc(cap);
	if (!out)
		die("out of memory");
	/* read to the end even past a full buffer: a child blocked on a full
	 * pipe would never exit for the waitpid below */
	char spill[4096];
	for (;;) {
		bool full = n == cap - 1;
		ssize_t r = full ? read(fd[0], spill, sizeof spill) : read(fd[0], out + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (!full)
			n += (size_t)r;
	}
	out[n] = 0;
	close(fd[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	parse_kv(out);
	free(out);
	double hit;
	if (get_num("budget_exhausted", &hit) && hit)
		budget_hit = true;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return true;
	if (WIFSIGNALED(st))
		put_str(key, "child killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		put_str(key, "child exited with status %d", WEXITSTATUS(st));
	return false;
}

static void run_census(long stack_kib)
{
	char threads[24], kib[24], headroom[24], what[32];
	snprintf(threads, sizeof threads, "%ld", opt.blocked);
	snprintf(kib, sizeof kib, "%ld", stack_kib);
	snprintf(headroom, sizeof headroom, "%ld", opt.pid_headroom);
	const char *args[] = { "--child", "blocked", "--threads", threads,
	                       "--stack-kib", kib, "--pid-headroom", headroom, NULL };
	if (stack_kib)
		snprintf(what, sizeof what, "blocked_%ldk", stack_kib);
	else
		snprintf(what, sizeof what, "blocked_default");
	run_child(what, args, false);
}

/* ------------------------------------------------------------------ */
/* the human table                                                      */

static void row(const char *label, const char *key, const char *unit)
{
	double v, lo, hi;
	char k[96], k2[96];
	if (!get_num(key, &v)) {
		printf("  %-40s %10s\n", label, "failed");
		return;
	}
	printf("  %-40s %10.1f ", label, v);
	snprintf(k, sizeof k, "%s_min", key);
	snprintf(k2, sizeof k2, "%s_max", key);
	if (get_num(k, &lo) && get_num(k2, &hi))
		printf("%-10s (runs: %.1f .. %.1f)\n", unit, lo, hi);
	else
		printf("%s\n", unit);
}

/* What the kernel and the scheduler did behind a ping-pong's handoffs. */
static void pingpong_notes(const char *prefix)
{
	char k[96];
	double a, b;
#define K(name) (snprintf(k, sizeof k, "%s_%s", prefix, name), k)
	if (get_num(K("split_runs"), &a) && get_num(K("runs"), &b))
		printf("      threads ended on different %s in %.0f of %.0f runs\n",
#ifdef BENCH_CAPRICE
		       "workers",
#else
		       "CPUs",
#endif
		       a, b);
	if (get_num(K("kernel_sleeps_per_handoff"), &a))
		printf("      %.3f %s per handoff\n", a,
#ifdef BENCH_CAPRICE
		       "worker sleeps in io_uring_enter"
#else
		       "voluntary context switches"
#endif
		);
#ifdef BENCH_CAPRICE
	if (get_num(K("remote_wakes_per_handoff"), &a) && get_num(K("steals_per_handoff"), &b))
		printf("      %.3f cross-worker wakeups, %.3f threads stolen per handoff\n", a, b);
#endif
#undef K
}

static void census_rows(const char *prefix, const char *title)
{
	char k[96];
	double req, made, stack;
#define K(name) (snprintf(k, sizeof k, "%s_%s", prefix, name), k)
	if (!get_num(K("created"), &made) || !get_num(K("requested"), &req)) {
		printf("  %s: failed\n", title);
		return;
	}
	get_num(K("stack_bytes"), &stack);
	printf("  %s (%.0f KiB stacks):\n  %.0f of %.0f threads blocked at once\n", title,
	       stack / 1024, made, req);
	const struct result *s = get(K("stopped"));
	if (s && !s->is_num && s->str[0])
		printf("    " IMPL " stopped at %.0f threads: %s\n", made, s->str);
	row("  RSS per thread", K("rss_per_thread_bytes"), "bytes");
	row("  page tables (VmPTE) per thread", K("pte_per_thread_bytes"), "bytes");
	row("  address space (VmSize) per thread", K("vm_per_thread_bytes"), "bytes");
	row("  pthread_create", K("create_ns_per_thread"), "ns/thread");
	row("  create until all blocked", K("until_blocked_ns_per_thread"), "ns/thread");
	row("  broadcast, then join all", K("release_join_ns_per_thread"), "ns/thread");
#undef K
}

static void print_table(int cores)
{
	char def[64];
	snprintf(def, sizeof def, DEF_CORES, cores);
	printf("primitives-" IMPL ": %s; median of %d timed runs per measurement\n\n",
#ifdef BENCH_CAPRICE
	       "Caprice user threads",
#else
	       "glibc NPTL kernel threads",
#endif
	       opt.reps);
	char l[96];
	snprintf(l, sizeof l, "create+join, %s", def);
	row(l, "create_join_ns", "ns/pair");
	row("create+join, " ONE_CORE, "create_join_1_ns", "ns/pair");
	row("yield switch, " ONE_CORE, "yield_switch_ns", "ns/switch");
	double y;
	if (get_num("yield_alternation", &y) && y < 0.99)
		printf("      the two threads alternated on only %.0f%% of yields\n", y * 100);
#ifndef BENCH_CAPRICE
	printf("      NPTL's sched_yield on one CPU is a kernel switch (a syscall each)\n");
#endif
	row("uncontended mutex lock+unlock", "mutex_ns", "ns/pair");
	row("condvar ping-pong, " ONE_CORE, "pingpong_1_ns", "ns/handoff");
	pingpong_notes("pingpong_1");
	snprintf(l, sizeof l, "condvar ping-pong, %s", def);
	row(l, "pingpong_default_ns", "ns/handoff");
	pingpong_notes("pingpong_default");
	if (opt.blocked) {
		putchar('\n');
#ifdef BENCH_CAPRICE
		census_rows("blocked_default", "blocked on one condvar, default attributes");
#endif
		char p[32];
		snprintf(p, sizeof p, "blocked_%dk", SMALL_STACK_KIB);
		census_rows(p, "blocked on one condvar, pthread_attr_setstacksize");
#ifndef BENCH_CAPRICE
		printf("    NPTL uses 64 KiB stacks here, not its 8 MiB default, to be safe;\n"
		       "    kernel.pid_max and vm.max_map_count stop it near 32K threads\n");
#endif
	}
	for (int i = 0; i < nresults; i++)
		if (strstr(results[i].key, "error") && !results[i].is_num)
			printf("  error: %s: %s\n", results[i].key, results[i].str);
	if (budget_hit)
		printf("  note: the %ld ms time budget ran out: some measurements were cut short "
		       "or skipped (an overloaded machine?)\n", opt.budget_ms);
}

/* ------------------------------------------------------------------ */

static void usage(void)
{
	printf("usage: primitives-" IMPL " [--json] [--reps N] [--threads N] [--pid-headroom N]\n"
	       "                          [--budget-ms N]\n"
	       "  --json            one JSON object instead of the table\n"
	       "  --reps N          timed runs per measurement, median reported (7)\n"
	       "  --threads N       threads in the blocked census; 0 skips it (100000)\n"
	       "  --pid-headroom N  NPTL census leaves N pids free (%d)\n"
	       "  --budget-ms N     cut measurements short past N ms (%d)\n", PID_HEADROOM, BUDGET_MS);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--json") == 0) {
			opt.json = true;
		} else if (strcmp(a, "--reps") == 0) {
			opt.reps = (int)bench_arg_long(a, v, 1, MAX_REPS);
			i++;
		} else if (strcmp(a, "--threads") == 0) {
			opt.blocked = bench_arg_long(a, v, 0, 10000000);
			i++;
		} else if (strcmp(a, "--pid-headroom") == 0) {
			opt.pid_headroom = bench_arg_long(a, v, 0, 1 << 22);
			i++;
		} else if (strcmp(a, "--child") == 0 && v) {
			opt.child = v;
			i++;
		} else if (strcmp(a, "--budget-ms") == 0) {
			opt.budget_ms = bench_arg_long(a, v, 1000, 3600000);
			i++;
		} else if (strcmp(a, "--stack-kib") == 0) {
			opt.stack_kib = bench_arg_long(a, v, 0, 1 << 20);
			i++;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage();
			return 0;
		} else {
			usage();
			return 2;
		}
	}

	budget_end = now_ns() + (uint64_t)opt.budget_ms * 1000000u;
	alarm((unsigned)(opt.budget_ms / 1000) + ALARM_SLACK_S);
	if (opt.child) {
		if (strcmp(opt.child, "onecore") == 0)
			child_onecore();
		else if (strcmp(opt.child, "blocked") == 0)
			child_blocked();
		else
			die("unknown child mode %s", opt.child);
		put_num("budget_exhausted", budget_hit);
		print_kv(stdout);
		return 0;
	}

#ifdef BENCH_CAPRICE
	int cores = caprice_worker_count();
#else
	cpu_set_t set;
	sched_getaffinity(0, sizeof set, &set);
	int cores = CPU_COUNT(&set);
#endif
	put_str("impl", IMPL);
	put_num("reps", opt.reps);
	put_num("cores", cores);

	put_measured("create_join_ns", measure(bench_create_join, NULL));
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	put_measured("mutex_ns", measure(bench_mutex, &m));
	run_pingpong("pingpong_default");

	const char *onecore[] = { "--child", "onecore", NULL };
	run_child("onecore", onecore, true);

	if (opt.blocked) {
#ifdef BENCH_CAPRICE
		run_census(0);
#endif
		run_census(SMALL_STACK_KIB);
	}

	put_num("budget_exhausted", budget_hit);
	if (opt.json)
		print_json(stdout);
	else
		print_table(cores);
	return 0;
}
