/* io_scale.c: thread-per-connection at scale.  An echo server in this
 * process serves 10,000 concurrent connections, each with a user thread
 * of its own blocked in read, on a kernel thread count that stays at the
 * worker count plus a few.
 *
 * 10,000 server descriptors plus 10,000 client ones would not fit the
 * 20,000-descriptor limit of one process, so the clients are this same
 * program run again (posix_spawn of /proc/self/exe with TC_ROLE=client in
 * the environment): 10,000 client user threads connect, wait until all
 * are connected (so every connection is open at once), then talk and
 * hang up.  The two processes pace each other through two pipes: the
 * client says "ready" on its stdout once all are connected, the server
 * checks its counts and answers "go" on the client's stdin.
 *
 * The one-worker variant runs the whole case again on one worker
 * (tc_rerun_on_workers: a child with CAPRICE_WORKERS=1, which the runtime
 * reads before main, and TC_CHILD=1), and that child is the server. */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caprice.h"
#include "tcase.h"

extern char **environ;

#define MS 1000000ull
#define EXTRA_KERNEL_THREADS 3 /* allowed beyond the workers */
#define CONNECTING_AT_ONCE 512 /* keeps the accept queue (4096) from overflowing */

/* ------------------------------------------------------------------ */
/* helpers                                                            */

static const char *role(void)
{
	const char *r = getenv("TC_ROLE");
	return r ? r : "";
}

static long env_long(const char *name)
{
	const char *v = getenv(name);
	if (!v)
		TFAIL("%s is not set", name);
	return strtol(v, NULL, 10);
}

static void raise_nofile(long need)
{
	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
	rl.rlim_cur = rl.rlim_max;
	CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
	if ((long)rl.rlim_cur < need)
		TFAIL("need %ld descriptors, the hard limit is %ld", need, (long)rl.rlim_max);
}

/* This process's kernel threads, from /proc/self/status. */
static int kernel_threads(void)
{
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	char buf[8192];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	CHECK(n > 0);
	buf[n] = 0;
	CHECK_EQ(close(fd), 0);
	const char *t = strstr(buf, "\nThreads:");
	CHECK(t != NULL);
	return atoi(t + 9);
}

/* The names of this process's kernel threads (their comm), for a failure
 * message: workers, the monitor, a spare, offload helpers, and io_uring's
 * own iou-wrk threads all count. */
static void kernel_thread_names(char *out, size_t size)
{
	out[0] = 0;
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], comm[32] = "";
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, comm, sizeof comm - 1);
		close(fd);
		if (n > 0 && comm[n - 1] == '\n')
			n--;
		comm[n > 0 ? n : 0] = 0;
		size_t used = strlen(out);
		snprintf(out + used, size - used, "%s%s", used ? ", " : "", comm);
	}
	closedir(d);
}

