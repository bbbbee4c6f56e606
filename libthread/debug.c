/* debug.c: CAPRICE_DEBUG (see debug.h). */
#include "debug.h"

#include <stdarg.h>
#include <stdio.h>

#include "env.h"
#include "spinlock.h"

int lt_debug_level;

void lt_debug_init(void)
{
	lt_debug_level = (int)cp_env_long("CAPRICE_DEBUG", 0, 2, 0);
}

/* said == NULL: once per distinct `call` string (a few dozen at most) */
static int *said_for(const char *call)
{
	static const char *calls[64];
	static int flags[64];
	static cp_spinlock lock = CP_SPINLOCK_INIT;
	static int overflow;
	cp_spin_lock(&lock);
	int i = 0;
	while (i < 64 && calls[i] && calls[i] != call)
		i++;
	if (i < 64)
		calls[i] = call;
	cp_spin_unlock(&lock);
	return i < 64 ? &flags[i] : &overflow;
}

/* Out of line: a variadic function that calls the C library is one gold
 * cannot give a big chunk (split-stack builds). */
static CP_NOINLINE void vsay(const char *call, const char *fmt, va_list ap)
{
	char msg[256];
	vsnprintf(msg, sizeof msg, fmt, ap);
	cp_warn("debug: %s: %s%s", call, msg, lt_debug_level < 2 ? " (said once)" : "");
}

void lt_debug_say(int *said, const char *call, const char *fmt, ...)
{
	if (!said)
		said = said_for(call);
	if (lt_debug_level < 2 && __atomic_exchange_n(said, 1, __ATOMIC_RELAXED))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsay(call, fmt, ap);
	va_end(ap);
}
