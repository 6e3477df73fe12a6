/* test_attn.c — the online-softmax attention kernel (kernels/attn.h) against a straightforward
 * double-precision three-pass reference, for every KV element type, prefix lengths across page
 * boundaries (0, odd, exact multiples), ancestor lists and GQA groups, at the scalar level and every
 * SIMD level the CPU has (AVX2 and AVX-512 have their own tables); token groups attending together (es_attn_multi) against each token alone; plus the KV
 * cache's row formats, es_kv_seq_keep for every type and the SwiGLU helper.
 *
 * Tolerances (max |out - ref| / max |ref| over the n_q x head_dim outputs):
 *  - against the reference computed on the same (dequantised) cache rows: 1e-5 for every type;
 *  - f16 / q8_0 cache against the reference on the original f32 rows: 3e-3 (f16) and 3e-2 (q8_0)
 *    (q, K, V ~ N(0,1), head_dim 64: measured worst about 5e-4 and 1.2e-2). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/matmul.h"
#include "model/kv.h"
#include "testutil.h"
#include "util/err.h"
#include "util/rng.h"

enum { HD = 64, NKV = 2, NQ = 4, KVD = NKV * HD, MAXS = 200 };

typedef struct cache {
    es_kv_type type;
    int bs, n_pages;
    size_t row, page;
    uint8_t *k, *v;
    int32_t table[64];
} cache;

/* rows_k/v: [MAXS][KVD] f32 originals; pages are given in a shuffled order */
static void cache_build(cache *c, es_kv_type type, int bs, const float *rk, const float *rv, es_rng *r) {
    c->type = type;
    c->bs = bs;
    c->n_pages = (MAXS + bs - 1) / bs;
    c->row = es_kv_type_row_bytes(type, KVD);
    c->page = c->row * (size_t)bs;
    c->k = calloc((size_t)c->n_pages, c->page);
    c->v = calloc((size_t)c->n_pages, c->page);
    for (int i = 0; i < c->n_pages; i++) c->table[i] = i;
    for (int i = c->n_pages - 1; i > 0; i--) {
        int j = (int)(es_rng_next(r) % (uint64_t)(i + 1)), t = c->table[i];
        c->table[i] = c->table[j];
        c->table[j] = t;
    }
    for (int s = 0; s < MAXS; s++) {
        size_t off = (size_t)c->table[s / bs] * c->page + (size_t)(s % bs) * c->row;
        es_kv_row_from_f32(type, rk + (size_t)s * KVD, c->k + off, KVD);
        es_kv_row_from_f32(type, rv + (size_t)s * KVD, c->v + off, KVD);
    }
}

static void cache_view(const cache *c, es_attn_cache *v) {
    v->type = c->type;
    v->block_size = c->bs;
    v->row_bytes = c->row;
    v->page_bytes = c->page;
    v->k = c->k;
    v->v = c->v;
    v->table = c->table;
}

/* The rows as the cache holds them, back in f32 */
static void cache_dequant(const cache *c, float *dk, float *dv) {
    for (int s = 0; s < MAXS; s++) {
        size_t off = (size_t)c->table[s / c->bs] * c->page + (size_t)(s % c->bs) * c->row;
        es_kv_row_to_f32(c->type, c->k + off, 0, dk + (size_t)s * KVD, KVD);
        es_kv_row_to_f32(c->type, c->v + off, 0, dv + (size_t)s * KVD, KVD);
    }
}

