/* test_apex.c — two KV tiers on a Vulkan device (lavapipe in CI), APEX's hybrid pass: sessions whose
 * KV rows live in host memory get their attention from the CPU while the device runs the rest.
 *
 *  - golden prompts of stories260K as 20 sequences, prefilled together and decoded greedily, on a
 *    device context whose device tier holds a few sequences (the rest move to the host tier by
 *    themselves) against the same device without tiers: every token is the same and the logits agree
 *    within TIER_TOL · (1 + max |logit|); in both hybrid modes (asynchronous overlap, asymmetric
 *    sub-batches), and once more with sequences moved between the tiers every few steps;
 *  - seeded sampling (inverse CDF of the softmax with a fixed stream of uniforms): the same tokens,
 *    except where u falls within the two distributions' rounding difference of a CDF boundary (at
 *    most 1 % of the picks; any other difference fails);
 *  - a token tree of a host-tier sequence verified in one pass, es_seq_keep of one path, one more
 *    step: the same logits as the untiered device;
 *  - moves up are asynchronous: sequences moved back to back, past what the staging holds, are read
 *    by the very next pass as the untiered device reads them;
 *  - the pools return to empty: every device page free and no host page used once all are closed;
 *  - q8_0 rows in both tiers (a synthetic model with kv_dim 128): moves copy the GGUF blocks;
 *  - the prefix cache across the tiers (test_prefix): pages cached by sequences of either tier and
 *    adopted by sequences of either tier, copied on write, moved: logits of a context without tiers
 *    or cache, golden tokens; cached device copies given back when the device needs room;
 *  - errors: moving to a full device tier (ES_ERR_FULL, nothing moved), one tier (UNSUPPORTED), bad
 *    sequence or tier.
 * A build without Vulkan has nothing to run (exit 77); a build with it but no device fails. */
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/vulkan/vk.h"
#include "convert/convert.h"
#include "kernels/matmul.h"
#include "testutil.h"

/* the host tier converts K / V to f16 and sums as the CPU does (test_device_forward allows 5e-4 for
 * an f16 cache against the CPU over 48 steps): the sampled paths here go through less likely tokens */
#define TIER_TOL 1e-3
#define N_SEQ 20
#define N_STEPS 40
#define DEV_PAGES 12 /* of 16-slot pages: about four sequences of the golden prompts */

static int n_validation_errors;

static void on_message(void *ud, bool is_error, const char *msg) {
    (void)ud;
    fprintf(stderr, "vulkan validation %s: %s\n", is_error ? "ERROR" : "warning", msg);
    if (is_error) n_validation_errors++;
}

/* A model as the device backends load it (file layout: no CPU repacking); NULL after a failed check. */
static es_model *load_model(const char *path) {
    es_model_params mp = es_model_default_params();
    mp.no_repack = true;
    es_model *m = NULL;
    es_err err = {{0}};
    CHECK_OK(es_model_load(path, &mp, &m, &err), &err);
    return m;
}

static es_model *load_stories(void) { return load_model(es_test_model("stories260K.gguf")); }

static es_ctx *make_ctx_(es_model *m, int device, int64_t dev_pages, es_kv_type kv_type, es_err *err) {
    es_ctx_params p = es_ctx_default_params();
    p.n_ctx = 256;
    p.n_seq_max = N_SEQ;
    p.n_batch_max = 512;
    p.n_logits_max = 64;
    p.kv_type = kv_type;
    p.n_threads = 2;
    p.backend = ES_BACKEND_VULKAN;
    p.device = device;
    p.device_validation = true;
    p.device_message = on_message;
    p.device_kv_blocks = dev_pages;
    es_ctx *c = NULL;
    es_ctx_init(m, &p, &c, err);
    return c;
}

