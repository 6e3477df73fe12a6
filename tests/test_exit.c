/* test_exit.c — early-exit hooks and exit heads on the CPU (stories260K, 5 layers, d 64).
 *
 *  - the hook delivers, for the rows that asked for logits and only them, the residual stream after
 *    each requested layer; at n_layer, output(final_norm(h)) computed here equals es_ctx_logits;
 *  - a pass with the hook gives bit-identical logits to one without (the exit only observes);
 *  - a head's rows do not depend on the batch: one row alone equals the same row in a batch of many;
 *  - an identity adapter gives the zero-training head's logits; a calibrated head read back from a
 *    GGUF (exit.<L>.weight / .bias) equals the one set in memory;
 *  - ridge regression recovers an exact affine map (y = M x + c) and errs on no rows;
 *  - errors: hook layers out of range or repeated, head layers out of range, adapter of the wrong
 *    shape, non-finite adapter. */
#include <math.h>
#include <string.h>

#include "gguf/gguf.h"
#include "kernels/matmul.h"
#include "kernels/types.h"
#include "model/model.h"
#include "model/ridge.h"
#include "testutil.h"

#define MAXR 16

typedef struct {
    int calls[ES_EXIT_MAX + 1];
    int layer[8];
    int n_rows[8];
    int32_t rows[8][MAXR];
    float h[8][MAXR * 64];
    int n;
} capture;

static void on_exit_rows(void *ud, int layer, const float *hidden, int n_rows, const int32_t *rows) {
    capture *c = ud;
    if (c->n >= 8 || n_rows > MAXR) return;
    c->layer[c->n] = layer;
    c->n_rows[c->n] = n_rows;
    memcpy(c->rows[c->n], rows, (size_t)n_rows * sizeof(int32_t));
    memcpy(c->h[c->n], hidden, (size_t)n_rows * 64 * sizeof(float));
    c->n++;
}

static es_ctx *make_ctx(es_model *m) {
    es_ctx_params p = es_ctx_default_params();
    p.n_ctx = 128;
    p.n_batch_max = 64;
    p.kv_type = ES_KV_F32;
    es_ctx *c = NULL;
    es_err err = {{0}};
    CHECK_OK(es_ctx_init(m, &p, &c, &err), &err);
    return c;
}


static const int32_t PROMPT[10] = {1, 403, 407, 261, 378, 300, 290, 410, 266, 302};

/* Decodes PROMPT into a fresh sequence, logits at rows 3, 7 and 9. */
static void run(es_ctx *c, bool want_rows) {
    int s;
    es_err err = {{0}};
    CHECK_OK(es_seq_open(c, &s, &err), &err);
    int32_t pos[10], seq[10];
    int8_t want[10] = {0};
    for (int i = 0; i < 10; i++) { pos[i] = i; seq[i] = s; }
    want[3] = want[7] = want[9] = 1;
    es_batch b = {.n_tokens = 10, .token = PROMPT, .pos = pos, .seq = seq, .logits = want_rows ? want : NULL};
    CHECK_OK(es_decode(c, &b, &err), &err);
    es_seq_close(c, s); /* the logits stay readable until the next decode */
}

static void test_hook(es_model *m) {
    const int nl = es_model_n_layer(m), nv = es_model_n_vocab(m), d = es_model_n_embd(m);
    CHECK(d == 64 && nl == 5);
    es_ctx *plain = make_ctx(m), *hooked = make_ctx(m);
    if (!plain || !hooked) goto done;
    static capture cap;
    memset(&cap, 0, sizeof cap);
    const int layers[2] = {nl, 2}; /* any order */
    es_err err = {{0}};
    CHECK_OK(es_ctx_set_exit_hook(hooked, layers, 2, on_exit_rows, &cap, &err), &err);
    run(plain, true);
    run(hooked, true);
    CHECK(cap.n == 2);
    CHECK(cap.layer[0] == 2 && cap.layer[1] == nl); /* in layer order */
    for (int k = 0; k < cap.n; k++) {
        CHECK(cap.n_rows[k] == 3);
        CHECK(cap.rows[k][0] == 3 && cap.rows[k][1] == 7 && cap.rows[k][2] == 9);
    }
    const int rows[3] = {3, 7, 9};
    static float xn[64], lg[4096];
    for (int r = 0; r < 3; r++) {
        const float *a = es_ctx_logits(plain, rows[r]), *b = es_ctx_logits(hooked, rows[r]);
        CHECK(a && b && memcmp(a, b, (size_t)nv * sizeof(float)) == 0);
        /* the final residual row through the output norm and head is what the pass returned */
        const float *h = cap.h[1] + (size_t)r * d;
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)h[j] * h[j];
        const float s = 1.0f / sqrtf((float)(ss / d) + m->hp.rms_eps);
        for (int j = 0; j < d; j++) xn[j] = m->output_norm[j] * (s * h[j]);
        es_matmul(NULL, lg, &m->output, xn, 1, NULL);
        CHECK_MSG(b && es_test_rel_diff(lg, b, nv) < 1e-4, "final hidden row %d does not give the pass's logits", r);
        /* an early state is not the final one */
        CHECK(memcmp(cap.h[0] + (size_t)r * d, h, (size_t)d * sizeof(float)) != 0);
    }
    /* without asking for rows: the last row only */
    cap.n = 0;
    run(hooked, false);
    CHECK(cap.n == 2 && cap.n_rows[0] == 1 && cap.rows[0][0] == 9);
    /* the hook off again */
    CHECK_OK(es_ctx_set_exit_hook(hooked, NULL, 0, NULL, NULL, &err), &err);
    cap.n = 0;
    run(hooked, true);
    CHECK(cap.n == 0);
    /* bad hooks */
    const int bad0[1] = {0}, bad1[1] = {nl + 1}, dup[2] = {2, 2};
    CHECK(es_ctx_set_exit_hook(hooked, bad0, 1, on_exit_rows, &cap, &err) == ES_ERR_RANGE);
    CHECK(es_ctx_set_exit_hook(hooked, bad1, 1, on_exit_rows, &cap, &err) == ES_ERR_RANGE);
    CHECK(es_ctx_set_exit_hook(hooked, dup, 2, on_exit_rows, &cap, &err) == ES_ERR_INVALID_ARG);
