/* test_device_forward.c — the whole forward pass on each Vulkan device (lavapipe in CI) against the
 * CPU backend, under the validation layer (any validation error fails the test).
 *
 *  - golden: the 20 golden prompts of stories260K (f32) as 20 sequences batched together, prefilled in
 *    one pass and then decoded greedily one row per sequence per pass, on the device and on a CPU
 *    context with an f32 KV cache side by side: every row's logits agree within
 *    LOGIT_TOL · (1 + max |logit|), every argmax is the same, and the tokens are the golden ones;
 *  - quantised weights (Q8_0, Q4_0): the device dequantises and multiplies in f32 where the CPU
 *    quantises the activations to int8, so their logits differ by that rounding; a sequence decoded
 *    alone (the matrix–vector kernels) agrees within QUANT_TOL · (1 + max |logit|);
 *  - Qwen2 (q/k/v biases, NEOX RoPE, grouped-query heads), Qwen3 (per-head q/k norms) and Llama 3
 *    (rope_freqs) on random synthetic models, f32 and Q4_K;
 *  - a token tree (parents, never a dense mask) verified in one pass, then es_seq_keep of one path
 *    (the device moves its own KV rows) and one more step: device == CPU within LOGIT_TOL; once more
 *    with every weight matrix split by rows into 4 KiB buffers (as on a device whose
 *    maxStorageBufferRange is smaller than a matrix);
 *  - early exits: the pass split at an exit layer gives the CPU's hidden rows and logits;
 *  - errors: a device index past the list, a model repacked for the CPU.
 * A build without Vulkan has nothing to run (exit 77); a build with it but no device fails. */
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/vulkan/vk.h"
#include "convert/convert.h"
#include "kernels/matmul.h"
#include "testutil.h"

/* f32 weights: the device and the CPU differ only in the order of their f32 sums */
#define LOGIT_TOL 1e-4
/* Q8_0 / Q4_0: the CPU rounds each activation block to int8 first (about 1/254 of its largest value) */
#define QUANT_TOL 5e-2
#define N_SEQ 20
#define N_STEPS 48

static int n_validation_errors;

static void on_message(void *ud, bool is_error, const char *msg) {
    (void)ud;
    fprintf(stderr, "vulkan validation %s: %s\n", is_error ? "ERROR" : "warning", msg);
    if (is_error) n_validation_errors++;
}

/* buffer_max > 0 splits every device weight matrix into buffers of at most that many bytes */
static es_kv_type g_kv_type = ES_KV_F32; /* the cache rows of the contexts make_ctx creates */

static es_ctx *make_ctx(es_model *m, es_backend_kind be, int device, int64_t buffer_max, int n_seq) {
    es_ctx_params p = es_ctx_default_params();
    p.n_ctx = 256;
    p.n_seq_max = n_seq;
    p.n_batch_max = 512;
    p.n_logits_max = 32;
    p.kv_type = g_kv_type;
    p.n_threads = 2;
    p.backend = be;
    p.device = device;
    p.device_validation = true;
    p.device_message = on_message;
    p.device_buffer_max = buffer_max;
    es_ctx *c = NULL;
    es_err err = {{0}};
    CHECK_OK(es_ctx_init(m, &p, &c, &err), &err);
    return c;
}

static es_model *load(const char *file, bool no_repack) {
    es_model_params mp = es_model_default_params();
    mp.no_repack = no_repack;
    es_model *m = NULL;
    es_err err = {{0}};
    CHECK_OK(es_model_load(es_test_model(file), &mp, &m, &err), &err);
    return m;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}


/* Runs the same batch on both contexts and compares the logits of every row that asked (and, with
 * same_argmax, their argmax: not for random-weight models, whose logits are near ties). */
