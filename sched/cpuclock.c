/* cpuclock.c: each user thread's CPU time (CLOCK_THREAD_CPUTIME_ID,
 * pthread_getcpuclockid), which the kernel cannot give: it sees only the
 * workers.
 *
 * A switch adds the time since the last switch on that worker to the
 * thread leaving it, read from the time-stamp counter: no system call, a
 * few nanoseconds.  The accounting starts the first time the program asks
 * for a thread's CPU time, so a program that never does pays one load and
 * branch per switch; the time a thread ran before that is not counted.
 * It counts the time a thread held its worker, including time the kernel
 * gave the worker's core to another process meanwhile. */
#include "worker.h"

#include <time.h>

#include "compiler.h"

static bool active;
static uint64_t tsc0, mono0;          /* the counter and the clock at the start */
static uint64_t ns_per_tick_q32;      /* ns per tick, 32.32 fixed point */
static uint64_t calibrated_until;     /* the counter when that was measured */
static cp_spinlock calib_lock = CP_SPINLOCK_INIT;

/* ns per tick from two readings of both clocks at least 1 ms apart */
static uint64_t ratio_q32(uint64_t dticks, uint64_t dns)
{
	return (uint64_t)(((unsigned __int128)dns << 32) / (dticks ? dticks : 1));
}

void cp_cpuclock_start(void)
{
	if (__atomic_load_n(&active, __ATOMIC_ACQUIRE))
		return;
	cp_spin_lock(&calib_lock);
	if (!active) {
		tsc0 = cp_rdtsc();
		mono0 = cp_now_ns();
		/* a first measure of the counter's rate, refined as time goes on */
		uint64_t t, m;
		do {
			t = cp_rdtsc();
			m = cp_now_ns();
		} while (m - mono0 < 1000000);
		ns_per_tick_q32 = ratio_q32(t - tsc0, m - mono0);
		calibrated_until = t;
		__atomic_store_n(&active, true, __ATOMIC_RELEASE);
		cp_switch_extras_add(CP_EXTRA_CPUCLOCK, __ATOMIC_RELEASE);
	}
	cp_spin_unlock(&calib_lock);
}

uint64_t cp_cpuclock_ticks_to_ns(uint64_t ticks)
{
	uint64_t now = cp_rdtsc();
	/* a longer baseline measures the rate better: take it once it is 10x
	 * the last one */
	if (now - tsc0 > 10 * (calibrated_until - tsc0) && cp_spin_trylock(&calib_lock)) {
		uint64_t m = cp_now_ns();
		now = cp_rdtsc();
		ns_per_tick_q32 = ratio_q32(now - tsc0, m - mono0);
		calibrated_until = now;
		cp_spin_unlock(&calib_lock);
	}
	return (uint64_t)(((unsigned __int128)ticks * ns_per_tick_q32) >> 32);
}

uint64_t cp_thread_cpu_ns(struct cp_thread *t)
{
	uint64_t ticks = __atomic_load_n(&t->cpu_ticks, __ATOMIC_RELAXED);
	struct cp_worker *w = __atomic_load_n(&t->home, __ATOMIC_RELAXED);
	if (w && __atomic_load_n(&w->current, __ATOMIC_ACQUIRE) == t) {
		uint64_t since = __atomic_load_n(&t->run_since, __ATOMIC_RELAXED);
		uint64_t now = cp_rdtsc();
		if (since && now > since) {
			ticks += now - since; /* the run in progress */
		} else if (!since && t == cp_self()) {
			/* switched in before the accounting started: its run
			 * counts from now (the time before is not known) */
			__atomic_store_n(&t->run_since, now, __ATOMIC_RELAXED);
		}
	}
	return cp_cpuclock_ticks_to_ns(ticks);
}
