/* test_server.c — the verification server over real TCP: an in-process server on an ephemeral port
 * (stories260K), driven by a raw blocking-socket client written here with the proto encoders.
 *
 * Covers: handshake (ok, vocabulary / version / auth refusals, HELLO-first, handshake timeout), an
 * AR session against the golden greedy tokens, an edge session driven by hand with small trees whose
 * verdicts are known from the golden tokens, protocol errors (malformed payload keeps the connection,
 * oversized header closes it, unknown session, wrong round, duplicate id), a client that vanishes
 * mid-round and mid-prefill (its KV blocks return to 0 while another connection's session completes
 * correctly), a slow consumer being dropped, and shutdown telling open sessions SHUTDOWN. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "edgespec.h"
#include "wire/proto.h"
#include "server/server.h"
#include "testutil.h"

#define RECV_CAP (1u << 16)

static int32_t g_prompt[64], g_gen[512];
static int g_n_prompt, g_n_gen;
static uint8_t g_payload[RECV_CAP];

/* The server's log, watched for what only it can tell (a slow consumer dropped). */
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_slow_drops;

static void test_log(void *ud, int level, const char *msg) {
    (void)ud;
    (void)level;
    pthread_mutex_lock(&g_log_mu);
    if (strstr(msg, "of output unread")) g_slow_drops++;
    pthread_mutex_unlock(&g_log_mu);
    if (getenv("ES_TEST_VERBOSE")) fprintf(stderr, "server: %s\n", msg);
}

static int slow_drops(void) {
    pthread_mutex_lock(&g_log_mu);
    int n = g_slow_drops;
    pthread_mutex_unlock(&g_log_mu);
    return n;
}

static bool load_golden(void) {
    char *txt = es_test_read_file(es_test_shared("golden/stories260K-greedy.jsonl"), NULL);
    if (!txt) return false;
    char *nl = strchr(txt, '\n');
    if (nl) *nl = 0;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    if (!j) return false;
    const cJSON *it;
    g_n_prompt = g_n_gen = 0;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "prompt_ids")) if (g_n_prompt < 64) g_prompt[g_n_prompt++] = (int32_t)it->valuedouble;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "gen_ids")) if (g_n_gen < 512) g_gen[g_n_gen++] = (int32_t)it->valuedouble;
    cJSON_Delete(j);
    return g_n_prompt == 5 && g_n_gen >= 200;
}

/* ---- a raw client ---- */

/* One frame into g_payload: 1, or 0 at EOF / reset / timeout. */
static int cl_recv(int fd, es_frame_header *h) {
    uint8_t hb[ES_PROTO_HEADER_SIZE];
    if (!es_test_recv_all(fd, hb, sizeof hb)) return 0;
    es_err err = {{0}};
    if (es_proto_get_header(hb, RECV_CAP, h, &err) != ES_OK) {
        fprintf(stderr, "client: bad header from the server: %s\n", err.msg);
        return 0;
    }
    if (h->len && !es_test_recv_all(fd, g_payload, h->len)) return 0;
    return 1;
}

/* True when the server has closed the connection (EOF or reset, nothing else pending). */
static bool cl_closed(int fd) {
    uint8_t b;
    ssize_t r = recv(fd, &b, 1, 0);
    return r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE));
}

static uint8_t g_wdata[1 << 17];

static es_wbuf *wb(void) {
    static es_wbuf w;
    es_wbuf_init(&w, g_wdata, sizeof g_wdata);
    return &w;
}

static bool cl_send_wb(int fd, const es_wbuf *w) { return !w->overflow && es_test_send_all(fd, w->data, w->len); }

/* Expects an ERROR frame for `sid` with `code`; returns its message in a static buffer. */
static const char *expect_error(int fd, uint32_t sid, int code, int line) {
    static es_msg_error m;
    memset(&m, 0, sizeof m);
    es_frame_header h;
    if (!cl_recv(fd, &h)) {
        CHECK_MSG(0, "line %d: no frame (expected ERROR %s)", line, es_proto_err_name(code));
        return "";
    }
    CHECK_MSG(h.type == ES_FRAME_ERROR, "line %d: got %s, expected ERROR %s", line, es_frame_type_name(h.type), es_proto_err_name(code));
    if (h.type != ES_FRAME_ERROR) return "";
    es_err err = {{0}};
    CHECK_OK(es_proto_get_error(g_payload, h.len, &m, &err), &err);
    CHECK_MSG(m.code == code && h.session == sid, "line %d: ERROR %s session %u (%s), expected %s session %u", line,
              es_proto_err_name(m.code), h.session, m.msg, es_proto_err_name(code), sid);
    return m.msg;
}
#define EXPECT_ERROR(fd, sid, code) expect_error(fd, sid, code, __LINE__)

static es_msg_hello hello_plain(void) {
    es_msg_hello m;
    memset(&m, 0, sizeof m);
    m.version_min = m.version_max = ES_PROTO_VERSION;
    snprintf(m.name, sizeof m.name, "test_server");
    return m;
}

static bool cl_hello(int fd, const es_msg_hello *m, es_msg_welcome *w) {
    es_err err = {{0}};
    es_wbuf *b = wb();
    if (es_proto_put_hello(b, m, &err) != ES_OK || !cl_send_wb(fd, b)) return false;
    es_frame_header h;
    if (!cl_recv(fd, &h) || h.type != ES_FRAME_WELCOME) return false;
    return es_proto_get_welcome(g_payload, h.len, w, &err) == ES_OK;
}

