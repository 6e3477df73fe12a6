/* kquant_avx512.c — AVX-512 (F, BW, VL, DQ; with or without VNNI) kernels for the K-quant weights
 * Q4_K, Q5_K, Q6_K (compiled with the AVX-512 flags; only called when the CPU has them). The
 * arithmetic is the K-quant part of the contract in matmul_impl.h, bit for bit.
 *
 * Layout of the work: groups of 16 weight rows, one row per 32-bit lane. For each super-block of
 * the group the 16 rows' codes are decoded once into a transposed 4 KB buffer (vector k holds
 * elements 4k..4k+3 of each row as unsigned bytes; the bytes are moved into lanes with in-register
 * 4x4 dword transposes, no gathers) with their sub-block scales as vectors. Then every activation
 * row of the tile (up to QJ) walks the buffer: a dot step multiplies one buffer vector with 4
 * activation bytes broadcast to every lane (vpdpbusd, or maddubs + madd), so each lane sums its
 * own row and no horizontal reduction is needed. The weight bytes are read from memory once per
 * tile of QJ activation rows, which is what makes verifying k draft tokens cost about one decode.
 * Activation rows are processed 4 at a time (JU) for independent dependency chains. */
#if !defined(__OPTIMIZE__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include <immintrin.h>
#include <string.h>

#include "kernels/matmul_impl.h"

#define AI static inline __attribute__((always_inline))
#define ES_UNROLL _Pragma("GCC unroll 16")

#define QJ 16 /* activation rows per decode of a super-block group */
#define JU 4  /* activation rows computed side by side */

/* ---- loading and transposing 16 rows ---------------------------------------------------------- */

/* 32 bytes at `off` of each of the 16 rows, transposed: W[k] lane i = bytes 4k..4k+3 of row i.
 * z[i] = [row i | row i+8]; 4x4 dword transposes inside the 128-bit lanes, then a qword permute
 * puts the four lanes of each k in row order. */
AI void load32x16(const uint8_t *const p[16], size_t off, __m512i W[8]) {
    __m512i z[8], u[8];
    ES_UNROLL
    for (int i = 0; i < 8; i++)
        z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p[i] + off))),
                                  _mm256_loadu_si256((const __m256i *)(p[i + 8] + off)), 1);
    ES_UNROLL
    for (int h = 0; h < 2; h++) {
        const __m512i *s = z + 4 * h;
        const __m512i t0 = _mm512_unpacklo_epi32(s[0], s[1]), t1 = _mm512_unpackhi_epi32(s[0], s[1]);
        const __m512i t2 = _mm512_unpacklo_epi32(s[2], s[3]), t3 = _mm512_unpackhi_epi32(s[2], s[3]);
        /* u[4h + k], 128-bit lane L: dword k (L even) or k + 4 (L odd) of rows 4h.. (L < 2) or 4h+8.. */
        u[4 * h + 0] = _mm512_unpacklo_epi64(t0, t2);
        u[4 * h + 1] = _mm512_unpackhi_epi64(t0, t2);
        u[4 * h + 2] = _mm512_unpacklo_epi64(t1, t3);
        u[4 * h + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    const __m512i ilo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), ihi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    ES_UNROLL
    for (int k = 0; k < 4; k++) {
        W[k] = _mm512_permutex2var_epi64(u[k], ilo, u[4 + k]);
        W[k + 4] = _mm512_permutex2var_epi64(u[k], ihi, u[4 + k]);
    }
}

/* 16 bytes at `off` of each of the 16 rows, transposed: u[k] lane i = bytes 4k..4k+3 of row i.
 * z[i] = [row i | i+4 | i+8 | i+12]; one 4x4 dword transpose per 128-bit lane. */