static void decode_both_(es_ctx *dev, es_ctx *cpu, const es_batch *b, int n_vocab, double tol, const char *what,
                         double *worst, bool same_argmax) {
    es_err err = {{0}};
    CHECK_OK(es_decode(dev, b, &err), &err);
    CHECK_OK(es_decode(cpu, b, &err), &err);
    for (int i = 0; i < b->n_tokens; i++) {
        if (b->logits && !b->logits[i]) continue;
        if (!b->logits && i != b->n_tokens - 1) continue;
        const float *ld = es_ctx_logits(dev, i), *lc = es_ctx_logits(cpu, i);
        CHECK(ld && lc);
        if (!ld || !lc) continue;
        const double e = es_test_rel_diff(ld, lc, n_vocab);
        if (e > *worst) *worst = e;
        CHECK_MSG(e <= tol, "%s, row %d: device logits differ from the CPU's by %.3g (tolerance %.g)", what, i, e, tol);
        if (same_argmax)
            CHECK_MSG(argmax(ld, n_vocab) == argmax(lc, n_vocab), "%s, row %d: device argmax %d, CPU %d", what, i,
                      argmax(ld, n_vocab), argmax(lc, n_vocab));
    }
}

static void decode_both(es_ctx *dev, es_ctx *cpu, const es_batch *b, int n_vocab, double tol, const char *what,
                        double *worst) {
    decode_both_(dev, cpu, b, n_vocab, tol, what, worst, true);
}

/* ---- the golden prompts, batched ------------------------------------------------------------- */

static void test_golden(int device) {
    size_t len;
    char *text = es_test_read_file(es_test_shared("golden/stories260K-greedy.jsonl"), &len);
    CHECK(text != NULL);
    es_model *m = load("stories260K.gguf", true);
    if (!text || !m) { free(text); es_model_free(m); return; }
    static es_test_golden g[N_SEQ];
    int n = 0;
    for (char *line = strtok(text, "\n"); line && n < N_SEQ; line = strtok(NULL, "\n"))
        if (es_test_golden_parse(line, &g[n])) n++;
    CHECK(n == N_SEQ);
    es_ctx *dev = make_ctx(m, ES_BACKEND_VULKAN, device, 0, N_SEQ), *cpu = make_ctx(m, ES_BACKEND_CPU, 0, 0, N_SEQ);
    if (!dev || !cpu) goto done;
    const int nv = es_model_n_vocab(m);
    int32_t tok[512], pos[512], seq[512], sid_d[N_SEQ], sid_c[N_SEQ], last[N_SEQ], npos[N_SEQ];
    int8_t want[512];
    es_err err = {{0}};
    int nt = 0;
    for (int s = 0; s < n; s++) { /* one prefill pass over every prompt: logits of each one's last token */
        CHECK_OK(es_seq_open(dev, &sid_d[s], &err), &err);
        CHECK_OK(es_seq_open(cpu, &sid_c[s], &err), &err);
        CHECK(sid_d[s] == sid_c[s]);
        for (int i = 0; i < g[s].n_prompt && nt < 512; i++, nt++) {
            tok[nt] = g[s].prompt_ids[i];
            pos[nt] = i;
            seq[nt] = sid_d[s];
            want[nt] = i == g[s].n_prompt - 1;
        }
        npos[s] = g[s].n_prompt;
    }
    double worst = 0;
    es_batch b = {.n_tokens = nt, .token = tok, .pos = pos, .seq = seq, .logits = want};
    decode_both(dev, cpu, &b, nv, LOGIT_TOL, "golden prefill", &worst);
    int r = 0, matched = 0, compared = 0;
    for (int i = 0; i < nt; i++)
        if (want[i]) last[r++] = argmax(es_ctx_logits(dev, i), nv);
    for (int step = 0; step < N_STEPS; step++) {
        int k = 0;
        for (int s = 0; s < n; s++) {
            if (step >= g[s].n_gen) continue; /* the reference stopped here */
            compared++;
            if (last[s] == g[s].gen_ids[step]) matched++;
            else CHECK_MSG(0, "golden prompt %d: device token %d at step %d, the reference's %d", s, last[s], step, g[s].gen_ids[step]);
            tok[k] = last[s];
            pos[k] = npos[s]++;
            seq[k] = sid_d[s];
            want[k] = 1;
            k++;
        }
        if (k == 0) break;
        b.n_tokens = k;
        decode_both(dev, cpu, &b, nv, LOGIT_TOL, "golden decode", &worst);
        for (int s = 0, i = 0; s < n; s++)
            if (step < g[s].n_gen) last[s] = argmax(es_ctx_logits(dev, i++), nv);
    }
    printf("golden on the device: %d/%d tokens as the reference, logits within %.2g of the CPU's\n", matched, compared, worst);
done:
    es_ctx_free(dev);
    es_ctx_free(cpu);
    es_model_free(m);
    free(text);
}