done:
    es_ctx_free(plain);
    es_ctx_free(hooked);
}

static void test_heads(es_model *m) {
    const int nv = es_model_n_vocab(m), d = es_model_n_embd(m), nl = es_model_n_layer(m);
    es_ctx *c = make_ctx(m);
    if (!c) return;
    static capture cap;
    memset(&cap, 0, sizeof cap);
    const int L = 2;
    es_err err = {{0}};
    CHECK_OK(es_ctx_set_exit_hook(c, &L, 1, on_exit_rows, &cap, &err), &err);
    run(c, true);
    CHECK(cap.n == 1);
    es_exit_heads *h = NULL, *h2 = NULL;
    CHECK_OK(es_exit_heads_init(m, NULL, &L, 1, 4, 2, &h, &err), &err);
    if (!h) goto done;
    CHECK(es_exit_heads_count(h) == 1 && es_exit_heads_layer(h, 0) == L && !es_exit_heads_calibrated(h, 0));
    static float z[3 * 4096], one[4096], id_lg[3 * 4096], cal[3 * 4096], cal2[3 * 4096];
    CHECK_OK(es_exit_heads_logits(h, L, cap.h[0], 3, z, &err), &err);
    CHECK_OK(es_exit_heads_logits(h, L, cap.h[0] + d, 1, one, &err), &err); /* row 1 alone */
    CHECK(memcmp(one, z + nv, (size_t)nv * sizeof(float)) == 0);
    /* zero-training logits are not the final ones (layer 2 of 5) but are finite */
    bool finite = true;
    for (int i = 0; i < 3 * nv; i++) finite &= isfinite(z[i]);
    CHECK(finite);
    /* identity adapter == zero-training */
    static float W[64 * 64], B[64];
    memset(W, 0, sizeof W);
    for (int i = 0; i < d; i++) W[i * d + i] = 1;
    CHECK_OK(es_exit_heads_set_adapter(h, L, W, NULL, &err), &err);
    CHECK(es_exit_heads_calibrated(h, 0));
    CHECK_OK(es_exit_heads_logits(h, L, cap.h[0], 3, id_lg, &err), &err);
    CHECK(es_test_rel_diff(id_lg, z, 3 * nv) < 1e-6);
    /* some adapter, written to a GGUF and read back */
    for (int i = 0; i < d * d; i++) W[i] = (float)sin(i * 0.37) * 0.2f;
    for (int i = 0; i < d; i++) B[i] = (float)cos(i * 0.11);
    CHECK_OK(es_exit_heads_set_adapter(h, L, W, B, &err), &err);
    CHECK_OK(es_exit_heads_logits(h, L, cap.h[0], 3, cal, &err), &err);
    CHECK(es_test_rel_diff(cal, z, 3 * nv) > 1e-3);
    const char *path = es_test_tmp("exits.gguf");
    es_gguf_writer *w = es_gguf_writer_init();
    CHECK(w != NULL);
    if (w) {
        const int64_t ne2[2] = {d, d}, ne1[1] = {d};
        CHECK(es_gguf_add_tensor(w, "exit.2.weight", ES_TYPE_F32, 2, ne2, W) == ES_OK);
        CHECK(es_gguf_add_tensor(w, "exit.2.bias", ES_TYPE_F32, 1, ne1, B) == ES_OK);
        CHECK(es_gguf_add_tensor(w, "exit.3.weight", ES_TYPE_F32, 1, ne1, B) == ES_OK); /* wrong shape */
        CHECK_OK(es_gguf_write(w, path, NULL, NULL, &err), &err);
        es_gguf_writer_free(w);
    }
    CHECK_OK(es_exit_heads_init(m, path, &L, 1, 4, 1, &h2, &err), &err);
    if (h2) {
        CHECK(es_exit_heads_calibrated(h2, 0));
        CHECK_OK(es_exit_heads_logits(h2, L, cap.h[0], 3, cal2, &err), &err);
        CHECK(memcmp(cal, cal2, (size_t)3 * nv * sizeof(float)) == 0);
        es_exit_heads_free(h2);
        h2 = NULL;
    }
    /* every layer of the file: exit.3.weight has the wrong shape */
    CHECK(es_exit_heads_init(m, path, NULL, 0, 4, 1, &h2, &err) == ES_ERR_FORMAT && !h2);
    CHECK(strstr(err.msg, "exit.3.weight") != NULL);
    const int L4 = 4, Lbad = nl, L0 = 0;
    CHECK_OK(es_exit_heads_init(m, path, &L4, 1, 4, 1, &h2, &err), &err); /* no adapter there: zero-training */
    CHECK(h2 && !es_exit_heads_calibrated(h2, 0));
    es_exit_heads_free(h2);
    h2 = NULL;
    CHECK(es_exit_heads_init(m, NULL, &Lbad, 1, 4, 1, &h2, &err) == ES_ERR_RANGE && !h2);
    CHECK(es_exit_heads_init(m, NULL, &L0, 1, 4, 1, &h2, &err) == ES_ERR_RANGE && !h2);
    CHECK(es_exit_heads_init(m, "/nonexistent/exits.gguf", &L, 1, 4, 1, &h2, &err) != ES_OK && !h2);
    CHECK(es_exit_heads_logits(h, L, cap.h[0], 5, cal, &err) == ES_ERR_RANGE); /* more than n_rows_max */
    CHECK(es_exit_heads_logits(h, 3, cap.h[0], 1, cal, &err) == ES_ERR_INVALID_ARG); /* no head there */
    W[5] = NAN;
    CHECK(es_exit_heads_set_adapter(h, L, W, B, &err) == ES_ERR_FORMAT);
    CHECK_OK(es_exit_heads_logits(h, L, cap.h[0], 3, cal2, &err), &err); /* the old adapter stays */
    CHECK(memcmp(cal, cal2, (size_t)3 * nv * sizeof(float)) == 0);
done:
    es_exit_heads_free(h);
    es_ctx_free(c);
}

