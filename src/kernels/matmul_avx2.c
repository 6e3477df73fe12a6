/* matmul_avx2.c — AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; only called when
 * the CPU has them). Arithmetic as in matmul_impl.h.
 *
 * Int8 kernels work on groups of 8 weight rows: for each block they load the 8 rows' 32-byte
 * blocks and transpose them in registers so that vector W[k] holds bytes 4k..4k+3 of all 8 rows
 * (one row per 32-bit lane). A dot step then broadcasts 4 activation bytes to every lane, so each
 * lane accumulates its own row's block sum and no horizontal reduction is needed; the transposed
 * weights are reused for up to QJ activation rows while they sit in registers. */
/* Always optimised, also in Debug / sanitizer builds: intrinsic code at -O0 keeps every vector in
 * memory and runs 20-50x slower, which made sanitizer runs of whole-model tests crawl. */
#if !defined(__OPTIMIZE__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include <immintrin.h>
#include <string.h>

#include "kernels/matmul_impl.h"
#include "kernels/repack.h"

#define AI static inline __attribute__((always_inline))
/* Loops over registers (rows of a group, activation rows of a tile) must be fully unrolled so the
 * arrays stay in registers; -O2 alone does not. */
#define ES_UNROLL _Pragma("GCC unroll 16")

/* ---- activation quantisation ---------------------------------------------------------------- */

AI float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

AI int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

/* x · id rounded half to even (as nearbyintf), as int32; a lane outside [-127, 127] (only a NaN,
 * an Inf or an overflowing id gets there) is 0, as the reference's guard says. */
static inline __m256i quant8(__m256 x, __m256 vid) {
    const __m256 r = _mm256_round_ps(_mm256_mul_ps(x, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 in = _mm256_and_ps(_mm256_cmp_ps(r, _mm256_set1_ps(127.0f), _CMP_LE_OQ),
                                    _mm256_cmp_ps(r, _mm256_set1_ps(-127.0f), _CMP_GE_OQ));
    return _mm256_cvtps_epi32(_mm256_and_ps(r, in));
}

static void quant_row_avx2(const float *x, int64_t nb, int64_t stride, int32_t c, int8_t *qs, float *d,
                             int32_t *corr) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * 32;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        /* vmaxps(|x|, m) returns m for a NaN lane: NaN skipped, as fmaxf skips it */
        __m256 m = _mm256_max_ps(_mm256_and_ps(v0, absmask), _mm256_setzero_ps());
        m = _mm256_max_ps(_mm256_and_ps(v1, absmask), m);
        m = _mm256_max_ps(_mm256_and_ps(v2, absmask), m);
        m = _mm256_max_ps(_mm256_and_ps(v3, absmask), m);
        const float amax = hmax8(m);
        const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i i0 = quant8(v0, vid), i1 = quant8(v1, vid), i2 = quant8(v2, vid), i3 = quant8(v3, vid);
        const int32_t sum = hsum8i(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        _mm256_storeu_si256((__m256i *)(qs + b * stride * 32), _mm256_permutevar8x32_epi32(p, perm));
        d[b * stride] = db;
        corr[b * stride] = ES_QX_MAGIC - c * sum;
    }
}

/* Q8_K for the K-quants, as quant_row_q8k_ref (matmul.c) bit for bit: max|x| of the 256 values
 * with vmaxps(|x|, m), which returns m when |x| is NaN (fmaxf skips a NaN the same way); iscale and
 * dx in scalar by the reference's own expressions; the product x * iscale, then + 1.5 * 2^23 and
 * - 1.5 * 2^23 as separate instructions (ISO C mode: GCC does not contract a product and a sum
 * into an FMA), which rounds half to even; an element whose value lies outside [-127, 127] (only a
 * non-finite input) is 0. The block sums come from the int32 values before they are packed. */
static void quant_row_k_avx2(const float *x, int64_t nb, int64_t stride, int8_t *qs, float *d, int32_t *corr,
                             float *fs, int32_t *k16) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 magic = _mm256_set1_ps(12582912.0f), lim = _mm256_set1_ps(127.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t sb = 0; sb < nb / 8; sb++) {
        const float *xs = x + sb * 256;
        __m256 m[4];
        ES_UNROLL
        for (int k = 0; k < 4; k++) m[k] = _mm256_setzero_ps();
        for (int i = 0; i < 256; i += 32) {
            ES_UNROLL
            for (int k = 0; k < 4; k++) m[k] = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(xs + i + 8 * k), absmask), m[k]);
        }
        const float amax = hmax8(_mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3])));
        const float iscale = amax != 0.0f ? 127.0f / amax : 0.0f, db = amax != 0.0f ? 1.0f / iscale : 0.0f;
        const __m256 vis = _mm256_set1_ps(iscale);
        for (int64_t b = sb * 8; b < sb * 8 + 8; b++) {
            __m256i q[4];
            ES_UNROLL
            for (int k = 0; k < 4; k++) {
                const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(x + b * 32 + 8 * k), vis);
                const __m256 v = _mm256_sub_ps(_mm256_add_ps(p, magic), magic);
                const __m256 in = _mm256_cmp_ps(_mm256_and_ps(v, absmask), lim, _CMP_LE_OQ); /* false for NaN */
                q[k] = _mm256_and_si256(_mm256_cvttps_epi32(v), _mm256_castps_si256(in));
            }
            const int32_t lo = hsum8i(_mm256_add_epi32(q[0], q[1])), hi = hsum8i(_mm256_add_epi32(q[2], q[3]));
            const __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(qs + b * stride * 32), _mm256_permutevar8x32_epi32(p8, perm));
            d[b * stride] = db;
            corr[b * stride] = ES_QX_MAGIC;
            fs[b * stride] = db * (float)(lo + hi);
            k16[2 * b * stride] = -32 * lo;
            k16[2 * b * stride + 1] = -32 * hi;
        }
    }
}

