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
