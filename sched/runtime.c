/* runtime.c: starting the runtime: making the workers and their kernel
 * threads, reading the environment, and answering questions about
 * workers (count, index, statistics). */
#include "worker.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compiler.h"
#include "context.h"
#include "env.h"
#include "kthread.h"
#include "rtmem.h"

#define IDLE_STACK_SIZE (64u * 1024)
#define MAX_WORKERS     256

struct cp_worker **cp_workers;
int cp_nworkers;
int cp_nall;
static struct cp_thread *main_thread;
static int runtime_state;             /* 0 none, 1 starting, 2 running */
size_t cp_thread_record_size;          /* the layer above's thread record */

/* Where the C library put this kernel thread's stack, asked of its own
 * pthread_getattr_np (libthread's serves user threads).  Fatal messages
 * and ASan need the bounds of every stack a context runs on. */
void cp_native_stack_bounds(struct cp_stack *st)
{
	typedef int (*getattr_fn)(pthread_t, pthread_attr_t *);
	typedef int (*attr_fn)(pthread_attr_t *);
	typedef int (*getstack_fn)(const pthread_attr_t *, void **, size_t *);
	typedef pthread_t (*self_fn)(void);
	getattr_fn getattr = (getattr_fn)dlsym(RTLD_NEXT, "pthread_getattr_np");
	attr_fn destroy = (attr_fn)dlsym(RTLD_NEXT, "pthread_attr_destroy");
	getstack_fn getstack = (getstack_fn)dlsym(RTLD_NEXT, "pthread_attr_getstack");
	self_fn self = (self_fn)dlsym(RTLD_NEXT, "pthread_self");
	pthread_attr_t a;
	void *lo;
	size_t size;
	st->kind = CP_STACK_USER;
	if (getattr && destroy && getstack && self && getattr(self(), &a) == 0) {
		if (getstack(&a, &lo, &size) == 0) {
			st->lo = lo;
			st->size = size;
		}
		destroy(&a);
	}
}

static void worker_bind(struct cp_worker *w)
{
	cp_tls_worker = w;
	w->errno_loc = __errno_location();
	w->tid = (pid_t)syscall(SYS_gettid);
	w->own_tcb = cp_tls_current();
	cp_signals_bind_worker();
	cp_linked_bind_kthread();
	cp_spare_watch_open(w);
	int e = w->ring.ready ? 0 : cp_ring_init(&w->ring); /* worker 0's is made at start */
	if (e)
		cp_die("worker %d: io_uring_setup refused (%s); Caprice needs io_uring "
		       "(Linux 5.7+, 6.1+ for its fastest rings; kernel.io_uring_disabled=0; "
		       "no seccomp filter denying it; before 5.12, enough RLIMIT_MEMLOCK)",
		       w->index, strerror(-e));
}

/* Workers whose kernel thread has made its ring: start-up waits for all
 * of them, so the runtime opens no descriptor behind the program's back
 * once main runs (a program that closes fd 0 and opens /dev/null expects
 * to get 0 back). */
static int workers_bound;

static void *worker_main(void *arg)
{
	struct cp_worker *w = arg;
	worker_bind(w);
	w->current = &w->idle;
	w->idle.home = w;
	cp_native_stack_bounds(&w->idle.stack);
	__atomic_add_fetch(&workers_bound, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &workers_bound, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	cp_idle_loop(w); /* on the kernel thread's own stack; never returns */
	return NULL;
}

static struct cp_worker *worker_alloc(int idx)
{
	struct cp_worker *w = cp_rt_aligned(CP_CACHELINE, (sizeof *w + CP_CACHELINE - 1) &
	                                                  ~(size_t)(CP_CACHELINE - 1));
	if (!w)
		cp_die("cannot allocate worker %d: out of memory", idx);
	memset(w, 0, sizeof *w);
	w->index = idx;
	w->poll_countdown = CP_POLL_EVERY;
	w->next_deadline = CP_NO_DEADLINE;
	w->stat_fd = w->schedstat_fd = -1; /* until its kernel thread opens them */
	w->idle.id = 0;
	memcpy(w->idle.name, "caprice-idle", 13);
	int e = cp_ring_prepare(&w->ring);
	if (e)
		cp_die("worker %d: eventfd failed: %s", idx, strerror(-e));
	return w;
}

struct cp_thread *cp_record_alloc(void)
{
	size_t size = (cp_thread_record_size + 63) & ~(size_t)63;
	struct cp_thread *t = cp_rt_aligned(64, size);
	if (t)
		memset(t, 0, size);
	return t;
}

void cp_runtime_build(struct cp_thread *current, struct cp_worker *made0)
{
	__atomic_store_n(&workers_bound, 0, __ATOMIC_RELAXED); /* again in a fork's child */
	/* stealing without the victim's help, and waits published without
	 * a lock, want expedited membarrier (fence.h), registered per
	 * process (a fork's child registers again) */
	cp_membarrier_init();
	__atomic_store_n(&cp_idle_sleepers, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&cp_thieves_spinning, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&cp_idle_workers, 0, __ATOMIC_RELAXED);
	cp_workers = cp_rt_calloc((size_t)cp_nall, sizeof *cp_workers);
	if (!cp_workers)
		cp_die("cannot start: out of memory for %d workers", cp_nall);
	for (int i = 0; i < cp_nall; i++) {
		cp_workers[i] = i == 0 && made0 ? made0 : worker_alloc(i);
		cp_workers[i]->spare = i >= cp_nworkers;
		cp_runq_init(&cp_workers[i]->rq); /* made0 was made before the policy came */
		cp_workers[i]->ring.batch_into = cp_sched_2d ? &cp_workers[i]->rq : NULL;
	}
	struct cp_worker *w0 = cp_workers[0];
	worker_bind(w0);
	if (cp_tls_per_thread) {
		/* this kernel thread's TCB is `current`'s, which may go on to
		 * run on another worker: worker 0's scheduler gets its own */
		if (cp_tls_make(&w0->idle))
			cp_die("cannot start: out of memory for worker 0's TLS");
		w0->own_tcb = w0->idle.tcb;
	}
	for (int i = 0; i < cp_nall; i++) { /* a fork's child: only its caller lives */
		__atomic_store_n(&cp_workers[i]->resident_own, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&cp_workers[i]->resident_remote, 0, __ATOMIC_RELAXED);
	}
	current->home = w0;
	__atomic_store_n(&w0->resident_own, 1, __ATOMIC_RELAXED);
	w0->current = current;
	cp_tls_thread = current;
	int e = cp_stack_get(NULL, IDLE_STACK_SIZE, cp_page_size(), CP_STACK_AT_LEAST,
	                     &w0->idle.stack);
	if (e)
		cp_die("cannot map worker 0's scheduler stack: %s", strerror(e));
	w0->idle.home = w0;
	w0->idle.sp = cp_ctx_make(cp_stack_top(&w0->idle.stack), cp_idle_entry, w0);

	for (int i = 1; i < cp_nall; i++) {
		e = cp_kthread_create(&cp_workers[i]->kthread, worker_main, cp_workers[i]);
		if (e)
			cp_die("cannot start worker %d's kernel thread: %s", i, strerror(e));
	}
	/* a futex wait, not a yield loop: under valgrind, which runs one
	 * thread at a time, a yielding main never let the workers get there */
	for (int n; (n = __atomic_load_n(&workers_bound, __ATOMIC_ACQUIRE)) < cp_nall - 1;)
		syscall(SYS_futex, &workers_bound, FUTEX_WAIT_PRIVATE, n, NULL, NULL, 0);
}

/* Valgrind runs one thread at a time and holds its lock across system
 * calls it does not know to block, io_uring_enter among them: a second
 * worker (or a spare) asleep in its ring would keep main from ever running
 * again.  Under valgrind the defaults are one worker and no spare, which
 * lose nothing there (CAPRICE_WORKERS and CAPRICE_SPARE_WORKERS still
 * apply). */
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#else
#define UNDER_VALGRIND() false
#endif

static int online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (int)n;
}

