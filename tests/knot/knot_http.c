/* knot_http.c: the Knot web server from the outside.
 *
 * Built once per server build (knot on Caprice, knot-pthread on NPTL,
 * knot-events on its event loop; KNOT_BIN names the binary).  Every case
 * starts its own server on port 0 over a fresh temporary document root,
 * talks HTTP to it over real loopback sockets, and ends it with SIGTERM,
 * which must make it exit 0.  See khttp.h for the harness. */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "khttp.h"

/* The timeouts the cases set (--keepalive-timeout, --header-timeout,
 * --send-timeout take seconds; the defaults, 15, 10 and 30 s, would make
 * slow cases). */
#define IDLE_S "2"
#define IDLE_MS 2000
#define HEADER_S "2"
#define HEADER_MS 2000
#define SEND_S "2"
#define SEND_MS 2000

static const char *const GET_HELLO = "GET " HELLO_PATH " HTTP/1.1\r\nHost: localhost\r\n\r\n";

/* ------------------------------------------------------------------ */
/* helpers                                                            */

static void expect_hello(const struct kresp *r, const char *what)
{
	k_expect_body(r, HELLO_BODY, strlen(HELLO_BODY), what);
}

/* The connection serves another request correctly. */
static void expect_still_serving(struct kconn *c, const char *after)
{
	struct kresp r;
	char err[256];
	if (!kconn_try_send(c, GET_HELLO, strlen(GET_HELLO)))
		TFAIL("after %s: the connection is gone (send: %s)", after, strerror(errno));
	if (kconn_read(c, &r, false, err, sizeof err) != KR_OK)
		TFAIL("after %s: the kept connection gave no answer: %s", after, err);
	expect_hello(&r, after);
	kresp_free(&r);
}

/* An error response: this status, a small body whose length is declared. */
static void expect_error(const struct kresp *r, int status, const char *what)
{
	if (r->status != status)
		TFAIL("%s: status %d, wanted %d", what, r->status, status);
	if (r->clen < 0)
		TFAIL("%s: %d without Content-Length", what, status);
	if (r->body_len == 0 || r->body_len > 4096)
		TFAIL("%s: %d with a body of %zu bytes, wanted a small one", what, status, r->body_len);
}

/* After an error the server must close: EOF (or a reset) comes. */
static void expect_closed(struct kconn *c, const char *what)
{
	if (!kconn_closed_within(c, 2000 + tc_slack_ms()))
		TFAIL("%s: the server kept the connection open, wanted it closed", what);
}

/* Sends raw bytes on a fresh connection and reads one response. */
static void raw_request(int port, const void *req, size_t len, struct kresp *r, struct kconn *c,
                        const char *what)
{
	kconn_open(c, port);
	kconn_send(c, req, len);
	char err[256];
	if (kconn_read(c, r, false, err, sizeof err) != KR_OK)
		TFAIL("%s: %s", what, err);
}

/* A request that must be answered with `status` (or `alt`, if non-zero),
 * a small body, and then the close of the connection; or, when may_keep
 * (the request was well framed, only its target was bad), either that or
 * a connection that says nothing of closing and goes on serving. */
static void expect_error_then(int port, const char *req, size_t len, int status, int alt,
                              bool may_keep)
{
	struct kconn c;
	struct kresp r;
	char what[200];
	snprintf(what, sizeof what, "request \"%.*s\"", (int)(len < 120 ? len : 120), req);
	for (char *p = what; *p; p++)
		if (*p == '\r' || *p == '\n')
			*p = '|';
	raw_request(port, req, len, &r, &c, what);
	if (alt && r.status == alt)
		expect_error(&r, alt, what);
	else
		expect_error(&r, status, what);
	if (may_keep && !kresp_hdr_has(&r, "Connection", "close"))
		expect_still_serving(&c, what);
	else
		expect_closed(&c, what);
	kresp_free(&r);
	kconn_close(&c);
}

static void expect_error_close(int port, const char *req, size_t len, int status, int alt)
{
	expect_error_then(port, req, len, status, alt, false);
}

static long parse_http_date(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	const char *e = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (!e || *e)
		return -1;
	return (long)timegm(&tm);
}

static pthread_t spawn(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, fn, arg));
	return t;
}

/* ------------------------------------------------------------------ */
/* GET, HEAD and the headers                                          */

KCASE(get_small)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kresp r;
	k_get(s.port, HELLO_PATH, &r);
	expect_hello(&r, "GET " HELLO_PATH);
	CHECK_EQ(r.clen, (long long)strlen(HELLO_BODY));
	CHECK(kresp_hdr_has(&r, "Content-Type", "text/plain"));
	const char *date = kresp_hdr(&r, "Date");
	if (!date)
		TFAIL("no Date header");
	long d = parse_http_date(date);
	if (d < 0)
		TFAIL("Date \"%s\" is not an IMF-fixdate", date);
	long now = (long)time(NULL);
	if (d < now - 60 || d > now + 2)
		TFAIL("Date \"%s\" is %ld s away from now", date, d - now);
	const char *lm = kresp_hdr(&r, "Last-Modified");
	if (!lm || parse_http_date(lm) < 0)
		TFAIL("no valid Last-Modified (%s)", lm ? lm : "missing");
	kresp_free(&r);
	ksrv_stop(&s);
}

KCASE(content_types)
{
	static const struct {
		const char *file, *type, *alt;
	} t[] = {
		{ "/a.html", "text/html", NULL },
		{ "/a.htm", "text/html", NULL },
		{ "/a.txt", "text/plain", NULL },
		{ "/a.css", "text/css", NULL },
		{ "/a.js", "application/javascript", "text/javascript" },
		{ "/a.json", "application/json", NULL },
		{ "/a.png", "image/png", NULL },
		{ "/a.jpg", "image/jpeg", NULL },
		{ "/a.jpeg", "image/jpeg", NULL },
		{ "/a.gif", "image/gif", NULL },
		{ "/a.svg", "image/svg+xml", NULL },
		{ "/a.PNG", "image/png", NULL },
		{ "/a.unknownext", "application/octet-stream", NULL },
		{ "/noext", "application/octet-stream", NULL },
	};
	size_t n = sizeof t / sizeof t[0];
	for (size_t i = 0; i < n; i++)
		k_write(t[i].file, "x", 1);
	struct ksrv s;
	ksrv_start(&s, NULL);
	for (size_t i = 0; i < n; i++) {
		struct kresp r;
		k_get(s.port, t[i].file, &r);
		k_expect_body(&r, "x", 1, t[i].file);
		const char *ct = kresp_hdr(&r, "Content-Type");
		if (!ct)
			TFAIL("%s: no Content-Type", t[i].file);
		size_t tl = strlen(t[i].type);
		bool ok = strncasecmp(ct, t[i].type, tl) == 0 && (ct[tl] == 0 || ct[tl] == ';');
		if (!ok && t[i].alt) {
			tl = strlen(t[i].alt);
			ok = strncasecmp(ct, t[i].alt, tl) == 0 && (ct[tl] == 0 || ct[tl] == ';');
		}
		if (!ok)
			TFAIL("%s: Content-Type \"%s\", wanted %s", t[i].file, ct, t[i].type);
		kresp_free(&r);
	}
	ksrv_stop(&s);
}

KCASE(head)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kconn c;
	struct kresp r;
	kconn_open(&c, s.port);
	/* HEAD then GET in one write: a HEAD answer with body bytes would
	 * corrupt the GET's */
	kconn_sends(&c, "HEAD " HELLO_PATH " HTTP/1.1\r\nHost: localhost\r\n\r\n"
	                "GET /sub/inner.txt HTTP/1.1\r\nHost: localhost\r\n\r\n"
	                "HEAD /no-such-file HTTP/1.1\r\nHost: localhost\r\n\r\n");
	kconn_expect(&c, &r, true);
	CHECK_EQ(r.status, 200);
	CHECK_EQ(r.clen, (long long)strlen(HELLO_BODY));
	CHECK(kresp_hdr_has(&r, "Content-Type", "text/plain"));
	CHECK(kresp_hdr(&r, "Last-Modified") != NULL);
	kresp_free(&r);
	kconn_expect(&c, &r, false);
	k_expect_body(&r, "inner file\n", 11, "GET after HEAD");
	kresp_free(&r);
	kconn_expect(&c, &r, true);
	CHECK_EQ(r.status, 404);
	kresp_free(&r);
	/* nothing may follow: the HEAD 404 had no body either */
	CHECK(kconn_quiet_for(&c, 300));
	expect_still_serving(&c, "HEAD 404");
	kconn_close(&c);
	ksrv_stop(&s);
}

