/* rtfd.c: the runtime's own descriptors, kept out of the program's way.
 *
 * The runtime holds descriptors a program under NPTL would not have: each
 * worker's io_uring and wake-up eventfd, the /proc files the monitor
 * reads, the pipes sendfile splices through.  Programs treat descriptors
 * they did not open as theirs to close: a daemon's closefrom(3) (varnishd
 * calls it at start-up: close_range(3, ~0U) in glibc) closed every worker's
 * ring, and the next io_uring_enter failed with EBADF.  So:
 *
 *  - each is made, then moved up to a window below RLIMIT_NOFILE or
 *    1,024, whichever is lower (F_DUPFD_CLOEXEC), where the numbers the
 *    kernel hands out lowest-first, and the low numbers programs pick for
 *    dup2, do not reach (not higher: the kernel's table, which every
 *    fork copies, grows to the highest number open);
 *  - a bitmap names them, and the program's close, close_range,
 *    closefrom and dup2/dup3 onto one (libthread) pass them over: close
 *    answers EBADF, as for a number that is not open, which is what the
 *    program would see without the runtime.
 *
 * The runtime's own closes are raw system calls and go through
 * cp_rtfd_release, which clears the bit first. */
#include "worker.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"

/* How far below the descriptor limit the runtime's descriptors start:
 * room for 4 per worker and spare and sendfile's pooled pipes on a
 * machine of a few dozen cores; past it they land where the kernel puts
 * them, still hidden. */
#define RTFD_WINDOW 256
#define RTFD_CEILING 1024

uint64_t cp_rtfd_bits[CP_RTFD_LIMIT / 64] CP_HIDDEN;

/* The lowest number the runtime's descriptors move to. */
static int floor_for_runtime(void)
{
	long limit = RTFD_CEILING;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)limit)
		limit = (long)rl.rlim_cur;
	return (int)(limit > 2 * RTFD_WINDOW ? limit - RTFD_WINDOW : limit / 2);
}

int cp_rtfd_adopt(int fd)
{
	if (fd < 0)
		return fd;
	int floor = floor_for_runtime();
	if (fd < floor) {
		int moved = (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, floor);
		if (moved >= 0) { /* else (EMFILE: the window is full) it stays */
			syscall(SYS_close, fd);
			fd = moved;
		}
	}
	if ((unsigned)fd < CP_RTFD_LIMIT)
		__atomic_or_fetch(&cp_rtfd_bits[fd / 64], 1ull << (fd % 64), __ATOMIC_RELEASE);
	return fd;
}

void cp_rtfd_forget(int fd)
{
	if ((unsigned)fd < CP_RTFD_LIMIT)
		__atomic_and_fetch(&cp_rtfd_bits[fd / 64], ~(1ull << (fd % 64)), __ATOMIC_RELEASE);
}

void cp_rtfd_release(int fd)
{
	if (fd < 0)
		return;
	cp_rtfd_forget(fd);
	syscall(SYS_close, fd);
}

int cp_rtfd_next(int from)
{
	if (from < 0)
		from = 0;
	for (unsigned i = (unsigned)from / 64; i < CP_RTFD_LIMIT / 64; i++) {
		uint64_t word = __atomic_load_n(&cp_rtfd_bits[i], __ATOMIC_ACQUIRE);
		if (i == (unsigned)from / 64)
			word &= ~0ull << (from % 64);
		if (word)
			return (int)(i * 64 + (unsigned)__builtin_ctzll(word));
	}
	return -1;
}
