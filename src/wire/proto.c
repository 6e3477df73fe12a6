/* proto.c — encoders and decoders of the edge–server wire protocol (layout in proto.h and
 * docs/PROTOCOL.md).
 *
 * Every integer is packed byte by byte, little-endian, so the code is independent of host endianness
 * and struct padding. Encoders compute the exact payload size first and write only once it is known to
 * fit, so a failed encode leaves the buffer untouched. Decoders read through a cursor that refuses to
 * step past the payload; every count is checked against its protocol limit and against the bytes left
 * before any element is read, and a payload must be consumed exactly. */
#include "wire/proto.h"

#include <math.h>
#include <string.h>

#include "util/err.h"

/* ---- names ---- */

const char *es_proto_err_name(int code) {
    static const char *const names[] = {"none",    "version", "vocab",   "malformed", "too_large",
                                        "busy",    "no_session", "state", "invalid", "context",
                                        "auth",    "timeout", "shutdown", "internal", "unsupported"};
    if (code < 0 || code >= (int)(sizeof names / sizeof names[0])) return "unknown";
    return names[code];
}

const char *es_frame_type_name(int type) {
    static const char *const names[] = {"?",      "HELLO", "WELCOME", "OPEN",  "OPENED", "VERIFY",
                                        "VERDICT", "TOKENS", "CLOSE", "ERROR", "PING",   "PONG", "EARLY"};
    if (type < 1 || type >= (int)(sizeof names / sizeof names[0])) return "?";
    return names[type];
}

static bool type_known(int type) { return type >= ES_FRAME_HELLO && type <= ES_FRAME_EARLY; }

/* ---- little-endian packing ---- */

static uint8_t *put_u8(uint8_t *p, uint8_t v) {
    p[0] = v;
    return p + 1;
}
static uint8_t *put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}
static uint8_t *put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}
static uint8_t *put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}
static uint8_t *put_i32(uint8_t *p, int32_t v) { return put_u32(p, (uint32_t)v); }
static uint8_t *put_f32(uint8_t *p, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits); /* IEEE-754 binary32 bits */
    return put_u32(p, bits);
}
static uint8_t *put_bytes(uint8_t *p, const void *s, size_t n) {
    if (n) memcpy(p, s, n);
    return p + n;
}

static uint16_t ld_u16(const uint8_t *p) { return (uint16_t)(p[0] | (uint16_t)p[1] << 8); }
static uint32_t ld_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void es_proto_put_header(uint8_t out[ES_PROTO_HEADER_SIZE], const es_frame_header *h) {
    uint8_t *p = put_u32(out, h->len);
    p = put_u8(p, h->type);
    p = put_u8(p, h->version);
    p = put_u16(p, h->flags);
    put_u32(p, h->session);
}

es_status es_proto_get_header(const uint8_t in[ES_PROTO_HEADER_SIZE], uint32_t max_payload, es_frame_header *h, es_err *err) {
    h->len = ld_u32(in);
    h->type = in[4];
    h->version = in[5];
    h->flags = ld_u16(in + 6);
    h->session = ld_u32(in + 8);
    if (!type_known(h->type)) return es_fail(err, ES_ERR_FORMAT, "frame type %u is unknown", h->type);
    if (h->version != ES_PROTO_VERSION)
        return es_fail(err, ES_ERR_FORMAT, "%s frame of protocol version %u (this side speaks %d)", es_frame_type_name(h->type),
                       h->version, ES_PROTO_VERSION);
    if (h->len > max_payload)
        return es_fail(err, ES_ERR_RANGE, "%s frame of %u payload bytes (limit %u)", es_frame_type_name(h->type), h->len, max_payload);
    return ES_OK;
}

es_status es_proto_frame_next(const uint8_t *hdr, size_t avail, uint32_t max_payload, es_frame_header *h, size_t *frame_len,
                              es_err *err) {
    *frame_len = 0;
    if (avail < ES_PROTO_HEADER_SIZE) return ES_OK;
    const es_status st = es_proto_get_header(hdr, max_payload, h, err);
    if (st != ES_OK) return st;
    if (avail - ES_PROTO_HEADER_SIZE >= h->len) *frame_len = ES_PROTO_HEADER_SIZE + (size_t)h->len;
    return ES_OK;
}

void es_wbuf_init(es_wbuf *w, uint8_t *data, size_t cap) {
    w->data = data;
    w->cap = data ? cap : 0;
    w->len = 0;
    w->overflow = 0;
}

/* Reserves header + plen bytes at the end of w and writes the header; *cur points at the payload.
 * Nothing is written when it does not fit. */
static es_status frame_begin(es_wbuf *w, int type, uint32_t session, uint64_t plen, uint8_t **cur, es_err *err) {
    if (!w || (!w->data && w->cap)) return es_fail(err, ES_ERR_INVALID_ARG, "no output buffer");
    if (plen > UINT32_MAX) return es_fail(err, ES_ERR_INVALID_ARG, "%s payload of %llu bytes", es_frame_type_name(type),
                                          (unsigned long long)plen);
    const uint64_t need = ES_PROTO_HEADER_SIZE + plen;
    if (w->len > w->cap || w->cap - w->len < need) {
        w->overflow = 1;
        return es_fail(err, ES_ERR_RANGE, "%s frame of %llu bytes does not fit (%zu of %zu bytes free)", es_frame_type_name(type),
                       (unsigned long long)need, w->len > w->cap ? (size_t)0 : w->cap - w->len, w->cap);
    }
    es_frame_header h = {(uint32_t)plen, (uint8_t)type, ES_PROTO_VERSION, 0, session};
    es_proto_put_header(w->data + w->len, &h);
    *cur = w->data + w->len + ES_PROTO_HEADER_SIZE;
    return ES_OK;
}

/* Commits a frame begun with frame_begin once the payload ended at `end`. */
static es_status frame_end(es_wbuf *w, uint64_t plen, const uint8_t *end, es_err *err) {
    const size_t wrote = (size_t)(end - (w->data + w->len));
    if (wrote != ES_PROTO_HEADER_SIZE + plen) /* a size computation disagrees with the writer: a bug */
        return es_fail(err, ES_ERR_INTERNAL, "frame encoder wrote %zu bytes, sized %llu", wrote,
                       (unsigned long long)(ES_PROTO_HEADER_SIZE + plen));
    w->len += wrote;
    return ES_OK;
}

/* Length of a NUL-terminated string held in a char[cap + 1] field; -1 if it is not terminated there. */
static long field_len(const char *s, size_t cap) {
    const size_t l = strnlen(s, cap + 1);
    return l > cap ? -1 : (long)l;
}

/* ---- decoding cursor ---- */

typedef struct rd {
    const uint8_t *p;
    size_t n, off;
    const char *what; /* frame name for messages */
} rd;

static bool rd_has(const rd *r, uint64_t k) { return r->n - r->off >= k; }

static es_status rd_short(const rd *r, const char *field, es_err *err) {
    return es_fail(err, ES_ERR_FORMAT, "%s payload ends inside %s (offset %zu of %zu)", r->what, field, r->off, r->n);
}

#define GET_FN(name, T, k, expr)                                            \
    static bool name(rd *r, T *v) {                                         \
        if (!rd_has(r, k)) return false;                                    \
        const uint8_t *p = r->p + r->off;                                   \
        *v = (T)(expr);                                                     \
        r->off += k;                                                        \
        return true;                                                        \
    }
GET_FN(get_u8, uint8_t, 1, p[0])
GET_FN(get_u16, uint16_t, 2, ld_u16(p))
GET_FN(get_u32, uint32_t, 4, ld_u32(p))
GET_FN(get_u64, uint64_t, 8, (uint64_t)ld_u32(p) | (uint64_t)ld_u32(p + 4) << 32)
#undef GET_FN

