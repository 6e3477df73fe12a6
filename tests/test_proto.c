/* test_proto.c — the wire protocol (src/wire/proto.c): every message round-trips (random contents,
 * limits, empty trees, trees with sparse proposals laid out in any order), the byte layout matches
 * docs/PROTOCOL.md (golden bytes), headers are checked, and hostile input is refused cleanly: every
 * truncation of every frame, every one-byte corruption, trailing bytes, counts above the limits, bad
 * parents, NaN probabilities. Encoders that run out of room leave the buffer untouched. Also measures
 * the bytes of one 16-node verification round. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "wire/proto.h"
#include "specdec/spec.h"
#include "testutil.h"
#include "util/err.h"
#include "util/rng.h"

#define BUF_CAP (1u << 20)

static es_rng g_rng;
static uint32_t rnd(uint32_t n) { return n ? (uint32_t)(es_rng_next(&g_rng) % n) : 0; }

/* ---- a raw little-endian writer for hand-made payloads (independent of the encoder) ---- */

typedef struct raw {
    uint8_t b[40000];
    size_t n;
} raw;
static void r8(raw *r, uint32_t v) { r->b[r->n++] = (uint8_t)v; }
static void r16(raw *r, uint32_t v) { r8(r, v & 255); r8(r, (v >> 8) & 255); }
static void r32(raw *r, uint32_t v) { r16(r, v & 0xffff); r16(r, v >> 16); }
static void r64(raw *r, uint64_t v) { r32(r, (uint32_t)v); r32(r, (uint32_t)(v >> 32)); }
static void rf(raw *r, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    r32(r, u);
}

/* ---- frames ---- */

/* The frame that starts at w->data[start]: checks its header against what was written and returns
 * the payload (and its length, and the type). */
static const uint8_t *frame_at(const es_wbuf *w, size_t start, es_frame_header *h) {
    es_err err = {{0}};
    CHECK(w->len >= start + ES_PROTO_HEADER_SIZE);
    CHECK_OK(es_proto_get_header(w->data + start, ES_PROTO_MAX_PAYLOAD_DEFAULT, h, &err), &err);
    CHECK_MSG(h->len == w->len - start - ES_PROTO_HEADER_SIZE, "header says %u, frame has %zu", h->len,
              w->len - start - ES_PROTO_HEADER_SIZE);
    CHECK(h->version == ES_PROTO_VERSION && h->flags == 0);
    return w->data + start + ES_PROTO_HEADER_SIZE;
}

/* The payload length at which a shorter frame is complete too (0: none): VERDICT and TOKENS of
 * version 4 end with an optional log-probability block, so the frame without it decodes (the receiver
 * refuses it as lacking what its session asked for). Set around encode() by the tests of those. */
static size_t g_tail_ok;

static int decode_ok_or_refused(es_status st) { return st == ES_OK || st == ES_ERR_FORMAT || st == ES_ERR_RANGE; }

/* A payload that decodes must re-encode to the same bytes (the encoding is canonical). */
static bool canonical(int type, uint32_t session, const uint8_t *p, size_t n) {
    es_err err = {{0}};
    uint8_t *buf = malloc(n + ES_PROTO_HEADER_SIZE);
    es_wbuf w;
    es_wbuf_init(&w, buf, n + ES_PROTO_HEADER_SIZE);
    es_frame_header h;
    bool ok = es_proto_reencode(&w, type, session, p, n, &err) == ES_OK && w.len == n + ES_PROTO_HEADER_SIZE &&
              es_proto_get_header(buf, ES_PROTO_MAX_PAYLOAD_DEFAULT, &h, &err) == ES_OK && h.type == type &&
              h.len == n && memcmp(buf + ES_PROTO_HEADER_SIZE, p, n) == 0;
    if (ok && type != ES_FRAME_HELLO && type != ES_FRAME_WELCOME && type != ES_FRAME_PING && type != ES_FRAME_PONG)
        ok = h.session == session;
    free(buf);
    return ok;
}

/* Hostile variants of one valid frame (header + payload in f[0..n)):
 *  - the payload decodes; every strict prefix of it (in an exact-size heap copy, so ASan sees any
 *    over-read) is refused; one extra byte is refused;
 *  - every byte position (all of them for small frames, a sample for big ones) flipped three ways:
 *    the header is re-parsed and the payload re-decoded, which must return OK or a refusal. */
static void abuse(const uint8_t *f, size_t n, const char *what) {
    es_err err = {{0}};
    es_frame_header h;
    CHECK_OK(es_proto_get_header(f, ES_PROTO_MAX_PAYLOAD_DEFAULT, &h, &err), &err);
    const uint8_t *pl = f + ES_PROTO_HEADER_SIZE;
    const size_t pn = n - ES_PROTO_HEADER_SIZE;
    CHECK_MSG(es_proto_check_payload(h.type, pl, pn, &err) == ES_OK, "%s: %s", what, err.msg);
    CHECK_MSG(canonical(h.type, h.session, pl, pn), "%s: not canonical", what);

    /* Every prefix for frames up to 8 KiB; bigger ones (the limit-sized VERIFY and TOKENS) every byte
     * of the first and last 2 KiB and every 7th in between, to stay fast under ASan (each prefix is a
     * full decode, so the exhaustive sweep is quadratic). */
    int bad_trunc = 0;
    const bool big = pn > 8192;
    for (size_t k = 0; k < pn; k += (big && k >= 2048 && k + 2048 < pn) ? 7 : 1) {
        uint8_t *c = malloc(k ? k : 1);
        memcpy(c, pl, k);
        es_status st = es_proto_check_payload(h.type, c, k, &err);
        if (st != ES_ERR_FORMAT && !(st == ES_OK && k == g_tail_ok)) {
            if (!bad_trunc) fprintf(stderr, "%s: prefix of %zu/%zu bytes gave %s\n", what, k, pn, es_status_str(st));
            bad_trunc++;
        }
        free(c);
    }
    CHECK_MSG(bad_trunc == 0, "%s: %d truncations not refused", what, bad_trunc);

    uint8_t *c = malloc(pn + 1);
    memcpy(c, pl, pn);
    int bad_trail = 0;
    for (int v = 0; v < 256; v += 85) {
        c[pn] = (uint8_t)v;
        if (es_proto_check_payload(h.type, c, pn + 1, &err) != ES_ERR_FORMAT) bad_trail++;
    }
    free(c);
    CHECK_MSG(bad_trail == 0, "%s: trailing byte accepted", what);

    /* corruption: decode status must be one of the expected ones (crashes are caught by ASan) */
    uint8_t *g = malloc(n);
    int bad_corrupt = 0, bad_canon = 0, refused = 0, tried = 0;
    const size_t step = n <= 4096 ? 1 : n / 1024;
    for (size_t pos = 0; pos < n; pos += (pos < 64 ? 1 : step)) {
        static const uint8_t flips[3] = {0x01, 0x80, 0xff};
        for (int fi = 0; fi < 3; fi++) {
            memcpy(g, f, n);
            g[pos] ^= flips[fi];
            tried++;
            es_frame_header hh;
            es_status st = es_proto_get_header(g, ES_PROTO_MAX_PAYLOAD_DEFAULT, &hh, &err);
            if (st != ES_OK) {
                if (!decode_ok_or_refused(st)) bad_corrupt++;
                refused++;
                continue;
            }
            if (hh.len > n - ES_PROTO_HEADER_SIZE) continue; /* a reader would wait for more bytes */
            uint8_t *p2 = malloc(hh.len ? hh.len : 1); /* exact size: ASan catches any over-read */
            memcpy(p2, g + ES_PROTO_HEADER_SIZE, hh.len);
            st = es_proto_check_payload(hh.type, p2, hh.len, &err);
            if (!decode_ok_or_refused(st)) bad_corrupt++;
            if (st != ES_OK) refused++;
            else if (!canonical(hh.type, hh.session, p2, hh.len)) {
                if (!bad_canon) fprintf(stderr, "%s: byte %zu ^ 0x%02x decodes but does not re-encode the same\n", what, pos, flips[fi]);
                bad_canon++;
            }
            free(p2);
        }
    }
    free(g);
    CHECK_MSG(bad_corrupt == 0, "%s: %d corruptions gave an unexpected status", what, bad_corrupt);
    CHECK_MSG(bad_canon == 0, "%s: %d decodable corruptions were not canonical", what, bad_canon);
    CHECK_MSG(refused > 0, "%s: no corruption was ever refused (%d tried)", what, tried);
}

/* Encodes into a buffer of every capacity below the frame's size (with a previous frame already in
 * it): each must fail with ES_ERR_RANGE, set overflow, and leave len and every byte as they were. */
typedef es_status (*enc_fn)(es_wbuf *w, const void *m, es_err *err);

static void overflow_sweep(enc_fn enc, const void *m, size_t frame_size, const char *what) {
    es_err err = {{0}};
    const size_t pre = 5; /* bytes of an earlier frame */
    uint8_t *buf = malloc(pre + frame_size + 16), *ref = malloc(pre + frame_size + 16);
    int bad = 0;
    const size_t step = frame_size <= 4096 ? 1 : frame_size / 512;
    for (size_t cap = 0; cap < pre + frame_size; cap += (cap + step < pre + frame_size ? step : 1)) {
        memset(buf, 0xA5, pre + frame_size + 16);
        memcpy(ref, buf, pre + frame_size + 16);
        es_wbuf w;
        es_wbuf_init(&w, buf, cap);
        w.len = cap < pre ? cap : pre;
        const size_t len0 = w.len;
        es_status st = enc(&w, m, &err);
        if (st != ES_ERR_RANGE || w.len != len0 || !w.overflow || memcmp(buf, ref, pre + frame_size + 16) != 0) {
            if (!bad) fprintf(stderr, "%s: capacity %zu: %s, len %zu, overflow %d\n", what, cap, es_status_str(st), w.len, w.overflow);
            bad++;
        }
    }
    es_wbuf w;
    es_wbuf_init(&w, buf, pre + frame_size);
    w.len = pre;
    CHECK_OK(enc(&w, m, &err), &err);
    CHECK(w.len == pre + frame_size && !w.overflow);
    CHECK_MSG(bad == 0, "%s: %d capacities misbehaved", what, bad);
    free(buf);
    free(ref);
}

