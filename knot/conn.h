/* conn.h: one HTTP connection's protocol state, shared by the threaded
 * and the event-driven servers.  The transport receives into kconn_rbuf,
 * calls kconn_build to turn every complete buffered request into
 * responses (one iovec array for a whole pipelined batch), writes the
 * iovecs and then, if set, the big file, and calls kconn_done. */
#ifndef KNOT_CONN_H
#define KNOT_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "cache.h"
#include "http.h"

#define KCONN_BATCH 16           /* responses per write */
#define KCONN_HDR 6144           /* header bytes per write */
#define KCONN_MAX_BODY (1 << 20) /* request bodies beyond this: 413 */

struct kconn {
	int fd;
	bool keep_open;            /* false once a response said close */
	bool linger;               /* closing on an error: the client may still
	                              be sending; drain before close so the
	                              answer is not lost to a reset */
	uint32_t start, len;       /* unprocessed input: buf[start..len) */
	uint64_t discard;          /* request-body bytes still to drop */
	int64_t head_deadline;     /* ms, while a head is partial; 0: none */
	struct http_parser parser;
	int iovcnt;
	int nheld;
	uint32_t hdr_used;
	struct cache_entry *big;   /* after the iovecs: send big->fd [big_off, big_end) */
	uint64_t big_off, big_end;
	struct iovec iov[2 * KCONN_BATCH + 2];
	struct cache_entry *held[KCONN_BATCH];
	char peer[48];             /* for the access log */
	/* the start of each buffer is what a small request touches: keep
	 * those starts close together (fewer pages per connection) */
	char hdr[KCONN_HDR];
	char buf[HTTP_MAX_HEAD];
};

/* With the access log on, also looks up the peer's address for it. */
void kconn_init(struct kconn *c, int fd);

/* Where to receive next and how much room there is (0: none, which
 * kconn_build never leaves a live connection in). */
char *kconn_rbuf(struct kconn *c, size_t *room);
/* n bytes arrived at kconn_rbuf's pointer. */
void kconn_received(struct kconn *c, size_t n);

/* Answers the complete requests buffered (up to a batch).  Returns how
 * many responses were queued; 0 means: read more (or close, if
 * !keep_open). */
int kconn_build(struct kconn *c);

/* Queues a 408 and marks the connection to close. */
void kconn_timeout(struct kconn *c);

/* Whether part of a request (or of its body) has arrived: the header
 * timeout rather than the keep-alive timeout applies to the next read. */
bool kconn_partial(const struct kconn *c);
/* The deadline (ms, on the caller's clock at now_ms) for the next read:
 * --header-timeout from when a head started arriving, else
 * --keepalive-timeout from now. */
int64_t kconn_read_deadline(struct kconn *c, int64_t now_ms);

/* The queued responses were written (or abandoned): releases them. */
void kconn_done(struct kconn *c);

#endif
