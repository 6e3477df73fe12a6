/* fuzz_session.c — libFuzzer target for the verification server's per-connection state machine
 * (src/server/server.c + the scheduler it drives, src/sched/sched.c).
 *
 * One real es_server in test mode (server/server_fuzz.h: no sockets, no threads) is created once with
 * a tiny model (EDGESPEC_FUZZ_MODEL, default build/models/stories260K.gguf); each input is a program
 * of operations on up to three in-memory connections: frames built with the proto encoders from input
 * bytes so they are mostly well-formed (HELLO with the right / wrong fingerprint, key or version; OPEN
 * with small prompts, all modes, odd sampling, logprobs and JSON grammars (version 4; refused below,
 * an unenforceable schema refused with its reason), early exits asked for on protocol version 1, 2 or 3 (the
 * server has an exit head at layer 2, so EARLY frames come out and are checked like the rest); VERIFY with trees for the session's expected round or a
 * wrong one, saying any drafted origin (refused below protocol version 3); CLOSE; PING; client ERROR), raw garbage frames and bytes, scheduler steps, and EOFs. The
 * server's replies are parsed so VERIFY can follow the rounds the verdicts announce.
 *
 * After every input all connections are closed and the scheduler drained; then (abort on violation):
 * no KV page is still used, no session active, every connection freed, and a fresh connection still
 * gets WELCOME for a valid HELLO and PONG (same nonce) for a PING. ASan/UBSan/LSan catch the rest.
 *
 * es_fuzz_session_one() is the one-input entry without libFuzzer (tests/test_fuzz_regress.c replays
 * tests/data/fuzz-regress/fuzz_session/ through it). */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/bufferevent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/proto.h"
#include "server/server.h"
#include "server/server_fuzz.h"

#define FZ_CONNS 3
#define FZ_SIDS 4       /* client session ids 0..3 (0 is reserved: refused) */
#define FZ_MAX_OPS 96
#define FZ_KEY "fuzzkey"

typedef struct fz_state {
    es_model *model;
    es_server *srv;
    uint64_t fingerprint;
    int n_vocab;
    int32_t bos, eos;
    bool trace; /* ES_FUZZ_TRACE set: print every frame the server sends (debugging a seed) */
} fz_state;

static fz_state g_fz;

/* Input reader: every read succeeds (zeros past the end) so a short input is still a program. */
typedef struct fz_in {
    const uint8_t *p;
    size_t n, i;
} fz_in;

static uint8_t u8(fz_in *in) { return in->i < in->n ? in->p[in->i++] : 0; }
static uint32_t u32(fz_in *in) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) v |= (uint32_t)u8(in) << (8 * k);
    return v;
}

typedef struct fz_conn {
    struct bufferevent *peer;
    uint32_t next_round[FZ_SIDS];
} fz_conn;

static void check(bool ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_session: invariant violated: %s\n", what);
        abort();
    }
}

/* Reads every complete frame the server sent to this connection; remembers the next round of each
 * session from its VERDICTs (OPENED resets it). */
static void take_replies(fz_conn *fc) {
    struct evbuffer *in = bufferevent_get_input(fc->peer);
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        if (avail < ES_PROTO_HEADER_SIZE) return;
        uint8_t hb[ES_PROTO_HEADER_SIZE];
        evbuffer_copyout(in, hb, sizeof hb);
        es_frame_header h;
        es_err err;
        /* The server's own frames must always be well-formed. */
        check(es_proto_get_header(hb, ES_PROTO_MAX_PAYLOAD_DEFAULT, &h, &err) == ES_OK, "server frame header");
        if (avail - ES_PROTO_HEADER_SIZE < h.len) return;
        evbuffer_drain(in, ES_PROTO_HEADER_SIZE);
        const uint8_t *p = h.len ? evbuffer_pullup(in, (ev_ssize_t)h.len) : (const uint8_t *)"";
        check(es_proto_check_payload(h.type, p, h.len, &err) == ES_OK, "server frame payload decodes");
        if (g_fz.trace) {
            es_msg_error e;
            const bool is_err = h.type == ES_FRAME_ERROR && es_proto_get_error(p, h.len, &e, &err) == ES_OK;
            fprintf(stderr, "  <- %s session %u%s%s\n", es_frame_type_name(h.type), h.session, is_err ? ": " : "",
                    is_err ? e.msg : "");
        }
        if (h.session < FZ_SIDS) {
            if (h.type == ES_FRAME_OPENED) fc->next_round[h.session] = 0;
            if (h.type == ES_FRAME_VERDICT) {
                es_msg_verdict v;
                if (es_proto_get_verdict(p, h.len, &v, &err) == ES_OK) fc->next_round[h.session] = v.round + 1;
            }
        }
        evbuffer_drain(in, h.len);
    }
}

