/* err.h — filling an es_err and returning a status in one expression. */
#ifndef ES_UTIL_ERR_H
#define ES_UTIL_ERR_H

#include "edgespec.h"

/* Formats the message into err (when non-NULL) and returns st, so call sites read
 * `return es_fail(err, ES_ERR_FORMAT, "tensor %s: ...", name);`. The message is one line: control
 * bytes, which only a peer's or a file's text could bring in, are replaced (es_defang). */
es_status es_fail(es_err *err, es_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Formats one log line and hands it to fn (nothing when fn is NULL); the modules with a log
 * callback in their params use this instead of each formatting its own. Control bytes are replaced
 * (es_defang): a client's string cannot forge log lines or drive the operator's terminal. */
void es_logf(es_log_fn fn, void *ud, int level, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Replaces every control byte (below 0x20, and 0x7f) of s with '?', in place: text that came from a
 * peer (a server's ERROR message, a client's name, a request URL) is printed and logged, and an
 * escape sequence in it must not reach a terminal or forge a log line. UTF-8 is kept as it is. */
void es_defang(char *s);

/* Prefixes err->msg with "<prefix>: " (for adding context such as a file name). */
void es_err_prefix(es_err *err, const char *prefix);

/* Overflow-checked arithmetic on sizes: return false on overflow. */
static inline bool es_mul_ok(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool es_add_ok(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_add_overflow(a, b, out); }

#endif