/* ---- quantised weights, one sequence alone --------------------------------------------------- */

static void test_quantised(int device, const char *file) {
    es_model *m = load(file, true);
    if (!m) return;
    es_ctx *dev = make_ctx(m, ES_BACKEND_VULKAN, device, 0, 1), *cpu = make_ctx(m, ES_BACKEND_CPU, 0, 0, 1);
    if (dev && cpu) {
        const int nv = es_model_n_vocab(m);
        int sd, sc;
        es_err err = {{0}};
        CHECK_OK(es_seq_open(dev, &sd, &err), &err);
        CHECK_OK(es_seq_open(cpu, &sc, &err), &err);
        int32_t tok[8] = {1, 403, 407, 261, 378}, pos[8], seq[8] = {0};
        for (int i = 0; i < 8; i++) pos[i] = i;
        double worst = 0;
        es_batch b = {.n_tokens = 5, .token = tok, .pos = pos, .seq = seq};
        decode_both(dev, cpu, &b, nv, QUANT_TOL, file, &worst);
        for (int step = 0; step < 12; step++) { /* CPU's greedy token, so both stay on one path */
            tok[0] = argmax(es_ctx_logits(cpu, b.n_tokens - 1), nv);
            pos[0] = 5 + step;
            b = (es_batch){.n_tokens = 1, .token = tok, .pos = pos, .seq = seq};
            es_err e2 = {{0}};
            CHECK_OK(es_decode(dev, &b, &e2), &e2);
            CHECK_OK(es_decode(cpu, &b, &e2), &e2);
            const double e = es_test_rel_diff(es_ctx_logits(dev, 0), es_ctx_logits(cpu, 0), nv);
            if (!(e <= worst)) worst = e; /* (a NaN counts) */
            CHECK_MSG(e <= QUANT_TOL, "%s step %d: device logits differ from the CPU's by %.3g", file, step, e);
        }
        printf("%s on the device: logits within %.2g of the CPU's (int8 activations there)\n", file, worst);
    }
    es_ctx_free(dev);
    es_ctx_free(cpu);
    es_model_free(m);
}

/* ---- a token tree, then keeping one path ------------------------------------------------------ */