/* ---- int8 kernels --------------------------------------------------------------------------- */

#define QJ 4 /* activation rows per pass over a row group (register budget: 16 ymm) */

/* (float)(v - ES_QX_MAGIC) for an accumulator started from the magic (see matmul_impl.h). */
AI __m256 tofloat(__m256i v) { return _mm256_sub_ps(_mm256_castsi256_ps(v), _mm256_set1_ps(ES_QX_MAGIC_F)); }

AI __m256i bcast32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* 8 x 8 transpose of 32-bit elements: out[k] lane i = in[i] lane k. */
AI void transpose8x8(__m256i r[8]) {
    __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

/* The 8 fp16 block scales at byte `off` of the 8 rows, as f32. Not vpgatherdd: with the gather
 * data sampling mitigation of recent microcode a gather costs more than the rest of the block. */
AI __m256 scales8(const uint8_t *const rp[8], size_t off) {
    uint16_t h[8];
    ES_UNROLL
    for (int i = 0; i < 8; i++) memcpy(&h[i], rp[i] + off, 2);
    /* (written out: the lane index must be a constant even in unoptimised builds) */
    __m128i v = _mm_cvtsi32_si128(h[0]);
    v = _mm_insert_epi16(v, h[1], 1), v = _mm_insert_epi16(v, h[2], 2), v = _mm_insert_epi16(v, h[3], 3);
    v = _mm_insert_epi16(v, h[4], 4), v = _mm_insert_epi16(v, h[5], 5), v = _mm_insert_epi16(v, h[6], 6);
    v = _mm_insert_epi16(v, h[7], 7);
    return _mm256_cvtph_ps(v);
}

/* A row group: pointers to 8 rows (past-the-end rows repeat the last real one; their lanes are
 * computed and dropped). */
typedef struct grp8 {
    const uint8_t *rp[8];
    int valid;
    bool next_in_chunk; /* the next group belongs to this thread's chunk too (prefetch it) */
} grp8;

static void grp8_init(grp8 *g, const es_mat *w, int64_t r0) {
    ES_UNROLL
    for (int i = 0; i < 8; i++) {
        int64_t r = r0 + i < w->rows ? r0 + i : w->rows - 1;
        g->rp[i] = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
    }
    g->valid = w->rows - r0 < 8 ? (int)(w->rows - r0) : 8;
}

/* The next 8-row group (contiguous), prefetched into L2 1/nb at a time while block b of this one
 * is computed: a linear stream that helps where the 8 side-by-side row streams are short (see
 * matmul_avx512.c). */
AI void prefetch_next(const grp8 *g, int64_t b, const size_t block_bytes) {
    if (g->valid < 8 || !g->next_in_chunk) return;
    const size_t rb = (size_t)(g->rp[1] - g->rp[0]);
    const char *next = (const char *)(g->rp[0] + 8 * rb) + (size_t)b * block_bytes * 8;
    ES_UNROLL
    for (size_t o = 0; o < block_bytes * 8; o += 64) _mm_prefetch(next + o, _MM_HINT_T1);
}

AI void store8(float *dst, __m256 v, int valid) {
    if (valid == 8) {
        _mm256_storeu_ps(dst, v);
    } else {
        float t[8];
        _mm256_storeu_ps(t, v);
        memcpy(dst, t, (size_t)valid * sizeof(float));
    }
}

/* One block's exact integer dot for activation row j (block index jb in qx), added into acc[j] with
 * the one rounding of the contract (matmul_impl.h); shared by the file-layout and X16 tiles. */

/* Q8_0: W[k] / A[k] = bytes 4k..4k+3 of the 8 rows' quants and their absolute values. Sign trick:
 * |w| * (x * sign(w)) for maddubs. */
AI __m256 q8_dot_acc(const __m256i W[8], const __m256i A[8], const es_qx *qx, int64_t jb, __m256 dw, __m256 acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t *xb = qx->qs + jb * 32;
    __m256i s = _mm256_set1_epi32(ES_QX_MAGIC);
    ES_UNROLL
    for (int k = 0; k < 8; k++) {
        __m256i p = _mm256_maddubs_epi16(A[k], _mm256_sign_epi8(bcast32(xb + 4 * k), W[k]));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
    }
    return _mm256_fmadd_ps(tofloat(s), _mm256_mul_ps(dw, _mm256_set1_ps(qx->d[jb])), acc);
}

/* Q4_0: L[k] / H[k] = elements 4k..4k+3 / 16+4k.. of the 8 rows as unsigned nibbles, so maddubs
 * needs no sign trick and the -8 offset is the precomputed correction -8 * sum(x). Pair sums are at
 * most 2*15*127, so 8 of them fit in int16. */
AI __m256 q4_dot_acc(const __m256i L[4], const __m256i H[4], const es_qx *qx, int64_t jb, __m256 dw, __m256 acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t *xb = qx->qs + jb * 32;
    __m256i s16 = _mm256_setzero_si256();
    ES_UNROLL
    for (int k = 0; k < 4; k++) {
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(L[k], bcast32(xb + 4 * k)));
        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(H[k], bcast32(xb + 16 + 4 * k)));
    }
    const __m256i s = _mm256_add_epi32(_mm256_madd_epi16(s16, ones), _mm256_set1_epi32(qx->corr[jb]));
    return _mm256_fmadd_ps(tofloat(s), _mm256_mul_ps(dw, _mm256_set1_ps(qx->d[jb])), acc);
}

