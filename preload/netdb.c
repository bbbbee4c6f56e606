/* netdb.c: name resolution on a helper kernel thread.
 *
 * The C library's resolver reads files, talks to DNS servers and waits in
 * poll, all through internal calls the shim cannot see.  Run on a worker,
 * a slow lookup would stop every user thread queued there; offloaded
 * (libthread/offload.c), only the caller waits.  h_errno is per kernel
 * thread, so the helper's value is carried back to the caller. */
#include <netdb.h>
#include <sys/socket.h>

#include "offload.h"
#include "real.h"

PL_REAL(getaddrinfo, int,
        (const char *, const char *, const struct addrinfo *, struct addrinfo **))
PL_REAL(getnameinfo, int,
        (const struct sockaddr *, socklen_t, char *, socklen_t, char *, socklen_t, int))
PL_REAL(gethostbyname, struct hostent *, (const char *))
PL_REAL(gethostbyname2, struct hostent *, (const char *, int))
PL_REAL(gethostbyaddr, struct hostent *, (const void *, socklen_t, int))
PL_REAL(gethostbyname_r, int,
        (const char *, struct hostent *, char *, size_t, struct hostent **, int *))
PL_REAL(gethostbyname2_r, int,
        (const char *, int, struct hostent *, char *, size_t, struct hostent **, int *))
PL_REAL(gethostbyaddr_r, int,
        (const void *, socklen_t, int, struct hostent *, char *, size_t, struct hostent **,
         int *))

struct gai_args {
	const char *node, *service;
	const struct addrinfo *hints;
	struct addrinfo **res;
};

static long run_getaddrinfo(void *p)
{
	struct gai_args *a = p;
	return PL_CALL(getaddrinfo)(a->node, a->service, a->hints, a->res);
}

CP_EXPORT int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                          struct addrinfo **res)
{
	struct gai_args a = { node, service, hints, res };
	return (int)lt_offload("getaddrinfo", run_getaddrinfo, &a);
}

struct gni_args {
	const struct sockaddr *sa;
	socklen_t salen;
	char *host;
	socklen_t hostlen;
	char *serv;
	socklen_t servlen;
	int flags;
};

static long run_getnameinfo(void *p)
{
	struct gni_args *a = p;
	return PL_CALL(getnameinfo)(a->sa, a->salen, a->host, a->hostlen, a->serv, a->servlen,
	                            a->flags);
}

CP_EXPORT int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host,
                          socklen_t hostlen, char *serv, socklen_t servlen, int flags)
{
	struct gni_args a = { sa, salen, host, hostlen, serv, servlen, flags };
	return (int)lt_offload("getnameinfo", run_getnameinfo, &a);
}

/* the gethostby* family: one argument block for all of them */
enum host_call { BYNAME, BYNAME2, BYADDR, BYNAME_R, BYNAME2_R, BYADDR_R };

struct host_args {
	enum host_call call;
	const char *name;
	const void *addr;
	socklen_t len;
	int af;
	struct hostent *ret;
	char *buf;
	size_t buflen;
	struct hostent **result;
	int *h_errnop;
	struct hostent *out; /* the non-reentrant calls' result */
	int herr;            /* the helper's h_errno */
};

static long run_host(void *p)
{
	struct host_args *a = p;
	long r = 0;
	switch (a->call) {
	case BYNAME:
		a->out = PL_CALL(gethostbyname)(a->name);
		break;
	case BYNAME2:
		a->out = PL_CALL(gethostbyname2)(a->name, a->af);
		break;
	case BYADDR:
		a->out = PL_CALL(gethostbyaddr)(a->addr, a->len, a->af);
		break;
	case BYNAME_R:
		r = PL_CALL(gethostbyname_r)(a->name, a->ret, a->buf, a->buflen, a->result,
		                             a->h_errnop);
		break;
	case BYNAME2_R:
		r = PL_CALL(gethostbyname2_r)(a->name, a->af, a->ret, a->buf, a->buflen, a->result,
		                              a->h_errnop);
		break;
	case BYADDR_R:
		r = PL_CALL(gethostbyaddr_r)(a->addr, a->len, a->af, a->ret, a->buf, a->buflen,
		                             a->result, a->h_errnop);
		break;
	}
	a->herr = h_errno;
	return r;
}

static long host_call(struct host_args *a)
{
	long r = lt_offload("gethostby*", run_host, a);
	h_errno = a->herr;
	return r;
}

CP_EXPORT struct hostent *gethostbyname(const char *name)
{
	struct host_args a = { .call = BYNAME, .name = name };
	host_call(&a);
	return a.out;
}

CP_EXPORT struct hostent *gethostbyname2(const char *name, int af)
{
	struct host_args a = { .call = BYNAME2, .name = name, .af = af };
	host_call(&a);
	return a.out;
}

CP_EXPORT struct hostent *gethostbyaddr(const void *addr, socklen_t len, int type)
{
	struct host_args a = { .call = BYADDR, .addr = addr, .len = len, .af = type };
	host_call(&a);
	return a.out;
}

CP_EXPORT int gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen,
                              struct hostent **result, int *h_errnop)
{
	struct host_args a = { .call = BYNAME_R, .name = name, .ret = ret, .buf = buf,
	                       .buflen = buflen, .result = result, .h_errnop = h_errnop };
	return (int)host_call(&a);
}

CP_EXPORT int gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf,
                               size_t buflen, struct hostent **result, int *h_errnop)
{
	struct host_args a = { .call = BYNAME2_R, .name = name, .af = af, .ret = ret, .buf = buf,
	                       .buflen = buflen, .result = result, .h_errnop = h_errnop };
	return (int)host_call(&a);
}

CP_EXPORT int gethostbyaddr_r(const void *addr, socklen_t len, int type, struct hostent *ret,
                              char *buf, size_t buflen, struct hostent **result, int *h_errnop)
{
	struct host_args a = { .call = BYADDR_R, .addr = addr, .len = len, .af = type, .ret = ret,
	                       .buf = buf, .buflen = buflen, .result = result,
	                       .h_errnop = h_errnop };
	return (int)host_call(&a);
}
