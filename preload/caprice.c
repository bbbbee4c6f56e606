/* caprice.c: the launcher.  `caprice [options] PROG [ARGS...]` runs PROG
 * with the shim (libthread-preload.so, found next to this program or in
 * the library directory it is installed in) added to LD_PRELOAD.
 *
 * It refuses nothing it can run: a statically linked program, which
 * LD_PRELOAD cannot reach, is run as it is after one line saying so. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHIM "libthread-preload.so"

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: caprice [-w N] [--stats] [--debug] PROG [ARGS...]\n"
	        "Runs PROG with its pthreads as Caprice user threads and its blocking calls\n"
	        "on io_uring (LD_PRELOAD=" SHIM ").\n"
	        "  -w, --workers N   worker kernel threads (CAPRICE_WORKERS; default: CPUs)\n"
	        "  --stats           counters on stderr at exit (CAPRICE_STATS=1)\n"
	        "  --debug           log calls the shim served the plain way (CAPRICE_DEBUG=1)\n");
}

/* The shim: beside this executable (a build tree), or in ../lib*,
 * where `meson install` puts libraries. */
static bool find_shim(char *out, size_t cap)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		return false;
	self[n] = 0;
	char *slash = strrchr(self, '/');
	if (!slash)
		return false;
	*slash = 0;
	static const char *const places[] = {
		"%s/" SHIM,
		"%s/../lib/x86_64-linux-gnu/" SHIM,
		"%s/../lib64/" SHIM,
		"%s/../lib/" SHIM,
	};
	for (size_t i = 0; i < sizeof places / sizeof places[0]; i++) {
		snprintf(out, cap, places[i], self);
		if (access(out, R_OK) == 0)
			return true;
	}
	return false;
}

/* PROG as execvp would find it. */
static bool resolve(const char *prog, char *out, size_t cap)
{
	if (strchr(prog, '/')) {
		snprintf(out, cap, "%s", prog);
		return access(out, X_OK) == 0;
	}
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t len = strcspn(path, ":");
		snprintf(out, cap, "%.*s/%s", (int)len, len ? path : ".", prog);
		if (access(out, X_OK) == 0)
			return true;
		path += len;
		if (*path)
			path++;
	}
	return false;
}

enum kind { DYNAMIC, STATIC, NOT_ELF };

/* Whether the file asks for a dynamic loader (PT_INTERP).  A script's
 * interpreter is what runs, so "#!" counts as dynamic: the shim follows
 * it through LD_PRELOAD, and a static interpreter ignores it harmlessly. */
static enum kind elf_kind(const char *file)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NOT_ELF;
	Elf64_Ehdr eh;
	enum kind k = NOT_ELF;
	if (pread(fd, &eh, sizeof eh, 0) == (ssize_t)sizeof eh &&
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_ident[EI_CLASS] == ELFCLASS64) {
		k = STATIC;
		for (int i = 0; i < eh.e_phnum; i++) {
			Elf64_Phdr ph;
			off_t at = (off_t)eh.e_phoff + (off_t)i * eh.e_phentsize;
			if (pread(fd, &ph, sizeof ph, at) != (ssize_t)sizeof ph)
				break;
			if (ph.p_type == PT_INTERP) {
				k = DYNAMIC;
				break;
			}
		}
	} else if (memcmp(&eh, "#!", 2) == 0) {
		k = DYNAMIC;
	}
	close(fd);
	return k;
}

/* A sanitizer's runtime must stay the first library loaded. */
static bool is_sanitizer_runtime(const char *entry, size_t len)
{
	const char *base = entry;
	for (size_t i = 0; i < len; i++)
		if (entry[i] == '/')
			base = entry + i + 1;
	size_t blen = len - (size_t)(base - entry);
	return (blen >= 7 && memcmp(base, "libasan", 7) == 0) ||
	       (blen >= 8 && memcmp(base, "libclang", 8) == 0);
}

/* The new LD_PRELOAD: sanitizer runtimes already there, the shim, then
 * the rest of what was there. */
static char *preload_list(const char *shim, const char *old)
{
	if (!old)
		old = "";
	char *out = malloc(strlen(shim) + strlen(old) + 2);
	if (!out)
		return NULL;
	size_t o = 0;
	for (int pass = 0; pass < 3; pass++) {
		if (pass == 1) {
			o += (size_t)sprintf(out + o, "%s%s", o ? ":" : "", shim);
			continue;
		}
		for (const char *p = old; *p;) {
			size_t len = strcspn(p, ": ");
			if (len && is_sanitizer_runtime(p, len) == (pass == 0))
				o += (size_t)sprintf(out + o, "%s%.*s", o ? ":" : "", (int)len, p);
			p += len;
			if (*p)
				p++;
		}
	}
	return out;
}

int main(int argc, char **argv)
{
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		} else if ((strcmp(a, "-w") == 0 || strcmp(a, "--workers") == 0) && i + 1 < argc) {
			char *end;
			long n = strtol(argv[++i], &end, 10);
			if (*end || n < 1 || n > 1024) {
				fprintf(stderr, "caprice: --workers wants a number from 1 to 1024, not %s\n",
				        argv[i]);
				return 2;
			}
			setenv("CAPRICE_WORKERS", argv[i], 1);
		} else if (strcmp(a, "--stats") == 0) {
			setenv("CAPRICE_STATS", "1", 1);
		} else if (strcmp(a, "--debug") == 0) {
			setenv("CAPRICE_DEBUG", "1", 1);
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "caprice: unknown option %s\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	const char *prog = argv[i];
	char file[PATH_MAX];
	if (!resolve(prog, file, sizeof file)) {
		fprintf(stderr, "caprice: %s: not found or not executable\n", prog);
		return 127;
	}
	if (elf_kind(file) == STATIC) {
		fprintf(stderr, "caprice: %s is statically linked, so LD_PRELOAD cannot reach it; "
		                "running it without Caprice\n", prog);
	} else {
		char shim[PATH_MAX];
		if (!find_shim(shim, sizeof shim)) {
			fprintf(stderr, "caprice: cannot find " SHIM " next to this launcher; "
			                "running %s without Caprice\n", prog);
		} else {
			char *val = preload_list(shim, getenv("LD_PRELOAD"));
			if (!val)
				return 1;
			setenv("LD_PRELOAD", val, 1);
		}
	}
	execv(file, argv + i);
	fprintf(stderr, "caprice: cannot run %s: %s\n", file, strerror(errno));
	return 126;
}