/* Q5_0: codes 0..31 (the fifth bit ORed into the nibbles), the -16 in the correction. Pair sums are
 * at most 2*31*127, so the block's int16 sums go in two halves of four. */
AI __m256 q5_dot_acc(const __m256i L[4], const __m256i H[4], const es_qx *qx, int64_t jb, __m256 dw, __m256 acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t *xb = qx->qs + jb * 32;
    __m256i s = _mm256_set1_epi32(qx->corr[jb]);
    ES_UNROLL
    for (int h = 0; h < 2; h++) {
        __m256i s16 = _mm256_setzero_si256();
        ES_UNROLL
        for (int k = 2 * h; k < 2 * h + 2; k++) {
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(L[k], bcast32(xb + 4 * k)));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(H[k], bcast32(xb + 16 + 4 * k)));
        }
        s = _mm256_add_epi32(s, _mm256_madd_epi16(s16, ones));
    }
    return _mm256_fmadd_ps(tofloat(s), _mm256_mul_ps(dw, _mm256_set1_ps(qx->d[jb])), acc);
}

/* y[j][r0..r0+8) for j in [j0, j0+J): Q8_0 weights, sign trick |w| * (x * sign(w)) for maddubs. */
AI void q8_tile(const grp8 *g, const es_qx *qx, int64_t cols, int64_t j0, const int J, float *y, int64_t rows,
                int64_t r0) {
    const int64_t nb = qx->nb;
    __m256 acc[QJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const size_t off = (size_t)b * sizeof(es_block_q8_0);
        prefetch_next(g, b, sizeof(es_block_q8_0));
        __m256i W[8], A[8];
        ES_UNROLL
        for (int i = 0; i < 8; i++) W[i] = _mm256_loadu_si256((const __m256i *)(g->rp[i] + off + 2));
        transpose8x8(W);
        ES_UNROLL
        for (int k = 0; k < 8; k++) A[k] = _mm256_abs_epi8(W[k]);
        const __m256 dw = scales8(g->rp, off);
        const int64_t jb0 = b * qx->n + j0; /* block b of activation row j0 */
        ES_UNROLL
        for (int j = 0; j < J; j++) acc[j] = q8_dot_acc(W, A, qx, jb0 + j, dw, acc[j]);
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) store8(y + (j0 + j) * rows + r0, acc[j], g->valid);
}

