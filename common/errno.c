/* errno.c: where errno lies from the thread pointer (compiler.h). */
#include "compiler.h"

#include <dlfcn.h>

long cp_errno_tpoff;

/* The C library's, not the one libthread.so exports (libthread/errno.c),
 * which comes back here. */
static int *(*c_errno_location)(void);

int *cp_errno_find(void)
{
	if (!c_errno_location) {
		c_errno_location = (int *(*)(void))dlsym(RTLD_NEXT, "__errno_location");
		if (!c_errno_location)
			cp_die("the C library's __errno_location is missing: %s", dlerror());
	}
	int *loc = c_errno_location();
	char *tp;
	__asm__ volatile("movq %%fs:0, %0" : "=r"(tp));
	__atomic_store_n(&cp_errno_tpoff, (long)((char *)loc - tp), __ATOMIC_RELAXED);
	return loc;
}