AI void load16x16(const uint8_t *const p[16], size_t off, __m512i u[4]) {
    __m512i z[4];
    ES_UNROLL
    for (int i = 0; i < 4; i++) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(p[i] + off)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(p[i + 4] + off)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(p[i + 8] + off)), 2);
        z[i] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(p[i + 12] + off)), 3);
    }
    const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    u[0] = _mm512_unpacklo_epi64(t0, t2);
    u[1] = _mm512_unpackhi_epi64(t0, t2);
    u[2] = _mm512_unpacklo_epi64(t1, t3);
    u[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* byte k (0..3) of each dword, zero-extended */
AI __m512i byte_of(__m512i v, int k) { return _mm512_and_si512(_mm512_srli_epi32(v, 8 * k), _mm512_set1_epi32(0xff)); }

/* ---- decoded super-blocks ------------------------------------------------------------------- */

/* One super-block of a 16-row group: q[k] lane i = codes of elements 4k..4k+3 of row i. */
typedef struct kq_dec {
    __m512i q[64];
    __m512 sc[16]; /* Q4_K / Q5_K: sub-block scales as f32 (8) */
    __m512 mn[8];  /* Q4_K / Q5_K: sub-block mins as f32 */
    __m512i isc[16]; /* Q6_K: sub-block scales as int32 */
    __m512 d, dmin;
} kq_dec;

/* Q4_K (q5 false) or Q5_K super-block at byte `off` of the 16 rows. */
AI void decode_kx(const uint8_t *const p[16], size_t off, const bool q5, kq_dec *D) {
    __m512i u[4];
    load16x16(p, off, u); /* d | dmin, scales[0..3], scales[4..7], scales[8..11] */
    D->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(u[0]));
    D->dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(u[0], 16)));
    const __m512i m63 = _mm512_set1_epi32(63), m15 = _mm512_set1_epi32(15);
    ES_UNROLL
    for (int s = 0; s < 4; s++) {
        D->sc[s] = _mm512_cvtepi32_ps(_mm512_and_si512(byte_of(u[1], s), m63));
        D->mn[s] = _mm512_cvtepi32_ps(_mm512_and_si512(byte_of(u[2], s), m63));
        const __m512i lo = byte_of(u[3], s);
        const __m512i sc = _mm512_or_si512(_mm512_and_si512(lo, m15), _mm512_slli_epi32(_mm512_srli_epi32(byte_of(u[1], s), 6), 4));
        const __m512i mn = _mm512_or_si512(_mm512_srli_epi32(lo, 4), _mm512_slli_epi32(_mm512_srli_epi32(byte_of(u[2], s), 6), 4));
        D->sc[s + 4] = _mm512_cvtepi32_ps(sc);
        D->mn[s + 4] = _mm512_cvtepi32_ps(mn);
    }
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    __m512i H[8];
    if (q5) load32x16(p, off + 16, H);
    const size_t qoff = off + (q5 ? 48 : 16);
    ES_UNROLL
    for (int c = 0; c < 4; c++) {
        __m512i W[8];
        load32x16(p, qoff + 32 * (size_t)c, W);
        ES_UNROLL
        for (int k = 0; k < 8; k++) {
            __m512i a = _mm512_and_si512(W[k], lo4), b = _mm512_and_si512(_mm512_srli_epi16(W[k], 4), lo4);
            if (q5) { /* bit s of qh byte l is the fifth bit of element 32s + l */
                const __m512i sixteen = _mm512_set1_epi8(16);
                a = _mm512_mask_add_epi8(a, _mm512_test_epi8_mask(H[k], _mm512_set1_epi8((char)(1 << (2 * c)))), a, sixteen);
                b = _mm512_mask_add_epi8(b, _mm512_test_epi8_mask(H[k], _mm512_set1_epi8((char)(1 << (2 * c + 1)))), b, sixteen);
            }
            D->q[16 * c + k] = a;     /* sub-block 2c */
            D->q[16 * c + 8 + k] = b; /* sub-block 2c + 1 */
        }
    }
}

/* Q6_K super-block at byte `off` of the 16 rows. */
AI void decode_q6(const uint8_t *const p[16], size_t off, kq_dec *D) {
    __m512i u[4];
    load16x16(p, off + 192, u); /* the 16 int8 scales */
    ES_UNROLL
    for (int c = 0; c < 16; c++) D->isc[c] = _mm512_srai_epi32(_mm512_slli_epi32(u[c / 4], 24 - 8 * (c % 4)), 24);
    uint16_t h[16];
    ES_UNROLL
    for (int i = 0; i < 16; i++) memcpy(&h[i], p[i] + off + 208, 2);
    D->d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
    const __m512i lo4 = _mm512_set1_epi8(0x0f), hi2 = _mm512_set1_epi8(0x30);
    ES_UNROLL
    for (int hh = 0; hh < 2; hh++) {
        __m512i A[8], B[8], H[8];
        load32x16(p, off + 64 * (size_t)hh, A);
        load32x16(p, off + 64 * (size_t)hh + 32, B);
        load32x16(p, off + 128 + 32 * (size_t)hh, H);
        ES_UNROLL
        for (int k = 0; k < 8; k++) {
            /* element 128hh + 32t + 4k.. : nibble t >> 1 of A (t even) or B (t odd), bits 2t.. of H */
            D->q[32 * hh + k] = _mm512_or_si512(_mm512_and_si512(A[k], lo4), _mm512_and_si512(_mm512_slli_epi16(H[k], 4), hi2));
            D->q[32 * hh + 8 + k] = _mm512_or_si512(_mm512_and_si512(B[k], lo4), _mm512_and_si512(_mm512_slli_epi16(H[k], 2), hi2));
            D->q[32 * hh + 16 + k] =
                _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(A[k], 4), lo4), _mm512_and_si512(H[k], hi2));
            D->q[32 * hh + 24 + k] =
                _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(B[k], 4), lo4), _mm512_and_si512(_mm512_srli_epi16(H[k], 2), hi2));
        }
    }
}