/* Q4_0: nibbles are unsigned 0..15, so maddubs(q, x) needs no sign trick and the -8 offset is the
 * precomputed correction -8 * sum(x). Pair sums are at most 2*15*127, so 8 of them fit in int16. */
AI void q4_tile(const grp8 *g, const es_qx *qx, int64_t cols, int64_t j0, const int J, float *y, int64_t rows,
                int64_t r0) {
    const int64_t nb = qx->nb;
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    __m256 acc[QJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const size_t off = (size_t)b * sizeof(es_block_q4_0) + 2;
        prefetch_next(g, b, sizeof(es_block_q4_0));
        __m256i R[4];
        /* R[i] = [row i | row i+4]; a 4x4 transpose within each 128-bit lane then gives
         * u[k] = dword k of rows 0..7 in order */
        ES_UNROLL
        for (int i = 0; i < 4; i++)
            R[i] = _mm256_loadu2_m128i((const __m128i *)(g->rp[i + 4] + off), (const __m128i *)(g->rp[i] + off));
        __m256i t0 = _mm256_unpacklo_epi32(R[0], R[1]), t1 = _mm256_unpackhi_epi32(R[0], R[1]);
        __m256i t2 = _mm256_unpacklo_epi32(R[2], R[3]), t3 = _mm256_unpackhi_epi32(R[2], R[3]);
        __m256i u[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2), _mm256_unpacklo_epi64(t1, t3),
                        _mm256_unpackhi_epi64(t1, t3)};
        __m256i L[4], H[4];
        ES_UNROLL
        for (int k = 0; k < 4; k++) {
            L[k] = _mm256_and_si256(u[k], lo4);                        /* elements 4k..4k+3 */
            H[k] = _mm256_and_si256(_mm256_srli_epi16(u[k], 4), lo4);  /* elements 16+4k.. */
        }
        const __m256 dw = scales8(g->rp, off - 2);
        const int64_t jb0 = b * qx->n + j0;
        ES_UNROLL
        for (int j = 0; j < J; j++) acc[j] = q4_dot_acc(L, H, qx, jb0 + j, dw, acc[j]);
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) store8(y + (j0 + j) * rows + r0, acc[j], g->valid);
}

static void q8_0_rows_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                           int64_t r1) {
    for (int64_t r = r0; r < r1; r += 8) {
        grp8 g;
        grp8_init(&g, w, r);
        if (r1 - r < g.valid) g.valid = (int)(r1 - r);
        g.next_in_chunk = r + 16 <= r1;
        for (int64_t j0 = 0; j0 < n; j0 += QJ) {
            switch (n - j0 < QJ ? n - j0 : QJ) {
            case 1: q8_tile(&g, qx, w->cols, j0, 1, y, w->rows, r); break;
            case 2: q8_tile(&g, qx, w->cols, j0, 2, y, w->rows, r); break;
            case 3: q8_tile(&g, qx, w->cols, j0, 3, y, w->rows, r); break;
            default: q8_tile(&g, qx, w->cols, j0, 4, y, w->rows, r); break;
            }
        }
    }
}

static void q4_0_rows_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                           int64_t r1) {
    for (int64_t r = r0; r < r1; r += 8) {
        grp8 g;
        grp8_init(&g, w, r);
        if (r1 - r < g.valid) g.valid = (int)(r1 - r);
        g.next_in_chunk = r + 16 <= r1;
        for (int64_t j0 = 0; j0 < n; j0 += QJ) {
            switch (n - j0 < QJ ? n - j0 : QJ) {
            case 1: q4_tile(&g, qx, w->cols, j0, 1, y, w->rows, r); break;
            case 2: q4_tile(&g, qx, w->cols, j0, 2, y, w->rows, r); break;
            case 3: q4_tile(&g, qx, w->cols, j0, 3, y, w->rows, r); break;
            default: q4_tile(&g, qx, w->cols, j0, 4, y, w->rows, r); break;
            }
        }
    }
}

/* ---- int8 kernels on the X16 layout (kernels/repack.h) ------------------------------------- */

