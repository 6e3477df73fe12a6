/* test_edge_liar.c — the edge client against a lying or broken server: a small fake server (one
 * thread, blocking sockets, frames built with the protocol encoder) that completes the handshake
 * and then misbehaves. Each case failed before its fix:
 *  - a server that answers VERIFY with a PING every 50 ms, or with stale frames of another session,
 *    never sends the verdict: the edge gives up after --io-timeout (the deadline is one for the
 *    frame awaited, not restarted by whatever else arrives);
 *  - a server that floods PINGs and never reads the PONGs: the edge's queues are capped (8 MiB each
 *    way) and the connection dropped, instead of growing its memory without bound;
 *  - OPENED granting 0xFFFFFFFF of 16 tokens, or a context of 4 G positions: a protocol error (the
 *    grant was cast to -1: the edge returned no tokens with stop "length" and status ok);
 *  - an ERROR whose text holds terminal escapes: the message the edge returns has none;
 *  - EARLY frames out of place (unasked for, a path past the tree, two for one round, a round not
 *    pending): a protocol error that names it.
 * No case depends on timing: the fake server misbehaves until the edge hangs up (or a cap against
 * hangs, ES_TEST_WAIT_CAP_S, passes). */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "edge/edge.h"
#include "wire/proto.h"
#include "testutil.h"

typedef enum lie {
    LIE_PING_FOREVER, /* edge mode: VERIFY answered by PINGs only */
    LIE_STALE,        /* AR mode: TOKENS of another session only */
    LIE_FLOOD,        /* AR mode: PINGs as fast as the socket takes them, PONGs never read */
    LIE_BIG_GRANT,    /* OPENED max_tokens 0xFFFFFFFF */
    LIE_BIG_CTX,      /* OPENED n_ctx 0xFFFFFFFF */
    LIE_ESCAPE,       /* ERROR text with terminal escapes */
    /* edge mode, protocol version 2: EARLY frames the edge must refuse (a protocol error, never a
       tree drafted from them) */
    LIE_EARLY_UNASKED, /* an EARLY to an edge that did not ask for early exits */
    LIE_EARLY_BADPATH, /* an EARLY whose path names a node past the tree */
    LIE_EARLY_TWICE,   /* two EARLYs for one round */
    LIE_EARLY_ROUND,   /* an EARLY for a round that is not pending */
} lie;
#define IS_EARLY_LIE(m) ((m) >= LIE_EARLY_UNASKED)

typedef struct fake {
    int lfd, port;
    lie mode;
    const es_tokenizer *tok;
    pthread_t th;
    /* results (read after join) */
    bool saw_open, saw_verify, edge_hung_up;
    long frames_sent;
} fake;

static uint8_t g_rx[1 << 20];

