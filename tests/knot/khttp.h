/* khttp.h: what the Knot tests share: one server started per case as a
 * child process, a temporary document root, and a small HTTP/1.1 client
 * over blocking sockets.
 *
 * Each case runs under a supervisor (kcase_begin forks: the parent waits
 * for the case, reaps every process left behind and removes the temporary
 * directory), and each server is started with PR_SET_PDEATHSIG, so a case
 * that fails half-way (CHECK ends it with _exit) never leaves a server
 * running.  The test programs are plain NPTL programs: only the servers
 * they start may run on Caprice. */
#ifndef KNOT_KHTTP_H
#define KNOT_KHTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "tcase.h"

/* A case: TCASE plus the supervisor and the standard document tree. */
#define KCASE(name)                                                         \
	static void kbody_##name(void);                                     \
	TCASE(name)                                                         \
	{                                                                   \
		kcase_begin();                                              \
		kbody_##name();                                             \
	}                                                                   \
	static void kbody_##name(void)

/* Forks the supervisor, raises RLIMIT_NOFILE, ignores SIGPIPE, builds the
 * temporary directory:  DIR/root (the document root, with the standard
 * files below), DIR/secret.txt and DIR/rootx/secret (outside the root). */
void kcase_begin(void);

extern char k_dir[256];  /* the temporary directory */
extern char k_root[300]; /* DIR/root */
extern char k_secret[]; /* the secret files' content, random per case */

/* The standard tree's small text file. */
#define HELLO_PATH "/hello.txt"
#define HELLO_BODY "Hello, Knot!\n"

/* Writes a file under the root (path relative to it, parents created). */
void k_write(const char *rel, const void *data, size_t len);
/* A file of `size` pseudo-random bytes (seeded), returned malloc'd. */
char *k_write_random(const char *rel, size_t size, unsigned seed);
/* Sets a file's mtime (seconds since the epoch). */
void k_set_mtime(const char *rel, long t);
/* Times out after this many ms for any one read or write (CI-friendly). */
long k_io_timeout_ms(void);

/* ---- the server ---- */
struct ksrv {
	pid_t pid;
	int port;
	int reaped; /* waitpid done; status in `status` */
	int status;
};

/* Starts KNOT_BIN --root k_root --port 0 --bind 127.0.0.1 plus `extra`
 * (NULL-terminated, may be NULL), waits for its "listening on" line. */
void ksrv_start(struct ksrv *s, const char *const *extra);
/* As ksrv_start, the server running as user nobody when we are root. */
void ksrv_start_as(struct ksrv *s, const char *const *extra, bool as_nobody);
/* Fails the case if the server has died. */
void ksrv_check_alive(struct ksrv *s);
/* Sends sig, waits up to ms (plus slack) for the exit; returns the wait
 * status, or fails the case when the server does not exit in time. */
int ksrv_signal_wait(struct ksrv *s, int sig, long ms);
/* The normal end of a case: the server must still be alive, and must
 * exit 0 on SIGTERM. */
void ksrv_stop(struct ksrv *s);

/* ---- the client ---- */
struct kconn {
	int fd;
	char *buf;
	size_t len, cap;
};

#define K_MAX_HDRS 64
struct kresp {
	int status;
	int minor; /* HTTP/1.minor */
	char *head; /* the header block, split in place */
	int nhdr;
	struct {
		char *name, *value;
	} hdr[K_MAX_HDRS];
	char *body;
	size_t body_len;
	long long clen; /* Content-Length, or -1 */
	bool until_eof; /* the body ran to EOF (no length) */
};

void kconn_open(struct kconn *c, int port);
/* With SO_RCVBUF set before connecting (0: the default). */
void kconn_open_rcvbuf(struct kconn *c, int port, int rcvbuf);
void kconn_close(struct kconn *c);
/* Sends everything or fails the case. */
void kconn_send(struct kconn *c, const void *data, size_t len);
void kconn_sends(struct kconn *c, const char *s);
/* Sends, returning false instead of failing (the peer may be gone). */
bool kconn_try_send(struct kconn *c, const void *data, size_t len);

enum { KR_OK = 0, KR_EOF = 1, KR_ERR = 2 };
/* Reads one response (no body for HEAD, 304, 204, 1xx).  KR_EOF: the
 * connection ended cleanly before its first byte; KR_ERR: timeout, reset,
 * truncation or a malformed response (described in `err`). */
int kconn_read(struct kconn *c, struct kresp *r, bool head, char *err, size_t errlen);
/* Reads one response or fails the case. */
void kconn_expect(struct kconn *c, struct kresp *r, bool head);
/* True if the server closes the connection (EOF or reset) within ms with
 * no further data; false if it sends data or stays open. */
bool kconn_closed_within(struct kconn *c, long ms);
/* True if nothing arrives and the connection stays open for ms. */
bool kconn_quiet_for(struct kconn *c, long ms);

void kresp_free(struct kresp *r);
/* A header's value (case-insensitive name), or NULL. */
const char *kresp_hdr(const struct kresp *r, const char *name);
/* True if the header's value contains token (case-insensitive). */
bool kresp_hdr_has(const struct kresp *r, const char *name, const char *token);
/* True if the body contains the string. */
bool kresp_body_has(const struct kresp *r, const char *s);

/* One GET (or HEAD) on a fresh connection with Connection: close. */
void k_get(int port, const char *target, struct kresp *r);
/* The response must be 200 with exactly this body. */
void k_expect_body(const struct kresp *r, const void *body, size_t len, const char *what);

#endif