/* Three-pass softmax attention in double over the listed slots. */
static void reference(const float *rk, const float *rv, int kvh, const float *q, int P, const int32_t *anc, int A,
                      double *out) {
    double sc[MAXS + 64], mx = -INFINITY, sum = 0;
    const int n = P + A;
    for (int h = 0; h < NQ; h++) {
        mx = -INFINITY;
        for (int t = 0; t < n; t++) {
            const int s = t < P ? t : anc[t - P];
            double d = 0;
            for (int j = 0; j < HD; j++) d += (double)q[h * HD + j] * rk[(size_t)s * KVD + kvh * HD + j];
            sc[t] = d / sqrt((double)HD);
            if (sc[t] > mx) mx = sc[t];
        }
        sum = 0;
        for (int t = 0; t < n; t++) sum += (sc[t] = exp(sc[t] - mx));
        for (int j = 0; j < HD; j++) {
            double o = 0;
            for (int t = 0; t < n; t++) {
                const int s = t < P ? t : anc[t - P];
                o += sc[t] * rv[(size_t)s * KVD + kvh * HD + j];
            }
            out[h * HD + j] = o / sum;
        }
    }
}

static double rel_err(const float *got, const double *ref, int n) {
    double e = 0, m = 0;
    for (int i = 0; i < n; i++) {
        if (fabs(got[i] - ref[i]) > e || isnan(got[i])) e = isnan(got[i]) ? INFINITY : fabs(got[i] - ref[i]);
        if (fabs(ref[i]) > m) m = fabs(ref[i]);
    }
    return e / (m > 0 ? m : 1);
}

/* Sets the lvl-th level to test: scalar, AVX2 (x86 with AVX-512: its own kernels), the best one;
 * false when that level is the same as an earlier one. */
static bool level_at(int lvl, es_cpu_level best) {
    if (lvl == 1 && best != ES_CPU_AVX512) return false;
    if (lvl == 2 && best == ES_CPU_SCALAR) return false;
    es_cpu_level_set(lvl == 0 ? ES_CPU_SCALAR : lvl == 1 ? ES_CPU_AVX2 : best);
    return true;
}

