/* test_edge_api.c — what the edge-local OpenAI API asks of the wire beyond tokens (protocol version 4):
 * log-probabilities and a response format (a JSON grammar), against an in-process server.
 *  - greedy, a JSON Schema grammar and top-3 logprobs: an edge session (tree drafts masked by the same
 *    grammar, proactive bets on and off) emits exactly the tokens a plain AR session of the server
 *    emits, with the same log-probabilities (same target, up to float rounding between batch shapes),
 *    one entry per token; every token is one the grammar allows; drafts are accepted (the edge's mask
 *    keeps them inside the grammar) and bets are placed and hit under it;
 *  - json_object (no schema text) over the wire: the same agreement;
 *  - the server restarted mid-generation: the resumed session's grammar starts after the output so far
 *    (OPEN's grammar_done), so the output is still the reference;
 *  - the server gone for good with fallback_local: the draft finishes alone, still inside the grammar,
 *    with its own log-probabilities for every token;
 *  - a version-3 connection asking for logprobs or a grammar is refused naming the version; a schema
 *    outside the supported subset is refused with the reason. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edge/edge.h"
#include "edgespec.h"
#include "grammar/grammar.h"
#include "server/server.h"
#include "wire/proto.h"
#include "testutil.h"

#define GEN 48
#define TOP 3

static const int32_t k_stop[2] = {1, 2};
static const char *const k_schema =
    "{\"type\":\"object\",\"properties\":{\"mood\":{\"enum\":[\"happy\",\"sad\"]},\"count\":{\"type\":\"integer\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"cat\",\"dog\"]},\"maxItems\":2}},"
    "\"required\":[\"mood\",\"count\"],\"additionalProperties\":false}";

static void quiet_log(void *ud, int level, const char *msg) {
    (void)ud;
    (void)level;
    (void)msg;
}

static es_server *start_server(es_model *target, int port) {
    es_server_params sp = es_server_default_params();
    sp.sched.knee_tokens = 64;
    sp.host = "127.0.0.1";
    sp.port = port;
    sp.target = target;
    sp.target_tok = es_model_tokenizer(target);
    sp.sched.n_threads = 1;
    sp.log = quiet_log;
    es_server *s = NULL;
    es_err err = {{0}};
    CHECK_OK(es_server_start(&sp, &s, &err), &err);
    return s;
}

static es_edge_params edge_params(int port, const es_model *draft, int mode) {
    es_edge_params p = es_edge_default_params();
    p.host = "127.0.0.1";
    p.port = port;
    p.draft = draft;
    p.mode = mode;
    p.draft_params.mode = ES_DRAFT_TREE;
    p.draft_params.tree_budget = 16;
    p.draft_params.tree_depth = 5;
    p.draft_params.tree_width = 2;
    p.io_timeout_s = 30;
    p.log = quiet_log;
    return p;
}

/* One generation's output and the log-probabilities its callback saw. */
typedef struct run {
    int32_t out[GEN + 1];
    es_edge_stats st;
    es_token_logprob lp[GEN + 1];
    int n_lp, n_cb;            /* entries received; tokens passed to on_tokens */
    bool lp_mismatch;          /* on_tokens got a count its preceding on_logprobs did not announce */
    int pending;
    /* restart / kill the server after `after` tokens */
    es_server **srv;
    es_model *target;
    int after, port;
    bool restart;
} run;

static void on_lp(void *ud, const es_token_logprob *lp, int n) {
    run *r = ud;
    for (int i = 0; i < n && r->n_lp < GEN + 1; i++) r->lp[r->n_lp++] = lp[i];
    r->pending = n;
}

static void on_tok(void *ud, const int32_t *toks, int n, double t_s) {
    (void)toks;
    (void)t_s;
    run *r = ud;
    if (r->pending != n) r->lp_mismatch = true;
    r->pending = 0;
    r->n_cb += n;
    if (r->srv && r->n_cb >= r->after && *r->srv) {
        r->after = 1 << 30;
        es_server_free(*r->srv);
        *r->srv = r->restart ? start_server(r->target, r->port) : NULL;
    }
}

static es_status generate(es_edge *e, const es_grammar *g, const int32_t *prompt, int np, run *r, es_err *err) {
    const es_edge_request rq = {TOP, g, on_lp};
    es_status s = es_edge_set_request(e, &rq, err);
    if (s != ES_OK) return s;
    return es_edge_generate(e, prompt, np, GEN, k_stop, 2, r->out, &r->st, on_tok, r, err);
}