KCASE(last_modified_304)
{
	k_write("/dated.txt", "dated\n", 6);
	k_set_mtime("/dated.txt", 1000000000L);
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kconn c;
	struct kresp r;
	kconn_open(&c, s.port);
	kconn_sends(&c, "GET /dated.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
	kconn_expect(&c, &r, false);
	k_expect_body(&r, "dated\n", 6, "GET /dated.txt");
	const char *lm = kresp_hdr(&r, "Last-Modified");
	CHECK(lm != NULL);
	if (strcmp(lm, "Sun, 09 Sep 2001 01:46:40 GMT") != 0)
		TFAIL("Last-Modified \"%s\", wanted \"Sun, 09 Sep 2001 01:46:40 GMT\"", lm);
	kresp_free(&r);

	static const struct {
		const char *ims;
		int status;
	} t[] = {
		{ "Sun, 09 Sep 2001 01:46:40 GMT", 304 }, /* the same instant */
		{ "Sat, 01 Jan 2022 00:00:00 GMT", 304 }, /* later */
		{ "Sat, 01 Jan 2000 00:00:00 GMT", 200 }, /* earlier */
		{ "Sun, 09 Sep 2001 01:46:39 GMT", 200 }, /* a second earlier */
		{ "not a date", 200 },                    /* invalid: ignored */
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		char req[256];
		snprintf(req, sizeof req,
		         "GET /dated.txt HTTP/1.1\r\nHost: localhost\r\nIf-Modified-Since: %s\r\n\r\n",
		         t[i].ims);
		kconn_sends(&c, req);
		kconn_expect(&c, &r, false);
		if (r.status != t[i].status)
			TFAIL("If-Modified-Since: %s: status %d, wanted %d", t[i].ims, r.status, t[i].status);
		if (t[i].status == 200)
			k_expect_body(&r, "dated\n", 6, t[i].ims);
		kresp_free(&r);
		/* a 304 carries no body: the next answer on the connection
		 * must parse cleanly */
		expect_still_serving(&c, t[i].ims);
	}
	/* HEAD with a matching date: also 304 */
	kconn_sends(&c, "HEAD /dated.txt HTTP/1.1\r\nHost: localhost\r\n"
	                "If-Modified-Since: Sun, 09 Sep 2001 01:46:40 GMT\r\n\r\n");
	kconn_expect(&c, &r, true);
	CHECK_EQ(r.status, 304);
	kresp_free(&r);
	expect_still_serving(&c, "HEAD 304");
	kconn_close(&c);
	ksrv_stop(&s);
}

KCASE(index_html)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kresp r;
	k_get(s.port, "/", &r);
	k_expect_body(&r, "<html>root index</html>\n", 24, "GET /");
	CHECK(kresp_hdr_has(&r, "Content-Type", "text/html"));
	kresp_free(&r);
	k_get(s.port, "/sub/", &r);
	k_expect_body(&r, "<html>sub index</html>\n", 23, "GET /sub/");
	kresp_free(&r);
	k_get(s.port, "/sub/index.html", &r);
	k_expect_body(&r, "<html>sub index</html>\n", 23, "GET /sub/index.html");
	kresp_free(&r);
	/* a directory without its slash: its index, or a redirect to the
	 * slash form */
	k_get(s.port, "/sub", &r);
	if (r.status == 301 || r.status == 302 || r.status == 307 || r.status == 308) {
		const char *loc = kresp_hdr(&r, "Location");
		if (!loc || strlen(loc) < 5 || strcmp(loc + strlen(loc) - 5, "/sub/") != 0)
			TFAIL("GET /sub: redirect to \"%s\", wanted .../sub/", loc ? loc : "(none)");
	} else {
		k_expect_body(&r, "<html>sub index</html>\n", 23, "GET /sub");
	}
	kresp_free(&r);
	/* a directory without index.html: no listing */
	k_get(s.port, "/noindex/", &r);
	if (r.status != 403 && r.status != 404)
		TFAIL("GET /noindex/: status %d, wanted 403 or 404", r.status);
	CHECK(!kresp_body_has(&r, "file.txt"));
	kresp_free(&r);
	k_get(s.port, "/noindex/file.txt", &r);
	k_expect_body(&r, "no index here\n", 14, "GET /noindex/file.txt");
	kresp_free(&r);
	ksrv_stop(&s);
}

KCASE(query_and_escapes)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kresp r;
	k_get(s.port, HELLO_PATH "?x=1&y=/../../secret.txt", &r);
	expect_hello(&r, "GET with a query");
	kresp_free(&r);
	k_get(s.port, "/with%20space.txt", &r);
	k_expect_body(&r, "space\n", 6, "GET /with%20space.txt");
	kresp_free(&r);
	k_get(s.port, "/sub/%69nner.txt", &r);
	k_expect_body(&r, "inner file\n", 11, "GET /sub/%69nner.txt");
	kresp_free(&r);
	k_get(s.port, "http://localhost/sub/inner.txt", &r);
	k_expect_body(&r, "inner file\n", 11, "GET in absolute form");
	kresp_free(&r);
	ksrv_stop(&s);
}

/* ------------------------------------------------------------------ */
/* connections: keep-alive, pipelining, HTTP/1.0                       */

KCASE(keepalive_sequential)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kconn c;
	kconn_open(&c, s.port);
	for (int i = 0; i < 100; i++) {
		struct kresp r;
		if (i % 2) {
			kconn_sends(&c, GET_HELLO);
			kconn_expect(&c, &r, false);
			expect_hello(&r, "keep-alive GET");
		} else {
			kconn_sends(&c, "GET /sub/deeper/leaf.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
			kconn_expect(&c, &r, false);
			k_expect_body(&r, "leaf\n", 5, "keep-alive GET leaf");
		}
		if (kresp_hdr_has(&r, "Connection", "close"))
			TFAIL("request %d: the server closes an HTTP/1.1 keep-alive connection", i);
		kresp_free(&r);
	}
	kconn_close(&c);
	ksrv_stop(&s);
}

static const struct {
	const char *req;
	bool head;
	int status;
	const char *body;
} pipe_reqs[] = {
	{ "GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n", false, 200, HELLO_BODY },
	{ "GET /sub/inner.txt HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n", false, 200, "inner file\n" },
	{ "HEAD /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n", true, 200, NULL },
	{ "GET /missing.txt HTTP/1.1\r\nHost: a\r\n\r\n", false, 404, NULL },
	{ "GET /sub/ HTTP/1.1\r\nHost: a\r\n\r\n", false, 200, "<html>sub index</html>\n" },
	{ "GET /sub/deeper/leaf.txt HTTP/1.1\r\nHost: a\r\nUser-Agent: knot-test\r\n\r\n", false, 200,
	  "leaf\n" },
};
#define NPIPE (sizeof pipe_reqs / sizeof pipe_reqs[0])

static void read_pipe_answers(struct kconn *c, int rounds)
{
	for (int k = 0; k < rounds; k++)
		for (size_t i = 0; i < NPIPE; i++) {
			struct kresp r;
			char err[256];
			if (kconn_read(c, &r, pipe_reqs[i].head, err, sizeof err) != KR_OK)
				TFAIL("pipelined answer %d.%zu: %s", k, i, err);
			if (r.status != pipe_reqs[i].status)
				TFAIL("pipelined answer %d.%zu: status %d, wanted %d", k, i, r.status,
				      pipe_reqs[i].status);
			if (pipe_reqs[i].body)
				k_expect_body(&r, pipe_reqs[i].body, strlen(pipe_reqs[i].body), pipe_reqs[i].req);
			kresp_free(&r);
		}
}

KCASE(pipelining)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kconn c;
	kconn_open(&c, s.port);
	/* all in one write, 50 rounds (~8 KB of requests) */
	size_t cap = 64 * 1024, len = 0;
	char *all = malloc(cap);
	CHECK(all != NULL);
	for (int k = 0; k < 50; k++)
		for (size_t i = 0; i < NPIPE; i++) {
			size_t l = strlen(pipe_reqs[i].req);
			CHECK(len + l < cap);
			memcpy(all + len, pipe_reqs[i].req, l);
			len += l;
		}
	kconn_send(&c, all, len);
	read_pipe_answers(&c, 50);
	CHECK(kconn_quiet_for(&c, 200));
	/* the same, a byte at a time */
	size_t one = 0;
	for (size_t i = 0; i < NPIPE; i++)
		one += strlen(pipe_reqs[i].req);
	for (size_t i = 0; i < one; i++)
		kconn_send(&c, all + i, 1);
	read_pipe_answers(&c, 1);
	/* and a last request asking for the close */
	kconn_sends(&c, "GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n"
	                "GET /hello.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
	struct kresp r;
	kconn_expect(&c, &r, false);
	expect_hello(&r, "pipelined before close");
	kresp_free(&r);
	kconn_expect(&c, &r, false);
	expect_hello(&r, "pipelined Connection: close");
	kresp_free(&r);
	expect_closed(&c, "Connection: close");
	kconn_close(&c);
	free(all);
	ksrv_stop(&s);
}

KCASE(http10)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kconn c;
	struct kresp r;
	/* closes by default */
	kconn_open(&c, s.port);
	kconn_sends(&c, "GET /hello.txt HTTP/1.0\r\n\r\n");
	kconn_expect(&c, &r, false);
	expect_hello(&r, "HTTP/1.0 GET");
	CHECK(!kresp_hdr_has(&r, "Connection", "keep-alive"));
	kresp_free(&r);
	expect_closed(&c, "HTTP/1.0 without keep-alive");
	kconn_close(&c);

	/* keep-alive when asked, for as long as it is asked */
	kconn_open(&c, s.port);
	for (int i = 0; i < 3; i++) {
		kconn_sends(&c, "GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
		kconn_expect(&c, &r, false);
		expect_hello(&r, "HTTP/1.0 keep-alive GET");
		if (!kresp_hdr_has(&r, "Connection", "keep-alive"))
			TFAIL("HTTP/1.0 keep-alive: the answer has no Connection: keep-alive (%s)",
			      kresp_hdr(&r, "Connection") ? kresp_hdr(&r, "Connection") : "none");
		CHECK(r.clen == (long long)strlen(HELLO_BODY));
		kresp_free(&r);
		CHECK(kconn_quiet_for(&c, 100));
	}
	kconn_sends(&c, "HEAD /hello.txt HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
	kconn_expect(&c, &r, true);
	CHECK_EQ(r.status, 200);
	kresp_free(&r);
	kconn_sends(&c, "GET /hello.txt HTTP/1.0\r\n\r\n");
	kconn_expect(&c, &r, false);
	expect_hello(&r, "HTTP/1.0 GET after keep-alive");
	kresp_free(&r);
	expect_closed(&c, "the last HTTP/1.0 request without keep-alive");
	kconn_close(&c);
	ksrv_stop(&s);
}

KCASE(http11_connection_close)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kconn c;
	struct kresp r;
	kconn_open(&c, s.port);
	kconn_sends(&c, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
	kconn_expect(&c, &r, false);
	expect_hello(&r, "Connection: close");
	kresp_free(&r);
	expect_closed(&c, "Connection: close");
	kconn_close(&c);
	ksrv_stop(&s);
}

/* Big files in the middle of a pipelined batch: answers stay in order. */
KCASE(pipelining_big)
{
	char *big = k_write_random("/big.bin", 3u * 1024 * 1024 + 5, 9);
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kconn c;
	kconn_open(&c, s.port);
	for (int round = 0; round < 3; round++) {
		kconn_sends(&c, "GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n"
		                "GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n"
		                "HEAD /big.bin HTTP/1.1\r\nHost: a\r\n\r\n"
		                "GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n"
		                "GET /sub/inner.txt HTTP/1.1\r\nHost: a\r\n\r\n");
		struct kresp r;
		kconn_expect(&c, &r, false);
		expect_hello(&r, "before the big file");
		kresp_free(&r);
		kconn_expect(&c, &r, false);
		k_expect_body(&r, big, 3u * 1024 * 1024 + 5, "the big file, pipelined");
		kresp_free(&r);
		kconn_expect(&c, &r, true);
		CHECK_EQ(r.status, 200);
		CHECK_EQ(r.clen, 3ll * 1024 * 1024 + 5);
		kresp_free(&r);
		kconn_expect(&c, &r, false);
		k_expect_body(&r, big, 3u * 1024 * 1024 + 5, "the big file again, pipelined");
		kresp_free(&r);
		kconn_expect(&c, &r, false);
		k_expect_body(&r, "inner file\n", 11, "after the big files");
		kresp_free(&r);
	}
	kconn_close(&c);
	free(big);
	ksrv_stop(&s);
}

/* A client that sends its requests and then half-closes still gets every
 * answer before the server closes. */
KCASE(half_close)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kconn c;
	kconn_open(&c, s.port);
	kconn_sends(&c, "GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n"
	                "GET /sub/inner.txt HTTP/1.1\r\nHost: a\r\n\r\n"
	                "GET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n");
	CHECK_EQ(shutdown(c.fd, SHUT_WR), 0);
	struct kresp r;
	kconn_expect(&c, &r, false);
	expect_hello(&r, "first answer after a half-close");
	kresp_free(&r);
	kconn_expect(&c, &r, false);
	k_expect_body(&r, "inner file\n", 11, "second answer after a half-close");
	kresp_free(&r);
	kconn_expect(&c, &r, false);
	expect_hello(&r, "third answer after a half-close");
	kresp_free(&r);
	expect_closed(&c, "a half-closed connection, answered");
	kconn_close(&c);
	ksrv_stop(&s);
}