static void test_kernel(void) {
    es_rng r;
    es_rng_seed(&r, 7);
    float *rk = malloc(sizeof(float) * MAXS * KVD), *rv = malloc(sizeof(float) * MAXS * KVD);
    float *dk = malloc(sizeof(float) * MAXS * KVD), *dv = malloc(sizeof(float) * MAXS * KVD);
    for (int i = 0; i < MAXS * KVD; i++) {
        rk[i] = (float)es_rng_normal(&r);
        rv[i] = (float)es_rng_normal(&r);
    }
    float q[NQ * HD], out[NQ * HD], out2[NQ * HD];
    double ref[NQ * HD], ref32[NQ * HD];
    float *scratch = malloc(sizeof(float) * es_attn_scratch_floats(NQ, HD, 16));
    const es_kv_type types[3] = {ES_KV_F32, ES_KV_F16, ES_KV_Q8_0};
    const double loose[3] = {1e-5, 3e-3, 3e-2};
    const int prefixes[] = {0, 1, 5, 15, 16, 17, 31, 32, 33, 64, 100, 151};
    const es_cpu_level best = es_cpu_level_get();
    double worst[3] = {0}, worst32[3] = {0};
    int cases = 0;
    for (int lvl = 0; lvl < 3; lvl++) {
        if (!level_at(lvl, best)) continue;
        for (int ti = 0; ti < 3; ti++) {
            for (int bs = 5; bs <= 16; bs += 11) { /* an odd page size and the default */
                cache c;
                cache_build(&c, types[ti], bs, rk, rv, &r);
                cache_dequant(&c, dk, dv);
                es_attn_cache view;
                cache_view(&c, &view);
                for (size_t pi = 0; pi < sizeof prefixes / sizeof prefixes[0]; pi++) {
                    const int P = prefixes[pi];
                    for (int with_anc = 0; with_anc < 2; with_anc++) {
                        int32_t anc[40];
                        int A = 0;
                        /* ancestors: an increasing subset of later slots (a tree branch) */
                        if (with_anc || P == 0)
                            for (int s = P; s < MAXS && A < 40; s++)
                                if (es_rng_uniform(&r) < 0.4) anc[A++] = s;
                        for (int i = 0; i < NQ * HD; i++) q[i] = (float)es_rng_normal(&r);
                        const int kvh = (int)(es_rng_next(&r) % NKV);
                        es_attn_group(&view, kvh, HD, NQ, q, 1.0f / sqrtf((float)HD), P, anc, A, out, scratch);
                        reference(dk, dv, kvh, q, P, anc, A, ref);
                        reference(rk, rv, kvh, q, P, anc, A, ref32);
                        const double e = rel_err(out, ref, NQ * HD), e32 = rel_err(out, ref32, NQ * HD);
                        CHECK_MSG(e < 1e-5, "%s bs %d P %d A %d level %d: error vs dequantised reference %g",
                                  es_kv_type_name(types[ti]), bs, P, A, lvl, e);
                        CHECK_MSG(e32 < loose[ti], "%s bs %d P %d A %d: error vs f32 reference %g",
                                  es_kv_type_name(types[ti]), bs, P, A, e32);
                        if (e > worst[ti]) worst[ti] = e;
                        if (e32 > worst32[ti]) worst32[ti] = e32;
                        cases++;
                        /* the same slots split differently between prefix and ancestors give the
                         * bit-identical result (a token decoded alone vs inside a verified batch) */
                        if (A == 0 && P >= 2) {
                            int32_t tail[MAXS];
                            const int P2 = P / 2;
                            for (int s = P2; s < P; s++) tail[s - P2] = s;
                            es_attn_group(&view, kvh, HD, NQ, q, 1.0f / sqrtf((float)HD), P2, tail, P - P2, out2, scratch);
                            CHECK_MSG(!memcmp(out, out2, sizeof out), "prefix %d vs %d + ancestors differ", P, P2);
                        }
                        /* one head at a time equals the group (GQA heads are independent) */
                        if (P == 33) {
                            for (int h = 0; h < NQ; h++)
                                es_attn_group(&view, kvh, HD, 1, q + h * HD, 1.0f / sqrtf((float)HD), P, anc, A, out2 + h * HD,
                                              scratch);
                            CHECK(!memcmp(out, out2, sizeof out));
                        }
                    }
                }
                free(c.k);
                free(c.v);
            }
        }
    }
    es_cpu_level_set(best);
    printf("attention: %d cases; worst relative error vs dequantised / f32 reference: f32 %.2g/%.2g, f16 %.2g/%.2g, "
           "q8_0 %.2g/%.2g\n",
           cases, worst[0], worst32[0], worst[1], worst32[1], worst[2], worst32[2]);
    free(rk); free(rv); free(dk); free(dv); free(scratch);
}