/* The tokens all pass the grammar (a stop token only once the value is complete). */
static bool follows(const es_grammar *g, const es_tokenizer *tok, const int32_t *t, int n) {
    es_grammar_vocab *v = NULL;
    es_gmatcher *m = NULL;
    es_err err = {{0}};
    bool ok = es_grammar_vocab_init(tok, &v, &err) == ES_OK && es_gmatcher_init(g, v, k_stop, 2, &m, &err) == ES_OK;
    for (int i = 0; ok && i < n; i++) ok = es_gmatcher_accept(m, t[i]);
    es_gmatcher_free(m);
    es_grammar_vocab_free(v);
    return ok;
}

static int same_prefix(const int32_t *a, const int32_t *b, int n) {
    int k = 0;
    while (k < n && a[k] == b[k]) k++;
    return k;
}

/* r against the reference: the same tokens and log-probabilities, one entry per emitted token. */
static void check_same(const run *ref, const run *r, const char *what) {
    const int n = ref->st.n_generated;
    CHECK_MSG(r->st.n_generated == n && same_prefix(r->out, ref->out, n) == n, "%s: %d tokens, the reference's on %d of %d", what,
              r->st.n_generated, same_prefix(r->out, ref->out, n), n);
    CHECK_MSG(r->n_lp == r->n_cb && !r->lp_mismatch, "%s: %d log-probabilities for %d tokens", what, r->n_lp, r->n_cb);
    float worst = 0;
    for (int i = 0; i < r->n_lp && i < ref->n_lp; i++) {
        const es_token_logprob *a = &r->lp[i], *b = &ref->lp[i];
        CHECK_MSG(a->n_top == TOP && b->n_top == TOP, "%s: token %d has %d / %d alternatives", what, i, a->n_top, b->n_top);
        worst = fmaxf(worst, fabsf(a->logprob - b->logprob));
        for (int k = 0; k < TOP && k < a->n_top && k < b->n_top; k++) {
            worst = fmaxf(worst, fabsf(a->top_logprob[k] - b->top_logprob[k]));
            /* ids may swap only where two alternatives tie within rounding */
            CHECK_MSG(a->top_id[k] == b->top_id[k] || fabsf(a->top_logprob[k] - b->top_logprob[k]) < 1e-3f, "%s: token %d alternative %d",
                      what, i, k);
        }
    }
    CHECK_MSG(worst < 1e-3f, "%s: log-probabilities differ by up to %g", what, (double)worst);
}

static void test_agreement(es_model *target, es_model *draft, const es_grammar *g, const char *what) {
    es_server *srv = start_server(target, 0);
    if (!srv) return;
    const int port = es_server_port(srv);
    es_err err = {{0}};
    /* a short story prompt: BOS + "Once upon a time" as the golden files tokenise it */
    int32_t prompt[32];
    int np = 0;
    CHECK_OK(es_tokenize(es_model_tokenizer(target), "Once upon a time", 16, true, false, prompt, 32, &np, &err), &err);

    run ref;
    memset(&ref, 0, sizeof ref);
    es_edge_params p = edge_params(port, NULL, ES_MODE_AR);
    es_edge *e = NULL;
    CHECK_OK(es_edge_connect(&p, &e, &err), &err);
    if (e) CHECK_OK(generate(e, g, prompt, np, &ref, &err), &err);
    es_edge_free(e);
    CHECK_MSG(ref.st.n_generated > 8, "%s: the reference made %d tokens", what, ref.st.n_generated);
    CHECK_MSG(follows(g, es_model_tokenizer(target), ref.out, ref.st.n_generated), "%s: the reference leaves the grammar", what);
    CHECK_MSG(ref.n_lp == ref.n_cb && !ref.lp_mismatch, "%s: AR: %d log-probabilities for %d tokens", what, ref.n_lp, ref.n_cb);

    for (int pro = 0; pro < 2; pro++) {
        run r;
        memset(&r, 0, sizeof r);
        p = edge_params(port, draft, ES_MODE_EDGE);
        p.proactive = pro;
        e = NULL;
        CHECK_OK(es_edge_connect(&p, &e, &err), &err);
        if (e) CHECK_OK(generate(e, g, prompt, np, &r, &err), &err);
        es_edge_free(e);
        char name[96];
        snprintf(name, sizeof name, "%s, edge, proactive %s", what, pro ? "on" : "off");
        check_same(&ref, &r, name);
        CHECK_MSG(r.st.accepted > 0, "%s: no draft token accepted in %d rounds", name, r.st.rounds);
        if (pro) CHECK_MSG(r.st.proactive_attempts > 0, "%s: no bet placed", name);
        printf("%s: %d tokens in %d rounds, %ld of %ld drafted accepted, bets %ld/%ld\n", name, r.st.n_generated, r.st.rounds,
               r.st.accepted, r.st.drafted, r.st.proactive_hits, r.st.proactive_attempts);
    }
    es_server_free(srv);
}