static es_ctx *make_ctx(es_model *m, int device, int64_t dev_pages) {
    es_err err = {{0}};
    es_ctx *c = make_ctx_(m, device, dev_pages, ES_KV_F16, &err);
    CHECK_MSG(c != NULL, "context with %lld device pages: %s", (long long)dev_pages, err.msg);
    return c;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void softmax(const float *x, int n, double *p) {
    const float mx = x[argmax(x, n)];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += p[i] = exp((double)x[i] - mx);
    for (int i = 0; i < n; i++) p[i] /= sum;
}

/* Inverse CDF of softmax(x) at u; *margin gets u's distance to the nearest CDF boundary. */
static int sample(const float *x, int n, double u, double *margin) {
    static double p[4096];
    softmax(x, n < 4096 ? n : 4096, p);
    double acc = 0, lo = 0;
    int pick = n - 1;
    for (int i = 0; i < n; i++) {
        lo = acc;
        acc += p[i];
        if (u < acc) { pick = i; break; }
    }
    *margin = fmin(u - lo, acc - u);
    return pick;
}

/* Total variation distance of softmax(a) and softmax(b). */
static double tv(const float *a, const float *b, int n) {
    static double pa[4096], pb[4096];
    softmax(a, n, pa);
    softmax(b, n, pb);
    double d = 0;
    for (int i = 0; i < n; i++) d += fabs(pa[i] - pb[i]);
    return d / 2;
}

static uint64_t rng = 88172645463325252ull;
static double uniform(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

typedef enum { PICK_GREEDY, PICK_SAMPLED } pick_kind;

/* Prefills the golden prompts in one pass and decodes them together on `ref` (no tiers) and `t`
 * (two tiers) side by side; each row's token is picked from ref's logits and must be t's pick too.
 * move_every > 0: every move_every steps one sequence changes tier (es_seq_set_tier). */
static void golden_run(es_model *m, es_ctx *ref, es_ctx *t, es_hybrid_mode mode, pick_kind pick, int move_every, const char *what) {
    size_t len;
    char *text = es_test_read_file(es_test_shared("golden/stories260K-greedy.jsonl"), &len);
    CHECK(text != NULL);
    if (!text) return;
    static es_test_golden g[N_SEQ];
    int n = 0;
    for (char *line = strtok(text, "\n"); line && n < N_SEQ; line = strtok(NULL, "\n"))
        if (es_test_golden_parse(line, &g[n])) n++;
    CHECK(n == N_SEQ);
    es_ctx_set_hybrid_mode(t, mode);
    const int nv = es_model_n_vocab(m);
    int32_t tok[512], pos[512], seq[512], sid[N_SEQ], npos[N_SEQ], last[N_SEQ];
    int8_t want[512];
    es_err err = {{0}};
    int nt = 0;
    for (int s = 0; s < n; s++) {
        int s2;
        CHECK_OK(es_seq_open(ref, &sid[s], &err), &err);
        CHECK_OK(es_seq_open(t, &s2, &err), &err);
        CHECK(s2 == sid[s]);
        for (int i = 0; i < g[s].n_prompt && nt < 512; i++, nt++) {
            tok[nt] = g[s].prompt_ids[i];
            pos[nt] = i;
            seq[nt] = sid[s];
            want[nt] = i == g[s].n_prompt - 1;
        }
        npos[s] = g[s].n_prompt;
    }
    es_batch b = {.n_tokens = nt, .token = tok, .pos = pos, .seq = seq, .logits = want};
    double worst = 0;
    int picks = 0, same = 0, moved = 0, ties = 0;
    for (int step = 0; step <= N_STEPS; step++) {
        CHECK_OK(es_decode(ref, &b, &err), &err);
        CHECK_OK(es_decode(t, &b, &err), &err);
        for (int i = 0, s = 0; i < b.n_tokens; i++) {
            if (!want[i]) continue;
            const float *lr = es_ctx_logits(ref, i), *lt = es_ctx_logits(t, i);
            CHECK(lr && lt);
            if (!lr || !lt) return;
            const double e = es_test_rel_diff(lr, lt, nv);
            if (!(e <= worst)) worst = e; /* (a NaN counts) */
            const double u = uniform();
            double margin = 1, m2;
            const int a = pick == PICK_GREEDY ? argmax(lr, nv) : sample(lr, nv, u, &margin);
            const int c = pick == PICK_GREEDY ? argmax(lt, nv) : sample(lt, nv, u, &m2);
            picks++;
            same += a == c;
            /* Sampling: u may land between the two sides' CDFs where the distributions differ by
             * rounding — a pick may then differ, but only with u within their total variation of a
             * boundary of the reference's CDF (any other difference would be a wrong row). */
            if (pick == PICK_SAMPLED && a != c) {
                const double d = tv(lr, lt, nv);
                CHECK_MSG(margin <= 2 * d, "%s, step %d row %d: token %d with two tiers, %d without, u %.3g from a boundary (TV %.3g)",
                          what, step, i, c, a, margin, d);
                ties++;
            } else
                CHECK_MSG(a == c, "%s, step %d row %d: token %d with two tiers, %d without", what, step, i, c, a);
            while (s < n && seq[i] != sid[s]) s++;
            last[s] = a;
        }
        if (step == N_STEPS) break;
        if (move_every > 0 && step % move_every == move_every - 1) { /* one sequence changes tier */
            const int s = (step / move_every * 7) % n;
            const es_kv_tier to = es_seq_tier(t, sid[s]) == ES_KV_TIER_HOST ? ES_KV_TIER_DEVICE : ES_KV_TIER_HOST;
            es_err e2 = {{0}};
            const es_status st = es_seq_set_tier(t, sid[s], to, &e2);
            CHECK_MSG(st == ES_OK || (st == ES_ERR_FULL && to == ES_KV_TIER_DEVICE), "%s: moving sequence %d: %s", what, s, e2.msg);
            if (st == ES_OK) {
                moved++;
                CHECK(es_seq_tier(t, sid[s]) == to);
            }
        }
        int k = 0;
        for (int s = 0; s < n; s++) {
            tok[k] = last[s];
            pos[k] = npos[s]++;
            seq[k] = sid[s];
            want[k] = 1;
            k++;
        }
        b = (es_batch){.n_tokens = k, .token = tok, .pos = pos, .seq = seq, .logits = want};
    }
    es_tier_info ti;
    es_ctx_tier_info(t, &ti);
    CHECK(ti.tiered);
    CHECK_MSG(ti.auto_to_host > 0, "%s: no sequence went to the host tier by itself (device pages %lld)", what, (long long)ti.device_blocks_total);
    CHECK_MSG(ti.hybrid_passes[mode] > 0, "%s: no pass in the %s mode", what, mode == ES_HYBRID_ASYMMETRIC ? "asymmetric" : "overlap");
    CHECK(ti.host_seqs > 0 && ti.host_seqs <= n);
    if (move_every > 0) CHECK_MSG(moved > 0 && ti.moves_to_device > 0, "%s: nothing moved to the device tier (%d moves)", what, moved);
    CHECK(ties <= picks / 100); /* rounding-level ties are rare: more is a different distribution */
    printf("%s: %d/%d picks the same (%d at a rounding tie), logits within %.2g; host-tier sequences %d, auto moves %lld, moves %lld/%lld, pages moved %lld, "
           "hybrid passes %lld overlap / %lld asymmetric\n",
           what, same, picks, ties, worst, ti.host_seqs, (long long)ti.auto_to_host, (long long)ti.moves_to_host, (long long)ti.moves_to_device,
           (long long)ti.pages_moved, (long long)ti.hybrid_passes[0], (long long)ti.hybrid_passes[1]);
    CHECK_MSG(worst <= TIER_TOL, "%s: logits differ by %.3g", what, worst);
    /* every sequence closed: both pools are empty again */
    for (int s = 0; s < n; s++) {
        es_seq_close(ref, sid[s]);
        es_seq_close(t, sid[s]);
    }
    es_ctx_tier_info(t, &ti);
    CHECK_MSG(ti.device_blocks_used == 0, "%s: %lld device pages still used", what, (long long)ti.device_blocks_used);
    CHECK_MSG(es_ctx_kv_blocks_used(t) == 0, "%s: %lld host pages still used", what, (long long)es_ctx_kv_blocks_used(t));
    CHECK(ti.host_seqs == 0);
    free(text);
}

static void test_golden(int device) {
    es_model *m = load_stories();
    if (!m) return;
    struct { es_hybrid_mode mode; pick_kind pick; int move_every; const char *what; } runs[] = {
        {ES_HYBRID_ASYNC_OVERLAP, PICK_GREEDY, 0, "greedy, overlap"},
        {ES_HYBRID_ASYMMETRIC, PICK_GREEDY, 0, "greedy, asymmetric"},
        {ES_HYBRID_ASYNC_OVERLAP, PICK_SAMPLED, 0, "sampled, overlap"},
        {ES_HYBRID_ASYMMETRIC, PICK_GREEDY, 3, "greedy, asymmetric, moved between tiers"},
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        es_ctx *ref = make_ctx(m, device, 0), *t = make_ctx(m, device, DEV_PAGES);
        if (ref && t) golden_run(m, ref, t, runs[r].mode, runs[r].pick, runs[r].move_every, runs[r].what);
        es_ctx_free(ref);
        es_ctx_free(t);
    }
    es_model_free(m);
}

/* A token tree of a host-tier sequence beside a device-tier one, then keep one path. */
static void test_tree(int device) {
    es_model *m = load_stories();
    if (!m) return;
    es_err err = {{0}};
    es_ctx *ref = make_ctx(m, device, 0), *t = make_ctx(m, device, DEV_PAGES);
    if (!ref || !t) goto done;
    const int nv = es_model_n_vocab(m);
    int a, b2, a2, b3;
    CHECK_OK(es_seq_open(ref, &a, &err), &err);
    CHECK_OK(es_seq_open(ref, &b2, &err), &err);
    CHECK_OK(es_seq_open(t, &a2, &err), &err);
    CHECK_OK(es_seq_open(t, &b3, &err), &err);
    CHECK(a == a2 && b2 == b3);
    CHECK_OK(es_seq_set_tier(t, b2, ES_KV_TIER_HOST, &err), &err); /* empty: a move of nothing */
    CHECK(es_seq_tier(t, b2) == ES_KV_TIER_HOST && es_seq_tier(t, a) == ES_KV_TIER_DEVICE);
    /* prompts of 20 tokens each */
    int32_t tok[64], pos[64], seq[64], par[64];
    int8_t want[64];
    int n = 0;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < 20; i++, n++) {
            tok[n] = 1 + (i * 37 + s * 11) % 500;
            pos[n] = i;
            seq[n] = s == 0 ? a : b2;
            par[n] = i == 0 ? -1 : n - 1;
            want[n] = 0;
        }
    es_batch bt = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq, .parent = par, .logits = want};
    CHECK_OK(es_decode(ref, &bt, &err), &err);
    CHECK_OK(es_decode(t, &bt, &err), &err);
    /* a tree of 7 under each: root, two children, two grandchildren each */
    static const int tp[7] = {-1, 0, 0, 1, 1, 2, 2}, depth[7] = {0, 1, 1, 2, 2, 2, 2};
    n = 0;
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 7; k++, n++) {
            tok[n] = 5 + 13 * k + s;
            pos[n] = 20 + depth[k];
            seq[n] = s == 0 ? a : b2;
            par[n] = tp[k] < 0 ? -1 : s * 7 + tp[k];
            want[n] = 1;
        }
    bt = (es_batch){.n_tokens = n, .token = tok, .pos = pos, .seq = seq, .parent = par, .logits = want};
    CHECK_OK(es_decode(ref, &bt, &err), &err);
    CHECK_OK(es_decode(t, &bt, &err), &err);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        const double e = es_test_rel_diff(es_ctx_logits(ref, i), es_ctx_logits(t, i), nv);
        if (!(e <= worst)) worst = e; /* (a NaN counts) */
    }
    /* keep the path root → child 2 → its second child (slots 20, 22, 26) in both sequences */
    const int32_t path[3] = {20, 22, 26};
    for (int s = 0; s < 2; s++) {
        CHECK_OK(es_seq_keep(ref, s == 0 ? a : b2, 20, path, 3, &err), &err);
        CHECK_OK(es_seq_keep(t, s == 0 ? a : b2, 20, path, 3, &err), &err);
    }
    n = 0;
    for (int s = 0; s < 2; s++, n++) {
        tok[n] = 99 + s;
        pos[n] = 23;
        seq[n] = s == 0 ? a : b2;
        want[n] = 1;
    }
    bt = (es_batch){.n_tokens = n, .token = tok, .pos = pos, .seq = seq, .logits = want};
    CHECK_OK(es_decode(ref, &bt, &err), &err);
    CHECK_OK(es_decode(t, &bt, &err), &err);
    for (int i = 0; i < n; i++) {
        const double e = es_test_rel_diff(es_ctx_logits(ref, i), es_ctx_logits(t, i), nv);
        if (!(e <= worst)) worst = e; /* (a NaN counts) */
    }
    printf("tree of a host-tier sequence and keep: logits within %.2g of the untiered device\n", worst);
    CHECK_MSG(worst <= TIER_TOL, "tree / keep: logits differ by %.3g", worst);
    CHECK(es_seq_tier(t, b2) == ES_KV_TIER_HOST);