static int connect_ready(int port) {
    int fd = es_test_tcp_connect(port, 0);
    es_msg_hello m = hello_plain();
    es_msg_welcome w;
    if (fd < 0 || !cl_hello(fd, &m, &w)) {
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

static es_msg_open open_params(int mode, int max_tokens) {
    es_msg_open m;
    memset(&m, 0, sizeof m);
    m.mode = (uint8_t)mode;
    m.rule = ES_ACCEPT_GREEDY;
    m.max_tokens = (uint32_t)max_tokens;
    m.temperature = 0;
    m.top_p = 1;
    m.min_p = 0;
    m.top_k = 0;
    m.seed = 1;
    return m;
}

static bool send_open_ids(int fd, uint32_t sid, int mode, const int32_t *ids, int n, int max_tokens) {
    es_msg_open m = open_params(mode, max_tokens);
    m.n_prompt = (uint32_t)n;
    m.prompt = (int32_t *)ids;
    es_err err = {{0}};
    es_wbuf *b = wb();
    return es_proto_put_open(b, sid, &m, &err) == ES_OK && cl_send_wb(fd, b);
}

static bool expect_opened(int fd, uint32_t sid, es_msg_opened *o) {
    es_frame_header h;
    if (!cl_recv(fd, &h)) return false;
    if (h.type != ES_FRAME_OPENED || h.session != sid) {
        if (h.type == ES_FRAME_ERROR) {
            es_msg_error e;
            es_err err;
            if (es_proto_get_error(g_payload, h.len, &e, &err) == ES_OK) fprintf(stderr, "OPEN refused: %s: %s\n", es_proto_err_name(e.code), e.msg);
        }
        return false;
    }
    es_err err = {{0}};
    return es_proto_get_opened(g_payload, h.len, o, &err) == ES_OK;
}

/* Reads TOKENS frames of `sid` until its CLOSE; returns the tokens generated, -1 on failure. */
static int collect_tokens(int fd, uint32_t sid, int32_t *out, int cap, int *stop_out) {
    int n = 0;
    static int32_t toks[ES_PROTO_MAX_TOKENS_FRAME];
    for (;;) {
        es_frame_header h;
        if (!cl_recv(fd, &h)) return -1;
        es_err err = {{0}};
        if (h.session != sid) continue;
        if (h.type == ES_FRAME_TOKENS) {
            es_msg_tokens m = {.tokens = toks};
            if (es_proto_get_tokens(g_payload, h.len, &m, &err) != ES_OK) return -1;
            for (int i = 0; i < m.n && n < cap; i++) out[n++] = m.tokens[i];
        } else if (h.type == ES_FRAME_CLOSE) {
            es_msg_close c;
            if (es_proto_get_close(g_payload, h.len, &c, &err) != ES_OK) return -1;
            *stop_out = c.stop;
            return n;
        } else {
            fprintf(stderr, "collect_tokens: unexpected %s\n", es_frame_type_name(h.type));
            return -1;
        }
    }
}

/* A VERIFY saying how its tree was drafted (es_tree_origin; the field of protocol version 3). */
static bool send_verify_as(int fd, uint32_t sid, uint32_t round, const int32_t *tok, const int32_t *parent, int n, int drafted) {
    static es_spec_tree t;
    memset(&t, 0, sizeof t);
    t.n = n;
    for (int i = 0; i < n; i++) {
        t.token[i] = tok[i];
        t.parent[i] = parent[i];
        t.depth[i] = parent[i] < 0 ? 1 : t.depth[parent[i]] + 1;
    }
    es_msg_verify m = {.round = round, .tree = &t, .drafted = (uint8_t)drafted};
    es_err err = {{0}};
    es_wbuf *b = wb();
    if (es_proto_put_verify(b, sid, &m, &err) != ES_OK) {
        fprintf(stderr, "put_verify: %s\n", err.msg);
        return false;
    }
    return cl_send_wb(fd, b);
}

static bool send_verify(int fd, uint32_t sid, uint32_t round, const int32_t *tok, const int32_t *parent, int n) {
    return send_verify_as(fd, sid, round, tok, parent, n, ES_TREE_FRESH);
}

static bool expect_verdict(int fd, uint32_t sid, uint32_t round, es_msg_verdict *v) {
    es_frame_header h;
    if (!cl_recv(fd, &h)) return false;
    if (h.type != ES_FRAME_VERDICT || h.session != sid) {
        fprintf(stderr, "expected VERDICT, got %s session %u\n", es_frame_type_name(h.type), h.session);
        if (h.type == ES_FRAME_ERROR) {
            es_msg_error e;
            es_err err;
            if (es_proto_get_error(g_payload, h.len, &e, &err) == ES_OK) fprintf(stderr, "  %s: %s\n", es_proto_err_name(e.code), e.msg);
        }
        return false;
    }
    es_err err = {{0}};
    if (es_proto_get_verdict(g_payload, h.len, v, &err) != ES_OK) return false;
    return v->round == round;
}

static int32_t wrong(int32_t t) { return (t + 7) % 512; }

static es_server_stats stats_of(es_server *s) {
    es_server_stats st;
    es_server_get_stats(s, &st);
    return st;
}

/* ---- the tests ---- */

static void test_handshake(int port, const es_tokenizer *tok) {
    int fd = es_test_tcp_connect(port, 0);
    CHECK(fd >= 0);
    es_msg_hello m = hello_plain();
    es_msg_welcome w;
    memset(&w, 0, sizeof w);
    CHECK(cl_hello(fd, &m, &w));
    CHECK(w.version == ES_PROTO_VERSION);
    CHECK(w.target_fingerprint == es_tokenizer_fingerprint(tok));
    CHECK(w.n_vocab == 512 && w.bos == es_tokenizer_bos(tok) && w.eos == es_tokenizer_eos(tok));
    CHECK(w.n_ctx == 256 && w.max_tree_nodes == 32);
    CHECK(w.has_server_draft == 0);
    CHECK(w.rules & (1u << ES_ACCEPT_GREEDY));
    CHECK(strstr(w.name, "edgespec") != NULL);
    /* A second HELLO is out of order but harmless. */
    es_err err = {{0}};
    es_wbuf *b = wb();
    CHECK_OK(es_proto_put_hello(b, &m, &err), &err);
    CHECK(cl_send_wb(fd, b));
    EXPECT_ERROR(fd, 0, ES_PERR_STATE);
    es_msg_ping p = {.nonce = 0x1234567890abcdefull};
    b = wb();
    CHECK_OK(es_proto_put_ping(b, ES_FRAME_PING, &p, &err), &err);
    CHECK(cl_send_wb(fd, b));
    es_frame_header h;
    CHECK(cl_recv(fd, &h) && h.type == ES_FRAME_PONG);
    es_msg_ping q = {0};
    CHECK(es_proto_get_ping(g_payload, h.len, &q, &err) == ES_OK && q.nonce == p.nonce);
    close(fd);

    /* The draft's vocabulary must be the target's. */
    fd = es_test_tcp_connect(port, 0);
    m = hello_plain();
    m.has_draft = 1;
    m.draft_fingerprint = es_tokenizer_fingerprint(tok) ^ 1;
    m.draft_n_vocab = 512;
    m.draft_bos = es_tokenizer_bos(tok);
    m.draft_eos = es_tokenizer_eos(tok);
    b = wb();
    CHECK_OK(es_proto_put_hello(b, &m, &err), &err);
    CHECK(cl_send_wb(fd, b));
    const char *msg = EXPECT_ERROR(fd, 0, ES_PERR_VOCAB);
    CHECK_MSG(strstr(msg, "fingerprint") != NULL, "%s", msg);
    CHECK(cl_closed(fd));
    close(fd);

    /* A draft that does match is welcome. */
    fd = es_test_tcp_connect(port, 0);
    m.draft_fingerprint = es_tokenizer_fingerprint(tok);
    CHECK(cl_hello(fd, &m, &w));
    close(fd);

    /* n_vocab differs too: both named. */
    fd = es_test_tcp_connect(port, 0);
    m.draft_fingerprint = 7;
    m.draft_n_vocab = 1000;
    b = wb();
    CHECK_OK(es_proto_put_hello(b, &m, &err), &err);
    CHECK(cl_send_wb(fd, b));
    msg = EXPECT_ERROR(fd, 0, ES_PERR_VOCAB);
    CHECK_MSG(strstr(msg, "n_vocab 1000") != NULL, "%s", msg);
    CHECK(cl_closed(fd));
    close(fd);

    /* No common version (HELLO range), then a frame header of another version. */
    fd = es_test_tcp_connect(port, 0);
    m = hello_plain();
    m.version_min = m.version_max = ES_PROTO_LEVEL_MAX + 1;
    b = wb();
    CHECK_OK(es_proto_put_hello(b, &m, &err), &err);
    CHECK(cl_send_wb(fd, b));
    EXPECT_ERROR(fd, 0, ES_PERR_VERSION);
    CHECK(cl_closed(fd));
    close(fd);

    fd = es_test_tcp_connect(port, 0);
    m = hello_plain();
    b = wb();
    CHECK_OK(es_proto_put_hello(b, &m, &err), &err);
    b->data[5] = ES_PROTO_VERSION + 6;
    CHECK(cl_send_wb(fd, b));
    EXPECT_ERROR(fd, 0, ES_PERR_VERSION);
    CHECK(cl_closed(fd));
    close(fd);

    /* HELLO must come first. */
    fd = es_test_tcp_connect(port, 0);
    b = wb();
    CHECK_OK(es_proto_put_ping(b, ES_FRAME_PING, &p, &err), &err);
    CHECK(cl_send_wb(fd, b));
    EXPECT_ERROR(fd, 0, ES_PERR_STATE);
    CHECK(cl_closed(fd));
    close(fd);

    /* A client that half-closes after its last frames still gets the answers, then EOF. */
    fd = es_test_tcp_connect(port, 0);
    m = hello_plain();
    b = wb();
    CHECK_OK(es_proto_put_hello(b, &m, &err), &err);
    CHECK_OK(es_proto_put_ping(b, ES_FRAME_PING, &p, &err), &err);
    CHECK(cl_send_wb(fd, b));
    shutdown(fd, SHUT_WR);
    CHECK(cl_recv(fd, &h) && h.type == ES_FRAME_WELCOME);
    CHECK(cl_recv(fd, &h) && h.type == ES_FRAME_PONG);
    CHECK(cl_closed(fd));
    close(fd);

    /* Silence after connecting: the handshake timeout (0.3 s here) closes the connection (the clock
       starts before the connection, so dt >= the timeout; no upper bound: a loaded machine cuts late) */
    double t0 = es_test_now_s();
    fd = es_test_tcp_connect(port, 0);
    EXPECT_ERROR(fd, 0, ES_PERR_TIMEOUT);
    CHECK(cl_closed(fd));
    double dt = es_test_now_s() - t0;
    CHECK_MSG(dt >= 0.28, "handshake timeout after %.2f s", dt);
    close(fd);
}

/* Greedy AR session from a text prompt: the server tokenises (BOS added) and streams the golden tokens. */
static void test_ar(int port) {
    int fd = connect_ready(port);
    CHECK(fd >= 0);
    es_msg_open m = open_params(ES_MODE_AR, 64);
    m.flags = ES_OPEN_PROMPT_TEXT;
    m.text = "Once upon a time";
    m.text_len = (uint32_t)strlen(m.text);
    es_err err = {{0}};
    es_wbuf *b = wb();
    CHECK_OK(es_proto_put_open(b, 1, &m, &err), &err);
    CHECK(cl_send_wb(fd, b));
    es_msg_opened o;
    CHECK(expect_opened(fd, 1, &o));
    CHECK(o.n_prompt == (uint32_t)g_n_prompt && o.max_tokens == 64 && o.n_ctx == 256);
    int32_t got[128];
    int stop = -1;
    int n = collect_tokens(fd, 1, got, 128, &stop);
    CHECK_MSG(n == 64, "got %d tokens", n);
    int same = 0;
    while (same < n && same < 64 && got[same] == g_gen[same]) same++;
    CHECK_MSG(same == 64, "AR tokens agree with the golden output for %d of 64", same);
    CHECK(stop == ES_STOP_LENGTH);
    /* a text prompt is for AR and SERVER_SPEC sessions (PROTOCOL.md): an EDGE session must send the
       token ids it drafts from, and the server says so instead of admitting it */
    m = open_params(ES_MODE_EDGE, 8);
    m.flags = ES_OPEN_PROMPT_TEXT;
    m.text = "Once upon a time";
    m.text_len = (uint32_t)strlen(m.text);
    b = wb();
    CHECK_OK(es_proto_put_open(b, 2, &m, &err), &err);
    CHECK(cl_send_wb(fd, b));
    const char *msg = EXPECT_ERROR(fd, 2, ES_PERR_INVALID);
    CHECK_MSG(strstr(msg, "token ids"), "edge session with a text prompt: %s", msg);
    close(fd);
}

/* An edge session driven by hand: trees holding the golden next tokens next to wrong siblings. */
static void test_edge(int port) {
    int fd = connect_ready(port);
    CHECK(fd >= 0);
    const uint32_t sid = 7;
    CHECK(send_open_ids(fd, sid, ES_MODE_EDGE, g_prompt, g_n_prompt, 32));
    es_msg_opened o;
    CHECK(expect_opened(fd, sid, &o));
    CHECK(o.n_prompt == (uint32_t)g_n_prompt);
    const int32_t *g = g_gen;
    es_msg_verdict v;

    /* round 0: root = last prompt token; g0 and g1 right, their siblings wrong. */
    {
        int32_t tok[] = {g[0], wrong(g[0]), g[1], wrong(g[1])};
        int32_t par[] = {-1, -1, 0, 0};
        CHECK(send_verify(fd, sid, 0, tok, par, 4));
        memset(&v, 0, sizeof v);
        CHECK(expect_verdict(fd, sid, 0, &v));
        CHECK(v.v.n_accepted == 2 && v.v.path[0] == 0 && v.v.path[1] == 2);
        CHECK(v.v.n_tokens == 3 && v.v.tokens[0] == g[0] && v.v.tokens[1] == g[1] && v.v.tokens[2] == g[2]);
        CHECK(v.stop == ES_STOP_NONE);
    }
    /* round 1: root = g2 (the bonus); the right child second, then a chain below it. */
    {
        int32_t tok[] = {wrong(g[3]), g[3], g[4], wrong(g[5])};
        int32_t par[] = {-1, -1, 1, 2};
        CHECK(send_verify(fd, sid, 1, tok, par, 4));
        memset(&v, 0, sizeof v);
        CHECK(expect_verdict(fd, sid, 1, &v));
        CHECK(v.v.n_accepted == 2 && v.v.path[0] == 1 && v.v.path[1] == 2);
        CHECK(v.v.n_tokens == 3 && v.v.tokens[0] == g[3] && v.v.tokens[1] == g[4] && v.v.tokens[2] == g[5]);
    }
    /* round 2: an empty tree is one plain step. */
    CHECK(send_verify(fd, sid, 2, NULL, NULL, 0));
    memset(&v, 0, sizeof v);
    CHECK(expect_verdict(fd, sid, 2, &v));
    CHECK(v.v.n_accepted == 0 && v.v.n_tokens == 1 && v.v.tokens[0] == g[6]);
    /* round 3: everything wrong: only the bonus. */
    {
        int32_t tok[] = {wrong(g[7]), wrong(wrong(g[7]))};
        int32_t par[] = {-1, 0};
        CHECK(send_verify(fd, sid, 3, tok, par, 2));
        memset(&v, 0, sizeof v);
        CHECK(expect_verdict(fd, sid, 3, &v));
        CHECK(v.v.n_accepted == 0 && v.v.n_tokens == 1 && v.v.tokens[0] == g[7]);
    }
    {
        int32_t tok[] = {g[8], g[9]};
        int32_t par[] = {-1, 0};
        CHECK(send_verify(fd, sid, 4, tok, par, 2));
        memset(&v, 0, sizeof v);
        CHECK(expect_verdict(fd, sid, 4, &v));
        CHECK(v.v.n_accepted == 2 && v.v.n_tokens == 3 && v.v.tokens[2] == g[10]);
    }

    /* The same id again while open: state. */
    CHECK(send_open_ids(fd, sid, ES_MODE_EDGE, g_prompt, g_n_prompt, 8));
    EXPECT_ERROR(fd, sid, ES_PERR_STATE);

    /* Closing: acknowledged with CLOSE (client), after which the id is unknown (a second CLOSE is
     * ignored, a VERIFY gets no_session). */
    es_msg_close c = {.stop = ES_STOP_CLIENT, .n_generated = 0};
    es_err err = {{0}};
    es_wbuf *b = wb();
    CHECK_OK(es_proto_put_close(b, sid, &c, &err), &err);
    CHECK(cl_send_wb(fd, b));
    es_frame_header h;
    CHECK(cl_recv(fd, &h) && h.type == ES_FRAME_CLOSE && h.session == sid);
    es_msg_close ack;
    CHECK(es_proto_get_close(g_payload, h.len, &ack, &err) == ES_OK && ack.stop == ES_STOP_CLIENT && ack.n_generated == 11);
    b = wb();
    CHECK_OK(es_proto_put_close(b, sid, &c, &err), &err);
    CHECK(cl_send_wb(fd, b));
    {
        int32_t tok[] = {g[11]};
        int32_t par[] = {-1};
        CHECK(send_verify(fd, sid, 5, tok, par, 1));
        EXPECT_ERROR(fd, sid, ES_PERR_NO_SESSION);
    }
    /* The id can be reused at once and starts from round 0 again. */
    CHECK(send_open_ids(fd, sid, ES_MODE_EDGE, g_prompt, g_n_prompt, 2));
    CHECK(expect_opened(fd, sid, &o));
    {
        int32_t tok[] = {g[0], g[1], g[2]};
        int32_t par[] = {-1, 0, 1};
        CHECK(send_verify(fd, sid, 0, tok, par, 3));
        memset(&v, 0, sizeof v);
        CHECK(expect_verdict(fd, sid, 0, &v));
        /* max_tokens 2: the verdict is cut at two tokens and the session ends. */
        CHECK_MSG(v.v.n_tokens == 2 && v.v.tokens[0] == g[0] && v.v.tokens[1] == g[1], "n_tokens %d", v.v.n_tokens);
        CHECK(v.stop == ES_STOP_LENGTH);
        CHECK(cl_recv(fd, &h) && h.type == ES_FRAME_CLOSE && h.session == sid);
    }

    /* Errors about a session end it (docs/PROTOCOL.md): a round out of order... */
    CHECK(send_open_ids(fd, 8, ES_MODE_EDGE, g_prompt, g_n_prompt, 8));
    CHECK(expect_opened(fd, 8, &o));
    {
        int32_t tok[] = {g[0]};
        int32_t par[] = {-1};
        CHECK(send_verify(fd, 8, 1, tok, par, 1));
        EXPECT_ERROR(fd, 8, ES_PERR_STATE);
        CHECK(send_verify(fd, 8, 0, tok, par, 1));
        EXPECT_ERROR(fd, 8, ES_PERR_NO_SESSION);
    }
    /* ... a token outside the vocabulary ... */
    CHECK(send_open_ids(fd, 8, ES_MODE_EDGE, g_prompt, g_n_prompt, 8));
    CHECK(expect_opened(fd, 8, &o));
    {
        int32_t tok[] = {g[0], 600};
        int32_t par[] = {-1, 0};
        CHECK(send_verify(fd, 8, 0, tok, par, 2));
        EXPECT_ERROR(fd, 8, ES_PERR_INVALID);
    }
    /* ... a VERIFY that does not decode (parent after its child): malformed, and the connection
     * carries on with a fresh session of the same id. */
    CHECK(send_open_ids(fd, 8, ES_MODE_EDGE, g_prompt, g_n_prompt, 8));
    CHECK(expect_opened(fd, 8, &o));
    {
        uint8_t fr[ES_PROTO_HEADER_SIZE + 7 + 12];
        es_frame_header vh = {.len = 7 + 12, .type = ES_FRAME_VERIFY, .version = ES_PROTO_VERSION, .flags = 0, .session = 8};
        es_proto_put_header(fr, &vh);
        uint8_t *q = fr + ES_PROTO_HEADER_SIZE;
        memset(q, 0, 7 + 12);
        q[5] = 2;                          /* N = 2 */
        q[7] = 5;                          /* node 0: token 5, parent 1 (not earlier) */
        q[11] = 1;
        q[13] = 6;                         /* node 1: token 6, parent -1 */
        q[17] = 0xff;
        q[18] = 0xff;
        CHECK(es_test_send_all(fd, fr, sizeof fr));
        EXPECT_ERROR(fd, 8, ES_PERR_MALFORMED);
    }
    CHECK(send_open_ids(fd, 8, ES_MODE_EDGE, g_prompt, g_n_prompt, 8));
    CHECK(expect_opened(fd, 8, &o));
    {
        int32_t tok[] = {g[0]};
        int32_t par[] = {-1};
        CHECK(send_verify(fd, 8, 0, tok, par, 1));
        memset(&v, 0, sizeof v);
        CHECK(expect_verdict(fd, 8, 0, &v));
        CHECK(v.v.n_accepted == 1 && v.v.n_tokens == 2 && v.v.tokens[1] == g[1]);
    }
    close(fd);
}

static void test_protocol_errors(int port, uint32_t max_payload) {
    int fd = connect_ready(port);
    CHECK(fd >= 0);
    es_err err = {{0}};
    /* A garbage OPEN payload: malformed, for that session; the connection keeps working. */
    uint8_t junk[ES_PROTO_HEADER_SIZE + 5] = {0};
    es_frame_header h = {.len = 5, .type = ES_FRAME_OPEN, .version = ES_PROTO_VERSION, .flags = 0, .session = 3};
    es_proto_put_header(junk, &h);
    memset(junk + ES_PROTO_HEADER_SIZE, 0xff, 5);
    CHECK(es_test_send_all(fd, junk, sizeof junk));
    EXPECT_ERROR(fd, 3, ES_PERR_MALFORMED);
    es_msg_ping p = {.nonce = 42};
    es_wbuf *b = wb();
    CHECK_OK(es_proto_put_ping(b, ES_FRAME_PING, &p, &err), &err);
    CHECK(cl_send_wb(fd, b));
    CHECK(cl_recv(fd, &h) && h.type == ES_FRAME_PONG);
    /* A frame type only the server sends, on a session: state. */
    es_msg_opened fake = {.n_prompt = 1, .max_tokens = 1, .n_ctx = 256};
    b = wb();
    CHECK_OK(es_proto_put_opened(b, 3, &fake, &err), &err);
    CHECK(cl_send_wb(fd, b));
    EXPECT_ERROR(fd, 3, ES_PERR_STATE);
    /* A CLOSE for a session that does not exist is ignored: the next answer is the PONG. */
    es_msg_close cl = {.stop = ES_STOP_CLIENT, .n_generated = 0};
    b = wb();
    CHECK_OK(es_proto_put_close(b, 77, &cl, &err), &err);
    CHECK_OK(es_proto_put_ping(b, ES_FRAME_PING, &p, &err), &err);
    CHECK(cl_send_wb(fd, b));
    CHECK(cl_recv(fd, &h) && h.type == ES_FRAME_PONG);

    /* A prompt token outside the vocabulary. */
    int32_t badp[] = {1, 9999};
    CHECK(send_open_ids(fd, 4, ES_MODE_AR, badp, 2, 4));
    EXPECT_ERROR(fd, 4, ES_PERR_INVALID);
    /* Prompt + max_tokens beyond the context: context. */
    CHECK(send_open_ids(fd, 4, ES_MODE_AR, g_prompt, g_n_prompt, 100000));
    EXPECT_ERROR(fd, 4, ES_PERR_CONTEXT);
    /* Server-spec without a server draft: unsupported. */
    CHECK(send_open_ids(fd, 4, ES_MODE_SERVER_SPEC, g_prompt, g_n_prompt, 4));
    EXPECT_ERROR(fd, 4, ES_PERR_UNSUPPORTED);

    /* VERIFY for a session that does not exist. */
    int32_t tok[] = {5};
    int32_t par[] = {-1};
    CHECK(send_verify(fd, 99, 0, tok, par, 1));
    EXPECT_ERROR(fd, 99, ES_PERR_NO_SESSION);
    /* VERIFY on an AR session: state. */
    CHECK(send_open_ids(fd, 5, ES_MODE_AR, g_prompt, g_n_prompt, 200));
    es_msg_opened o;
    CHECK(expect_opened(fd, 5, &o));
    CHECK(send_verify(fd, 5, 0, tok, par, 1));
    bool saw_state = false;
    for (int i = 0; i < 400 && !saw_state; i++) { /* TOKENS of session 5 interleave */
        if (!cl_recv(fd, &h)) break;
        if (h.type == ES_FRAME_ERROR) {
            es_msg_error e;
            CHECK(es_proto_get_error(g_payload, h.len, &e, &err) == ES_OK);
            CHECK_MSG(e.code == ES_PERR_STATE && h.session == 5, "%s", e.msg);
            saw_state = true;
        }
    }
    CHECK(saw_state);

    /* A header announcing more than the server accepts: too_large, then closed. */
    uint8_t big[ES_PROTO_HEADER_SIZE];
    h = (es_frame_header){.len = max_payload + 1, .type = ES_FRAME_VERIFY, .version = ES_PROTO_VERSION, .flags = 0, .session = 5};
    es_proto_put_header(big, &h);
    CHECK(es_test_send_all(fd, big, sizeof big));
    bool saw_large = false;
    for (int i = 0; i < 400 && !saw_large; i++) {
        if (!cl_recv(fd, &h)) break;
        if (h.type == ES_FRAME_ERROR) {
            es_msg_error e;
            CHECK(es_proto_get_error(g_payload, h.len, &e, &err) == ES_OK);
            CHECK_MSG(e.code == ES_PERR_TOO_LARGE && h.session == 0, "%s", e.msg);
            saw_large = true;
        }
    }
    CHECK(saw_large);
    CHECK(cl_closed(fd));
    close(fd);

    /* A connection-level frame that does not decode (a PING of 3 bytes) ends the connection. */
    fd = connect_ready(port);
    CHECK(fd >= 0);
    uint8_t bad[ES_PROTO_HEADER_SIZE + 3] = {0};
    h = (es_frame_header){.len = 3, .type = ES_FRAME_PING, .version = ES_PROTO_VERSION, .flags = 0, .session = 0};
    es_proto_put_header(bad, &h);
    CHECK(es_test_send_all(fd, bad, sizeof bad));
    EXPECT_ERROR(fd, 0, ES_PERR_MALFORMED);
    CHECK(cl_closed(fd));
    close(fd);
}

/* A client vanishes with a VERIFY pending and a session mid-prefill: its KV blocks come back while
 * another connection's session runs to the golden end. */
static void test_vanish(es_server *srv, int port) {
    int fc = connect_ready(port), fb = connect_ready(port);
    CHECK(fc >= 0 && fb >= 0);
    CHECK(send_open_ids(fc, 1, ES_MODE_AR, g_prompt, g_n_prompt, 64));
    es_msg_opened o;
    CHECK(expect_opened(fc, 1, &o));

    /* A 200-token prompt prefills in 16-token chunks: 13 steps. */
    int32_t longp[200];
    memcpy(longp, g_prompt, (size_t)g_n_prompt * sizeof(int32_t));
    memcpy(longp + g_n_prompt, g_gen, (size_t)(200 - g_n_prompt) * sizeof(int32_t));
    CHECK(send_open_ids(fb, 1, ES_MODE_EDGE, longp, 200, 32));
    CHECK(expect_opened(fb, 1, &o));
    CHECK(send_open_ids(fb, 2, ES_MODE_EDGE, g_prompt, g_n_prompt, 32));
    CHECK(expect_opened(fb, 2, &o));
    int32_t tok[] = {g_gen[0], g_gen[1]};
    int32_t par[] = {-1, 0};
    CHECK(send_verify(fb, 2, 0, tok, par, 2));
    /* Wait for the prefill to be under way (sequences are created and filled by the compute thread),
     * then vanish: most likely mid-prefill for session 1 and with the tree of session 2 pending. */
    es_server_stats st = stats_of(srv);
    double t1 = es_test_now_s();
    while (st.sched.kv_blocks_used == 0 && es_test_now_s() - t1 < ES_TEST_WAIT_CAP_S) {
        es_test_sleep_ms(1);
        st = stats_of(srv);
    }
    CHECK_MSG(st.sched.kv_blocks_used > 0, "kv blocks used %lld", (long long)st.sched.kv_blocks_used);
    close(fb);

    int32_t got[128];
    int stop = -1;
    int n = collect_tokens(fc, 1, got, 128, &stop);
    CHECK_MSG(n == 64 && memcmp(got, g_gen, 64 * sizeof(int32_t)) == 0, "n %d", n);
    CHECK(stop == ES_STOP_LENGTH);

    double t0 = es_test_now_s();
    do {
        st = stats_of(srv);
        if (st.sched.kv_blocks_used == 0 && st.sched.sessions_active == 0) break;
        es_test_sleep_ms(10);
    } while (es_test_now_s() - t0 < ES_TEST_WAIT_CAP_S);
    CHECK_MSG(st.sched.kv_blocks_used == 0, "kv blocks still used: %lld", (long long)st.sched.kv_blocks_used);
    CHECK_MSG(st.sched.sessions_active == 0, "sessions still active: %d", st.sched.sessions_active);
    close(fc);
}

/* A client that sends and never reads is dropped once its unread output passes the limit. */
static void test_slow_consumer(es_server *srv, int port) {
    int fd = es_test_tcp_connect(port, 4096);
    es_msg_hello m = hello_plain();
    snprintf(m.api_key, sizeof m.api_key, "sekrit");
    es_msg_welcome w;
    CHECK(fd >= 0 && cl_hello(fd, &m, &w));
    es_server_stats before = stats_of(srv);
    es_err err = {{0}};
    static uint8_t burst[1000 * 20];
    es_wbuf b;
    es_wbuf_init(&b, burst, sizeof burst);
    bool enc = true;
    for (int i = 0; i < 1000; i++) {
        es_msg_ping p = {.nonce = (uint64_t)i};
        enc = enc && es_proto_put_ping(&b, ES_FRAME_PING, &p, &err) == ES_OK;
    }
    CHECK(enc && b.len == sizeof burst);
    bool failed = false;
    for (int i = 0; i < 800 && !failed; i++) failed = !es_test_send_all(fd, b.data, b.len);
    es_server_stats after = stats_of(srv);
    double t0 = es_test_now_s();
    while (!failed && after.connections_open >= before.connections_open && es_test_now_s() - t0 < ES_TEST_WAIT_CAP_S) {
        es_test_sleep_ms(10);
        after = stats_of(srv);
    }
    CHECK_MSG(failed || after.connections_open < before.connections_open, "slow consumer not dropped");
    t0 = es_test_now_s();
    while (slow_drops() == 0 && es_test_now_s() - t0 < ES_TEST_WAIT_CAP_S) es_test_sleep_ms(10);
    CHECK_MSG(slow_drops() == 1, "slow-consumer drops logged: %d", slow_drops());
    close(fd);
}

/* With a 0.5 s idle timeout: a session nobody drives ends (ERROR timeout) while the connection,
 * kept alive by pings, stays; a silent connection is then closed. */
static void test_idle(int port) {
    int fd = es_test_tcp_connect(port, 0);
    es_msg_hello m = hello_plain();
    snprintf(m.api_key, sizeof m.api_key, "sekrit");
    es_msg_welcome w;
    CHECK(fd >= 0 && cl_hello(fd, &m, &w));
    /* the clock starts before OPEN, the server's idle clock after it: dt >= the timeout. No upper
       bound: a loaded machine may end it late (the pings go on until it does, within the cap). */
    double t0 = es_test_now_s();
    CHECK(send_open_ids(fd, 3, ES_MODE_EDGE, g_prompt, g_n_prompt, 8));
    es_msg_opened o;
    CHECK(expect_opened(fd, 3, &o));
    bool timed_out = false;
    es_err err = {{0}};
    for (uint64_t i = 0; !timed_out && es_test_now_s() - t0 < ES_TEST_WAIT_CAP_S; i++) {
        es_msg_ping p = {.nonce = i};
        es_wbuf *b = wb();
        CHECK_OK(es_proto_put_ping(b, ES_FRAME_PING, &p, &err), &err);
        CHECK(cl_send_wb(fd, b));
        es_frame_header h;
        CHECK(cl_recv(fd, &h));
        if (h.type == ES_FRAME_ERROR) {
            es_msg_error e;
            CHECK(es_proto_get_error(g_payload, h.len, &e, &err) == ES_OK);
            CHECK_MSG(e.code == ES_PERR_TIMEOUT && h.session == 3, "%s: %s", es_proto_err_name(e.code), e.msg);
            timed_out = true;
            CHECK(cl_recv(fd, &h) && h.type == ES_FRAME_PONG);
        } else {
            CHECK(h.type == ES_FRAME_PONG);
        }
        es_test_sleep_ms(100);
    }
    CHECK(timed_out);
    double dt = es_test_now_s() - t0;
    CHECK_MSG(dt >= 0.48, "session timed out after %.2f s", dt);
    EXPECT_ERROR(fd, 0, ES_PERR_TIMEOUT);
    CHECK(cl_closed(fd));
    close(fd);
}

/* VERIFY's drafted field: a version-3 client's trees are counted by how it drafted them; a version-2
 * client that sets the field (which a version-2 server refuses as unknown flags) is refused as
 * malformed, and nothing is counted. */
static void test_drafted(es_server *srv, int port) {
    const es_server_stats before = stats_of(srv);
    for (int level = ES_PROTO_LEVEL_BET; level >= ES_PROTO_LEVEL_EARLY; level--) {
        const int fd = es_test_tcp_connect(port, 0);
        CHECK(fd >= 0);
        es_msg_hello m = hello_plain();
        m.version_max = (uint16_t)level;
        es_msg_welcome w;
        memset(&w, 0, sizeof w);
        CHECK(fd >= 0 && cl_hello(fd, &m, &w));
        CHECK_MSG(w.version == level, "HELLO up to %d answered with version %u", level, w.version);
        const uint32_t sid = 4;
        es_msg_opened o;
        CHECK(send_open_ids(fd, sid, ES_MODE_EDGE, g_prompt, g_n_prompt, 16) && expect_opened(fd, sid, &o));
        if (level == ES_PROTO_LEVEL_BET) {
            for (int r = 0; r < ES_TREE_ORIGINS; r++) { /* empty trees: one plain step each */
                es_msg_verdict v;
                CHECK(send_verify_as(fd, sid, (uint32_t)r, NULL, NULL, 0, ES_TREE_ORIGINS - 1 - r));
                CHECK(expect_verdict(fd, sid, (uint32_t)r, &v));
            }
            const es_server_stats st = stats_of(srv);
            for (int k = 0; k < ES_TREE_ORIGINS; k++)
                CHECK_MSG(st.trees[k] == before.trees[k] + 1, "%s: %lld trees, %lld before", es_tree_origin_name(k),
                          (long long)st.trees[k], (long long)before.trees[k]);
        } else {
            CHECK(send_verify_as(fd, sid, 0, NULL, NULL, 0, ES_TREE_BET_HIT));
            const char *msg = EXPECT_ERROR(fd, sid, ES_PERR_MALFORMED);
            CHECK_MSG(msg && strstr(msg, "version 3"), "%s", msg ? msg : "(none)");
            const es_server_stats st = stats_of(srv);
            for (int k = 0; k < ES_TREE_ORIGINS; k++) CHECK(st.trees[k] == before.trees[k] + 1);
        }
        if (fd >= 0) close(fd);
    }
}

static void test_auth(es_server *srv, int port) {
    (void)srv;
    int fd = es_test_tcp_connect(port, 0);
    es_msg_hello m = hello_plain();
    es_err err = {{0}};
    es_wbuf *b = wb();
    CHECK_OK(es_proto_put_hello(b, &m, &err), &err);
    CHECK(cl_send_wb(fd, b));
    EXPECT_ERROR(fd, 0, ES_PERR_AUTH);
    CHECK(cl_closed(fd));
    close(fd);
    fd = es_test_tcp_connect(port, 0);
    snprintf(m.api_key, sizeof m.api_key, "sekriT");
    b = wb();
    CHECK_OK(es_proto_put_hello(b, &m, &err), &err);
    CHECK(cl_send_wb(fd, b));
    EXPECT_ERROR(fd, 0, ES_PERR_AUTH);
    close(fd);
    fd = es_test_tcp_connect(port, 0);
    snprintf(m.api_key, sizeof m.api_key, "sekrit");
    es_msg_welcome w;
    CHECK(cl_hello(fd, &m, &w));
    close(fd);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    CHECK(load_golden());
    es_model *model = NULL;
    es_err err = {{0}};
    es_model_params mp = es_model_default_params();
    CHECK_OK(es_model_load(es_test_model("stories260K.gguf"), &mp, &model, &err), &err);
    if (!model || g_n_gen < 200) return es_test_finish("test_server");
    const es_tokenizer *tok = es_model_tokenizer(model);

    es_server_params sp = es_server_default_params();
    sp.port = 0;
    sp.target = model;
    sp.target_tok = tok;
    sp.sched.n_threads = 1;
    sp.sched.n_ctx = 256;
    sp.sched.max_sessions = 8;
    sp.sched.max_batch_tokens = 64;
    sp.sched.prefill_chunk = 16;
    sp.sched.max_tree_nodes = 32;
    sp.max_payload = 1u << 16;
    sp.handshake_timeout_s = 0.3;
    sp.log = test_log;
    es_server *srv = NULL;
    CHECK_OK(es_server_start(&sp, &srv, &err), &err);
    if (!srv) {
        es_model_free(model);
        return es_test_finish("test_server");
    }
    int port = es_server_port(srv);
    CHECK(port > 0);

    double t = es_test_now_s();
#define TIMED(call)                                                   \
    do {                                                              \
        call;                                                         \
        fprintf(stderr, "%-40s %.2f s\n", #call, es_test_now_s() - t);      \
        t = es_test_now_s();                                                  \
    } while (0)
    TIMED(test_handshake(port, tok));
    TIMED(test_ar(port));
    TIMED(test_edge(port));
    TIMED(test_protocol_errors(port, sp.max_payload));
    TIMED(test_vanish(srv, port));
    TIMED(test_drafted(srv, port));

    es_server_stats st = stats_of(srv);
    CHECK(st.connections_total >= 10 && st.connections_refused >= 5);
    CHECK(st.protocol_errors >= 5);
    CHECK(st.frames_in > 0 && st.frames_out > 0 && st.bytes_in > 0 && st.bytes_out > 0);
    CHECK(st.sched.tokens_generated >= 128 && st.sched.steps > 0);

    /* Shutdown with a session open: the client hears SHUTDOWN for it and for the connection. */
    int fd = connect_ready(port);
    CHECK(fd >= 0);
    CHECK(send_open_ids(fd, 9, ES_MODE_EDGE, g_prompt, g_n_prompt, 16));
    es_msg_opened o;
    CHECK(expect_opened(fd, 9, &o));
    es_server_free(srv);
    EXPECT_ERROR(fd, 9, ES_PERR_SHUTDOWN);
    EXPECT_ERROR(fd, 0, ES_PERR_SHUTDOWN);
    CHECK(cl_closed(fd));
    close(fd);

    /* A second server: api key required, tiny output limit. */
    sp.api_key = "sekrit";
    sp.max_output_bytes = 64 << 10;
    sp.handshake_timeout_s = 10;
    sp.idle_timeout_s = 0.5;
    srv = NULL;
    CHECK_OK(es_server_start(&sp, &srv, &err), &err);
    if (srv) {
        TIMED(test_auth(srv, es_server_port(srv)));
        TIMED(test_slow_consumer(srv, es_server_port(srv)));
        TIMED(test_idle(es_server_port(srv)));
        TIMED(es_server_free(srv));
    }

    /* Binding a port already in use fails with a message. */
    sp.api_key = NULL;
    es_server *a = NULL, *b2 = NULL;
    CHECK_OK(es_server_start(&sp, &a, &err), &err);
    if (a) {
        sp.port = es_server_port(a);
        CHECK(es_server_start(&sp, &b2, &err) == ES_ERR_IO && b2 == NULL);
        CHECK_MSG(strstr(err.msg, "listen") != NULL, "%s", err.msg);
        es_server_free(a);
    }

    es_model_free(model);
    return es_test_finish("test_server");
}
