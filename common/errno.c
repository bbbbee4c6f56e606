/* errno.c: where errno lies from the thread pointer (compiler.h). */
#include "compiler.h"

long cp_errno_tpoff;

/* The C library's, not the one libthread-linked.so exports
 * (libthread/errno.c), which comes back here. */
static int *(*c_errno_location)(void);

int *cp_errno_find(void)
{
	if (!c_errno_location)
		c_errno_location = (int *(*)(void))cp_c_library_symbol("__errno_location");
	int *loc = c_errno_location();
	char *tp;
	__asm__ volatile("movq %%fs:0, %0" : "=r"(tp));
	__atomic_store_n(&cp_errno_tpoff, (long)((char *)loc - tp), __ATOMIC_RELAXED);
	return loc;
}
