/* matmul_avx512.c — AVX-512 (F, BW, VL, DQ) kernels, with and without VNNI (compiled with the
 * AVX-512 flags; only called when the CPU has them). Arithmetic as in matmul_impl.h.
 *
 * Int8 kernels work on groups of 16 weight rows: the rows' blocks are transposed in registers so
 * that vector W[k] holds bytes 4k..4k+3 of the block of all 16 rows (one row per 32-bit lane), and
 * a dot step multiplies it with 4 activation bytes broadcast to every lane: each lane accumulates
 * its own row, no horizontal sums. The transposed block is reused for up to QJ activation rows,
 * which is what makes verifying k draft tokens cost about one weight pass.
 *
 * With VNNI, vpdpbusd multiplies unsigned by signed bytes: Q8_0 weights are offset to w + 128
 * (xor 0x80) and the accumulator starts at the precomputed -128 * sum(x); Q4_0 nibbles are already
 * unsigned and start at -8 * sum(x). Without VNNI the same is done with maddubs / madd. */
#include <immintrin.h>
#include <string.h>

#include "kernels/matmul_impl.h"

#define AI static inline __attribute__((always_inline))
/* Loops over registers (rows of a group, activation rows of a tile) must be fully unrolled so the
 * arrays stay in registers; -O2 alone does not. */
#define ES_UNROLL _Pragma("GCC unroll 16")

/* ---- activation quantisation ---------------------------------------------------------------- */

static void quant_row_avx512(const float *x, int64_t nb, int32_t c, int8_t *qs, float *d, int32_t *corr) {
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * 32;
        __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        /* cvtps2dq rounds half to even (MXCSR default), like nearbyintf in the reference */
        __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid)), i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
        const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        _mm_storeu_si128((__m128i *)(qs + b * 32), _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(qs + b * 32 + 16), _mm512_cvtsepi32_epi8(i1));
        d[b] = db;
        corr[b] = -c * sum;
    }
}

/* ---- int8 kernels --------------------------------------------------------------------------- */

#define QJ 8        /* activation rows per pass over a row group (VNNI) */
#define QJ_NOVNNI 4 /* the maddubs path needs more registers */

/* s + sum over each 4-byte group of u8(a) * s8(4 bytes at p, broadcast). GCC does not fold the
 * broadcast into vpdpbusd's m32bcst operand by itself (it emits a separate vpbroadcastd), and the
 * front end is a bottleneck of the tile loop, so the instruction is written out. */
AI __m512i dpbusd_bcast(__m512i s, __m512i a, const int8_t *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(a), "m"(*(const int32_t *)(const void *)p));
    return s;
}

AI __m512i bcast32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Group of 16 rows: pointers (rows past the end repeat the last real one; their lanes are
 * computed and not stored), byte offsets from the first for the scale gather, store mask. */
typedef struct grp16 {
    const uint8_t *rp[16];
    __m512i goff;
    __mmask16 mask;
} grp16;

static void grp16_init(grp16 *g, const es_mat *w, int64_t r0, int64_t r1) {
    int32_t off[16];
    ES_UNROLL
    for (int i = 0; i < 16; i++) {
        int64_t r = r0 + i < w->rows ? r0 + i : w->rows - 1;
        g->rp[i] = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        off[i] = (int32_t)((r - r0) * (int64_t)w->row_bytes);
    }
    g->goff = _mm512_loadu_si512(off);
    const int64_t valid = r1 - r0 < 16 ? r1 - r0 : 16;
    g->mask = (__mmask16)((1u << valid) - 1);
}

/* The 16 fp16 block scales (first 2 bytes of each gathered dword) as f32. */
AI __m512 scales16(const uint8_t *base, __m512i goff) {
    __m512i v = _mm512_i32gather_epi32(goff, (const void *)base, 1);
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
}

/* Loads the 32 quant bytes at byte `off` of 16 rows and transposes them: W[k] lane i = bytes
 * 4k..4k+3 of row i. z[i] = [row i | row i+8]; a 4x4 transpose inside each 128-bit lane and a
 * lane permute finish the job. */