/* Reads exactly n bytes; false at EOF / error. */
static bool read_all(int fd, uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

static bool read_frame(int fd, es_frame_header *h) {
    uint8_t hb[ES_PROTO_HEADER_SIZE];
    es_err err;
    if (!read_all(fd, hb, sizeof hb)) return false;
    if (es_proto_get_header(hb, sizeof g_rx, h, &err) != ES_OK) return false;
    return read_all(fd, g_rx, h->len);
}

static bool send_wb(int fd, const es_wbuf *w) { return !w->overflow && es_test_send_all(fd, w->data, w->len); }

/* Whether the peer has closed (EOF or reset), without blocking. */
static bool peer_gone(int fd) {
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, 0) <= 0) return false;
    if (pf.revents & (POLLHUP | POLLERR)) return true;
    uint8_t b[4096];
    ssize_t k = recv(fd, b, sizeof b, MSG_DONTWAIT);
    return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void *fake_main(void *arg) {
    fake *f = arg;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    static uint8_t tx[1 << 16];
    es_wbuf w;
    es_err err;
    es_frame_header h;
    if (!read_frame(fd, &h) || h.type != ES_FRAME_HELLO) goto out;
    es_msg_welcome wl;
    memset(&wl, 0, sizeof wl);
    wl.version = IS_EARLY_LIE(f->mode) ? ES_PROTO_LEVEL_EARLY : ES_PROTO_VERSION;
    snprintf(wl.name, sizeof wl.name, "liar");
    wl.target_fingerprint = es_tokenizer_fingerprint(f->tok);
    wl.n_vocab = (uint32_t)es_tokenizer_n_vocab(f->tok);
    wl.bos = es_tokenizer_bos(f->tok);
    wl.eos = es_tokenizer_eos(f->tok);
    wl.n_ctx = 512;
    wl.max_tree_nodes = 64;
    wl.max_new_tokens = 512;
    wl.max_payload = 1 << 20;
    wl.rules = 0x7;
    es_wbuf_init(&w, tx, sizeof tx);
    if (es_proto_put_welcome(&w, &wl, &err) != ES_OK || !send_wb(fd, &w)) goto out;
    if (!read_frame(fd, &h) || h.type != ES_FRAME_OPEN) goto out;
    f->saw_open = true;
    const uint32_t sid = h.session;
    if (f->mode == LIE_ESCAPE) {
        es_msg_error em = {ES_PERR_INVALID, ""};
        snprintf(em.msg, sizeof em.msg, "\x1b[2J\x1b]0;pwned\x07 go away\r\n\x7f");
        es_wbuf_init(&w, tx, sizeof tx);
        if (es_proto_put_error(&w, sid, &em, &err) == ES_OK) send_wb(fd, &w);
        goto wait_gone;
    }
    es_msg_opened op = {.n_prompt = 4, .max_tokens = 16, .n_ctx = 512};
    if (f->mode == LIE_BIG_GRANT) op.max_tokens = 0xFFFFFFFFu;
    if (f->mode == LIE_BIG_CTX) op.n_ctx = 0xFFFFFFFFu;
    es_wbuf_init(&w, tx, sizeof tx);
    if (es_proto_put_opened(&w, sid, &op, &err) != ES_OK || !send_wb(fd, &w)) goto out;
    if (f->mode == LIE_BIG_GRANT || f->mode == LIE_BIG_CTX) goto wait_gone;
    if (IS_EARLY_LIE(f->mode)) {
        if (!read_frame(fd, &h) || h.type != ES_FRAME_VERIFY) goto out;
        f->saw_verify = true;
        es_msg_early em;
        memset(&em, 0, sizeof em);
        em.round = f->mode == LIE_EARLY_ROUND ? 7 : 0;
        em.layer = 2;
        em.v.n_accepted = 0;
        em.v.n_tokens = 1;
        em.v.tokens[0] = em.v.bonus = 5;
        if (f->mode == LIE_EARLY_BADPATH) { /* node 60 of a tree the edge sent with far fewer */
            em.v.n_accepted = 1;
            em.v.path[0] = 60;
            em.v.n_tokens = 2;
            em.v.tokens[0] = 5;
            em.v.tokens[1] = em.v.bonus = 6;
        }
        es_wbuf_init(&w, tx, sizeof tx);
        if (es_proto_put_early(&w, sid, &em, &err) != ES_OK) goto out;
        if (f->mode == LIE_EARLY_TWICE && es_proto_put_early(&w, sid, &em, &err) != ES_OK) goto out;
        if (!send_wb(fd, &w)) goto out;
        goto wait_gone;
    }
    if (f->mode == LIE_PING_FOREVER) {
        if (!read_frame(fd, &h) || h.type != ES_FRAME_VERIFY) goto out;
        f->saw_verify = true;
    }
    const double t0 = es_test_now_s();
    if (f->mode == LIE_FLOOD) {
        /* PINGs until the edge hangs up; nothing is read, so its PONGs pile up on its side */
        es_wbuf_init(&w, tx, sizeof tx);
        for (uint64_t i = 0; w.len + 64 < sizeof tx; i++) {
            es_msg_ping p = {.nonce = i};
            (void)es_proto_put_ping(&w, ES_FRAME_PING, &p, &err);
        }
        const int frames_per_buf = (int)(w.len / (ES_PROTO_HEADER_SIZE + 8));
        while (es_test_now_s() - t0 < ES_TEST_WAIT_CAP_S) {
            if (!es_test_send_all(fd, w.data, w.len)) {
                f->edge_hung_up = true;
                break;
            }
            f->frames_sent += frames_per_buf;
        }
        goto out;
    }
    /* LIE_PING_FOREVER / LIE_STALE: something every 50 ms, never the awaited frame */
    for (uint64_t i = 0; es_test_now_s() - t0 < ES_TEST_WAIT_CAP_S; i++) {
        if (peer_gone(fd)) {
            f->edge_hung_up = true;
            break;
        }
        es_wbuf_init(&w, tx, sizeof tx);
        if (f->mode == LIE_PING_FOREVER) {
            es_msg_ping p = {.nonce = i};
            (void)es_proto_put_ping(&w, ES_FRAME_PING, &p, &err);
        } else {
            int32_t tok[1] = {5};
            es_msg_tokens tm = {.stop = 0, .n = 1, .tokens = tok};
            (void)es_proto_put_tokens(&w, sid + 100, &tm, &err);
        }
        if (!send_wb(fd, &w)) {
            f->edge_hung_up = true;
            break;
        }
        f->frames_sent++;
        es_test_sleep_ms(50);
    }
    goto out;
wait_gone:
    while (read_frame(fd, &h)) {
    }
    f->edge_hung_up = true;
out:
    close(fd);
    return NULL;
}

