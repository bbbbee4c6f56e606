/* cache.h: the file cache shared by every connection: files by path
 * under the root, LRU-evicted under a byte cap, reference-counted so an
 * entry being sent outlives its eviction. */
#ifndef KNOT_CACHE_H
#define KNOT_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Files above this size (or above an eighth of the cap) are not copied
 * into memory: the entry keeps the file open and responses use sendfile. */
#define CACHE_BIG_FILE (256 * 1024)

/* Returned by cache_get for a directory named without a final slash. */
#define CACHE_IS_DIR 301

struct cache_entry {
	struct cache_entry *hnext, *prev, *next; /* hash chain, LRU list */
	atomic_uint refs;
	uint32_t hash;
	bool in_table;
	int fd;                 /* big files: open for sendfile; else -1 */
	const char *body;       /* small files: the bytes */
	uint64_t size;
	int64_t mtime;          /* seconds, for Last-Modified / 304 */
	int64_t mtime_ns;       /* full stamp, with dev/ino/size to revalidate */
	uint64_t dev, ino;
	_Atomic int64_t checked; /* the second of the last revalidation */
	size_t charge;          /* bytes counted against the cap */
	uint16_t hdr_len;       /* hdr: Content-Type, Content-Length, Last-Modified */
	uint16_t lm_off;        /* where "Last-Modified: ...\r\n" starts in hdr */
	char hdr[160];
	uint16_t key_len;
	char key[];             /* path relative to the root, then the body */
};

struct cache;

/* cap_bytes 0 disables caching (every request opens and reads the file). */
struct cache *cache_new(int rootfd, size_t cap_bytes);

/* Finds or loads key (as from path_decode; "index.html" already appended
 * for directories).  Returns 0 with a referenced entry in *out, or a
 * status: CACHE_IS_DIR, 403, 404, 414, 500, 503. */
int cache_get(struct cache *c, const char *key, size_t key_len, struct cache_entry **out);

/* Drops a reference taken by cache_get. */
void cache_put(struct cache_entry *e);

#endif