/* One generation during which the server goes away after 10 tokens (restarted on its port, or not). */
static void one_loss(const es_edge_params *p, const es_grammar *g, const int32_t *prompt, int np, es_server **srv, es_model *target,
                     bool restart, run *r) {
    memset(r, 0, sizeof *r);
    r->srv = srv;
    r->target = target;
    r->after = 10;
    r->port = p->port;
    r->restart = restart;
    es_edge *e = NULL;
    es_err err = {{0}};
    CHECK_OK(es_edge_connect(p, &e, &err), &err);
    if (e) CHECK_OK(generate(e, g, prompt, np, r, &err), &err);
    es_edge_free(e);
}

/* The server restarted after 10 tokens: the resumed session's grammar knows the output so far. Then
 * killed for good with fallback_local: the draft goes on alone inside the grammar. */
static void test_loss(es_model *target, es_model *draft, const es_grammar *g) {
    es_err err = {{0}};
    int32_t prompt[32];
    int np = 0;
    CHECK_OK(es_tokenize(es_model_tokenizer(target), "Once upon a time", 16, true, false, prompt, 32, &np, &err), &err);
    es_server *srv = start_server(target, 0);
    if (!srv) return;
    const int port = es_server_port(srv);
    run ref;
    memset(&ref, 0, sizeof ref);
    es_edge_params p = edge_params(port, draft, ES_MODE_EDGE);
    es_edge *e = NULL;
    CHECK_OK(es_edge_connect(&p, &e, &err), &err);
    if (e) CHECK_OK(generate(e, g, prompt, np, &ref, &err), &err);
    es_edge_free(e);

    static run r;
    one_loss(&p, g, prompt, np, &srv, target, true, &r);
    CHECK_MSG(srv != NULL, "the server did not restart on port %d", port);
    CHECK_MSG(r.st.reconnects >= 1, "%d reconnects", r.st.reconnects);
    check_same(&ref, &r, "resumed under a grammar");

    static run f;
    p.fallback_local = true;
    if (srv) one_loss(&p, g, prompt, np, &srv, target, false, &f);
    CHECK_MSG(f.st.fallback_tokens > 0, "fallback_tokens %d", f.st.fallback_tokens);
    CHECK_MSG(follows(g, es_model_tokenizer(target), f.out, f.st.n_generated), "the draft alone left the grammar");
    CHECK_MSG(f.n_lp == f.n_cb && !f.lp_mismatch, "fallback: %d log-probabilities for %d tokens", f.n_lp, f.n_cb);
    for (int i = 0; i < f.n_lp; i++) CHECK(f.lp[i].logprob <= 0 && f.lp[i].n_top == TOP);
    printf("fallback under a grammar: %d tokens from the server, %d from the draft alone\n", f.st.n_generated - f.st.fallback_tokens,
           f.st.fallback_tokens);
    es_server_free(srv);
}

/* A raw connection at protocol version `version`, then OPEN with the given extras: the server's first
 * answer after OPENED (frame type: TOKENS when the session runs; for ERROR its code and message). */
static int raw_open(int port, int version, const es_msg_open *om, es_msg_error *em) {
    const int fd = es_test_tcp_connect(port, 0);
    if (fd < 0) return -1;
    uint8_t buf[8192], hdr[ES_PROTO_HEADER_SIZE];
    es_wbuf w;
    es_err err = {{0}};
    es_msg_hello h;
    memset(&h, 0, sizeof h);
    h.version_min = 1;
    h.version_max = (uint16_t)version;
    snprintf(h.name, sizeof h.name, "raw-edge");
    es_wbuf_init(&w, buf, sizeof buf);
    int type = -1;
    es_frame_header fh;
    if (es_proto_put_hello(&w, &h, &err) == ES_OK && es_test_send_all(fd, buf, w.len) && es_test_recv_all(fd, hdr, sizeof hdr) &&
        es_proto_get_header(hdr, 1 << 20, &fh, &err) == ES_OK && fh.type == ES_FRAME_WELCOME && fh.len <= sizeof buf &&
        es_test_recv_all(fd, buf, fh.len)) {
        es_wbuf_init(&w, buf, sizeof buf);
        bool sent = es_proto_put_open(&w, 5, om, &err) == ES_OK && es_test_send_all(fd, buf, w.len);
        while (sent && es_test_recv_all(fd, hdr, sizeof hdr) && es_proto_get_header(hdr, 1 << 20, &fh, &err) == ES_OK &&
               fh.len <= sizeof buf && es_test_recv_all(fd, buf, fh.len)) {
            if (fh.type == ES_FRAME_OPENED) continue;
            type = fh.type;
            if (type == ES_FRAME_ERROR && es_proto_get_error(buf, fh.len, em, &err) != ES_OK) type = -2;
            break;
        }
    }
    close(fd);
    return type;
}

