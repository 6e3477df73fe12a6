#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "kernels/attn.h"
#include "http/chat.h"

bool cli_parse_long(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return false;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s || *s == '-') return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end) return false;
    *out = (uint64_t)v;
    return true;
}

bool cli_parse_float(const char *s, double lo, double hi, double *out) {
    if (!s || !*s) return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool mul_add(uint64_t *v, uint64_t mul, uint64_t add) {
    uint64_t t;
    if (__builtin_mul_overflow(*v, mul, &t) || __builtin_add_overflow(t, add, &t)) return false;
    *v = t;
    return true;
}

/* "1048576", "512K", "512M", "2G", "2GiB", "512mb": bytes, suffixes in powers of 1024. */
bool cli_parse_size(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
    if (!s || !isdigit((unsigned char)*s)) return false;
    uint64_t v = 0;
    const char *p = s;
    while (isdigit((unsigned char)*p)) {
        if (!mul_add(&v, 10, (uint64_t)(*p - '0'))) return false;
        p++;
    }
    uint64_t mul = 1;
    switch (tolower((unsigned char)*p)) {
    case 'k': mul = 1ull << 10; p++; break;
    case 'm': mul = 1ull << 20; p++; break;
    case 'g': mul = 1ull << 30; p++; break;
    case 't': mul = 1ull << 40; p++; break;
    default: break;
    }
    if (mul > 1 && tolower((unsigned char)*p) == 'i') p++;
    if (tolower((unsigned char)*p) == 'b') p++;
    if (*p) return false;
    if (!mul_add(&v, mul, 0)) return false;
    if (v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_parse_kv_type(const char *s, es_kv_type *out) {
    const int t = es_kv_type_from_name(s);
    if (t < 0) return false;
    *out = (es_kv_type)t;
    return true;
}

int cli_error(const char *cmd, const char *fmt, ...) {
    fprintf(stderr, "edgespec %s: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...) {
    fprintf(stderr, "edgespec %s: ", cmd);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s\n", usage);
    return 2;
}

void cli_progress(void *ud, const char *what, double fraction) {
    (void)ud;
    static int tty = -1;
    if (tty < 0) tty = isatty(2);
    if (!tty) return;
    if (fraction < 0) fraction = 0;
    if (fraction > 1) fraction = 1;
    int w = 30, fill = (int)(fraction * w + 0.5);
    fprintf(stderr, "\r%-24.24s [", what ? what : "");
    for (int i = 0; i < w; i++) fputc(i < fill ? '#' : ' ', stderr);
    fprintf(stderr, "] %3d%%", (int)(fraction * 100 + 0.5));
    if (fraction >= 1) fputc('\n', stderr);
    fflush(stderr);
}

void cli_log(void *ud, int level, const char *msg) {
    (void)ud;
    static const char *names[] = {"error", "warning", "info", "debug"};
    if (level > 2 && !getenv("EDGESPEC_DEBUG")) return;
    if (level < 0) level = 0;
    if (level > 3) level = 3;
    fprintf(stderr, "edgespec: %s: %s\n", names[level], msg);
}

const char *cli_models_dir(void) {
    const char *v = getenv("EDGESPEC_MODELS");
    return v && *v ? v : "../shared/models";
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool cli_chat_template_file(const char *cmd, const char *path, const char **src, int *family) {
    /* one template per process, kept for its lifetime: the servers parse it when they start */
    static char buf[65536]; /* templates are a few KB; a longer file is not a chat template */
    *src = NULL;
    *family = -1;
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error(cmd, "cannot read the chat template %s: %s", path, strerror(errno));
        return false;
    }
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    const bool more = fgetc(f) != EOF;
    fclose(f);
    buf[n] = 0;
    if (more) {
        cli_error(cmd, "%s is larger than %zu bytes: not a chat template", path, sizeof buf - 1);
        return false;
    }
    es_jinja *t = NULL;
    es_err err = {{0}};
    if (es_jinja_parse(buf, n, &t, &err) == ES_OK) {
        es_jinja_free(t);
        *src = buf;
        return true;
    }
    const es_chat_family fam = es_chat_detect(buf);
    if (fam == ES_CHAT_FALLBACK) {
        cli_error(cmd, "%s: %s; and it is not a template of a known family (chatml, llama2, llama3, zephyr: recognised by their "
                       "markers); use --chat-template FAMILY",
                  path, err.msg);
        return false;
    }
    fprintf(stderr, "edgespec %s: warning: %s: %s; using the built-in %s template its markers name\n", cmd, path, err.msg,
            es_chat_family_name(fam));
    *family = (int)fam;
    return true;
}

/* A copy of s[0..len) that is valid UTF-8 without NULs (anything else becomes U+FFFD), for cJSON. */
char *cli_utf8_clean(const char *s, size_t len) {
    char *out = malloc(len * 3 + 1), *o = out;
    if (!out) return NULL;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        unsigned c = p[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = c != 0 && n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++) ok = (p[i + k] & 0xc0) == 0x80;
        if (ok && n > 1) {
            /* reject overlong forms, surrogates and code points past U+10FFFF */
            uint32_t cp = n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
            for (size_t k = 1; k < n; k++) cp = (cp << 6) | (p[i + k] & 0x3f);
            ok = (n == 2 && cp >= 0x80) || (n == 3 && cp >= 0x800 && (cp < 0xd800 || cp > 0xdfff)) ||
                 (n == 4 && cp >= 0x10000 && cp <= 0x10ffff);
        }
        if (ok) {
            memcpy(o, p + i, n);
            o += n;
            i += n;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            i += 1;
        }
    }
    *o = 0;
    return out;
}

es_model_params cli_model_params(void) {
    es_model_params p = es_model_default_params();
    const char *e = getenv("EDGESPEC_REPACK");
    p.no_repack = e && !strcmp(e, "0");
    return p;
}

bool cli_parse_layers(const char *s, int *out, int *n) {
    *n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 1 || v > 100000 || *n >= ES_EXIT_MAX) return false;
        for (int i = 0; i < *n; i++)
            if (out[i] == v) return false;
        int i = (*n)++;
        while (i > 0 && out[i - 1] > v) { out[i] = out[i - 1]; i--; }
        out[i] = (int)v;
        if (*end == ',') end++;
        else if (*end) return false;
        s = end;
    }
    return *n > 0;
}

bool cli_exit_layers_in(const char *path, int *out, int *n) {
    *n = 0;
    es_gguf *g = NULL;
    es_err err;
    if (es_gguf_open(path, &g, &err) != ES_OK) return false;
    for (int64_t t = 0; t < es_gguf_n_tensors(g) && *n < ES_EXIT_MAX; t++) {
        int L, used = 0;
        const char *name = es_gguf_tensor_at(g, t)->name;
        if (sscanf(name, "exit.%d.weight%n", &L, &used) == 1 && used > 0 && name[used] == 0 && L >= 1) {
            int i = (*n)++;
            while (i > 0 && out[i - 1] > L) { out[i] = out[i - 1]; i--; }
            out[i] = L;
        }
    }
    es_gguf_free(g);
    return true;
}
