/* pl_echo_server.c: a plain thread-per-connection echo server, the kind
 * of program the shim exists for.  Built with gcc -pthread and nothing
 * else.  `pl_echo_server N` listens on 127.0.0.1 (any port), prints
 * "port P pid N", serves exactly N connections with one detached thread
 * each (blocking read/write), waits for every connection to close and
 * prints "served N bytes B". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t all_done = PTHREAD_COND_INITIALIZER;
static long live, bytes_total;

static void *serve(void *arg)
{
	int fd = (int)(long)arg;
	char buf[4096];
	long bytes = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "server: read: %s\n", strerror(errno));
			exit(4);
		}
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(fd, buf + off, (size_t)(n - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				fprintf(stderr, "server: write: %s\n", strerror(errno));
				exit(4);
			}
			off += w;
		}
		bytes += n;
	}
	close(fd);
	pthread_mutex_lock(&lock);
	bytes_total += bytes;
	if (--live == 0)
		pthread_cond_signal(&all_done);
	pthread_mutex_unlock(&lock);
	return NULL;
}

int main(int argc, char **argv)
{
	long want = argc > 1 ? atol(argv[1]) : 100;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof a;
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0 ||
	    getsockname(ls, (struct sockaddr *)&a, &alen) < 0) {
		perror("server: listen");
		return 2;
	}
	printf("port %d pid %d\n", ntohs(a.sin_port), (int)getpid());
	fflush(stdout);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (long i = 0; i < want; i++) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR) {
				i--;
				continue;
			}
			fprintf(stderr, "server: accept #%ld: %s\n", i, strerror(errno));
			return 3;
		}
		pthread_mutex_lock(&lock);
		live++;
		pthread_mutex_unlock(&lock);
		pthread_t t;
		int e = pthread_create(&t, &attr, serve, (void *)(long)fd);
		if (e) {
			fprintf(stderr, "server: pthread_create #%ld: %s\n", i, strerror(e));
			return 3;
		}
	}
	close(ls);
	pthread_mutex_lock(&lock);
	while (live > 0)
		pthread_cond_wait(&all_done, &lock);
	pthread_mutex_unlock(&lock);
	printf("served %ld bytes %ld\n", want, bytes_total);
	return 0;
}