/* ---- dot steps -------------------------------------------------------------------------------- */

/* s + sum over each 4-byte group of u8(a) * s8(4 bytes at p, broadcast), written out so the
 * broadcast is vpdpbusd's memory operand (GCC emits a separate vpbroadcastd otherwise). */
AI __m512i dpbusd_bcast(__m512i s, __m512i a, const int8_t *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(a), "m"(*(const int32_t *)(const void *)p));
    return s;
}

AI __m512i bcast32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* s + the dot of codes q[0..nk) (unsigned) with the activation bytes at x (4 per vector). Exact:
 * maddubs pair sums are at most 2 * 63 * 127 < 2^15. */
AI __m512i dot(__m512i s, const __m512i *q, const int8_t *x, const int nk, const bool vnni) {
    const __m512i ones = _mm512_set1_epi16(1);
    ES_UNROLL
    for (int k = 0; k < nk; k++) {
        if (vnni) s = dpbusd_bcast(s, q[k], x + 4 * k);
        else s = _mm512_add_epi32(s, _mm512_madd_epi16(_mm512_maddubs_epi16(q[k], bcast32(x + 4 * k)), ones));
    }
    return s;
}

/* (float)(v - ES_QX_MAGIC) for an accumulator started from the magic (see matmul_impl.h). */
AI __m512 tofloat(__m512i v) { return _mm512_sub_ps(_mm512_castsi512_ps(v), _mm512_set1_ps(ES_QX_MAGIC_F)); }

/* Q4_K / Q5_K: JN (<= JU) activation rows j0.. of super-block sb, into acc[0..JN). */
AI void kx_step(const kq_dec *D, const es_qx *qx, int64_t sb, int64_t j0, const int JN, const bool vnni, __m512 acc[JU]) {
    const int64_t n = qx->n;
    __m512 a[JU], mn[JU];
    ES_UNROLL
    for (int j = 0; j < JN; j++) a[j] = mn[j] = _mm512_setzero_ps();
    for (int s = 0; s < 8; s++) {
        const int64_t bj = (sb * 8 + s) * n + j0;
        __m512i lo[JU], hi[JU];
        ES_UNROLL
        for (int j = 0; j < JN; j++) {
            /* two chains per row (halves of the block), joined exactly in the integer domain */
            lo[j] = dot(_mm512_set1_epi32(ES_QX_MAGIC), D->q + 8 * s, qx->qs + (bj + j) * 32, 4, vnni);
            hi[j] = dot(_mm512_setzero_si512(), D->q + 8 * s + 4, qx->qs + (bj + j) * 32 + 16, 4, vnni);
        }
        ES_UNROLL
        for (int j = 0; j < JN; j++) {
            const __m512 f = tofloat(_mm512_add_epi32(lo[j], hi[j]));
            a[j] = _mm512_fmadd_ps(f, _mm512_mul_ps(D->sc[s], _mm512_set1_ps(qx->d[bj + j])), a[j]);
            mn[j] = _mm512_fmadd_ps(D->mn[s], _mm512_set1_ps(qx->fs[bj + j]), mn[j]);
        }
    }
    ES_UNROLL
    for (int j = 0; j < JN; j++) {
        acc[j] = _mm512_fmadd_ps(D->d, a[j], acc[j]);
        acc[j] = _mm512_fnmadd_ps(D->dmin, mn[j], acc[j]);
    }
}

/* Q6_K: JN activation rows j0.. of super-block sb, into acc[0..JN). */
AI void q6_step(const kq_dec *D, const es_qx *qx, int64_t sb, int64_t j0, const int JN, const bool vnni, __m512 acc[JU]) {
    const int64_t n = qx->n;
    for (int s = 0; s < 8; s++) {
        const int64_t bj = (sb * 8 + s) * n + j0;
        __m512i lo[JU], hi[JU];
        ES_UNROLL
        for (int j = 0; j < JN; j++) {
            /* each half from -32 * (its activation sum): the codes' offset of 32 */
            lo[j] = dot(_mm512_set1_epi32(qx->k16[2 * (bj + j)]), D->q + 8 * s, qx->qs + (bj + j) * 32, 4, vnni);
            hi[j] = dot(_mm512_set1_epi32(qx->k16[2 * (bj + j) + 1]), D->q + 8 * s + 4, qx->qs + (bj + j) * 32 + 16, 4, vnni);
        }
        ES_UNROLL
        for (int j = 0; j < JN; j++) {
            const __m512i v = _mm512_add_epi32(_mm512_mullo_epi32(D->isc[2 * s], lo[j]), _mm512_mullo_epi32(D->isc[2 * s + 1], hi[j]));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), _mm512_mul_ps(D->d, _mm512_set1_ps(qx->d[bj + j])), acc[j]);
        }
    }
}

