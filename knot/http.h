/* http.h: an incremental HTTP/1.x request-head parser that allocates
 * nothing, so a connection can feed it whatever bytes arrived and learn
 * whether a request is complete, still partial, or an error to answer. */
#ifndef KNOT_HTTP_H
#define KNOT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define HTTP_MAX_HEAD    8192   /* whole head (request line + fields): 431 */
#define HTTP_MAX_TARGET  4096   /* request target: 414 */
#define HTTP_MAX_METHOD  16     /* longer method tokens: 400 */
#define HTTP_MAX_FIELDS  100    /* header fields: 431 */

enum http_method { HTTP_M_GET = 1, HTTP_M_HEAD, HTTP_M_OTHER };

struct http_request {
	uint8_t method;            /* enum http_method */
	uint8_t minor;             /* 0: HTTP/1.0, 1: HTTP/1.1 (and 1.x, x > 1) */
	bool keep_alive;           /* what the client asked for, with defaults */
	bool has_ims;              /* If-Modified-Since present and valid */
	uint16_t method_len;       /* the method starts at method_off */
	uint16_t method_off;
	uint16_t target_off;       /* offsets into the buffer given to http_parse */
	uint16_t target_len;
	uint32_t head_len;         /* bytes of the head, final empty line included */
	int64_t ims;               /* If-Modified-Since, seconds since the epoch */
	uint64_t content_length;   /* body bytes that follow the head */
};

struct http_parser {
	uint32_t pos;              /* next byte to look at */
	uint8_t state;
	uint8_t flags;
	uint16_t fields;
	uint16_t mark;             /* start of the token being read */
	uint16_t name_off, name_len;
	uint16_t value_off, value_end;
	int16_t error;             /* the status once failed */
	struct http_request req;
};

void http_parser_init(struct http_parser *p);

/* buf[0..len) holds the request from its first byte (pipelined requests:
 * pass a pointer to the start of the current one); len only grows between
 * calls.  Returns 1 when the head is complete (p->req describes it),
 * 0 when more bytes are needed, or -status (400, 414, 431, 501, 505) for a
 * request that cannot be answered, after which the connection must close.
 * The result does not depend on how the bytes were split across calls. */
int http_parse(struct http_parser *p, const char *buf, size_t len);

/* An HTTP-date (IMF-fixdate, RFC 850 or asctime form) to seconds since
 * the epoch; false when it is none of them. */
bool http_parse_date(const char *s, size_t n, int64_t *out);
/* Formats t as IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), 29 bytes
 * and a NUL into out[30]. */
void http_format_date(int64_t t, char out[30]);

#endif
