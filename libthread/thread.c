/* thread.c: pthread thread lifecycle on user threads: create, join,
 * detach, exit, identity, names, and the calls that take a pthread_t.
 * Every call that takes a pthread_t is defined here, because the C
 * library's version would read our record as its own and crash. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lt.h"
#include "offload.h"

/* user threads alive, main included; when the last one leaves after
 * main called pthread_exit, the process exits with status 0 */
static uint64_t live_threads = 1;

/* In the child of fork() only the forking thread lives. */
void lt_threads_after_fork(void)
{
	lt_offload_after_fork();
	lt_robust_start();
	__atomic_store_n(&live_threads, 1, __ATOMIC_RELAXED);
	struct lt_thread *t = lt_self();
	if (t) {
		__atomic_store_n(&lt_main, t, __ATOMIC_RELEASE);
		lt_sigmask_after_fork(t);
	}
}

uint64_t lt_live_threads(void)
{
	return __atomic_load_n(&live_threads, __ATOMIC_ACQUIRE);
}

int lt_prio_base(const struct lt_thread *t)
{
	bool rt = t->sched_policy == SCHED_FIFO || t->sched_policy == SCHED_RR;
	return rt ? t->sched_param.sched_priority : 0;
}

/* The scheduler's rank for t's policy and priority: SCHED_FIFO and
 * SCHED_RR priorities count, the other policies' (always 0) do not; the
 * priority protocols' mutexes may raise it. */
static void sched_apply(struct lt_thread *t)
{
	int prio = lt_prio_base(t);
	int raised = __atomic_load_n(&t->prio_raised, __ATOMIC_RELAXED);
	if (raised > prio)
		prio = raised;
	if (prio != t->cp.prio) /* a new thread's is 0: most never call */
		cp_thread_set_priority(&t->cp, prio);
}

/* A thread that holds several protocol mutexes keeps the highest priority
 * any of them raised it to until it releases the last (NPTL lowers it
 * step by step as each goes): never lower than the protocols ask, at
 * the cost of a count instead of a list in the thread record. */