/* A 16-row group is two halves of 8: bytes 0..31 of every 64-byte chunk hold rows 0..7, bytes
 * 32..63 rows 8..15, already in the W[k] order the tiles above build with transposes. So each half
 * is 8 (Q8_0), 4 (Q4_0) or 5 (Q5_0) plain loads and its 8 scales one 16-byte load. Same
 * arithmetic. */
AI void x16_half(const uint8_t *gq, const uint8_t *gs, const es_qx *qx, int64_t j0, const int J, const bool q8,
                 const bool q5, const int h, int valid, float *y, int64_t rows, int64_t r0) {
    const int64_t nb = qx->nb;
    const size_t qb = es_x16_qbytes(q8 ? ES_TYPE_Q8_0 : q5 ? ES_TYPE_Q5_0 : ES_TYPE_Q4_0);
    const __m256i lo4 = _mm256_set1_epi8(0x0f);
    __m256 acc[QJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *q = gq + (size_t)b * qb + 32 * h;
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(gs + (size_t)b * 32 + 16 * h)));
        const int64_t jb0 = b * qx->n + j0;
        if (q8) {
            __m256i W[8], A[8];
            ES_UNROLL
            for (int k = 0; k < 8; k++) {
                W[k] = _mm256_loadu_si256((const __m256i *)(q + 64 * k));
                A[k] = _mm256_abs_epi8(W[k]);
            }
            ES_UNROLL
            for (int j = 0; j < J; j++) acc[j] = q8_dot_acc(W, A, qx, jb0 + j, dw, acc[j]);
        } else {
            __m256i L[4], H[4];
            ES_UNROLL
            for (int k = 0; k < 4; k++) {
                const __m256i u = _mm256_loadu_si256((const __m256i *)(q + 64 * k));
                L[k] = _mm256_and_si256(u, lo4);
                H[k] = _mm256_and_si256(_mm256_srli_epi16(u, 4), lo4);
            }
            if (q5) { /* the bit planes of repack.h: plane k is L[k]'s fifth bits, plane 4 + k H[k]'s */
                const __m256i hb = _mm256_loadu_si256((const __m256i *)(q + 256)), b4 = _mm256_set1_epi8(0x10);
                ES_UNROLL
                for (int k = 0; k < 4; k++) {
                    L[k] = _mm256_or_si256(L[k], _mm256_and_si256(_mm256_slli_epi16(hb, 4 - k), b4));
                    H[k] = _mm256_or_si256(H[k], _mm256_and_si256(k ? _mm256_srli_epi16(hb, k) : hb, b4));
                }
                ES_UNROLL
                for (int j = 0; j < J; j++) acc[j] = q5_dot_acc(L, H, qx, jb0 + j, dw, acc[j]);
            } else {
                ES_UNROLL
                for (int j = 0; j < J; j++) acc[j] = q4_dot_acc(L, H, qx, jb0 + j, dw, acc[j]);
            }
        }
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) store8(y + (j0 + j) * rows + r0 + 8 * h, acc[j], valid);
}

AI void x16_rows(const es_mat *w, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1, const bool q8,
                 const bool q5) {
    const int64_t nb = qx->nb;
    const size_t qb = es_x16_qbytes(w->type), gbytes = es_x16_group_bytes(w->type, nb);
    for (int64_t r = r0; r < r1; r += 16) {
        const uint8_t *gq = (const uint8_t *)w->data + (size_t)(r / 16) * gbytes, *gs = gq + (size_t)nb * qb;
        for (int h = 0; h < 2; h++) {
            const int64_t left = r1 - r - 8 * h;
            if (left <= 0) break;
            const int valid = left < 8 ? (int)left : 8;
            for (int64_t j0 = 0; j0 < n; j0 += QJ) {
                switch (n - j0 < QJ ? n - j0 : QJ) {
                case 1: x16_half(gq, gs, qx, j0, 1, q8, q5, h, valid, y, w->rows, r); break;
                case 2: x16_half(gq, gs, qx, j0, 2, q8, q5, h, valid, y, w->rows, r); break;
                case 3: x16_half(gq, gs, qx, j0, 3, q8, q5, h, valid, y, w->rows, r); break;
                default: x16_half(gq, gs, qx, j0, 4, q8, q5, h, valid, y, w->rows, r); break;
                }
            }
        }
    }
}

static void q8_0_x16_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                          int64_t r1) {
    x16_rows(w, qx, y, n, r0, r1, true, false);
}
static void q4_0_x16_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                          int64_t r1) {
    x16_rows(w, qx, y, n, r0, r1, false, false);
}
static void q5_0_x16_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                          int64_t r1) {
    x16_rows(w, qx, y, n, r0, r1, false, true);
}

