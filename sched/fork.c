/* fork.c: the runtime's one fork handler, and the order of everything
 * that must be rebuilt in the child.
 *
 * In the child of fork() only the forking kernel thread exists, running
 * the forking user thread (POSIX: the only thread that survives).  The
 * parent's workers, queues and rings are gone or not ours to use (a ring
 * belongs to the task that made it).  The order, in one place:
 *  1. stacks: the depot's lock may have been held by a vanished thread;
 *  2. the scheduler: workers rebuilt around the surviving thread;
 *  3. the layers above, in the order they registered with
 *     cp_at_fork_child (libthread: the descriptor table, then threads and
 *     offload helpers), each on a working runtime.
 * What the vanished threads held is leaked. */
#include "worker.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"

#define MAX_FORK_HOOKS 8
static void (*hooks[MAX_FORK_HOOKS])(void);
static unsigned nhooks;

void cp_at_fork_child(void (*fn)(void))
{
	if (nhooks == MAX_FORK_HOOKS)
		cp_die("cp_at_fork_child: more than %d fork hooks", MAX_FORK_HOOKS);
	hooks[nhooks++] = fn;
}

static void after_fork_child(void)
{
	struct cp_worker *old = cp_worker_self();
	struct cp_thread *cur = old ? old->current : NULL;
	/* a thread on a linked stack goes on with its chunks: rebinding
	 * this kernel thread as a worker zeroes the limit */
	uintptr_t split_limit = cp_split_limit();
	if (!cur || (old && cur == &old->idle)) {
		/* forked from a kernel thread that is not ours: it becomes
		 * the child's first user thread, as main did at start-up */
		cur = cp_record_alloc();
		if (!cur)
			cp_die("fork: out of memory rebuilding the runtime in the child");
		cur->id = cp_thread_ids_take(1);
		if (cp_tls_per_thread)
			cur->tcb = cp_tls_current();
		cp_native_stack_bounds(&cur->stack);
	}
	for (int i = 0; i < cp_nall; i++) {
		struct cp_worker *w = cp_workers[i];
		if (w->ring.ready) {
			cp_rtfd_forget(w->ring.uring.ring_fd);
			io_uring_queue_exit(&w->ring.uring);
		}
		cp_rtfd_release(w->ring.kick_fd);
		cp_rtfd_release(w->stat_fd);
		cp_rtfd_release(w->schedstat_fd);
	}
	cp_stack_after_fork();
	cp_chunk_after_fork();
	cp_registry_after_fork(cur);
	cur->flags |= CP_TF_MAIN;
	cp_runtime_build(cur, NULL);
	cp_split_limit_set(split_limit);
	cp_monitor_start(); /* the parent's monitor did not come along */
	for (unsigned i = 0; i < nhooks; i++)
		hooks[i]();
}

void cp_fork_init(void)
{
	pthread_atfork(NULL, NULL, after_fork_child);
}
