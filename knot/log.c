/* log.c: the access log, in Common Log Format.  Lines collect in one
 * buffer under a mutex and reach the file in large writes: when the buffer
 * fills, and once a second from the main thread's housekeeping. */
#include "log.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "response.h"

#define LOG_BUF (64 * 1024)
#define LOG_LINE_MAX 600

bool log_enabled;
static int log_fd = -1;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t log_used;
static char log_buf[LOG_BUF];
static int64_t clf_sec = -1;
static char clf_date[32];

int log_open(const char *path)
{
	log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0)
		return -1;
	log_enabled = true;
	return 0;
}

static void flush_locked(void)
{
	size_t off = 0;
	while (off < log_used) {
		ssize_t r = write(log_fd, log_buf + off, log_used - off);
		if (r <= 0)
			break; /* a full disk loses log lines, not service */
		off += (size_t)r;
	}
	log_used = 0;
}

void log_flush(void)
{
	if (!log_enabled)
		return;
	pthread_mutex_lock(&log_lock);
	if (log_used)
		flush_locked();
	pthread_mutex_unlock(&log_lock);
}

/* copies s, escaping what would break the line */
static size_t escaped(char *o, size_t room, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t k = 0;
	for (size_t i = 0; i < n && k + 4 < room; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
			o[k++] = '\\';
			o[k++] = 'x';
			o[k++] = hex[c >> 4];
			o[k++] = hex[c & 15];
		} else {
			o[k++] = (char)c;
		}
	}
	return k;
}

void log_request(const char *peer, const char *method, size_t mlen, const char *target,
                 size_t tlen, int minor, int status, uint64_t bytes)
{
	char line[LOG_LINE_MAX];
	size_t k = (size_t)snprintf(line, sizeof line, "%s - - [", peer[0] ? peer : "-");
	size_t date_at = k;
	k += 26;
	line[k++] = ']';
	line[k++] = ' ';
	line[k++] = '"';
	k += escaped(line + k, 40, method, mlen);
	line[k++] = ' ';
	k += escaped(line + k, sizeof line - k - 64, target, tlen);
	k += (size_t)snprintf(line + k, sizeof line - k, " HTTP/1.%d\" %d %llu\n", minor, status,
	                      (unsigned long long)bytes);
	if (k >= sizeof line)
		k = sizeof line - 1;

	pthread_mutex_lock(&log_lock);
	int64_t now = resp_now();
	if (now != clf_sec) {
		struct tm tm;
		time_t t = (time_t)now;
		gmtime_r(&t, &tm);
		strftime(clf_date, sizeof clf_date, "%d/%b/%Y:%H:%M:%S +0000", &tm);
		clf_sec = now;
	}
	memcpy(line + date_at, clf_date, 26);
	if (log_used + k > LOG_BUF)
		flush_locked();
	memcpy(log_buf + log_used, line, k);
	log_used += k;
	pthread_mutex_unlock(&log_lock);
}