/* ---- the row loop --------------------------------------------------------------------------- */

/* type: 0 Q4_K, 1 Q5_K, 2 Q6_K (a constant after inlining). */
AI void kq_rows(const es_mat *w, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1, const int type,
                const bool vnni) {
    const int64_t nsb = w->cols / ES_QK_K, rows = w->rows;
    const size_t bsz = type == 0 ? sizeof(es_block_q4_k) : type == 1 ? sizeof(es_block_q5_k) : sizeof(es_block_q6_k);
    kq_dec D __attribute__((aligned(64)));
    __m512 acc[QJ];
    for (int64_t r = r0; r < r1; r += 16) {
        const uint8_t *p[16];
        for (int i = 0; i < 16; i++)
            p[i] = (const uint8_t *)w->data + (size_t)(r + i < rows ? r + i : rows - 1) * w->row_bytes;
        const int64_t valid = r1 - r < 16 ? r1 - r : 16;
        const __mmask16 mask = (__mmask16)((1u << valid) - 1);
        for (int64_t j0 = 0; j0 < n; j0 += QJ) {
            const int64_t nj = n - j0 < QJ ? n - j0 : QJ;
            for (int j = 0; j < nj; j++) acc[j] = _mm512_setzero_ps();
            for (int64_t sb = 0; sb < nsb; sb++) {
                if (type == 2) decode_q6(p, (size_t)sb * bsz, &D);
                else decode_kx(p, (size_t)sb * bsz, type == 1, &D);
                for (int64_t j = 0; j < nj; j += JU) {
                    __m512 *aj = acc + j;
#define STEP(JN_)                                                                                                   \
    (type == 2 ? q6_step(&D, qx, sb, j0 + j, JN_, vnni, aj) : kx_step(&D, qx, sb, j0 + j, JN_, vnni, aj))
                    switch (nj - j < JU ? nj - j : JU) {
                    case 1: STEP(1); break;
                    case 2: STEP(2); break;
                    case 3: STEP(3); break;
                    default: STEP(4); break;
                    }
#undef STEP
                }
            }
            for (int j = 0; j < nj; j++) _mm512_mask_storeu_ps(y + (j0 + j) * rows + r, mask, acc[j]);
        }
    }
}

#define DEFINE_KQ(name, type, vnni)                                                                                 \
    static void name(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,            \
                     int64_t r1) {                                                                                  \
        kq_rows(w, qx, y, n, r0, r1, type, vnni);                                                                   \
    }
DEFINE_KQ(q4_k_rows_vnni, 0, true)
DEFINE_KQ(q5_k_rows_vnni, 1, true)
DEFINE_KQ(q6_k_rows_vnni, 2, true)
DEFINE_KQ(q4_k_rows_novnni, 0, false)
DEFINE_KQ(q5_k_rows_novnni, 1, false)
DEFINE_KQ(q6_k_rows_novnni, 2, false)

/* The K-quant entries of the AVX-512 tables (matmul_impl.h), merged into es_mm_avx512 /
 * es_mm_avx512_vnni by matmul.c. */
const es_mm_rows_fn es_kq_avx512[3] = {q4_k_rows_novnni, q5_k_rows_novnni, q6_k_rows_novnni};
const es_mm_rows_fn es_kq_avx512_vnni[3] = {q4_k_rows_vnni, q5_k_rows_vnni, q6_k_rows_vnni};

/* ---- the X16 layout (kernels/repack.h) ------------------------------------------------------ */

/* In X16 a super-block of a 16-row group is already in register order: every 64-byte chunk is one
 * vector of 16 rows x 4 codes, the sub-block scales and mins are 16 bytes each (one widening load
 * per vector) and d, dmin 16 fp16 each. So the decode above reduces to a mask, a shift and (Q5_K,
 * Q6_K) an OR of the high bits per vector, done per pass of KJ activation rows instead of through
 * a 4 KB buffer. A pass keeps 5 vectors per activation row live (two dot chains, a, mn, acc), so
 * KJ = 4 fits the 32 registers; more activation rows make more passes over the group, which is in
 * L1/L2 by then. */