void lt_prio_raise(struct lt_thread *t, int prio)
{
	uint8_t was = __atomic_load_n(&t->prio_raised, __ATOMIC_RELAXED);
	while (prio > was &&
	       !__atomic_compare_exchange_n(&t->prio_raised, &was, (uint8_t)prio, false,
	                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
	if (prio > was)
		sched_apply(t);
}

/* sched_apply, and a caller that lowered its own rank yields, so that a
 * higher thread queued behind it runs now, as the kernel would preempt
 * it; not from inside the runtime (a condvar wait lets go of its mutex
 * with the condvar's lock held, and parks next anyway). */
static void sched_apply_and_yield(struct lt_thread *t)
{
	int was = t->cp.prio;
	sched_apply(t);
	if (t->cp.prio < was && t == lt_self() && !cp_in_runtime())
		cp_yield();
}

void lt_prio_locks_changed(struct lt_thread *self, int delta)
{
	self->prio_locks = (uint8_t)(self->prio_locks + delta);
	if (self->prio_locks || !__atomic_load_n(&self->prio_raised, __ATOMIC_RELAXED))
		return;
	__atomic_store_n(&self->prio_raised, 0, __ATOMIC_RELAXED);
	sched_apply_and_yield(self); /* a waiter it held up runs now */
}

static void lt_entry(struct cp_thread *ct)
{
	struct lt_thread *t = (struct lt_thread *)ct;
	lt_keys_thread_start();
	lt_exit(t, t->start(t->arg));
}

CP_EXPORT int pthread_create(pthread_t *restrict out, const pthread_attr_t *restrict attr,
                             void *(*start)(void *), void *restrict arg)
{
	lt_ensure_started();
	const struct lt_attr *a = (const struct lt_attr *)attr;
	size_t size = a && a->stacksize ? a->stacksize : lt_defaults.stacksize;
	size_t guard = a && (a->flags & LT_ATTR_GUARD_SET) ? a->guardsize : lt_defaults.guardsize;
	char *user = a ? a->stackaddr : NULL;
	int err = 0;
	/* split-stack code starts on a small chunk and grows (sched/linked.c);
	 * the stack size is then the cap of all its chunks */
	bool linked = !user && cp_linked_code((const void *)start);
	struct cp_thread *ct =
		linked ? cp_thread_new_linked(sizeof(struct lt_thread),
		                              a && a->stacksize ? a->stacksize : 0, lt_entry, &err)
		       : cp_thread_new(sizeof(struct lt_thread), size, guard,
		                       /* both set: exactly that stack, as NPTL */
		                       a && a->stacksize && (a->flags & LT_ATTR_GUARD_SET)
		                               ? CP_STACK_EXACT : CP_STACK_AT_LEAST,
		                       user, lt_entry, &err);
	if (!ct)
		return err == EINVAL ? EINVAL : EAGAIN;
	struct lt_thread *t = (struct lt_thread *)ct;
	t->magic = LT_MAGIC;
	t->start = start;
	t->arg = arg;
	t->cancel_enabled = 1;
	t->join_state = a && a->detachstate == PTHREAD_CREATE_DETACHED ? LT_DETACHED : LT_JOINABLE;
	t->guardsize = user ? 0 : guard;
	t->user_stack = user != NULL;
	if (!user && size < ct->stack.size)
		t->stacksize = (size + cp_page_size() - 1) & ~(cp_page_size() - 1);
	struct lt_thread *self = lt_self();
	if (a && a->inheritsched == PTHREAD_EXPLICIT_SCHED) {
		t->sched_policy = a->schedpolicy;
		t->sched_param = a->param;
	} else if (self) {
		t->sched_policy = self->sched_policy;
		t->sched_param = self->sched_param;
	}
	sched_apply(t);
	__atomic_add_fetch(&live_threads, 1, __ATOMIC_RELAXED);
	lt_sigmask_thread_start(t, self);
	*out = (pthread_t)t;
	cp_thread_start(ct);
	return 0;
}

/* Runs in the next context once t is off its stack for good. */
static void lt_on_dead(struct cp_thread *ct)
{
	struct lt_thread *t = (struct lt_thread *)ct;
	cp_spin_lock(&t->join_lock);
	if (t->join_state == LT_DETACHED) {
		cp_spin_unlock(&t->join_lock);
		t->magic = 0;
		if (!(t->cp.flags & CP_TF_MAIN))
			cp_thread_release(ct);
		return;
	}
	/* a joiner woken here owns the result: no later join, tryjoin or
	 * detach may take (and free) it while that joiner is on its way */
	t->join_state = cp_wake_all(&t->joiners) ? LT_JOINED : LT_EXITED;
	cp_spin_unlock(&t->join_lock);
}

/* Runs on t's stack as it finishes, where nothing can switch it out: a
 * joiner already waiting runs next here (and frees t) once t is
 * off its stack, and nothing more is left to do.  Waking it only from
 * lt_on_dead took a third switch per create+join, through the worker's
 * loop, whenever the joiner was all there was to run. */
static cp_on_dead_fn *lt_leaving(struct cp_thread *ct)
{
	struct lt_thread *t = (struct lt_thread *)ct;
	lt_cpuclock_thread_gone(t); /* its clock id now names nothing */
	/* a joiner that comes after this look is woken by lt_on_dead */
	if (cp_waitq_empty(&t->joiners))
		return lt_on_dead;
	cp_spin_lock(&t->join_lock);
	bool handed = t->join_state == LT_JOINABLE && cp_wake_successor(&t->joiners);
	if (handed)
		t->join_state = LT_JOINED; /* the joiner owns the result */
	cp_spin_unlock(&t->join_lock);
	return handed ? NULL : lt_on_dead;
}

/* Out of line: a C library call sends its caller to a big chunk on a
 * linked stack (sched/linked.c), and every thread's exit would pay. */
static CP_COLD _Noreturn void exit_process(void)
{
	exit(0);
}

_Noreturn void lt_exit(struct lt_thread *t, void *retval)
{
	t->retval = retval;
	t->exiting = 1;
	lt_keys_run_destructors(t);
	if (cp_unlikely(t->robust_held))
		lt_robust_exit(t);
	lt_signals_thread_gone(t); /* what was pending for it goes with it */
	cp_tls_thread_exit(); /* C++ thread_local destructors, with TLS per thread */
	if (__atomic_sub_fetch(&live_threads, 1, __ATOMIC_ACQ_REL) == 0)
		exit_process(); /* main left with pthread_exit and we were the last */
	lt_sigmask_thread_exit(t);
	cp_thread_finish(lt_leaving);
}

/* glibc's cleanup buffer: we chain buffers through its private pad. */
static inline void **unwind_prev(__pthread_unwind_buf_t *b)
{
	return &b->__pad[0];
}

CP_EXPORT void __pthread_register_cancel(__pthread_unwind_buf_t *buf)
{
	struct lt_thread *t = lt_self();
	if (!t)
		return;
	*unwind_prev(buf) = t->cleanup;
	t->cleanup = buf;
}

CP_EXPORT void __pthread_unregister_cancel(__pthread_unwind_buf_t *buf)
{
	struct lt_thread *t = lt_self();
	if (t && t->cleanup == buf)
		t->cleanup = *unwind_prev(buf);
}

/* Runs the innermost cleanup handler by jumping back into the
 * pthread_cleanup_push that registered it; that handler then calls
 * __pthread_unwind_next, which comes back here for the next one. */
static _Noreturn void unwind_or_exit(struct lt_thread *t)
{
	__pthread_unwind_buf_t *b = t->cleanup;
	if (b) {
		t->cleanup = *unwind_prev(b);
		/* the cancel buffer is a jmp_buf without the saved mask, which
		 * longjmp does not read since __mask_was_saved is 0; launder
		 * the pointer so the compiler does not object to the size */
		struct __jmp_buf_tag *jb = (void *)b->__cancel_jmp_buf;
		__asm__("" : "+r"(jb));
		cp_linked_unwind_to(b); /* b is in the frame the jump lands in */
		longjmp(jb, 1);
	}
	lt_exit(t, t->retval);
}

CP_EXPORT _Noreturn void __pthread_unwind_next(__pthread_unwind_buf_t *buf)
{
	(void)buf;
	struct lt_thread *t = lt_self();
	if (!t)
		abort();
	unwind_or_exit(t);
}

CP_EXPORT _Noreturn void pthread_exit(void *retval)
{
	struct lt_thread *t = lt_self();
	if (!t)
		cp_die("pthread_exit called on kernel thread %ld, which is not a Caprice thread",
		       (long)syscall(SYS_gettid));
	t->retval = retval;
	t->exiting = 1;
	unwind_or_exit(t);
}

void lt_testcancel(struct lt_thread *t)
{
	if (t && t->cancel_pending && t->cancel_enabled && !t->exiting) {
		t->retval = PTHREAD_CANCELED;
		t->exiting = 1;
		unwind_or_exit(t);
	}
}

CP_EXPORT void pthread_testcancel(void)
{
	lt_testcancel(lt_self());
}

/* Run by the target wherever it was (sched's redirect): its pending
 * signal handlers, then an asynchronous cancel if the cancel still may
 * act; else it returns to what the thread was doing, every register as
 * it was. */
void lt_on_redirect(void)
{
	struct lt_thread *t = lt_self();
	if (!t)
		return;
	lt_signals_deliver(t);
	if (t->cancel_async)
		lt_testcancel(t);
}

void lt_interrupted(struct lt_thread *t)
{
	lt_testcancel(t);
	lt_signals_deliver(t);
}

CP_EXPORT int pthread_cancel(pthread_t h)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	__atomic_store_n(&t->cancel_pending, 1, __ATOMIC_RELEASE);
	cp_interrupt(&t->cp);
	if (t->cancel_async && t->cancel_enabled) {
		if (t == lt_self())
			lt_testcancel(t);
		else /* wherever it runs, even code that never calls us */
			cp_thread_redirect(&t->cp, lt_on_redirect);
	}
	return 0;
}

CP_EXPORT int pthread_setcancelstate(int state, int *old)
{
	if (state != PTHREAD_CANCEL_ENABLE && state != PTHREAD_CANCEL_DISABLE)
		return EINVAL;
	struct lt_thread *t = lt_self();
	if (!t) {
		if (old)
			*old = PTHREAD_CANCEL_ENABLE;
		return 0;
	}
	if (old)
		*old = t->cancel_enabled ? PTHREAD_CANCEL_ENABLE : PTHREAD_CANCEL_DISABLE;
	t->cancel_enabled = state == PTHREAD_CANCEL_ENABLE;
	if (t->cancel_enabled && t->cancel_async)
		lt_testcancel(t); /* a cancel pending meanwhile acts now */
	return 0;
}

CP_EXPORT int pthread_setcanceltype(int type, int *old)
{
	if (type != PTHREAD_CANCEL_DEFERRED && type != PTHREAD_CANCEL_ASYNCHRONOUS)
		return EINVAL;
	struct lt_thread *t = lt_self();
	if (!t) {
		if (old)
			*old = PTHREAD_CANCEL_DEFERRED;
		return 0;
	}
	if (old)
		*old = t->cancel_async ? PTHREAD_CANCEL_ASYNCHRONOUS : PTHREAD_CANCEL_DEFERRED;
	t->cancel_async = type == PTHREAD_CANCEL_ASYNCHRONOUS;
	if (t->cancel_async)
		lt_testcancel(t); /* a cancel pending meanwhile acts now */
	return 0;
}

/* join: timeout is a monotonic deadline or CP_NO_DEADLINE; try: no wait */
static int join(pthread_t h, void **ret, uint64_t deadline, bool try)
{
	struct lt_thread *t = lt_from_handle(h);
	struct lt_thread *self = lt_self();
	if (!t)
		return ESRCH;
	if (t == self)
		return EDEADLK;
	/* joining each other deadlocks, unless the other one is on its way
	 * out (cancelled or exiting), as glibc reasons too */
	if (self && __atomic_load_n(&t->joining, __ATOMIC_ACQUIRE) == self &&
	    !__atomic_load_n(&t->cancel_pending, __ATOMIC_ACQUIRE) && !t->exiting)
		return EDEADLK;
	cp_spin_lock(&t->join_lock);
	if (t->join_state == LT_DETACHED || t->join_state == LT_JOINED ||
	    !cp_waitq_empty(&t->joiners)) {
		cp_spin_unlock(&t->join_lock);
		return EINVAL;
	}
	while (t->join_state != LT_EXITED) {
		if (try) {
			cp_spin_unlock(&t->join_lock);
			return EBUSY;
		}
		struct cp_waiter w;
		if (self)
			__atomic_store_n(&self->joining, t, __ATOMIC_RELEASE);
		int e = cp_wait(&t->joiners, &t->join_lock, &w, deadline, lt_interruptible(self));
		if (self)
			__atomic_store_n(&self->joining, NULL, __ATOMIC_RELEASE);
		if (e == 0 && self) {
			/* woken by lt_leaving (we run next on the dead
			 * thread's worker, after its switch away) or by
			 * lt_on_dead (after that switch), which gave us the
			 * result (state LT_JOINED): it was done with t
			 * before we ran */
			goto joined;
		}
		if (e == EINTR)
			lt_interrupted(self); /* a cancellation point; a handler runs and
			                         the join goes on, as POSIX says */
		if (e == ETIMEDOUT)
			return ETIMEDOUT;
		cp_spin_lock(&t->join_lock);
	}
	t->join_state = LT_JOINED;
	cp_spin_unlock(&t->join_lock);
joined:
	if (ret)
		*ret = t->retval;
	t->magic = 0;
	if (!(t->cp.flags & CP_TF_MAIN))
		cp_thread_release(&t->cp);
	return 0;
}

CP_EXPORT int pthread_join(pthread_t h, void **ret)
{
	lt_testcancel(lt_self());
	return join(h, ret, CP_NO_DEADLINE, false);
}

CP_EXPORT int pthread_tryjoin_np(pthread_t h, void **ret)
{
	return join(h, ret, CP_NO_DEADLINE, true);
}

CP_EXPORT int pthread_clockjoin_np(pthread_t h, void **ret, clockid_t clock,
                                   const struct timespec *abstime)
{
	uint64_t dl;
	int e = lt_deadline(clock, abstime, &dl);
	if (e)
		return e;
	return join(h, ret, dl, false);
}

CP_EXPORT int pthread_timedjoin_np(pthread_t h, void **ret, const struct timespec *abstime)
{
	return pthread_clockjoin_np(h, ret, CLOCK_REALTIME, abstime);
}

CP_EXPORT int pthread_detach(pthread_t h)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	cp_spin_lock(&t->join_lock);
	switch (t->join_state) {
	case LT_JOINABLE:
		t->join_state = LT_DETACHED;
		cp_spin_unlock(&t->join_lock);
		return 0;
	case LT_EXITED:
		t->join_state = LT_JOINED;
		cp_spin_unlock(&t->join_lock);
		t->magic = 0;
		if (!(t->cp.flags & CP_TF_MAIN))
			cp_thread_release(&t->cp);
		return 0;
	default:
		cp_spin_unlock(&t->join_lock);
		return EINVAL;
	}
}

