/* real.c: finding the C library's definitions (see real.h). */
#include "real.h"

#include <dlfcn.h>

void *pl_real(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);
	if (!f)
		cp_die("the shim interposes %s, but the C library has no %s to call (%s)", name,
		       name, dlerror());
	return f;
}