static void test_tree(int device, int64_t buffer_max) {
    es_model *m = load("stories260K.gguf", true);
    if (!m) return;
    es_ctx *dev = make_ctx(m, ES_BACKEND_VULKAN, device, buffer_max, 2), *cpu = make_ctx(m, ES_BACKEND_CPU, 0, 0, 2);
    if (dev && cpu) {
        const int nv = es_model_n_vocab(m);
        int s0, s1, c0, c1;
        es_err err = {{0}};
        CHECK_OK(es_seq_open(dev, &s0, &err), &err);
        CHECK_OK(es_seq_open(dev, &s1, &err), &err);
        CHECK_OK(es_seq_open(cpu, &c0, &err), &err);
        CHECK_OK(es_seq_open(cpu, &c1, &err), &err);
        double worst = 0;
        /* two sequences with 17- and 9-token prompts (more than one 16-slot page) in one pass */
        int32_t tok[32], pos[32], seq[32], par[32];
        int8_t want[32];
        int nt = 0;
        for (int i = 0; i < 17; i++, nt++) { tok[nt] = 1 + (i * 37) % 500; pos[nt] = i; seq[nt] = s0; want[nt] = i == 16; }
        for (int i = 0; i < 9; i++, nt++) { tok[nt] = 2 + (i * 53) % 500; pos[nt] = i; seq[nt] = s1; want[nt] = i == 8; }
        es_batch b = {.n_tokens = nt, .token = tok, .pos = pos, .seq = seq, .logits = want};
        decode_both(dev, cpu, &b, nv, LOGIT_TOL, "two prompts", &worst);
        /* a tree on sequence 0: root 0; 1, 2 under 0; 3, 4 under 1; 5 under 2; 6 under 4 — plus one
         * plain token of sequence 1 in the same pass */
        static const int32_t parent[7] = {-1, 0, 0, 1, 1, 2, 4}, depth[7] = {0, 1, 1, 2, 2, 2, 3};
        for (int i = 0; i < 7; i++) { tok[i] = 10 + 31 * i; pos[i] = 17 + depth[i]; seq[i] = s0; par[i] = parent[i]; want[i] = 1; }
        tok[7] = 99; pos[7] = 9; seq[7] = s1; par[7] = -1; want[7] = 1;
        b = (es_batch){.n_tokens = 8, .token = tok, .pos = pos, .seq = seq, .parent = par, .logits = want};
        decode_both(dev, cpu, &b, nv, LOGIT_TOL, "tree", &worst);
        /* keep the path 0 → 1 → 4 → 6 (slots 17, 18, 21, 23) and step on from it */
        const int32_t path[4] = {17, 18, 21, 23};
        CHECK_OK(es_seq_keep(dev, s0, 17, path, 4, &err), &err);
        CHECK_OK(es_seq_keep(cpu, c0, 17, path, 4, &err), &err);
        CHECK(es_seq_len(dev, s0) == 21 && es_seq_len(cpu, c0) == 21);
        tok[0] = 7; pos[0] = 21; seq[0] = s0;
        tok[1] = 8; pos[1] = 10; seq[1] = s1;
        b = (es_batch){.n_tokens = 2, .token = tok, .pos = pos, .seq = seq, .logits = (const int8_t[]){1, 1}};
        decode_both(dev, cpu, &b, nv, LOGIT_TOL, "after keep", &worst);
        /* a rolled-back sequence gets the same result as before */
        CHECK_OK(es_seq_truncate(dev, s0, 17, &err), &err);
        CHECK_OK(es_seq_truncate(cpu, c0, 17, &err), &err);
        tok[0] = 10; pos[0] = 17; seq[0] = s0;
        b = (es_batch){.n_tokens = 1, .token = tok, .pos = pos, .seq = seq};
        decode_both(dev, cpu, &b, nv, LOGIT_TOL, "after truncate", &worst);
        printf("tree, keep, truncate on the device%s: logits within %.2g of the CPU's\n",
               buffer_max ? " (weights split into buffers of 4 KiB)" : "", worst);
    }
    es_ctx_free(dev);
    es_ctx_free(cpu);
    es_model_free(m);
}

/* ---- the prefix cache on the device: adoption and copy on write ---------------------------------
 * Sequence A computes 40 tokens and offers its pages to the cache; B adopts the first 32 (two pages),
 * rolls back into the second and writes there, which copies the page (the pool's copy hook copies the
 * device's rows too); C adopts the same 32 afterwards and must see A's rows, not B's: every step's
 * logits equal the CPU's doing the same. */
