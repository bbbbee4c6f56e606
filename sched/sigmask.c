/* sigmask.c: the program's signal mask.
 *
 * Signal masks are per process here: a user thread moves between workers,
 * so a mask set on one kernel thread would follow nobody.  The mask lives
 * once; a change bumps a generation, and each worker applies it at its
 * next look around (a sleeping one is kicked for it).  The poke signal is
 * never blocked on workers. */
#include "worker.h"

#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"

static uint64_t program_sigmask;
uint32_t cp_program_sigmask_gen;

void cp_sigmask_init(void)
{
	/* the mask the process started with is the program's; workers
	 * inherit it from this thread */
	syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &program_sigmask, sizeof program_sigmask);
}

void cp_sigmask_apply(struct cp_worker *w)
{
	uint32_t gen = __atomic_load_n(&cp_program_sigmask_gen, __ATOMIC_ACQUIRE);
	uint64_t mask = __atomic_load_n(&program_sigmask, __ATOMIC_RELAXED);
	mask &= ~(1ull << (CP_POKE_SIGNAL - 1));
	syscall(SYS_rt_sigprocmask, SIG_SETMASK, &mask, NULL, sizeof mask);
	w->sigmask_gen = gen;
}

uint64_t cp_program_sigmask(void)
{
	return __atomic_load_n(&program_sigmask, __ATOMIC_RELAXED);
}

uint64_t cp_change_program_sigmask(int how, uint64_t bits)
{
	static cp_spinlock lock = CP_SPINLOCK_INIT; /* read-modify-write */
	const uint64_t unblockable = (1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1));
	cp_spin_lock(&lock);
	uint64_t before = __atomic_load_n(&program_sigmask, __ATOMIC_RELAXED);
	uint64_t now = how == SIG_BLOCK ? before | bits : how == SIG_UNBLOCK ? before & ~bits : bits;
	now &= ~unblockable;
	if (now != before) {
		__atomic_store_n(&program_sigmask, now, __ATOMIC_RELAXED);
		__atomic_fetch_add(&cp_program_sigmask_gen, 1, __ATOMIC_RELEASE);
	}
	cp_spin_unlock(&lock);
	if (now == before)
		return before;
	struct cp_worker *self = cp_worker_self();
	if (self)
		cp_sigmask_apply(self);
	for (int i = 0; i < cp_nall; i++)
		if (cp_workers[i] != self)
			cp_worker_kick(cp_workers[i]);
	return before;
}