static void send_wbuf(fz_conn *fc, const es_wbuf *w) {
    if (!w->overflow && w->len) bufferevent_write(fc->peer, w->data, w->len);
}

static void put_hello(fz_conn *fc, fz_in *in, uint8_t *buf, size_t cap) {
    const uint8_t v = u8(in);
    es_msg_hello h;
    memset(&h, 0, sizeof h);
    h.version_min = 1;
    /* 0: no common version; 2: EARLY frames; 3: VERIFY's drafted field; 4: logprobs and grammars */
    h.version_max = (v & 7) == 1 ? 0 : (v & 0x10) ? ((v & 0x20) ? ((v & 0x40) ? ES_PROTO_LEVEL_API : ES_PROTO_LEVEL_BET) : ES_PROTO_LEVEL_EARLY) : 1;
    snprintf(h.name, sizeof h.name, "fuzz");
    h.has_draft = (v >> 3) & 1;
    h.draft_fingerprint = (v & 7) == 2 ? g_fz.fingerprint ^ 1 : g_fz.fingerprint;
    h.draft_n_vocab = (uint32_t)g_fz.n_vocab + ((v & 7) == 3);
    h.draft_bos = g_fz.bos;
    h.draft_eos = (v & 7) == 4 ? g_fz.eos + 1 : g_fz.eos;
    snprintf(h.api_key, sizeof h.api_key, "%s", (v & 7) == 5 ? "wrong" : (v & 7) == 6 ? "" : FZ_KEY);
    es_wbuf w;
    es_wbuf_init(&w, buf, cap);
    es_err err;
    if (es_proto_put_hello(&w, &h, &err) == ES_OK) send_wbuf(fc, &w);
}

static void put_open(fz_conn *fc, fz_in *in, uint8_t *buf, size_t cap) {
    static const float temps[] = {0.0f, 0.0f, 0.8f, 1.5f, -1.0f, NAN};
    const uint32_t sid = u8(in) % FZ_SIDS;
    const uint8_t a = u8(in), b = u8(in);
    es_msg_open m;
    memset(&m, 0, sizeof m);
    m.mode = (uint8_t)(a % 4);         /* 3: unknown */
    m.rule = (uint8_t)((a >> 2) % 4);  /* 3: not served */
    m.max_tokens = (uint32_t)(b % 24); /* 0: refused; the context is 48 */
    if (b & 0x80) m.max_tokens = 1000;
    m.temperature = temps[(a >> 4) % 6];
    m.top_p = (a & 0x40) ? 0.9f : 1.0f;
    m.min_p = 0.0f;
    m.top_k = (a & 0x80) ? 5 : 0;
    m.seed = u8(in);
    const uint8_t ns = u8(in);
    m.n_stop = (uint16_t)(ns % 3);
    if (ns & 0x40) m.flags |= ES_OPEN_EARLY_EXIT; /* refused below version 2 or outside EDGE mode */
    /* version 4 (refused below): logprobs with 0..7 alternatives; a grammar (any object, a schema, one
       the server cannot enforce), possibly after one prompt token named as output already */
    static const char *const schemas[] = {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}",
                                          "{\"enum\":[\"cat\",\"dog\"]}", "{\"type\":\"string\",\"pattern\":\"x\"}", "[1,"};
    if (ns & 0x10) {
        m.flags |= ES_OPEN_LOGPROBS;
        m.top_logprobs = (uint8_t)(ns & 7);
    }
    if (ns & 0x20) {
        m.flags |= ES_OPEN_GRAMMAR;
        m.grammar_kind = (ns & 8) ? ES_PROTO_GRAMMAR_SCHEMA : ES_PROTO_GRAMMAR_JSON_OBJECT;
        if (ns & 8) {
            m.schema = schemas[(ns >> 1) & 3];
            m.schema_len = (uint32_t)strlen(m.schema);
        }
    }
    for (int i = 0; i < m.n_stop; i++) m.stop[i] = (ns & 0x80) ? g_fz.n_vocab : (int32_t)(u8(in) % (unsigned)g_fz.n_vocab);
    const uint8_t pl = u8(in);
    int32_t prompt[40];
    static const char *texts[] = {"Once upon a time", "", "Lily", "\xff\xfe bad utf8"};
    if (pl & 0x80) {
        m.flags |= ES_OPEN_PROMPT_TEXT;
        m.text = texts[pl % 4];
        m.text_len = (uint32_t)strlen(m.text);
    } else {
        m.n_prompt = (uint32_t)(pl % 40); /* up to 39: some leave no room for max_tokens in n_ctx 48 */
        for (uint32_t i = 0; i < m.n_prompt; i++) {
            const uint8_t t = u8(in);
            prompt[i] = i == 0 && !(t & 1) ? g_fz.bos : (int32_t)(t * 2 + (t & 1)) - (t == 255 ? 1000 : 0);
        }
        m.prompt = prompt;
        if ((ns & 0x24) == 0x24 && m.n_prompt >= 2) m.grammar_done = 1;
    }
    es_wbuf w;
    es_wbuf_init(&w, buf, cap);
    es_err err;
    if (es_proto_put_open(&w, sid, &m, &err) == ES_OK) send_wbuf(fc, &w);
}

