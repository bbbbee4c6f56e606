/* tcase_main.c: main() for test programs (see tcase.h). */
#include "tcase.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_CASES 256

static struct {
	const char *name;
	tcase_fn fn;
} cases[MAX_CASES];
static int ncases;
static const char *current;

bool tcase_report_return;

const char *tcase_current(void)
{
	return current;
}

void tcase_register(const char *name, tcase_fn fn)
{
	if (ncases == MAX_CASES) {
		fprintf(stderr, "tcase: more than %d cases in one program\n", MAX_CASES);
		exit(2);
	}
	cases[ncases].name = name;
	cases[ncases].fn = fn;
	ncases++;
}

void tc_run_alone(void)
{
	const char *path = getenv("TCASE_ALONE_LOCK");
	const char *child = getenv("TC_CHILD");
	if (!path || !*path || (child && strcmp(child, "1") == 0))
		return;
	/* raw calls, apart from any runtime: the wait blocks the whole
	 * process, in which nothing else runs yet; the lock is the open
	 * file's until the process ends */
	int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		TFAIL("cannot open the run-alone lock %s: %s", path, strerror(errno));
	while (syscall(SYS_flock, fd, LOCK_EX) != 0)
		if (errno != EINTR)
			TFAIL("flock(%s): %s", path, strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		for (int i = 0; i < ncases; i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: %s --list | CASE\n", argv[0]);
		return 2;
	}
	for (int i = 0; i < ncases; i++) {
		if (strcmp(cases[i].name, argv[1]) == 0) {
			current = cases[i].name;
			cases[i].fn();
			fflush(NULL);
			if (tcase_report_return &&
			    write(1, TCASE_RETURNED_LINE, strlen(TCASE_RETURNED_LINE)) < 0)
				return 1;
			return 0;
		}
	}
	fprintf(stderr, "%s: no case named %s\n", argv[0], argv[1]);
	return 2;
}