#include "kernels/repack.h"

#ifndef KJ_KX
#define KJ_KX 4 /* activation rows per pass, Q4_K / Q5_K */
#endif
#ifndef KJ_Q6
#define KJ_Q6 4 /* Q6_K */
#endif
#define KJ (KJ_KX > KJ_Q6 ? KJ_KX : KJ_Q6)

/* v shifted left by sh bits (right for sh < 0) in 16-bit lanes; sh is a constant after inlining. */
AI __m512i shift16(__m512i v, const int sh) {
    if (sh > 0) return _mm512_slli_epi16(v, (unsigned)sh);
    if (sh < 0) return _mm512_srli_epi16(v, (unsigned)-sh);
    return v;
}

/* a | (b & c) */
AI __m512i or_and(__m512i a, __m512i b, __m512i c) { return _mm512_ternarylogic_epi32(a, b, c, 0xF8); }

/* 16 bytes at p widened to f32 (unsigned or signed). */
AI __m512 u8_ps(const uint8_t *p) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p))); }
AI __m512 i8_ps(const uint8_t *p) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p))); }
AI __m512 f16_ps(const uint8_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

/* Q4_K (q5 false) / Q5_K: y[j][r0..r0+16) for j in [j0, j0+J), one group g of nsb super-blocks. */
AI void kx16_tile(const uint8_t *g, int64_t nsb, const es_qx *qx, int64_t j0, const int J, const bool q5,
                  const bool vnni, __mmask16 mask, float *y, int64_t rows, int64_t r0) {
    const uint32_t type = q5 ? ES_TYPE_Q5_K : ES_TYPE_Q4_K;
    const size_t sbb = es_x16_kq_sb_bytes(type), osc = es_x16_kq_sc(type), om = es_x16_kq_m(type);
    const size_t od = es_x16_kq_d(type), odm = es_x16_kq_dmin(type);
    const int64_t n = qx->n;
    const __m512i lo4 = _mm512_set1_epi8(0x0f), b4 = _mm512_set1_epi8(0x10), ones = _mm512_set1_epi16(1);
    __m512 acc[KJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *p = g + (size_t)sb * sbb;
        if (j0 == 0) es_x16_prefetch(p, sbb);
        __m512 a[KJ], mn[KJ];
        ES_UNROLL
        for (int j = 0; j < J; j++) a[j] = mn[j] = _mm512_setzero_ps();
        ES_UNROLL
        for (int c = 0; c < 4; c++) { /* sub-blocks 2c (low nibbles) and 2c + 1 (high) */
            const int64_t b0 = (sb * 8 + 2 * c) * n + j0, b1 = b0 + n;
            const int8_t *x0 = qx->qs + b0 * 32, *x1 = qx->qs + b1 * 32;
            __m512i s0[KJ], s1[KJ], t0[KJ], t1[KJ];
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                /* the chains start from the magic; es_qx's corr is exactly that for K-quants, and a
                 * broadcast from memory costs no ALU uop where a register copy does */
                s0[j] = _mm512_set1_epi32(qx->corr[b0 + j]);
                s1[j] = _mm512_set1_epi32(qx->corr[b1 + j]);
                t0[j] = t1[j] = _mm512_setzero_si512();
            }
            ES_UNROLL
            for (int k = 0; k < 8; k++) {
                const __m512i u = _mm512_loadu_si512((const void *)(p + 64 * (8 * c + k)));
                __m512i L = _mm512_and_si512(u, lo4), H = _mm512_and_si512(_mm512_srli_epi16(u, 4), lo4);
                if (q5) { /* bit s of the qh chunk: the fifth bit of sub-block s, moved to bit 4 */
                    const __m512i hb = _mm512_loadu_si512((const void *)(p + 64 * (32 + k)));
                    L = or_and(L, shift16(hb, 4 - 2 * c), b4);
                    H = or_and(H, shift16(hb, 3 - 2 * c), b4);
                }
                ES_UNROLL
                for (int j = 0; j < J; j++) {
                    if (vnni) {
                        s0[j] = dpbusd_bcast(s0[j], L, x0 + j * 32 + 4 * k);
                        s1[j] = dpbusd_bcast(s1[j], H, x1 + j * 32 + 4 * k);
                    } else {
                        /* int16 pair sums, exact: 8 steps of codes <= 15 (Q4_K) or 4 of <= 31 (Q5_K)
                         * times |x| <= 127 stay below 2^15 */
                        t0[j] = _mm512_add_epi16(t0[j], _mm512_maddubs_epi16(L, bcast32(x0 + j * 32 + 4 * k)));
                        t1[j] = _mm512_add_epi16(t1[j], _mm512_maddubs_epi16(H, bcast32(x1 + j * 32 + 4 * k)));
                        if (k == 7 || (q5 && k == 3)) {
                            s0[j] = _mm512_add_epi32(s0[j], _mm512_madd_epi16(t0[j], ones));
                            s1[j] = _mm512_add_epi32(s1[j], _mm512_madd_epi16(t1[j], ones));
                            t0[j] = t1[j] = _mm512_setzero_si512();
                        }
                    }
                }
            }
            const __m512 sc0 = u8_ps(p + osc + 32 * c), sc1 = u8_ps(p + osc + 32 * c + 16);
            const __m512 m0 = u8_ps(p + om + 32 * c), m1 = u8_ps(p + om + 32 * c + 16);
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                a[j] = _mm512_fmadd_ps(tofloat(s0[j]), _mm512_mul_ps(sc0, _mm512_set1_ps(qx->d[b0 + j])), a[j]);
                mn[j] = _mm512_fmadd_ps(m0, _mm512_set1_ps(qx->fs[b0 + j]), mn[j]);
                a[j] = _mm512_fmadd_ps(tofloat(s1[j]), _mm512_mul_ps(sc1, _mm512_set1_ps(qx->d[b1 + j])), a[j]);
                mn[j] = _mm512_fmadd_ps(m1, _mm512_set1_ps(qx->fs[b1 + j]), mn[j]);
            }
        }
        const __m512 d = f16_ps(p + od), dmin = f16_ps(p + odm);
        ES_UNROLL
        for (int j = 0; j < J; j++) {
            acc[j] = _mm512_fmadd_ps(d, a[j], acc[j]);
            acc[j] = _mm512_fnmadd_ps(dmin, mn[j], acc[j]);
        }
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) _mm512_mask_storeu_ps(y + (j0 + j) * rows + r0, mask, acc[j]);
}

