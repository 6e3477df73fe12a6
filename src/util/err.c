#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const k_status_names[ES_STATUS_COUNT] = {
    [ES_OK] = "ok",
    [ES_ERR_INVALID_ARG] = "invalid argument",
    [ES_ERR_IO] = "i/o error",
    [ES_ERR_FORMAT] = "malformed input",
    [ES_ERR_UNSUPPORTED] = "unsupported",
    [ES_ERR_NOMEM] = "out of memory",
    [ES_ERR_RANGE] = "out of range",
    [ES_ERR_FULL] = "capacity exhausted",
    [ES_ERR_MISMATCH] = "mismatch",
    [ES_ERR_PROTOCOL] = "protocol error",
    [ES_ERR_BUSY] = "busy",
    [ES_ERR_TIMEOUT] = "timeout",
    [ES_ERR_INTERNAL] = "internal error",
};

const char *es_status_str(es_status st) {
    if ((unsigned)st >= ES_STATUS_COUNT) return "unknown status";
    return k_status_names[st];
}

void es_defang(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

es_status es_fail(es_err *err, es_status st, const char *fmt, ...) {
    if (err) {
        /* formatted aside first: callers add context to the message already there
           (es_fail(err, st, "malformed VERDICT: %s", err->msg)), and vsnprintf's output must not
           overlap its arguments */
        char tmp[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        memcpy(err->msg, tmp, sizeof tmp);
        es_defang(err->msg);
    }
    return st;
}

void es_err_prefix(es_err *err, const char *prefix) {
    if (!err) return;
    char tmp[sizeof err->msg];
    size_t n = strlen(prefix);
    if (n > sizeof tmp - 3) n = sizeof tmp - 3;
    memcpy(tmp, prefix, n);
    tmp[n] = ':';
    tmp[n + 1] = ' ';
    size_t m = strnlen(err->msg, sizeof err->msg);
    if (m > sizeof tmp - n - 3) m = sizeof tmp - n - 3;
    memcpy(tmp + n + 2, err->msg, m);
    tmp[n + 2 + m] = 0;
    memcpy(err->msg, tmp, sizeof tmp);
}

void es_logf(es_log_fn fn, void *ud, int level, const char *fmt, ...) {
    if (!fn) return;
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    es_defang(buf);
    fn(ud, level, buf);
}