/* ---- per-message encoders with a common signature (for the sweeps) ---- */

static uint32_t g_session = 0x01020304;
static es_status enc_hello(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_hello(w, m, e); }
static es_status enc_welcome(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_welcome(w, m, e); }
static es_status enc_open(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_open(w, g_session, m, e); }
static es_status enc_opened(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_opened(w, g_session, m, e); }
static es_status enc_verify(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_verify(w, g_session, m, e); }
static es_status enc_verdict(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_verdict(w, g_session, m, e); }
static es_status enc_early(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_early(w, g_session, m, e); }
static es_status enc_tokens(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_tokens(w, g_session, m, e); }
static es_status enc_close(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_close(w, g_session, m, e); }
static es_status enc_error(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_error(w, g_session, m, e); }
static es_status enc_ping(es_wbuf *w, const void *m, es_err *e) { return es_proto_put_ping(w, ES_FRAME_PING, m, e); }

/* Encodes m into a fresh buffer, checks the header, then runs the overflow sweep and (when
 * `hostile`) the abuse sweeps. Returns the payload inside the static buffer. */
static uint8_t g_buf[BUF_CAP];
static const uint8_t *encode(enc_fn enc, const void *m, int type, uint32_t session, size_t *plen, bool hostile, const char *what) {
    es_err err = {{0}};
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    es_status st = enc(&w, m, &err);
    CHECK_MSG(st == ES_OK, "%s: encode: %s", what, err.msg);
    if (st != ES_OK) {
        *plen = 0;
        return g_buf;
    }
    es_frame_header h;
    const uint8_t *pl = frame_at(&w, 0, &h);
    CHECK(h.type == type && h.session == session);
    *plen = h.len;
    if (hostile) {
        uint8_t *copy = malloc(w.len);
        memcpy(copy, w.data, w.len);
        abuse(copy, w.len, what);
        overflow_sweep(enc, m, w.len, what);
        free(copy);
    }
    return pl;
}

/* ---- trees ---- */

/* A random tree of n nodes; with q, proposals of random sizes (total <= the table) whose entries sum
 * to 1, placed in the table in reverse owner order with gaps (the encoder must follow q_off). */
static void rand_tree(es_spec_tree *t, int n, bool has_q, int q_per_owner_max) {
    memset(t, 0, sizeof *t);
    t->n = n;
    for (int i = 0; i < n; i++) {
        t->token[i] = (int32_t)rnd(100000);
        t->parent[i] = (int32_t)rnd((uint32_t)i + 1) - 1;
        t->depth[i] = t->parent[i] < 0 ? 1 : t->depth[t->parent[i]] + 1;
    }
    t->has_q = has_q;
    if (!has_q) return;
    const int cap = (int)(sizeof t->q_tok / sizeof t->q_tok[0]);
    int end = cap;
    for (int o = 0; o <= n; o++) {
        int qn = (int)rnd((uint32_t)q_per_owner_max + 1);
        if (qn > end) qn = end;
        end -= qn;
        t->q_off[o] = end;
        t->q_n[o] = qn;
        if (end > 0 && rnd(2)) end--; /* a gap */
        double s = 0;
        for (int k = 0; k < qn; k++) {
            t->q_tok[t->q_off[o] + k] = (int32_t)rnd(100000);
            t->q_p[t->q_off[o] + k] = (float)(1 + rnd(1000));
            s += t->q_p[t->q_off[o] + k];
        }
        for (int k = 0; k < qn; k++) t->q_p[t->q_off[o] + k] = (float)(t->q_p[t->q_off[o] + k] / s);
    }
    t->q_used = cap;
}

static void check_tree_equal(const es_spec_tree *a, const es_spec_tree *b, const char *what) {
    int bad = 0;
    if (a->n != b->n || a->has_q != b->has_q) bad++;
    for (int i = 0; !bad && i < a->n; i++)
        if (a->token[i] != b->token[i] || a->parent[i] != b->parent[i] || a->depth[i] != b->depth[i]) bad++;
    if (!bad && a->has_q) {
        for (int o = 0; o <= a->n && !bad; o++) {
            if (a->q_n[o] != b->q_n[o]) bad++;
            for (int k = 0; !bad && k < a->q_n[o]; k++)
                if (a->q_tok[a->q_off[o] + k] != b->q_tok[b->q_off[o] + k] ||
                    memcmp(&a->q_p[a->q_off[o] + k], &b->q_p[b->q_off[o] + k], sizeof(float)) != 0)
                    bad++;
        }
        /* decoded proposals are packed densely in owner order */
        int off = 0;
        for (int o = 0; o <= b->n; o++) {
            if (b->q_off[o] != off) bad++;
            off += b->q_n[o];
        }
        if (b->q_used != off) bad++;
    }
    CHECK_MSG(!bad, "%s: decoded tree differs", what);
}

static void test_header(void) {
    es_err err = {{0}};
    uint8_t b[ES_PROTO_HEADER_SIZE];
    es_frame_header h = {0x00012345, ES_FRAME_VERDICT, ES_PROTO_VERSION, 0xBEEF, 0xDEADBEEF}, g;
    es_proto_put_header(b, &h);
    static const uint8_t want[ES_PROTO_HEADER_SIZE] = {0x45, 0x23, 0x01, 0x00, 6, 1, 0xEF, 0xBE, 0xEF, 0xBE, 0xAD, 0xDE};
    CHECK(memcmp(b, want, sizeof want) == 0);
    CHECK_OK(es_proto_get_header(b, ES_PROTO_MAX_PAYLOAD_DEFAULT, &g, &err), &err);
    CHECK(g.len == h.len && g.type == h.type && g.version == h.version && g.flags == h.flags && g.session == h.session);
    CHECK(es_proto_get_header(b, 0x12345, &g, &err) == ES_OK);                      /* len == limit */
    CHECK(es_proto_get_header(b, 0x12344, &g, &err) == ES_ERR_RANGE && g.type == 6); /* above the limit */
    for (int t = 0; t < 256; t++) {
        b[4] = (uint8_t)t;
        const es_status st = es_proto_get_header(b, ES_PROTO_MAX_PAYLOAD_DEFAULT, &g, &err);
        CHECK_MSG((t >= ES_FRAME_HELLO && t <= ES_FRAME_EARLY) == (st == ES_OK), "type %d: %s", t, es_status_str(st));
        if (st != ES_OK) CHECK(st == ES_ERR_FORMAT);
    }
    b[4] = ES_FRAME_PING;
    b[5] = 2;
    CHECK(es_proto_get_header(b, ES_PROTO_MAX_PAYLOAD_DEFAULT, &g, &err) == ES_ERR_FORMAT && g.version == 2);
    b[5] = 0;
    CHECK(es_proto_get_header(b, ES_PROTO_MAX_PAYLOAD_DEFAULT, &g, &err) == ES_ERR_FORMAT);
    /* a bad version wins over an oversize length: the peer speaks something else */
    b[5] = 9;
    b[3] = 0xff;
    CHECK(es_proto_get_header(b, ES_PROTO_MAX_PAYLOAD_DEFAULT, &g, &err) == ES_ERR_FORMAT);
    CHECK(strcmp(es_frame_type_name(ES_FRAME_VERIFY), "VERIFY") == 0 && strcmp(es_frame_type_name(0), "?") == 0 &&
          strcmp(es_frame_type_name(13), "?") == 0 && strcmp(es_frame_type_name(ES_FRAME_PONG), "PONG") == 0 &&
          strcmp(es_frame_type_name(ES_FRAME_EARLY), "EARLY") == 0);
    CHECK(strcmp(es_proto_err_name(ES_PERR_BUSY), "busy") == 0 && strcmp(es_proto_err_name(99), "unknown") == 0 &&
          strcmp(es_proto_err_name(-1), "unknown") == 0 && strcmp(es_proto_err_name(ES_PERR_UNSUPPORTED), "unsupported") == 0);
}