static void put_verify(fz_conn *fc, fz_in *in, uint8_t *buf, size_t cap, es_spec_tree *t) {
    const uint32_t sid = u8(in) % FZ_SIDS;
    const uint8_t a = u8(in);
    memset(t, 0, sizeof *t);
    t->n = a % 9; /* 0..8 nodes; the server's limit is 16 */
    if ((a & 0x70) == 0x70) t->n = 17 + (a & 3);
    if (t->n > ES_SPEC_MAX_NODES) t->n = ES_SPEC_MAX_NODES;
    for (int i = 0; i < t->n; i++) {
        const uint8_t tok = u8(in), par = u8(in);
        t->token[i] = (int32_t)(tok * 2 + (par & 1));
        if (tok == 255) t->token[i] = g_fz.n_vocab + 3; /* out of range */
        t->parent[i] = (int32_t)(par % (unsigned)(i + 1)) - 1;
        if (par == 255) t->parent[i] = i; /* not topological */
        t->depth[i] = t->parent[i] >= 0 && t->parent[i] < i ? t->depth[t->parent[i]] + 1 : 1;
    }
    if (a & 0x08) { /* proposal distributions: each owner's children drawn uniformly */
        t->has_q = true;
        int used = 0;
        for (int o = 0; o <= t->n; o++) {
            t->q_off[o] = used;
            int nq = 0;
            for (int i = 0; i < t->n && used < ES_SPEC_MAX_NODES * 8; i++)
                if (t->parent[i] == o - 1) {
                    t->q_tok[used] = t->token[i];
                    used++;
                    nq++;
                }
            for (int k = 0; k < nq; k++) t->q_p[t->q_off[o] + k] = 1.0f / (float)nq;
            t->q_n[o] = nq;
        }
        t->q_used = used;
    }
    /* drafted: any origin, refused below version 3 */
    es_msg_verify m = {.round = (a & 0x80) ? u8(in) % 4 : fc->next_round[sid], .tree = t, .drafted = (uint8_t)((a >> 5) & 3)};
    es_wbuf w;
    es_wbuf_init(&w, buf, cap);
    es_err err;
    if (es_proto_put_verify(&w, sid, &m, &err) == ES_OK) send_wbuf(fc, &w);
}

/* A frame with an arbitrary type / session and payload bytes straight from the input. */
static void put_raw_frame(fz_conn *fc, fz_in *in, uint8_t *buf) {
    es_frame_header h = {.type = u8(in), .version = ES_PROTO_VERSION, .flags = 0, .session = u8(in) % (FZ_SIDS + 1)};
    const uint8_t ln = u8(in);
    h.len = ln % 48;
    if (ln == 255) h.version = 2;
    es_proto_put_header(buf, &h);
    for (uint32_t i = 0; i < h.len; i++) buf[ES_PROTO_HEADER_SIZE + i] = u8(in);
    bufferevent_write(fc->peer, buf, ES_PROTO_HEADER_SIZE + h.len);
}

static void pump(int steps) {
    es_err err;
    for (int i = 0; i < steps; i++)
        if (es_server_test_pump(g_fz.srv, &err) <= 0) break;
}