/* Sizes on either side of the limits (8 KiB heads, 4 KiB targets, 100
 * fields), alone and after another request in the same buffer. */
KCASE(limits_boundaries)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kresp r;
	char err[256];
	for (int pipelined = 0; pipelined < 2; pipelined++) {
		static const struct {
			int head, fields, target, status;
		} t[] = {
			{ 7000, 0, 0, 200 },  /* a 7,000-byte head */
			{ 9000, 0, 0, 431 },  /* a 9,000-byte head */
			{ 0, 90, 0, 200 },    /* 90 fields */
			{ 0, 120, 0, 431 },   /* 120 fields */
			{ 0, 0, 4000, 404 },  /* a 4,000-byte target */
			{ 0, 0, 5000, 414 },  /* a 5,000-byte target */
		};
		for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
			char *req = malloc(16384);
			CHECK(req != NULL);
			size_t len = 0;
			if (pipelined)
				len += (size_t)sprintf(req, "%s", GET_HELLO);
			if (t[i].target) {
				/* directories of 100 bytes (a name over 255 bytes can
				 * fairly be refused on its own) */
				len += (size_t)sprintf(req + len, "GET /");
				memset(req + len, 'x', (size_t)t[i].target - 1);
				for (int k = 99; k < t[i].target - 2; k += 100)
					req[len + (size_t)k] = '/';
				len += (size_t)t[i].target - 1;
				len += (size_t)sprintf(req + len, " HTTP/1.1\r\nHost: a\r\n\r\n");
			} else {
				size_t start = len;
				len += (size_t)sprintf(req + len, "GET /hello.txt HTTP/1.1\r\nHost: a\r\n");
				for (int f = 0; f < t[i].fields; f++)
					len += (size_t)sprintf(req + len, "X-F%d: v\r\n", f);
				if (t[i].head) {
					size_t fill = (size_t)t[i].head - (len - start) - 11;
					len += (size_t)sprintf(req + len, "X-Pad: ");
					memset(req + len, 'p', fill);
					len += fill;
					len += (size_t)sprintf(req + len, "\r\n");
				}
				len += (size_t)sprintf(req + len, "\r\n");
				if (t[i].head)
					CHECK_EQ(len - start, (size_t)t[i].head);
			}
			struct kconn c;
			kconn_open(&c, s.port);
			kconn_send(&c, req, len);
			if (pipelined) {
				kconn_expect(&c, &r, false);
				expect_hello(&r, "the request before the one at a limit");
				kresp_free(&r);
			}
			if (kconn_read(&c, &r, false, err, sizeof err) != KR_OK)
				TFAIL("limit case %zu (pipelined %d): %s", i, pipelined, err);
			if (r.status != t[i].status)
				TFAIL("limit case %zu (head %d, %d fields, target %d; pipelined %d): status %d, wanted %d",
				      i, t[i].head, t[i].fields, t[i].target, pipelined, r.status, t[i].status);
			if (t[i].status == 200)
				expect_hello(&r, "a request within the limits");
			kresp_free(&r);
			if (t[i].status >= 414 && t[i].status != 404)
				expect_closed(&c, "a request past a limit");
			else
				expect_still_serving(&c, "a request within the limits");
			kconn_close(&c);
			free(req);
		}
	}
	ksrv_stop(&s);
}

static int count_fds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	CHECK(d != NULL);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

struct churn_arg {
	int port;
	int kind;
};

static void *churn(void *p)
{
	struct churn_arg *a = p;
	for (int i = 0; i < 100; i++) {
		struct kconn c;
		struct kresp r;
		kconn_open(&c, a->port);
		switch ((i + a->kind) % 5) {
		case 0: /* a normal request, Connection: close */
			kconn_sends(&c, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
			kconn_expect(&c, &r, false);
			expect_hello(&r, "churn");
			kresp_free(&r);
			break;
		case 1: /* keep-alive, then the client closes */
			kconn_sends(&c, GET_HELLO);
			kconn_expect(&c, &r, false);
			kresp_free(&r);
			break;
		case 2: /* an error */
			kconn_sends(&c, "BAD\r\n\r\n");
			kconn_expect(&c, &r, false);
			kresp_free(&r);
			break;
		case 3: { /* a reset in the middle of a big file */
			kconn_sends(&c, "GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n");
			char b[512];
			(void)!recv(c.fd, b, sizeof b, MSG_WAITALL);
			struct linger l = { 1, 0 };
			setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
			break;
		}
		default: /* connects, says nothing, leaves */
			break;
		}
		kconn_close(&c);
	}
	return NULL;
}

/* Connections of every kind come and go; the server's descriptors come
 * back to where they were. */
KCASE(no_fd_leak)
{
	char *big = k_write_random("/big.bin", 2u * 1024 * 1024, 4);
	struct ksrv s;
	ksrv_start(&s, NULL);
	/* warm up: the cache opens what it keeps open */
	struct kresp r;
	k_get(s.port, HELLO_PATH, &r);
	kresp_free(&r);
	k_get(s.port, "/big.bin", &r);
	k_expect_body(&r, big, 2u * 1024 * 1024, "GET /big.bin");
	kresp_free(&r);
	usleep(200000);
	int base = count_fds(s.pid);
	CHECK(base >= 4); /* stdio and the listener at least */
	enum { PAR = 5 };
	struct churn_arg a[PAR];
	pthread_t t[PAR];
	for (int i = 0; i < PAR; i++) {
		a[i] = (struct churn_arg){ s.port, i };
		t[i] = spawn(churn, &a[i]);
	}
	for (int i = 0; i < PAR; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	ksrv_check_alive(&s);
	/* the server notices the last ones going within a moment (lingering
	 * closes take up to 2 s) */
	uint64_t until = tc_now_ns() + tc_late_ns(3000);
	int n;
	while ((n = count_fds(s.pid)) > base + 4) {
		if (tc_now_ns() > until)
			TFAIL("the server holds %d descriptors after 500 connections came and went, %d before", n,
			      base);
		usleep(50000);
	}
	free(big);
	ksrv_stop(&s);
}

/* ------------------------------------------------------------------ */
/* errors                                                              */

#define ERR(port, lit, st, alt) expect_error_close(port, lit, sizeof(lit) - 1, st, alt)
#define ERR_KEEP_OK(port, lit, st) expect_error_then(port, lit, sizeof(lit) - 1, st, 0, true)

KCASE(err_400_request_line)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	ERR(s.port, "GARBAGE\r\n\r\n", 400, 0);
	ERR(s.port, "GET\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400, 0);
	/* well framed, a target that is no path */
	ERR_KEEP_OK(s.port, "GET hello.txt HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	ERR_KEEP_OK(s.port, "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400);
	ERR(s.port, "\x01\x02\x03 / HTTP/1.1\r\n\r\n", 400, 0);
	ERR(s.port, "G@T /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n", 400, 501);
	ERR(s.port, "GET /hel lo.txt HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0);
	/* the server must still answer */
	struct kresp r;
	k_get(s.port, HELLO_PATH, &r);
	expect_hello(&r, "GET after 400s");
	kresp_free(&r);
	ksrv_stop(&s);
}

KCASE(err_400_header_line)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\n: empty name\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost : a\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\n Folded: x\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400, 0);
	/* what framing and routing rest on */
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\n\r\n", 400, 0); /* no Host */
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 501, 400);
	struct kresp r;
	k_get(s.port, HELLO_PATH, &r);
	expect_hello(&r, "GET after 400s");
	kresp_free(&r);
	ksrv_stop(&s);
}

KCASE(err_400_version)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	ERR(s.port, "GET /hello.txt HTTP/1.x\r\nHost: a\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/11\r\nHost: a\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTX/1.1\r\nHost: a\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt http/1.1\r\nHost: a\r\n\r\n", 400, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1.1\r\nHost: a\r\n\r\n", 400, 0);
	/* well-formed but not spoken here: 400, or 505 */
	ERR(s.port, "GET /hello.txt HTTP/2.0\r\nHost: a\r\n\r\n", 400, 505);
	ERR(s.port, "GET /hello.txt HTTP/9.9\r\nHost: a\r\n\r\n", 400, 505);
	ksrv_stop(&s);
}