static bool fake_start(fake *f, lie mode, const es_tokenizer *tok) {
    memset(f, 0, sizeof *f);
    f->mode = mode;
    f->tok = tok;
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(f->lfd, 4) != 0 ||
        getsockname(f->lfd, (struct sockaddr *)&a, &al) != 0)
        return false;
    f->port = ntohs(a.sin_port);
    return pthread_create(&f->th, NULL, fake_main, f) == 0;
}

static void fake_join(fake *f) {
    pthread_join(f->th, NULL);
    close(f->lfd);
}

static void quiet_log(void *ud, int level, const char *msg) {
    (void)ud;
    (void)level;
    (void)msg;
}

/* Runs one generation against a fake server in `mode`; returns its status, message in err. */
static es_status run_case(lie mode, es_model *draft, int edge_mode, fake *f, es_edge_stats *st, es_err *err) {
    const bool early = IS_EARLY_LIE(mode) && mode != LIE_EARLY_UNASKED;
    CHECK(fake_start(f, mode, es_model_tokenizer(draft)));
    es_edge_params p = es_edge_default_params();
    p.host = "127.0.0.1";
    p.port = f->port;
    p.mode = edge_mode;
    p.draft = edge_mode == ES_MODE_EDGE ? draft : NULL;
    p.io_timeout_s = 0.5;
    p.reconnect_attempts = 0;
    p.log = quiet_log;
    p.early_exit = early;
    es_edge *e = NULL;
    es_status s = es_edge_connect(&p, &e, err);
    CHECK_MSG(s == ES_OK, "connect to the fake server: %s", err->msg);
    if (s == ES_OK) {
        const int32_t prompt[4] = {1, 403, 407, 261};
        int32_t out[17];
        const int32_t stop[1] = {2};
        s = es_edge_generate(e, prompt, 4, 16, stop, 1, out, st, NULL, NULL, err);
        es_edge_free(e);
    }
    fake_join(f);
    return s;
}

static bool has_control(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return true;
    return false;
}

