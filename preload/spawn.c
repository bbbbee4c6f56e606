/* spawn.c: system(), popen() and pclose() on a helper kernel thread.
 *
 * The C library starts the child with a vfork-style clone (the calling
 * kernel thread stops until the child execs) and waits for it with
 * internal calls; on a worker, that would stop every user thread queued
 * there for as long as the command runs.  popen's pipe is made inside the
 * C library too, so its descriptor is announced to libthread's table. */
#include <stdio.h>

#include "fdtable.h"
#include "offload.h"
#include "real.h"

PL_REAL(system, int, (const char *))
PL_REAL(popen, FILE *, (const char *, const char *))
PL_REAL(pclose, int, (FILE *))

static long run_system(void *p)
{
	return PL_CALL(system)((const char *)p);
}

CP_EXPORT int system(const char *cmd)
{
	return (int)lt_offload("system", run_system, (void *)cmd);
}

struct popen_args {
	const char *cmd, *mode;
};

static long run_popen(void *p)
{
	struct popen_args *a = p;
	return (long)PL_CALL(popen)(a->cmd, a->mode);
}

CP_EXPORT FILE *popen(const char *cmd, const char *mode)
{
	struct popen_args a = { cmd, mode };
	FILE *f = (FILE *)lt_offload("popen", run_popen, &a);
	if (f)
		lt_fd_fresh(fileno(f));
	return f;
}

static long run_pclose(void *p)
{
	return PL_CALL(pclose)((FILE *)p);
}

CP_EXPORT int pclose(FILE *f)
{
	int fd = fileno(f);
	int r = (int)lt_offload("pclose", run_pclose, f);
	lt_fd_fresh(fd); /* closed inside the C library: forget the number */
	return r;
}
