/* init.c: starting the runtime in a linked program.
 *
 * A constructor turns the process's first kernel thread into worker 0 and
 * the code it is running (the rest of start-up, then main) into the first
 * user thread, so main can block without blocking anything else.  pthread
 * calls made by other libraries' constructors before ours start it early. */
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "debug.h"
#include "fdtable.h"
#include "lt.h"
#include "timespec.h"

struct lt_thread *lt_main;
struct lt_defaults lt_defaults;
static cp_spinlock start_lock = CP_SPINLOCK_INIT;

void lt_start(void)
{
	cp_spin_lock(&start_lock);
	if (lt_main) {
		cp_spin_unlock(&start_lock);
		return;
	}
	if (syscall(SYS_gettid) != getpid())
		cp_die("the runtime must start on the process's first thread, but the first "
		       "pthread call came from kernel thread %ld", (long)syscall(SYS_gettid));
	lt_debug_init();
	lt_defaults.stacksize = cp_stack_default_size();
	lt_defaults.guardsize = cp_stack_default_guard();
	int refused = 0;
	struct lt_thread *m = (struct lt_thread *)cp_runtime_start(sizeof(struct lt_thread),
	                                                          &refused);
	if (!m) {
		cp_spin_unlock(&start_lock);
		if (lt_runtime_refused)
			lt_runtime_refused(-refused); /* the shim: runs the program without us */
		cp_die("io_uring_setup refused (%s); Caprice needs io_uring (Linux 5.7+, "
		       "6.1+ for its fastest rings; kernel.io_uring_disabled=0; no seccomp "
		       "filter denying it; before 5.12, enough RLIMIT_MEMLOCK)",
		       strerror(-refused));
	}
	lt_altstack_init(); /* before main is a thread that may call sigaltstack */
	m->magic = LT_MAGIC;
	m->cancel_enabled = 1;
	m->join_state = LT_JOINABLE;
	m->guardsize = 0;
	m->sched_policy = SCHED_OTHER;
	lt_keys_adopt_foreign(m);
	lt_sigmask_main(m); /* the mask the process started with */
	__atomic_store_n(&lt_main, m, __ATOMIC_RELEASE);
	lt_stats_init();
	lt_fd_init();
	lt_sendfile_init();
	lt_robust_start();
	cp_at_fork_child(lt_threads_after_fork); /* after the fd table's (fork.c) */
	cp_spin_unlock(&start_lock);
}

__attribute__((constructor(101))) static void lt_constructor(void)
{
	lt_ensure_started();
}

int lt_deadline(clockid_t clock, const struct timespec *abs, uint64_t *out)
{
	if (!abs || !cp_ts_valid(abs))
		return EINVAL;
	uint64_t want = cp_ts_to_ns_sat(abs); /* before the epoch: 0, long past */
	if (clock == CLOCK_MONOTONIC) {
		*out = want;
		return 0;
	}
	if (clock != CLOCK_REALTIME)
		return EINVAL;
	/* convert once; a later jump of the wall clock is not followed */
	struct timespec now_rt;
	clock_gettime(CLOCK_REALTIME, &now_rt);
	uint64_t rt = cp_ts_to_ns(&now_rt);
	uint64_t mono = cp_now_ns();
	*out = want <= rt ? 0 : cp_ns_add_sat(mono, want - rt);
	return 0;
}