done:
    es_ctx_free(ref);
    es_ctx_free(t);
    es_model_free(m);
}

/* Moves up are asynchronous (the host stages the rows and records the next pass while the device
 * copies): three host-tier sequences of 15 pages each go up back to back, more pages than the two
 * staging slots hold, so the third reuses the first's slot; the very next pass reads all three from
 * the device and gives the untiered device's logits. Without the copies (or their order before the
 * pass) the device pages hold nothing of these rows. */
static void test_async_moves(int device) {
    es_model *m = load_stories();
    if (!m) return;
    es_err err = {{0}};
    enum { NS = 3, LEN = 240 };
    es_ctx *ref = make_ctx(m, device, 0), *t = make_ctx(m, device, NS * 16);
    int32_t *tok = malloc(NS * LEN * sizeof *tok), *pos = malloc(NS * LEN * sizeof *pos), *seq = malloc(NS * LEN * sizeof *seq);
    if (!ref || !t || !tok || !pos || !seq) goto done;
    const int nv = es_model_n_vocab(m);
    int sq[NS];
    for (int s = 0; s < NS; s++) {
        int r;
        CHECK_OK(es_seq_open(ref, &r, &err), &err);
        CHECK_OK(es_seq_open(t, &sq[s], &err), &err);
        CHECK(r == sq[s]);
        CHECK_OK(es_seq_set_tier(t, sq[s], ES_KV_TIER_HOST, &err), &err);
    }
    for (int s = 0, n = 0; s < NS; s++)
        for (int i = 0; i < LEN; i++, n++) {
            tok[n] = 1 + (i * 29 + s * 7) % 500;
            pos[n] = i;
            seq[n] = sq[s];
        }
    es_batch bt;
    for (int s = 0; s < NS; s++) { /* every row written in the host tier */
        bt = (es_batch){.n_tokens = LEN, .token = tok + s * LEN, .pos = pos + s * LEN, .seq = seq + s * LEN};
        CHECK_OK(es_decode(ref, &bt, &err), &err);
        CHECK_OK(es_decode(t, &bt, &err), &err);
    }
    es_tier_info t0, t1;
    es_ctx_tier_info(t, &t0);
    CHECK(t0.host_seqs == NS && t0.device_blocks_used == 0);
    for (int s = 0; s < NS; s++) CHECK_OK(es_seq_set_tier(t, sq[s], ES_KV_TIER_DEVICE, &err), &err);
    es_ctx_tier_info(t, &t1);
    CHECK(t1.host_seqs == 0 && t1.device_blocks_used == NS * LEN / 16);
    CHECK_MSG(t1.xfer_async - t0.xfer_async >= NS, "%lld copies up submitted without waiting for %d moves",
              (long long)(t1.xfer_async - t0.xfer_async), NS);
    CHECK(t1.pages_moved - t0.pages_moved == NS * LEN / 16);
    int8_t want[NS] = {1, 1, 1};
    for (int s = 0; s < NS; s++) {
        tok[s] = 42 + s;
        pos[s] = LEN;
        seq[s] = sq[s];
    }
    bt = (es_batch){.n_tokens = NS, .token = tok, .pos = pos, .seq = seq, .logits = want};
    CHECK_OK(es_decode(ref, &bt, &err), &err);
    CHECK_OK(es_decode(t, &bt, &err), &err);
    double worst = 0;
    for (int i = 0; i < NS; i++) {
        const double e = es_test_rel_diff(es_ctx_logits(ref, i), es_ctx_logits(t, i), nv);
        if (!(e <= worst)) worst = e; /* (a NaN counts) */
    }
    printf("async moves: %d sequences of %d pages up back to back (%lld host waits), the next pass within %.2g\n", NS,
           LEN / 16, (long long)(t1.xfer_waits - t0.xfer_waits), worst);
    CHECK_MSG(worst <= TIER_TOL, "after asynchronous moves up: logits differ by %.3g", worst);
done:
    free(tok);
    free(pos);
    free(seq);
    es_ctx_free(ref);
    es_ctx_free(t);
    es_model_free(m);
}