static void test_prefix_cow(int device) {
    es_model *m = load("stories260K.gguf", true);
    if (!m) return;
    es_ctx *dev = make_ctx(m, ES_BACKEND_VULKAN, device, 0, 3), *cpu = make_ctx(m, ES_BACKEND_CPU, 0, 0, 3);
    es_err err = {{0}};
    if (dev && cpu) {
        CHECK_OK(es_ctx_prefix_cache_enable(dev, &err), &err);
        CHECK_OK(es_ctx_prefix_cache_enable(cpu, &err), &err);
        const int nv = es_model_n_vocab(m);
        double worst = 0;
        int32_t tok[40], pos[40], seq[40];
        for (int i = 0; i < 40; i++) { tok[i] = 1 + (i * 41) % 500; pos[i] = i; }
        es_ctx *ctx[2] = {dev, cpu};
        int a[2], bq[2], c[2];
        for (int k = 0; k < 2; k++) {
            CHECK_OK(es_seq_open(ctx[k], &a[k], &err), &err);
        }
        for (int i = 0; i < 40; i++) seq[i] = a[0];
        es_batch b = {.n_tokens = 40, .token = tok, .pos = pos, .seq = seq};
        /* the same sequence number on both (both pools hand out 0 first) */
        CHECK(a[0] == a[1]);
        decode_both(dev, cpu, &b, nv, LOGIT_TOL, "prefix: A", &worst);
        for (int k = 0; k < 2; k++) {
            CHECK(es_seq_prefix_keep(ctx[k], a[k], tok, 40) == 2);
            es_seq_close(ctx[k], a[k]);
            CHECK_OK(es_seq_open(ctx[k], &bq[k], &err), &err);
            CHECK(es_seq_prefix_adopt(ctx[k], bq[k], tok, 39) == 32);
            CHECK_OK(es_seq_truncate(ctx[k], bq[k], 20, &err), &err); /* into the shared second page */
        }
        int32_t t2[4] = {7, 8, 9, 10}, p2[4] = {20, 21, 22, 23}, s2[4];
        for (int i = 0; i < 4; i++) s2[i] = bq[0];
        b = (es_batch){.n_tokens = 4, .token = t2, .pos = p2, .seq = s2};
        decode_both(dev, cpu, &b, nv, LOGIT_TOL, "prefix: B writes into a shared page", &worst);
        for (int k = 0; k < 2; k++) {
            CHECK_OK(es_seq_open(ctx[k], &c[k], &err), &err);
            CHECK(es_seq_prefix_adopt(ctx[k], c[k], tok, 39) == 32);
        }
        CHECK(c[0] == c[1]);
        int32_t t3[1] = {tok[32]}, p3[1] = {32}, s3[1] = {c[0]};
        b = (es_batch){.n_tokens = 1, .token = t3, .pos = p3, .seq = s3};
        decode_both(dev, cpu, &b, nv, LOGIT_TOL, "prefix: C after B's write", &worst);
        /* and C's step is A's own step from the same 32 tokens, computed afresh */
        float *lc = malloc((size_t)nv * sizeof *lc);
        const float *l = es_ctx_logits(dev, 0);
        if (lc && l) memcpy(lc, l, (size_t)nv * sizeof *lc);
        int fresh;
        CHECK_OK(es_seq_open(cpu, &fresh, &err), &err);
        int32_t sf[33];
        for (int i = 0; i < 33; i++) sf[i] = fresh;
        es_batch bf = {.n_tokens = 33, .token = tok, .pos = pos, .seq = sf};
        CHECK_OK(es_decode(cpu, &bf, &err), &err);
        const float *lf = es_ctx_logits(cpu, 32);
        CHECK_MSG(lc && l && lf && es_test_rel_diff(lc, lf, nv) <= LOGIT_TOL, "prefix: C's logits are not A's prefix's");
        free(lc);
        printf("prefix cache on the device: adoption and copy on write, logits within %.2g of the CPU's\n", worst);
    }
    es_ctx_free(dev);
    es_ctx_free(cpu);
    es_model_free(m);
}

/* ---- random synthetic models of the other architectures ---------------------------------------
 * qwen2: q/k/v biases, NEOX RoPE, grouped-query heads; qwen3: per-head q/k norms and a head size that
 * is not dim / heads; llama3: the rope_freqs factors (larger weights, so the angles show). */

static const char *const k_shapes[] = {
    /* every matrix's columns a multiple of 256, so the K-quants hold them all */
    "custom:dim=256,ff=512,layers=2,heads=4,kv=2,ctx=128,vocab=300,arch=qwen2,tied=0",
    "custom:dim=256,ff=512,layers=2,heads=4,kv=2,headdim=64,ctx=128,vocab=300,arch=qwen3,tied=0",
    "custom:dim=256,ff=512,layers=2,heads=4,kv=2,ctx=128,vocab=300,arch=llama,tied=0,ropefreqs=1,wscale=5",
};
static const char *const k_shape_names[] = {"qwen2", "qwen3", "llama3"};

