/* debug.h: CAPRICE_DEBUG, a log of calls served the plain way.
 *
 * A call the runtime could not turn into a parked wait (made on a kernel
 * thread that is not a user thread, with flags io_uring cannot honour,
 * or run whole on a helper kernel thread) still works, but may stop a
 * worker or cost more: CAPRICE_DEBUG=1 says so once per call and reason,
 * CAPRICE_DEBUG=2 every time. */
#ifndef CAPRICE_DEBUG_H
#define CAPRICE_DEBUG_H

#include "compiler.h"

extern int lt_debug_level CP_HIDDEN;
void lt_debug_init(void) CP_HIDDEN;
/* Says "caprice: debug: CALL: message"; *said (or, with NULL, a flag
 * per distinct call string) keeps it to once at level 1. */
void lt_debug_say(int *said, const char *call, const char *fmt, ...) CP_HIDDEN CP_COLD
	__attribute__((format(printf, 3, 4)));

#define LT_DEBUG(call, ...)                                                 \
	do {                                                                \
		static int lt_said_;                                        \
		if (cp_unlikely(lt_debug_level))                            \
			lt_debug_say(&lt_said_, call, __VA_ARGS__);         \
	} while (0)

#endif
