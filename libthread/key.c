/* key.c: thread-specific data (pthread_key_*).
 *
 * A key is a slot index plus a generation: deleting a key bumps the
 * generation, so values left behind in threads read as NULL without
 * visiting every thread.  A thread's slots are allocated 32 at a time on
 * first use, behind a table of pages allocated with the first. */
#include <errno.h>
#include <string.h>
#include <limits.h>
#include <stdlib.h>

#include "lt.h"
#include "rtmem.h"

struct key_def {
	uint64_t seq;                 /* odd: in use */
	void (*dtor)(void *);
	bool sanitizer;               /* a sanitizer runtime's key */
};

static bool have_sanitizer_keys;

static struct key_def keys[LT_KEYS_ALL];
static cp_spinlock keys_lock = CP_SPINLOCK_INIT;

/* Kernel threads that are not user threads, and sanitizer keys, get
 * their values here; no destructors run for them. */
static __thread struct lt_key_slot *foreign_slots;

/* Sanitizer runtimes (ASan, LSan, UBSan, TSan) keep their per-thread
 * state under pthread keys and are written for one thread per kernel
 * thread.  So is the way sched/ tells ASan about switches: the switcher
 * announces the next stack and the next context confirms it, both on the
 * same kernel thread.  Their keys therefore hold one value per kernel
 * thread (a worker is one sanitizer thread whose stack changes), cleared
 * when a user thread starts (ASan checks a new thread has no state yet),
 * and their destructors, which tear down kernel-thread state, never run. */
static int key_create(pthread_key_t *key, void (*dtor)(void *), bool sanitizer, unsigned from,
                      unsigned to)
{
	cp_spin_lock(&keys_lock);
	for (unsigned i = from; i < to; i++) {
		if (!(keys[i].seq & 1)) {
			keys[i].sanitizer = sanitizer;
			keys[i].dtor = sanitizer ? NULL : dtor;
			if (sanitizer)
				have_sanitizer_keys = true;
			__atomic_store_n(&keys[i].seq, keys[i].seq + 1, __ATOMIC_RELEASE);
			cp_spin_unlock(&keys_lock);
			*key = i;
			return 0;
		}
	}
	cp_spin_unlock(&keys_lock);
	return EAGAIN;
}

CP_EXPORT int pthread_key_create(pthread_key_t *key, void (*dtor)(void *))
{
	return key_create(key, dtor, lt_is_sanitizer_code(__builtin_return_address(0)), 0,
	                  LT_KEYS_MAX);
}

/* libthread's own keys, past the program's PTHREAD_KEYS_MAX, which they
 * do not take from. */
int lt_key_create_runtime(pthread_key_t *key, void (*dtor)(void *))
{
	return key_create(key, dtor, false, LT_KEYS_MAX, LT_KEYS_ALL);
}

CP_EXPORT int pthread_key_delete(pthread_key_t key)
{
	if (key >= LT_KEYS_MAX)
		return EINVAL;
	cp_spin_lock(&keys_lock);
	if (!(keys[key].seq & 1)) {
		cp_spin_unlock(&keys_lock);
		return EINVAL;
	}
	__atomic_store_n(&keys[key].seq, keys[key].seq + 1, __ATOMIC_RELEASE);
	keys[key].dtor = NULL;
	cp_spin_unlock(&keys_lock);
	return 0;
}

/* The slot for key in t (or this foreign thread), allocating if asked.
 * Allocation is out of line: a C library call moves its caller to a big
 * chunk on a linked stack (sched/linked.c). */
static CP_COLD void *zeroed(size_t n, size_t size)
{
	return cp_rt_calloc(n, size);
}

static struct lt_key_slot *slot(struct lt_thread *t, pthread_key_t key, bool create)
{
	if (!t) {
		if (!foreign_slots && create)
			foreign_slots = zeroed(LT_KEYS_ALL, sizeof *foreign_slots);
		return foreign_slots ? &foreign_slots[key] : NULL;
	}
	struct lt_key_slot **pages = t->key_pages;
	if (cp_unlikely(!pages)) {
		if (!create || !(pages = zeroed(LT_KEY_PAGES, sizeof *pages)))
			return NULL;
		t->key_pages = pages;
	}
	struct lt_key_slot **page = &pages[key / LT_KEYS_PER_PAGE];
	if (!*page && create)
		*page = zeroed(LT_KEYS_PER_PAGE, sizeof **page);
	return *page ? &(*page)[key % LT_KEYS_PER_PAGE] : NULL;
}

static CP_NOINLINE void free_pages(struct lt_thread *t)
{
	for (unsigned p = 0; p < LT_KEY_PAGES; p++)
		cp_rt_free(t->key_pages[p]);
	cp_rt_free(t->key_pages);
	t->key_pages = NULL;
}

CP_EXPORT void *pthread_getspecific(pthread_key_t key)
{
	if (key >= LT_KEYS_ALL)
		return NULL;
	struct lt_thread *t = keys[key].sanitizer ? NULL : lt_self();
	struct lt_key_slot *s = slot(t, key, false);
	if (!s || s->seq != __atomic_load_n(&keys[key].seq, __ATOMIC_ACQUIRE))
		return NULL;
	return s->value;
}

CP_EXPORT int pthread_setspecific(pthread_key_t key, const void *value)
{
	if (key >= LT_KEYS_ALL)
		return EINVAL;
	uint64_t seq = __atomic_load_n(&keys[key].seq, __ATOMIC_ACQUIRE);
	if (!(seq & 1))
		return EINVAL;
	struct lt_thread *t = keys[key].sanitizer ? NULL : lt_self();
	struct lt_key_slot *s = slot(t, key, true);
	if (!s)
		return ENOMEM;
	s->value = (void *)value;
	s->seq = seq;
	return 0;
}

void lt_keys_adopt_foreign(struct lt_thread *t)
{
	if (!foreign_slots)
		return;
	for (unsigned k = 0; k < LT_KEYS_MAX; k++) {
		if (!foreign_slots[k].value || keys[k].sanitizer)
			continue;
		struct lt_key_slot *s = slot(t, (pthread_key_t)k, true);
		if (s)
			*s = foreign_slots[k];
		foreign_slots[k].value = NULL;
	}
}

void lt_keys_thread_start(void)
{
	if (cp_likely(!have_sanitizer_keys) || !foreign_slots)
		return;
	for (unsigned k = 0; k < LT_KEYS_MAX; k++)
		if (keys[k].sanitizer)
			foreign_slots[k].value = NULL;
}

void lt_keys_run_destructors(struct lt_thread *t)
{
	if (!t->key_pages)
		return; /* the common case: this thread never set a key */
	for (int round = 0; round < PTHREAD_DESTRUCTOR_ITERATIONS; round++) {
		bool again = false;
		for (unsigned k = 0; k < LT_KEYS_ALL; k++) {
			struct lt_key_slot *s = slot(t, (pthread_key_t)k, false);
			if (!s) {
				k |= LT_KEYS_PER_PAGE - 1; /* skip the missing page */
				continue;
			}
			if (!s->value)
				continue;
			uint64_t seq = __atomic_load_n(&keys[k].seq, __ATOMIC_ACQUIRE);
			void (*dtor)(void *) = keys[k].dtor;
			void *v = s->value;
			s->value = NULL;
			if (s->seq == seq && (seq & 1) && dtor) {
				dtor(v);
				again = true;
			}
		}
		if (!again)
			break;
	}
	free_pages(t);
}
