/* response.h: the bytes of responses — status lines, the cached Date,
 * content types, and the small error bodies. */
#ifndef KNOT_RESPONSE_H
#define KNOT_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

#define RESP_SERVER "knot"

/* "HTTP/1.1 404 Not Found\r\n" and its length; 500's line for an unknown status. */
const char *resp_status_line(int status, size_t *len);

/* The Content-Type for a file name, by extension. */
const char *resp_mime(const char *name, size_t len);

/* Wall-clock seconds (coarse clock: a vDSO read, no syscall). */
int64_t resp_now(void);
/* The current time as IMF-fixdate, 29 bytes, formatted at most once per
 * second per kernel thread. */
const char *resp_date(void);

/* The HTML body of an error response (never NULL) and its length. */
const char *resp_error_body(int status, size_t *len);

#endif
