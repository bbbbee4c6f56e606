/* closefrom.c: the program's closes of many descriptors at once
 * (close_range, closefrom) and its dup2/dup3 onto a number, which must
 * leave the runtime's own descriptors alone (sched/rtfd.c): a daemon that
 * closes everything past stderr at start-up (varnishd) closed every
 * worker's io_uring.  Each stretch between two of the runtime's
 * descriptors is closed with one close_range, after the operations in
 * flight on it are cancelled and waited out, as close() does for one. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdtable.h"

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1u << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1u << 2)
#endif

static int close_stretch(unsigned lo, unsigned hi, unsigned flags)
{
	bool closes = !(flags & CLOSE_RANGE_CLOEXEC); /* else it only marks them */
	if (closes)
		lt_fd_drain_range(lo, hi);
	long r = syscall(SYS_close_range, lo, hi, flags);
	int e = errno;
	if (closes)
		lt_fd_undrain_range(lo, hi);
	errno = e;
	return (int)r;
}

CP_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	if (!lt_main || first > last || (flags & ~(int)(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)))
		return (int)syscall(SYS_close_range, first, last, flags); /* the kernel's answer */
	/* A table of its own for the calling kernel thread would be one for
	 * every user thread its worker runs, and a worker whose table is not
	 * the others' loses the descriptors they open: the close applies to
	 * the process's one table, which is what a single-threaded caller
	 * (the usual one) gets anyway. */
	unsigned how = (unsigned)flags & ~CLOSE_RANGE_UNSHARE;
	unsigned lo = first;
	for (;;) {
		int own = lo <= INT_MAX ? cp_rtfd_next((int)lo) : -1;
		if (own < 0 || (unsigned)own > last)
			return close_stretch(lo, last, how);
		if ((unsigned)own > lo && close_stretch(lo, (unsigned)own - 1, how) < 0)
			return -1;
		if ((unsigned)own == last)
			return 0;
		lo = (unsigned)own + 1;
	}
}

/* Without close_range (before Linux 5.9), as glibc does: each descriptor
 * /proc lists, one close at a time. */
static int close_listed_from(int low)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int dfd = dirfd(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (*end == 0 && end != e->d_name && fd >= low && fd != dfd)
			(void)lt_fd_close((int)fd); /* passes over the runtime's */
	}
	closedir(d);
	return 0;
}

CP_EXPORT void closefrom(int low)
{
	if (low < 0)
		low = 0;
	if (close_range((unsigned)low, ~0u, 0) == 0)
		return;
	if (close_listed_from(low) != 0) /* glibc's closefrom has no way to fail either */
		cp_die("closefrom(%d): close_range failed and /proc/self/fd cannot be read", low);
}

/* dup2/dup3 onto one of the runtime's descriptors would close it under
 * the runtime; duplicating one hands the program a descriptor it never
 * had.  Both are refused, the first with a word on stderr, since the
 * program meant a number it believes free. */
bool lt_fd_dup_refused(int old, int new)
{
	bool onto = cp_rtfd_owned(new);
	if (cp_likely(!onto && !cp_rtfd_owned(old)))
		return false;
	if (onto) {
		char what[64] = "?", link[40];
		snprintf(link, sizeof link, "/proc/self/fd/%d", new);
		ssize_t n = readlink(link, what, sizeof what - 1);
		what[n > 0 ? n : 1] = 0;
		cp_warn("dup2/dup3(%d, %d) refused with EBADF: descriptor %d is the runtime's "
		        "own (%s; Caprice keeps its rings, eventfds and pipes in the 256 "
		        "numbers below RLIMIT_NOFILE or 1024), and replacing it would stop "
		        "the runtime",
		        old, new, new, what);
	}
	errno = EBADF;
	return true;
}