static void test_ridge(void) {
    enum { DI = 6, DO = 4, N = 200 };
    static float x[N * DI], y[N * DO], W[DO * DI], b[DO];
    float M[DO][DI], c[DO];
    uint64_t seed = 42;
    for (int o = 0; o < DO; o++) {
        c[o] = (float)(o - 1.5);
        for (int i = 0; i < DI; i++) M[o][i] = (float)sin(o * 7 + i * 3 + 1);
    }
    for (int k = 0; k < N; k++) {
        for (int i = 0; i < DI; i++) { /* an LCG: independent features (sines of k would be rank 2) */
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            x[k * DI + i] = (float)((seed >> 40) / (double)(1 << 24) - 0.5) * (float)(1 + i);
        }
        for (int o = 0; o < DO; o++) {
            double t = c[o];
            for (int i = 0; i < DI; i++) t += M[o][i] * x[k * DI + i];
            y[k * DO + o] = (float)t;
        }
    }
    es_ridge *r = NULL;
    es_err err = {{0}};
    CHECK_OK(es_ridge_init(DI, DO, &r, &err), &err);
    if (!r) return;
    CHECK(es_ridge_solve(r, 0, W, b, &err) == ES_ERR_RANGE); /* no rows */
    es_ridge_add(r, x, y, N / 2);
    es_ridge_add(r, x + N / 2 * DI, y + N / 2 * DO, N / 2);
    CHECK(es_ridge_rows(r) == N);
    CHECK_OK(es_ridge_solve(r, 0, W, b, &err), &err);
    double e = 0;
    for (int o = 0; o < DO; o++) {
        e = fmax(e, fabs(b[o] - c[o]));
        for (int i = 0; i < DI; i++) e = fmax(e, fabs(W[o * DI + i] - M[o][i]));
    }
    CHECK_MSG(e < 1e-3, "ridge with lambda 0: error %g", e);
    CHECK_OK(es_ridge_solve(r, 10, W, b, &err), &err); /* strong shrinkage moves the weights */
    double e2 = 0;
    for (int o = 0; o < DO; o++)
        for (int i = 0; i < DI; i++) e2 = fmax(e2, fabs(W[o * DI + i] - M[o][i]));
    CHECK(e2 > 1e-2);
    es_ridge_free(r);
}

int main(void) {
    test_ridge();
    es_model *m = es_test_load_model("stories260K.gguf");
    if (m) {
        test_hook(m);
        test_heads(m);
        es_model_free(m);
    }
    return es_test_finish("test_exit");
}