AI void load_q8_16(const grp16 *g, size_t off, __m512i W[8]) {
    __m512i z[8];
    ES_UNROLL
    for (int i = 0; i < 8; i++)
        z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(g->rp[i] + off))),
                                  _mm256_loadu_si256((const __m256i *)(g->rp[i + 8] + off)), 1);
    __m512i u[8];
    ES_UNROLL
    for (int h = 0; h < 2; h++) {
        const __m512i *s = z + 4 * h;
        __m512i t0 = _mm512_unpacklo_epi32(s[0], s[1]), t1 = _mm512_unpackhi_epi32(s[0], s[1]);
        __m512i t2 = _mm512_unpacklo_epi32(s[2], s[3]), t3 = _mm512_unpackhi_epi32(s[2], s[3]);
        /* u[4h + k], 128-bit lane L: dword k (L even) or k + 4 (L odd) of rows 4h..4h+3 (L < 2) or
         * 4h+8..4h+11 (L >= 2) */
        u[4 * h + 0] = _mm512_unpacklo_epi64(t0, t2);
        u[4 * h + 1] = _mm512_unpackhi_epi64(t0, t2);
        u[4 * h + 2] = _mm512_unpacklo_epi64(t1, t3);
        u[4 * h + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    /* W[k] = [u[k].L0, u[4+k].L0, u[k].L2, u[4+k].L2]; W[k+4] the same with lanes 1 and 3 */
    const __m512i ilo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i ihi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    ES_UNROLL
    for (int k = 0; k < 4; k++) {
        W[k] = _mm512_permutex2var_epi64(u[k], ilo, u[4 + k]);
        W[k + 4] = _mm512_permutex2var_epi64(u[k], ihi, u[4 + k]);
    }
}

/* Loads the 16 packed-nibble bytes at `off` of 16 rows: z[i] = [row i | i+4 | i+8 | i+12], a 4x4
 * transpose in each 128-bit lane gives u[k] = dword k of rows 0..15 in order. L[k] holds
 * elements 4k..4k+3 (low nibbles), H[k] elements 16+4k.. (high nibbles), as bytes 0..15. */
AI void load_q4_16(const grp16 *g, size_t off, __m512i L[4], __m512i H[4]) {
    __m512i z[4];
    ES_UNROLL
    for (int i = 0; i < 4; i++) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(g->rp[i] + off)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(g->rp[i + 4] + off)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(g->rp[i + 8] + off)), 2);
        z[i] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(g->rp[i + 12] + off)), 3);
    }
    __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    __m512i u[4] = {_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2), _mm512_unpacklo_epi64(t1, t3),
                    _mm512_unpackhi_epi64(t1, t3)};
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    ES_UNROLL
    for (int k = 0; k < 4; k++) {
        L[k] = _mm512_and_si512(u[k], lo4);
        H[k] = _mm512_and_si512(_mm512_srli_epi16(u[k], 4), lo4);
    }
}

/* y[j][r0..r0+16) for j in [j0, j0+J), Q8_0 weights. */
AI void q8_tile(const grp16 *g, const es_qx *qx, int64_t cols, int64_t j0, const int J, const bool vnni, float *y,
                int64_t rows, int64_t r0) {
    const int64_t nb = qx->nb;
    const __m512i ones = _mm512_set1_epi16(1), bias = _mm512_set1_epi8((char)0x80);
    __m512 acc[QJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const size_t off = (size_t)b * sizeof(es_block_q8_0);
        __m512i W[8], A[8];
        load_q8_16(g, off + 2, W);
        const __m512 dw = scales16(g->rp[0] + off, g->goff);
        ES_UNROLL
        for (int k = 0; k < 8; k++) {
            if (vnni) W[k] = _mm512_xor_si512(W[k], bias); /* w + 128 as unsigned */
            else A[k] = _mm512_abs_epi8(W[k]);
        }
        /* k outer, j inner: J independent dependency chains side by side for the pipeline */
        const int8_t *xb = qx->qs + j0 * cols + b * 32;
        __m512i s[QJ];
        ES_UNROLL
        for (int j = 0; j < J; j++) s[j] = vnni ? _mm512_set1_epi32(qx->corr[(j0 + j) * nb + b]) : _mm512_setzero_si512();
        ES_UNROLL
        for (int k = 0; k < 8; k++) {
            const __mmask64 neg = vnni ? 0 : _mm512_movepi8_mask(W[k]);
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                if (vnni) {
                    s[j] = dpbusd_bcast(s[j], W[k], xb + j * cols + 4 * k); /* sum (w + 128) x, from -128 sum x */
                } else {
                    __m512i xv = bcast32(xb + j * cols + 4 * k);
                    /* x * sign(w): negate x where w < 0 (w == 0 is multiplied by |w| = 0) */
                    xv = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
                    s[j] = _mm512_add_epi32(s[j], _mm512_madd_epi16(_mm512_maddubs_epi16(A[k], xv), ones));
                }
            }
        }
        ES_UNROLL
        for (int j = 0; j < J; j++) {
            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(qx->d[(j0 + j) * nb + b]));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[j]), sc, acc[j]);
        }
    }
    for (int j = 0; j < J; j++) _mm512_mask_storeu_ps(y + (j0 + j) * rows + r0, g->mask, acc[j]);
}

