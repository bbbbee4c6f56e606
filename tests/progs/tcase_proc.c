/* tcase_proc.c: what /proc says about a child, for the drivers that run
 * programs and must say where a hung one was (tests/preload, tests/posix).
 * Plain C library only: the drivers are NPTL programs. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "tcase.h"

void tc_read_first_line(const char *path, char *out, size_t n)
{
	out[0] = 0;
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	ssize_t r = read(fd, out, n - 1);
	close(fd);
	out[r > 0 ? r : 0] = 0;
	out[strcspn(out, "\n")] = 0;
}

void tc_dump_tasks(pid_t pid)
{
	char dir[64];
	snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "  (no %s)\n", dir);
		return;
	}
	int shown = 0;
	struct dirent *de;
	while ((de = readdir(d)) && shown < 40) {
		if (de->d_name[0] == '.')
			continue;
		char p[400], comm[64], wchan[64], sys[128], stat[512];
		snprintf(p, sizeof p, "%s/%s/comm", dir, de->d_name);
		tc_read_first_line(p, comm, sizeof comm);
		snprintf(p, sizeof p, "%s/%s/wchan", dir, de->d_name);
		tc_read_first_line(p, wchan, sizeof wchan);
		snprintf(p, sizeof p, "%s/%s/syscall", dir, de->d_name);
		tc_read_first_line(p, sys, sizeof sys);
		snprintf(p, sizeof p, "%s/%s/stat", dir, de->d_name);
		tc_read_first_line(p, stat, sizeof stat);
		char *st = strrchr(stat, ')');
		fprintf(stderr, "  task %s (%s) state %.1s wchan %s syscall %.60s\n", de->d_name, comm,
		        st && st[1] ? st + 2 : "?", wchan, sys);
		shown++;
	}
	closedir(d);
}