static void test_synth(int device, int shape, uint32_t type, double tol) {
    char path[512], name[64];
    snprintf(name, sizeof name, "device-%s-%s.gguf", k_shape_names[shape], es_type_name(type));
    snprintf(path, sizeof path, "%s", es_test_tmp(name));
    es_synth_opts o = {.shape = k_shapes[shape], .type = type, .seed = 11, .out_path = path, .n_threads = 1};
    es_err err = {{0}};
    CHECK_OK(es_synth(&o, &err), &err);
    es_model_params mp = es_model_default_params();
    mp.no_repack = true;
    es_model *m = NULL;
    CHECK_OK(es_model_load(path, &mp, &m, &err), &err);
    if (!m) return;
    es_ctx *dev = make_ctx(m, ES_BACKEND_VULKAN, device, 0, 1), *cpu = make_ctx(m, ES_BACKEND_CPU, 0, 0, 1);
    if (dev && cpu) {
        const int nv = es_model_n_vocab(m);
        int sd, sc;
        CHECK_OK(es_seq_open(dev, &sd, &err), &err);
        CHECK_OK(es_seq_open(cpu, &sc, &err), &err);
        int32_t tok[12], pos[12], seq[12] = {0};
        int8_t want[12];
        for (int i = 0; i < 12; i++) { tok[i] = 3 + 23 * i; pos[i] = i; want[i] = 1; }
        double worst = 0;
        es_batch b = {.n_tokens = 12, .token = tok, .pos = pos, .seq = seq, .logits = want};
        decode_both_(dev, cpu, &b, nv, tol, k_shape_names[shape], &worst, false);
        for (int step = 0; step < 4; step++) {
            tok[0] = 7 + step;
            pos[0] = 12 + step;
            b = (es_batch){.n_tokens = 1, .token = tok, .pos = pos, .seq = seq};
            decode_both_(dev, cpu, &b, nv, tol, k_shape_names[shape], &worst, false);
        }
        printf("%s (%s) on the device: logits within %.2g of the CPU's\n", k_shape_names[shape], es_type_name(type), worst);
    }
    es_ctx_free(dev);
    es_ctx_free(cpu);
    es_model_free(m);
}

/* A q8_0 KV cache on both sides (kv_dim 128: the device keeps GGUF Q8_0 rows, quantised in the
 * shader as the CPU quantises them): a prompt and 48 steps, each side fed the CPU's token, agree with
 * the CPU's q8_0 cache far closer than with its f16 one — the device's rows are q8_0, not f16. */
static void test_kv_q8(int device) {
    char path[512];
    snprintf(path, sizeof path, "%s", es_test_tmp("device-kvq8.gguf"));
    es_synth_opts o = {.shape = k_shapes[0], .type = ES_TYPE_F32, .seed = 5, .out_path = path, .n_threads = 1};
    es_err err = {{0}};
    CHECK_OK(es_synth(&o, &err), &err);
    es_model_params mp = es_model_default_params();
    mp.no_repack = true;
    es_model *m = NULL;
    CHECK_OK(es_model_load(path, &mp, &m, &err), &err);
    if (!m) return;
    g_kv_type = ES_KV_Q8_0;
    es_ctx *dev = make_ctx(m, ES_BACKEND_VULKAN, device, 0, 1), *cpu = make_ctx(m, ES_BACKEND_CPU, 0, 0, 1);
    g_kv_type = ES_KV_F16;
    es_ctx *cpu16 = make_ctx(m, ES_BACKEND_CPU, 0, 0, 1);
    g_kv_type = ES_KV_F32;
    if (dev && cpu && cpu16) {
        const int nv = es_model_n_vocab(m);
        int s0, s1, s2;
        CHECK_OK(es_seq_open(dev, &s0, &err), &err);
        CHECK_OK(es_seq_open(cpu, &s1, &err), &err);
        CHECK_OK(es_seq_open(cpu16, &s2, &err), &err);
        int32_t tok[12], pos[12], seq[12] = {0};
        for (int i = 0; i < 12; i++) { tok[i] = 1 + 17 * i; pos[i] = i; }
        double worst = 0, cross = 0;
        es_batch b = {.n_tokens = 12, .token = tok, .pos = pos, .seq = seq};
        for (int step = 0; step <= 48; step++) {
            decode_both_(dev, cpu, &b, nv, 2e-2, "q8_0 cache", &worst, false);
            CHECK_OK(es_decode(cpu16, &b, &err), &err);
            const double c = es_test_rel_diff(es_ctx_logits(dev, b.n_tokens - 1), es_ctx_logits(cpu16, b.n_tokens - 1), nv);
            if (c > cross) cross = c;
            const float *lc = es_ctx_logits(cpu, b.n_tokens - 1);
            tok[0] = lc ? argmax(lc, nv) : 1;
            pos[0] = 12 + step;
            b = (es_batch){.n_tokens = 1, .token = tok, .pos = pos, .seq = seq};
        }
        printf("q8_0 KV cache on the device: logits within %.2g of the CPU's q8_0 cache (%.2g of its f16 cache)\n", worst, cross);
        CHECK_MSG(worst * 4 < cross, "q8_0 cache: the device is %.3g from the CPU's q8_0 cache and %.3g from its f16 one", worst, cross);
    }
    es_ctx_free(dev);
    es_ctx_free(cpu);
    es_ctx_free(cpu16);
    es_model_free(m);
}