CP_EXPORT pthread_t pthread_self(void)
{
	struct lt_thread *t = lt_self();
	if (t)
		return (pthread_t)t;
	/* a kernel thread that is not ours: the C library's own handle,
	 * which lives in its TCB and so never equals a record of ours */
	pthread_t tcb;
	__asm__("movq %%fs:16, %0" : "=r"(tcb));
	return tcb;
}

CP_EXPORT int pthread_equal(pthread_t a, pthread_t b)
{
	return a == b;
}

CP_EXPORT int sched_yield(void)
{
	cp_yield_brief();
	return 0;
}

/* glibc's header renames pthread_yield to sched_yield; older binaries
 * still call the symbol itself. */
CP_EXPORT int lt_pthread_yield(void) __asm__("pthread_yield");
CP_EXPORT int lt_pthread_yield(void)
{
	cp_yield_brief();
	return 0;
}

CP_EXPORT int pthread_setname_np(pthread_t h, const char *name)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	size_t n = strlen(name);
	if (n >= sizeof t->cp.name)
		return ERANGE;
	memcpy(t->cp.name, name, n + 1);
	return 0;
}

CP_EXPORT int pthread_getname_np(pthread_t h, char *buf, size_t len)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	size_t n = strnlen(t->cp.name, sizeof t->cp.name);
	if (len < n + 1)
		return ERANGE;
	memcpy(buf, t->cp.name, n);
	buf[n] = 0;
	return 0;
}