static bool get_i16(rd *r, int16_t *v) {
    uint16_t u;
    if (!get_u16(r, &u)) return false;
    *v = (int16_t)(u >= 0x8000u ? (int32_t)u - 0x10000 : (int32_t)u); /* two's complement without impl-defined casts */
    return true;
}
static bool get_i32(rd *r, int32_t *v) {
    uint32_t u;
    if (!get_u32(r, &u)) return false;
    *v = u >= 0x80000000u ? (int32_t)(u - 0x80000000u) - INT32_MAX - 1 : (int32_t)u;
    return true;
}
static bool get_f32(rd *r, float *v) {
    uint32_t bits;
    if (!get_u32(r, &bits)) return false;
    memcpy(v, &bits, sizeof *v);
    return true;
}

/* u16 length + bytes into out[cap + 1], NUL-terminated; refuses a length above cap or an embedded NUL. */
static es_status get_str(rd *r, char *out, size_t cap, const char *field, es_err *err) {
    uint16_t len;
    if (!get_u16(r, &len)) return rd_short(r, field, err);
    if (len > cap) return es_fail(err, ES_ERR_FORMAT, "%s: %s of %u bytes (at most %zu)", r->what, field, len, cap);
    if (!rd_has(r, len)) return rd_short(r, field, err);
    const uint8_t *s = r->p + r->off;
    if (memchr(s, 0, len)) return es_fail(err, ES_ERR_FORMAT, "%s: %s contains a NUL byte", r->what, field);
    memcpy(out, s, len);
    out[len] = 0;
    r->off += len;
    return ES_OK;
}

static es_status rd_finish(const rd *r, es_err *err) {
    if (r->off != r->n) return es_fail(err, ES_ERR_FORMAT, "%s payload has %zu trailing bytes", r->what, r->n - r->off);
    return ES_OK;
}

#define NEED(call, field)                                \
    do {                                                 \
        if (!(call)) return rd_short(&r, field, err);    \
    } while (0)

static bool is_prob(float v) { return isfinite(v) && v >= 0.0f && v <= 1.0f; }

/* ---- HELLO ---- */

/* Decoder-side rules, shared by the encoder so that what encodes decodes. */
static es_status hello_check(const es_msg_hello *m, es_err *err) {
    if (m->version_min < 1 || m->version_min > m->version_max)
        return es_fail(err, ES_ERR_FORMAT, "HELLO: version range %u..%u", m->version_min, m->version_max);
    if (m->has_draft > 1) return es_fail(err, ES_ERR_FORMAT, "HELLO: has_draft %u", m->has_draft);
    if (m->has_draft) {
        if (m->draft_n_vocab < 1 || m->draft_n_vocab > INT32_MAX)
            return es_fail(err, ES_ERR_FORMAT, "HELLO: draft vocabulary of %u tokens", m->draft_n_vocab);
        if (m->draft_bos < -1 || m->draft_bos >= (int64_t)m->draft_n_vocab || m->draft_eos < -1 ||
            m->draft_eos >= (int64_t)m->draft_n_vocab)
            return es_fail(err, ES_ERR_FORMAT, "HELLO: draft BOS/EOS %d/%d outside a vocabulary of %u", m->draft_bos,
                           m->draft_eos, m->draft_n_vocab);
    }
    return ES_OK;
}

