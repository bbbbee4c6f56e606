/* process.c: waiting for child processes.  The kernel offers no
 * io_uring operation for it on every kernel we support, so a wait that
 * may block runs on a helper kernel thread (offload.c) and only the
 * calling user thread waits; WNOHANG polls need no helper. */
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compiler.h"
#include "offload.h"

CP_EXPORT pid_t wait4(pid_t pid, int *status, int options, struct rusage *ru)
{
	if (options & WNOHANG)
		return (pid_t)syscall(SYS_wait4, pid, status, options, ru);
	return (pid_t)lt_offload_syscall("wait4", SYS_wait4, pid, (long)status, options,
	                                 (long)ru, 0);
}

CP_EXPORT pid_t waitpid(pid_t pid, int *status, int options)
{
	return wait4(pid, status, options, NULL);
}
CP_EXPORT pid_t __waitpid(pid_t pid, int *status, int options) __attribute__((alias("waitpid")));

CP_EXPORT pid_t wait(int *status)
{
	return wait4(-1, status, 0, NULL);
}
CP_EXPORT pid_t __wait(int *status) __attribute__((alias("wait")));

CP_EXPORT pid_t wait3(int *status, int options, struct rusage *ru)
{
	return wait4(-1, status, options, ru);
}

CP_EXPORT int waitid(idtype_t type, id_t id, siginfo_t *info, int options)
{
	if (options & WNOHANG)
		return (int)syscall(SYS_waitid, type, id, info, options, NULL);
	return (int)lt_offload_syscall("waitid", SYS_waitid, type, id, (long)info, options, 0);
}