/* An f16 KV cache on both sides (the device packs two halves per word, the CPU pool stores fp16): a
 * prompt and 48 greedy steps, each side fed the CPU's token, agree within the rounding of the cache
 * (kv_type q8_0 keeps f16 rows on the device when kv_dim is not a multiple of 64, as here: the same
 * path). 5e-4 tells it from an f32 device cache,
 * which is 1.6e-3 from the CPU's f16 one here (f16 on both: 5e-5). */
static void test_kv_f16(int device) {
    es_model *m = load("stories260K.gguf", true);
    if (!m) return;
    g_kv_type = ES_KV_F16;
    es_ctx *dev = make_ctx(m, ES_BACKEND_VULKAN, device, 0, 1), *cpu = make_ctx(m, ES_BACKEND_CPU, 0, 0, 1);
    g_kv_type = ES_KV_F32;
    if (dev && cpu) {
        const int nv = es_model_n_vocab(m);
        es_err err = {{0}};
        int sd, sc;
        CHECK_OK(es_seq_open(dev, &sd, &err), &err);
        CHECK_OK(es_seq_open(cpu, &sc, &err), &err);
        int32_t tok[12], pos[12], seq[12] = {0};
        for (int i = 0; i < 12; i++) { tok[i] = 1 + 17 * i; pos[i] = i; }
        double worst = 0;
        es_batch b = {.n_tokens = 12, .token = tok, .pos = pos, .seq = seq};
        decode_both_(dev, cpu, &b, nv, 5e-4, "f16 cache prefill", &worst, false);
        for (int step = 0; step < 48; step++) {
            const float *lc = es_ctx_logits(cpu, 0);
            tok[0] = lc ? argmax(lc, nv) : 1;
            pos[0] = 12 + step;
            b = (es_batch){.n_tokens = 1, .token = tok, .pos = pos, .seq = seq};
            decode_both_(dev, cpu, &b, nv, 5e-4, "f16 cache decode", &worst, false);
        }
        printf("f16 KV cache on the device: logits within %.2g of the CPU's f16 cache\n", worst);
    }
    es_ctx_free(dev);
    es_ctx_free(cpu);
    es_model_free(m);
}

static void test_errors(int n_devices) {
    es_model *m = load("stories260K-q8_0.gguf", false);
    if (!m) return;
    es_ctx_params p = es_ctx_default_params();
    p.n_ctx = 64;
    p.backend = ES_BACKEND_VULKAN;
    p.device = n_devices;
    p.device_validation = true;
    p.device_message = on_message;
    es_ctx *c = NULL;
    es_err err = {{0}};
    CHECK(es_ctx_init(m, &p, &c, &err) == ES_ERR_RANGE && c == NULL);
    CHECK(strstr(err.msg, "no device") != NULL);
    if (es_matmul_prefers_x16(ES_TYPE_Q8_0)) { /* this CPU repacks Q8_0 at load: not for a device */
        p.device = 0;
        CHECK(es_ctx_init(m, &p, &c, &err) == ES_ERR_UNSUPPORTED && c == NULL);
        CHECK(strstr(err.msg, "no_repack") != NULL);
    }
    es_model_free(m);
}

/* ---- early exits: the pass split at an exit layer ---------------------------------------------- */

typedef struct {
    int n, layer[4], n_rows[4];
    float h[4][3 * 64];
} exit_cap;

static void on_exit_rows(void *ud, int layer, const float *hidden, int n_rows, const int32_t *rows) {
    (void)rows;
    exit_cap *c = ud;
    if (c->n >= 4 || n_rows > 3) return;
    c->layer[c->n] = layer;
    c->n_rows[c->n] = n_rows;
    memcpy(c->h[c->n++], hidden, (size_t)n_rows * 64 * sizeof(float));
}

/* Exit hooks at layer 2 and at the end on the device and the CPU: the same hidden rows, and the
 * logits of the split pass and of the next step (the KV rows written across the split) agree. */