/* EOF from the client, then its end freed once the server has dropped the connection. */
static void hang_up(fz_conn *fc) {
    if (!fc->peer) return;
    es_server_test_poll(g_fz.srv); /* what it wrote before the EOF is handled first */
    bufferevent_flush(fc->peer, EV_WRITE, BEV_FINISHED);
    es_server_test_poll(g_fz.srv);
    bufferevent_free(fc->peer);
    memset(fc, 0, sizeof *fc);
}

static bool fz_init(void) {
    g_fz.trace = getenv("ES_FUZZ_TRACE") != NULL;
    const char *path = getenv("EDGESPEC_FUZZ_MODEL");
    if (!path || !*path) path = "build/models/stories260K.gguf";
    es_err err = {{0}};
    es_model_params mp = es_model_default_params();
    if (es_model_load(path, &mp, &g_fz.model, &err) != ES_OK) {
        fprintf(stderr, "fuzz_session: cannot load the model %s (set EDGESPEC_FUZZ_MODEL): %s\n", path, err.msg);
        return false;
    }
    const es_tokenizer *tok = es_model_tokenizer(g_fz.model);
    g_fz.fingerprint = es_tokenizer_fingerprint(tok);
    g_fz.n_vocab = es_model_n_vocab(g_fz.model);
    g_fz.bos = es_tokenizer_bos(tok);
    g_fz.eos = es_tokenizer_eos(tok);
    es_server_params p = es_server_default_params();
    p.target = g_fz.model;
    p.api_key = FZ_KEY;
    p.idle_timeout_s = 0;
    p.handshake_timeout_s = 0;
    p.sched.n_threads = 1;
    p.sched.n_ctx = 48;
    p.sched.max_sessions = 4; /* three connections with up to three sessions each: some are busy */
    p.sched.max_tree_nodes = 16;
    p.sched.prefill_chunk = 8;
    p.sched.max_batch_tokens = 32;
    p.sched.batch_window_ms = 0;
    p.sched.knee_tokens = 16; /* fixed: no profiling at start-up */
    p.sched.exit_layers[0] = 2; /* zero-training exit head: EDGE sessions that ask get EARLY frames */
    p.sched.n_exit_layers = 1;
    if (es_server_test_new(&p, &g_fz.srv, &err) != ES_OK) {
        fprintf(stderr, "fuzz_session: cannot start the test server: %s\n", err.msg);
        return false;
    }
    return true;
}

/* After an input: everything it opened is gone, and the server still serves a new client. */
static void check_clean(uint8_t *buf, size_t cap) {
    pump(4); /* the scheduler frees closed sessions at its next step */
    es_server_stats st;
    es_server_get_stats(g_fz.srv, &st);
    check(st.sched.kv_blocks_used == 0, "KV pages used return to 0 once every connection is closed");
    check(st.sched.sessions_active == 0, "no session active once every connection is closed");
    check(es_server_test_n_conns(g_fz.srv) == 0, "every connection freed");
    check(st.connections_open == 0, "connections_open returns to 0");

    fz_conn fc;
    memset(&fc, 0, sizeof fc);
    es_err err;
    check(es_server_test_connect(g_fz.srv, &fc.peer, &err) == ES_OK, "fresh connection");
    es_msg_hello h;
    memset(&h, 0, sizeof h);
    h.version_min = h.version_max = ES_PROTO_VERSION;
    snprintf(h.api_key, sizeof h.api_key, "%s", FZ_KEY);
    es_wbuf w;
    es_wbuf_init(&w, buf, cap);
    check(es_proto_put_hello(&w, &h, &err) == ES_OK, "encode HELLO");
    es_msg_ping ping = {.nonce = 0x5eed5eedull + st.connections_total};
    check(es_proto_put_ping(&w, ES_FRAME_PING, &ping, &err) == ES_OK, "encode PING");
    bufferevent_write(fc.peer, w.data, w.len);
    pump(1);
    struct evbuffer *in = bufferevent_get_input(fc.peer);
    int got = 0;
    es_frame_header hd;
    while (evbuffer_get_length(in) >= ES_PROTO_HEADER_SIZE) {
        uint8_t hb[ES_PROTO_HEADER_SIZE];
        evbuffer_copyout(in, hb, sizeof hb);
        check(es_proto_get_header(hb, ES_PROTO_MAX_PAYLOAD_DEFAULT, &hd, &err) == ES_OK, "reply header");
        check(evbuffer_get_length(in) >= ES_PROTO_HEADER_SIZE + hd.len, "whole reply");
        evbuffer_drain(in, ES_PROTO_HEADER_SIZE);
        const uint8_t *p = hd.len ? evbuffer_pullup(in, (ev_ssize_t)hd.len) : (const uint8_t *)"";
        if (got == 0) check(hd.type == ES_FRAME_WELCOME, "WELCOME for a valid HELLO");
        if (got == 1) {
            es_msg_ping pong;
            check(hd.type == ES_FRAME_PONG && es_proto_get_ping(p, hd.len, &pong, &err) == ES_OK &&
                      pong.nonce == ping.nonce,
                  "PONG with the PING's nonce");
        }
        evbuffer_drain(in, hd.len);
        got++;
    }
    check(got == 2, "exactly WELCOME and PONG on a fresh connection");
    hang_up(&fc);
    pump(1);
    check(es_server_test_n_conns(g_fz.srv) == 0, "the probe connection freed");
}

