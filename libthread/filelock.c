/* filelock.c: advisory file locks (flock, lockf) that may wait for
 * another process.  A wait runs on a helper kernel thread (offload.c);
 * non-blocking attempts and unlocks are plain system calls.  fcntl's
 * F_SETLKW is in fdcalls.c. */
#undef _FILE_OFFSET_BITS /* defines lockf and lockf64 both */
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"
#include "offload.h"

CP_EXPORT int flock(int fd, int op)
{
	if ((op & LOCK_NB) || (op & ~LOCK_NB) == LOCK_UN)
		return (int)syscall(SYS_flock, fd, op);
	return (int)lt_offload_syscall("flock", SYS_flock, fd, op, 0, 0, 0);
}

CP_EXPORT int lockf64(int fd, int cmd, off64_t len)
{
	struct flock64 fl = { .l_whence = SEEK_CUR, .l_start = 0, .l_len = len };
	switch (cmd) {
	case F_TEST:
		fl.l_type = F_RDLCK;
		if (syscall(SYS_fcntl, fd, F_GETLK, &fl) < 0)
			return -1;
		if (fl.l_type == F_UNLCK || fl.l_pid == getpid())
			return 0;
		errno = EACCES;
		return -1;
	case F_ULOCK:
		fl.l_type = F_UNLCK;
		return (int)syscall(SYS_fcntl, fd, F_SETLK, &fl);
	case F_TLOCK:
		fl.l_type = F_WRLCK;
		return (int)syscall(SYS_fcntl, fd, F_SETLK, &fl);
	case F_LOCK:
		fl.l_type = F_WRLCK;
		return (int)lt_offload_syscall("lockf", SYS_fcntl, fd, F_SETLKW, (long)&fl, 0, 0);
	default:
		errno = EINVAL;
		return -1;
	}
}

CP_EXPORT int lockf(int fd, int cmd, off_t len)
{
	return lockf64(fd, cmd, len);
}
