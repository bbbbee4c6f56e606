/* env.c: parsing CAPRICE_* variables the same way everywhere, and saying
 * so when a value is refused rather than silently using something else. */
#include "env.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "compiler.h"

long cp_env_long(const char *name, long min, long max, long dflt)
{
	const char *s = getenv(name);
	if (!s || !*s)
		return dflt;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		cp_warn("%s=%s ignored: want a whole number from %ld to %ld", name, s, min, max);
		return dflt;
	}
	return v;
}

size_t cp_env_size(const char *name, size_t min, size_t max, size_t dflt)
{
	const char *s = getenv(name);
	if (!s || !*s)
		return dflt;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	bool ok = !errno && end != s && !*end && *s != '-' && v <= (max >> shift);
	v <<= shift;
	if (!ok || v < min || v > max) {
		cp_warn("%s=%s ignored: want a size from %zu to %zu bytes (k, m, g suffixes)",
		        name, s, min, max);
		return dflt;
	}
	return (size_t)v;
}
