/* spin.c: pthread spinlocks, a plain int that is 0 when free.
 *
 * User threads are not preempted, so a thread spinning on a lock whose
 * holder waits in the same worker's run queue would spin forever.  The
 * caller therefore spins only briefly (enough for a holder running on
 * another core to finish a short critical section) and then yields, which
 * lets a holder on its own worker run.  No waiter ever lives outside the
 * int, so process-shared spinlocks work as they are. */
#include <errno.h>

#include "lt.h"

/* pauses before yielding: a few microseconds */
#define SPINS 100

CP_EXPORT int pthread_spin_init(pthread_spinlock_t *l, int pshared)
{
	if (pshared != PTHREAD_PROCESS_PRIVATE && pshared != PTHREAD_PROCESS_SHARED)
		return EINVAL;
	__atomic_store_n(l, 0, __ATOMIC_RELAXED);
	return 0;
}

CP_EXPORT int pthread_spin_destroy(pthread_spinlock_t *l)
{
	(void)l;
	return 0;
}

CP_EXPORT int pthread_spin_lock(pthread_spinlock_t *l)
{
	while (cp_unlikely(__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))) {
		int spins = 0;
		while (__atomic_load_n(l, __ATOMIC_RELAXED)) {
			if (++spins < SPINS) {
				cp_cpu_relax();
			} else {
				cp_yield();
				spins = 0;
			}
		}
	}
	return 0;
}

CP_EXPORT int pthread_spin_trylock(pthread_spinlock_t *l)
{
	return __atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE) ? EBUSY : 0;
}

CP_EXPORT int pthread_spin_unlock(pthread_spinlock_t *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
	return 0;
}
