/* memserver.c: the server of bench/compare-memory.  A plain blocking
 * thread-per-connection server whose every request holds a large transient
 * buffer between two blocking points, run under a memory budget
 * (CAPRICE_MEM_LIMIT, read by the runtime under CAPRICE_SCHED=2d) and a
 * hard wall somewhat above it (RLIMIT_DATA, set here), so that a policy
 * that lets too many requests hold their buffer at once meets real malloc
 * failures.
 *
 * Per request, on the connection's own thread:
 *   A  recv() the request line                     (blocking point A)
 *      malloc --req-mb MiB and write every byte    (+req-mb held)
 *   B  nanosleep(--backend-ms), the "backend"      (blocking point B)
 *      checksum the buffer, free it                (-req-mb held)
 *      send "OK <sum>"
 * A request whose malloc fails is answered "ERR" and counted.  "HELLO"
 * (the client's warm-up, one per connection) is answered "HELLO" with no
 * allocation; the first REQ, which comes once every connection has had its
 * HELLO answered, arms the wall (see setup_heap and arm_wall: the buffers
 * come from a heap populated at start, so that neither policy pays page
 * faults, and RLIMIT_DATA keeps that heap from growing).
 *
 * A sampler thread (at a real-time priority, so that it keeps time
 * however many connections are runnable) writes, every 100 ms, one line
 * to --log:
 *   t_ms held_bytes rss_bytes vmdata_bytes ok err inflight
 * (t from the server's start; held = mallinfo2's uordblks + hblkhd, what
 * glibc has handed out and not had back; inflight = request buffers held
 * at that moment).  After --duration seconds, or on SIGTERM, it prints
 *   result ok=N err=N ... peak_held=N ...
 * on stdout and exits.
 *
 * usage: memserver [--port P] [--req-mb N] [--backend-ms N] [--wall-mb N]
 *                  [--wall-slack-mb N] [--log FILE] [--duration S]
 * --wall-mb: the heap's size, populated at start; the wall is armed on it
 * (see setup_heap and arm_wall).  0, the default: no wall, no pool.
 * Prints "port N" once listening on 127.0.0.1:N. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "memserver"
#include "bench_util.h"

/* Caprice gives every thread asking for 256 KiB or less a pooled default
 * stack anyway; asking for little keeps the NPTL reading of the source
 * honest too. */
#define STACK_SIZE (64 * 1024)
#define LINE_MAX_  128

static struct {
	int port;
	size_t req_bytes;
	long backend_ms;
	long wall_mb;
	const char *log;
	double duration;
} opt = { 0, 4u << 20, 5, 0, NULL, 0 };

static _Atomic uint64_t n_ok, n_err, n_hello, n_create_fail, n_accept_fail;
static _Atomic int64_t inflight, peak_inflight;
/* the fewest buffers alive when a malloc failed: near the wall's worth
 * (--wall-mb / --req-mb) if failures come from the wall, not from a heap
 * too fragmented for a buffer */
static _Atomic int64_t err_inflight_min = INT64_MAX;
static _Atomic int wall_armed;
static uint64_t t0_ns;
static _Atomic uint64_t first_req_ns;   /* the first REQ's arrival, 0 until then */
static uint64_t wall_base;              /* VmData when the wall was armed */

/* A field of /proc/self/status in KiB, or -1.  open and read into the
 * stack, not stdio: at the wall fopen's malloc may fail, and the samples
 * must go on exactly then. */
static long status_kb(const char *key)
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	size_t klen = strlen(key);
	for (char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, key, klen) == 0 && p[klen] == ':')
			return strtol(p + klen + 1, NULL, 10);
	}
	return -1;
}

/* The heap, set up once at start.
 *
 * Page faults are what a benchmark of this kind must not end up
 * measuring: on the VM this was written on, a first touch of a 4 KiB page
 * costs 10 us on a quiet machine and 40 us on a busy one (a 4 MiB buffer
 * freshly mapped and written: 10-50 ms of CPU, against 0.1 ms to write it
 * again), while the kernel populates the same pages in bulk (MAP_POPULATE)
 * in 2 ms.  So the request buffers come from a
 * heap that glibc keeps, not from an mmap and munmap each:
 *   - M_MMAP_THRESHOLD at its maximum (32 MiB): a buffer of --req-mb is
 *     carved from the heap (glibc would raise its threshold past 4 MiB
 *     after the first such free anyway; fixed, it is deterministic);
 *   - M_TRIM_THRESHOLD out of reach: freed memory stays mapped and
 *     resident, so a later request reuses written pages;
 *   - M_ARENA_MAX 1: one heap (the brk heap) that the wall bounds as a
 *     whole, rather than one arena per worker kernel thread each reserving
 *     64 MiB heaps that glibc unmaps when they empty (they would be faulted
 *     in again and again).
 * With --wall-mb the heap is grown to that size and its pages populated
 * at start (MADV_POPULATE_WRITE, written by hand on kernels before 5.14),
 * then freed: the requests' buffers then cost no page faults under either
 * policy, and bytes held (mallinfo2, what the budget is about) are what
 * the requests hold; RSS stays at the heap's size. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define POOL_PIECE (16u << 20)   /* under the mmap threshold: from the heap */