static void test_hello_welcome(void) {
    es_err err = {{0}};
    size_t n;
    es_msg_hello h = {.version_min = 1, .version_max = 3, .has_draft = 1, .draft_fingerprint = 0x0123456789ABCDEFull,
                      .draft_n_vocab = 32000, .draft_bos = 1, .draft_eos = 2};
    strcpy(h.name, "edgespec-edge/0.1");
    strcpy(h.api_key, "secret");
    const uint8_t *p = encode(enc_hello, &h, ES_FRAME_HELLO, 0, &n, true, "HELLO");
    es_msg_hello g;
    CHECK_OK(es_proto_get_hello(p, n, &g, &err), &err);
    CHECK(g.version_min == 1 && g.version_max == 3 && strcmp(g.name, h.name) == 0 && g.has_draft == 1 &&
          g.draft_fingerprint == h.draft_fingerprint && g.draft_n_vocab == 32000 && g.draft_bos == 1 && g.draft_eos == 2 &&
          strcmp(g.api_key, "secret") == 0);
    /* longest strings, no draft */
    memset(h.name, 'n', ES_PROTO_MAX_NAME);
    h.name[ES_PROTO_MAX_NAME] = 0;
    memset(h.api_key, 'k', ES_PROTO_MAX_KEY);
    h.api_key[ES_PROTO_MAX_KEY] = 0;
    h.has_draft = 0;
    h.draft_bos = -7; /* ignored without a draft */
    p = encode(enc_hello, &h, ES_FRAME_HELLO, 0, &n, false, "HELLO max");
    CHECK_OK(es_proto_get_hello(p, n, &g, &err), &err);
    CHECK(strlen(g.name) == ES_PROTO_MAX_NAME && strlen(g.api_key) == ES_PROTO_MAX_KEY && g.has_draft == 0);
    /* unterminated field, bad version range, bad BOS: refused by the encoder */
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    h.name[ES_PROTO_MAX_NAME] = 'x';
    CHECK(es_proto_put_hello(&w, &h, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    h.name[ES_PROTO_MAX_NAME] = 0;
    h.version_min = 4;
    CHECK(es_proto_put_hello(&w, &h, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    h.version_min = 1;
    h.has_draft = 1;
    CHECK(es_proto_put_hello(&w, &h, &err) == ES_ERR_INVALID_ARG && w.len == 0);

    /* hand-made: a name one byte too long, an embedded NUL, has_draft 2 */
    raw r = {.n = 0};
    r16(&r, 1); r16(&r, 1); r16(&r, ES_PROTO_MAX_NAME + 1);
    for (int i = 0; i <= ES_PROTO_MAX_NAME; i++) r8(&r, 'a');
    r8(&r, 0); r64(&r, 0); r32(&r, 10); r32(&r, 1); r32(&r, 2); r16(&r, 0);
    CHECK(es_proto_get_hello(r.b, r.n, &g, &err) == ES_ERR_FORMAT);
    r.n = 0;
    r16(&r, 1); r16(&r, 1); r16(&r, 3); r8(&r, 'a'); r8(&r, 0); r8(&r, 'b');
    r8(&r, 0); r64(&r, 0); r32(&r, 10); r32(&r, 1); r32(&r, 2); r16(&r, 0);
    CHECK(es_proto_get_hello(r.b, r.n, &g, &err) == ES_ERR_FORMAT && strstr(err.msg, "NUL"));
    r.b[6 + 1] = 'z'; /* fix the NUL: now it decodes */
    CHECK_OK(es_proto_get_hello(r.b, r.n, &g, &err), &err);
    CHECK(strcmp(g.name, "azb") == 0);
    r.b[6 + 3] = 2; /* has_draft */
    CHECK(es_proto_get_hello(r.b, r.n, &g, &err) == ES_ERR_FORMAT);

    es_msg_welcome m = {.version = 1, .target_fingerprint = 42, .n_vocab = 512, .bos = 1, .eos = 2, .n_ctx = 2048,
                        .max_tree_nodes = 64, .max_new_tokens = 1024, .max_payload = 1u << 20, .rules = 0x7,
                        .has_server_draft = 1};
    strcpy(m.name, "edgespec-serve/0.1 stories260K");
    p = encode(enc_welcome, &m, ES_FRAME_WELCOME, 0, &n, true, "WELCOME");
    es_msg_welcome gw;
    CHECK_OK(es_proto_get_welcome(p, n, &gw, &err), &err);
    CHECK(gw.version == 1 && strcmp(gw.name, m.name) == 0 && gw.target_fingerprint == 42 && gw.n_vocab == 512 && gw.bos == 1 &&
          gw.eos == 2 && gw.n_ctx == 2048 && gw.max_tree_nodes == 64 && gw.max_new_tokens == 1024 && gw.max_payload == (1u << 20) &&
          gw.rules == 7 && gw.has_server_draft == 1);
    m.max_tree_nodes = ES_SPEC_MAX_NODES + 1;
    CHECK(es_proto_put_welcome(&w, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
}

static void test_open(void) {
    es_err err = {{0}};
    size_t n;
    int32_t prompt[300], got[300];
    for (int i = 0; i < 300; i++) prompt[i] = (int32_t)rnd(32000);
    es_msg_open m = {.mode = ES_MODE_EDGE, .rule = ES_ACCEPT_REJECTION, .max_tokens = 256, .temperature = 0.7f, .top_p = 0.9f,
                     .min_p = 0.05f, .top_k = 40, .seed = 0xFEEDFACECAFEBEEFull, .n_stop = ES_PROTO_MAX_STOP, .n_prompt = 300,
                     .prompt = prompt};
    for (int i = 0; i < ES_PROTO_MAX_STOP; i++) m.stop[i] = 2 + i;
    const uint8_t *p = encode(enc_open, &m, ES_FRAME_OPEN, g_session, &n, true, "OPEN tokens");
    es_msg_open g = {.prompt = got};
    CHECK_OK(es_proto_get_open(p, n, &g, 300, &err), &err);
    CHECK(g.mode == m.mode && g.rule == m.rule && g.max_tokens == 256 && g.temperature == 0.7f && g.top_p == 0.9f &&
          g.min_p == 0.05f && g.top_k == 40 && g.seed == m.seed && g.n_stop == ES_PROTO_MAX_STOP && g.flags == 0 &&
          g.n_prompt == 300 && g.text == NULL && g.prompt == got);
    CHECK(memcmp(g.stop, m.stop, sizeof m.stop) == 0 && memcmp(got, prompt, sizeof prompt) == 0);
    /* the caller's capacity */
    g.prompt = got;
    CHECK(es_proto_get_open(p, n, &g, 299, &err) == ES_ERR_RANGE);
    g.prompt = NULL;
    CHECK(es_proto_get_open(p, n, &g, 300, &err) == ES_ERR_RANGE);

    /* text prompt, greedy AR, no stops */
    static const char text[] = "Once upon a time, caf\xC3\xA9";
    es_msg_open t = {.mode = ES_MODE_AR, .max_tokens = 1, .top_p = 1, .flags = ES_OPEN_PROMPT_TEXT, .text = text,
                     .text_len = (uint32_t)strlen(text)};
    p = encode(enc_open, &t, ES_FRAME_OPEN, g_session, &n, true, "OPEN text");
    g.prompt = got;
    CHECK_OK(es_proto_get_open(p, n, &g, 0, &err), &err);
    CHECK(g.flags == ES_OPEN_PROMPT_TEXT && g.text_len == t.text_len && g.n_prompt == 0 && g.text >= (const char *)p &&
          g.text + g.text_len <= (const char *)p + n && memcmp(g.text, text, g.text_len) == 0);
    /* repetition penalty and logit bias: sent behind PENALTY_BIAS only when they say something */
    {
        es_msg_open b = {.mode = ES_MODE_EDGE, .max_tokens = 9, .top_p = 1, .n_prompt = 3, .prompt = prompt, .repeat_penalty = 1.25f,
                         .repeat_last_n = 16, .presence_penalty = 0.5f, .frequency_penalty = -0.25f, .n_bias = 2};
        b.bias[0] = (es_logit_bias){7, -100.0f};
        b.bias[1] = (es_logit_bias){31999, 2.5f};
        p = encode(enc_open, &b, ES_FRAME_OPEN, g_session, &n, true, "OPEN penalty+bias");
        g.prompt = got;
        CHECK_OK(es_proto_get_open(p, n, &g, 300, &err), &err);
        CHECK(g.flags == ES_OPEN_PENALTY_BIAS && g.n_prompt == 3 && g.repeat_penalty == 1.25f && g.repeat_last_n == 16 &&
              g.presence_penalty == 0.5f && g.frequency_penalty == -0.25f && g.n_bias == 2 && g.bias[0].id == 7 && g.bias[0].bias == -100.0f && g.bias[1].id == 31999 && g.bias[1].bias == 2.5f);
        for (size_t cut = 1; cut <= 18 + 16; cut++) /* every truncation of the extension is refused */
            CHECK_MSG(es_proto_get_open(p, n - cut, &g, 300, &err) != ES_OK, "OPEN cut by %zu accepted", cut);
        b.repeat_penalty = 1.0f; /* penalties off, bias on: still sent */
        b.presence_penalty = b.frequency_penalty = 0.0f;
        p = encode(enc_open, &b, ES_FRAME_OPEN, g_session, &n, true, "OPEN bias");
        CHECK_OK(es_proto_get_open(p, n, &g, 300, &err), &err);
        CHECK(g.flags == ES_OPEN_PENALTY_BIAS && g.repeat_penalty == 1.0f && g.n_bias == 2);
        b.n_bias = 0; /* nothing to say: the old layout */
        p = encode(enc_open, &b, ES_FRAME_OPEN, g_session, &n, true, "OPEN plain");
        CHECK_OK(es_proto_get_open(p, n, &g, 300, &err), &err);
        CHECK(g.flags == 0 && g.repeat_penalty == 1.0f && g.repeat_last_n == 64 && g.n_bias == 0);
        es_wbuf wb;
        es_wbuf_init(&wb, g_buf, sizeof g_buf);
        b.repeat_penalty = -1.0f;
        CHECK(es_proto_put_open(&wb, 1, &b, &err) == ES_ERR_INVALID_ARG && wb.len == 0);
        b.repeat_penalty = 1.5f;
        b.n_bias = 1;
        b.bias[0].bias = NAN;
        CHECK(es_proto_put_open(&wb, 1, &b, &err) == ES_ERR_INVALID_ARG && wb.len == 0);
        b.bias[0] = (es_logit_bias){-4, 1.0f};
        CHECK(es_proto_put_open(&wb, 1, &b, &err) == ES_ERR_INVALID_ARG && wb.len == 0);
        b.bias[0] = (es_logit_bias){4, 1.0f};
        b.frequency_penalty = INFINITY;
        CHECK(es_proto_put_open(&wb, 1, &b, &err) == ES_ERR_INVALID_ARG && wb.len == 0);
    }
    /* empty token prompt decodes (the server decides whether that is useful) */
    es_msg_open e = {.mode = ES_MODE_SERVER_SPEC, .max_tokens = 5, .top_p = 1};
    p = encode(enc_open, &e, ES_FRAME_OPEN, g_session, &n, false, "OPEN empty");
    CHECK_OK(es_proto_get_open(p, n, &g, 0, &err), &err);
    CHECK(g.n_prompt == 0 && g.mode == ES_MODE_SERVER_SPEC);

    /* values: temperature NaN / inf / negative, top_p above 1, min_p NaN, mode / rule unknown, flags */
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    e.temperature = NAN;
    CHECK(es_proto_put_open(&w, 1, &e, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    e.temperature = 0;
    e.n_stop = ES_PROTO_MAX_STOP + 1;
    CHECK(es_proto_put_open(&w, 1, &e, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    e.n_stop = 0;
    CHECK_OK(es_proto_put_open(&w, 1, &e, &err), &err);
    uint8_t base[64];
    const size_t bn = w.len - ES_PROTO_HEADER_SIZE;
    CHECK(bn <= sizeof base);
    memcpy(base, w.data + ES_PROTO_HEADER_SIZE, bn);
    /* offsets: mode 0, rule 1, max_tokens 2, temperature 6, top_p 10, min_p 14, top_k 18, seed 22,
     * n_stop 30, flags 32, count 36 */
    struct { size_t off; float v; } fl[] = {{6, NAN}, {6, INFINITY}, {6, -0.5f}, {10, 1.5f}, {10, -INFINITY}, {14, NAN}, {14, -0.01f}};
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
        uint8_t q[64];
        memcpy(q, base, bn);
        uint32_t u;
        memcpy(&u, &fl[i].v, 4);
        for (int k = 0; k < 4; k++) q[fl[i].off + k] = (uint8_t)(u >> (8 * k));
        CHECK_MSG(es_proto_get_open(q, bn, &g, 0, &err) == ES_ERR_FORMAT, "float %zu accepted", i);
    }
    struct { size_t off; uint8_t v; } by[] = {{0, 3}, {1, 4}, {2, 0}, {21, 0x80}, {30, 17}, {32, 2}, {35, 0x80}};
    for (size_t i = 0; i < sizeof by / sizeof by[0]; i++) {
        uint8_t q[64];
        memcpy(q, base, bn);
        if (by[i].off == 2) memset(q + 2, 0, 4); /* max_tokens 0 */
        else q[by[i].off] = by[i].v;
        CHECK_MSG(es_proto_get_open(q, bn, &g, 0, &err) == ES_ERR_FORMAT, "byte patch %zu accepted", i);
    }
    /* a negative prompt token, a NUL in text */
    int32_t neg[2] = {5, -1};
    es_msg_open bad = {.mode = 0, .max_tokens = 1, .top_p = 1, .n_prompt = 2, .prompt = neg};
    CHECK(es_proto_put_open(&w, 1, &bad, &err) == ES_ERR_INVALID_ARG);
    es_msg_open badt = {.mode = 0, .max_tokens = 1, .top_p = 1, .flags = ES_OPEN_PROMPT_TEXT, .text = "a\0b", .text_len = 3};
    CHECK(es_proto_put_open(&w, 1, &badt, &err) == ES_ERR_INVALID_ARG);
}

static void test_small_frames(void) {
    es_err err = {{0}};
    size_t n;
    es_msg_opened o = {.n_prompt = 17, .max_tokens = 99, .n_ctx = 0xFFFFFFFFu}, go;
    const uint8_t *p = encode(enc_opened, &o, ES_FRAME_OPENED, g_session, &n, true, "OPENED");
    CHECK_OK(es_proto_get_opened(p, n, &go, &err), &err);
    CHECK(go.n_prompt == 17 && go.max_tokens == 99 && go.n_ctx == 0xFFFFFFFFu && n == 12);

    es_msg_close c = {.stop = ES_STOP_LENGTH, .n_generated = 1234}, gc;
    p = encode(enc_close, &c, ES_FRAME_CLOSE, g_session, &n, true, "CLOSE");
    CHECK_OK(es_proto_get_close(p, n, &gc, &err), &err);
    CHECK(gc.stop == ES_STOP_LENGTH && gc.n_generated == 1234 && n == 5);
    uint8_t q[5] = {6, 0, 0, 0, 0};
    CHECK(es_proto_get_close(q, 5, &gc, &err) == ES_ERR_FORMAT);

    es_msg_error e = {.code = ES_PERR_BUSY}, ge;
    strcpy(e.msg, "no session slot free");
    p = encode(enc_error, &e, ES_FRAME_ERROR, g_session, &n, true, "ERROR");
    CHECK_OK(es_proto_get_error(p, n, &ge, &err), &err);
    CHECK(ge.code == ES_PERR_BUSY && strcmp(ge.msg, e.msg) == 0);
    memset(e.msg, 'm', ES_PROTO_MAX_MSG);
    e.msg[ES_PROTO_MAX_MSG] = 0;
    e.code = 999; /* unknown codes pass (a newer peer) */
    p = encode(enc_error, &e, ES_FRAME_ERROR, g_session, &n, false, "ERROR max");
    CHECK_OK(es_proto_get_error(p, n, &ge, &err), &err);
    CHECK(ge.code == 999 && strlen(ge.msg) == ES_PROTO_MAX_MSG);
    e.msg[0] = 0; /* empty message */
    p = encode(enc_error, &e, ES_FRAME_ERROR, g_session, &n, false, "ERROR empty");
    CHECK_OK(es_proto_get_error(p, n, &ge, &err), &err);
    CHECK(ge.msg[0] == 0 && n == 4);

    es_msg_ping pg = {.nonce = 0x8877665544332211ull}, gp;
    p = encode(enc_ping, &pg, ES_FRAME_PING, 0, &n, true, "PING");
    CHECK_OK(es_proto_get_ping(p, n, &gp, &err), &err);
    CHECK(gp.nonce == pg.nonce && n == 8 && p[0] == 0x11 && p[7] == 0x88);
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    CHECK_OK(es_proto_put_ping(&w, ES_FRAME_PONG, &pg, &err), &err);
    CHECK(w.len == 20 && w.data[4] == ES_FRAME_PONG);
    CHECK(es_proto_put_ping(&w, ES_FRAME_CLOSE, &pg, &err) == ES_ERR_INVALID_ARG && w.len == 20);
    CHECK(es_proto_check_payload(0, g_buf, 0, &err) == ES_ERR_FORMAT);
    CHECK(es_proto_check_payload(12, g_buf, 0, &err) == ES_ERR_FORMAT);
}

static void test_tokens(void) {
    es_err err = {{0}};
    size_t n;
    static int32_t toks[ES_PROTO_MAX_TOKENS_FRAME + 1], got[ES_PROTO_MAX_TOKENS_FRAME];
    for (int i = 0; i <= ES_PROTO_MAX_TOKENS_FRAME; i++) toks[i] = (int32_t)rnd(0x7fffffff);
    es_msg_tokens m = {.stop = ES_STOP_NONE, .n = 3, .tokens = toks}, g = {.tokens = got};
    const uint8_t *p = encode(enc_tokens, &m, ES_FRAME_TOKENS, g_session, &n, true, "TOKENS");
    CHECK_OK(es_proto_get_tokens(p, n, &g, &err), &err);
    CHECK(g.n == 3 && g.stop == 0 && memcmp(got, toks, 3 * sizeof(int32_t)) == 0);
    m.n = ES_PROTO_MAX_TOKENS_FRAME;
    m.stop = ES_STOP_EOS;
    p = encode(enc_tokens, &m, ES_FRAME_TOKENS, g_session, &n, true, "TOKENS max");
    CHECK_OK(es_proto_get_tokens(p, n, &g, &err), &err);
    CHECK(g.n == ES_PROTO_MAX_TOKENS_FRAME && g.stop == ES_STOP_EOS && memcmp(got, toks, sizeof got) == 0);
    m.n = 0;
    m.stop = ES_STOP_CONTEXT;
    p = encode(enc_tokens, &m, ES_FRAME_TOKENS, g_session, &n, true, "TOKENS empty");
    CHECK_OK(es_proto_get_tokens(p, n, &g, &err), &err);
    CHECK(g.n == 0 && g.stop == ES_STOP_CONTEXT);
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    m.n = ES_PROTO_MAX_TOKENS_FRAME + 1;
    CHECK(es_proto_put_tokens(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    /* hand-made: count above the limit (with the bytes present), a negative token */
    raw *r = calloc(1, sizeof *r);
    r8(r, 0); r16(r, ES_PROTO_MAX_TOKENS_FRAME + 1);
    for (int i = 0; i <= ES_PROTO_MAX_TOKENS_FRAME && r->n + 4 <= sizeof r->b; i++) r32(r, 1);
    CHECK(es_proto_get_tokens(r->b, r->n, &g, &err) == ES_ERR_FORMAT);
    r->n = 0;
    r8(r, 0); r16(r, 1); r32(r, 0x80000000u);
    CHECK(es_proto_get_tokens(r->b, r->n, &g, &err) == ES_ERR_FORMAT);
    free(r);
}

static void test_verify(void) {
    es_err err = {{0}};
    size_t n;
    es_spec_tree *t = malloc(sizeof *t), *g = malloc(sizeof *g);
    es_msg_verify m = {.round = 0, .tree = t}, gm = {.tree = g};

    /* golden bytes: round 7, two nodes (5 under the root, 300 under node 0), no proposals */
    memset(t, 0, sizeof *t);
    t->n = 2;
    t->token[0] = 5; t->parent[0] = -1; t->depth[0] = 1;
    t->token[1] = 300; t->parent[1] = 0; t->depth[1] = 2;
    m.round = 7;
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    CHECK_OK(es_proto_put_verify(&w, 0x01020304, &m, &err), &err);
    static const uint8_t gold[] = {19, 0, 0, 0, 5, 1, 0, 0, 4, 3, 2, 1, /* header */
                                   7, 0, 0, 0, 0, 2, 0,                   /* round, vflags, n */
                                   5, 0, 0, 0, 0xff, 0xff, 44, 1, 0, 0, 0, 0};
    CHECK(w.len == sizeof gold && memcmp(w.data, gold, sizeof gold) == 0);

    /* empty tree, with and without q */
    for (int hq = 0; hq < 2; hq++) {
        rand_tree(t, 0, hq, 0);
        m.round = 0xFFFFFFFFu;
        const uint8_t *p = encode(enc_verify, &m, ES_FRAME_VERIFY, g_session, &n, true, hq ? "VERIFY empty q" : "VERIFY empty");
        CHECK_OK(es_proto_get_verify(p, n, &gm, 0, &err), &err);
        CHECK(gm.round == 0xFFFFFFFFu && n == (hq ? 8u : 7u));
        check_tree_equal(t, g, "empty");
    }
    /* random trees; the hostile sweeps on a few */
    for (int it = 0; it < 60; it++) {
        const int nn = it < 3 ? ES_SPEC_MAX_NODES : (int)rnd(ES_SPEC_MAX_NODES + 1);
        const bool hq = it % 2;
        rand_tree(t, nn, hq, it % 3 == 0 ? ES_SPEC_MAX_Q : 12);
        for (int i = 0; i < nn; i++) t->depth[i] += (int)rnd(3) == 0 ? 5 : 0; /* the encoder ignores depths */
        m.round = (uint32_t)it;
        char what[64];
        snprintf(what, sizeof what, "VERIFY n=%d q=%d", nn, hq);
        const bool hostile = it == 4 || it == 13;
        const uint8_t *p = encode(enc_verify, &m, ES_FRAME_VERIFY, g_session, &n, hostile, what);
        CHECK_OK(es_proto_get_verify(p, n, &gm, ES_SPEC_MAX_NODES, &err), &err);
        for (int i = 0; i < nn; i++) t->depth[i] = t->parent[i] < 0 ? 1 : t->depth[t->parent[i]] + 1;
        check_tree_equal(t, g, what);
        CHECK(gm.round == (uint32_t)it);
        if (nn > 0) CHECK(es_proto_get_verify(p, n, &gm, nn - 1, &err) == ES_ERR_RANGE);
        if (hq) CHECK_OK(es_spec_tree_validate(g, 100000, &err), &err);
    }
    /* the biggest frame: 256 nodes, proposals filling the whole table (2048 entries) */
    rand_tree(t, ES_SPEC_MAX_NODES, true, 0);
    const int cap = (int)(sizeof t->q_tok / sizeof t->q_tok[0]);
    for (int o = 0, off = 0; o <= t->n; o++) {
        const int qn = off + ES_SPEC_MAX_Q <= cap ? ES_SPEC_MAX_Q : cap - off;
        t->q_off[o] = off;
        t->q_n[o] = qn;
        for (int k = 0; k < qn; k++) {
            t->q_tok[off + k] = k;
            t->q_p[off + k] = 1.0f / (float)qn;
        }
        off += qn;
    }
    t->q_used = cap;
    const uint8_t *p = encode(enc_verify, &m, ES_FRAME_VERIFY, g_session, &n, true, "VERIFY full table");
    CHECK_OK(es_proto_get_verify(p, n, &gm, ES_SPEC_MAX_NODES, &err), &err);
    check_tree_equal(t, g, "full table");
    CHECK(g->q_used == cap && n == 7 + 6 * 256 + 257 + 8 * (size_t)cap);
    printf("largest VERIFY payload: %zu bytes\n", n);
    CHECK_OK(es_spec_tree_validate(g, 100000, &err), &err);

    /* encoder refusals: bad parent, NaN / negative / >1 probability, sum above 1, too many entries */
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    rand_tree(t, 8, true, 4);
    t->parent[3] = 3;
    CHECK(es_proto_put_verify(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    t->parent[3] = -2;
    CHECK(es_proto_put_verify(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    t->parent[3] = -1;
    t->q_off[0] = 0;
    t->q_n[0] = 2;
    const int o0 = 0;
    t->q_p[o0] = NAN;
    CHECK(es_proto_put_verify(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    t->q_p[o0] = 0.6f;
    t->q_p[o0 + 1] = 0.6f;
    CHECK(es_proto_put_verify(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    t->q_p[o0 + 1] = 0.4f;
    CHECK_OK(es_proto_put_verify(&w, 1, &m, &err), &err);
    t->q_n[0] = ES_SPEC_MAX_Q + 1;
    CHECK(es_proto_put_verify(&w, 1, &m, &err) == ES_ERR_INVALID_ARG);
    t->n = ES_SPEC_MAX_NODES + 1;
    CHECK(es_proto_put_verify(&w, 1, &m, &err) == ES_ERR_INVALID_ARG);

    /* decoder refusals on hand-made payloads */
    raw *r = calloc(1, sizeof *r);
#define TREE_HDR(vfl, cnt) do { r->n = 0; r32(r, 1); r8(r, vfl); r16(r, cnt); } while (0)
    TREE_HDR(0, 2); r32(r, 1); r16(r, 0xffff); r32(r, 2); r16(r, 1); /* parent == own index */
    CHECK(es_proto_get_verify(r->b, r->n, &gm, 256, &err) == ES_ERR_FORMAT);
    TREE_HDR(0, 2); r32(r, 1); r16(r, 0xfffe); r32(r, 2); r16(r, 0); /* parent -2 */
    CHECK(es_proto_get_verify(r->b, r->n, &gm, 256, &err) == ES_ERR_FORMAT);
    TREE_HDR(0, 2); r32(r, 1); r16(r, 0xffff); r32(r, 2); r16(r, 0); /* fine; depths recomputed */
    CHECK_OK(es_proto_get_verify(r->b, r->n, &gm, 256, &err), &err);
    CHECK(g->n == 2 && g->depth[0] == 1 && g->depth[1] == 2 && !g->has_q);
    TREE_HDR(8, 0); /* unknown vflag */
    CHECK(es_proto_get_verify(r->b, r->n, &gm, 256, &err) == ES_ERR_FORMAT);
    TREE_HDR(0, 1); r32(r, 0x80000000u); r16(r, 0xffff); /* negative token */
    CHECK(es_proto_get_verify(r->b, r->n, &gm, 256, &err) == ES_ERR_FORMAT);
    TREE_HDR(0, 257); /* above the protocol limit even with a bigger max_nodes */
    for (int i = 0; i < 257; i++) { r32(r, 1); r16(r, 0xffff); }
    CHECK(es_proto_get_verify(r->b, r->n, &gm, 100000, &err) == ES_ERR_FORMAT);
    const float badp[] = {NAN, INFINITY, -0.25f, 1.5f};
    for (size_t i = 0; i < sizeof badp / sizeof badp[0]; i++) {
        TREE_HDR(1, 1); r32(r, 3); r16(r, 0xffff);
        r8(r, 2); r32(r, 3); rf(r, 0.5f); r32(r, 4); rf(r, badp[i]);
        r8(r, 0);
        CHECK_MSG(es_proto_get_verify(r->b, r->n, &gm, 256, &err) == ES_ERR_FORMAT, "probability %g accepted", (double)badp[i]);
    }
    TREE_HDR(1, 1); r32(r, 3); r16(r, 0xffff);
    r8(r, 2); r32(r, 3); rf(r, 0.6f); r32(r, 4); rf(r, 0.5f); r8(r, 0); /* sums to 1.1 */
    CHECK(es_proto_get_verify(r->b, r->n, &gm, 256, &err) == ES_ERR_FORMAT);
    TREE_HDR(1, 1); r32(r, 3); r16(r, 0xffff);
    r8(r, 2); r32(r, 3); rf(r, 0.6f); r32(r, 4); rf(r, 0.4005f); r8(r, 0); /* within 1e-3 */
    CHECK_OK(es_proto_get_verify(r->b, r->n, &gm, 256, &err), &err);
    TREE_HDR(1, 0); r8(r, 65); /* 65 entries for one owner */
    for (int k = 0; k < 65; k++) { r32(r, (uint32_t)k); rf(r, 0.01f); }
    CHECK(es_proto_get_verify(r->b, r->n, &gm, 256, &err) == ES_ERR_FORMAT);
    /* 256 nodes x 8 entries + 8 at the root = 2056 > 2048 entries in all */
    TREE_HDR(1, 256);
    for (int i = 0; i < 256; i++) { r32(r, 1); r16(r, 0xffff); }
    for (int o = 0; o <= 256; o++) {
        r8(r, 8);
        for (int k = 0; k < 8; k++) { r32(r, (uint32_t)k); rf(r, 0.125f); }
    }
    CHECK(es_proto_get_verify(r->b, r->n, &gm, 256, &err) == ES_ERR_FORMAT);
    r->b[7 + 6 * 256] = 0; /* the root's proposal dropped: 2048 entries in all, which fit */
    memmove(r->b + 7 + 6 * 256 + 1, r->b + 7 + 6 * 256 + 1 + 64, r->n - (7 + 6 * 256 + 1 + 64));
    r->n -= 64;
    CHECK_OK(es_proto_get_verify(r->b, r->n, &gm, 256, &err), &err);
    CHECK(g->q_used == 2048 && g->q_n[0] == 0 && g->q_off[1] == 0 && g->q_off[256] == 2040);
#undef TREE_HDR
    free(r);
    free(t);
    free(g);
}

static void test_verdict(void) {
    es_err err = {{0}};
    size_t n;
    /* golden bytes (docs/PROTOCOL.md): round 7, node 0 accepted, bonus 9 */
    es_msg_verdict m = {.round = 7}, g;
    m.v.n_accepted = 1;
    m.v.path[0] = 0;
    m.v.n_tokens = 2;
    m.v.tokens[0] = 5;
    m.v.tokens[1] = 9;
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    CHECK_OK(es_proto_put_verdict(&w, 0x01020304, &m, &err), &err);
    static const uint8_t gold[] = {29, 0, 0, 0, 6, 1, 0, 0, 4, 3, 2, 1, 7, 0, 0, 0, 0, 1, 0, 0, 0,
                                   2, 0, 5, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    CHECK(w.len == sizeof gold && memcmp(w.data, gold, sizeof gold) == 0);

    m = (es_msg_verdict){.round = 3, .stop = ES_STOP_NONE, .queue_us = 120, .verify_us = 4567, .suggested_budget = 24};
    m.v.n_accepted = 2;
    m.v.path[0] = 0;
    m.v.path[1] = 3;
    m.v.n_tokens = 3;
    m.v.tokens[0] = 10; m.v.tokens[1] = 11; m.v.tokens[2] = 12;
    m.v.bonus = 12;
    const uint8_t *p = encode(enc_verdict, &m, ES_FRAME_VERDICT, g_session, &n, true, "VERDICT");
    CHECK_OK(es_proto_get_verdict(p, n, &g, &err), &err);
    CHECK(g.round == 3 && g.stop == 0 && g.queue_us == 120 && g.verify_us == 4567 && g.suggested_budget == 24 &&
          g.v.n_accepted == 2 && g.v.path[0] == 0 && g.v.path[1] == 3 && g.v.n_tokens == 3 && g.v.tokens[2] == 12 && g.v.bonus == 12);
    /* nothing accepted: only the bonus */
    m.v.n_accepted = 0;
    m.v.n_tokens = 1;
    m.v.tokens[0] = 77;
    m.stop = ES_STOP_EOS;
    p = encode(enc_verdict, &m, ES_FRAME_VERDICT, g_session, &n, true, "VERDICT bonus only");
    CHECK_OK(es_proto_get_verdict(p, n, &g, &err), &err);
    CHECK(g.v.n_accepted == 0 && g.v.n_tokens == 1 && g.v.bonus == 77 && g.stop == ES_STOP_EOS);
    /* the longest path: every node of a 256-node chain */
    m.v.n_accepted = ES_SPEC_MAX_PATH - 1;
    m.v.n_tokens = ES_SPEC_MAX_PATH;
    for (int i = 0; i < m.v.n_accepted; i++) m.v.path[i] = i;
    for (int i = 0; i < m.v.n_tokens; i++) m.v.tokens[i] = (int32_t)rnd(1u << 31);
    p = encode(enc_verdict, &m, ES_FRAME_VERDICT, g_session, &n, true, "VERDICT max");
    CHECK_OK(es_proto_get_verdict(p, n, &g, &err), &err);
    CHECK(g.v.n_accepted == 256 && memcmp(g.v.path, m.v.path, 256 * sizeof(int32_t)) == 0 &&
          memcmp(g.v.tokens, m.v.tokens, 257 * sizeof(int32_t)) == 0 && g.v.bonus == m.v.tokens[256]);

    es_wbuf_init(&w, g_buf, sizeof g_buf);
    m.v.n_accepted = ES_SPEC_MAX_PATH; /* one too many */
    m.v.n_tokens = ES_SPEC_MAX_PATH + 1;
    CHECK(es_proto_put_verdict(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    m.v.n_accepted = 2;
    m.v.n_tokens = 2; /* must be 3 */
    CHECK(es_proto_put_verdict(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    m.v.n_tokens = 3;
    m.v.path[0] = 4; m.v.path[1] = 4; /* not increasing */
    CHECK(es_proto_put_verdict(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    m.v.path[1] = ES_SPEC_MAX_NODES;
    CHECK(es_proto_put_verdict(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    m.v.path[1] = 5;
    m.stop = 6;
    CHECK(es_proto_put_verdict(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);

    raw r = {.n = 0};
    r32(&r, 1); r8(&r, 0); r16(&r, 1); r16(&r, 0); r16(&r, 1); r32(&r, 9); r32(&r, 0); r32(&r, 0); r16(&r, 0);
    CHECK(es_proto_get_verdict(r.b, r.n, &g, &err) == ES_ERR_FORMAT); /* 1 token for 1 node */
    r.n = 0;
    r32(&r, 1); r8(&r, 0); r16(&r, 1); r16(&r, 0); r16(&r, 2); r32(&r, 9); r32(&r, 8); r32(&r, 0); r32(&r, 0); r16(&r, 0);
    CHECK_OK(es_proto_get_verdict(r.b, r.n, &g, &err), &err);
    CHECK(g.v.bonus == 8 && g.v.tokens[0] == 9);
    r.b[7] = 0x00; r.b[8] = 0x01; /* path index 256 */
    CHECK(es_proto_get_verdict(r.b, r.n, &g, &err) == ES_ERR_FORMAT);
    r.n = 0;
    r32(&r, 1); r8(&r, 0); r16(&r, 257); /* above the path limit, refused before the bytes */
    CHECK(es_proto_get_verdict(r.b, r.n, &g, &err) == ES_ERR_FORMAT && strstr(err.msg, "accepted"));
}

/* The wire cost of one speculative round: a 16-node greedy tree (no proposals) and a verdict that
 * accepted 2 nodes (3 tokens emitted with the bonus), as in docs/PROTOCOL.md. */
static void test_round_size(void) {
    es_err err = {{0}};
    es_spec_tree *t = malloc(sizeof *t);
    memset(t, 0, sizeof *t);
    t->n = 16; /* a width-2 tree: each level's first node has two children */
    for (int i = 0; i < 16; i++) {
        t->token[i] = 1000 + i;
        t->parent[i] = i < 2 ? -1 : ((i - 2) / 2) * 2;
        t->depth[i] = t->parent[i] < 0 ? 1 : t->depth[t->parent[i]] + 1;
    }
    es_msg_verify vm = {.round = 12, .tree = t};
    es_msg_verdict dm = {.round = 12, .queue_us = 300, .verify_us = 9000, .suggested_budget = 16};
    dm.v.n_accepted = 2;
    dm.v.path[0] = 0; dm.v.path[1] = 2;
    dm.v.n_tokens = 3;
    dm.v.tokens[0] = 1000; dm.v.tokens[1] = 1002; dm.v.tokens[2] = 5;
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    CHECK_OK(es_proto_put_verify(&w, 1, &vm, &err), &err);
    const size_t vb = w.len;
    CHECK_OK(es_proto_put_verdict(&w, 1, &dm, &err), &err);
    const size_t db = w.len - vb;
    /* both frames back to back in one buffer parse in sequence */
    es_frame_header h1, h2;
    CHECK_OK(es_proto_get_header(g_buf, ES_PROTO_MAX_PAYLOAD_DEFAULT, &h1, &err), &err);
    CHECK(h1.type == ES_FRAME_VERIFY && h1.len + ES_PROTO_HEADER_SIZE == vb);
    CHECK_OK(es_proto_get_header(g_buf + vb, ES_PROTO_MAX_PAYLOAD_DEFAULT, &h2, &err), &err);
    CHECK(h2.type == ES_FRAME_VERDICT && h2.len + ES_PROTO_HEADER_SIZE == db);
    printf("16-node greedy round: VERIFY %zu bytes, VERDICT (2 accepted + bonus) %zu bytes, %zu bytes per round, %.1f bytes per "
           "generated token\n", vb, db, vb + db, (double)(vb + db) / 3.0);
    CHECK(vb == 12 + 7 + 16 * 6); /* 115 */
    CHECK(db == 12 + 4 + 1 + 2 + 2 * 2 + 2 + 3 * 4 + 4 + 4 + 2); /* 47 */
    CHECK(vb + db < 300);
    free(t);
}

/* es_proto_frame_next, the reader both ends use: fed a stream of two frames one byte at a time, it
 * reports each whole frame exactly when its last byte has arrived; a header it cannot trust fails. */
static void test_frame_next(void) {
    uint8_t buf[256];
    es_wbuf w;
    es_wbuf_init(&w, buf, sizeof buf);
    es_err err = {{0}};
    const es_msg_ping p = {.nonce = 42};
    const es_msg_close cl = {.stop = ES_STOP_CLIENT};
    CHECK_OK(es_proto_put_ping(&w, ES_FRAME_PING, &p, &err), &err);
    const size_t first = w.len;
    CHECK_OK(es_proto_put_close(&w, 7, &cl, &err), &err);
    const size_t total = w.len;
    size_t at = 0, frames = 0;
    for (size_t have = 0; have <= total; have++) {
        es_frame_header h;
        size_t len = 1;
        CHECK_OK(es_proto_frame_next(buf + at, have - at, ES_PROTO_MAX_PAYLOAD_DEFAULT, &h, &len, &err), &err);
        if (len == 0) continue;
        frames++;
        CHECK(frames == 1 ? (have == first && h.type == ES_FRAME_PING) : (have == total && h.type == ES_FRAME_CLOSE && h.session == 7));
        at += len;
    }
    CHECK(frames == 2 && at == total);
    /* a payload above the limit: ES_ERR_RANGE before the payload arrives; garbage: ES_ERR_FORMAT */
    es_frame_header h;
    size_t len = 0;
    CHECK(es_proto_frame_next(buf + first, ES_PROTO_HEADER_SIZE, 0, &h, &len, &err) == ES_ERR_RANGE && len == 0);
    uint8_t junk[ES_PROTO_HEADER_SIZE];
    memset(junk, 0xee, sizeof junk);
    CHECK(es_proto_frame_next(junk, sizeof junk, ES_PROTO_MAX_PAYLOAD_DEFAULT, &h, &len, &err) == ES_ERR_FORMAT && len == 0);
}

/* EARLY (version 2): the golden bytes, a round trip under the hostile sweep, and the range checks an
 * edge relies on (path order, token count, exit layer). */
/* VERIFY's drafted field (version 3): vflags bits 1-2. A version 1..2 VERIFY (bits 0) decodes as fresh
 * with the same bytes as before; every origin round-trips canonically, with and without proposals;
 * an origin outside es_tree_origin is refused by the encoder, bits above the field by the decoder. */
static void test_verify_drafted(void) {
    es_err err = {{0}};
    size_t n;
    es_spec_tree *t = malloc(sizeof *t), *g = malloc(sizeof *g);
    es_msg_verify m = {.round = 7, .tree = t}, gm = {.tree = g, .drafted = 99};
    memset(t, 0, sizeof *t);
    t->n = 2;
    t->token[0] = 5; t->parent[0] = -1; t->depth[0] = 1;
    t->token[1] = 300; t->parent[1] = 0; t->depth[1] = 2;
    static const uint8_t gold[] = {7, 0, 0, 0, 0, 2, 0, 5, 0, 0, 0, 0xff, 0xff, 44, 1, 0, 0, 0, 0}; /* as in test_verify */
    const uint8_t *p = encode(enc_verify, &m, ES_FRAME_VERIFY, g_session, &n, false, "VERIFY fresh");
    CHECK(n == sizeof gold && memcmp(p, gold, n) == 0); /* fresh: what a version 1..2 edge sends */
    CHECK_OK(es_proto_get_verify(p, n, &gm, 16, &err), &err);
    CHECK(gm.drafted == ES_TREE_FRESH);
    uint8_t bytes[sizeof gold];
    for (int o = 0; o < ES_TREE_ORIGINS; o++)
        for (int hq = 0; hq < 2; hq++) {
            rand_tree(t, 3, hq, 4);
            m.drafted = (uint8_t)o;
            char what[64];
            snprintf(what, sizeof what, "VERIFY drafted %s q=%d", es_tree_origin_name(o), hq);
            p = encode(enc_verify, &m, ES_FRAME_VERIFY, g_session, &n, o == ES_TREE_BET_MISS, what);
            CHECK(n > 4 && p[4] == (uint8_t)((hq ? ES_VERIFY_HAS_Q : 0) | o << 1));
            gm.drafted = 99;
            CHECK_OK(es_proto_get_verify(p, n, &gm, 16, &err), &err);
            CHECK_MSG(gm.drafted == o && g->has_q == (hq != 0), "%s: drafted %u", what, gm.drafted);
            check_tree_equal(t, g, what);
            CHECK_MSG(canonical(ES_FRAME_VERIFY, g_session, p, n), "%s: not canonical", what);
        }
    /* golden: bet_miss, no proposals */
    memset(t, 0, sizeof *t);
    t->n = 2;
    t->token[0] = 5; t->parent[0] = -1;
    t->token[1] = 300; t->parent[1] = 0;
    m.drafted = ES_TREE_BET_MISS;
    p = encode(enc_verify, &m, ES_FRAME_VERIFY, g_session, &n, false, "VERIFY bet_miss");
    memcpy(bytes, gold, sizeof gold);
    bytes[4] = 2 << 1;
    CHECK(n == sizeof bytes && memcmp(p, bytes, n) == 0);
    /* out of range: the encoder refuses an origin past the enum, the decoder any bit above the field */
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    m.drafted = ES_TREE_ORIGINS;
    CHECK(es_proto_put_verify(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0 && strstr(err.msg, "drafted"));
    m.drafted = 0xff;
    CHECK(es_proto_put_verify(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    for (int bit = 3; bit < 8; bit++) {
        memcpy(bytes, gold, sizeof gold);
        bytes[4] = (uint8_t)(1u << bit | ES_TREE_EARLY_HIT << 1);
        CHECK_MSG(es_proto_get_verify(bytes, sizeof bytes, &gm, 16, &err) == ES_ERR_FORMAT, "vflags 0x%x accepted", bytes[4]);
        CHECK(es_proto_check_payload(ES_FRAME_VERIFY, bytes, sizeof bytes, &err) == ES_ERR_FORMAT);
    }
    /* the level constants: drafted arrived with version 3, logprobs and grammars with 4, the highest */
    CHECK(ES_PROTO_LEVEL_MAX == ES_PROTO_LEVEL_API && ES_PROTO_LEVEL_API > ES_PROTO_LEVEL_BET && ES_PROTO_LEVEL_BET > ES_PROTO_LEVEL_EARLY);
    free(t);
    free(g);
}

static void test_early(void) {
    es_err err = {{0}};
    es_msg_early m = {.round = 3, .layer = 4}, g;
    m.v.n_accepted = 2;
    m.v.path[0] = 0;
    m.v.path[1] = 2;
    m.v.n_tokens = 3;
    m.v.tokens[0] = 10; m.v.tokens[1] = 11; m.v.tokens[2] = 12;
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    CHECK_OK(es_proto_put_early(&w, 7, &m, &err), &err);
    static const uint8_t gold[] = {26, 0, 0, 0, 12, 1, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 4, 0, 2, 0, 0, 0, 2, 0,
                                   3, 0, 10, 0, 0, 0, 11, 0, 0, 0, 12, 0, 0, 0};
    CHECK(w.len == sizeof gold && memcmp(w.data, gold, sizeof gold) == 0);
    size_t n;
    const uint8_t *p = encode(enc_early, &m, ES_FRAME_EARLY, g_session, &n, true, "EARLY");
    CHECK_OK(es_proto_get_early(p, n, &g, &err), &err);
    CHECK(g.round == 3 && g.layer == 4 && g.v.n_accepted == 2 && g.v.path[1] == 2 && g.v.n_tokens == 3 && g.v.bonus == 12);
    CHECK_OK(es_proto_check_payload(ES_FRAME_EARLY, p, n, &err), &err);
    uint8_t bad[64];
    memcpy(bad, p, n);
    bad[10] = 0; /* path 0,0: not increasing */
    CHECK(es_proto_get_early(bad, n, &g, &err) == ES_ERR_FORMAT && strstr(err.msg, "EARLY") != NULL);
    memcpy(bad, p, n);
    bad[4] = bad[5] = 0; /* layer 0 */
    CHECK(es_proto_get_early(bad, n, &g, &err) == ES_ERR_FORMAT);
    memcpy(bad, p, n);
    bad[12] = 2; /* 2 tokens for 2 accepted nodes */
    CHECK(es_proto_get_early(bad, n, &g, &err) == ES_ERR_FORMAT);
    memcpy(bad, p, n);
    bad[17] = 0x80; /* a negative token */
    CHECK(es_proto_get_early(bad, n, &g, &err) == ES_ERR_FORMAT);
    CHECK(es_proto_get_early(p, n - 1, &g, &err) == ES_ERR_FORMAT); /* short */
    m.v.n_tokens = 2;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    CHECK(es_proto_put_early(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
}

/* es_fail adding context to the message already in err (as the edge does with a decoder's message):
 * the old text survives whole after the prefix; control bytes from a peer are defanged. */
static void test_err_context(void) {
    es_err err = {{0}};
    es_fail(&err, ES_ERR_FORMAT, "frame of %d bytes\x1b[2J", 7);
    CHECK(es_fail(&err, ES_ERR_PROTOCOL, "malformed VERDICT: %s", err.msg) == ES_ERR_PROTOCOL);
    CHECK_MSG(!strcmp(err.msg, "malformed VERDICT: frame of 7 bytes?[2J"), "[%s]", err.msg);
}

/* Version 4's fields: OPEN's logprobs and grammar, and the log-probability blocks of VERDICT and
 * TOKENS; their limits on both sides, and hand-made payloads that break them. */
static void lp_fill(es_token_logprob *lp, int n, int top) {
    for (int i = 0; i < n; i++) {
        lp[i].logprob = -(float)rnd(1000) / 100.0f;
        lp[i].n_top = top;
        for (int k = 0; k < top; k++) {
            lp[i].top_id[k] = (int32_t)rnd(150000);
            lp[i].top_logprob[k] = -(float)k * 0.5f;
        }
    }
}

static bool lp_equal(const es_token_logprob *a, const es_token_logprob *b, int n) {
    for (int i = 0; i < n; i++) {
        if (a[i].logprob != b[i].logprob || a[i].n_top != b[i].n_top) return false;
        for (int k = 0; k < a[i].n_top; k++)
            if (a[i].top_id[k] != b[i].top_id[k] || a[i].top_logprob[k] != b[i].top_logprob[k]) return false;
    }
    return true;
}

static void test_api_fields(void) {
    es_err err = {{0}};
    size_t n;
    static const char schema[] = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}";
    int32_t prompt[8] = {1, 5, 6, 7, 8, 9, 10, 11}, got[8];
    es_msg_open m = {.mode = ES_MODE_EDGE, .rule = ES_ACCEPT_GREEDY, .max_tokens = 16, .top_p = 1, .n_prompt = 8, .prompt = prompt,
                     .flags = ES_OPEN_LOGPROBS | ES_OPEN_GRAMMAR, .top_logprobs = 5, .grammar_kind = ES_PROTO_GRAMMAR_SCHEMA,
                     .grammar_done = 3, .schema = schema, .schema_len = (uint32_t)strlen(schema)};
    const uint8_t *p = encode(enc_open, &m, ES_FRAME_OPEN, g_session, &n, true, "OPEN logprobs + schema");
    es_msg_open g = {.prompt = got};
    CHECK_OK(es_proto_get_open(p, n, &g, 8, &err), &err);
    CHECK(g.flags == (ES_OPEN_LOGPROBS | ES_OPEN_GRAMMAR) && g.top_logprobs == 5 && g.grammar_kind == ES_PROTO_GRAMMAR_SCHEMA &&
          g.grammar_done == 3 && g.schema_len == m.schema_len && !memcmp(g.schema, schema, g.schema_len));
    m.flags = ES_OPEN_GRAMMAR | ES_OPEN_PENALTY_BIAS; /* with the penalty block before it */
    m.repeat_penalty = 1.1f;
    m.repeat_last_n = 64;
    m.grammar_kind = ES_PROTO_GRAMMAR_JSON_OBJECT;
    m.schema = NULL;
    m.schema_len = 0;
    p = encode(enc_open, &m, ES_FRAME_OPEN, g_session, &n, true, "OPEN penalties + json_object");
    CHECK_OK(es_proto_get_open(p, n, &g, 8, &err), &err);
    CHECK(g.grammar_kind == ES_PROTO_GRAMMAR_JSON_OBJECT && g.schema == NULL && g.repeat_penalty == 1.1f && g.top_logprobs == 0);
    /* the encoder refuses what the decoder would */
    es_wbuf w;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    m.schema = schema;
    m.schema_len = 3; /* bytes with json_object */
    CHECK(es_proto_put_open(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    m.grammar_kind = 3;
    CHECK(es_proto_put_open(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    m.grammar_kind = ES_PROTO_GRAMMAR_SCHEMA;
    m.schema_len = 0;
    CHECK(es_proto_put_open(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    m.schema_len = ES_PROTO_MAX_SCHEMA + 1;
    CHECK(es_proto_put_open(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    m.schema = "ab\0c";
    m.schema_len = 4;
    CHECK(es_proto_put_open(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0 && strstr(err.msg, "NUL"));
    m.schema = schema;
    m.schema_len = (uint32_t)strlen(schema);
    m.grammar_done = 8; /* the whole prompt */
    CHECK(es_proto_put_open(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    m.grammar_done = 0;
    m.flags = ES_OPEN_LOGPROBS;
    m.top_logprobs = ES_SPEC_MAX_TOP_LOGPROBS + 1;
    CHECK(es_proto_put_open(&w, 1, &m, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    m.top_logprobs = ES_SPEC_MAX_TOP_LOGPROBS;
    CHECK_OK(es_proto_put_open(&w, 1, &m, &err), &err);
    /* hand-made: a schema length above the limit with no bytes behind it */
    raw *r = calloc(1, sizeof *r);
    r8(r, ES_MODE_AR); r8(r, 0); r32(r, 4); rf(r, 0); rf(r, 1); rf(r, 0); r32(r, 0); r64(r, 0); r16(r, 0);
    r32(r, ES_OPEN_GRAMMAR); r32(r, 1); r32(r, 1); r8(r, ES_PROTO_GRAMMAR_SCHEMA); r32(r, 0); r32(r, 0xffffffffu);
    CHECK(es_proto_get_open(r->b, r->n, &g, 8, &err) == ES_ERR_FORMAT && strstr(err.msg, "schema"));

    /* VERDICT with its block: round trip, hostile sweeps (the block's own prefixes included) */
    es_msg_verdict *v = calloc(1, sizeof *v), *gv = calloc(1, sizeof *gv);
    v->round = 4;
    v->v.n_accepted = 2;
    v->v.path[0] = 0;
    v->v.path[1] = 2;
    v->v.n_tokens = 3;
    v->v.tokens[0] = 10; v->v.tokens[1] = 11; v->v.tokens[2] = 12;
    v->has_lp = true;
    lp_fill(v->lp, 3, 4);
    v->lp[1].n_top = 0;
    g_tail_ok = 4 + 1 + 2 + 2 * 2 + 2 + 4 * 3 + 4 + 4 + 2;
    p = encode(enc_verdict, v, ES_FRAME_VERDICT, g_session, &n, true, "VERDICT logprobs");
    g_tail_ok = 0;
    CHECK_OK(es_proto_get_verdict(p, n, gv, &err), &err);
    CHECK(gv->has_lp && gv->v.n_tokens == 3 && lp_equal(gv->lp, v->lp, 3));
    v->has_lp = false;
    p = encode(enc_verdict, v, ES_FRAME_VERDICT, g_session, &n, false, "VERDICT without");
    CHECK_OK(es_proto_get_verdict(p, n, gv, &err), &err);
    CHECK(!gv->has_lp);
    v->has_lp = true;
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    v->lp[0].logprob = 0.5f; /* a probability above 1 */
    CHECK(es_proto_put_verdict(&w, 1, v, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    v->lp[0].logprob = NAN;
    CHECK(es_proto_put_verdict(&w, 1, v, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    v->lp[0].logprob = -1;
    v->lp[2].top_id[1] = -4;
    CHECK(es_proto_put_verdict(&w, 1, v, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    v->lp[2].top_id[1] = 4;
    v->lp[2].n_top = ES_SPEC_MAX_TOP_LOGPROBS + 1;
    CHECK(es_proto_put_verdict(&w, 1, v, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    /* hand-made: an alternatives count above the limit, an infinite logprob */
    r->n = 0;
    r32(r, 1); r8(r, 0); r16(r, 0); r16(r, 1); r32(r, 9); r32(r, 0); r32(r, 0); r16(r, 0);
    const size_t base = r->n;
    rf(r, -1); r8(r, ES_SPEC_MAX_TOP_LOGPROBS + 1);
    CHECK(es_proto_get_verdict(r->b, r->n, gv, &err) == ES_ERR_FORMAT && strstr(err.msg, "alternatives"));
    r->n = base;
    rf(r, -INFINITY); r8(r, 0);
    CHECK(es_proto_get_verdict(r->b, r->n, gv, &err) == ES_ERR_FORMAT);
    r->n = base;
    rf(r, -2); r8(r, 1); r32(r, 7); rf(r, -0.1f);
    CHECK_OK(es_proto_get_verdict(r->b, r->n, gv, &err), &err);
    CHECK(gv->has_lp && gv->lp[0].logprob == -2 && gv->lp[0].n_top == 1 && gv->lp[0].top_id[0] == 7);

    /* TOKENS with the block: up to ES_PROTO_MAX_LP_TOKENS per frame; a block without storage refused */
    static int32_t toks[ES_PROTO_MAX_LP_TOKENS + 1], gt[ES_PROTO_MAX_TOKENS_FRAME];
    static es_token_logprob lp[ES_PROTO_MAX_LP_TOKENS + 1], glp[ES_PROTO_MAX_LP_TOKENS];
    for (int i = 0; i <= ES_PROTO_MAX_LP_TOKENS; i++) toks[i] = (int32_t)rnd(1000);
    lp_fill(lp, ES_PROTO_MAX_LP_TOKENS + 1, ES_SPEC_MAX_TOP_LOGPROBS);
    es_msg_tokens t = {.stop = ES_STOP_NONE, .n = 5, .tokens = toks, .has_lp = true, .lp = lp}, gtm = {.tokens = gt, .lp = glp};
    g_tail_ok = 1 + 2 + 4 * 5;
    p = encode(enc_tokens, &t, ES_FRAME_TOKENS, g_session, &n, true, "TOKENS logprobs");
    g_tail_ok = 0;
    CHECK_OK(es_proto_get_tokens(p, n, &gtm, &err), &err);
    CHECK(gtm.has_lp && gtm.n == 5 && lp_equal(glp, lp, 5));
    gtm.lp = NULL;
    CHECK(es_proto_get_tokens(p, n, &gtm, &err) == ES_ERR_FORMAT && strstr(err.msg, "asked"));
    t.n = ES_PROTO_MAX_LP_TOKENS;
    p = encode(enc_tokens, &t, ES_FRAME_TOKENS, g_session, &n, false, "TOKENS logprobs max");
    gtm.lp = glp;
    CHECK_OK(es_proto_get_tokens(p, n, &gtm, &err), &err);
    CHECK(gtm.n == ES_PROTO_MAX_LP_TOKENS && lp_equal(glp, lp, ES_PROTO_MAX_LP_TOKENS));
    es_wbuf_init(&w, g_buf, sizeof g_buf);
    t.n = ES_PROTO_MAX_LP_TOKENS + 1;
    CHECK(es_proto_put_tokens(&w, 1, &t, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    t.n = 2;
    t.lp = NULL;
    CHECK(es_proto_put_tokens(&w, 1, &t, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    free(v);
    free(gv);
    free(r);
}

int main(void) {
    es_rng_seed(&g_rng, 0x9d07);
    test_err_context();
    test_frame_next();
    test_header();
    test_hello_welcome();
    test_open();
    test_small_frames();
    test_tokens();
    test_verify();
    test_verify_drafted();
    test_verdict();
    test_early();
    test_api_fields();
    test_round_size();
    return es_test_finish("test_proto");
}
