/* http_fuzz.c: libFuzzer target for the request parser (http.c) and the
 * path decoder (path.c).  The first input byte seeds how the rest is cut
 * into chunks; the parser must give the same answer fed in chunks as fed
 * at once, never read past what it was given (ASan sees to that: the
 * buffer is an exact-size copy), and describe a request that lies inside
 * its head.  Decoded paths must never hold a ".." segment, a NUL byte or
 * a leading slash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../http.h"
#include "../path.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static int parse_once(const char *buf, size_t len, struct http_parser *p)
{
	http_parser_init(p);
	return http_parse(p, buf, len);
}

static int parse_chunked(const char *buf, size_t len, uint32_t seed, struct http_parser *p)
{
	http_parser_init(p);
	size_t have = 0;
	int r = 0;
	while (have < len) {
		seed = seed * 1103515245u + 12345u;
		size_t step = 1 + (seed >> 16) % 17;
		if ((seed >> 8) % 8 == 0)
			step = 1;
		have = have + step > len ? len : have + step;
		/* an exact-size copy each time: reading beyond `have` is caught */
		char *copy = malloc(have ? have : 1);
		memcpy(copy, buf, have);
		r = http_parse(p, copy, have);
		free(copy);
		if (r != 0)
			break;
	}
	return r;
}

static void check_path(const char *t, size_t n)
{
	char out[PATH_KEY_MAX];
	size_t olen = 0, poff = 0, plen = 0;
	bool dir = false;
	int s = path_decode(t, n, out, sizeof out - 12, &olen, &dir, &poff, &plen);
	CHECK(s == 0 || s == 400 || s == 403 || s == 414);
	if (s)
		return;
	CHECK(olen < sizeof out - 12);
	CHECK(strlen(out) == olen); /* no NUL inside */
	CHECK(poff + plen <= n);
	CHECK(olen == 0 || out[0] != '/');
	CHECK(olen == 0 || out[olen - 1] != '/');
	const char *seg = out;
	for (;;) {
		const char *e = strchr(seg, '/');
		size_t k = e ? (size_t)(e - seg) : strlen(seg);
		CHECK(olen == 0 || k > 0);
		CHECK(!(k == 2 && seg[0] == '.' && seg[1] == '.'));
		CHECK(!(k == 1 && seg[0] == '.'));
		if (!e)
			break;
		seg = e + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint32_t seed = data[0];
	const char *buf = (const char *)data + 1;
	size_t len = size - 1;

	char *exact = malloc(len ? len : 1);
	memcpy(exact, buf, len);
	struct http_parser a, b;
	int ra = parse_once(exact, len, &a);
	int rb = parse_chunked(exact, len, seed, &b);
	CHECK(ra == rb);
	CHECK(ra == 1 || ra == 0 || ra == -400 || ra == -413 || ra == -414 || ra == -431 ||
	      ra == -501 || ra == -505);
	if (ra == 1) {
		const struct http_request *q = &a.req, *w = &b.req;
		CHECK(q->head_len <= len && q->head_len <= HTTP_MAX_HEAD);
		CHECK(q->head_len == w->head_len && q->method == w->method &&
		      q->minor == w->minor && q->keep_alive == w->keep_alive &&
		      q->has_ims == w->has_ims && q->target_off == w->target_off &&
		      q->target_len == w->target_len &&
		      q->content_length == w->content_length);
		CHECK(!q->has_ims || q->ims == w->ims);
		CHECK(q->method_off + q->method_len <= q->head_len);
		CHECK(q->target_len > 0 && q->target_off + q->target_len <= q->head_len);
		CHECK(q->target_len <= HTTP_MAX_TARGET);
		CHECK(q->minor <= 1);
		for (size_t i = 0; i < q->target_len; i++) {
			unsigned char c = (unsigned char)exact[q->target_off + i];
			CHECK(c > ' ' && c != 0x7f);
		}
		/* a complete head ends with an empty line */
		CHECK(exact[q->head_len - 1] == '\n');
		/* the parser is idempotent once done */
		CHECK(http_parse(&a, exact, len) == 1);
		check_path(exact + q->target_off, q->target_len);
	} else if (ra == 0) {
		CHECK(len < HTTP_MAX_HEAD);
	}
	/* the path decoder on the raw bytes too */
	check_path(exact, len < 8192 ? len : 8192);

	/* dates: whatever parses formats back to something that parses to it */
	int64_t t;
	if (http_parse_date(exact, len, &t) && t >= 0 && t < 253402300800LL) {
		char d[30];
		http_format_date(t, d);
		int64_t t2;
		CHECK(http_parse_date(d, 29, &t2));
		CHECK(t2 == t);
	}
	free(exact);
	return 0;
}