CP_EXPORT int pthread_getattr_np(pthread_t h, pthread_attr_t *attr)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	pthread_attr_init(attr);
	struct lt_attr *a = (struct lt_attr *)attr;
	/* the top of the stack, as big as was asked for */
	size_t size = t->stacksize ? t->stacksize : t->cp.stack.size;
	a->stackaddr = cp_stack_top(&t->cp.stack) - size;
	a->stacksize = size;
	a->guardsize = t->guardsize;
	a->flags |= LT_ATTR_GUARD_SET;
	cp_spin_lock(&t->join_lock);
	a->detachstate = t->join_state == LT_DETACHED ? PTHREAD_CREATE_DETACHED
	                                              : PTHREAD_CREATE_JOINABLE;
	cp_spin_unlock(&t->join_lock);
	a->schedpolicy = t->sched_policy;
	a->param = t->sched_param;
	a->inheritsched = PTHREAD_EXPLICIT_SCHED;
	return 0;
}

static int check_sched(int policy, const struct sched_param *p)
{
	if (policy != SCHED_OTHER && policy != SCHED_FIFO && policy != SCHED_RR &&
	    policy != SCHED_BATCH && policy != SCHED_IDLE)
		return EINVAL;
	if (!p || p->sched_priority < sched_get_priority_min(policy) ||
	    p->sched_priority > sched_get_priority_max(policy))
		return EINVAL;
	return 0;
}