/* ---- float kernels -------------------------------------------------------------------------- */

/* A tile of 4 weight rows x FJ activation rows, one 8-lane f32 accumulator per pair, columns in
 * order in steps of 8, then a fixed reduction and the leftover columns added in order. Rows past
 * the end repeat the last real one and are not stored; the tile is instantiated per number of
 * activation rows. Every (r, j) pair is computed the same way whatever the tile holds. */
#define FR 4
#define FJ 2

AI __m256 load8w(const uint8_t *row, int64_t c, const uint32_t type) {
    if (type == ES_TYPE_F32) return _mm256_loadu_ps((const float *)row + c);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + c));
    if (type == ES_TYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AI float load1w(const uint8_t *row, int64_t c, const uint32_t type) {
    if (type == ES_TYPE_F32) return ((const float *)row)[c];
    uint16_t h = ((const uint16_t *)row)[c];
    if (type == ES_TYPE_F16) return _cvtsh_ss(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

AI float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* FR rows x J activation rows (J <= FJ, a constant after inlining). */
AI void float_tile(const uint8_t *const rp[FR], const float *x, float *y, int64_t cols, int64_t rows, int64_t r,
                   int64_t r1, int64_t j0, const int J, const uint32_t type) {
    const int64_t c8 = cols & ~(int64_t)7;
    const float *xp[FJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) xp[j] = x + (j0 + j) * cols;
    __m256 acc[FR][FJ];
    ES_UNROLL
    for (int i = 0; i < FR; i++) {
        ES_UNROLL
        for (int j = 0; j < J; j++) acc[i][j] = _mm256_setzero_ps();
    }
    for (int64_t c = 0; c < c8; c += 8) {
        __m256 xv[FJ];
        ES_UNROLL
        for (int j = 0; j < J; j++) xv[j] = _mm256_loadu_ps(xp[j] + c);
        ES_UNROLL
        for (int i = 0; i < FR; i++) {
            __m256 wv = load8w(rp[i], c, type);
            ES_UNROLL
            for (int j = 0; j < J; j++) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
        }
    }
    ES_UNROLL
    for (int i = 0; i < FR; i++) {
        ES_UNROLL
        for (int j = 0; j < J; j++) {
            if (r + i >= r1) continue;
            float s = hsum8(acc[i][j]);
            for (int64_t c = c8; c < cols; c++) s += load1w(rp[i], c, type) * xp[j][c];
            y[(j0 + j) * rows + r + i] = s;
        }
    }
}

AI void float_rows(const es_mat *w, const float *x, float *y, int64_t n, int64_t r0, int64_t r1, const uint32_t type) {
    for (int64_t r = r0; r < r1; r += FR) {
        const uint8_t *rp[FR];
        ES_UNROLL
        for (int i = 0; i < FR; i++)
            rp[i] = (const uint8_t *)w->data + (size_t)(r + i < r1 ? r + i : r1 - 1) * w->row_bytes;
        for (int64_t j0 = 0; j0 < n; j0 += FJ) {
            if (n - j0 == 1) float_tile(rp, x, y, w->cols, w->rows, r, r1, j0, 1, type);
            else float_tile(rp, x, y, w->cols, w->rows, r, r1, j0, 2, type);
        }
    }
}

static void f32_rows_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                          int64_t r1) {
    float_rows(w, x, y, n, r0, r1, ES_TYPE_F32);
}
static void f16_rows_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                          int64_t r1) {
    float_rows(w, x, y, n, r0, r1, ES_TYPE_F16);
}
static void bf16_rows_avx2(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                           int64_t r1) {
    float_rows(w, x, y, n, r0, r1, ES_TYPE_BF16);
}

const es_mm_kernels es_mm_avx2 = {
    .f32 = f32_rows_avx2,
    .f16 = f16_rows_avx2,
    .bf16 = bf16_rows_avx2,
    .q8_0 = q8_0_rows_avx2,
    .q4_0 = q4_0_rows_avx2,
    .q8_0_x16 = q8_0_x16_avx2,
    .q4_0_x16 = q4_0_x16_avx2,
    .q5_0_x16 = q5_0_x16_avx2,
    .q4_k_x16 = es_q4_k_x16_avx2,
    .q5_k_x16 = es_q5_k_x16_avx2,
    .q6_k_x16 = es_q6_k_x16_avx2,
    .quant_row = quant_row_avx2,
    .quant_row_k = quant_row_k_avx2,
};
