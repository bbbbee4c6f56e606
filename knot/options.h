/* options.h: the command line, identical for the three builds, and the
 * start-up chores they share (limits, signals, listeners, overload). */
#ifndef KNOT_OPTIONS_H
#define KNOT_OPTIONS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct knot_options {
	const char *root;
	const char *bind;        /* default 0.0.0.0 */
	int port;                /* 0: any, printed as "listening on ADDR:PORT" */
	long cache_mb;           /* default 128; 0 disables the cache */
	int threads;             /* 0: auto */
	const char *access_log;
	long max_conns;          /* 0: from RLIMIT_NOFILE */
	int keepalive_s;         /* idle keep-alive timeout, default 15 */
	int header_s;            /* time to send a whole head, default 10 */
	int send_s;              /* a write making no progress, default 30 */
};

/* Parses argv (exits with usage on error; --help prints it and exits 0).
 * `threads_meaning` is the build's line for --help. */
void knot_parse_options(int argc, char **argv, struct knot_options *o,
                        const char *prog, const char *threads_meaning);

struct knot_server {
	struct knot_options opt;
	int rootfd;
	struct cache *cache;
	long max_conns;
	atomic_long active;      /* connections being served */
	atomic_int stopping;
};

extern struct knot_server knot;

/* Common start-up: RLIMIT_NOFILE soft to hard, SIGPIPE ignored,
 * SIGINT/SIGTERM to the self-pipe, the root opened, the cache made, the
 * access log opened.  Exits with a message on failure. */
void knot_setup(void);

/* A listening socket on the configured address.  reuseport: set
 * SO_REUSEPORT (several listeners on one port).  port overrides the
 * option (to bind siblings to the port the first one got).  Exits with a
 * message on failure. */
int knot_listen(bool reuseport, int port);
/* The port fd is bound to; prints "listening on ADDR:PORT" when the
 * configured port was 0. */
int knot_announce(int fd);

/* Housekeeping until SIGINT/SIGTERM: flushes the access log once a
 * second.  Returns when a signal arrived. */
void knot_wait_for_signal(void);

/* The 503 response, sent best-effort on a socket being refused. */
void knot_refuse(int fd);
/* Counts a just-accepted connection in (knot.active).  Past --max-conns
 * it is turned away instead and false is returned. */
bool knot_admit(int fd);
/* An admitted connection that cannot be served after all (no memory, no
 * thread): counted out, answered 503 and closed. */
void knot_turn_away(int fd);
/* accept failed with EMFILE/ENFILE on lfd: frees the reserve descriptor,
 * accepts one pending connection, answers it 503 and closes it, then
 * takes the reserve back. */
void knot_accept_overload(int lfd);

#endif