static void setup_heap(void)
{
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, INT32_MAX);
	mallopt(M_ARENA_MAX, 1);
	if (!opt.wall_mb)
		return;
	size_t pieces = ((size_t)opt.wall_mb << 20) / POOL_PIECE;
	void **p = calloc(pieces ? pieces : 1, sizeof *p);
	if (!p)
		die("no memory for the heap's list");
	long page = sysconf(_SC_PAGESIZE);
	for (size_t i = 0; i < pieces; i++) {
		if (!(p[i] = malloc(POOL_PIECE)))
			die("cannot grow the heap to %ld MiB", opt.wall_mb);
		uintptr_t lo = ((uintptr_t)p[i] + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
		uintptr_t hi = ((uintptr_t)p[i] + POOL_PIECE) & ~(uintptr_t)(page - 1);
		if (madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE) != 0)
			memset(p[i], 0, POOL_PIECE);
	}
	/* freed in order: they coalesce into the heap's top, kept (trim off) */
	for (size_t i = 0; i < pieces; i++)
		free(p[i]);
	free(p);
}

/* The wall is RLIMIT_DATA, not RLIMIT_AS.  Both make a malloc past them
 * fail cleanly here (brk and mmap refused; the runtime goes on), but
 * RLIMIT_AS also counts what is never written: libraries' code, guard
 * pages, the io_uring rings, and glibc's 64 MiB PROT_NONE reservation per
 * arena when there is more than one: with one arena, 130 MiB more than
 * RLIMIT_DATA's count at 400 connections here, and it moves with how many
 * kernel threads the runtime starts.  RLIMIT_DATA counts private writable mappings and
 * the brk heap: the heap above, the runtime's user-thread stacks (slabs of
 * 64 pooled stacks, mapped as connections come) and its kernel threads'
 * stacks; io_uring rings are shared mappings and never count.  So the wall is armed only once every
 * connection has its thread (the client's HELLO round; the first REQ
 * arms it), at what the process then has: the heap cannot grow past the
 * --wall-mb already populated, a malloc that does not fit in it fails
 * cleanly with NULL (brk and glibc's mmap fallback are both refused), and
 * stacks already mapped stay within it (pooled stacks are reused by
 * reconnections).  --wall-slack-mb (default 0) leaves room above that. */
static long wall_slack_mb;

static pthread_mutex_t wall_lock = PTHREAD_MUTEX_INITIALIZER;

/* Every REQ passes here before its malloc.  The first arms the wall;
 * those that come meanwhile wait on the lock, for reading /proc parks the
 * arming thread and, were they let through, their buffers would grow the
 * heap past the pool before the limit is set. */
static void arm_wall(void)
{
	if (!opt.wall_mb || atomic_load_explicit(&wall_armed, memory_order_acquire))
		return;
	pthread_mutex_lock(&wall_lock);
	if (!atomic_load_explicit(&wall_armed, memory_order_relaxed)) {
		long kb = status_kb("VmData");
		if (kb < 0) {
			fprintf(stderr, "memserver: no VmData in /proc/self/status: no wall\n");
		} else {
			wall_base = (uint64_t)kb << 10;
			rlim_t lim = (rlim_t)wall_base + ((rlim_t)wall_slack_mb << 20);
			struct rlimit rl = { lim, lim };
			if (setrlimit(RLIMIT_DATA, &rl) != 0)
				perror("memserver: setrlimit(RLIMIT_DATA)");
		}
		atomic_store_explicit(&wall_armed, 1, memory_order_release);
	}
	pthread_mutex_unlock(&wall_lock);
}

/* Reads one request line into buf; false when the peer is gone.  The
 * client sends one request at a time, so a line never straddles two. */
static bool read_line(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	for (;;) {
		/* blocking point A: the thread parks here between requests */
		ssize_t n = recv(fd, buf + got, cap - 1 - got, 0);
		if (n <= 0)
			return false;
		got += (size_t)n;
		if (memchr(buf, '\n', got))
			break;
		if (got == cap - 1)
			return false;   /* not our protocol */
	}
	buf[got] = 0;
	return true;
}