KCASE(err_403)
{
	/* as root, file modes do not bind: the server runs as nobody then */
	k_write("/forbidden.txt", "forbidden\n", 10);
	k_write("/closed/inside.txt", "inside\n", 7);
	char p[4200];
	snprintf(p, sizeof p, "%s/forbidden.txt", k_root);
	CHECK_EQ(chmod(p, 0600), 0);
	snprintf(p, sizeof p, "%s/closed", k_root);
	CHECK_EQ(chmod(p, 0700), 0);
	if (geteuid() != 0) {
		snprintf(p, sizeof p, "%s/forbidden.txt", k_root);
		CHECK_EQ(chmod(p, 0), 0);
		snprintf(p, sizeof p, "%s/closed", k_root);
		CHECK_EQ(chmod(p, 0), 0);
	}
	struct ksrv s;
	ksrv_start_as(&s, NULL, true);
	struct kconn c;
	struct kresp r;
	kconn_open(&c, s.port);
	kconn_sends(&c, "GET /forbidden.txt HTTP/1.1\r\nHost: a\r\n\r\n");
	kconn_expect(&c, &r, false);
	expect_error(&r, 403, "GET /forbidden.txt");
	CHECK(!kresp_body_has(&r, "forbidden\n"));
	kresp_free(&r);
	expect_still_serving(&c, "403");
	kconn_sends(&c, "GET /closed/inside.txt HTTP/1.1\r\nHost: a\r\n\r\n");
	kconn_expect(&c, &r, false);
	if (r.status != 403 && r.status != 404)
		TFAIL("GET /closed/inside.txt: status %d, wanted 403 or 404", r.status);
	kresp_free(&r);
	expect_still_serving(&c, "403 in a closed directory");
	kconn_close(&c);
	ksrv_stop(&s);
}

KCASE(err_404)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kconn c;
	kconn_open(&c, s.port);
	static const char *const miss[] = { "/missing", "/sub/missing.txt", "/nodir/x.txt",
		                            "/hello.txt/", "/hello.txt/x" };
	for (size_t i = 0; i < sizeof miss / sizeof miss[0]; i++) {
		char req[256];
		snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", miss[i]);
		kconn_sends(&c, req);
		struct kresp r;
		kconn_expect(&c, &r, false);
		expect_error(&r, 404, miss[i]);
		kresp_free(&r);
		expect_still_serving(&c, miss[i]);
	}
	kconn_close(&c);
	ksrv_stop(&s);
}

KCASE(err_405)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	static const char *const reqs[] = {
		"POST /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"PUT /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"DELETE /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n",
		"OPTIONS /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n",
		/* a body: read and dropped, or the connection closed; never
		 * parsed as a request */
		"POST /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 22\r\n\r\nGET /nope HTTP/1.1\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
		struct kconn c;
		struct kresp r;
		char what[64];
		snprintf(what, sizeof what, "%.*s", (int)strcspn(reqs[i], "\r"), reqs[i]);
		raw_request(s.port, reqs[i], strlen(reqs[i]), &r, &c, what);
		expect_error(&r, 405, what);
		const char *allow = kresp_hdr(&r, "Allow");
		if (!allow || !strstr(allow, "GET"))
			TFAIL("%s: 405 without an Allow header naming GET", what);
		bool closing = kresp_hdr_has(&r, "Connection", "close");
		kresp_free(&r);
		if (closing)
			expect_closed(&c, what);
		else
			expect_still_serving(&c, what);
		kconn_close(&c);
	}
	ksrv_stop(&s);
}

KCASE(err_408_idle)
{
	struct ksrv s;
	const char *const extra[] = { "--keepalive-timeout", IDLE_S, NULL };
	ksrv_start(&s, extra);
	struct kconn c;
	struct kresp r;
	kconn_open(&c, s.port);
	/* the server's clock starts after it has the request: no earlier
	 * than ours (which a descheduled client would start late) */
	uint64_t t0 = tc_now_ns();
	kconn_sends(&c, GET_HELLO);
	kconn_expect(&c, &r, false);
	expect_hello(&r, "first request");
	kresp_free(&r);
	char err[256];
	int rc = kconn_read(&c, &r, false, err, sizeof err);
	uint64_t el = tc_now_ns() - t0;
	if (rc != KR_OK)
		TFAIL("idle connection: no 408 (%s)", err);
	expect_error(&r, 408, "idle connection");
	kresp_free(&r);
	expect_closed(&c, "408");
	CHECK_MS_RANGE(el, IDLE_MS - 100, IDLE_MS);
	kconn_close(&c);
	ksrv_stop(&s);
}

/* Slow clients, all at once: one that sends a header line now and then
 * but never ends its head (slowloris), one that trickles its request
 * line, one that stops in the middle of a request body.  Each is cut off
 * after --header-timeout (the first two with a 408), and meanwhile
 * everyone else is served. */
KCASE(err_408_slow_clients)
{
	struct ksrv s;
	const char *const extra[] = { "--header-timeout", HEADER_S, NULL };
	ksrv_start(&s, extra);
	enum { LORIS, TRICKLE, BODY, N };
	static const char *const name[N] = { "slowloris", "a trickled request line",
		                             "a stalled request body" };
	struct kconn c[N];
	bool done[N] = { false, false, false };
	uint64_t t0[N], took[N];
	for (int i = 0; i < N; i++)
		kconn_open(&c[i], s.port);
	t0[LORIS] = tc_now_ns();
	kconn_sends(&c[LORIS], "GET /hello.txt HTTP/1.1\r\nHost: a\r\n");
	t0[TRICKLE] = tc_now_ns();
	kconn_sends(&c[TRICKLE], "GET /");
	t0[BODY] = tc_now_ns();
	kconn_sends(&c[BODY], "POST /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789");
	struct kresp r;
	kconn_expect(&c[BODY], &r, false);
	expect_error(&r, 405, "POST with a partial body");
	kresp_free(&r);

	uint64_t limit = tc_now_ns() + tc_late_ns(HEADER_MS + 1000);
	int tick = 0, left = N;
	while (left > 0) {
		if (tc_now_ns() > limit)
			TFAIL("slow clients still connected after %ld ms (+%ld slack): %s%s%s", HEADER_MS + 1000L,
			      tc_slack_ms(), done[LORIS] ? "" : "slowloris ", done[TRICKLE] ? "" : "trickle ",
			      done[BODY] ? "" : "body");
		struct pollfd p[N];
		for (int i = 0; i < N; i++)
			p[i] = (struct pollfd){ done[i] ? -1 : c[i].fd, POLLIN, 0 };
		int n = poll(p, N, 250);
		CHECK(n >= 0);
		for (int i = 0; i < N; i++) {
			if (done[i] || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			took[i] = tc_now_ns() - t0[i];
			char err[256];
			int rc = kconn_read(&c[i], &r, false, err, sizeof err);
			if (rc == KR_ERR && c[i].len == 0 && errno == ECONNRESET)
				rc = KR_EOF;
			if (rc == KR_ERR)
				TFAIL("%s: %s", name[i], err);
			if (rc == KR_EOF && i != BODY)
				TFAIL("%s: closed without a 408 after %.2f s", name[i], took[i] / 1e9);
			if (rc == KR_OK) {
				expect_error(&r, 408, name[i]);
				kresp_free(&r);
				expect_closed(&c[i], name[i]);
			}
			done[i] = true;
			left--;
		}
		/* the slow ones go on */
		char b[64];
		if (!done[LORIS]) {
			snprintf(b, sizeof b, "X-Slow-%d: y\r\n", tick);
			kconn_try_send(&c[LORIS], b, strlen(b));
		}
		if (!done[TRICKLE])
			kconn_try_send(&c[TRICKLE], "a", 1);
		tick++;
		/* and the others are served meanwhile */
		k_get(s.port, HELLO_PATH, &r);
		expect_hello(&r, "GET beside slow clients");
		kresp_free(&r);
	}
	for (int i = 0; i < N; i++) {
		if (took[i] < (uint64_t)(HEADER_MS - 100) * 1000000u || took[i] > tc_late_ns(HEADER_MS + 500))
			TFAIL("%s: cut off after %.2f s, wanted %d ms (+%ld slack)", name[i], took[i] / 1e9,
			      HEADER_MS, tc_slack_ms());
		kconn_close(&c[i]);
	}
	ksrv_stop(&s);
}

KCASE(err_413)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	/* a body declared beyond what the server takes: 413, closed */
	ERR(s.port, "POST /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", 413, 0);
	ERR(s.port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
	    413, 0);
	struct kresp r;
	k_get(s.port, HELLO_PATH, &r);
	expect_hello(&r, "GET after 413");
	kresp_free(&r);
	ksrv_stop(&s);
}

static char *repeated(const char *pre, char ch, size_t n, const char *post)
{
	size_t lp = strlen(pre), lq = strlen(post);
	char *s = malloc(lp + n + lq + 1);
	CHECK(s != NULL);
	memcpy(s, pre, lp);
	memset(s + lp, ch, n);
	memcpy(s + lp + n, post, lq + 1);
	return s;
}

KCASE(err_414)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	char *req = repeated("GET /", 'a', 20000, " HTTP/1.1\r\nHost: a\r\n\r\n");
	expect_error_close(s.port, req, strlen(req), 414, 0);
	free(req);
	/* a request line too long before any target ends (no space yet) */
	req = repeated("GET /", 'b', 200000, "");
	struct kconn c;
	struct kresp r;
	kconn_open(&c, s.port);
	kconn_try_send(&c, req, strlen(req)); /* may be cut short by the close */
	char err[256];
	if (kconn_read(&c, &r, false, err, sizeof err) != KR_OK)
		TFAIL("a 200 KB request line: %s", err);
	if (r.status != 414 && r.status != 413 && r.status != 431 && r.status != 400)
		TFAIL("a 200 KB request line: status %d, wanted 414 (or 413/431/400)", r.status);
	kresp_free(&r);
	kconn_close(&c);
	free(req);
	ksrv_check_alive(&s);
	k_get(s.port, HELLO_PATH, &r);
	expect_hello(&r, "GET after 414");
	kresp_free(&r);
	ksrv_stop(&s);
}

