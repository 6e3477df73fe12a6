#include "testutil.h"

#include "gguf/gguf.h"
#include "kernels/types.h"

#ifndef ES_CORE_ONLY
#include <cjson/cJSON.h>
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int es_test_failures = 0;
int es_test_checks = 0;

int es_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, es_test_checks - es_test_failures, es_test_failures);
    return es_test_failures ? 1 : 0;
}

const char *es_test_errmsg(const void *err) { return err ? ((const es_err *)err)->msg : ""; }

static const char *env_or(const char *var, const char *dflt) {
    const char *v = getenv(var);
    return v && *v ? v : dflt;
}

#define SLOTS 16
static char g_paths[SLOTS][4096];
static int g_slot;

static const char *join(const char *dir, const char *file) {
    char *p = g_paths[g_slot++ % SLOTS];
    if (snprintf(p, 4096, "%s/%s", dir, file) >= 4096) fprintf(stderr, "testutil: path too long: %s/%s\n", dir, file);
    return p;
}

/* The environment ctest sets (CMakeLists.txt ES_TEST_ENV) says where things are; without it (a test run
 * by hand) the same folders, compiled in, so the test works from any working directory. */
const char *es_test_shared_model(const char *file) { return join(env_or("EDGESPEC_MODELS", ES_TEST_SHARED_MODELS_DIR), file); }
const char *es_test_model(const char *file) { return join(env_or("ES_TEST_MODELS", ES_TEST_MODELS_DIR), file); }
const char *es_test_shared(const char *rel) { return join(env_or("ES_SHARED", ES_TEST_SHARED_DIR), rel); }

const char *es_test_tmp(const char *file) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tmp", env_or("ES_BUILD", ES_TEST_BUILD_DIR));
    mkdir(dir, 0755);
    return join(dir, file);
}

char *es_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long n = ftell(f);
    if (n < 0) { fclose(f); return NULL; }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) { buf[n] = 0; if (len) *len = (size_t)n; }
    return buf;
}

es_model *es_test_load_model(const char *file) {
    es_err err = {{0}};
    es_model *m = NULL;
    es_model_params mp = es_model_default_params();
    es_status st = es_model_load(es_test_model(file), &mp, &m, &err);
    CHECK_MSG(st == ES_OK, "loading %s: %s", file, err.msg);
    return m;
}

#ifndef ES_CORE_ONLY
int es_test_json_ints(const cJSON *arr, int32_t *out, int cap) {
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) if (n < cap) out[n++] = (int32_t)it->valuedouble;
    return n;
}
#endif

/* ---- the golden file's lines, without a JSON library (enough JSON for that one file) ---- */

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    return p;
}

/* The value after "key": in a flat object (the key quoted, then a colon); NULL if absent. */
static const char *golden_value(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(line, pat);
    if (!p) return NULL;
    p = skip_ws(p + strlen(pat));
    return *p == ':' ? skip_ws(p + 1) : NULL;
}

/* A JSON array of integers into out[0..cap); -1 if malformed or longer than cap. */
static int golden_ints(const char *p, int32_t *out, int cap) {
    if (!p || *p != '[') return -1;
    p = skip_ws(p + 1);
    int n = 0;
    if (*p == ']') return 0;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || n >= cap || v < INT32_MIN || v > INT32_MAX) return -1;
        out[n++] = (int32_t)v;
        p = skip_ws(end);
        if (*p == ']') return n;
        if (*p != ',') return -1;
        p = skip_ws(p + 1);
    }
}

