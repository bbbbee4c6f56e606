/* env.h: the runtime's environment knobs (CAPRICE_*), parsed one way. */
#ifndef CAPRICE_ENV_H
#define CAPRICE_ENV_H

#include <stddef.h>

/* The whole number in variable `name`, within [min, max].  Unset or
 * empty: dflt.  Anything else (junk, out of range): a one-line warning
 * naming the variable and what it wants, then dflt. */
long cp_env_long(const char *name, long min, long max, long dflt);
/* The same for a size in bytes with an optional k/m/g suffix. */
size_t cp_env_size(const char *name, size_t min, size_t max, size_t dflt);

#endif