/* SCHED_FIFO and SCHED_RR priorities rank user threads on their worker's
 * run queue and in wait queues (sched/policy.c); they need no privilege,
 * since no kernel thread's scheduling changes.  A thread that lowers its
 * own priority yields. */
static void set_sched(struct lt_thread *t, int policy, const struct sched_param *p)
{
	t->sched_policy = policy;
	t->sched_param = *p;
	sched_apply_and_yield(t);
}

CP_EXPORT int pthread_setschedparam(pthread_t h, int policy, const struct sched_param *p)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	int e = check_sched(policy, p);
	if (e)
		return e;
	set_sched(t, policy, p);
	return 0;
}

CP_EXPORT int pthread_getschedparam(pthread_t h, int *policy, struct sched_param *p)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	*policy = t->sched_policy;
	*p = t->sched_param;
	return 0;
}

/* sched_setscheduler and its kin with pid 0 name the calling thread: on
 * Caprice a user thread, whose worker's kernel scheduling must not change
 * under the other threads it runs.  So they act as pthread_setschedparam
 * does on the caller; any other pid goes to the kernel. */
static struct lt_thread *own_thread(pid_t pid)
{
	return pid == 0 ? lt_self() : NULL;
}

static int errno_of(int e)
{
	if (!e)
		return 0;
	errno = e;
	return -1;
}

