/* log.h: the optional access log (--access-log FILE). */
#ifndef KNOT_LOG_H
#define KNOT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern bool log_enabled;

/* 0, or -1 with errno. */
int log_open(const char *path);
/* Appends one Common Log Format line (buffered). */
void log_request(const char *peer, const char *method, size_t mlen, const char *target,
                 size_t tlen, int minor, int status, uint64_t bytes);
/* Writes out what is buffered. */
void log_flush(void);

#endif
