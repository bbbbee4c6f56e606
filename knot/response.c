/* response.c: fixed response text.  Everything here is either a constant
 * or a per-kernel-thread cache (the Date string), so building a response
 * costs a few memcpy calls and no allocation. */
#include "response.h"

#include <string.h>
#include <time.h>

#include "http.h"

struct status {
	int code;
	const char *line;
	const char *body;
};

#define ST(c, r) { c, "HTTP/1.1 " #c " " r "\r\n", \
	"<html><head><title>" #c " " r "</title></head><body><h1>" #c " " r "</h1></body></html>\n" }

static const struct status statuses[] = {
	ST(200, "OK"),
	ST(301, "Moved Permanently"),
	ST(304, "Not Modified"),
	ST(400, "Bad Request"),
	ST(403, "Forbidden"),
	ST(404, "Not Found"),
	ST(405, "Method Not Allowed"),
	ST(408, "Request Timeout"),
	ST(413, "Content Too Large"),
	ST(414, "URI Too Long"),
	ST(431, "Request Header Fields Too Large"),
	ST(500, "Internal Server Error"),
	ST(501, "Not Implemented"),
	ST(503, "Service Unavailable"),
	ST(505, "HTTP Version Not Supported"),
};

static const struct status *find(int code)
{
	for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
		if (statuses[i].code == code)
			return &statuses[i];
	return NULL;
}

const char *resp_status_line(int status, size_t *len)
{
	const struct status *s = find(status);
	if (!s)
		s = find(500);
	*len = strlen(s->line);
	return s->line;
}

const char *resp_error_body(int status, size_t *len)
{
	const struct status *s = find(status);
	if (!s)
		s = find(500);
	*len = strlen(s->body);
	return s->body;
}

static const struct { const char *ext, *type; } mimes[] = {
	{ "html", "text/html" }, { "htm", "text/html" }, { "css", "text/css" },
	{ "js", "text/javascript" }, { "mjs", "text/javascript" },
	{ "json", "application/json" }, { "txt", "text/plain" },
	{ "xml", "application/xml" }, { "csv", "text/csv" }, { "md", "text/markdown" },
	{ "png", "image/png" }, { "jpg", "image/jpeg" }, { "jpeg", "image/jpeg" },
	{ "gif", "image/gif" }, { "svg", "image/svg+xml" }, { "ico", "image/x-icon" },
	{ "webp", "image/webp" }, { "avif", "image/avif" }, { "bmp", "image/bmp" },
	{ "pdf", "application/pdf" }, { "zip", "application/zip" },
	{ "gz", "application/gzip" }, { "tar", "application/x-tar" },
	{ "wasm", "application/wasm" }, { "mp4", "video/mp4" }, { "webm", "video/webm" },
	{ "mp3", "audio/mpeg" }, { "ogg", "audio/ogg" }, { "wav", "audio/wav" },
	{ "woff", "font/woff" }, { "woff2", "font/woff2" }, { "ttf", "font/ttf" },
	{ "otf", "font/otf" },
};

const char *resp_mime(const char *name, size_t len)
{
	size_t i = len;
	while (i > 0 && name[i - 1] != '.' && name[i - 1] != '/')
		i--;
	if (i == 0 || name[i - 1] != '.')
		return "application/octet-stream";
	const char *ext = name + i;
	size_t n = len - i;
	for (size_t k = 0; k < sizeof mimes / sizeof mimes[0]; k++) {
		const char *e = mimes[k].ext;
		if (strlen(e) != n)
			continue;
		size_t j = 0;
		while (j < n && (ext[j] | 0x20) == e[j])
			j++;
		if (j == n)
			return mimes[k].type;
	}
	return "application/octet-stream";
}

int64_t resp_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME_COARSE, &ts);
	return ts.tv_sec;
}

/* Per kernel thread.  Under Caprice that is per worker, which is still
 * right: resp_date's callers copy the string before they can block. */
static __thread int64_t date_sec = -1;
static __thread char date_buf[30];

const char *resp_date(void)
{
	int64_t now = resp_now();
	if (now != date_sec) {
		http_format_date(now, date_buf);
		date_sec = now;
	}
	return date_buf;
}