/* q8_0 rows in both tiers (kv_dim 128: the device keeps the GGUF blocks the host pool keeps, so a
 * move copies the bytes): 6 sequences through a 4-page device tier, 24 greedy steps, each moved to the
 * other tier once on the way, give the untiered device's tokens. */
static void test_q8(int device) {
    char path[512];
    snprintf(path, sizeof path, "%s", es_test_tmp("apex-q8.gguf"));
    es_synth_opts o = {.shape = "custom:dim=256,ff=512,layers=2,heads=4,kv=2,ctx=128,vocab=300,arch=qwen2,tied=0",
                       .type = ES_TYPE_F32, .seed = 3, .out_path = path, .n_threads = 1};
    es_err err = {{0}};
    CHECK_OK(es_synth(&o, &err), &err);
    es_model *m = load_model(path);
    if (!m) return;
    es_ctx *ref = make_ctx_(m, device, 0, ES_KV_Q8_0, &err), *t = make_ctx_(m, device, 4, ES_KV_Q8_0, &err);
    CHECK_MSG(ref && t, "q8_0 contexts: %s", err.msg);
    if (ref && t) {
        const int nv = es_model_n_vocab(m), ns = 6;
        int32_t tok[64], pos[64], seq[64], last[6];
        int8_t want[64];
        int n = 0;
        for (int s = 0; s < ns; s++) {
            int a, b;
            CHECK_OK(es_seq_open(ref, &a, &err), &err);
            CHECK_OK(es_seq_open(t, &b, &err), &err);
            CHECK(a == s && b == s);
            for (int i = 0; i < 10; i++, n++) {
                tok[n] = 1 + (s * 31 + i * 7) % (nv - 1);
                pos[n] = i;
                seq[n] = s;
                want[n] = i == 9;
            }
        }
        es_batch bt = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq, .logits = want};
        int same = 0, picks = 0;
        double worst = 0;
        for (int step = 0; step <= 24; step++) {
            CHECK_OK(es_decode(ref, &bt, &err), &err);
            CHECK_OK(es_decode(t, &bt, &err), &err);
            for (int i = 0, s = 0; i < bt.n_tokens; i++) {
                if (!want[i]) continue;
                const float *lr = es_ctx_logits(ref, i), *lt = es_ctx_logits(t, i);
                const double e = es_test_rel_diff(lr, lt, nv);
                if (!(e <= worst)) worst = e; /* (a NaN counts) */
                picks++;
                same += argmax(lr, nv) == argmax(lt, nv);
                last[s++] = argmax(lr, nv);
            }
            if (step == 24) break;
            if (step % 4 == 3) { /* one sequence to the other tier */
                const int s = step / 4 % ns;
                const es_kv_tier to = es_seq_tier(t, s) == ES_KV_TIER_HOST ? ES_KV_TIER_DEVICE : ES_KV_TIER_HOST;
                const es_status st = es_seq_set_tier(t, s, to, &err);
                CHECK_MSG(st == ES_OK || st == ES_ERR_FULL, "q8_0: moving %d: %s", s, err.msg);
            }
            for (int s = 0; s < ns; s++) {
                tok[s] = last[s];
                pos[s] = 10 + step;
                seq[s] = s;
                want[s] = 1;
            }
            bt = (es_batch){.n_tokens = ns, .token = tok, .pos = pos, .seq = seq, .logits = want};
        }
        es_tier_info ti;
        es_ctx_tier_info(t, &ti);
        printf("q8_0 in both tiers: %d/%d greedy picks the same, logits within %.2g; host-tier sequences %d, pages moved %lld\n", same,
               picks, worst, ti.host_seqs, (long long)ti.pages_moved);
        CHECK(same == picks);
        CHECK(worst <= TIER_TOL);
        CHECK(ti.host_seqs > 0 && ti.pages_moved > 0);
    }
    es_ctx_free(ref);
    es_ctx_free(t);
    es_model_free(m);
}

