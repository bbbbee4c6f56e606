/* fdcalls.c: the calls that create descriptors or change their status
 * flags, seen here only to keep the per-fd caches in fdtable.c true.
 * Each is the plain system call and none blocks, except fcntl's
 * F_SETLKW and F_OFD_SETLKW: those may wait for another process's lock,
 * so they run on a helper kernel thread (offload.c) and park only the
 * caller. */
#undef _FILE_OFFSET_BITS /* defines fcntl and fcntl64 both */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdtable.h"
#include "offload.h"

static int fresh(long fd)
{
	return lt_fd_fresh((int)fd);
}

static int fresh_pair(int r, const int fds[2], enum lt_fd_kind kind, bool nonblock)
{
	if (r == 0) {
		enum lt_fd_nonblock nb = nonblock ? LT_NONBLOCK_YES : LT_NONBLOCK_NO;
		lt_fd_fresh_known(fds[0], kind, nb);
		lt_fd_fresh_known(fds[1], kind, nb);
	}
	return r;
}

CP_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *); /* every argument fits a word */
	va_end(ap);
	long r;
	if (cmd == F_SETLKW || cmd == F_OFD_SETLKW) /* waits for another process */
		r = lt_offload_syscall("fcntl(F_SETLKW)", SYS_fcntl, fd, cmd, (long)arg, 0, 0);
	else
		r = syscall(SYS_fcntl, fd, cmd, arg);
	if (r >= 0) {
		if (cmd == F_SETFL) {
			lt_fd_flags_set(fd, (long)arg);
		} else if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
			lt_fd_fresh((int)r);
			lt_fd_dup_made(fd, (int)r);
		}
	}
	return (int)r;
}
CP_EXPORT int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

CP_EXPORT int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	long r = syscall(SYS_ioctl, fd, req, arg);
	if (r >= 0 && req == FIONBIO && lt_main && arg) {
		long fl = syscall(SYS_fcntl, fd, F_GETFL);
		if (fl >= 0)
			lt_fd_flags_set(fd, fl);
	}
	return (int)r;
}

CP_EXPORT int dup(int fd)
{
	if (lt_fd_dup_refused(fd, -1))
		return -1;
	int r = fresh(syscall(SYS_dup, fd));
	lt_fd_dup_made(fd, r);
	return r;
}

CP_EXPORT int dup3(int old, int new, int flags)
{
	if (lt_fd_dup_refused(old, new))
		return -1;
	if (lt_main && old != new)
		lt_fd_forget(new); /* it is about to be closed */
	int r = fresh(syscall(SYS_dup3, old, new, flags));
	lt_fd_dup_made(old, r);
	return r;
}

CP_EXPORT int dup2(int old, int new)
{
	if (old == new) { /* dup3 refuses this; dup2 checks old is open */
		if (lt_fd_dup_refused(old, new) || syscall(SYS_fcntl, old, F_GETFD) < 0)
			return -1;
		return new;
	}
	return dup3(old, new, 0);
}

CP_EXPORT int socket(int domain, int type, int proto)
{
	return lt_fd_fresh_socket((int)syscall(SYS_socket, domain, type, proto),
	                          (type & SOCK_NONBLOCK) != 0);
}

CP_EXPORT int socketpair(int domain, int type, int proto, int sv[2])
{
	return fresh_pair((int)syscall(SYS_socketpair, domain, type, proto, sv), sv, LT_FD_SOCKET,
	                  (type & SOCK_NONBLOCK) != 0);
}

CP_EXPORT int pipe2(int fds[2], int flags)
{
	return fresh_pair((int)syscall(SYS_pipe2, fds, flags), fds, LT_FD_STREAM,
	                  (flags & O_NONBLOCK) != 0);
}

CP_EXPORT int pipe(int fds[2])
{
	return pipe2(fds, 0);
}

CP_EXPORT int epoll_create1(int flags)
{
	return fresh(syscall(SYS_epoll_create1, flags));
}

CP_EXPORT int epoll_create(int size)
{
	if (size <= 0) {
		errno = EINVAL;
		return -1;
	}
	return epoll_create1(0);
}

CP_EXPORT int eventfd(unsigned int initval, int flags)
{
	return fresh(syscall(SYS_eventfd2, initval, flags));
}