int main(void) {
    es_model *draft = es_test_load_model("stories260K.gguf");
    if (!draft) return es_test_finish("test_edge_liar");
    es_err err;
    es_edge_stats st;
    fake f;

    /* a VERIFY answered by PINGs only: a timeout, not a wait for ever */
    memset(&err, 0, sizeof err);
    es_status s = run_case(LIE_PING_FOREVER, draft, ES_MODE_EDGE, &f, &st, &err);
    CHECK(f.saw_verify);
    CHECK_MSG(s == ES_ERR_IO || s == ES_ERR_TIMEOUT, "pings instead of a verdict: %s (%s)", es_status_str(s), err.msg);
    CHECK_MSG(strstr(err.msg, "too long") != NULL, "pings instead of a verdict: %s", err.msg);
    CHECK_MSG(f.edge_hung_up, "the edge was still there after %ld pings", f.frames_sent);
    printf("pings: the edge gave up after %ld pings (io timeout 0.5 s): %s\n", f.frames_sent, err.msg);

    /* stale frames of another session only: the same */
    memset(&err, 0, sizeof err);
    s = run_case(LIE_STALE, draft, ES_MODE_AR, &f, &st, &err);
    CHECK_MSG((s == ES_ERR_IO || s == ES_ERR_TIMEOUT) && strstr(err.msg, "too long"), "stale frames: %s (%s)", es_status_str(s), err.msg);
    CHECK_MSG(f.edge_hung_up, "the edge was still there after %ld stale frames", f.frames_sent);
    CHECK(st.n_generated == 0);

    /* a PING flood whose PONGs are never read: the edge drops the connection at its queue cap */
    memset(&err, 0, sizeof err);
    s = run_case(LIE_FLOOD, draft, ES_MODE_AR, &f, &st, &err);
    /* whichever queue fills first (the PINGs it has not taken yet, or the PONGs the server does not
       read), the edge's memory stays bounded and the connection goes */
    CHECK_MSG(s == ES_ERR_IO && (strstr(err.msg, "does not read") || strstr(err.msg, "has not taken")), "ping flood: %s (%s)",
              es_status_str(s), err.msg);
    CHECK_MSG(f.edge_hung_up, "ping flood: the edge never hung up (%ld pings sent)", f.frames_sent);
    printf("flood: the edge hung up after %ld pings: %s\n", f.frames_sent, err.msg);

    /* grants and contexts beyond what was asked: protocol errors, not a cast to -1 */
    memset(&err, 0, sizeof err);
    s = run_case(LIE_BIG_GRANT, draft, ES_MODE_AR, &f, &st, &err);
    CHECK_MSG(s == ES_ERR_PROTOCOL && strstr(err.msg, "granted 4294967295"), "huge grant: %s (%s)", es_status_str(s), err.msg);
    CHECK(st.n_generated == 0);
    memset(&err, 0, sizeof err);
    s = run_case(LIE_BIG_CTX, draft, ES_MODE_AR, &f, &st, &err);
    CHECK_MSG(s == ES_ERR_PROTOCOL && strstr(err.msg, "context"), "huge context: %s (%s)", es_status_str(s), err.msg);

    /* terminal escapes in the server's error text never reach the caller's message */
    memset(&err, 0, sizeof err);
    s = run_case(LIE_ESCAPE, draft, ES_MODE_AR, &f, &st, &err);
    CHECK_MSG(s != ES_OK && strstr(err.msg, "pwned") && strstr(err.msg, "go away"), "escape: %s (%s)", es_status_str(s), err.msg);
    CHECK_MSG(!has_control(err.msg), "control bytes in the edge's error message");

    /* EARLY frames out of place: a protocol error naming what is wrong, never a draft from them */
    static const struct { lie mode; const char *what; } early_lies[] = {
        {LIE_EARLY_UNASKED, "unasked-for EARLY"},
        {LIE_EARLY_BADPATH, "EARLY frame: verdict path step 0 (node 60)"},
        {LIE_EARLY_TWICE, "a second EARLY"},
        {LIE_EARLY_ROUND, "EARLY frame: verdict for round 7"},
    };
    for (size_t k = 0; k < sizeof early_lies / sizeof early_lies[0]; k++) {
        memset(&err, 0, sizeof err);
        s = run_case(early_lies[k].mode, draft, ES_MODE_EDGE, &f, &st, &err);
        CHECK(f.saw_verify);
        CHECK_MSG(s == ES_ERR_PROTOCOL && strstr(err.msg, early_lies[k].what), "EARLY lie %d: %s (%s)", (int)early_lies[k].mode,
                  es_status_str(s), err.msg);
        CHECK(st.n_generated == 0);
        printf("early lie %d: %s\n", (int)early_lies[k].mode, err.msg);
    }

    es_model_free(draft);
    return es_test_finish("test_edge_liar");
}