/* Row formats, bytes per page, and es_kv_seq_keep moving rows of every type. */
static void test_kv_types(void) {
    es_err err;
    CHECK(es_kv_type_row_bytes(ES_KV_F32, 256) == 1024);
    CHECK(es_kv_type_row_bytes(ES_KV_F16, 256) == 512);
    CHECK(es_kv_type_row_bytes(ES_KV_Q8_0, 256) == 272);
    CHECK(es_kv_type_row_bytes(ES_KV_Q8_0, 48) == 0);
    /* TinyLlama: 22 layers, kv_dim 256, 16 slots per page */
    CHECK(es_kv_bytes_per_block(22, 256, 16, ES_KV_F32) == 2LL * 22 * 16 * 256 * 4);
    CHECK(es_kv_bytes_per_block(22, 256, 16, ES_KV_F16) == 2LL * 22 * 16 * 256 * 2);
    CHECK(es_kv_bytes_per_block(22, 256, 16, ES_KV_Q8_0) == 2LL * 22 * 16 * 272);
    CHECK(es_kv_bytes_per_block(22, 48, 16, ES_KV_Q8_0) == 0);
    CHECK(es_kv_type_from_name("q8_0") == ES_KV_Q8_0 && es_kv_type_from_name("f16") == ES_KV_F16 &&
          es_kv_type_from_name("f32") == ES_KV_F32 && es_kv_type_from_name("q4_0") < 0);
    es_kv *kv = NULL;
    CHECK(es_kv_init(2, 48, 16, 8, 1, 64, ES_KV_Q8_0, &kv, &err) == ES_ERR_UNSUPPORTED && !kv);

    es_rng r;
    es_rng_seed(&r, 3);
    const es_kv_type types[3] = {ES_KV_F32, ES_KV_F16, ES_KV_Q8_0};
    for (int ti = 0; ti < 3; ti++) {
        const int L = 3, D = 64, n = 40;
        CHECK_OK(es_kv_init(L, D, 8, 16, 2, 64, types[ti], &kv, &err), &err);
        int seq;
        CHECK_OK(es_kv_seq_open(kv, &seq, &err), &err);
        CHECK_OK(es_kv_seq_reserve(kv, seq, n, &err), &err);
        static float rows[40][3][2][64], back[2][64];
        for (int s = 0; s < n; s++)
            for (int l = 0; l < L; l++) {
                for (int j = 0; j < D; j++) {
                    rows[s][l][0][j] = (float)es_rng_normal(&r);
                    rows[s][l][1][j] = (float)es_rng_normal(&r);
                }
                es_kv_store(kv, seq, l, s, rows[s][l][0], rows[s][l][1]);
            }
        es_kv_seq_set_len(kv, seq, n);
        /* round trip within the type's precision */
        double e = 0;
        for (int l = 0; l < L; l++) {
            es_kv_load(kv, seq, l, 7, back[0], back[1]);
            for (int j = 0; j < D; j++) e = fmax(e, fabs(back[0][j] - rows[7][l][0][j]) + fabs(back[1][j] - rows[7][l][1][j]));
        }
        CHECK_MSG(e <= (ti == 0 ? 0 : ti == 1 ? 5e-3 : 5e-2), "%s round trip error %g", es_kv_type_name(types[ti]), e);
        /* remember what slots 20, 23, 31 hold as stored, keep them at 10, 11, 12 */
        static float want[3][3][2][64];
        const int32_t keep[3] = {20, 23, 31};
        for (int k = 0; k < 3; k++)
            for (int l = 0; l < L; l++) es_kv_load(kv, seq, l, keep[k], want[k][l][0], want[k][l][1]);
        CHECK_OK(es_kv_seq_keep(kv, seq, 10, keep, 3, &err), &err);
        CHECK(es_kv_seq_len(kv, seq) == 13);
        CHECK(es_kv_blocks_used(kv) == 2);
        for (int k = 0; k < 3; k++)
            for (int l = 0; l < L; l++) {
                es_kv_load(kv, seq, l, 10 + k, back[0], back[1]);
                CHECK(!memcmp(back, want[k][l], sizeof back));
            }
        /* slots below base untouched */
        es_kv_load(kv, seq, 1, 9, back[0], back[1]);
        double e9 = 0;
        for (int j = 0; j < D; j++) e9 = fmax(e9, fabs(back[0][j] - rows[9][1][0][j]));
        CHECK(e9 < (ti == 0 ? 1e-30 : ti == 1 ? 5e-3 : 5e-2));
        es_kv_seq_truncate(kv, seq, 3);
        CHECK(es_kv_seq_len(kv, seq) == 3 && es_kv_blocks_used(kv) == 1);
        es_kv_free(kv);
        kv = NULL;
    }
}

static void test_silu(void) {
    es_rng r;
    es_rng_seed(&r, 11);
    enum { N = 1003 };
    static float g[N], u[N], g0[N];
    for (int i = 0; i < N; i++) {
        g0[i] = (float)(es_rng_normal(&r) * (i % 7 == 0 ? 40 : 3));
        u[i] = (float)es_rng_normal(&r);
    }
    g0[0] = -120.0f;
    g0[1] = 95.0f;
    const es_cpu_level best = es_cpu_level_get();
    for (int lvl = 0; lvl < 3; lvl++) {
        if (!level_at(lvl, best)) continue;
        memcpy(g, g0, sizeof g);
        es_vec_silu_mul(g, u, N);
        double e = 0;
        for (int i = 0; i < N; i++) {
            const double x = g0[i], want = x / (1 + exp(-x)) * u[i];
            const double d = fabs(g[i] - want) / fmax(fabs(want), 1e-30);
            if (fabs(want) > 1e-30 && d > e) e = d;
            if (!isfinite(g[i])) e = INFINITY;
        }
        CHECK_MSG(e < 1e-5, "SwiGLU level %d: relative error %g", lvl, e);
    }
    es_cpu_level_set(best);
}