struct cp_thread *cp_runtime_start(size_t thread_size, int *refused)
{
	int expect = 0;
	if (!__atomic_compare_exchange_n(&runtime_state, &expect, 1, false,
	                                 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(&runtime_state, __ATOMIC_ACQUIRE) != 2)
			cp_cpu_relax();
		return main_thread;
	}
	/* this kernel thread becomes worker 0: its ring is made first, so a
	 * refused io_uring leaves nothing behind and can be answered */
	struct cp_worker *w0 = worker_alloc(0);
	int e = cp_ring_init(&w0->ring);
	if (e) {
		cp_rtfd_release(w0->ring.kick_fd);
		cp_rt_free(w0);
		__atomic_store_n(&runtime_state, 0, __ATOMIC_RELEASE);
		*refused = e;
		return NULL;
	}
	cp_wake_init();
	/* errno's place (compiler.h) is known before any user thread, on a
	 * small chunk, needs it */
	cp_errno_find();
	cp_tls_configure();
	bool valgrind = UNDER_VALGRIND();
	cp_nworkers = (int)cp_env_long("CAPRICE_WORKERS", 1, MAX_WORKERS, valgrind ? 1 : online_cpus());
	cp_nall = cp_nworkers + (int)cp_env_long("CAPRICE_SPARE_WORKERS", 0, MAX_WORKERS, valgrind ? 0 : 1);
	cp_idle_configure();
	cp_location_configure();
	cp_sigmask_init();
	cp_thread_record_size = thread_size;
	main_thread = cp_record_alloc();
	if (!main_thread)
		cp_die("cannot start: out of memory");
	main_thread->id = 1;
	main_thread->flags = CP_TF_MAIN;
	cp_native_stack_bounds(&main_thread->stack);
	if (cp_tls_per_thread)
		main_thread->tcb = cp_tls_current(); /* the initial thread's */
	memcpy(main_thread->name, "main", 5);
	cp_registry_add(main_thread);
	cp_signals_install();
	cp_runtime_build(main_thread, w0);
	cp_fork_init();
	cp_monitor_start();
	__atomic_store_n(&runtime_state, 2, __ATOMIC_RELEASE);
	return main_thread;
}

int cp_worker_count(void) { return cp_nworkers; }

int cp_spare_worker_count(void) { return cp_nall - cp_nworkers; }

struct cp_worker *cp_worker_get(int idx)
{
	return idx >= 0 && idx < cp_nall ? cp_workers[idx] : NULL;
}

bool cp_is_runtime_ring(const void *ring)
{
	for (int i = 0; i < cp_nall; i++)
		if (ring == &cp_workers[i]->ring.uring)
			return true;
	return false;
}

int cp_worker_index(void)
{
	struct cp_worker *w = cp_worker_self();
	return w ? w->index : -1;
}

void cp_worker_stats(int idx, struct cp_worker_stats *out)
{
	struct cp_worker *w = cp_worker_get(idx);
	if (!w) {
		memset(out, 0, sizeof *out);
		return;
	}
	*out = w->st; /* racy snapshot; good enough for counters */
	out->runq_len = cp_runq_len(&w->rq);
	out->held_now = cp_runq_held(&w->rq);
	out->enters = __atomic_load_n(&w->ring.enters, __ATOMIC_RELAXED);
}