/* The prefix cache across the tiers. Six sequences decode golden prompts with their continuations,
 * half in each tier, offer their pages to the cache and close (the device-tier ones leave device
 * copies, the host-tier ones host copies). Eight more, in both tiers, adopt those prefixes (two
 * adopters of each of some prefixes, in different tiers: one page in both tiers), two of them cut
 * back into a shared page so that their next rows are written into a private copy, sequences move
 * between the tiers, and all eight decode on together: the logits equal a context without tiers or
 * cache computing everything, and the tokens are golden. The device tier (12 pages) cannot hold
 * them: cached device copies are given back, brought down first when only the device had them. */
static void test_prefix(int device) {
    es_model *m = load_stories();
    es_err err = {{0}};
    size_t len;
    char *text = es_test_read_file(es_test_shared("golden/stories260K-greedy.jsonl"), &len);
    es_ctx *ref = m ? make_ctx(m, device, 0) : NULL, *t = m ? make_ctx(m, device, DEV_PAGES) : NULL;
    if (!m || !text || !ref || !t) {
        CHECK(m && text && ref && t);
        free(text);
        es_ctx_free(ref);
        es_ctx_free(t);
        es_model_free(m);
        return;
    }
    CHECK_OK(es_ctx_prefix_cache_enable(t, &err), &err);
    enum { W1 = 6, W2 = 8, ADD = 40, STEPS = 6 };
    static es_test_golden g[W1];
    int ng = 0;
    for (char *line = strtok(text, "\n"); line && ng < W1; line = strtok(NULL, "\n"))
        if (es_test_golden_parse(line, &g[ng])) ng++;
    CHECK(ng == W1);
    const int nv = es_model_n_vocab(m);
    static int32_t toks[W1][256];
    int L[W1];
    int32_t pos[256], seq[256];
    int8_t want[256];
    for (int w = 0; w < ng; w++) { /* wave 1 */
        const int add = g[w].n_gen < ADD + STEPS + 1 ? g[w].n_gen - STEPS - 1 : ADD;
        L[w] = g[w].n_prompt + add;
        memcpy(toks[w], g[w].prompt_ids, (size_t)g[w].n_prompt * sizeof(int32_t));
        memcpy(toks[w] + g[w].n_prompt, g[w].gen_ids, (size_t)add * sizeof(int32_t));
        int s;
        CHECK_OK(es_seq_open(t, &s, &err), &err);
        if (w % 2 == 0) CHECK_OK(es_seq_set_tier(t, s, ES_KV_TIER_HOST, &err), &err);
        for (int i = 0; i < L[w]; i++) { pos[i] = i; seq[i] = s; want[i] = i == L[w] - 1; }
        es_batch b = {.n_tokens = L[w], .token = toks[w], .pos = pos, .seq = seq, .logits = want};
        CHECK_OK(es_decode(t, &b, &err), &err);
        CHECK(argmax(es_ctx_logits(t, L[w] - 1), nv) == g[w].gen_ids[L[w] - g[w].n_prompt]);
        CHECK(es_seq_prefix_keep(t, s, toks[w], L[w]) == L[w] / 16);
        es_seq_close(t, s);
    }
    es_tier_info ti;
    es_ctx_tier_info(t, &ti);
    CHECK_MSG(ti.device_blocks_cached > 0 && ti.device_blocks_cached == ti.device_blocks_used, "after wave 1: %lld device pages used, %lld cached",
              (long long)ti.device_blocks_used, (long long)ti.device_blocks_cached);
    CHECK(es_ctx_kv_blocks_used(t) == 0);

    int tq[W2], sr[W2], at[W2], adopted_total = 0;
    int32_t last[W2];
    for (int i = 0; i < W2; i++) { /* wave 2 */
        const int j = i % W1;
        CHECK_OK(es_seq_open(t, &tq[i], &err), &err);
        CHECK_OK(es_seq_open(ref, &sr[i], &err), &err);
        if (i % 3 == 0) CHECK_OK(es_seq_set_tier(t, tq[i], ES_KV_TIER_HOST, &err), &err);
        int from = es_seq_prefix_adopt(t, tq[i], toks[j], L[j] - 1);
        CHECK_MSG(from >= 16 && from % 16 == 0, "sequence %d adopted %d slots", i, from);
        adopted_total += from;
        if (i == 1 || i == 3) { /* back into a shared page: the rows written next go to a private copy */
            CHECK_OK(es_seq_truncate(t, tq[i], from - 5, &err), &err);
            from -= 5;
        }
        for (int k = from; k < L[j]; k++) { pos[k - from] = k; seq[k - from] = tq[i]; want[k - from] = k == L[j] - 1; }
        es_batch b = {.n_tokens = L[j] - from, .token = toks[j] + from, .pos = pos, .seq = seq, .logits = want};
        CHECK_OK(es_decode(t, &b, &err), &err);
        const float *lt = es_ctx_logits(t, L[j] - from - 1);
        for (int k = 0; k < L[j]; k++) { pos[k] = k; seq[k] = sr[i]; want[k] = k == L[j] - 1; }
        b = (es_batch){.n_tokens = L[j], .token = toks[j], .pos = pos, .seq = seq, .logits = want};
        CHECK_OK(es_decode(ref, &b, &err), &err);
        const float *lr = es_ctx_logits(ref, L[j] - 1);
        const double e = lt && lr ? es_test_rel_diff(lr, lt, nv) : 1;
        CHECK_MSG(e <= TIER_TOL, "sequence %d (prefix %d, %s tier): logits differ by %.3g", i, j,
                  es_seq_tier(t, tq[i]) == ES_KV_TIER_HOST ? "host" : "device", e);
        last[i] = lt ? argmax(lt, nv) : -1;
        CHECK(last[i] == g[j].gen_ids[L[j] - g[j].n_prompt]);
        at[i] = L[j];
        if (i % 3 == 2) { /* an earlier one changes tier (a full device tier refuses, nothing moved) */
            const int q = tq[i - 2];
            const es_kv_tier to = es_seq_tier(t, q) == ES_KV_TIER_HOST ? ES_KV_TIER_DEVICE : ES_KV_TIER_HOST;
            const es_status ms = es_seq_set_tier(t, q, to, &err);
            CHECK_MSG(ms == ES_OK || (ms == ES_ERR_FULL && to == ES_KV_TIER_DEVICE), "move: %s", err.msg);
        }
    }
    for (int step = 0; step < STEPS; step++) { /* all eight on together, one row each */
        int32_t tk[W2], ps[W2], sq[W2], pr[W2];
        int8_t wl[W2];
        for (int i = 0; i < W2; i++) { tk[i] = last[i]; ps[i] = at[i]; sq[i] = tq[i]; pr[i] = sr[i]; wl[i] = 1; }
        es_batch bt = {.n_tokens = W2, .token = tk, .pos = ps, .seq = sq, .logits = wl};
        es_batch br = {.n_tokens = W2, .token = tk, .pos = ps, .seq = pr, .logits = wl};
        CHECK_OK(es_decode(t, &bt, &err), &err);
        CHECK_OK(es_decode(ref, &br, &err), &err);
        for (int i = 0; i < W2; i++) {
            const int j = i % W1;
            const float *lt = es_ctx_logits(t, i), *lr = es_ctx_logits(ref, i);
            const double e = lt && lr ? es_test_rel_diff(lr, lt, nv) : 1;
            CHECK_MSG(e <= TIER_TOL, "step %d, sequence %d: logits differ by %.3g", step, i, e);
            at[i]++;
            last[i] = lt ? argmax(lt, nv) : -1;
            CHECK_MSG(last[i] == g[j].gen_ids[at[i] - g[j].n_prompt], "step %d, sequence %d: token %d, golden %d", step, i, last[i],
                      g[j].gen_ids[at[i] - g[j].n_prompt]);
        }
    }
    es_ctx_tier_info(t, &ti);
    CHECK_MSG(ti.device_evictions > 0, "no cached device copy was given back (%lld device pages)", (long long)ti.device_blocks_total);
    CHECK(ti.host_seqs > 0 && ti.host_seqs < W2);
    printf("prefix cache across tiers: %d slots adopted by %d sequences, %d in the host tier now, %lld device copies given back, "
           "%lld pages moved, %lld/%lld moves\n",
           adopted_total, W2, ti.host_seqs, (long long)ti.device_evictions, (long long)ti.pages_moved, (long long)ti.moves_to_host,
           (long long)ti.moves_to_device);
    for (int i = 0; i < W2; i++) {
        es_seq_close(t, tq[i]);
        es_seq_close(ref, sr[i]);
    }
    es_ctx_tier_info(t, &ti);
    CHECK_MSG(ti.device_blocks_used == ti.device_blocks_cached, "%lld device pages used by no sequence but %lld cached",
              (long long)ti.device_blocks_used, (long long)ti.device_blocks_cached);
    CHECK(es_ctx_kv_blocks_used(t) == 0 && ti.host_seqs == 0);
    free(text);
    es_ctx_free(ref);
    es_ctx_free(t);
    es_model_free(m);
}

