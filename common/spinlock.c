/* spinlock.c: the per-kernel-thread bookkeeping behind spinlock.h, kept
 * below every layer so that any of them can take a runtime lock alone. */
#include "spinlock.h"

__thread uint32_t cp_locks_held __attribute__((tls_model("initial-exec")));
__thread uint32_t cp_deferred_work __attribute__((tls_model("initial-exec")));

static void (*deferred_hook)(void);

void cp_spin_set_deferred_hook(void (*hook)(void))
{
	__atomic_store_n(&deferred_hook, hook, __ATOMIC_RELEASE);
}

void cp_run_deferred_work(void)
{
	/* only the hook's owner ever sets cp_deferred_work, so it is there */
	void (*hook)(void) = __atomic_load_n(&deferred_hook, __ATOMIC_ACQUIRE);
	if (hook)
		hook();
}