/* es_attn_multi: tokens of one sequence attending together (a chain or a tree after a shared prefix)
 * give each token bit-for-bit the result of the token alone, for prefixes and shared ancestor runs
 * that end inside, at and across chunk boundaries, every cache type, at the scalar and best level. */
static void test_multi(void) {
    enum { NT = 7 };
    es_rng r;
    es_rng_seed(&r, 11);
    float *rk = malloc(sizeof(float) * MAXS * KVD), *rv = malloc(sizeof(float) * MAXS * KVD);
    for (int i = 0; i < MAXS * KVD; i++) {
        rk[i] = (float)es_rng_normal(&r);
        rv[i] = (float)es_rng_normal(&r);
    }
    static float q[NT][NQ * HD], out[NT][NQ * HD], alone[NT][NQ * HD];
    float *scratch = malloc(sizeof(float) * es_attn_multi_scratch_floats(NT * NQ, HD));
    float *scratch1 = malloc(sizeof(float) * es_attn_multi_scratch_floats(NQ, HD));
    const es_kv_type types[3] = {ES_KV_F32, ES_KV_F16, ES_KV_Q8_0};
    const int prefixes[] = {0, 3, 31, 32, 33, 64, 95, 130};
    const es_cpu_level best = es_cpu_level_get();
    int cases = 0, shared_chunks = 0;
    for (int lvl = 0; lvl < 3; lvl++) {
        if (!level_at(lvl, best)) continue;
        for (int ti = 0; ti < 3; ti++) {
            cache c;
            cache_build(&c, types[ti], 16, rk, rv, &r);
            es_attn_cache view;
            cache_view(&c, &view);
            for (size_t pi = 0; pi < sizeof prefixes / sizeof prefixes[0]; pi++) {
                const int P = prefixes[pi];
                for (int shape = 0; shape < 3; shape++) {
                    /* shape 0: a chain (token k attends to slots P..P+k), 1: a tree whose tokens share a
                     * trunk of `trunk` slots then branch, 2: one token */
                    const int nt = shape == 2 ? 1 : NT, trunk = shape == 1 ? (int)(es_rng_next(&r) % 40) : 0;
                    static int32_t anc[NT][64];
                    int na[NT], common = 1 << 30;
                    for (int k = 0; k < nt; k++) {
                        na[k] = 0;
                        if (shape == 0)
                            for (int s = P; s <= P + k; s++) anc[k][na[k]++] = s;
                        else {
                            for (int s = P; s < P + trunk; s++) anc[k][na[k]++] = s;
                            for (int s = P + trunk + k; s < MAXS && na[k] < trunk + 1 + k % 3; s += NT) anc[k][na[k]++] = s;
                        }
                        int l = 0;
                        while (l < na[k] && l < na[0] && anc[k][l] == anc[0][l]) l++;
                        if (l < common) common = l;
                        for (int i = 0; i < NQ * HD; i++) q[k][i] = (float)es_rng_normal(&r);
                    }
                    if (P + common >= 32 && nt > 1) shared_chunks++;
                    const int kvh = (int)(es_rng_next(&r) % NKV);
                    const float scale = 1.0f / sqrtf((float)HD);
                    es_attn_query tq[NT];
                    for (int k = 0; k < nt; k++) {
                        tq[k] = (es_attn_query){q[k], out[k], anc[k], na[k]};
                        es_attn_group(&view, kvh, HD, NQ, q[k], scale, P, anc[k], na[k], alone[k], scratch1);
                    }
                    /* every allowed n_common: none, part of the shared run, all of it */
                    const int commons[3] = {0, common / 2, common};
                    for (int ci = 0; ci < 3; ci++) {
                        memset(out, 0xff, sizeof out);
                        es_attn_multi(&view, kvh, HD, NQ, scale, P, commons[ci], tq, nt, scratch);
                        for (int k = 0; k < nt; k++)
                            CHECK_MSG(!memcmp(out[k], alone[k], sizeof out[k]),
                                      "%s level %d P %d shape %d common %d: token %d differs from alone",
                                      es_kv_type_name(types[ti]), lvl, P, shape, commons[ci], k);
                        cases++;
                    }
                }
            }
            free(c.k);
            free(c.v);
        }
    }
    es_cpu_level_set(best);
    CHECK(shared_chunks > 10); /* the shared path was exercised */
    printf("attention of token groups: %d cases (%d with shared chunks), each token equal to it alone\n", cases,
           shared_chunks);
    free(rk); free(rv); free(scratch); free(scratch1);
}

