/* pl_gai.c: getaddrinfo("localhost") from 100 threads at once while a
 * ticker thread keeps ticking.  glibc's resolver reads /etc/hosts and
 * friends through its internal calls, out of the shim's sight.  Prints
 * "gai ok O fail F ticks T maxgap_ms G phase_ms P". */
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define THREADS 100
#define ROUNDS 10

static pthread_barrier_t start;
static atomic_int ok, fail;
static atomic_long ticks, maxgap_ns;
static atomic_bool stop;

static long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *ticker(void *arg)
{
	(void)arg;
	long last = now_ns();
	while (!atomic_load(&stop)) {
		usleep(1000);
		long t = now_ns();
		if (t - last > atomic_load(&maxgap_ns))
			atomic_store(&maxgap_ns, t - last);
		last = t;
		atomic_fetch_add(&ticks, 1);
	}
	return NULL;
}

static void *resolver(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&start);
	for (int r = 0; r < ROUNDS; r++) {
		struct addrinfo hints, *res = NULL;
		memset(&hints, 0, sizeof hints);
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		int e = getaddrinfo("localhost", "80", &hints, &res);
		int good = e == 0 && res != NULL;
		for (struct addrinfo *ai = res; good && ai; ai = ai->ai_next)
			if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
				good = 0;
		if (good) {
			atomic_fetch_add(&ok, 1);
		} else {
			atomic_fetch_add(&fail, 1);
			fprintf(stderr, "getaddrinfo: %d %s\n", e, gai_strerror(e));
		}
		if (res)
			freeaddrinfo(res);
	}
	return NULL;
}

int main(void)
{
	pthread_t tick, t[THREADS];
	pthread_barrier_init(&start, NULL, THREADS + 1);
	if (pthread_create(&tick, NULL, ticker, NULL))
		return 2;
	for (int i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], NULL, resolver, NULL))
			return 2;
	usleep(20000); /* the ticker is running */
	atomic_store(&maxgap_ns, 0);
	long t0 = now_ns(), ticks0 = atomic_load(&ticks);
	pthread_barrier_wait(&start);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	long phase = now_ns() - t0, dticks = atomic_load(&ticks) - ticks0;
	long gap = atomic_load(&maxgap_ns);
	atomic_store(&stop, 1);
	pthread_join(tick, NULL);
	printf("gai ok %d fail %d ticks %ld maxgap_ms %ld phase_ms %ld\n", atomic_load(&ok),
	       atomic_load(&fail), dticks, gap / 1000000, phase / 1000000);
	return atomic_load(&fail) == 0 && atomic_load(&ok) == THREADS * ROUNDS ? 0 : 1;
}
