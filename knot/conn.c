/* conn.c: requests to responses.  Headers are assembled by memcpy into
 * the connection's header area; bodies are referenced straight from the
 * cache (each entry held until kconn_done) or from the constant error
 * texts, so a batch of pipelined responses is one iovec array and one
 * write, with no allocation on the way. */
#include "conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "options.h"
#include "path.h"
#include "response.h"

#define IOV_MAX_USED (int)(sizeof ((struct kconn *)0)->iov / sizeof(struct iovec))
#define HDR_RESERVE 640 /* any header but a redirect's fits */
#define INLINE_BODY 1536

static void peer_name(struct kconn *c)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	if (getpeername(c->fd, (struct sockaddr *)&ss, &len) != 0)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)&ss)->sin_addr, c->peer,
		          sizeof c->peer);
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&ss)->sin6_addr, c->peer,
		          sizeof c->peer);
}

void kconn_init(struct kconn *c, int fd)
{
	c->fd = fd;
	c->keep_open = true;
	c->linger = false;
	c->start = c->len = 0;
	c->discard = 0;
	c->head_deadline = 0;
	http_parser_init(&c->parser);
	c->iovcnt = c->nheld = 0;
	c->hdr_used = 0;
	c->big = NULL;
	c->peer[0] = '\0';
	if (log_enabled)
		peer_name(c);
}

char *kconn_rbuf(struct kconn *c, size_t *room)
{
	if (c->start == c->len) {
		c->start = c->len = 0;
	} else if (c->start > 0) {
		memmove(c->buf, c->buf + c->start, c->len - c->start);
		c->len -= c->start;
		c->start = 0;
	}
	*room = sizeof c->buf - c->len;
	return c->buf + c->len;
}

void kconn_received(struct kconn *c, size_t n)
{
	if (c->discard) {
		size_t k = c->discard < n ? (size_t)c->discard : n;
		memmove(c->buf + c->len, c->buf + c->len + k, n - k);
		c->discard -= k;
		n -= k;
	}
	c->len += (uint32_t)n;
}

bool kconn_partial(const struct kconn *c)
{
	return c->len > c->start || c->discard;
}

int64_t kconn_read_deadline(struct kconn *c, int64_t now)
{
	if (!kconn_partial(c)) {
		c->head_deadline = 0;
		return now + (int64_t)knot.opt.keepalive_s * 1000;
	}
	if (!c->head_deadline)
		c->head_deadline = now + (int64_t)knot.opt.header_s * 1000;
	return c->head_deadline;
}

void kconn_done(struct kconn *c)
{
	for (int i = 0; i < c->nheld; i++)
		cache_put(c->held[i]);
	c->nheld = 0;
	c->iovcnt = 0;
	c->hdr_used = 0;
	c->big = NULL;
}

/* ---- assembling ---- */

static void add_iov(struct kconn *c, const void *p, size_t n)
{
	if (n == 0)
		return;
	struct iovec *last = c->iovcnt ? &c->iov[c->iovcnt - 1] : NULL;
	if (last && (const char *)last->iov_base + last->iov_len == (const char *)p) {
		last->iov_len += n;
		return;
	}
	c->iov[c->iovcnt].iov_base = (void *)p;
	c->iov[c->iovcnt].iov_len = n;
	c->iovcnt++;
}

static char *put(char *o, const char *s, size_t n)
{
	memcpy(o, s, n);
	return o + n;
}

#define PUT_LIT(o, lit) put(o, lit, sizeof lit - 1)

static char *head_start(char *o, int status)
{
	size_t n;
	const char *line = resp_status_line(status, &n);
	o = put(o, line, n);
	o = PUT_LIT(o, "Server: " RESP_SERVER "\r\nDate: ");
	o = put(o, resp_date(), 29);
	return PUT_LIT(o, "\r\n");
}

static char *head_end(char *o, bool keep, int minor)
{
	if (!keep)
		o = PUT_LIT(o, "Connection: close\r\n\r\n");
	else if (minor == 0)
		o = PUT_LIT(o, "Connection: keep-alive\r\n\r\n");
	else
		o = PUT_LIT(o, "\r\n");
	return o;
}