CP_EXPORT int sched_setscheduler(pid_t pid, int policy, const struct sched_param *p)
{
	struct lt_thread *t = own_thread(pid);
	if (!t)
		return (int)syscall(SYS_sched_setscheduler, pid, policy, p);
	policy &= ~SCHED_RESET_ON_FORK;
	int e = check_sched(policy, p);
	if (!e)
		set_sched(t, policy, p);
	return errno_of(e);
}

CP_EXPORT int sched_getscheduler(pid_t pid)
{
	struct lt_thread *t = own_thread(pid);
	return t ? t->sched_policy : (int)syscall(SYS_sched_getscheduler, pid);
}

CP_EXPORT int sched_setparam(pid_t pid, const struct sched_param *p)
{
	struct lt_thread *t = own_thread(pid);
	if (!t)
		return (int)syscall(SYS_sched_setparam, pid, p);
	int e = check_sched(t->sched_policy, p);
	if (!e)
		set_sched(t, t->sched_policy, p);
	return errno_of(e);
}

CP_EXPORT int sched_getparam(pid_t pid, struct sched_param *p)
{
	struct lt_thread *t = own_thread(pid);
	if (!t)
		return (int)syscall(SYS_sched_getparam, pid, p);
	*p = t->sched_param;
	return 0;
}

CP_EXPORT int pthread_setschedprio(pthread_t h, int prio)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	struct sched_param p = { .sched_priority = prio };
	int e = check_sched(t->sched_policy, &p);
	if (e)
		return e;
	set_sched(t, t->sched_policy, &p);
	return 0;
}

/* Signals go to the kernel thread (worker) the target last ran on: user
 * threads share their worker's signal state. */
/* A signal for one user thread: its handler runs in that thread
 * (sigthread.c). */
static int send(pthread_t h, int sig, int code, union sigval value)
{
	struct lt_thread *t = lt_from_handle(h);
	if (!t)
		return ESRCH;
	if (sig < 0 || sig >= NSIG)
		return EINVAL;
	if (sig == 0)
		return 0;
	siginfo_t si;
	memset(&si, 0, sizeof si);
	si.si_signo = sig;
	si.si_code = code;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value = value;
	return lt_signal_thread(t, &si);
}

CP_EXPORT int pthread_kill(pthread_t h, int sig)
{
	return send(h, sig, SI_TKILL, (union sigval){ 0 });
}

CP_EXPORT int pthread_sigqueue(pthread_t h, int sig, const union sigval value)
{
	return send(h, sig, SI_QUEUE, value);
}

/* Affinity belongs to workers, not user threads: accepted and ignored,
 * and reported as the process's. */
CP_EXPORT int pthread_setaffinity_np(pthread_t h, size_t size, const cpu_set_t *set)
{
	(void)size; (void)set;
	return lt_from_handle(h) ? 0 : ESRCH;
}

CP_EXPORT int pthread_getaffinity_np(pthread_t h, size_t size, cpu_set_t *set)
{
	if (!lt_from_handle(h))
		return ESRCH;
	return sched_getaffinity(0, size, set) == 0 ? 0 : errno;
}

static int concurrency;
CP_EXPORT int pthread_setconcurrency(int level)
{
	if (level < 0)
		return EINVAL;
	concurrency = level;
	return 0;
}

CP_EXPORT int pthread_getconcurrency(void)
{
	return concurrency;
}