/* y[j][r0..r0+16) for j in [j0, j0+J), Q4_0 weights (nibbles unsigned, -8 via the correction). */
AI void q4_tile(const grp16 *g, const es_qx *qx, int64_t cols, int64_t j0, const int J, const bool vnni, float *y,
                int64_t rows, int64_t r0) {
    const int64_t nb = qx->nb;
    const __m512i ones = _mm512_set1_epi16(1);
    __m512 acc[QJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const size_t off = (size_t)b * sizeof(es_block_q4_0);
        __m512i L[4], H[4];
        load_q4_16(g, off + 2, L, H);
        const __m512 dw = scales16(g->rp[0] + off, g->goff);
        /* k outer, j inner: J independent dependency chains side by side for the pipeline */
        const int8_t *xb = qx->qs + j0 * cols + b * 32;
        __m512i s[QJ];
        ES_UNROLL
        for (int j = 0; j < J; j++)
            s[j] = vnni ? _mm512_set1_epi32(qx->corr[(j0 + j) * nb + b]) /* -8 * sum(x) */ : _mm512_setzero_si512();
        ES_UNROLL
        for (int k = 0; k < 4; k++) {
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                const int8_t *xj = xb + j * cols;
                if (vnni) {
                    s[j] = dpbusd_bcast(s[j], L[k], xj + 4 * k);
                    s[j] = dpbusd_bcast(s[j], H[k], xj + 16 + 4 * k);
                } else {
                    /* int16 pair sums <= 2*15*127: all eight of a block fit in int16 */
                    s[j] = _mm512_add_epi16(s[j], _mm512_maddubs_epi16(L[k], bcast32(xj + 4 * k)));
                    s[j] = _mm512_add_epi16(s[j], _mm512_maddubs_epi16(H[k], bcast32(xj + 16 + 4 * k)));
                }
            }
        }
        ES_UNROLL
        for (int j = 0; j < J; j++) {
            const int64_t jb = (j0 + j) * nb + b;
            if (!vnni) s[j] = _mm512_add_epi32(_mm512_madd_epi16(s[j], ones), _mm512_set1_epi32(qx->corr[jb]));
            const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(qx->d[jb]));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[j]), sc, acc[j]);
        }
    }
    for (int j = 0; j < J; j++) _mm512_mask_storeu_ps(y + (j0 + j) * rows + r0, g->mask, acc[j]);
}

/* The gather takes int32 offsets: a row group must span less than 2 GiB. */
static bool offsets_fit(const es_mat *w) { return w->row_bytes <= (size_t)INT32_MAX / 16; }

/* Instantiates the row loop of a tile kernel for a fixed vnni flag, J = 1..QJ (or QJ_NOVNNI). */
#define DEFINE_ROWS(name, tile, vnni, qj, reffn)                                                                  \
    static void name(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,         \
                     int64_t r1) {                                                                               \
        if (!offsets_fit(w)) { reffn(w, x, qx, y, n, r0, r1); return; }                                          \
        for (int64_t r = r0; r < r1; r += 16) {                                                                  \
            grp16 g;                                                                                             \
            grp16_init(&g, w, r, r1);                                                                            \
            for (int64_t j0 = 0; j0 < n; j0 += qj) {                                                             \
                const int64_t J = n - j0 < qj ? n - j0 : qj;                                                     \
                switch (J) {                                                                                     \
                case 1: tile(&g, qx, w->cols, j0, 1, vnni, y, w->rows, r); break;                                \
                case 2: tile(&g, qx, w->cols, j0, 2, vnni, y, w->rows, r); break;                                \
                case 3: tile(&g, qx, w->cols, j0, 3, vnni, y, w->rows, r); break;                                \
                case 4: tile(&g, qx, w->cols, j0, 4, vnni, y, w->rows, r); break;                                \
                case 5: tile(&g, qx, w->cols, j0, 5 <= qj ? 5 : 1, vnni, y, w->rows, r); break;                  \
                case 6: tile(&g, qx, w->cols, j0, 6 <= qj ? 6 : 1, vnni, y, w->rows, r); break;                  \
                case 7: tile(&g, qx, w->cols, j0, 7 <= qj ? 7 : 1, vnni, y, w->rows, r); break;                  \
                default: tile(&g, qx, w->cols, j0, 8 <= qj ? 8 : 1, vnni, y, w->rows, r); break;                 \
                }                                                                                                \
            }                                                                                                    \
        }                                                                                                        \
    }