static char *put_u64(char *o, uint64_t v)
{
	char tmp[24];
	int k = 0;
	do {
		tmp[k++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (k)
		*o++ = tmp[--k];
	return o;
}

/* An error (or redirect) with its small HTML body; extra is more header
 * lines.  Returns the body length. */
static size_t queue_error(struct kconn *c, int status, bool keep, int minor, bool head_only,
                          const char *extra, size_t extra_len)
{
	size_t blen;
	const char *body = resp_error_body(status, &blen);
	char *h = c->hdr + c->hdr_used, *o = head_start(h, status);
	o = PUT_LIT(o, "Content-Type: text/html\r\nContent-Length: ");
	o = put_u64(o, blen);
	o = PUT_LIT(o, "\r\n");
	if (extra_len)
		o = put(o, extra, extra_len);
	o = head_end(o, keep, minor);
	add_iov(c, h, (size_t)(o - h));
	c->hdr_used += (uint32_t)(o - h);
	if (!keep && status >= 400)
		c->linger = true;
	if (head_only)
		return 0;
	add_iov(c, body, blen);
	return blen;
}

/* Out of line so its 4 KiB buffer stays off respond's frame: a thread's
 * stack pages are touched (and faulted in) only where it goes. */
static __attribute__((noinline)) size_t queue_redirect(struct kconn *c, bool keep,
                                                       const struct http_request *r,
                                                       bool head_only, const char *target,
                                                       size_t poff, size_t plen)
{
	/* Location: the path as sent, a slash, then any query */
	char loc[HTTP_MAX_TARGET + 32];
	char *o = PUT_LIT(loc, "Location: ");
	o = put(o, target + poff, plen);
	*o++ = '/';
	o = put(o, target + poff + plen, r->target_len - poff - plen);
	o = PUT_LIT(o, "\r\n");
	return queue_error(c, 301, keep, r->minor, head_only, loc, (size_t)(o - loc));
}

static void respond(struct kconn *c, const char *head, const struct http_request *r)
{
	const char *target = head + r->target_off;
	bool keep = r->keep_alive && !atomic_load_explicit(&knot.stopping, memory_order_relaxed);
	bool head_only = r->method == HTTP_M_HEAD;
	int status;
	uint64_t bytes = 0;
	struct cache_entry *e = NULL;
	/* The decoded path is built where this response's header will go
	 * (kconn_build left room for the whole target and more), and is dead
	 * once the cache has answered: a 4 KiB array on the stack would be
	 * one more page touched per thread. */
	char *key = c->hdr + c->hdr_used;
	size_t key_cap = KCONN_HDR - c->hdr_used;
	size_t klen = 0, poff = 0, plen = 0;
	bool dir = false;

	if (r->content_length > KCONN_MAX_BODY) {
		status = 413;
		keep = false;
	} else if (r->method == HTTP_M_OTHER) {
		status = 405;
	} else {
		status = path_decode(target, r->target_len, key, key_cap - 12, &klen, &dir,
		                     &poff, &plen);
		if (status == 0) {
			if (dir) {
				if (klen)
					key[klen++] = '/';
				memcpy(key + klen, "index.html", 11);
				klen += 10;
			}
			status = cache_get(knot.cache, key, klen, &e);
			if (status == 0)
				status = r->has_ims && e->mtime <= r->ims ? 304 : 200;
		}
	}

	if (status == 200 || status == 304) {
		char *h = c->hdr + c->hdr_used, *o = head_start(h, status);
		if (status == 200)
			o = put(o, e->hdr, e->hdr_len);
		else
			o = put(o, e->hdr + e->lm_off, (size_t)(e->hdr_len - e->lm_off));
		o = head_end(o, keep, r->minor);
		add_iov(c, h, (size_t)(o - h));
		c->hdr_used += (uint32_t)(o - h);
		c->held[c->nheld++] = e;
		if (status == 200 && !head_only) {
			bytes = e->size;
			if (e->fd >= 0) {
				c->big = e;
				c->big_off = 0;
				c->big_end = e->size;
			} else if (e->size <= INLINE_BODY &&
			           KCONN_HDR - c->hdr_used >= HDR_RESERVE + e->size) {
				/* small: copied after its header, so the batch stays
				 * one contiguous buffer (one send, no msghdr) */
				memcpy(c->hdr + c->hdr_used, e->body, e->size);
				add_iov(c, c->hdr + c->hdr_used, e->size);
				c->hdr_used += (uint32_t)e->size;
			} else {
				add_iov(c, e->body, e->size);
			}
		}
	} else if (status == CACHE_IS_DIR) {
		status = 301;
		bytes = queue_redirect(c, keep, r, head_only, target, poff, plen);
	} else {
		static const char allow[] = "Allow: GET, HEAD\r\n";
		if (status >= 500 || status == 400)
			keep = false; /* 400: a target that is no path is a bad request line */
		bytes = queue_error(c, status, keep, r->minor, head_only,
		                    status == 405 ? allow : NULL, status == 405 ? sizeof allow - 1 : 0);
	}
	if (!keep)
		c->keep_open = false;
	if (log_enabled)
		log_request(c->peer, head + r->method_off, r->method_len, target, r->target_len,
		            r->minor, status, bytes);
}

int kconn_build(struct kconn *c)
{
	int n = 0;
	while (c->keep_open && !c->big && c->nheld < KCONN_BATCH &&
	       c->iovcnt + 2 <= IOV_MAX_USED && c->start < c->len &&
	       KCONN_HDR - c->hdr_used >= HDR_RESERVE) {
		int r = http_parse(&c->parser, c->buf + c->start, c->len - c->start);
		if (r == 0)
			break;
		if (r < 0) {
			/* the request cannot be framed: answer and close */
			queue_error(c, -r, false, 1, false, NULL, 0);
			c->keep_open = false;
			n++;
			break;
		}
		const struct http_request *q = &c->parser.req;
		if (KCONN_HDR - c->hdr_used < HDR_RESERVE + (size_t)q->target_len)
			break; /* a redirect could not fit: next batch */
		respond(c, c->buf + c->start, q);
		n++;
		c->start += q->head_len;
		uint64_t avail = c->len - c->start;
		if (q->content_length <= avail) {
			c->start += (uint32_t)q->content_length;
		} else {
			c->discard = q->content_length - avail;
			c->start = c->len;
		}
		http_parser_init(&c->parser);
		if (c->start == c->len)
			c->start = c->len = 0;
	}
	if (n)
		c->head_deadline = 0; /* answered: the next head's clock starts afresh */
	return n;
}

void kconn_timeout(struct kconn *c)
{
	queue_error(c, 408, false, 1, false, NULL, 0);
	c->keep_open = false;
}