static void test_refusals(es_model *target) {
    es_server *srv = start_server(target, 0);
    if (!srv) return;
    int32_t prompt[2] = {1, 400};
    es_msg_open om;
    memset(&om, 0, sizeof om);
    om.mode = ES_MODE_AR;
    om.max_tokens = 4;
    om.top_p = 1;
    om.n_prompt = 2;
    om.prompt = prompt;
    om.flags = ES_OPEN_LOGPROBS;
    om.top_logprobs = 2;
    es_msg_error em;
    memset(&em, 0, sizeof em);
    CHECK(raw_open(es_server_port(srv), 3, &om, &em) == ES_FRAME_ERROR && em.code == ES_PERR_INVALID && strstr(em.msg, "version"));
    om.flags = ES_OPEN_GRAMMAR;
    om.grammar_kind = ES_PROTO_GRAMMAR_JSON_OBJECT;
    CHECK(raw_open(es_server_port(srv), 3, &om, &em) == ES_FRAME_ERROR && em.code == ES_PERR_INVALID && strstr(em.msg, "version"));
    CHECK(raw_open(es_server_port(srv), 4, &om, &em) == ES_FRAME_TOKENS);
    /* a schema the grammar cannot enforce: refused with the keyword named */
    static const char bad[] = "{\"type\":\"string\",\"pattern\":\"a+\"}";
    om.grammar_kind = ES_PROTO_GRAMMAR_SCHEMA;
    om.schema = bad;
    om.schema_len = (uint32_t)strlen(bad);
    CHECK(raw_open(es_server_port(srv), 4, &om, &em) == ES_FRAME_ERROR && em.code == ES_PERR_INVALID && strstr(em.msg, "pattern"));
    /* output so far that the grammar refuses ("cat" is not how a JSON object starts): the session fails
       when it starts, saying so */
    es_err err = {{0}};
    int n = 0;
    CHECK_OK(es_tokenize(es_model_tokenizer(target), "cat", 3, false, false, prompt + 1, 1, &n, &err), &err);
    om.grammar_kind = ES_PROTO_GRAMMAR_JSON_OBJECT;
    om.schema = NULL;
    om.schema_len = 0;
    om.grammar_done = 1;
    int t = raw_open(es_server_port(srv), 4, &om, &em);
    CHECK_MSG(n >= 1 && t == ES_FRAME_ERROR && em.code == ES_PERR_INVALID && strstr(em.msg, "response format"), "answer %d (%s)", t, em.msg);
    om.grammar_done = 2; /* the whole prompt (BOS included) cannot be output: not even encoded */
    uint8_t buf[512];
    es_wbuf w;
    es_wbuf_init(&w, buf, sizeof buf);
    CHECK(es_proto_put_open(&w, 5, &om, &err) == ES_ERR_INVALID_ARG && w.len == 0);
    es_server_free(srv);
}

int main(void) {
    es_model *target = es_test_load_model("stories260K.gguf");
    es_model *draft = es_test_load_model("draft-mid.gguf");
    if (!target || !draft) return es_test_finish("test_edge_api");
    es_err err = {{0}};
    es_grammar *schema = NULL, *object = NULL;
    CHECK_OK(es_grammar_from_schema(k_schema, strlen(k_schema), &schema, &err), &err);
    CHECK_OK(es_grammar_json_object(&object, &err), &err);
    size_t len = 0;
    CHECK(es_grammar_source(schema, &len) && len == strlen(k_schema) && !memcmp(es_grammar_source(schema, NULL), k_schema, len));
    CHECK(es_grammar_source(object, NULL) == NULL);
    if (schema && object) {
        test_agreement(target, draft, schema, "json_schema");
        test_agreement(target, draft, object, "json_object");
        test_loss(target, draft, schema);
    }
    test_refusals(target);
    es_grammar_free(schema);
    es_grammar_free(object);
    es_model_free(draft);
    es_model_free(target);
    return es_test_finish("test_edge_api");
}