static int read_exact(int fd, void *buf, size_t n)
{
	char *p = buf;
	while (n) {
		ssize_t r = read(fd, p, n);
		if (r <= 0)
			return r == 0 ? -1 : -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Reads a line from fd (the peer process's pipe) within the deadline;
 * fails the case on EOF or timeout, naming what it waited for. */
static void read_line(int fd, char *line, size_t size, uint64_t deadline, const char *what)
{
	size_t len = 0;
	while (len < size - 1) {
		uint64_t now = tc_now_ns();
		if (now >= deadline)
			TFAIL("no %s line from the other process in time (have \"%.*s\")", what,
			      (int)len, line);
		struct pollfd pf = { fd, POLLIN, 0 };
		int r = poll(&pf, 1, (int)((deadline - now) / MS) + 1);
		if (r == 0)
			continue;
		CHECK_EQ(r, 1);
		ssize_t got = read(fd, line + len, 1);
		if (got <= 0)
			TFAIL("the other process hung up before its %s line (have \"%.*s\")", what,
			      (int)len, line);
		if (line[len] == '\n')
			break;
		len++;
	}
	line[len] = 0;
}

/* ------------------------------------------------------------------ */
/* the server                                                         */

struct server {
	int lfd;
	int expect;
	pthread_mutex_t m;
	pthread_cond_t c;
	int accepted;
	int live, peak_live;
	int finished;
	long long echoed;
	int errors;
	char first_error[160];
};

struct conn {
	struct server *s;
	int fd;
};

static void server_error(struct server *s, const char *what, int e)
{
	pthread_mutex_lock(&s->m);
	if (!s->errors++)
		snprintf(s->first_error, sizeof s->first_error, "%s: %s", what,
		         e ? strerror(e) : "EOF");
	pthread_mutex_unlock(&s->m);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct server *s = c->s;
	int fd = c->fd;
	free(c);
	long long n = 0;
	/* a greeting tells the client it was accepted and has a thread */
	if (write(fd, "H", 1) != 1) {
		server_error(s, "greeting", errno);
		goto out;
	}
	char buf[512];
	for (;;) {
		ssize_t r = read(fd, buf, sizeof buf);
		if (r == 0)
			break;
		if (r < 0) {
			server_error(s, "server read", errno);
			break;
		}
		for (ssize_t off = 0; off < r;) {
			ssize_t w = write(fd, buf + off, (size_t)(r - off));
			if (w <= 0) {
				server_error(s, "server write", errno);
				goto out;
			}
			off += w;
		}
		n += r;
	}
out:
	if (close(fd) != 0)
		server_error(s, "server close", errno);
	pthread_mutex_lock(&s->m);
	s->echoed += n;
	s->live--;
	s->finished++;
	pthread_cond_broadcast(&s->c);
	pthread_mutex_unlock(&s->m);
	return NULL;
}

static void *acceptor_main(void *arg)
{
	struct server *s = arg;
	pthread_attr_t attr;
	CHECK_OK(pthread_attr_init(&attr));
	CHECK_OK(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED));
	for (int i = 0; i < s->expect; i++) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			TFAIL("accept #%d: %s", i, strerror(errno));
		struct conn *c = malloc(sizeof *c);
		CHECK(c != NULL);
		*c = (struct conn){ s, fd };
		pthread_mutex_lock(&s->m);
		s->accepted++;
		if (++s->live > s->peak_live)
			s->peak_live = s->live;
		pthread_mutex_unlock(&s->m);
		pthread_t t;
		int e = pthread_create(&t, &attr, conn_main, c);
		if (e)
			TFAIL("pthread_create for connection #%d: %s", i, strerror(e));
	}
	pthread_attr_destroy(&attr);
	return NULL;
}

/* Starts this program as the client side; *to_child is its stdin,
 * *from_child its stdout. */
static pid_t spawn_clients(const char *case_name, int port, int conns, int rounds, int *to_child,
                           int *from_child)
{
	char exe[PATH_MAX];
	tc_self_exe(exe);
	char e_port[32], e_conns[32], e_rounds[32];
	snprintf(e_port, sizeof e_port, "TC_PORT=%d", port);
	snprintf(e_conns, sizeof e_conns, "TC_CONNS=%d", conns);
	snprintf(e_rounds, sizeof e_rounds, "TC_ROUNDS=%d", rounds);
	const char *extra[] = { "TC_ROLE=client", e_port, e_conns, e_rounds, NULL };
	char **env = tc_child_env(extra);

	int in[2], out[2];
	CHECK(pipe2(in, O_CLOEXEC) == 0);
	CHECK(pipe2(out, O_CLOEXEC) == 0);
	posix_spawn_file_actions_t fa;
	CHECK_OK(posix_spawn_file_actions_init(&fa));
	CHECK_OK(posix_spawn_file_actions_adddup2(&fa, in[0], 0));
	CHECK_OK(posix_spawn_file_actions_adddup2(&fa, out[1], 1));
	char *argv[] = { exe, (char *)case_name, NULL };
	pid_t pid;
	CHECK_OK(posix_spawn(&pid, exe, &fa, NULL, argv, env));
	posix_spawn_file_actions_destroy(&fa);
	free(env);
	CHECK_EQ(close(in[0]), 0);
	CHECK_EQ(close(out[1]), 0);
	*to_child = in[1];
	*from_child = out[0];
	return pid;
}

static void run_server(const char *case_name, int conns, int rounds, int limit_s)
{
	raise_nofile(conns + 64);
	int workers = caprice_worker_count();
	int threads_before = kernel_threads();
	uint64_t t_start = tc_now_ns();
	uint64_t deadline = t_start + (uint64_t)limit_s * 1000 * MS;

	struct server s = { .expect = conns, .m = PTHREAD_MUTEX_INITIALIZER,
	                    .c = PTHREAD_COND_INITIALIZER };
	s.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(s.lfd >= 0);
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(s.lfd, (struct sockaddr *)&sa, sizeof sa) == 0);
	CHECK(listen(s.lfd, 4096) == 0);
	socklen_t len = sizeof sa;
	CHECK(getsockname(s.lfd, (struct sockaddr *)&sa, &len) == 0);

	int to_child, from_child;
	pid_t pid = spawn_clients(case_name, ntohs(sa.sin_port), conns, rounds, &to_child,
	                          &from_child);
	pthread_t acc;
	CHECK_OK(pthread_create(&acc, NULL, acceptor_main, &s));

	/* every client connected, greeted, and waiting */
	char line[256];
	read_line(from_child, line, sizeof line, deadline, "ready");
	int client_threads = -1;
	if (sscanf(line, "ready %d", &client_threads) != 1)
		TFAIL("client said \"%s\", wanted \"ready N\"", line);
	uint64_t t_ready = tc_now_ns();
	CHECK_OK(pthread_join(acc, NULL));
	pthread_mutex_lock(&s.m);
	int accepted = s.accepted, live = s.live, finished = s.finished;
	pthread_mutex_unlock(&s.m);
	int threads_at_peak = kernel_threads();
	char names[512];
	kernel_thread_names(names, sizeof names);
	if (s.errors)
		TFAIL("%d server errors, the first: %s", s.errors, s.first_error);
	CHECK_EQ(accepted, conns);
	CHECK_EQ(finished, 0);
	CHECK_EQ(live, conns); /* all open at once, each with its thread */
	if (threads_at_peak > workers + EXTRA_KERNEL_THREADS)
		TFAIL("%d kernel threads serve %d connections on %d workers: %s", threads_at_peak,
		      conns, workers, names);
	if (client_threads > workers + EXTRA_KERNEL_THREADS)
		TFAIL("the client process ran %d kernel threads for %d connections", client_threads,
		      conns);

	/* talk */
	tc_write_all(to_child, "g\n", 2);
	pthread_mutex_lock(&s.m);
	while (s.finished < conns && !s.errors) {
		struct timespec dl = tc_abs_ms(CLOCK_MONOTONIC, 100);
		pthread_cond_clockwait(&s.c, &s.m, CLOCK_MONOTONIC, &dl);
		if (tc_now_ns() > deadline)
			TFAIL("%d of %d connections finished in time", s.finished, conns);
	}
	pthread_mutex_unlock(&s.m);
	if (s.errors)
		TFAIL("%d server errors, the first: %s", s.errors, s.first_error);
	uint64_t t_done = tc_now_ns();

	read_line(from_child, line, sizeof line, deadline, "done");
	int ok = -1;
	long long client_bytes = -1;
	if (sscanf(line, "done %d %lld", &ok, &client_bytes) != 2)
		TFAIL("client said \"%s\", wanted \"done OK BYTES\"", line);
	int status;
	CHECK(waitpid(pid, &status, 0) == pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		TFAIL("the client process ended with status %#x", status);
	CHECK_EQ(ok, conns);
	CHECK_EQ(s.echoed, client_bytes);
	CHECK_EQ(s.live, 0);
	CHECK_EQ(s.peak_live, conns);
	CHECK_EQ(close(to_child), 0);
	CHECK_EQ(close(from_child), 0);
	CHECK_EQ(close(s.lfd), 0);
	printf("%d connections on %d workers: all open after %.0f ms (kernel threads: server %d "
	       "(%d before), client %d); %d round trips each done after %.0f ms more; "
	       "%lld bytes echoed; %.0f ms in all\n",
	       conns, workers, (t_ready - t_start) / 1e6, threads_at_peak, threads_before,
	       client_threads, rounds, (t_done - t_ready) / 1e6, s.echoed,
	       (tc_now_ns() - t_start) / 1e6);
}

/* ------------------------------------------------------------------ */
/* the clients                                                        */

struct clients {
	struct sockaddr_in addr;
	int conns;
	int rounds;
	sem_t connecting;
	pthread_mutex_t m;
	pthread_cond_t c;
	int connected;
	int go;
	int ok;
	long long bytes;
};

static void *client_main(void *arg)
{
	struct clients *cs = arg;
	static int next_id;
	int id = __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED);

	while (sem_wait(&cs->connecting) != 0)
		CHECK_EQ(errno, EINTR);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		TFAIL("client %d: socket: %s", id, strerror(errno));
	if (connect(fd, (struct sockaddr *)&cs->addr, sizeof cs->addr) != 0)
		TFAIL("client %d: connect: %s", id, strerror(errno));
	char h;
	int e = read_exact(fd, &h, 1);
	if (e || h != 'H')
		TFAIL("client %d: no greeting (%s)", id, e == -1 ? "EOF" : strerror(-e));
	CHECK_EQ(sem_post(&cs->connecting), 0);

	pthread_mutex_lock(&cs->m);
	if (++cs->connected == cs->conns)
		pthread_cond_broadcast(&cs->c);
	while (!cs->go)
		pthread_cond_wait(&cs->c, &cs->m);
	pthread_mutex_unlock(&cs->m);

	long long bytes = 0;
	uint8_t out[300], in[300];
	for (int r = 0; r < cs->rounds; r++) {
		size_t len = 1 + (size_t)((id * 7 + r * 131) % 300);
		uint64_t seed = (uint64_t)id << 20 | (uint64_t)r;
		for (size_t i = 0; i < len; i++)
			out[i] = tc_pattern(seed, i);
		tc_write_all(fd, out, len);
		e = read_exact(fd, in, len);
		if (e)
			TFAIL("client %d round %d: %s", id, r, e == -1 ? "EOF" : strerror(-e));
		if (memcmp(in, out, len) != 0)
			TFAIL("client %d round %d: the echo differs", id, r);
		bytes += (long long)len;
	}
	CHECK_EQ(shutdown(fd, SHUT_WR), 0);
	e = read_exact(fd, &h, 1);
	if (e != -1)
		TFAIL("client %d: wanted EOF after hanging up, got %d", id, e);
	CHECK_EQ(close(fd), 0);

	pthread_mutex_lock(&cs->m);
	cs->ok++;
	cs->bytes += bytes;
	pthread_mutex_unlock(&cs->m);
	return NULL;
}

