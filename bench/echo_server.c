/* echo_server.c: the thread-per-connection echo server that Caprice
 * exists to make fast.  It is deliberately the plainest blocking code: an
 * accept loop that starts one detached pthread per connection, and each
 * thread doing read() then write() until the peer goes away.  The same
 * source is built twice, linked with libthread (echo-server-caprice) and
 * with glibc's NPTL (echo-server-nptl), so the only difference between
 * the two servers in bench/compare-echo is the threads package underneath.
 *
 * usage: echo-server [PORT]   (0 or nothing: any free port)
 * Prints "port N" on stdout once it is listening on 127.0.0.1:N. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BENCH_NAME "echo-server"
#include "bench_util.h"

/* 10,000 NPTL threads must fit: 64 KiB stacks keep that to 640 MiB of
 * address space.  Caprice gets the same attribute: same source. */
#define STACK_SIZE (64 * 1024)
#define BUF_SIZE   4096

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[BUF_SIZE];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n <= 0)
			break;
		/* a short write is legal even on a blocking socket (a signal,
		 * a full buffer); the echo must still be whole */
		ssize_t off = 0;
		while (off < n) {
			ssize_t w = write(fd, buf + off, (size_t)(n - off));
			if (w <= 0)
				goto out;
			off += w;
		}
	}
out:
	close(fd);
	return NULL;
}

/* SIGTERM ends the server with exit(), so that what runs at exit (the
 * runtime's CAPRICE_STATS counters) does: the handler only raises a flag,
 * and a thread that looks at it calls exit() */
static volatile sig_atomic_t terminating;

static void on_term(int sig)
{
	(void)sig;
	terminating = 1;
}

static void *exit_on_term(void *arg)
{
	(void)arg;
	while (!terminating)
		usleep(50000);
	exit(0);
}

int main(int argc, char **argv)
{
	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf("usage: %s [PORT]   (0 or nothing: any free port)\n", argv[0]);
		return 0;
	}
	if (argc > 2)
		die("one argument at most, the port");
	int port = argc > 1 ? (int)bench_arg_long("PORT", argv[1], 0, 65535) : 0;

	/* a client that resets its connection must not kill the server */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_term);
	pthread_t watcher;
	pthread_create(&watcher, NULL, exit_on_term, NULL);

	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0) {
		perror("echo-server: socket");
		return 1;
	}
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sa = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	socklen_t len = sizeof sa;
	/* the kernel caps the backlog at net.core.somaxconn; ask for more so
	 * a burst of connects is queued rather than dropped and retried
	 * a second later */
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 65535) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len) < 0) {
		perror("echo-server: bind/listen");
		return 1;
	}
	printf("port %d\n", ntohs(sa.sin_port));
	fflush(stdout);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, STACK_SIZE);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

	unsigned long failures = 0;
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			/* EMFILE and friends: say so, and keep serving the
			 * connections we already have */
			perror("echo-server: accept");
			sleep(1);
			continue;
		}
		/* 64-byte request/response: Nagle would only add delay */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		pthread_t t;
		int err = pthread_create(&t, &attr, serve, (void *)(intptr_t)fd);
		if (err) {
			/* the client sees the connection close and counts it;
			 * report the first few here so the cause is on record */
			if (failures++ < 5)
				fprintf(stderr, "echo-server: pthread_create: %s\n", strerror(err));
			close(fd);
		}
	}
}