static void test_exit_split(int device) {
    es_model *m = load("stories260K.gguf", true);
    if (!m) return;
    es_ctx *dev = make_ctx(m, ES_BACKEND_VULKAN, device, 0, 1), *cpu = make_ctx(m, ES_BACKEND_CPU, 0, 0, 1);
    static exit_cap cd, cc;
    memset(&cd, 0, sizeof cd);
    memset(&cc, 0, sizeof cc);
    const int layers[2] = {2, es_model_n_layer(m)};
    es_err err = {{0}};
    if (dev && cpu) {
        CHECK_OK(es_ctx_set_exit_hook(dev, layers, 2, on_exit_rows, &cd, &err), &err);
        CHECK_OK(es_ctx_set_exit_hook(cpu, layers, 2, on_exit_rows, &cc, &err), &err);
        const int nv = es_model_n_vocab(m);
        int sd, sc;
        CHECK_OK(es_seq_open(dev, &sd, &err), &err);
        CHECK_OK(es_seq_open(cpu, &sc, &err), &err);
        int32_t tok[8] = {1, 403, 407, 261, 378, 300, 290, 410}, pos[8], seq[8] = {0};
        int8_t want[8] = {0, 0, 1, 0, 0, 1, 0, 1};
        for (int i = 0; i < 8; i++) pos[i] = i;
        double worst = 0;
        es_batch b = {.n_tokens = 8, .token = tok, .pos = pos, .seq = seq, .logits = want};
        decode_both(dev, cpu, &b, nv, LOGIT_TOL, "exit split", &worst);
        CHECK(cd.n == 2 && cc.n == 2);
        for (int k = 0; k < 2 && k < cd.n && k < cc.n; k++) {
            CHECK(cd.layer[k] == layers[k] && cd.n_rows[k] == 3 && cc.n_rows[k] == 3);
            CHECK_MSG(es_test_rel_diff(cd.h[k], cc.h[k], 3 * 64) <= LOGIT_TOL, "exit rows after layer %d: device and CPU differ",
                      layers[k]);
        }
        tok[0] = 266;
        pos[0] = 8;
        es_batch b1 = {.n_tokens = 1, .token = tok, .pos = pos, .seq = seq};
        decode_both(dev, cpu, &b1, nv, LOGIT_TOL, "after an exit split", &worst);
    }
    es_ctx_free(dev);
    es_ctx_free(cpu);
    es_model_free(m);
}

int main(void) {
    /* keep lavapipe loaded past vkDestroyInstance (see test_vulkan.c) */
    dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_NODELETE);
    if (!es_vk_available()) {
        fprintf(stderr, "test_device_forward: this build has no Vulkan backend: nothing to run\n");
        return 77;
    }
    es_device_info devs[8];
    int n = 0;
    es_err err = {{0}};
    CHECK_OK(es_devices(devs, 8, &n, &err), &err);
    CHECK_MSG(n >= 1, "the build has Vulkan but the loader reports no device; CI runs on lavapipe (mesa-vulkan-drivers)");
    test_errors(n);
    for (int d = 0; d < n && d < 8; d++) {
        printf("device %d: %s\n", d, devs[d].name);
        test_golden(d);
        test_quantised(d, "stories260K-q8_0.gguf");
        test_quantised(d, "stories260K-q4_0.gguf");
        test_tree(d, 0);
        test_tree(d, 4096); /* every matrix in several buffers, as past a small maxStorageBufferRange */
        test_prefix_cow(d);
        test_kv_f16(d);
        test_kv_q8(d);
        test_exit_split(d);
        for (int s = 0; s < 3; s++) {
            test_synth(d, s, ES_TYPE_F32, LOGIT_TOL);
            if (s != 2) test_synth(d, s, ES_TYPE_Q4_K, QUANT_TOL); /* (llama3's 5x weights: f32 only, its point is RoPE) */
        }
        /* each further weight type the device reads (the CPU dequantises the same blocks) */
        test_synth(d, 0, ES_TYPE_Q5_K, QUANT_TOL);
        test_synth(d, 0, ES_TYPE_Q6_K, QUANT_TOL);
        test_synth(d, 0, ES_TYPE_BF16, QUANT_TOL);
    }
    CHECK_MSG(n_validation_errors == 0, "%d validation errors", n_validation_errors);
    return es_test_finish("test_device_forward");
}