KCASE(err_431)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	/* one huge header */
	char *req = repeated("GET /hello.txt HTTP/1.1\r\nHost: a\r\nX-Big: ", 'h', 100000, "\r\n\r\n");
	struct kconn c;
	struct kresp r;
	char err[256];
	kconn_open(&c, s.port);
	kconn_try_send(&c, req, strlen(req));
	if (kconn_read(&c, &r, false, err, sizeof err) != KR_OK)
		TFAIL("a 100 KB header: %s", err);
	if (r.status != 431 && r.status != 413)
		TFAIL("a 100 KB header: status %d, wanted 431 (or 413)", r.status);
	expect_error(&r, r.status, "a 100 KB header");
	kresp_free(&r);
	expect_closed(&c, "431");
	kconn_close(&c);
	free(req);
	/* many small ones */
	size_t cap = 300000, len = 0;
	req = malloc(cap);
	CHECK(req != NULL);
	len += (size_t)sprintf(req, "GET /hello.txt HTTP/1.1\r\nHost: a\r\n");
	for (int i = 0; len + 40 < cap; i++)
		len += (size_t)sprintf(req + len, "X-Many-%d: v\r\n", i);
	len += (size_t)sprintf(req + len, "\r\n");
	kconn_open(&c, s.port);
	kconn_try_send(&c, req, len);
	if (kconn_read(&c, &r, false, err, sizeof err) != KR_OK)
		TFAIL("20,000 headers: %s", err);
	if (r.status != 431 && r.status != 413)
		TFAIL("20,000 headers: status %d, wanted 431 (or 413)", r.status);
	kresp_free(&r);
	expect_closed(&c, "431 for many headers");
	kconn_close(&c);
	free(req);
	k_get(s.port, HELLO_PATH, &r);
	expect_hello(&r, "GET after 431");
	kresp_free(&r);
	ksrv_stop(&s);
}

KCASE(err_503_overload)
{
	struct ksrv s;
	const char *const extra[] = { "--max-conns", "3", NULL };
	ksrv_start(&s, extra);
	struct kconn held[3], c;
	struct kresp r;
	for (int i = 0; i < 3; i++) {
		kconn_open(&held[i], s.port);
		expect_still_serving(&held[i], "a connection within --max-conns");
	}
	/* one too many: 503, and closed */
	kconn_open(&c, s.port);
	kconn_try_send(&c, GET_HELLO, strlen(GET_HELLO));
	char err[256];
	if (kconn_read(&c, &r, false, err, sizeof err) != KR_OK)
		TFAIL("a connection past --max-conns: no 503 (%s)", err);
	expect_error(&r, 503, "a connection past --max-conns");
	kresp_free(&r);
	expect_closed(&c, "503");
	kconn_close(&c);
	/* the others go on */
	for (int i = 0; i < 3; i++)
		expect_still_serving(&held[i], "a 503 to another client");
	/* one leaves: a newcomer gets in (once the server has seen it go) */
	kconn_close(&held[0]);
	uint64_t until = tc_now_ns() + tc_late_ns(1000);
	for (;;) {
		kconn_open(&c, s.port);
		kconn_try_send(&c, GET_HELLO, strlen(GET_HELLO));
		if (kconn_read(&c, &r, false, err, sizeof err) != KR_OK)
			TFAIL("a newcomer after a client left: %s", err);
		if (r.status == 200)
			break;
		if (r.status != 503)
			TFAIL("a newcomer after a client left: status %d", r.status);
		kresp_free(&r);
		kconn_close(&c);
		if (tc_now_ns() > until)
			TFAIL("still 503 for a newcomer long after a client left");
		usleep(20000);
	}
	expect_hello(&r, "a newcomer after a client left");
	kresp_free(&r);
	kconn_close(&c);
	for (int i = 1; i < 3; i++)
		kconn_close(&held[i]);
	ksrv_stop(&s);
}

/* ------------------------------------------------------------------ */
/* the document root holds                                             */

/* A raw request target that must not reach outside the root: no 2xx,
 * and never the secret in the answer. */
static void no_escape(int port, const char *target, size_t tlen)
{
	char req[1024];
	size_t len = 0;
	memcpy(req, "GET ", 4);
	len = 4;
	memcpy(req + len, target, tlen);
	len += tlen;
	const char *tail = " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
	memcpy(req + len, tail, strlen(tail));
	len += strlen(tail);
	char what[300];
	size_t w = 0;
	for (size_t i = 0; i < tlen && w < sizeof what - 5; i++) {
		if ((unsigned char)target[i] < 0x20)
			w += (size_t)snprintf(what + w, sizeof what - w, "\\x%02x", (unsigned char)target[i]);
		else
			what[w++] = target[i];
	}
	what[w] = 0;
	struct kconn c;
	kconn_open(&c, port);
	kconn_send(&c, req, len);
	struct kresp r;
	char err[256];
	int rc = kconn_read(&c, &r, false, err, sizeof err);
	/* a server may drop such a request without an answer */
	if (rc == KR_ERR && c.len == 0 && errno == ECONNRESET)
		rc = KR_EOF;
	if (rc == KR_ERR)
		TFAIL("GET %s: %s", what, err);
	if (rc == KR_OK) {
		if (kresp_body_has(&r, k_secret) || memmem(r.head, strlen(r.head), k_secret, strlen(k_secret)))
			TFAIL("GET %s: the answer holds a file from outside the root", what);
		/* a refusal, or ".." clamped at the root (its index) */
		bool clamped = r.status == 200 && r.body_len == 24 &&
		               memcmp(r.body, "<html>root index</html>\n", 24) == 0;
		if (!clamped && (r.status < 300 || r.status >= 500))
			TFAIL("GET %s: status %d, wanted a refusal (4xx)", what, r.status);
		kresp_free(&r);
	}
	/* and nothing more on the wire either */
	char b[4096];
	ssize_t n;
	while ((n = recv(c.fd, b, sizeof b, 0)) > 0)
		if (memmem(b, (size_t)n, k_secret, strlen(k_secret)))
			TFAIL("GET %s: the secret followed the answer", what);
	kconn_close(&c);
}

#define NO_ESCAPE(port, lit) no_escape(port, lit, sizeof(lit) - 1)

static void check_serving(struct ksrv *s)
{
	ksrv_check_alive(s);
	struct kresp r;
	k_get(s->port, HELLO_PATH, &r);
	expect_hello(&r, "GET after the escape attempts");
	kresp_free(&r);
}

KCASE(root_dotdot)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	NO_ESCAPE(s.port, "/../secret.txt");
	NO_ESCAPE(s.port, "/../../../../../../../../etc/../" /* deep */ "tmp/../secret.txt");
	NO_ESCAPE(s.port, "/sub/../../secret.txt");
	NO_ESCAPE(s.port, "/sub/deeper/../../../secret.txt");
	NO_ESCAPE(s.port, "/./../secret.txt");
	NO_ESCAPE(s.port, "//../secret.txt");
	NO_ESCAPE(s.port, "/..//secret.txt");
	NO_ESCAPE(s.port, "/sub/./../.././secret.txt");
	NO_ESCAPE(s.port, "/..");
	NO_ESCAPE(s.port, "/../");
	NO_ESCAPE(s.port, "/../rootx/secret");
	NO_ESCAPE(s.port, "/sub/../../rootx/secret");
	NO_ESCAPE(s.port, "../secret.txt");
	NO_ESCAPE(s.port, "..");
	NO_ESCAPE(s.port, "http://localhost/../secret.txt");
	NO_ESCAPE(s.port, "/..;/secret.txt");
	NO_ESCAPE(s.port, "/.../secret.txt");
	NO_ESCAPE(s.port, "/../secret.txt?x=1");
	check_serving(&s);
	ksrv_stop(&s);
}

KCASE(root_percent_encoded)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	NO_ESCAPE(s.port, "/%2e%2e/secret.txt");
	NO_ESCAPE(s.port, "/%2E%2E/secret.txt");
	NO_ESCAPE(s.port, "/%2e%2E/secret.txt");
	NO_ESCAPE(s.port, "/.%2e/secret.txt");
	NO_ESCAPE(s.port, "/%2e./secret.txt");
	NO_ESCAPE(s.port, "/sub/%2e%2e/%2e%2e/secret.txt");
	NO_ESCAPE(s.port, "/%2e%2e%2fsecret.txt");
	NO_ESCAPE(s.port, "/..%2fsecret.txt");
	NO_ESCAPE(s.port, "/%2e%2e%2F%2e%2e%2Fsecret.txt");
	NO_ESCAPE(s.port, "%2f..%2fsecret.txt");
	NO_ESCAPE(s.port, "/%252e%252e/secret.txt");
	NO_ESCAPE(s.port, "/%252e%252e%252fsecret.txt");
	NO_ESCAPE(s.port, "/%25%32%65%25%32%65/secret.txt");
	NO_ESCAPE(s.port, "/%c0%ae%c0%ae/secret.txt");
	NO_ESCAPE(s.port, "/%2e%2e/rootx/secret");
	NO_ESCAPE(s.port, "/%2");
	NO_ESCAPE(s.port, "/%zz/../../secret.txt");
	NO_ESCAPE(s.port, "/%");
	check_serving(&s);
	ksrv_stop(&s);
}

KCASE(root_backslash)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	NO_ESCAPE(s.port, "/..\\secret.txt");
	NO_ESCAPE(s.port, "/sub\\..\\..\\secret.txt");
	NO_ESCAPE(s.port, "\\..\\secret.txt");
	NO_ESCAPE(s.port, "/..%5csecret.txt");
	NO_ESCAPE(s.port, "/..%5Csecret.txt");
	NO_ESCAPE(s.port, "/%2e%2e%5csecret.txt");
	NO_ESCAPE(s.port, "/sub%5c..%5c..%5csecret.txt");
	check_serving(&s);
	ksrv_stop(&s);
}

KCASE(root_symlinks)
{
	char link[4200], target[4200];
	snprintf(link, sizeof link, "%s/link-out", k_root);
	snprintf(target, sizeof target, "%s/secret.txt", k_dir);
	CHECK_EQ(symlink(target, link), 0); /* absolute */
	snprintf(link, sizeof link, "%s/link-rel", k_root);
	CHECK_EQ(symlink("../secret.txt", link), 0);
	snprintf(link, sizeof link, "%s/sub/link-deep", k_root);
	CHECK_EQ(symlink("../../secret.txt", link), 0);
	snprintf(link, sizeof link, "%s/dir-out", k_root);
	CHECK_EQ(symlink("..", link), 0);
	snprintf(link, sizeof link, "%s/dir-x", k_root);
	CHECK_EQ(symlink("../rootx", link), 0);
	snprintf(link, sizeof link, "%s/sub/chain", k_root);
	CHECK_EQ(symlink("../link-rel", link), 0);
	struct ksrv s;
	ksrv_start(&s, NULL);
	NO_ESCAPE(s.port, "/link-out");
	NO_ESCAPE(s.port, "/link-rel");
	NO_ESCAPE(s.port, "/sub/link-deep");
	NO_ESCAPE(s.port, "/dir-out/secret.txt");
	NO_ESCAPE(s.port, "/dir-out/root/../secret.txt");
	NO_ESCAPE(s.port, "/dir-x/secret");
	NO_ESCAPE(s.port, "/sub/chain");
	NO_ESCAPE(s.port, "/dir-out/");
	check_serving(&s);
	ksrv_stop(&s);
}