es_status es_proto_put_hello(es_wbuf *w, const es_msg_hello *m, es_err *err) {
    const long ln = field_len(m->name, ES_PROTO_MAX_NAME), lk = field_len(m->api_key, ES_PROTO_MAX_KEY);
    if (ln < 0 || lk < 0) return es_fail(err, ES_ERR_INVALID_ARG, "HELLO: name or api key not terminated within its limit");
    es_status st = hello_check(m, err);
    if (st != ES_OK) return st == ES_ERR_FORMAT ? ES_ERR_INVALID_ARG : st;
    const uint64_t plen = 2 + 2 + 2 + (uint64_t)ln + 1 + 8 + 4 + 4 + 4 + 2 + (uint64_t)lk;
    uint8_t *p;
    if ((st = frame_begin(w, ES_FRAME_HELLO, 0, plen, &p, err)) != ES_OK) return st;
    p = put_u16(p, m->version_min);
    p = put_u16(p, m->version_max);
    p = put_u16(p, (uint16_t)ln);
    p = put_bytes(p, m->name, (size_t)ln);
    p = put_u8(p, m->has_draft);
    p = put_u64(p, m->draft_fingerprint);
    p = put_u32(p, m->draft_n_vocab);
    p = put_i32(p, m->draft_bos);
    p = put_i32(p, m->draft_eos);
    p = put_u16(p, (uint16_t)lk);
    p = put_bytes(p, m->api_key, (size_t)lk);
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_hello(const uint8_t *pl, size_t n, es_msg_hello *m, es_err *err) {
    rd r = {pl, n, 0, "HELLO"};
    memset(m, 0, sizeof *m);
    es_status st;
    NEED(get_u16(&r, &m->version_min), "version_min");
    NEED(get_u16(&r, &m->version_max), "version_max");
    if ((st = get_str(&r, m->name, ES_PROTO_MAX_NAME, "name", err)) != ES_OK) return st;
    NEED(get_u8(&r, &m->has_draft), "has_draft");
    NEED(get_u64(&r, &m->draft_fingerprint), "draft_fingerprint");
    NEED(get_u32(&r, &m->draft_n_vocab), "draft_n_vocab");
    NEED(get_i32(&r, &m->draft_bos), "draft_bos");
    NEED(get_i32(&r, &m->draft_eos), "draft_eos");
    if ((st = get_str(&r, m->api_key, ES_PROTO_MAX_KEY, "api_key", err)) != ES_OK) return st;
    if ((st = rd_finish(&r, err)) != ES_OK) return st;
    return hello_check(m, err);
}

/* ---- WELCOME ---- */

static es_status welcome_check(const es_msg_welcome *m, es_err *err) {
    if (m->version < 1) return es_fail(err, ES_ERR_FORMAT, "WELCOME: version %u", m->version);
    if (m->n_vocab < 1 || m->n_vocab > INT32_MAX) return es_fail(err, ES_ERR_FORMAT, "WELCOME: vocabulary of %u tokens", m->n_vocab);
    if (m->bos < -1 || m->bos >= (int64_t)m->n_vocab || m->eos < -1 || m->eos >= (int64_t)m->n_vocab)
        return es_fail(err, ES_ERR_FORMAT, "WELCOME: BOS/EOS %d/%d outside a vocabulary of %u", m->bos, m->eos, m->n_vocab);
    if (m->max_tree_nodes > ES_SPEC_MAX_NODES)
        return es_fail(err, ES_ERR_FORMAT, "WELCOME: max_tree_nodes %u above the protocol limit %d", m->max_tree_nodes, ES_SPEC_MAX_NODES);
    if (m->has_server_draft > 1) return es_fail(err, ES_ERR_FORMAT, "WELCOME: has_server_draft %u", m->has_server_draft);
    return ES_OK;
}

es_status es_proto_put_welcome(es_wbuf *w, const es_msg_welcome *m, es_err *err) {
    const long ln = field_len(m->name, ES_PROTO_MAX_NAME);
    if (ln < 0) return es_fail(err, ES_ERR_INVALID_ARG, "WELCOME: name not terminated within %d bytes", ES_PROTO_MAX_NAME);
    es_status st = welcome_check(m, err);
    if (st != ES_OK) return ES_ERR_INVALID_ARG;
    const uint64_t plen = 2 + 2 + (uint64_t)ln + 8 + 4 + 4 + 4 + 4 * 5 + 1;
    uint8_t *p;
    if ((st = frame_begin(w, ES_FRAME_WELCOME, 0, plen, &p, err)) != ES_OK) return st;
    p = put_u16(p, m->version);
    p = put_u16(p, (uint16_t)ln);
    p = put_bytes(p, m->name, (size_t)ln);
    p = put_u64(p, m->target_fingerprint);
    p = put_u32(p, m->n_vocab);
    p = put_i32(p, m->bos);
    p = put_i32(p, m->eos);
    p = put_u32(p, m->n_ctx);
    p = put_u32(p, m->max_tree_nodes);
    p = put_u32(p, m->max_new_tokens);
    p = put_u32(p, m->max_payload);
    p = put_u32(p, m->rules);
    p = put_u8(p, m->has_server_draft);
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_welcome(const uint8_t *pl, size_t n, es_msg_welcome *m, es_err *err) {
    rd r = {pl, n, 0, "WELCOME"};
    memset(m, 0, sizeof *m);
    es_status st;
    NEED(get_u16(&r, &m->version), "version");
    if ((st = get_str(&r, m->name, ES_PROTO_MAX_NAME, "name", err)) != ES_OK) return st;
    NEED(get_u64(&r, &m->target_fingerprint), "target_fingerprint");
    NEED(get_u32(&r, &m->n_vocab), "n_vocab");
    NEED(get_i32(&r, &m->bos), "bos");
    NEED(get_i32(&r, &m->eos), "eos");
    NEED(get_u32(&r, &m->n_ctx), "n_ctx");
    NEED(get_u32(&r, &m->max_tree_nodes), "max_tree_nodes");
    NEED(get_u32(&r, &m->max_new_tokens), "max_new_tokens");
    NEED(get_u32(&r, &m->max_payload), "max_payload");
    NEED(get_u32(&r, &m->rules), "rules");
    NEED(get_u8(&r, &m->has_server_draft), "has_server_draft");
    if ((st = rd_finish(&r, err)) != ES_OK) return st;
    return welcome_check(m, err);
}

/* ---- OPEN ---- */

static es_status open_check(const es_msg_open *m, es_err *err) {
    if (m->mode > ES_MODE_SERVER_SPEC) return es_fail(err, ES_ERR_FORMAT, "OPEN: mode %u is unknown", m->mode);
    if (m->rule > ES_ACCEPT_SYNTHETIC) return es_fail(err, ES_ERR_FORMAT, "OPEN: acceptance rule %u is unknown", m->rule);
    if (m->max_tokens < 1) return es_fail(err, ES_ERR_FORMAT, "OPEN: max_tokens 0");
    if (!isfinite(m->temperature) || m->temperature < 0) return es_fail(err, ES_ERR_FORMAT, "OPEN: temperature %g", (double)m->temperature);
    if (!is_prob(m->top_p)) return es_fail(err, ES_ERR_FORMAT, "OPEN: top_p %g outside [0, 1]", (double)m->top_p);
    if (!is_prob(m->min_p)) return es_fail(err, ES_ERR_FORMAT, "OPEN: min_p %g outside [0, 1]", (double)m->min_p);
    if (m->top_k < 0) return es_fail(err, ES_ERR_FORMAT, "OPEN: top_k %d", m->top_k);
    if (m->n_stop > ES_PROTO_MAX_STOP) return es_fail(err, ES_ERR_FORMAT, "OPEN: %u stop tokens (at most %d)", m->n_stop, ES_PROTO_MAX_STOP);
    for (int i = 0; i < m->n_stop; i++)
        if (m->stop[i] < 0) return es_fail(err, ES_ERR_FORMAT, "OPEN: stop token %d", m->stop[i]);
    if (m->flags & ~(ES_OPEN_PROMPT_TEXT | ES_OPEN_PENALTY_BIAS | ES_OPEN_EARLY_EXIT | ES_OPEN_LOGPROBS | ES_OPEN_GRAMMAR))
        return es_fail(err, ES_ERR_FORMAT, "OPEN: unknown flags 0x%x", m->flags);
    return ES_OK;
}

/* The ES_OPEN_LOGPROBS and ES_OPEN_GRAMMAR fields (decoder: after they were read; encoder: before
 * writing). */
static es_status open_check_api(const es_msg_open *m, es_err *err) {
    if ((m->flags & ES_OPEN_LOGPROBS) && m->top_logprobs > ES_SPEC_MAX_TOP_LOGPROBS)
        return es_fail(err, ES_ERR_FORMAT, "OPEN: top_logprobs %u (at most %d)", m->top_logprobs, ES_SPEC_MAX_TOP_LOGPROBS);
    if (!(m->flags & ES_OPEN_GRAMMAR)) return ES_OK;
    const uint32_t n_prompt = (m->flags & ES_OPEN_PROMPT_TEXT) ? 0 : m->n_prompt;
    if (m->grammar_done > 0 && m->grammar_done >= n_prompt)
        return es_fail(err, ES_ERR_FORMAT, "OPEN: %u of %u prompt tokens are output already", m->grammar_done, n_prompt);
    if (m->grammar_kind == ES_PROTO_GRAMMAR_JSON_OBJECT) {
        if (m->schema_len) return es_fail(err, ES_ERR_FORMAT, "OPEN: a json_object grammar with %u schema bytes", m->schema_len);
        return ES_OK;
    }
    if (m->grammar_kind != ES_PROTO_GRAMMAR_SCHEMA) return es_fail(err, ES_ERR_FORMAT, "OPEN: grammar kind %u is unknown", m->grammar_kind);
    if (m->schema_len < 1 || m->schema_len > ES_PROTO_MAX_SCHEMA)
        return es_fail(err, ES_ERR_FORMAT, "OPEN: a schema of %u bytes (1..%d)", m->schema_len, ES_PROTO_MAX_SCHEMA);
    if (!m->schema) return es_fail(err, ES_ERR_FORMAT, "OPEN: %u schema bytes without storage", m->schema_len);
    if (memchr(m->schema, 0, m->schema_len)) return es_fail(err, ES_ERR_FORMAT, "OPEN: the schema contains a NUL byte");
    return ES_OK;
}

/* The ES_OPEN_PENALTY_BIAS fields (decoder: after they were read; encoder: before writing). */
static es_status open_check_ext(const es_msg_open *m, es_err *err) {
    if (!isfinite(m->repeat_penalty) || !(m->repeat_penalty > 0))
        return es_fail(err, ES_ERR_FORMAT, "OPEN: repeat_penalty %g", (double)m->repeat_penalty);
    if (m->repeat_last_n < 0 || m->repeat_last_n > ES_PROTO_MAX_LAST_N)
        return es_fail(err, ES_ERR_FORMAT, "OPEN: repeat_last_n %d outside 0..%d", m->repeat_last_n, ES_PROTO_MAX_LAST_N);
    if (!isfinite(m->presence_penalty) || !isfinite(m->frequency_penalty))
        return es_fail(err, ES_ERR_FORMAT, "OPEN: presence / frequency penalty %g / %g", (double)m->presence_penalty,
                       (double)m->frequency_penalty);
    if (m->n_bias > ES_SAMPLER_MAX_BIAS) return es_fail(err, ES_ERR_FORMAT, "OPEN: %u logit-bias entries (at most %d)", m->n_bias, ES_SAMPLER_MAX_BIAS);
    for (int i = 0; i < m->n_bias; i++)
        if (m->bias[i].id < 0 || !isfinite(m->bias[i].bias))
            return es_fail(err, ES_ERR_FORMAT, "OPEN: logit-bias entry %d (token %d, %g)", i, m->bias[i].id, (double)m->bias[i].bias);
    return ES_OK;
}

es_status es_proto_put_open(es_wbuf *w, uint32_t session, const es_msg_open *m, es_err *err) {
    es_status st = open_check(m, err);
    if (st != ES_OK) return ES_ERR_INVALID_ARG;
    const bool text = m->flags & ES_OPEN_PROMPT_TEXT;
    const uint32_t cnt = text ? m->text_len : m->n_prompt;
    if (cnt && !(text ? (const void *)m->text : (const void *)m->prompt))
        return es_fail(err, ES_ERR_INVALID_ARG, "OPEN: %u prompt %s without storage", cnt, text ? "bytes" : "tokens");
    if (text && memchr(m->text, 0, cnt)) return es_fail(err, ES_ERR_INVALID_ARG, "OPEN: prompt text contains a NUL byte");
    if (!text)
        for (uint32_t i = 0; i < cnt; i++)
            if (m->prompt[i] < 0) return es_fail(err, ES_ERR_INVALID_ARG, "OPEN: prompt token %u is %d", i, m->prompt[i]);
    /* the extension is sent when it says something, so default sessions stay readable by servers that
       predate it, or when the caller's flags ask for it (a decoded OPEN that carried it re-encodes to
       the same bytes) */
    const float pen = m->repeat_penalty == 0.0f ? 1.0f : m->repeat_penalty; /* 0: a zeroed message, not set */
    const bool ext = (m->flags & ES_OPEN_PENALTY_BIAS) || pen != 1.0f || m->presence_penalty != 0.0f ||
                     m->frequency_penalty != 0.0f || m->n_bias > 0;
    if (ext && pen == m->repeat_penalty && open_check_ext(m, err) != ES_OK) return ES_ERR_INVALID_ARG;
    if (ext && m->n_bias > ES_SAMPLER_MAX_BIAS) return es_fail(err, ES_ERR_INVALID_ARG, "OPEN: %u logit-bias entries", m->n_bias);
    const uint32_t flags = (m->flags & ~ES_OPEN_PENALTY_BIAS) | (ext ? ES_OPEN_PENALTY_BIAS : 0);
    if (open_check_api(m, err) != ES_OK) return ES_ERR_INVALID_ARG;
    const bool lp = flags & ES_OPEN_LOGPROBS, gr = flags & ES_OPEN_GRAMMAR;
    const uint64_t plen = 1 + 1 + 4 + 4 * 3 + 4 + 8 + 2 + 4 * (uint64_t)m->n_stop + 4 + 4 + (text ? 1 : 4) * (uint64_t)cnt +
                          (ext ? 4 + 4 + 4 + 4 + 2 + 8 * (uint64_t)m->n_bias : 0) + (lp ? 1 : 0) +
                          (gr ? 1 + 4 + 4 + (uint64_t)m->schema_len : 0);
    uint8_t *p;
    if ((st = frame_begin(w, ES_FRAME_OPEN, session, plen, &p, err)) != ES_OK) return st;
    p = put_u8(p, m->mode);
    p = put_u8(p, m->rule);
    p = put_u32(p, m->max_tokens);
    p = put_f32(p, m->temperature);
    p = put_f32(p, m->top_p);
    p = put_f32(p, m->min_p);
    p = put_i32(p, m->top_k);
    p = put_u64(p, m->seed);
    p = put_u16(p, m->n_stop);
    for (int i = 0; i < m->n_stop; i++) p = put_i32(p, m->stop[i]);
    p = put_u32(p, flags);
    p = put_u32(p, cnt);
    if (text)
        p = put_bytes(p, m->text, cnt);
    else
        for (uint32_t i = 0; i < cnt; i++) p = put_i32(p, m->prompt[i]);
    if (ext) {
        p = put_f32(p, pen);
        p = put_i32(p, m->repeat_last_n);
        p = put_f32(p, m->presence_penalty);
        p = put_f32(p, m->frequency_penalty);
        p = put_u16(p, m->n_bias);
        for (int i = 0; i < m->n_bias; i++) {
            p = put_i32(p, m->bias[i].id);
            p = put_f32(p, m->bias[i].bias);
        }
    }
    if (lp) p = put_u8(p, m->top_logprobs);
    if (gr) {
        p = put_u8(p, m->grammar_kind);
        p = put_u32(p, m->grammar_done);
        p = put_u32(p, m->schema_len);
        p = put_bytes(p, m->schema, m->schema_len);
    }
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_open(const uint8_t *pl, size_t n, es_msg_open *m, uint32_t prompt_cap, es_err *err) {
    rd r = {pl, n, 0, "OPEN"};
    int32_t *prompt = m->prompt; /* caller storage survives the reset */
    memset(m, 0, sizeof *m);
    m->prompt = prompt;
    es_status st;
    NEED(get_u8(&r, &m->mode), "mode");
    NEED(get_u8(&r, &m->rule), "rule");
    NEED(get_u32(&r, &m->max_tokens), "max_tokens");
    NEED(get_f32(&r, &m->temperature), "temperature");
    NEED(get_f32(&r, &m->top_p), "top_p");
    NEED(get_f32(&r, &m->min_p), "min_p");
    NEED(get_i32(&r, &m->top_k), "top_k");
    NEED(get_u64(&r, &m->seed), "seed");
    NEED(get_u16(&r, &m->n_stop), "n_stop");
    if (m->n_stop > ES_PROTO_MAX_STOP) return es_fail(err, ES_ERR_FORMAT, "OPEN: %u stop tokens (at most %d)", m->n_stop, ES_PROTO_MAX_STOP);
    if (!rd_has(&r, 4 * (uint64_t)m->n_stop)) return rd_short(&r, "stop tokens", err);
    for (int i = 0; i < m->n_stop; i++) NEED(get_i32(&r, &m->stop[i]), "stop");
    NEED(get_u32(&r, &m->flags), "flags");
    if ((st = open_check(m, err)) != ES_OK) return st;
    uint32_t cnt;
    NEED(get_u32(&r, &cnt), "prompt length");
    if (m->flags & ES_OPEN_PROMPT_TEXT) {
        if (!rd_has(&r, cnt)) return rd_short(&r, "prompt text", err);
        const uint8_t *s = r.p + r.off;
        if (memchr(s, 0, cnt)) return es_fail(err, ES_ERR_FORMAT, "OPEN: prompt text contains a NUL byte");
        m->text = (const char *)s;
        m->text_len = cnt;
        r.off += cnt;
    } else {
        if (!rd_has(&r, 4 * (uint64_t)cnt)) return rd_short(&r, "prompt tokens", err);
        if (cnt > prompt_cap || (cnt && !m->prompt))
            return es_fail(err, ES_ERR_RANGE, "OPEN: prompt of %u tokens (room for %u)", cnt, m->prompt ? prompt_cap : 0);
        for (uint32_t i = 0; i < cnt; i++) {
            get_i32(&r, &m->prompt[i]); /* bytes checked above */
            if (m->prompt[i] < 0) return es_fail(err, ES_ERR_FORMAT, "OPEN: prompt token %u is %d", i, m->prompt[i]);
        }
        m->n_prompt = cnt;
    }
    m->repeat_penalty = 1.0f;
    m->repeat_last_n = 64;
    if (m->flags & ES_OPEN_PENALTY_BIAS) {
        NEED(get_f32(&r, &m->repeat_penalty), "repeat_penalty");
        NEED(get_i32(&r, &m->repeat_last_n), "repeat_last_n");
        NEED(get_f32(&r, &m->presence_penalty), "presence_penalty");
        NEED(get_f32(&r, &m->frequency_penalty), "frequency_penalty");
        NEED(get_u16(&r, &m->n_bias), "n_bias");
        if (m->n_bias > ES_SAMPLER_MAX_BIAS)
            return es_fail(err, ES_ERR_FORMAT, "OPEN: %u logit-bias entries (at most %d)", m->n_bias, ES_SAMPLER_MAX_BIAS);
        if (!rd_has(&r, 8 * (uint64_t)m->n_bias)) return rd_short(&r, "logit bias", err);
        for (int i = 0; i < m->n_bias; i++) {
            get_i32(&r, &m->bias[i].id); /* bytes checked above */
            get_f32(&r, &m->bias[i].bias);
        }
        if ((st = open_check_ext(m, err)) != ES_OK) return st;
    }
    if (m->flags & ES_OPEN_LOGPROBS) NEED(get_u8(&r, &m->top_logprobs), "top_logprobs");
    if (m->flags & ES_OPEN_GRAMMAR) {
        NEED(get_u8(&r, &m->grammar_kind), "grammar kind");
        NEED(get_u32(&r, &m->grammar_done), "grammar done");
        NEED(get_u32(&r, &m->schema_len), "schema length");
        if (m->schema_len > ES_PROTO_MAX_SCHEMA)
            return es_fail(err, ES_ERR_FORMAT, "OPEN: a schema of %u bytes (at most %d)", m->schema_len, ES_PROTO_MAX_SCHEMA);
        if (!rd_has(&r, m->schema_len)) return rd_short(&r, "schema", err);
        m->schema = m->schema_len ? (const char *)(r.p + r.off) : NULL;
        r.off += m->schema_len;
    }
    if ((st = open_check_api(m, err)) != ES_OK) return st;
    return rd_finish(&r, err);
}

/* ---- OPENED ---- */

es_status es_proto_put_opened(es_wbuf *w, uint32_t session, const es_msg_opened *m, es_err *err) {
    const uint64_t plen = 12;
    uint8_t *p;
    es_status st = frame_begin(w, ES_FRAME_OPENED, session, plen, &p, err);
    if (st != ES_OK) return st;
    p = put_u32(p, m->n_prompt);
    p = put_u32(p, m->max_tokens);
    p = put_u32(p, m->n_ctx);
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_opened(const uint8_t *pl, size_t n, es_msg_opened *m, es_err *err) {
    rd r = {pl, n, 0, "OPENED"};
    memset(m, 0, sizeof *m);
    NEED(get_u32(&r, &m->n_prompt), "n_prompt");
    NEED(get_u32(&r, &m->max_tokens), "max_tokens");
    NEED(get_u32(&r, &m->n_ctx), "n_ctx");
    return rd_finish(&r, err);
}

/* ---- VERIFY ---- */

_Static_assert(ES_TREE_ORIGINS - 1 <= (ES_VERIFY_DRAFTED_MASK >> ES_VERIFY_DRAFTED_SHIFT), "every es_tree_origin fits vflags");

/* Payload bytes of a tree whose counts were already checked. */
static uint64_t verify_size(const es_spec_tree *t) {
    uint64_t s = 4 + 1 + 2 + 6 * (uint64_t)t->n;
    if (t->has_q) {
        s += (uint64_t)t->n + 1;
        for (int o = 0; o <= t->n; o++) s += 8 * (uint64_t)t->q_n[o];
    }
    return s;
}

es_status es_proto_put_verify(es_wbuf *w, uint32_t session, const es_msg_verify *m, es_err *err) {
    const es_spec_tree *t = m->tree;
    if (!t) return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: no tree");
    if (m->drafted >= ES_TREE_ORIGINS) return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: drafted %u", m->drafted);
    if (t->n < 0 || t->n > ES_SPEC_MAX_NODES) return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: tree of %d nodes", t->n);
    for (int i = 0; i < t->n; i++) {
        if (t->token[i] < 0) return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: node %d has token %d", i, t->token[i]);
        if (t->parent[i] < -1 || t->parent[i] >= i)
            return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: node %d has parent %d", i, t->parent[i]);
    }
    if (t->has_q) {
        const int cap = (int)(sizeof t->q_tok / sizeof t->q_tok[0]);
        if (t->q_used < 0 || t->q_used > cap) return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: proposal table of %d entries", t->q_used);
        long total = 0;
        for (int o = 0; o <= t->n; o++) {
            const int qn = t->q_n[o], qo = t->q_off[o];
            if (qn < 0 || qn > ES_SPEC_MAX_Q || (qn > 0 && (qo < 0 || qo > t->q_used - qn)))
                return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: proposal of owner %d out of range", o);
            double s = 0;
            for (int k = 0; k < qn; k++) {
                if (t->q_tok[qo + k] < 0 || !is_prob(t->q_p[qo + k]))
                    return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: proposal of owner %d has a bad entry", o);
                s += t->q_p[qo + k];
            }
            if (s > 1.0 + 1e-3) return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: proposal of owner %d sums to %g", o, s);
            total += qn;
        }
        /* the decoder packs proposals densely: their total must fit one table */
        if (total > cap) return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: %ld proposal entries (at most %d)", total, cap);
    }
    const uint64_t plen = verify_size(t);
    uint8_t *p;
    es_status st = frame_begin(w, ES_FRAME_VERIFY, session, plen, &p, err);
    if (st != ES_OK) return st;
    p = put_u32(p, m->round);
    p = put_u8(p, (uint8_t)((t->has_q ? ES_VERIFY_HAS_Q : 0) | (unsigned)m->drafted << ES_VERIFY_DRAFTED_SHIFT));
    p = put_u16(p, (uint16_t)t->n);
    for (int i = 0; i < t->n; i++) {
        p = put_i32(p, t->token[i]);
        p = put_u16(p, (uint16_t)(t->parent[i] & 0xffff)); /* -1 -> 0xffff */
    }
    if (t->has_q)
        for (int o = 0; o <= t->n; o++) {
            p = put_u8(p, (uint8_t)t->q_n[o]);
            for (int k = 0; k < t->q_n[o]; k++) {
                p = put_i32(p, t->q_tok[t->q_off[o] + k]);
                p = put_f32(p, t->q_p[t->q_off[o] + k]);
            }
        }
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_verify(const uint8_t *pl, size_t n, es_msg_verify *m, int max_nodes, es_err *err) {
    rd r = {pl, n, 0, "VERIFY"};
    es_spec_tree *t = m->tree;
    if (!t) return es_fail(err, ES_ERR_INVALID_ARG, "VERIFY: no tree storage");
    t->n = 0;
    t->has_q = false;
    t->q_used = 0;
    m->drafted = ES_TREE_FRESH;
    if (max_nodes > ES_SPEC_MAX_NODES) max_nodes = ES_SPEC_MAX_NODES;
    if (max_nodes < 0) max_nodes = 0;
    uint8_t vflags;
    uint16_t cnt;
    NEED(get_u32(&r, &m->round), "round");
    NEED(get_u8(&r, &vflags), "flags");
    NEED(get_u16(&r, &cnt), "node count");
    if (vflags & ~(ES_VERIFY_HAS_Q | ES_VERIFY_DRAFTED_MASK)) return es_fail(err, ES_ERR_FORMAT, "VERIFY: unknown flags 0x%x", vflags);
    m->drafted = (uint8_t)((vflags & ES_VERIFY_DRAFTED_MASK) >> ES_VERIFY_DRAFTED_SHIFT); /* every value of the field is an es_tree_origin */
    if (cnt > ES_SPEC_MAX_NODES) return es_fail(err, ES_ERR_FORMAT, "VERIFY: tree of %u nodes (protocol limit %d)", cnt, ES_SPEC_MAX_NODES);
    if (cnt > max_nodes) return es_fail(err, ES_ERR_RANGE, "VERIFY: tree of %u nodes (this server takes %d)", cnt, max_nodes);
    if (!rd_has(&r, 6 * (uint64_t)cnt)) return rd_short(&r, "tree nodes", err);
    for (int i = 0; i < cnt; i++) {
        int16_t par = 0;
        get_i32(&r, &t->token[i]); /* bytes checked above */
        get_i16(&r, &par);
        if (t->token[i] < 0) return es_fail(err, ES_ERR_FORMAT, "VERIFY: node %d has token %d", i, t->token[i]);
        if (par < -1 || par >= i) return es_fail(err, ES_ERR_FORMAT, "VERIFY: node %d has parent %d (must be -1 or an earlier node)", i, par);
        t->parent[i] = par;
        t->depth[i] = par < 0 ? 1 : t->depth[par] + 1; /* never taken from the wire */
    }
    t->n = cnt;
    if (!(vflags & ES_VERIFY_HAS_Q)) {
        for (int o = 0; o <= cnt; o++) t->q_off[o] = t->q_n[o] = 0;
        return rd_finish(&r, err);
    }
    /* Sparse proposals, owner by owner, packed densely into the tree's table. */
    const int cap = (int)(sizeof t->q_tok / sizeof t->q_tok[0]);
    int used = 0;
    t->has_q = true;
    for (int o = 0; o <= cnt; o++) {
        uint8_t qn;
        t->q_off[o] = used;
        t->q_n[o] = 0;
        NEED(get_u8(&r, &qn), "proposal count");
        if (qn > ES_SPEC_MAX_Q) return es_fail(err, ES_ERR_FORMAT, "VERIFY: proposal of owner %d has %u entries (at most %d)", o, qn, ES_SPEC_MAX_Q);
        if (qn > cap - used) return es_fail(err, ES_ERR_FORMAT, "VERIFY: more than %d proposal entries", cap);
        if (!rd_has(&r, 8 * (uint64_t)qn)) return rd_short(&r, "proposal entries", err);
        double s = 0;
        for (int k = 0; k < qn; k++) {
            get_i32(&r, &t->q_tok[used + k]);
            get_f32(&r, &t->q_p[used + k]);
            if (t->q_tok[used + k] < 0) return es_fail(err, ES_ERR_FORMAT, "VERIFY: proposal of owner %d has token %d", o, t->q_tok[used + k]);
            if (!is_prob(t->q_p[used + k]))
                return es_fail(err, ES_ERR_FORMAT, "VERIFY: proposal of owner %d has probability %g", o, (double)t->q_p[used + k]);
            s += t->q_p[used + k];
        }
        if (s > 1.0 + 1e-3) return es_fail(err, ES_ERR_FORMAT, "VERIFY: proposal of owner %d sums to %g", o, s);
        t->q_n[o] = qn;
        used += qn;
        t->q_used = used;
    }
    return rd_finish(&r, err);
}

/* ---- VERDICT ---- */

/* The path and tokens of a VERDICT or an EARLY frame (`what` names it). */
static es_status path_check(const es_spec_verdict *v, const char *what, es_err *err) {
    if (v->n_accepted < 0 || v->n_accepted > ES_SPEC_MAX_PATH - 1)
        return es_fail(err, ES_ERR_FORMAT, "%s: %d accepted nodes (at most %d)", what, v->n_accepted, ES_SPEC_MAX_PATH - 1);
    if (v->n_tokens != v->n_accepted + 1)
        return es_fail(err, ES_ERR_FORMAT, "%s: %d tokens for %d accepted nodes (must be one more)", what, v->n_tokens, v->n_accepted);
    for (int i = 0; i < v->n_accepted; i++)
        if (v->path[i] < 0 || v->path[i] >= ES_SPEC_MAX_NODES || (i > 0 && v->path[i] <= v->path[i - 1]))
            return es_fail(err, ES_ERR_FORMAT, "%s: path entry %d is node %d (indices must increase, below %d)", what, i,
                           v->path[i], ES_SPEC_MAX_NODES);
    for (int i = 0; i < v->n_tokens; i++)
        if (v->tokens[i] < 0) return es_fail(err, ES_ERR_FORMAT, "%s: token %d is %d", what, i, v->tokens[i]);
    return ES_OK;
}

static es_status verdict_check(const es_msg_verdict *m, es_err *err) {
    if (m->stop > ES_STOP_ERROR) return es_fail(err, ES_ERR_FORMAT, "VERDICT: stop reason %u is unknown", m->stop);
    return path_check(&m->v, "VERDICT", err);
}

/* The accepted path and the emitted tokens, as VERDICT and EARLY both carry them: u16 A, A x u16 path,
 * u16 T (= A + 1), T x i32 tokens (the last is the bonus). */
static uint8_t *put_path_tokens(uint8_t *p, const es_spec_verdict *v) {
    p = put_u16(p, (uint16_t)v->n_accepted);
    for (int i = 0; i < v->n_accepted; i++) p = put_u16(p, (uint16_t)v->path[i]);
    p = put_u16(p, (uint16_t)v->n_tokens);
    for (int i = 0; i < v->n_tokens; i++) p = put_i32(p, v->tokens[i]);
    return p;
}

static es_status get_path_tokens(rd *r, es_spec_verdict *v, es_err *err) {
    uint16_t na, nt;
    if (!get_u16(r, &na)) return rd_short(r, "n_accepted", err);
    if (na > ES_SPEC_MAX_PATH - 1)
        return es_fail(err, ES_ERR_FORMAT, "%s: %u accepted nodes (at most %d)", r->what, na, ES_SPEC_MAX_PATH - 1);
    if (!rd_has(r, 2 * (uint64_t)na)) return rd_short(r, "path", err);
    for (int i = 0; i < na; i++) {
        uint16_t x = 0;
        get_u16(r, &x);
        v->path[i] = x;
    }
    v->n_accepted = na;
    if (!get_u16(r, &nt)) return rd_short(r, "n_tokens", err);
    if (nt != na + 1) return es_fail(err, ES_ERR_FORMAT, "%s: %u tokens for %u accepted nodes (must be one more)", r->what, nt, na);
    if (!rd_has(r, 4 * (uint64_t)nt)) return rd_short(r, "tokens", err);
    for (int i = 0; i < nt; i++) get_i32(r, &v->tokens[i]);
    v->n_tokens = nt;
    v->bonus = v->tokens[nt - 1];
    return ES_OK;
}

/* ---- log-probability blocks (VERDICT, TOKENS; version 4) ---- */

/* A logprob as the block allows it: finite, <= 0 up to rounding. */
static bool lp_ok(float x) { return isfinite(x) && x <= 1e-3f; }

static es_status lp_check(const es_token_logprob *lp, int n, const char *what, es_err *err) {
    for (int i = 0; i < n; i++) {
        if (!lp_ok(lp[i].logprob)) return es_fail(err, ES_ERR_FORMAT, "%s: token %d's logprob %g", what, i, (double)lp[i].logprob);
        if (lp[i].n_top < 0 || lp[i].n_top > ES_SPEC_MAX_TOP_LOGPROBS)
            return es_fail(err, ES_ERR_FORMAT, "%s: token %d has %d alternatives (at most %d)", what, i, lp[i].n_top, ES_SPEC_MAX_TOP_LOGPROBS);
        for (int k = 0; k < lp[i].n_top; k++)
            if (lp[i].top_id[k] < 0 || !lp_ok(lp[i].top_logprob[k]))
                return es_fail(err, ES_ERR_FORMAT, "%s: token %d's alternative %d (token %d, %g)", what, i, k, lp[i].top_id[k],
                               (double)lp[i].top_logprob[k]);
    }
    return ES_OK;
}

static uint64_t lp_size(const es_token_logprob *lp, int n) {
    uint64_t b = 0;
    for (int i = 0; i < n; i++) b += 4 + 1 + 8 * (uint64_t)lp[i].n_top;
    return b;
}

static uint8_t *put_lp(uint8_t *p, const es_token_logprob *lp, int n) {
    for (int i = 0; i < n; i++) {
        p = put_f32(p, lp[i].logprob);
        p = put_u8(p, (uint8_t)lp[i].n_top);
        for (int k = 0; k < lp[i].n_top; k++) {
            p = put_i32(p, lp[i].top_id[k]);
            p = put_f32(p, lp[i].top_logprob[k]);
        }
    }
    return p;
}

static es_status get_lp(rd *r, es_token_logprob *lp, int n, es_err *err) {
    for (int i = 0; i < n; i++) {
        uint8_t nt;
        if (!get_f32(r, &lp[i].logprob) || !get_u8(r, &nt)) return rd_short(r, "log-probabilities", err);
        if (nt > ES_SPEC_MAX_TOP_LOGPROBS)
            return es_fail(err, ES_ERR_FORMAT, "%s: token %d has %u alternatives (at most %d)", r->what, i, nt, ES_SPEC_MAX_TOP_LOGPROBS);
        if (!rd_has(r, 8 * (uint64_t)nt)) return rd_short(r, "alternatives", err);
        lp[i].n_top = nt;
        for (int k = 0; k < nt; k++) {
            get_i32(r, &lp[i].top_id[k]); /* bytes checked above */
            get_f32(r, &lp[i].top_logprob[k]);
        }
    }
    return lp_check(lp, n, r->what, err);
}

es_status es_proto_put_verdict(es_wbuf *w, uint32_t session, const es_msg_verdict *m, es_err *err) {
    es_status st = verdict_check(m, err);
    if (st != ES_OK) return ES_ERR_INVALID_ARG;
    const es_spec_verdict *v = &m->v;
    if (m->has_lp && lp_check(m->lp, v->n_tokens, "VERDICT", err) != ES_OK) return ES_ERR_INVALID_ARG;
    const uint64_t plen = 4 + 1 + 2 + 2 * (uint64_t)v->n_accepted + 2 + 4 * (uint64_t)v->n_tokens + 4 + 4 + 2 +
                          (m->has_lp ? lp_size(m->lp, v->n_tokens) : 0);
    uint8_t *p;
    if ((st = frame_begin(w, ES_FRAME_VERDICT, session, plen, &p, err)) != ES_OK) return st;
    p = put_u32(p, m->round);
    p = put_u8(p, m->stop);
    p = put_path_tokens(p, v);
    p = put_u32(p, m->queue_us);
    p = put_u32(p, m->verify_us);
    p = put_u16(p, m->suggested_budget);
    if (m->has_lp) p = put_lp(p, m->lp, v->n_tokens);
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_verdict(const uint8_t *pl, size_t n, es_msg_verdict *m, es_err *err) {
    rd r = {pl, n, 0, "VERDICT"};
    es_spec_verdict *v = &m->v;
    m->round = 0;
    m->stop = 0;
    m->queue_us = m->verify_us = 0;
    m->suggested_budget = 0;
    m->has_lp = false;
    v->n_accepted = v->n_tokens = 0;
    v->bonus = -1;
    NEED(get_u32(&r, &m->round), "round");
    NEED(get_u8(&r, &m->stop), "stop");
    es_status pst = get_path_tokens(&r, v, err);
    if (pst != ES_OK) return pst;
    NEED(get_u32(&r, &m->queue_us), "queue_us");
    NEED(get_u32(&r, &m->verify_us), "verify_us");
    NEED(get_u16(&r, &m->suggested_budget), "suggested_budget");
    if (r.off < r.n) { /* the log-probability block of a session that asked */
        if ((pst = get_lp(&r, m->lp, v->n_tokens, err)) != ES_OK) return pst;
        m->has_lp = true;
    }
    es_status st = rd_finish(&r, err);
    if (st != ES_OK) return st;
    return verdict_check(m, err);
}

/* ---- EARLY ---- */

static es_status early_check(const es_msg_early *m, es_err *err) {
    if (m->layer < 1) return es_fail(err, ES_ERR_FORMAT, "EARLY: exit layer 0");
    return path_check(&m->v, "EARLY", err);
}

es_status es_proto_put_early(es_wbuf *w, uint32_t session, const es_msg_early *m, es_err *err) {
    es_status st = early_check(m, err);
    if (st != ES_OK) return ES_ERR_INVALID_ARG;
    const es_spec_verdict *v = &m->v;
    const uint64_t plen = 4 + 2 + 2 + 2 * (uint64_t)v->n_accepted + 2 + 4 * (uint64_t)v->n_tokens;
    uint8_t *p;
    if ((st = frame_begin(w, ES_FRAME_EARLY, session, plen, &p, err)) != ES_OK) return st;
    p = put_u32(p, m->round);
    p = put_u16(p, m->layer);
    p = put_path_tokens(p, v);
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_early(const uint8_t *pl, size_t n, es_msg_early *m, es_err *err) {
    rd r = {pl, n, 0, "EARLY"};
    es_spec_verdict *v = &m->v;
    m->round = 0;
    m->layer = 0;
    v->n_accepted = v->n_tokens = 0;
    v->bonus = -1;
    NEED(get_u32(&r, &m->round), "round");
    NEED(get_u16(&r, &m->layer), "layer");
    es_status pst = get_path_tokens(&r, v, err);
    if (pst != ES_OK) return pst;
    es_status st = rd_finish(&r, err);
    if (st != ES_OK) return st;
    return early_check(m, err);
}

/* ---- TOKENS ---- */

es_status es_proto_put_tokens(es_wbuf *w, uint32_t session, const es_msg_tokens *m, es_err *err) {
    if (m->stop > ES_STOP_ERROR) return es_fail(err, ES_ERR_INVALID_ARG, "TOKENS: stop reason %u is unknown", m->stop);
    if (m->n > ES_PROTO_MAX_TOKENS_FRAME) return es_fail(err, ES_ERR_INVALID_ARG, "TOKENS: %u tokens (at most %d per frame)", m->n, ES_PROTO_MAX_TOKENS_FRAME);
    if (m->n && !m->tokens) return es_fail(err, ES_ERR_INVALID_ARG, "TOKENS: no token storage");
    for (int i = 0; i < m->n; i++)
        if (m->tokens[i] < 0) return es_fail(err, ES_ERR_INVALID_ARG, "TOKENS: token %d is %d", i, m->tokens[i]);
    const bool lp = m->has_lp;
    if (lp && !m->lp) return es_fail(err, ES_ERR_INVALID_ARG, "TOKENS: no log-probability storage");
    if (lp && m->n > ES_PROTO_MAX_LP_TOKENS)
        return es_fail(err, ES_ERR_INVALID_ARG, "TOKENS: %u tokens with log-probabilities (at most %d per frame)", m->n, ES_PROTO_MAX_LP_TOKENS);
    if (lp && lp_check(m->lp, m->n, "TOKENS", err) != ES_OK) return ES_ERR_INVALID_ARG;
    const uint64_t plen = 1 + 2 + 4 * (uint64_t)m->n + (lp ? lp_size(m->lp, m->n) : 0);
    uint8_t *p;
    es_status st = frame_begin(w, ES_FRAME_TOKENS, session, plen, &p, err);
    if (st != ES_OK) return st;
    p = put_u8(p, m->stop);
    p = put_u16(p, m->n);
    for (int i = 0; i < m->n; i++) p = put_i32(p, m->tokens[i]);
    if (lp) p = put_lp(p, m->lp, m->n);
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_tokens(const uint8_t *pl, size_t n, es_msg_tokens *m, es_err *err) {
    rd r = {pl, n, 0, "TOKENS"};
    uint16_t cnt;
    m->stop = 0;
    m->n = 0;
    m->has_lp = false;
    NEED(get_u8(&r, &m->stop), "stop");
    if (m->stop > ES_STOP_ERROR) return es_fail(err, ES_ERR_FORMAT, "TOKENS: stop reason %u is unknown", m->stop);
    NEED(get_u16(&r, &cnt), "count");
    if (cnt > ES_PROTO_MAX_TOKENS_FRAME) return es_fail(err, ES_ERR_FORMAT, "TOKENS: %u tokens (at most %d per frame)", cnt, ES_PROTO_MAX_TOKENS_FRAME);
    if (!rd_has(&r, 4 * (uint64_t)cnt)) return rd_short(&r, "tokens", err);
    if (cnt && !m->tokens) return es_fail(err, ES_ERR_INVALID_ARG, "TOKENS: no token storage");
    for (int i = 0; i < cnt; i++) {
        get_i32(&r, &m->tokens[i]);
        if (m->tokens[i] < 0) return es_fail(err, ES_ERR_FORMAT, "TOKENS: token %d is %d", i, m->tokens[i]);
    }
    m->n = cnt;
    if (r.off < r.n) { /* the log-probability block of a session that asked */
        if (!m->lp) return es_fail(err, ES_ERR_FORMAT, "TOKENS: log-probabilities nobody asked for");
        if (cnt > ES_PROTO_MAX_LP_TOKENS)
            return es_fail(err, ES_ERR_FORMAT, "TOKENS: %u tokens with log-probabilities (at most %d per frame)", cnt, ES_PROTO_MAX_LP_TOKENS);
        es_status st = get_lp(&r, m->lp, cnt, err);
        if (st != ES_OK) return st;
        m->has_lp = true;
    }
    return rd_finish(&r, err);
}

/* ---- CLOSE ---- */

es_status es_proto_put_close(es_wbuf *w, uint32_t session, const es_msg_close *m, es_err *err) {
    if (m->stop > ES_STOP_ERROR) return es_fail(err, ES_ERR_INVALID_ARG, "CLOSE: stop reason %u is unknown", m->stop);
    const uint64_t plen = 5;
    uint8_t *p;
    es_status st = frame_begin(w, ES_FRAME_CLOSE, session, plen, &p, err);
    if (st != ES_OK) return st;
    p = put_u8(p, m->stop);
    p = put_u32(p, m->n_generated);
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_close(const uint8_t *pl, size_t n, es_msg_close *m, es_err *err) {
    rd r = {pl, n, 0, "CLOSE"};
    memset(m, 0, sizeof *m);
    NEED(get_u8(&r, &m->stop), "stop");
    if (m->stop > ES_STOP_ERROR) return es_fail(err, ES_ERR_FORMAT, "CLOSE: stop reason %u is unknown", m->stop);
    NEED(get_u32(&r, &m->n_generated), "n_generated");
    return rd_finish(&r, err);
}

/* ---- ERROR ---- */

es_status es_proto_put_error(es_wbuf *w, uint32_t session, const es_msg_error *m, es_err *err) {
    const long l = field_len(m->msg, ES_PROTO_MAX_MSG);
    if (l < 0) return es_fail(err, ES_ERR_INVALID_ARG, "ERROR: message not terminated within %d bytes", ES_PROTO_MAX_MSG);
    const uint64_t plen = 2 + 2 + (uint64_t)l;
    uint8_t *p;
    es_status st = frame_begin(w, ES_FRAME_ERROR, session, plen, &p, err);
    if (st != ES_OK) return st;
    p = put_u16(p, m->code);
    p = put_u16(p, (uint16_t)l);
    p = put_bytes(p, m->msg, (size_t)l);
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_error(const uint8_t *pl, size_t n, es_msg_error *m, es_err *err) {
    rd r = {pl, n, 0, "ERROR"};
    memset(m, 0, sizeof *m);
    NEED(get_u16(&r, &m->code), "code"); /* unknown codes pass: a newer peer may send them */
    es_status st = get_str(&r, m->msg, ES_PROTO_MAX_MSG, "message", err);
    if (st != ES_OK) return st;
    return rd_finish(&r, err);
}

/* ---- PING / PONG ---- */

es_status es_proto_put_ping(es_wbuf *w, int type, const es_msg_ping *m, es_err *err) {
    if (type != ES_FRAME_PING && type != ES_FRAME_PONG) return es_fail(err, ES_ERR_INVALID_ARG, "frame type %d is not PING or PONG", type);
    const uint64_t plen = 8;
    uint8_t *p;
    es_status st = frame_begin(w, type, 0, plen, &p, err);
    if (st != ES_OK) return st;
    p = put_u64(p, m->nonce);
    return frame_end(w, plen, p, err);
}

es_status es_proto_get_ping(const uint8_t *pl, size_t n, es_msg_ping *m, es_err *err) {
    rd r = {pl, n, 0, "PING"};
    m->nonce = 0;
    NEED(get_u64(&r, &m->nonce), "nonce");
    return rd_finish(&r, err);
}

/* ---- any payload ---- */

/* Scratch for one decoded message of any type, with its variable-length storage (about 60 KiB). */
typedef union any_msg {
    es_msg_hello hello;
    es_msg_welcome welcome;
    struct {
        es_msg_open m;
        int32_t prompt[4096]; /* OPEN prompts longer than this are refused with ES_ERR_RANGE */
    } open;
    es_msg_opened opened;
    struct {
        es_msg_verify m;
        es_spec_tree tree;
    } verify;
    es_msg_verdict verdict;
    es_msg_early early;
    struct {
        es_msg_tokens m;
        int32_t toks[ES_PROTO_MAX_TOKENS_FRAME];
        es_token_logprob lp[ES_PROTO_MAX_LP_TOKENS];
    } tokens;
    es_msg_close close;
    es_msg_error error;
    es_msg_ping ping;
} any_msg;

static es_status decode_any(int type, const uint8_t *p, size_t n, any_msg *a, es_err *err) {
    switch (type) {
    case ES_FRAME_HELLO: return es_proto_get_hello(p, n, &a->hello, err);
    case ES_FRAME_WELCOME: return es_proto_get_welcome(p, n, &a->welcome, err);
    case ES_FRAME_OPEN:
        a->open.m.prompt = a->open.prompt;
        return es_proto_get_open(p, n, &a->open.m, (uint32_t)(sizeof a->open.prompt / sizeof a->open.prompt[0]), err);
    case ES_FRAME_OPENED: return es_proto_get_opened(p, n, &a->opened, err);
    case ES_FRAME_VERIFY:
        a->verify.m.tree = &a->verify.tree;
        return es_proto_get_verify(p, n, &a->verify.m, ES_SPEC_MAX_NODES, err);
    case ES_FRAME_VERDICT: return es_proto_get_verdict(p, n, &a->verdict, err);
    case ES_FRAME_EARLY: return es_proto_get_early(p, n, &a->early, err);
    case ES_FRAME_TOKENS:
        a->tokens.m.tokens = a->tokens.toks;
        a->tokens.m.lp = a->tokens.lp;
        return es_proto_get_tokens(p, n, &a->tokens.m, err);
    case ES_FRAME_CLOSE: return es_proto_get_close(p, n, &a->close, err);
    case ES_FRAME_ERROR: return es_proto_get_error(p, n, &a->error, err);
    case ES_FRAME_PING:
    case ES_FRAME_PONG: return es_proto_get_ping(p, n, &a->ping, err);
    default: return es_fail(err, ES_ERR_FORMAT, "frame type %d is unknown", type);
    }
}

static es_status encode_any(es_wbuf *w, int type, uint32_t session, const any_msg *a, es_err *err) {
    switch (type) {
    case ES_FRAME_HELLO: return es_proto_put_hello(w, &a->hello, err);
    case ES_FRAME_WELCOME: return es_proto_put_welcome(w, &a->welcome, err);
    case ES_FRAME_OPEN: return es_proto_put_open(w, session, &a->open.m, err);
    case ES_FRAME_OPENED: return es_proto_put_opened(w, session, &a->opened, err);
    case ES_FRAME_VERIFY: return es_proto_put_verify(w, session, &a->verify.m, err);
    case ES_FRAME_VERDICT: return es_proto_put_verdict(w, session, &a->verdict, err);
    case ES_FRAME_EARLY: return es_proto_put_early(w, session, &a->early, err);
    case ES_FRAME_TOKENS: return es_proto_put_tokens(w, session, &a->tokens.m, err);
    case ES_FRAME_CLOSE: return es_proto_put_close(w, session, &a->close, err);
    case ES_FRAME_ERROR: return es_proto_put_error(w, session, &a->error, err);
    case ES_FRAME_PING:
    case ES_FRAME_PONG: return es_proto_put_ping(w, type, &a->ping, err);
    default: return es_fail(err, ES_ERR_INVALID_ARG, "frame type %d is unknown", type);
    }
}

es_status es_proto_check_payload(int type, const uint8_t *p, size_t n, es_err *err) {
    any_msg a;
    return decode_any(type, p, n, &a, err);
}

es_status es_proto_reencode(es_wbuf *w, int type, uint32_t session, const uint8_t *p, size_t n, es_err *err) {
    any_msg a;
    es_status st = decode_any(type, p, n, &a, err);
    if (st != ES_OK) return st;
    return encode_any(w, type, session, &a, err);
}