static bool send_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static void note_inflight(int64_t delta)
{
	int64_t now = atomic_fetch_add(&inflight, delta) + delta;
	int64_t peak = atomic_load(&peak_inflight);
	while (now > peak && !atomic_compare_exchange_weak(&peak_inflight, &peak, now))
		;
}

/* The backend: a few milliseconds of waiting the thread cannot shorten. */
static __attribute__((noinline)) void backend(void)
{
	struct timespec ts = { opt.backend_ms / 1000, (opt.backend_ms % 1000) * 1000000L };
	/* blocking point B: the thread parks here holding its buffer */
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* One request.  noinline, as backend: A and B must be separate call
 * sites whatever the compiler does, and the runtime tells blocking points
 * apart by their return addresses. */
static __attribute__((noinline)) int handle(int fd, char *out, size_t cap)
{
	unsigned char *buf = malloc(opt.req_bytes);
	if (!buf) {
		int64_t now = atomic_load(&inflight), min = atomic_load(&err_inflight_min);
		while (now < min && !atomic_compare_exchange_weak(&err_inflight_min, &min, now))
			;
		atomic_fetch_add(&n_err, 1);
		return snprintf(out, cap, "ERR\n");
	}
	note_inflight(1);
	/* every byte written: the pages are really taken, as a request that
	 * fills its buffer would (decoding an upload, building a reply) */
	memset(buf, (int)(fd & 0xff) | 1, opt.req_bytes);
	backend();
	/* read it all back, so the pages must still be there after B */
	uint64_t sum = 0;
	const uint64_t *w = (const uint64_t *)buf;
	for (size_t i = 0; i < opt.req_bytes / sizeof *w; i++)
		sum += w[i] ^ i;
	free(buf);
	note_inflight(-1);
	atomic_fetch_add(&n_ok, 1);
	return snprintf(out, cap, "OK %016llx\n", (unsigned long long)sum);
}

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char line[LINE_MAX_], out[64];

	while (read_line(fd, line, sizeof line)) {
		int n;
		if (strncmp(line, "HELLO", 5) == 0) {
			atomic_fetch_add(&n_hello, 1);
			n = snprintf(out, sizeof out, "HELLO\n");
		} else if (strncmp(line, "REQ", 3) == 0) {
			uint64_t zero = 0;
			if (!atomic_load_explicit(&first_req_ns, memory_order_relaxed))
				atomic_compare_exchange_strong(&first_req_ns, &zero, now_ns());
			arm_wall();
			n = handle(fd, out, sizeof out);
		} else {
			break;
		}
		if (!send_all(fd, out, (size_t)n))
			break;
	}
	close(fd);
	return NULL;
}

static volatile sig_atomic_t terminating;

static void on_term(int sig)
{
	(void)sig;
	terminating = 1;
}

/* What glibc has handed out and not had back: small blocks in the arenas
 * (uordblks) and big ones mmapped on their own (hblkhd). */
static uint64_t held_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();
	return (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
}

static uint64_t rss_bytes(void)
{
	long kb = status_kb("VmRSS");
	return kb < 0 ? 0 : (uint64_t)kb << 10;
}

/* The sampler: a user thread like the others, so what it sees is what
 * the program sees; it also ends the run, so exit() and the runtime's
 * at-exit work happen on a user thread, never in the signal handler. */
