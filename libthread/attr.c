/* attr.c: pthread_attr_t, in libthread's own layout (struct lt_attr).
 * Scheduling attributes are validated, kept and reported, not enforced. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <string.h>

#include "lt.h"

#define A(attr) ((struct lt_attr *)(attr))
#define CA(attr) ((const struct lt_attr *)(attr))

CP_EXPORT int pthread_attr_init(pthread_attr_t *attr)
{
	memset(attr, 0, sizeof *attr);
	struct lt_attr *a = A(attr);
	a->detachstate = PTHREAD_CREATE_JOINABLE;
	a->schedpolicy = SCHED_OTHER;
	a->inheritsched = PTHREAD_INHERIT_SCHED;
	a->scope = PTHREAD_SCOPE_SYSTEM;
	return 0;
}

CP_EXPORT int pthread_attr_destroy(pthread_attr_t *attr)
{
	(void)attr;
	return 0;
}

CP_EXPORT int pthread_attr_setdetachstate(pthread_attr_t *attr, int s)
{
	if (s != PTHREAD_CREATE_JOINABLE && s != PTHREAD_CREATE_DETACHED)
		return EINVAL;
	A(attr)->detachstate = s;
	return 0;
}

CP_EXPORT int pthread_attr_getdetachstate(const pthread_attr_t *attr, int *s)
{
	*s = CA(attr)->detachstate;
	return 0;
}

CP_EXPORT int pthread_attr_setstacksize(pthread_attr_t *attr, size_t size)
{
	if (size < (size_t)PTHREAD_STACK_MIN)
		return EINVAL;
	A(attr)->stacksize = size;
	return 0;
}

CP_EXPORT int pthread_attr_getstacksize(const pthread_attr_t *attr, size_t *size)
{
	size_t s = CA(attr)->stacksize;
	if (!s) {
		lt_ensure_started();
		s = lt_defaults.stacksize;
	}
	*size = s;
	return 0;
}

CP_EXPORT int pthread_attr_setstack(pthread_attr_t *attr, void *addr, size_t size)
{
	if (size < (size_t)PTHREAD_STACK_MIN)
		return EINVAL;
	A(attr)->stackaddr = addr;
	A(attr)->stacksize = size;
	return 0;
}

CP_EXPORT int pthread_attr_getstack(const pthread_attr_t *attr, void **addr, size_t *size)
{
	*addr = CA(attr)->stackaddr;
	return pthread_attr_getstacksize(attr, size);
}

/* The obsolete single-address form names the stack's top (x86 stacks
 * grow down), as glibc does. */
CP_EXPORT int pthread_attr_setstackaddr(pthread_attr_t *attr, void *top)
{
	size_t size = A(attr)->stacksize ? A(attr)->stacksize : PTHREAD_STACK_MIN;
	A(attr)->stackaddr = (char *)top - size;
	A(attr)->stacksize = size;
	return 0;
}

CP_EXPORT int pthread_attr_getstackaddr(const pthread_attr_t *attr, void **top)
{
	const struct lt_attr *a = CA(attr);
	*top = a->stackaddr ? a->stackaddr + a->stacksize : NULL;
	return 0;
}

CP_EXPORT int pthread_attr_setguardsize(pthread_attr_t *attr, size_t g)
{
	A(attr)->guardsize = g;
	A(attr)->flags |= LT_ATTR_GUARD_SET;
	return 0;
}

CP_EXPORT int pthread_attr_getguardsize(const pthread_attr_t *attr, size_t *g)
{
	if (CA(attr)->flags & LT_ATTR_GUARD_SET) {
		*g = CA(attr)->guardsize;
	} else {
		lt_ensure_started();
		*g = lt_defaults.guardsize;
	}
	return 0;
}

CP_EXPORT int pthread_attr_setschedpolicy(pthread_attr_t *attr, int p)
{
	if (p != SCHED_OTHER && p != SCHED_FIFO && p != SCHED_RR)
		return EINVAL;
	A(attr)->schedpolicy = p;
	return 0;
}

CP_EXPORT int pthread_attr_getschedpolicy(const pthread_attr_t *attr, int *p)
{
	*p = CA(attr)->schedpolicy;
	return 0;
}

CP_EXPORT int pthread_attr_setschedparam(pthread_attr_t *attr, const struct sched_param *p)
{
	int pol = A(attr)->schedpolicy;
	if (p->sched_priority < sched_get_priority_min(pol) ||
	    p->sched_priority > sched_get_priority_max(pol))
		return EINVAL;
	A(attr)->param = *p;
	return 0;
}

CP_EXPORT int pthread_attr_getschedparam(const pthread_attr_t *attr, struct sched_param *p)
{
	*p = CA(attr)->param;
	return 0;
}

CP_EXPORT int pthread_attr_setinheritsched(pthread_attr_t *attr, int i)
{
	if (i != PTHREAD_INHERIT_SCHED && i != PTHREAD_EXPLICIT_SCHED)
		return EINVAL;
	A(attr)->inheritsched = i;
	return 0;
}

CP_EXPORT int pthread_attr_getinheritsched(const pthread_attr_t *attr, int *i)
{
	*i = CA(attr)->inheritsched;
	return 0;
}

CP_EXPORT int pthread_attr_setscope(pthread_attr_t *attr, int s)
{
	if (s == PTHREAD_SCOPE_PROCESS)
		return ENOTSUP; /* as glibc: only system scope */
	if (s != PTHREAD_SCOPE_SYSTEM)
		return EINVAL;
	A(attr)->scope = s;
	return 0;
}

CP_EXPORT int pthread_attr_getscope(const pthread_attr_t *attr, int *s)
{
	*s = CA(attr)->scope;
	return 0;
}

CP_EXPORT int pthread_attr_setaffinity_np(pthread_attr_t *attr, size_t n, const cpu_set_t *set)
{
	(void)attr; (void)n; (void)set;
	return 0; /* affinity belongs to workers; accepted, ignored */
}

CP_EXPORT int pthread_attr_getaffinity_np(const pthread_attr_t *attr, size_t n, cpu_set_t *set)
{
	(void)attr;
	return sched_getaffinity(0, n, set) == 0 ? 0 : errno;
}

CP_EXPORT int pthread_attr_setsigmask_np(pthread_attr_t *attr, const sigset_t *set)
{
	(void)attr; (void)set;
	return 0; /* signal masks belong to workers */
}

CP_EXPORT int pthread_attr_getsigmask_np(const pthread_attr_t *attr, sigset_t *set)
{
	(void)attr;
	sigemptyset(set);
	return PTHREAD_ATTR_NO_SIGMASK_NP;
}

CP_EXPORT int pthread_getattr_default_np(pthread_attr_t *attr)
{
	lt_ensure_started();
	pthread_attr_init(attr);
	A(attr)->stacksize = lt_defaults.stacksize;
	A(attr)->guardsize = lt_defaults.guardsize;
	A(attr)->flags |= LT_ATTR_GUARD_SET;
	return 0;
}

CP_EXPORT int pthread_setattr_default_np(const pthread_attr_t *attr)
{
	const struct lt_attr *a = CA(attr);
	if (a->stackaddr)
		return EINVAL;
	lt_ensure_started();
	if (a->stacksize)
		lt_defaults.stacksize = a->stacksize;
	if (a->flags & LT_ATTR_GUARD_SET)
		lt_defaults.guardsize = a->guardsize;
	return 0;
}
