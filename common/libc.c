/* libc.c: the C library's own definitions of what the runtime answers in
 * its place (errno's location, clock_gettime, sigaction...). */
#include "compiler.h"

#include <dlfcn.h>

void *cp_c_library_symbol(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);
	if (!f)
		cp_die("%s: the C library's definition is missing: %s", name, dlerror());
	return f;
}