int es_fuzz_session_one(const uint8_t *data, size_t size);

int es_fuzz_session_one(const uint8_t *data, size_t size) {
    if (!g_fz.srv && !fz_init()) abort();
    static uint8_t buf[1 << 16];
    static es_spec_tree tree;
    fz_in in = {data, size, 0};
    fz_conn conns[FZ_CONNS];
    memset(conns, 0, sizeof conns);
    es_err err;
    for (int op = 0; op < FZ_MAX_OPS && in.i < in.n; op++) {
        const uint8_t code = u8(&in);
        fz_conn *fc = &conns[(code >> 4) % FZ_CONNS];
        if (g_fz.trace) fprintf(stderr, "op %d: connection %d, operation %d\n", op, (code >> 4) % FZ_CONNS, code & 15);
        if (!fc->peer) check(es_server_test_connect(g_fz.srv, &fc->peer, &err) == ES_OK, "connect");
        switch (code & 15) {
        case 0: case 1: put_hello(fc, &in, buf, sizeof buf); break;
        case 2: case 3: put_open(fc, &in, buf, sizeof buf); break;
        case 4: case 5: put_verify(fc, &in, buf, sizeof buf, &tree); break;
        case 6: {
            es_msg_close m = {.stop = ES_STOP_CLIENT, .n_generated = 0};
            es_wbuf w;
            es_wbuf_init(&w, buf, sizeof buf);
            if (es_proto_put_close(&w, u8(&in) % FZ_SIDS, &m, &err) == ES_OK) send_wbuf(fc, &w);
            break;
        }
        case 7: {
            es_msg_ping m = {.nonce = u32(&in)};
            es_wbuf w;
            es_wbuf_init(&w, buf, sizeof buf);
            if (es_proto_put_ping(&w, ES_FRAME_PING, &m, &err) == ES_OK) send_wbuf(fc, &w);
            break;
        }
        case 8: {
            es_msg_error m;
            memset(&m, 0, sizeof m);
            m.code = ES_PERR_INTERNAL;
            snprintf(m.msg, sizeof m.msg, "client gave up");
            es_wbuf w;
            es_wbuf_init(&w, buf, sizeof buf);
            if (es_proto_put_error(&w, u8(&in) % FZ_SIDS, &m, &err) == ES_OK) send_wbuf(fc, &w);
            break;
        }
        case 9: put_raw_frame(fc, &in, buf); break;
        case 10: { /* a few raw bytes: partial headers, split frames */
            const int n = u8(&in) % 16;
            for (int i = 0; i < n; i++) buf[i] = u8(&in);
            bufferevent_write(fc->peer, buf, (size_t)n);
            break;
        }
        case 11: hang_up(fc); break;
        default: pump(1 + (code & 3)); break; /* 12..15: scheduler steps */
        }
        es_server_test_poll(g_fz.srv);
        for (int i = 0; i < FZ_CONNS; i++)
            if (conns[i].peer) take_replies(&conns[i]);
    }
    for (int i = 0; i < FZ_CONNS; i++) hang_up(&conns[i]);
    check_clean(buf, sizeof buf);
    return 0;
}

#ifndef ES_FUZZ_NO_MAIN
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!fz_init()) exit(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return es_fuzz_session_one(data, size); }
#endif
