/* refused.c: when the runtime cannot start (io_uring refused by a seccomp
 * filter, a sysctl or an old kernel), the program runs as it would have
 * without the shim: it is executed again with the shim taken out of
 * LD_PRELOAD, after one line on stderr saying why.  Nothing of the
 * program has run yet but other libraries' constructors. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lt.h"
#include "rtmem.h"

#define SHIM_NAME "libthread-preload.so"
#define GUARD_ENV "CAPRICE_SHIM_REFUSED=1"

extern char **environ;

static bool is_shim(const char *entry, size_t len)
{
	size_t n = strlen(SHIM_NAME);
	return len >= n && memcmp(entry + len - n, SHIM_NAME, n) == 0 &&
	       (len == n || entry[len - n - 1] == '/');
}

/* LD_PRELOAD=... with the shim's entries removed (":" or " " separated). */
static char *strip_preload(const char *value)
{
	size_t cap = strlen("LD_PRELOAD=") + strlen(value) + 1;
	char *out = cp_rt_malloc(cap);
	if (!out)
		return NULL;
	strcpy(out, "LD_PRELOAD=");
	size_t o = strlen(out);
	const char *p = value;
	while (*p) {
		size_t len = strcspn(p, ": ");
		if (len && !is_shim(p, len)) {
			if (out[o - 1] != '=')
				out[o++] = ':';
			memcpy(out + o, p, len);
			o += len;
		}
		p += len;
		if (*p)
			p++;
	}
	out[o] = 0;
	return out;
}

/* argv from /proc/self/cmdline (the constructors run before main has it). */
static char **read_argv(void)
{
	int fd = (int)syscall(SYS_open, "/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t cap = 4096, len = 0;
	char *buf = cp_rt_malloc(cap);
	for (;;) {
		if (!buf)
			break;
		if (len == cap) {
			char *nb = cp_rt_realloc(buf, cap * 2);
			if (!nb) {
				cp_rt_free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
		long n = syscall(SYS_read, fd, buf + len, cap - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	syscall(SYS_close, fd);
	if (!buf || len == 0)
		return NULL;
	size_t argc = 0;
	for (size_t i = 0; i < len; i++)
		argc += buf[i] == 0;
	char **argv = cp_rt_calloc(argc + 1, sizeof *argv);
	if (!argv)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < len && k < argc; i += strlen(buf + i) + 1)
		argv[k++] = buf + i;
	return argv;
}

void lt_runtime_refused(int err)
{
	char **argv = read_argv();
	const char *prog = argv && argv[0] ? argv[0] : "the program";
	if (getenv("CAPRICE_SHIM_REFUSED"))
		cp_die("%s: io_uring refused again (%s) after the shim was taken out", prog,
		       strerror(err));
	cp_warn("io_uring_setup refused (%s): running %s without Caprice, on plain kernel "
	        "threads and system calls", strerror(err), prog);
	size_t n = 0;
	while (environ[n])
		n++;
	char **env = cp_rt_calloc(n + 2, sizeof *env);
	if (argv && env) {
		size_t k = 0;
		for (size_t i = 0; i < n; i++) {
			if (strncmp(environ[i], "LD_PRELOAD=", 11) == 0) {
				char *s = strip_preload(environ[i] + 11);
				if (s)
					env[k++] = s;
			} else {
				env[k++] = environ[i];
			}
		}
		env[k++] = (char *)GUARD_ENV;
		env[k] = NULL;
		syscall(SYS_execve, "/proc/self/exe", argv, env);
	}
	cp_die("%s: cannot run again without the shim: %s", prog, strerror(errno));
}
