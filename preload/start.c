/* start.c: the program's main runs as a user thread.
 *
 * The runtime normally starts in libthread's constructor (or at the first
 * pthread call another library's constructor makes), which turns the
 * process's first kernel thread into worker 0 and the code running on it
 * (the rest of start-up, then main) into user thread 1.  Wrapping
 * __libc_start_main makes that certain before main whatever order the
 * dynamic linker ran constructors in. */
#include "debug.h"
#include "lt.h"
#include "real.h"

typedef int (*main_fn)(int, char **, char **);

PL_REAL(__libc_start_main, int,
        (main_fn, int, char **, void (*)(void), void (*)(void), void (*)(void), void *))

CP_EXPORT int __libc_start_main(main_fn main, int argc, char **argv, void (*init)(void),
                                void (*fini)(void), void (*rtld_fini)(void), void *stack_end)
{
	lt_ensure_started();
	if (lt_debug_level) /* CAPRICE_DEBUG, read as the runtime started */
		cp_warn("%s: main runs as a user thread on %d workers", argv[0], cp_worker_count());
	return PL_CALL(__libc_start_main)(main, argc, argv, init, fini, rtld_fini, stack_end);
}

/* An unmodified program's `__thread` variables must belong to its threads,
 * as on NPTL (sched/tls.c): each user thread gets TLS of its own. */
const bool cp_tls_thread_by_default = true;
