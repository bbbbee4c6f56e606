/* cache.c: one mutex guards the hash table, the LRU list and the byte
 * count; it is held for a lookup and a list splice, never across I/O.
 * Loading a file happens outside the lock (two threads may load the same
 * file at once; the second to insert adopts the first's entry).
 *
 * A warm hit costs no system call.  An entry is re-validated (one
 * fstatat) at most once per second, by whichever thread first touches it
 * in a new second; if the file changed or vanished the entry is dropped
 * and the request takes the miss path. */
#include "cache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"
#include "path.h"
#include "response.h"

#define BIG_CHARGE (64 * 1024) /* what an open big file counts for */

struct cache {
	pthread_mutex_t lock;
	int rootfd;
	size_t cap, used;
	uint32_t mask;
	struct cache_entry *head, *tail; /* most recently used first */
	struct cache_entry **buckets;
};

struct cache *cache_new(int rootfd, size_t cap)
{
	struct cache *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	size_t n = 1024;
	while (n < cap / 2048 && n < (1u << 21))
		n <<= 1;
	c->buckets = calloc(n, sizeof *c->buckets);
	if (!c->buckets) {
		free(c);
		return NULL;
	}
	c->mask = (uint32_t)(n - 1);
	c->rootfd = rootfd;
	c->cap = cap;
	pthread_mutex_init(&c->lock, NULL);
	return c;
}

/* The lock is held for a few dozen instructions and never across a
 * blocking call, so a waiter spins a little before it sleeps: under
 * Caprice a sleeping waiter is woken onto the releaser's worker, and
 * such moves would gather connections on one worker. */
static void cache_lock(struct cache *c)
{
	for (int i = 0; i < 200; i++) {
		if (pthread_mutex_trylock(&c->lock) == 0)
			return;
		__builtin_ia32_pause();
	}
	pthread_mutex_lock(&c->lock);
}

static uint32_t hash(const char *k, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)k[i]) * 16777619u;
	return h;
}

static void entry_free(struct cache_entry *e)
{
	if (e->fd >= 0)
		close(e->fd);
	free(e);
}

void cache_put(struct cache_entry *e)
{
	if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
		entry_free(e);
}

/* ---- under the lock ---- */

static struct cache_entry *find(struct cache *c, uint32_t h, const char *k, size_t n)
{
	for (struct cache_entry *e = c->buckets[h & c->mask]; e; e = e->hnext)
		if (e->hash == h && e->key_len == n && memcmp(e->key, k, n) == 0)
			return e;
	return NULL;
}

static void lru_unlink(struct cache *c, struct cache_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_front(struct cache *c, struct cache_entry *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	else
		c->tail = e;
	c->head = e;
}

/* Takes e out of the table; the table's reference is the caller's to drop. */
static void unlink_entry(struct cache *c, struct cache_entry *e)
{
	struct cache_entry **pp = &c->buckets[e->hash & c->mask];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	e->hnext = NULL;
	lru_unlink(c, e);
	c->used -= e->charge;
	e->in_table = false;
}

/* ---- */

static void invalidate(struct cache *c, struct cache_entry *e)
{
	bool drop = false;
	cache_lock(c);
	if (e->in_table) {
		unlink_entry(c, e);
		drop = true;
	}
	pthread_mutex_unlock(&c->lock);
	if (drop)
		cache_put(e);
}

static bool still_valid(struct cache *c, struct cache_entry *e)
{
	struct stat st;
	if (fstatat(c->rootfd, e->key, &st, 0) != 0)
		return false;
	return S_ISREG(st.st_mode) && (uint64_t)st.st_size == e->size &&
	       st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec == e->mtime_ns &&
	       st.st_ino == e->ino && st.st_dev == e->dev;
}

static int load(struct cache *c, const char *key, size_t n, uint32_t h,
                struct cache_entry **out)
{
	struct stat st;
	int fd = path_open(c->rootfd, key, &st);
	if (fd < 0)
		return fd == -EISDIR ? CACHE_IS_DIR : path_errno_status(-fd);
	uint64_t size = (uint64_t)st.st_size;
	bool big = size > CACHE_BIG_FILE || size > c->cap / 8;
	struct cache_entry *e = malloc(sizeof *e + n + 1 + (big ? 0 : size));
	if (!e) {
		close(fd);
		return 503;
	}
	memset(e, 0, sizeof *e);
	memcpy(e->key, key, n);
	e->key[n] = '\0';
	e->key_len = (uint16_t)n;
	e->hash = h;
	e->fd = -1;
	if (big) {
		e->fd = fd;
		e->charge = sizeof *e + n + BIG_CHARGE;
	} else {
		char *body = e->key + n + 1;
		uint64_t got = 0;
		while (got < size) {
			ssize_t r = pread(fd, body + got, size - got, (off_t)got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				close(fd);
				free(e);
				return 500;
			}
			if (r == 0)
				break; /* shrank meanwhile: serve what is there */
			got += (uint64_t)r;
		}
		close(fd);
		size = got;
		e->body = body;
		e->charge = sizeof *e + n + size;
	}
	e->size = size;
	e->mtime = st.st_mtim.tv_sec;
	e->mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
	e->dev = st.st_dev;
	e->ino = st.st_ino;
	atomic_init(&e->checked, resp_now());
	char lm[30];
	http_format_date(e->mtime, lm);
	int k = snprintf(e->hdr, sizeof e->hdr, "Content-Type: %s\r\nContent-Length: %llu\r\n",
	                 resp_mime(key, n), (unsigned long long)size);
	e->lm_off = (uint16_t)k;
	k += snprintf(e->hdr + k, sizeof e->hdr - (size_t)k, "Last-Modified: %s\r\n", lm);
	e->hdr_len = (uint16_t)k;

	struct cache_entry *victims = NULL;
	cache_lock(c);
	struct cache_entry *old = find(c, h, key, n);
	if (old) {
		atomic_fetch_add_explicit(&old->refs, 1, memory_order_relaxed);
		lru_unlink(c, old);
		lru_front(c, old);
		pthread_mutex_unlock(&c->lock);
		entry_free(e);
		*out = old;
		return 0;
	}
	if (e->charge <= c->cap) {
		atomic_init(&e->refs, 2); /* the table's and the caller's */
		e->in_table = true;
		struct cache_entry **b = &c->buckets[h & c->mask];
		e->hnext = *b;
		*b = e;
		lru_front(c, e);
		c->used += e->charge;
		while (c->used > c->cap) {
			struct cache_entry *v = c->tail;
			unlink_entry(c, v);
			v->hnext = victims;
			victims = v;
		}
	} else {
		atomic_init(&e->refs, 1);
	}
	pthread_mutex_unlock(&c->lock);
	while (victims) {
		struct cache_entry *v = victims;
		victims = v->hnext;
		cache_put(v);
	}
	*out = e;
	return 0;
}

int cache_get(struct cache *c, const char *key, size_t n, struct cache_entry **out)
{
	uint32_t h = hash(key, n);
	cache_lock(c);
	struct cache_entry *e = find(c, h, key, n);
	if (e) {
		atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
		if (c->head != e) {
			lru_unlink(c, e);
			lru_front(c, e);
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (e) {
		int64_t now = resp_now();
		int64_t seen = atomic_load_explicit(&e->checked, memory_order_relaxed);
		if (seen == now ||
		    !atomic_compare_exchange_strong(&e->checked, &seen, now) ||
		    still_valid(c, e)) {
			*out = e;
			return 0;
		}
		invalidate(c, e);
		cache_put(e);
	}
	return load(c, key, n, h, out);
}