/* A JSON string (escapes decoded, \uXXXX of the Basic Multilingual Plane as UTF-8) into out[cap]. */
static bool golden_string(const char *p, char *out, size_t cap) {
    if (!p || *p != '"') return false;
    size_t n = 0;
    for (p++; *p != '"'; p++) {
        unsigned c = (unsigned char)*p;
        bool raw = true; /* a byte of the text itself (UTF-8 already), copied as it is */
        if (c == 0) return false;
        if (c == '\\') {
            raw = false;
            p++;
            switch (*p) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case '"': case '\\': case '/': c = (unsigned char)*p; break;
            case 'u': {
                char hex[5] = {0};
                for (int i = 0; i < 4; i++) if (!(hex[i] = p[1 + i])) return false;
                char *end;
                c = (unsigned)strtoul(hex, &end, 16);
                if (end != hex + 4 || (c >= 0xd800 && c < 0xe000)) return false;
                p += 4;
                break;
            }
            default: return false;
            }
        }
        unsigned char buf[3];
        int len = 1;
        if (c < 0x80 || raw) buf[0] = (unsigned char)c;
        else if (c < 0x800) { buf[0] = (unsigned char)(0xc0 | c >> 6); buf[1] = (unsigned char)(0x80 | (c & 0x3f)); len = 2; }
        else { buf[0] = (unsigned char)(0xe0 | c >> 12); buf[1] = (unsigned char)(0x80 | (c >> 6 & 0x3f)); buf[2] = (unsigned char)(0x80 | (c & 0x3f)); len = 3; }
        if (n + (size_t)len >= cap) return false;
        memcpy(out + n, buf, (size_t)len);
        n += (size_t)len;
    }
    out[n] = 0;
    return true;
}

bool es_test_golden_parse(const char *line, es_test_golden *g) {
    const char *mp = golden_value(line, "max_positions");
    char *end = NULL;
    long maxpos = mp ? strtol(mp, &end, 10) : -1;
    g->n_prompt = golden_ints(golden_value(line, "prompt_ids"), g->prompt_ids, 512);
    g->n_gen = golden_ints(golden_value(line, "gen_ids"), g->gen_ids, 1024);
    const bool ok = golden_string(golden_value(line, "prompt"), g->prompt, sizeof g->prompt) && end != mp &&
                    maxpos > 0 && maxpos <= 1 << 20 && g->n_prompt > 0 && g->n_gen >= 0;
    g->max_positions = (int)maxpos;
    CHECK_MSG(ok, "malformed golden line: %.120s", line);
    return ok;
}

/* ---- socket-level test helpers ---- */

double es_test_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void es_test_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int es_test_tcp_connect(int port, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

bool es_test_send_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            return false;
        }
        b += w;
        n -= (size_t)w;
    }
    return true;
}

bool es_test_recv_all(int fd, void *p, size_t n) {
    uint8_t *b = p;
    while (n) {
        ssize_t r = recv(fd, b, n, 0);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            return false;
        }
        b += r;
        n -= (size_t)r;
    }
    return true;
}

double es_test_rel_diff(const float *a, const float *b, int n) {
    double d = 0, mx = 0;
    for (int i = 0; i < n; i++) {
        const double e = fabs((double)a[i] - b[i]);
        if (!(e <= d)) d = e;
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
    }
    return d / (1 + mx);
}

const char *es_test_write_bad_exit(int d, int layer, const char *file) {
    float *W = calloc((size_t)d * d, sizeof(float)), *B = malloc((size_t)d * sizeof(float));
    const char *path = es_test_tmp(file);
    es_gguf_writer *w = es_gguf_writer_init();
    es_err err = {{0}};
    bool ok = W && B && w;
    CHECK(ok);
    if (ok) {
        for (int j = 0; j < d; j++) B[j] = (float)((j * 7919) % 13) - 6.0f;
        char wn[64], bn[64];
        snprintf(wn, sizeof wn, "exit.%d.weight", layer);
        snprintf(bn, sizeof bn, "exit.%d.bias", layer);
        const int64_t ne2[2] = {d, d}, ne1[1] = {d};
        ok = es_gguf_add_tensor(w, wn, ES_TYPE_F32, 2, ne2, W) == ES_OK && es_gguf_add_tensor(w, bn, ES_TYPE_F32, 1, ne1, B) == ES_OK;
        CHECK(ok);
        if (ok) {
            CHECK_OK(es_gguf_write(w, path, NULL, NULL, &err), &err);
            ok = err.msg[0] == 0;
        }
    }
    es_gguf_writer_free(w);
    free(W);
    free(B);
    return ok ? path : NULL;
}