/* Q6_K: as kx16_tile. Per 32-block the two 16-element halves are separate chains started from
 * -32 * (their activation sum) (the codes' offset); sc * isum is below 2^23 in magnitude and the
 * sum of the two below 2^24, so the f32 products and sum are exact: the int32 v of the contract. */
AI void q6x16_tile(const uint8_t *g, int64_t nsb, const es_qx *qx, int64_t j0, const int J, const bool vnni,
                   __mmask16 mask, float *y, int64_t rows, int64_t r0) {
    const size_t sbb = es_x16_kq_sb_bytes(ES_TYPE_Q6_K), osc = es_x16_kq_sc(ES_TYPE_Q6_K), od = es_x16_kq_d(ES_TYPE_Q6_K);
    const int64_t n = qx->n;
    const __m512i lo4 = _mm512_set1_epi8(0x0f), b45 = _mm512_set1_epi8(0x30), magic = _mm512_set1_epi32(ES_QX_MAGIC);
    const __m512i ones = _mm512_set1_epi16(1);
    __m512 acc[KJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        const uint8_t *p = g + (size_t)sb * sbb;
        if (j0 == 0) es_x16_prefetch(p, sbb);
        const __m512 d = f16_ps(p + od);
        ES_UNROLL
        for (int s = 0; s < 8; s++) {
            const int h = s / 4, t = s % 4;
            const int64_t b = (sb * 8 + s) * n + j0;
            const int8_t *xb = qx->qs + b * 32;
            __m512i sh[2][KJ], tt[KJ];
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                sh[0][j] = _mm512_add_epi32(_mm512_set1_epi32(qx->k16[2 * (b + j)]), magic);
                sh[1][j] = _mm512_add_epi32(_mm512_set1_epi32(qx->k16[2 * (b + j) + 1]), magic);
                tt[j] = _mm512_setzero_si512();
            }
            ES_UNROLL
            for (int k = 0; k < 8; k++) {
                const __m512i u = _mm512_loadu_si512((const void *)(p + 64 * (16 * h + 8 * (t & 1) + k)));
                const __m512i hq = _mm512_loadu_si512((const void *)(p + 64 * (32 + 8 * h + k)));
                const __m512i lo = (t >> 1) ? _mm512_and_si512(_mm512_srli_epi16(u, 4), lo4) : _mm512_and_si512(u, lo4);
                const __m512i q = or_and(lo, shift16(hq, 4 - 2 * t), b45); /* codes 0..63 */
                const int hf = k / 4;
                ES_UNROLL
                for (int j = 0; j < J; j++) {
                    if (vnni) {
                        sh[hf][j] = dpbusd_bcast(sh[hf][j], q, xb + j * 32 + 4 * k);
                    } else { /* two steps of 2 products <= 63 * 127 each stay below 2^15 */
                        tt[j] = _mm512_add_epi16(tt[j], _mm512_maddubs_epi16(q, bcast32(xb + j * 32 + 4 * k)));
                        if (k & 1) {
                            sh[hf][j] = _mm512_add_epi32(sh[hf][j], _mm512_madd_epi16(tt[j], ones));
                            tt[j] = _mm512_setzero_si512();
                        }
                    }
                }
            }
            const __m512 sc0 = i8_ps(p + osc + 32 * s), sc1 = i8_ps(p + osc + 32 * s + 16);
            ES_UNROLL
            for (int j = 0; j < J; j++) {
                const __m512 v = _mm512_fmadd_ps(tofloat(sh[1][j]), sc1, _mm512_mul_ps(tofloat(sh[0][j]), sc0));
                acc[j] = _mm512_fmadd_ps(v, _mm512_mul_ps(d, _mm512_set1_ps(qx->d[b + j])), acc[j]);
            }
        }
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) _mm512_mask_storeu_ps(y + (j0 + j) * rows + r0, mask, acc[j]);
}

