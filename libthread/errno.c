/* errno.c: __errno_location for programs built with -fsplit-stack.
 *
 * gold moves a split-stack function that calls code without split-stack
 * prologues to a big chunk for its whole frame (sched/linked.c), and
 * every function of a program that reads or sets errno calls the C
 * library's __errno_location: a connection loop that checks for EINTR
 * would run on a big chunk from its first request to its last.  This
 * definition, in libthread-linked.so (which gold marks as split-stack code),
 * answers the same address, through the thread pointer (compiler.h).
 * Only in libthread-linked.so, the library's split-stack flavor: plain
 * programs and the shim keep the C library's. */
#include "lt.h"

CP_EXPORT int *__errno_location(void)
{
	return cp_errno_location();
}
