/* pl_pipe_block.c: main blocks reading stdin (a pipe) while other threads
 * work.  `pl_pipe_block read|fgets`: four threads count 1 ms sleeps, a
 * reporter prints "tick N" every 20 ms; main prints "blocking", then
 * waits in read(2) or fgets(stdin), then prints "got LINE ticks_in_block N"
 * and stops everything.  The driver feeds the pipe only after it has seen
 * ticks advance past "blocking", so a kernel thread stuck in main's read
 * shows as a missing tick. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_long ticks;
static atomic_bool stop;

static void *counter(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		usleep(1000);
		atomic_fetch_add(&ticks, 1);
	}
	return NULL;
}

static void *reporter(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		usleep(20000);
		printf("tick %ld\n", atomic_load(&ticks));
		fflush(stdout);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int use_fgets = argc > 1 && strcmp(argv[1], "fgets") == 0;
	pthread_t c[4], r;
	for (int i = 0; i < 4; i++)
		if (pthread_create(&c[i], NULL, counter, NULL))
			return 2;
	if (pthread_create(&r, NULL, reporter, NULL))
		return 2;
	char line[256] = "";
	printf("blocking\n");
	fflush(stdout);
	long before = atomic_load(&ticks);
	if (use_fgets) {
		if (!fgets(line, sizeof line, stdin)) {
			perror("fgets");
			return 3;
		}
	} else {
		ssize_t n = read(0, line, sizeof line - 1);
		if (n <= 0) {
			perror("read");
			return 3;
		}
		line[n] = 0;
	}
	long during = atomic_load(&ticks) - before;
	line[strcspn(line, "\n")] = 0;
	atomic_store(&stop, 1);
	for (int i = 0; i < 4; i++)
		pthread_join(c[i], NULL);
	pthread_join(r, NULL);
	printf("got %s ticks_in_block %ld\n", line, during);
	return 0;
}
