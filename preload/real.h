/* real.h: reaching the C library's definition of a name the shim
 * interposes.
 *
 * dlsym(RTLD_NEXT) finds the next definition after ours: the C library's
 * (or a sanitizer's, when one is preloaded first).  The lookup happens on
 * first use and is cached; the shim interposes no allocator, so dlsym's
 * own malloc calls cannot come back here. */
#ifndef CAPRICE_PRELOAD_REAL_H
#define CAPRICE_PRELOAD_REAL_H

#include "compiler.h"

/* The next definition of `name`; dies with a message naming it if there
 * is none (a C library too old or too different to run under the shim). */
void *pl_real(const char *name) CP_HIDDEN;

/* Declares `static T (*real)(params)` bound to the next `name` on first
 * use:  PL_REAL(fgets, char *, (char *, int, FILE *));  then real_fgets(). */
#define PL_REAL(name, ret, params)                                          \
	static ret(*real_##name##_ptr) params;                              \
	static inline __attribute__((unused)) ret(*real_##name##_fn(void)) params \
	{                                                                   \
		ret(*f) params = __atomic_load_n(&real_##name##_ptr, __ATOMIC_ACQUIRE); \
		if (cp_unlikely(!f)) {                                      \
			f = (ret(*) params)pl_real(#name);                  \
			__atomic_store_n(&real_##name##_ptr, f, __ATOMIC_RELEASE); \
		}                                                           \
		return f;                                                   \
	}

#define PL_CALL(name) (real_##name##_fn())

#endif