DEFINE_ROWS(q8_0_rows_vnni, q8_tile, true, QJ, es_mm_ref.q8_0)
DEFINE_ROWS(q4_0_rows_vnni, q4_tile, true, QJ, es_mm_ref.q4_0)
DEFINE_ROWS(q8_0_rows_novnni, q8_tile, false, QJ_NOVNNI, es_mm_ref.q8_0)
DEFINE_ROWS(q4_0_rows_novnni, q4_tile, false, QJ_NOVNNI, es_mm_ref.q4_0)

/* ---- float kernels -------------------------------------------------------------------------- */

/* A tile of FR weight rows x FJ activation rows, one 16-lane f32 accumulator per pair, columns in
 * order in steps of 16 (the last step masked), then the fixed _mm512_reduce_add_ps tree. Rows and
 * activation rows past the end repeat the last real one and are not stored, so each (r, j) pair is
 * computed the same way whatever else its tile holds. */
#define FR 4
#define FJ 4

AI __m512 load16w(const uint8_t *row, int64_t c, __mmask16 m, const uint32_t type) {
    if (type == ES_TYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + c);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + c);
    if (type == ES_TYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AI void float_rows(const es_mat *w, const float *x, float *y, int64_t n, int64_t r0, int64_t r1, const uint32_t type) {
    const int64_t cols = w->cols, rows = w->rows;
    for (int64_t r = r0; r < r1; r += FR) {
        const uint8_t *rp[FR];
        ES_UNROLL
        for (int i = 0; i < FR; i++)
            rp[i] = (const uint8_t *)w->data + (size_t)(r + i < r1 ? r + i : r1 - 1) * w->row_bytes;
        for (int64_t j0 = 0; j0 < n; j0 += FJ) {
            const float *xp[FJ];
            ES_UNROLL
            for (int j = 0; j < FJ; j++) xp[j] = x + (j0 + j < n ? j0 + j : n - 1) * cols;
            __m512 acc[FR][FJ];
            ES_UNROLL
            for (int i = 0; i < FR; i++)
                ES_UNROLL
                for (int j = 0; j < FJ; j++) acc[i][j] = _mm512_setzero_ps();
            for (int64_t c = 0; c < cols; c += 16) {
                const __mmask16 m = cols - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - c)) - 1);
                __m512 xv[FJ];
                ES_UNROLL
                for (int j = 0; j < FJ; j++) xv[j] = _mm512_maskz_loadu_ps(m, xp[j] + c);
                ES_UNROLL
                for (int i = 0; i < FR; i++) {
                    __m512 wv = load16w(rp[i], c, m, type);
                    ES_UNROLL
                    for (int j = 0; j < FJ; j++) acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
                }
            }
            for (int i = 0; i < FR && r + i < r1; i++)
                for (int j = 0; j < FJ && j0 + j < n; j++) y[(j0 + j) * rows + r + i] = _mm512_reduce_add_ps(acc[i][j]);
        }
    }
}

static void f32_rows_avx512(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                            int64_t r1) {
    float_rows(w, x, y, n, r0, r1, ES_TYPE_F32);
}
static void f16_rows_avx512(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                            int64_t r1) {
    float_rows(w, x, y, n, r0, r1, ES_TYPE_F16);
}
static void bf16_rows_avx512(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                             int64_t r1) {
    float_rows(w, x, y, n, r0, r1, ES_TYPE_BF16);
}

const es_mm_kernels es_mm_avx512 = {
    .f32 = f32_rows_avx512,
    .f16 = f16_rows_avx512,
    .bf16 = bf16_rows_avx512,
    .q8_0 = q8_0_rows_novnni,
    .q4_0 = q4_0_rows_novnni,
    .quant_row = quant_row_avx512,
};

const es_mm_kernels es_mm_avx512_vnni = {
    .f32 = f32_rows_avx512,
    .f16 = f16_rows_avx512,
    .bf16 = bf16_rows_avx512,
    .q8_0 = q8_0_rows_vnni,
    .q4_0 = q4_0_rows_vnni,
    .quant_row = quant_row_avx512,
};