static void *sampler(void *arg)
{
	FILE *log = arg;
	uint64_t peak_held = 0, peak_rss = 0, peak_data = 0;
	uint64_t end = opt.duration > 0 ? t0_ns + (uint64_t)(opt.duration * 1e9) : UINT64_MAX;
	/* absolute deadlines, so that the time the samples take (reading
	 * /proc parks the thread) does not stretch the period */
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!terminating && now_ns() < end) {
		next.tv_nsec += 100 * 1000000L;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_sec++;
			next.tv_nsec -= 1000000000L;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
		/* the counters with the bytes, before anything that parks, so
		 * that one line is one moment */
		uint64_t held = held_bytes();
		uint64_t ok = atomic_load(&n_ok), err = atomic_load(&n_err);
		int64_t infl = atomic_load(&inflight);
		uint64_t t = now_ns() - t0_ns;
		uint64_t rss = rss_bytes();
		long dkb = status_kb("VmData");
		uint64_t data = dkb < 0 ? 0 : (uint64_t)dkb << 10;
		if (held > peak_held)
			peak_held = held;
		if (rss > peak_rss)
			peak_rss = rss;
		if (data > peak_data)
			peak_data = data;
		if (log) {
			fprintf(log, "%.0f %llu %llu %llu %llu %llu %lld\n", t / 1e6,
			        (unsigned long long)held, (unsigned long long)rss,
			        (unsigned long long)data, (unsigned long long)ok,
			        (unsigned long long)err, (long long)infl);
			fflush(log);
		}
	}
	uint64_t first = atomic_load(&first_req_ns);
	printf("result ok=%llu err=%llu hello=%llu create_fail=%llu accept_fail=%llu "
	       "peak_held=%llu peak_rss=%llu peak_vmdata=%llu peak_inflight=%lld "
	       "err_inflight_min=%lld req_bytes=%zu wall_base=%llu wall=%llu first_req_ms=%.0f\n",
	       (unsigned long long)n_ok, (unsigned long long)n_err, (unsigned long long)n_hello,
	       (unsigned long long)n_create_fail, (unsigned long long)n_accept_fail,
	       (unsigned long long)peak_held, (unsigned long long)peak_rss,
	       (unsigned long long)peak_data, (long long)peak_inflight,
	       (long long)(n_err ? err_inflight_min : -1), opt.req_bytes,
	       (unsigned long long)wall_base,
	       (unsigned long long)(wall_base ? wall_base + ((uint64_t)wall_slack_mb << 20) : 0),
	       first ? (first - t0_ns) / 1e6 : -1.0);
	fflush(stdout);
	if (log)
		fclose(log);
	exit(0);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc)
			die("%s wants a value", a);
		const char *v = argv[++i];
		if (!strcmp(a, "--port"))
			opt.port = (int)bench_arg_long(a, v, 0, 65535);
		else if (!strcmp(a, "--req-mb"))
			opt.req_bytes = (size_t)bench_arg_long(a, v, 1, 16) << 20;
		else if (!strcmp(a, "--backend-ms"))
			opt.backend_ms = bench_arg_long(a, v, 0, 10000);
		else if (!strcmp(a, "--wall-mb"))
			opt.wall_mb = bench_arg_long(a, v, 0, 1 << 20);
		else if (!strcmp(a, "--wall-slack-mb"))
			wall_slack_mb = bench_arg_long(a, v, 0, 1 << 20);
		else if (!strcmp(a, "--log"))
			opt.log = v;
		else if (!strcmp(a, "--duration"))
			opt.duration = (double)bench_arg_long(a, v, 0, 86400);
		else
			die("unknown option %s (see the opening comment of bench/memserver.c)", a);
	}
	t0_ns = now_ns();

	setup_heap();

	FILE *log = NULL;
	if (opt.log && !(log = fopen(opt.log, "w")))
		die("cannot write %s: %s", opt.log, strerror(errno));

	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_term);

	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0)
		die("socket: %s", strerror(errno));
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sa = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)opt.port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	socklen_t len = sizeof sa;
	/* a deep backlog: the client's connections are queued, not dropped
	 * and retried a second later */
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 65535) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len) < 0)
		die("bind/listen: %s", strerror(errno));

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, STACK_SIZE);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

	/* The sampler runs at a real-time priority (on Caprice a level of the
	 * run queue above every connection's thread, under either policy):
	 * behind 400 runnable connections its 100 ms ticks would come late,
	 * and the samples would be fewest exactly when memory peaks.  Where
	 * the priority is refused (NPTL without the privilege), it runs
	 * without. */
	pthread_attr_t sattr;
	pthread_attr_init(&sattr);
	pthread_attr_setdetachstate(&sattr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setinheritsched(&sattr, PTHREAD_EXPLICIT_SCHED);
	pthread_attr_setschedpolicy(&sattr, SCHED_FIFO);
	struct sched_param sp = { .sched_priority = 1 };
	pthread_attr_setschedparam(&sattr, &sp);
	pthread_t st;
	if (pthread_create(&st, &sattr, sampler, log) != 0 &&
	    pthread_create(&st, &attr, sampler, log) != 0)
		die("cannot start the sampler");

	printf("port %d\n", ntohs(sa.sin_port));
	fflush(stdout);

	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			/* EMFILE, ENOMEM (the wall): keep serving the connections
			 * there are, and try again shortly */
			if (atomic_fetch_add(&n_accept_fail, 1) < 5)
				perror("memserver: accept");
			usleep(10000);
			continue;
		}
		/* one short line each way: Nagle would only add delay */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		pthread_t t;
		int err = pthread_create(&t, &attr, serve, (void *)(intptr_t)fd);
		if (err) {
			/* at the wall a new thread's stack may not be mapped: the
			 * client sees the connection close and counts it */
			if (atomic_fetch_add(&n_create_fail, 1) < 5)
				fprintf(stderr, "memserver: pthread_create: %s\n", strerror(err));
			close(fd);
		}
	}
}