typedef struct copy_log {
    int n;
    int32_t src, dst;
    bool fail;
} copy_log;

static es_status copy_hook(void *ud, int32_t src, int32_t dst, es_err *err) {
    copy_log *l = ud;
    l->n++;
    l->src = src;
    l->dst = dst;
    return l->fail ? es_fail(err, ES_ERR_IO, "device copy failed") : ES_OK;
}

/* The KV prefix cache: pages of a closed sequence are adopted by a later one with the same tokens
 * (whole pages only, the chain must match from the first page), a shared page is copied before a
 * sequence writes into it (the cached rows never change), idle cached pages count as free and are
 * evicted, least recently released first, when the pool runs dry. */
static void test_prefix_cache(void) {
    es_err err = {{0}};
    const int L = 2, D = 32, BS = 8;
    es_kv *kv = NULL;
    CHECK_OK(es_kv_init(L, D, BS, 6, 3, 64, ES_KV_F32, &kv, &err), &err);
    if (!kv) return;
    int32_t tok[40];
    for (int i = 0; i < 40; i++) tok[i] = 100 + i;
    int a, b, c;
    CHECK(es_kv_prefix_adopt(kv, 0, tok, 40) == 0); /* no cache yet */
    CHECK_OK(es_kv_prefix_enable(kv, &err), &err);
    /* sequence a: 20 slots, row values = token * 10 + layer (k) and negative (v) */
    CHECK_OK(es_kv_seq_open(kv, &a, &err), &err);
    CHECK_OK(es_kv_seq_reserve(kv, a, 20, &err), &err);
    float rk[32], rv[32], bk[32], bv[32];
    for (int sl = 0; sl < 20; sl++)
        for (int l = 0; l < L; l++) {
            for (int j = 0; j < D; j++) rk[j] = (float)(tok[sl] * 10 + l), rv[j] = -rk[j];
            es_kv_store(kv, a, l, sl, rk, rv);
        }
    es_kv_seq_set_len(kv, a, 20);
    for (int i = 0; i < 20; i++) es_kv_seq_parents(kv, a)[i] = i - 1;
    es_kv_seq_update_linear(kv, a);
    CHECK(es_kv_blocks_used(kv) == 3);
    CHECK(es_kv_prefix_keep(kv, a, tok, 20) == 2); /* two full pages; the third holds 4 slots */
    es_kv_seq_close(kv, a);
    es_prefix_cache_info pi;
    es_kv_prefix_stats(kv, &pi);
    CHECK(pi.enabled && pi.cached_blocks == 2 && pi.idle_blocks == 2);
    CHECK(es_kv_blocks_used(kv) == 0); /* idle cached pages count as free */
    /* b: the same first 12 tokens, then others: one page adopted */
    int32_t other[40];
    memcpy(other, tok, sizeof other);
    other[12] = 7;
    CHECK_OK(es_kv_seq_open(kv, &b, &err), &err);
    CHECK(es_kv_prefix_adopt(kv, b, other, 30) == 8);
    CHECK(es_kv_seq_len(kv, b) == 8 && es_kv_seq_linear(kv, b) == 8);
    es_kv_load(kv, b, 1, 5, bk, bv);
    CHECK(bk[0] == (float)(tok[5] * 10 + 1) && bv[3] == -bk[3]);
    /* c: the whole 16 (n limits it to whole pages within 19 tokens) */
    CHECK_OK(es_kv_seq_open(kv, &c, &err), &err);
    CHECK(es_kv_prefix_adopt(kv, c, tok, 19) == 16);
    /* a chain that does not start at the first page finds nothing */
    int e;
    CHECK_OK(es_kv_seq_open(kv, &e, &err), &err);
    CHECK(es_kv_prefix_adopt(kv, e, tok + 8, 30) == 0);
    es_kv_seq_close(kv, e);
    /* c rewinds into its second page (shared with the cache) and writes: it gets a copy, and the
       copy hook (a backend's own rows) hears of it; a hook that fails fails the write, changing nothing */
    es_kv_seq_truncate(kv, c, 10);
    copy_log log = {0};
    es_kv_set_copy_hook(kv, copy_hook, &log);
    log.fail = true;
    const int32_t page_before = es_kv_seq_blocks(kv, c)[1];
    CHECK(es_kv_seq_reserve(kv, c, 12, &err) == ES_ERR_IO && es_kv_seq_blocks(kv, c)[1] == page_before);
    log.fail = false;
    CHECK_OK(es_kv_seq_reserve(kv, c, 12, &err), &err);
    CHECK(log.n == 2 && log.src == page_before && log.dst == es_kv_seq_blocks(kv, c)[1] && log.dst != page_before);
    es_kv_set_copy_hook(kv, NULL, NULL);
    for (int j = 0; j < D; j++) rk[j] = 999, rv[j] = -999;
    for (int l = 0; l < L; l++) {
        es_kv_store(kv, c, l, 10, rk, rv);
        es_kv_store(kv, c, l, 11, rk, rv);
    }
    es_kv_seq_set_len(kv, c, 12);
    es_kv_load(kv, c, 0, 9, bk, bv); /* rows before the write were copied with the page */
    CHECK(bk[0] == (float)(tok[9] * 10));
    es_kv_load(kv, c, 0, 10, bk, bv);
    CHECK(bk[0] == 999);
    es_kv_seq_close(kv, c);
    int d;
    CHECK_OK(es_kv_seq_open(kv, &d, &err), &err);
    CHECK(es_kv_prefix_adopt(kv, d, tok, 40) == 16); /* the cached second page holds what a wrote */
    es_kv_load(kv, d, 0, 10, bk, bv);
    CHECK(bk[0] == (float)(tok[10] * 10));
    es_kv_seq_close(kv, d);
    es_kv_seq_close(kv, b);
    /* a sequence that needs the whole pool evicts the idle cached pages */
    es_kv_prefix_stats(kv, &pi);
    CHECK(pi.idle_blocks == 2 && es_kv_blocks_used(kv) == 0);
    CHECK_OK(es_kv_seq_open(kv, &a, &err), &err);
    CHECK_OK(es_kv_seq_reserve(kv, a, 48, &err), &err);
    es_kv_prefix_stats(kv, &pi);
    CHECK(pi.cached_blocks == 0 && pi.evicted_blocks == 2 && es_kv_blocks_used(kv) == 6);
    CHECK(es_kv_seq_reserve(kv, a, 49, &err) == ES_ERR_FULL);
    es_kv_seq_close(kv, a);
    CHECK_OK(es_kv_seq_open(kv, &a, &err), &err);
    CHECK(es_kv_prefix_adopt(kv, a, tok, 40) == 0);
    es_kv_seq_close(kv, a);
    es_kv_free(kv);
}

int main(void) {
    test_kernel();
    test_multi();
    test_kv_types();
    test_prefix_cache();
    test_silu();
    return es_test_finish("test_attn");
}