/* For batches of qx->kq_decode activation rows or more (ES_KQ_DECODE_ROWS, or never on cores where
 * that lost: kernels/matmul_impl.h), a super-block is decoded once per QJ activation rows into the
 * kq_dec buffer of the file-layout kernels above (cheap here: no transposes) and their dot steps run
 * on it; otherwise the tiles above make passes of KJ rows, which need no buffer. */

AI void decode_kx_x16(const uint8_t *p, const bool q5, kq_dec *D) {
    const uint32_t type = q5 ? ES_TYPE_Q5_K : ES_TYPE_Q4_K;
    const __m512i lo4 = _mm512_set1_epi8(0x0f), b4 = _mm512_set1_epi8(0x10);
    ES_UNROLL
    for (int s = 0; s < 8; s++) {
        D->sc[s] = u8_ps(p + es_x16_kq_sc(type) + 16 * s);
        D->mn[s] = u8_ps(p + es_x16_kq_m(type) + 16 * s);
    }
    D->d = f16_ps(p + es_x16_kq_d(type));
    D->dmin = f16_ps(p + es_x16_kq_dmin(type));
    ES_UNROLL
    for (int c = 0; c < 4; c++) {
        ES_UNROLL
        for (int k = 0; k < 8; k++) {
            const __m512i u = _mm512_loadu_si512((const void *)(p + 64 * (8 * c + k)));
            __m512i L = _mm512_and_si512(u, lo4), H = _mm512_and_si512(_mm512_srli_epi16(u, 4), lo4);
            if (q5) {
                const __m512i hb = _mm512_loadu_si512((const void *)(p + 64 * (32 + k)));
                L = or_and(L, shift16(hb, 4 - 2 * c), b4);
                H = or_and(H, shift16(hb, 3 - 2 * c), b4);
            }
            D->q[16 * c + k] = L;
            D->q[16 * c + 8 + k] = H;
        }
    }
}

AI void decode_q6_x16(const uint8_t *p, kq_dec *D) {
    const __m512i lo4 = _mm512_set1_epi8(0x0f), b45 = _mm512_set1_epi8(0x30);
    ES_UNROLL
    for (int c = 0; c < 16; c++)
        D->isc[c] = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + es_x16_kq_sc(ES_TYPE_Q6_K) + 16 * c)));
    D->d = f16_ps(p + es_x16_kq_d(ES_TYPE_Q6_K));
    ES_UNROLL
    for (int h = 0; h < 2; h++) {
        ES_UNROLL
        for (int k = 0; k < 16; k++) { /* ql chunk 16h + k: blocks 4h + k / 8 (low) and 4h + k / 8 + 2 (high) */
            const int t = k / 8, kk = k % 8;
            const __m512i u = _mm512_loadu_si512((const void *)(p + 64 * (16 * h + k)));
            const __m512i hq = _mm512_loadu_si512((const void *)(p + 64 * (32 + 8 * h + kk)));
            D->q[32 * h + 8 * t + kk] = or_and(_mm512_and_si512(u, lo4), shift16(hq, 4 - 2 * t), b45);
            D->q[32 * h + 8 * (t + 2) + kk] =
                or_and(_mm512_and_si512(_mm512_srli_epi16(u, 4), lo4), shift16(hq, -2 * t), b45);
        }
    }
}