KCASE(root_nul)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	NO_ESCAPE(s.port, "/hello.txt%00../../secret.txt");
	NO_ESCAPE(s.port, "/../secret.txt%00.html");
	NO_ESCAPE(s.port, "/%00/../secret.txt");
	NO_ESCAPE(s.port, "/%00");
	NO_ESCAPE(s.port, "/hello.txt\0/../../secret.txt");
	NO_ESCAPE(s.port, "/\0../secret.txt");
	/* a NUL cut must not turn into another file either */
	struct kresp r;
	k_get(s.port, "/hello.txt%00.png", &r);
	if (r.status == 200)
		TFAIL("GET /hello.txt%%00.png: 200, wanted a refusal (the NUL must not cut the path)");
	kresp_free(&r);
	check_serving(&s);
	ksrv_stop(&s);
}

/* ------------------------------------------------------------------ */
/* clients that vanish, big files, the cache                          */

#define BIG_SIZE (8u * 1024 * 1024 + 123)

struct vanish_arg {
	int port;
	int mode;
};

static void *vanish_one(void *p)
{
	struct vanish_arg *a = p;
	struct kconn c;
	kconn_open(&c, a->port);
	if (a->mode % 5 == 4) {
		/* many pipelined requests for the big file */
		for (int i = 0; i < 20; i++)
			kconn_try_send(&c, "GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n", 34);
	} else {
		kconn_sends(&c, "GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n");
	}
	char b[1000];
	if (a->mode % 5 != 3) /* mode 3: close before reading anything */
		(void)!recv(c.fd, b, sizeof b, MSG_WAITALL);
	if (a->mode % 5 == 1 || a->mode % 5 == 4) {
		struct linger l = { 1, 0 }; /* RST */
		setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
	} else if (a->mode % 5 == 2) {
		shutdown(c.fd, SHUT_RDWR);
	}
	kconn_close(&c);
	return NULL;
}

KCASE(vanishing_clients)
{
	char *big = k_write_random("/big.bin", BIG_SIZE, 7);
	struct ksrv s;
	ksrv_start(&s, NULL);
	enum { N = 40, PAR = 8 };
	struct vanish_arg args[N];
	for (int i = 0; i < N; i += PAR) {
		pthread_t t[PAR];
		for (int j = 0; j < PAR; j++) {
			args[i + j].port = s.port;
			args[i + j].mode = i + j;
			t[j] = spawn(vanish_one, &args[i + j]);
		}
		for (int j = 0; j < PAR; j++)
			CHECK_OK(pthread_join(t[j], NULL));
	}
	ksrv_check_alive(&s);
	/* the server goes on: a fresh big download is byte-exact */
	struct kresp r;
	k_get(s.port, "/big.bin", &r);
	k_expect_body(&r, big, BIG_SIZE, "GET /big.bin after vanishing clients");
	kresp_free(&r);
	k_get(s.port, HELLO_PATH, &r);
	expect_hello(&r, "GET after vanishing clients");
	kresp_free(&r);
	free(big);
	ksrv_stop(&s);
}

/* The state (/proc/net/tcp numbering, 1 = ESTABLISHED) of the loopback
 * connection from local port lport to remote port rport, 0 if none. */
static int tcp_state(int lport, int rport)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	CHECK(f != NULL);
	char line[512];
	int state = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned la, lp, ra, rp, st;
		if (sscanf(line, " %*d: %x:%x %x:%x %x", &la, &lp, &ra, &rp, &st) != 5)
			continue;
		if ((int)lp == lport && (int)rp == rport) {
			state = (int)st;
			break;
		}
	}
	fclose(f);
	return state;
}

KCASE(stalled_reader)
{
	/* a reader that stops reading is dropped after --send-timeout, and
	 * meanwhile everyone else is served */
	enum { SIZE = 24 * 1024 * 1024 };
	char *big = k_write_random("/huge.bin", SIZE, 5);
	struct ksrv s;
	const char *const extra[] = { "--send-timeout", SEND_S, NULL };
	ksrv_start(&s, extra);
	struct kconn c;
	kconn_open_rcvbuf(&c, s.port, 4096);
	kconn_sends(&c, "GET /huge.bin HTTP/1.1\r\nHost: a\r\n\r\n");
	uint64_t t0 = tc_now_ns();
	while (tc_now_ns() - t0 < (uint64_t)SEND_MS * 1000000u) {
		struct kresp r;
		k_get(s.port, HELLO_PATH, &r);
		expect_hello(&r, "GET beside a stalled reader");
		kresp_free(&r);
		usleep(100000);
	}
	/* the server's side of the connection leaves ESTABLISHED when it
	 * gives up (reading here would let the transfer go on, so look at
	 * /proc/net/tcp instead).  "No progress" is judged per write call,
	 * and the kernel keeps taking a little into the growing send buffer,
	 * so allow several timeouts' worth */
	struct sockaddr_in me;
	socklen_t ml = sizeof me;
	CHECK(getsockname(c.fd, (struct sockaddr *)&me, &ml) == 0);
	uint64_t until = t0 + tc_late_ns(10 * SEND_MS);
	int st;
	while ((st = tcp_state(s.port, ntohs(me.sin_port))) == 1) {
		if (tc_now_ns() > until)
			TFAIL("the server still sends to a reader stalled for %.1f s (--send-timeout %s)",
			      (tc_now_ns() - t0) / 1e9, SEND_S);
		usleep(50000);
	}
	/* now drain: what the server had queued, then the end, well short of
	 * the whole file */
	size_t got = 0;
	char *b = malloc(1 << 20);
	CHECK(b != NULL);
	for (;;) {
		ssize_t n = recv(c.fd, b, 1 << 20, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			TFAIL("the stalled connection stays open (%zu bytes so far, server side in state %d)",
			      got, st);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got >= SIZE)
		TFAIL("the stalled reader got the whole file (%zu bytes): no send timeout", got);
	free(b);
	kconn_close(&c);
	free(big);
	ksrv_stop(&s);
}

struct big_arg {
	int port;
	const char *path;
	const char *data;
	size_t len;
};

static void *fetch_twice(void *p)
{
	struct big_arg *a = p;
	struct kconn c;
	kconn_open(&c, a->port);
	for (int i = 0; i < 2; i++) {
		char req[256];
		snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", a->path);
		kconn_sends(&c, req);
		struct kresp r;
		kconn_expect(&c, &r, false);
		k_expect_body(&r, a->data, a->len, a->path);
		kresp_free(&r);
	}
	kconn_close(&c);
	return NULL;
}

KCASE(big_files)
{
	static const struct {
		const char *path;
		size_t size;
	} f[] = {
		{ "/big.bin", BIG_SIZE },
		{ "/pages.bin", 3u * 1024 * 1024 },
		{ "/odd.bin", 5u * 1024 * 1024 - 1 },
		{ "/one.bin", 1 },
		{ "/empty.bin", 0 },
	};
	enum { NF = sizeof f / sizeof f[0] };
	char *data[NF];
	for (int i = 0; i < NF; i++)
		data[i] = k_write_random(f[i].path, f[i].size, (unsigned)i + 1);
	struct ksrv s;
	ksrv_start(&s, NULL);
	/* one after another on one connection, HEAD included */
	struct kconn c;
	kconn_open(&c, s.port);
	for (int i = 0; i < NF; i++) {
		char req[256];
		snprintf(req, sizeof req, "HEAD %s HTTP/1.1\r\nHost: a\r\n\r\nGET %s HTTP/1.1\r\nHost: a\r\n\r\n",
		         f[i].path, f[i].path);
		kconn_sends(&c, req);
		struct kresp r;
		kconn_expect(&c, &r, true);
		CHECK_EQ(r.status, 200);
		CHECK_EQ(r.clen, (long long)f[i].size);
		kresp_free(&r);
		kconn_expect(&c, &r, false);
		k_expect_body(&r, data[i], f[i].size, f[i].path);
		kresp_free(&r);
	}
	/* a big file's 304 carries no body either */
	kconn_sends(&c, "GET /big.bin HTTP/1.1\r\nHost: a\r\n"
	                "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n");
	struct kresp r;
	kconn_expect(&c, &r, false);
	CHECK_EQ(r.status, 304);
	kresp_free(&r);
	expect_still_serving(&c, "a big file's 304");
	kconn_close(&c);
	/* several at once */
	enum { PAR = 6 };
	struct big_arg a[PAR];
	pthread_t t[PAR];
	for (int j = 0; j < PAR; j++) {
		int i = j % 3;
		a[j] = (struct big_arg){ s.port, f[i].path, data[i], f[i].size };
		t[j] = spawn(fetch_twice, &a[j]);
	}
	for (int j = 0; j < PAR; j++)
		CHECK_OK(pthread_join(t[j], NULL));
	for (int i = 0; i < NF; i++)
		free(data[i]);
	ksrv_stop(&s);
}

struct cache_arg {
	int port;
	int seed;
	int nfiles;
	char **data;
	size_t *sizes;
};

static void *cache_client(void *p)
{
	struct cache_arg *a = p;
	struct kconn c;
	kconn_open(&c, a->port);
	unsigned x = (unsigned)a->seed * 2654435761u + 1;
	for (int k = 0; k < 3 * a->nfiles; k++) {
		x = x * 1103515245u + 12345u;
		int i = (int)((x >> 8) % (unsigned)a->nfiles);
		char path[64], req[128];
		snprintf(path, sizeof path, "/c/f%02d.bin", i);
		snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path);
		kconn_sends(&c, req);
		struct kresp r;
		kconn_expect(&c, &r, false);
		k_expect_body(&r, a->data[i], a->sizes[i], path);
		kresp_free(&r);
	}
	kconn_close(&c);
	return NULL;
}