static void test_errors(int device) {
    es_model *m = load_stories();
    if (!m) return;
    es_err err = {{0}};
    es_ctx *one = make_ctx(m, device, 0), *t = make_ctx(m, device, 2);
    if (one && t) {
        int s;
        CHECK_OK(es_seq_open(one, &s, &err), &err);
        CHECK(es_seq_set_tier(one, s, ES_KV_TIER_HOST, &err) == ES_ERR_UNSUPPORTED);
        es_tier_info ti;
        es_ctx_tier_info(one, &ti);
        CHECK(!ti.tiered);
        /* a sequence of 3 pages in the host tier cannot move into 2 device pages: nothing moves */
        int q;
        CHECK_OK(es_seq_open(t, &q, &err), &err);
        CHECK_OK(es_seq_set_tier(t, q, ES_KV_TIER_HOST, &err), &err);
        int32_t tok[40], pos[40], seq[40];
        for (int i = 0; i < 40; i++) { tok[i] = 1 + i; pos[i] = i; seq[i] = q; }
        es_batch b = {.n_tokens = 40, .token = tok, .pos = pos, .seq = seq};
        CHECK_OK(es_decode(t, &b, &err), &err);
        CHECK(es_seq_set_tier(t, q, ES_KV_TIER_DEVICE, &err) == ES_ERR_FULL);
        CHECK(es_seq_tier(t, q) == ES_KV_TIER_HOST);
        es_ctx_tier_info(t, &ti);
        CHECK(ti.device_blocks_used == 0 && ti.device_blocks_total == 2);
        CHECK(es_seq_set_tier(t, 999, ES_KV_TIER_HOST, &err) == ES_ERR_INVALID_ARG);
        CHECK(es_seq_set_tier(t, q, (es_kv_tier)7, &err) == ES_ERR_INVALID_ARG);
    }
    es_ctx_free(one);
    es_ctx_free(t);
    es_model_free(m);
}

int main(void) {
    dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_NODELETE); /* see test_vulkan.c */
    if (!es_vk_available()) {
        fprintf(stderr, "test_apex: this build has no Vulkan backend: nothing to run\n");
        return 77;
    }
    es_device_info devs[8];
    int n = 0;
    es_err err = {{0}};
    CHECK_OK(es_devices(devs, 8, &n, &err), &err);
    CHECK_MSG(n >= 1, "the build has Vulkan but the loader reports no device; CI runs on lavapipe (mesa-vulkan-drivers)");
    for (int d = 0; d < n && d < 8; d++) {
        printf("device %d: %s\n", d, devs[d].name);
        test_errors(d);
        test_q8(d);
        test_tree(d);
        test_async_moves(d);
        test_prefix(d);
        test_golden(d);
    }
    CHECK_MSG(n_validation_errors == 0, "%d validation errors", n_validation_errors);
    return es_test_finish("test_apex");
}