/* The decoded path: as kq_rows, on X16 groups. */
AI void kq_x16_rows_dec(const es_mat *w, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1, const int type,
                        const bool vnni) {
    const int64_t nsb = w->cols / ES_QK_K, rows = w->rows;
    const size_t sbb = es_x16_kq_sb_bytes(w->type), gbytes = es_x16_group_bytes(w->type, qx->nb);
    kq_dec D __attribute__((aligned(64)));
    __m512 acc[QJ];
    for (int64_t r = r0; r < r1; r += 16) {
        const uint8_t *g = (const uint8_t *)w->data + (size_t)(r / 16) * gbytes;
        const int64_t valid = r1 - r < 16 ? r1 - r : 16;
        const __mmask16 mask = (__mmask16)((1u << valid) - 1);
        for (int64_t j0 = 0; j0 < n; j0 += QJ) {
            const int64_t nj = n - j0 < QJ ? n - j0 : QJ;
            for (int j = 0; j < nj; j++) acc[j] = _mm512_setzero_ps();
            for (int64_t sb = 0; sb < nsb; sb++) {
                if (j0 == 0) es_x16_prefetch(g + (size_t)sb * sbb, sbb);
                if (type == 2) decode_q6_x16(g + (size_t)sb * sbb, &D);
                else decode_kx_x16(g + (size_t)sb * sbb, type == 1, &D);
                for (int64_t j = 0; j < nj; j += JU) {
                    __m512 *aj = acc + j;
#define STEP(JN_)                                                                                                   \
    (type == 2 ? q6_step(&D, qx, sb, j0 + j, JN_, vnni, aj) : kx_step(&D, qx, sb, j0 + j, JN_, vnni, aj))
                    switch (nj - j < JU ? nj - j : JU) {
                    case 1: STEP(1); break;
                    case 2: STEP(2); break;
                    case 3: STEP(3); break;
                    default: STEP(4); break;
                    }
#undef STEP
                }
            }
            for (int j = 0; j < nj; j++) _mm512_mask_storeu_ps(y + (j0 + j) * rows + r, mask, acc[j]);
        }
    }
}

/* type: 0 Q4_K, 1 Q5_K, 2 Q6_K. Groups of 16 rows, activation rows in passes of KJ. */
AI void kq_x16_rows(const es_mat *w, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1, const int type,
                    const bool vnni) {
    const int64_t nsb = w->cols / ES_QK_K;
    const size_t gbytes = es_x16_group_bytes(w->type, qx->nb);
    for (int64_t r = r0; r < r1; r += 16) {
        const uint8_t *g = (const uint8_t *)w->data + (size_t)(r / 16) * gbytes;
        const int64_t valid = r1 - r < 16 ? r1 - r : 16;
        const __mmask16 mask = (__mmask16)((1u << valid) - 1);
        const int kj = type == 2 ? KJ_Q6 : KJ_KX;
        for (int64_t j0 = 0; j0 < n; j0 += kj) {
#define KX16(J_)                                                                                                    \
    (type == 2 ? q6x16_tile(g, nsb, qx, j0, J_, vnni, mask, y, w->rows, r)                                          \
               : kx16_tile(g, nsb, qx, j0, J_, type == 1, vnni, mask, y, w->rows, r))
            switch (n - j0 < kj ? n - j0 : kj) {
            case 1: KX16(1); break;
            case 2: KX16(2); break;
            case 3: KX16(3); break;
#if KJ > 4
            case 4: KX16(4); break;
            case 5: KX16(5); break;
            case 6: KX16(6); break;
            case 7: KX16(7); break;
            default: KX16(KJ); break;
#else
            default: KX16(4); break;
#endif
            }
#undef KX16
        }
    }
}

#define DEFINE_KQ_X16(name, type, vnni)                                                                             \
    void name(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1) {     \
        (void)x;                                                                                                    \
        if (qx->kq_decode > 0 && n >= qx->kq_decode) kq_x16_rows_dec(w, qx, y, n, r0, r1, type, vnni);                                          \
        else kq_x16_rows(w, qx, y, n, r0, r1, type, vnni);                                                          \
    }
DEFINE_KQ_X16(es_q4_k_x16_avx512_vnni, 0, true)
DEFINE_KQ_X16(es_q5_k_x16_avx512_vnni, 1, true)
DEFINE_KQ_X16(es_q6_k_x16_avx512_vnni, 2, true)
DEFINE_KQ_X16(es_q4_k_x16_avx512, 0, false)
DEFINE_KQ_X16(es_q5_k_x16_avx512, 1, false)
DEFINE_KQ_X16(es_q6_k_x16_avx512, 2, false)