KCASE(small_cache)
{
	/* 4 MB of files of sizes from 1 byte to 2 MB against a 1 MB cache */
	enum { NF = 30 };
	char *data[NF];
	size_t sizes[NF];
	for (int i = 0; i < NF; i++) {
		sizes[i] = i == 0 ? 1 : i < 10 ? (size_t)i * 1000 + 7 : i < 27 ? (size_t)i * 11000 : (size_t)(i - 25) * 700000;
		char path[64];
		snprintf(path, sizeof path, "/c/f%02d.bin", i);
		data[i] = k_write_random(path, sizes[i], (unsigned)i + 100);
	}
	/* a 1 MB cache, then none at all */
	static const char *const caps[] = { "1", "0" };
	for (int k = 0; k < 2; k++) {
		struct ksrv s;
		const char *const extra[] = { "--cache-mb", caps[k], NULL };
		ksrv_start(&s, extra);
		enum { PAR = 4 };
		struct cache_arg a[PAR];
		pthread_t t[PAR];
		for (int j = 0; j < PAR; j++) {
			a[j] = (struct cache_arg){ s.port, j + 10 * k, NF, data, sizes };
			t[j] = spawn(cache_client, &a[j]);
		}
		for (int j = 0; j < PAR; j++)
			CHECK_OK(pthread_join(t[j], NULL));
		ksrv_stop(&s);
	}
	for (int i = 0; i < NF; i++)
		free(data[i]);
}

/* GET target until the answer satisfies done(), every answer on the way
 * passing ok(); fails if that takes longer than ms (+slack). */
struct change_want {
	const char *target;
	const char *old, *new_; /* bodies */
	size_t old_len, new_len;
	const char *what;
};

static int change_poll(int port, const struct change_want *w, long ms)
{
	uint64_t until = tc_now_ns() + tc_late_ns(ms);
	for (;;) {
		struct kresp r;
		k_get(port, w->target, &r);
		if (kresp_body_has(&r, k_secret))
			TFAIL("%s: the answer holds a file from outside the root", w->what);
		int st = r.status;
		bool is_old = st == 200 && r.body_len == w->old_len && memcmp(r.body, w->old, w->old_len) == 0;
		bool is_new = w->new_ ? st == 200 && r.body_len == w->new_len &&
		                                memcmp(r.body, w->new_, w->new_len) == 0
		                      : st != 200;
		if (!is_old && !is_new)
			TFAIL("%s: status %d with %zu bytes: neither the old file nor the new", w->what, st,
			      r.body_len);
		kresp_free(&r);
		if (is_new)
			return st;
		if (tc_now_ns() > until)
			TFAIL("%s: still the old file after %ld ms (+%ld slack)", w->what, ms, tc_slack_ms());
		usleep(50000);
	}
}

static void replace_file(const char *rel, const void *data, size_t len)
{
	char tmp[200], a[600], b[600];
	snprintf(tmp, sizeof tmp, "%s.new", rel);
	k_write(tmp, data, len);
	snprintf(a, sizeof a, "%s%s", k_root, tmp);
	snprintf(b, sizeof b, "%s%s", k_root, rel);
	CHECK_EQ(rename(a, b), 0);
}

/* Files that change under a running server: new content shows within a
 * couple of seconds (the cache revalidates), whole, never mixed with the
 * old; a removed file becomes 404; a file swapped for a symlink out of
 * the root never serves what the link points to. */
KCASE(file_changes)
{
	enum { BIG = 1 << 20 };
	k_write("/changing.txt", "version one\n", 12);
	char *big1 = k_write_random("/changing.bin", BIG, 11);
	char *big2 = malloc(BIG);
	CHECK(big2 != NULL);
	for (size_t i = 0; i < BIG; i++)
		big2[i] = (char)~big1[i];
	k_write("/swap.txt", "swap\n", 5);
	k_write("/gone.txt", "gone\n", 5);
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kresp r;
	k_get(s.port, "/changing.txt", &r);
	k_expect_body(&r, "version one\n", 12, "the first version");
	kresp_free(&r);
	k_get(s.port, "/changing.bin", &r);
	k_expect_body(&r, big1, BIG, "the first version of the big file");
	kresp_free(&r);
	k_get(s.port, "/swap.txt", &r);
	k_expect_body(&r, "swap\n", 5, "the file to swap");
	kresp_free(&r);
	k_get(s.port, "/gone.txt", &r);
	k_expect_body(&r, "gone\n", 5, "the file to remove");
	kresp_free(&r);

	/* in place (same inode, another size), and by rename (new inode,
	 * same size) */
	k_write("/changing.txt", "version two, longer\n", 20);
	replace_file("/changing.bin", big2, BIG);
	char p[700], t[700];
	snprintf(p, sizeof p, "%s/gone.txt", k_root);
	CHECK_EQ(unlink(p), 0);
	snprintf(p, sizeof p, "%s/swap.txt", k_root);
	snprintf(t, sizeof t, "%s/secret.txt", k_dir);
	CHECK_EQ(unlink(p), 0);
	CHECK_EQ(symlink(t, p), 0);

	struct change_want w1 = { "/changing.txt", "version one\n", "version two, longer\n", 12, 20,
		                  "a file rewritten in place" };
	change_poll(s.port, &w1, 2000);
	struct change_want w2 = { "/changing.bin", big1, big2, BIG, BIG, "a big file replaced by rename" };
	change_poll(s.port, &w2, 2000);
	struct change_want w3 = { "/gone.txt", "gone\n", NULL, 5, 0, "a removed file" };
	CHECK_EQ(change_poll(s.port, &w3, 2000), 404);
	struct change_want w4 = { "/swap.txt", "swap\n", NULL, 5, 0, "a file swapped for a symlink out" };
	int st = change_poll(s.port, &w4, 2000);
	if (st != 403 && st != 404)
		TFAIL("a file swapped for a symlink out of the root: status %d, wanted 403 or 404", st);
	free(big1);
	free(big2);
	ksrv_stop(&s);
}

/* Many keep-alive clients on threads, each a long series of requests. */
struct mixed_arg {
	int port;
	int seed;
};

static void *mixed_client(void *p)
{
	struct mixed_arg *a = p;
	struct kconn c;
	kconn_open(&c, a->port);
	for (int k = 0; k < 40; k++) {
		struct kresp r;
		switch ((k + a->seed) % 4) {
		case 0:
			kconn_sends(&c, GET_HELLO);
			kconn_expect(&c, &r, false);
			expect_hello(&r, "mixed hello");
			break;
		case 1:
			kconn_sends(&c, "GET /sub/ HTTP/1.1\r\nHost: a\r\n\r\n");
			kconn_expect(&c, &r, false);
			k_expect_body(&r, "<html>sub index</html>\n", 23, "mixed /sub/");
			break;
		case 2:
			kconn_sends(&c, "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
			kconn_expect(&c, &r, false);
			CHECK_EQ(r.status, 404);
			break;
		default:
			kconn_sends(&c, "HEAD /sub/inner.txt HTTP/1.1\r\nHost: a\r\n\r\n");
			kconn_expect(&c, &r, true);
			CHECK_EQ(r.status, 200);
			CHECK_EQ(r.clen, 11);
			break;
		}
		kresp_free(&r);
	}
	kconn_close(&c);
	return NULL;
}

KCASE(concurrent_clients)
{
	struct ksrv s;
	ksrv_start(&s, NULL);
	enum { N = 64 };
	struct mixed_arg a[N];
	pthread_t t[N];
	for (int i = 0; i < N; i++) {
		a[i] = (struct mixed_arg){ s.port, i };
		t[i] = spawn(mixed_client, &a[i]);
	}
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	ksrv_stop(&s);
}

/* ------------------------------------------------------------------ */
/* 10,000 keep-alive clients at once                                   */

#define NCLIENTS 10000

struct kc {
	int fd;
	int state;
	unsigned len;
	char buf[1024];
};

enum { KC_CONNECTING, KC_WAIT1, KC_IDLE1, KC_WAIT2, KC_DONE };

/* 1: a complete, right answer; 0: more to come; -1: wrong. */
static int kc_parse(struct kc *k, char *why, size_t wl)
{
	k->buf[k->len] = 0;
	char *end = memmem(k->buf, k->len, "\r\n\r\n", 4);
	if (!end) {
		if (k->len >= sizeof k->buf - 1) {
			snprintf(why, wl, "headers longer than %zu bytes", sizeof k->buf);
			return -1;
		}
		return 0;
	}
	size_t hl = (size_t)(end - k->buf) + 4;
	if (strncmp(k->buf, "HTTP/1.1 200 ", 13) != 0 && strncmp(k->buf, "HTTP/1.0 200 ", 13) != 0) {
		snprintf(why, wl, "status line \"%.40s\"", k->buf);
		return -1;
	}
	*end = 0;
	char *cl = strcasestr(k->buf, "\r\nContent-Length:");
	*end = '\r';
	if (!cl) {
		snprintf(why, wl, "no Content-Length");
		return -1;
	}
	size_t blen = strtoul(cl + 17, NULL, 10);
	if (blen != strlen(HELLO_BODY)) {
		snprintf(why, wl, "Content-Length %zu", blen);
		return -1;
	}
	if (k->len < hl + blen)
		return 0;
	if (k->len > hl + blen) {
		snprintf(why, wl, "%u bytes beyond the answer", k->len - (unsigned)(hl + blen));
		return -1;
	}
	if (memcmp(k->buf + hl, HELLO_BODY, blen) != 0) {
		snprintf(why, wl, "wrong body");
		return -1;
	}
	return 1;
}

KCASE(ten_thousand_clients)
{
	struct rlimit rl;
	CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < NCLIENTS + 100)
		TFAIL("RLIMIT_NOFILE is %lu, this case needs %d", (unsigned long)rl.rlim_cur, NCLIENTS + 100);
	/* the first clients wait idle while the last ones connect: keep the
	 * server's idle timeout (15 s) out of the way on a slow machine */
	struct ksrv s;
	const char *const extra[] = { "--keepalive-timeout", "120", NULL };
	ksrv_start(&s, extra);
	struct kc *k = calloc(NCLIENTS, sizeof *k);
	CHECK(k != NULL);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	CHECK(ep >= 0);
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)s.port);
	const size_t reqlen = strlen(GET_HELLO);

	uint64_t t0 = tc_now_ns();
	uint64_t deadline = t0 + tc_late_ns(60000);
	int opened = 0, done[2] = { 0, 0 };
	enum { WINDOW = 500 };
	struct epoll_event ev[512];
	char why[160];
	uint64_t t1 = 0;
	for (int phase = 0; phase < 2; phase++) {
		if (phase == 1) {
			t1 = tc_now_ns();
			/* every client holds its connection: the second requests */
			for (int i = 0; i < NCLIENTS; i++) {
				if (send(k[i].fd, GET_HELLO, reqlen, MSG_NOSIGNAL) != (ssize_t)reqlen)
					TFAIL("client %d: second send: %s", i, strerror(errno));
				k[i].state = KC_WAIT2;
			}
		}
		while (done[phase] < NCLIENTS) {
			while (phase == 0 && opened < NCLIENTS && opened - done[0] < WINDOW) {
				struct kc *c = &k[opened];
				c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
				if (c->fd < 0)
					TFAIL("client %d: socket: %s", opened, strerror(errno));
				if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS)
					TFAIL("client %d: connect: %s", opened, strerror(errno));
				c->state = KC_CONNECTING;
				struct epoll_event e = { .events = EPOLLOUT, .data.u32 = (uint32_t)opened };
				CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e), 0);
				opened++;
			}
			if (tc_now_ns() > deadline)
				TFAIL("after %.1f s: %d clients connected, %d first answers, %d second answers",
				      (tc_now_ns() - t0) / 1e9, opened, done[0], done[1]);
			int n = epoll_wait(ep, ev, 512, 1000);
			if (n < 0 && errno == EINTR)
				continue;
			CHECK(n >= 0);
			for (int j = 0; j < n; j++) {
				int i = (int)ev[j].data.u32;
				struct kc *c = &k[i];
				if (c->state == KC_CONNECTING) {
					int err = 0;
					socklen_t el = sizeof err;
					getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
					if (err)
						TFAIL("client %d (of %d opened): connect: %s", i, opened, strerror(err));
					if (send(c->fd, GET_HELLO, reqlen, MSG_NOSIGNAL) != (ssize_t)reqlen)
						TFAIL("client %d: send: %s", i, strerror(errno));
					struct epoll_event e = { .events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i };
					CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e), 0);
					c->state = KC_WAIT1;
					continue;
				}
				for (;;) {
					ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len, 0);
					if (r < 0 && errno == EAGAIN)
						break;
					if (r <= 0)
						TFAIL("client %d (state %d, %d/%d answered): %s after %u bytes", i,
						      c->state, done[0], done[1], r == 0 ? "EOF" : strerror(errno), c->len);
					if (c->state != KC_WAIT1 && c->state != KC_WAIT2)
						TFAIL("client %d: %zd unasked bytes in state %d: \"%.60s\"", i, r,
						      c->state, c->buf + c->len);
					c->len += (unsigned)r;
					int p = kc_parse(c, why, sizeof why);
					if (p < 0)
						TFAIL("client %d, answer %d: %s", i, c->state == KC_WAIT1 ? 1 : 2, why);
					if (p > 0) {
						c->len = 0;
						if (c->state == KC_WAIT1) {
							c->state = KC_IDLE1;
							done[0]++;
						} else {
							c->state = KC_DONE;
							done[1]++;
						}
					}
					if (c->len == sizeof c->buf - 1)
						break;
				}
			}
		}
	}
	uint64_t t2 = tc_now_ns();
	fprintf(stderr, "10,000 clients: connected and answered in %.2f s, second answers in %.2f s\n",
	        (t1 - t0) / 1e9, (t2 - t1) / 1e9);
	CHECK_MS_RANGE(t2 - t0, 0, 60000);
	ksrv_check_alive(&s);
	for (int i = 0; i < NCLIENTS; i++)
		close(k[i].fd);
	close(ep);
	free(k);
	struct kresp r;
	k_get(s.port, HELLO_PATH, &r);
	expect_hello(&r, "GET after 10,000 clients left");
	kresp_free(&r);
	ksrv_stop(&s);
}