static void run_clients(void)
{
	int conns = (int)env_long("TC_CONNS");
	raise_nofile(conns + 64);
	static struct clients cs = { .m = PTHREAD_MUTEX_INITIALIZER,
	                             .c = PTHREAD_COND_INITIALIZER };
	cs.addr.sin_family = AF_INET;
	cs.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cs.addr.sin_port = htons((uint16_t)env_long("TC_PORT"));
	cs.rounds = (int)env_long("TC_ROUNDS");
	cs.conns = conns;
	CHECK_EQ(sem_init(&cs.connecting, 0, CONNECTING_AT_ONCE), 0);

	pthread_t *t = calloc((size_t)conns, sizeof *t);
	CHECK(t != NULL);
	for (int i = 0; i < conns; i++) {
		int e = pthread_create(&t[i], NULL, client_main, &cs);
		if (e)
			TFAIL("pthread_create for client %d: %s", i, strerror(e));
	}
	pthread_mutex_lock(&cs.m);
	while (cs.connected < conns)
		pthread_cond_wait(&cs.c, &cs.m);
	pthread_mutex_unlock(&cs.m);

	char line[64];
	snprintf(line, sizeof line, "ready %d\n", kernel_threads());
	tc_write_all(1, line, strlen(line));
	char go[2];
	if (read_exact(0, go, 2) != 0 || go[0] != 'g')
		TFAIL("the server did not say go");

	pthread_mutex_lock(&cs.m);
	cs.go = 1;
	pthread_cond_broadcast(&cs.c);
	pthread_mutex_unlock(&cs.m);
	for (int i = 0; i < conns; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	free(t);
	snprintf(line, sizeof line, "done %d %lld\n", cs.ok, cs.bytes);
	tc_write_all(1, line, strlen(line));
	CHECK_EQ(cs.ok, conns);
}

/* ------------------------------------------------------------------ */
/* cases                                                              */

TCASE(echo_10000_connections)
{
	if (!strcmp(role(), "client")) {
		tc_case_limit(100);
		run_clients();
		return;
	}
	tc_case_limit(110);
	run_server("echo_10000_connections", 10000, 4, 90);
}

TCASE(echo_2000_connections_one_worker)
{
	if (!strcmp(role(), "client")) {
		tc_case_limit(100);
		run_clients();
		return;
	}
	tc_case_limit(110);
	if (tc_rerun_on_workers(1, 100))
		return;
	/* the server, on one worker (alarms do not reach a spawned child) */
	tc_case_limit(100);
	run_server("echo_2000_connections_one_worker", 2000, 8, 80);
}