/* ------------------------------------------------------------------ */
/* shutdown, options                                                   */

static void shutdown_with(int sig)
{
	char *big = k_write_random("/big.bin", BIG_SIZE, 3);
	struct ksrv s;
	ksrv_start(&s, NULL);
	enum { IDLE = 10, PARTIAL = 5, STALLED = 3, SILENT = 5 };
	struct kconn idle[IDLE], partial[PARTIAL], stalled[STALLED], silent[SILENT];
	for (int i = 0; i < IDLE; i++) {
		kconn_open(&idle[i], s.port);
		kconn_sends(&idle[i], GET_HELLO);
		struct kresp r;
		kconn_expect(&idle[i], &r, false);
		expect_hello(&r, "before shutdown");
		kresp_free(&r);
	}
	for (int i = 0; i < PARTIAL; i++) {
		kconn_open(&partial[i], s.port);
		kconn_sends(&partial[i], "GET /hello.txt HTTP/1.1\r\nHost: a\r\n");
	}
	for (int i = 0; i < STALLED; i++) {
		/* the server is stuck writing: nobody reads */
		kconn_open(&stalled[i], s.port);
		kconn_sends(&stalled[i], "GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n");
	}
	for (int i = 0; i < SILENT; i++)
		kconn_open(&silent[i], s.port);
	usleep(300000);
	ksrv_check_alive(&s);
	uint64_t t0 = tc_now_ns();
	int st = ksrv_signal_wait(&s, sig, 3000);
	uint64_t el = tc_now_ns() - t0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		TFAIL("on signal %d with clients connected the server ended with wait status 0x%x, wanted exit 0",
		      sig, st);
	CHECK_MS_RANGE(el, 0, 3000);
	/* every client sees its connection end */
	for (int i = 0; i < IDLE; i++) {
		CHECK(kconn_closed_within(&idle[i], 1000));
		kconn_close(&idle[i]);
	}
	for (int i = 0; i < PARTIAL; i++)
		kconn_close(&partial[i]);
	for (int i = 0; i < STALLED; i++)
		kconn_close(&stalled[i]);
	for (int i = 0; i < SILENT; i++)
		kconn_close(&silent[i]);
	free(big);
}

KCASE(shutdown_sigterm)
{
	shutdown_with(SIGTERM);
}

KCASE(shutdown_sigint)
{
	shutdown_with(SIGINT);
}

/* Many idle keep-alive clients when SIGTERM comes: still a clean exit
 * within a few seconds. */
KCASE(shutdown_many_idle)
{
	enum { N = 2000 };
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kconn *c = calloc(N, sizeof *c);
	CHECK(c != NULL);
	for (int i = 0; i < N; i++) {
		kconn_open(&c[i], s.port);
		/* everything pipelined at once: answers read below */
		kconn_sends(&c[i], GET_HELLO);
	}
	for (int i = 0; i < N; i++) {
		struct kresp r;
		kconn_expect(&c[i], &r, false);
		expect_hello(&r, "an idle client's first request");
		kresp_free(&r);
	}
	ksrv_check_alive(&s);
	int st = ksrv_signal_wait(&s, SIGTERM, 3000);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		TFAIL("on SIGTERM with %d idle clients the server ended with wait status 0x%x, wanted exit 0",
		      N, st);
	for (int i = 0; i < N; i++)
		kconn_close(&c[i]);
	free(c);
}

/* Things in the root that are not regular files or directories. */
KCASE(special_files)
{
	char p[600];
	snprintf(p, sizeof p, "%s/fifo", k_root);
	CHECK_EQ(mkfifo(p, 0644), 0);
	snprintf(p, sizeof p, "%s/dir.html", k_root);
	CHECK_EQ(mkdir(p, 0755), 0);
	struct ksrv s;
	ksrv_start(&s, NULL);
	struct kresp r;
	/* a FIFO nobody writes to must not hang the answer */
	uint64_t t0 = tc_now_ns();
	k_get(s.port, "/fifo", &r);
	if (r.status != 403 && r.status != 404)
		TFAIL("GET /fifo: status %d, wanted 403 or 404", r.status);
	kresp_free(&r);
	CHECK_MS_RANGE(tc_now_ns() - t0, 0, 1000);
	/* a directory with a file's name, and no index */
	k_get(s.port, "/dir.html/", &r);
	CHECK_EQ(r.status, 404);
	kresp_free(&r);
	check_serving(&s);
	ksrv_stop(&s);
}

KCASE(threads_option)
{
	static const char *const counts[] = { "1", "2", "auto" };
	for (size_t i = 0; i < 3; i++) {
		const char *const extra[] = { "--threads", counts[i], NULL };
		struct ksrv s;
		ksrv_start(&s, extra);
		enum { N = 16 };
		struct mixed_arg a[N];
		pthread_t t[N];
		for (int j = 0; j < N; j++) {
			a[j] = (struct mixed_arg){ s.port, j };
			t[j] = spawn(mixed_client, &a[j]);
		}
		for (int j = 0; j < N; j++)
			CHECK_OK(pthread_join(t[j], NULL));
		ksrv_stop(&s);
	}
}

KCASE(access_log)
{
	char log[4200];
	snprintf(log, sizeof log, "%s/access.log", k_dir);
	const char *const extra[] = { "--access-log", log, NULL };
	struct ksrv s;
	ksrv_start(&s, extra);
	struct kresp r;
	k_get(s.port, HELLO_PATH, &r);
	expect_hello(&r, "logged GET");
	kresp_free(&r);
	k_get(s.port, "/logged-missing", &r);
	CHECK_EQ(r.status, 404);
	kresp_free(&r);
	ksrv_stop(&s);
	FILE *f = fopen(log, "r");
	if (!f)
		TFAIL("no access log at %s: %s", log, strerror(errno));
	char line[2048];
	bool hello = false, missing = false;
	int lines = 0;
	while (fgets(line, sizeof line, f)) {
		lines++;
		if (strstr(line, HELLO_PATH) && strstr(line, " 200"))
			hello = true;
		if (strstr(line, "/logged-missing") && strstr(line, " 404"))
			missing = true;
	}
	fclose(f);
	if (!hello || !missing)
		TFAIL("the access log (%d lines) lacks the GET %s (200: %d) or the 404 (%d)", lines,
		      HELLO_PATH, hello, missing);
}
