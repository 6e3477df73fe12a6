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
 * unsigned and start at -8 * sum(x) (both plus the float-conversion magic of matmul_impl.h).
 * Without VNNI the same is done with maddubs / madd.
 *
 * Measured on the 2-core Cascade Lake this was tuned on: with up to QJ = 16 activation rows per
 * pass the tile loop runs within ~10% of the vpdpbusd throughput bound (one per cycle), so a
 * 16-token verification costs what its multiply-adds cost and no more; the weight transposes, the
 * scales and the float epilogue ride on port 5 next to it. */
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

/* Column reduction of 16 vectors: lane b of the result combines all 16 lanes of v[b] (op is max
 * or add, both exact here, so the order does not matter). Four butterfly levels, 45 operations for
 * 16 blocks instead of a 9-operation horizontal reduction per block. */
#define REDUCE16(T, op, unlo, unhi, unlo64, unhi64, shuf, v, out)                                                \
    do {                                                                                                         \
        T t_[8], u_[4], c0_, c1_;                                                                                \
        ES_UNROLL                                                                                                \
        for (int i_ = 0; i_ < 8; i_++) t_[i_] = op(unlo(v[2 * i_], v[2 * i_ + 1]), unhi(v[2 * i_], v[2 * i_ + 1])); \
        ES_UNROLL                                                                                                \
        for (int i_ = 0; i_ < 4; i_++)                                                                           \
            u_[i_] = op(unlo64(t_[2 * i_], t_[2 * i_ + 1]), unhi64(t_[2 * i_], t_[2 * i_ + 1]));                  \
        c0_ = op(shuf(u_[0], u_[1], 0x88), shuf(u_[0], u_[1], 0xdd));                                            \
        c1_ = op(shuf(u_[2], u_[3], 0x88), shuf(u_[2], u_[3], 0xdd));                                            \
        out = op(shuf(c0_, c1_, 0x88), shuf(c0_, c1_, 0xdd));                                                    \
    } while (0)

AI __m512 unlo64_ps(__m512 a, __m512 b) { return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); }
AI __m512 unhi64_ps(__m512 a, __m512 b) { return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); }
#define shuf_ps(a, b, imm) _mm512_shuffle_f32x4(a, b, imm)
#define shuf_si(a, b, imm) _mm512_shuffle_i32x4(a, b, imm)

/* One block, the plain way (row tails shorter than 16 blocks). */
/* x · id rounded half to even (as nearbyintf), as int32; a lane outside [-127, 127] (only a NaN,
 * an Inf or an overflowing id gets there) is 0, as the reference's guard says. */
AI __m512i quant16(__m512 x, __m512 vid) {
    const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(x, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 lim = _mm512_set1_ps(127.0f);
    const __mmask16 in = _mm512_cmp_ps_mask(r, lim, _CMP_LE_OQ) & _mm512_cmp_ps_mask(r, _mm512_sub_ps(_mm512_setzero_ps(), lim), _CMP_GE_OQ);
    return _mm512_maskz_cvtps_epi32(in, r);
}

/* max|x| of a block: vmaxps(|x|, m) returns m for a NaN lane, so a NaN is skipped as fmaxf skips it */
AI __m512 absmax32(const float *xb) {
    return _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xb + 16)), _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xb)), _mm512_setzero_ps()));
}

AI void quant_block(const float *xb, int32_t c, int8_t *qs, float *d, int32_t *corr) {
    __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
    const float amax = _mm512_reduce_max_ps(absmax32(xb));
    const float db = amax / 127.0f, id = db != 0.0f ? 1.0f / db : 0.0f;
    const __m512 vid = _mm512_set1_ps(id);
    __m512i i0 = quant16(v0, vid), i1 = quant16(v1, vid);
    const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    _mm_storeu_si128((__m128i *)qs, _mm512_cvtsepi32_epi8(i0));
    _mm_storeu_si128((__m128i *)(qs + 16), _mm512_cvtsepi32_epi8(i1));
    *d = db;
    *corr = ES_QX_MAGIC - c * sum;
}

/* 16 blocks at once: the per-block maxima and sums are reduced 16 at a time and the two divisions
 * are vector divisions, which is what made the one-block version slow. Same arithmetic. */
static void quant_row_avx512(const float *x, int64_t nb, int64_t stride, int32_t c, int8_t *qs, float *d,
                             int32_t *corr) {
    int64_t b = 0;
    for (; b + 16 <= nb; b += 16) {
        const float *xb = x + b * 32;
        __m512 m[16];
        ES_UNROLL
        for (int i = 0; i < 16; i++)
            m[i] = absmax32(xb + 32 * i);
        __m512 amax;
        REDUCE16(__m512, _mm512_max_ps, _mm512_unpacklo_ps, _mm512_unpackhi_ps, unlo64_ps, unhi64_ps, shuf_ps, m, amax);
        const __m512 db = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
        const __mmask16 nz = _mm512_cmp_ps_mask(db, _mm512_setzero_ps(), _CMP_NEQ_OQ);
        const __m512 id = _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), db);
        float idb[16];
        _mm512_storeu_ps(idb, id);
        __m512i sv[16];
        ES_UNROLL
        for (int i = 0; i < 16; i++) {
            const __m512 vid = _mm512_set1_ps(idb[i]);
            const __m512i i0 = quant16(_mm512_loadu_ps(xb + 32 * i), vid);
            const __m512i i1 = quant16(_mm512_loadu_ps(xb + 32 * i + 16), vid);
            sv[i] = _mm512_add_epi32(i0, i1);
            int8_t *q = qs + (b + i) * stride * 32;
            _mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(i0));
            _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(i1));
        }
        __m512i sum;
        REDUCE16(__m512i, _mm512_add_epi32, _mm512_unpacklo_epi32, _mm512_unpackhi_epi32, _mm512_unpacklo_epi64,
                 _mm512_unpackhi_epi64, shuf_si, sv, sum);
        const __m512i cv = _mm512_sub_epi32(_mm512_set1_epi32(ES_QX_MAGIC), _mm512_mullo_epi32(sum, _mm512_set1_epi32(c)));
        if (stride == 1) {
            _mm512_storeu_ps(d + b, db);
            _mm512_storeu_si512(corr + b, cv);
        } else {
            float dd[16];
            int32_t cc[16];
            _mm512_storeu_ps(dd, db);
            _mm512_storeu_si512(cc, cv);
            for (int i = 0; i < 16; i++) {
                d[(b + i) * stride] = dd[i];
                corr[(b + i) * stride] = cc[i];
            }
        }
    }
    for (; b < nb; b++) quant_block(x + b * 32, c, qs + b * stride * 32, d + b * stride, corr + b * stride);
}

/* Q8_K for the K-quants, as quant_row_q8k_ref (matmul.c) bit for bit (see quant_row_k_avx2 for
 * why each step matches): vmaxps(|x|, m) skips NaN like fmaxf; iscale and dx in scalar; the
 * product, + and - 1.5 * 2^23 unfused; lanes outside [-127, 127] masked to 0 in the conversion. The
 * 16 half-block sums of a super-block are reduced together (REDUCE16, lane 2i = block i's first
 * half, 2i + 1 its second). */
static void quant_row_k_avx512(const float *x, int64_t nb, int64_t stride, int8_t *qs, float *d, int32_t *corr,
                               float *fs, int32_t *k16) {
    const __m512 magic = _mm512_set1_ps(12582912.0f), lim = _mm512_set1_ps(127.0f);
    for (int64_t sb = 0; sb < nb / 8; sb++) {
        const float *xs = x + sb * 256;
        __m512 m[4];
        ES_UNROLL
        for (int k = 0; k < 4; k++) m[k] = _mm512_setzero_ps();
        ES_UNROLL
        for (int k = 0; k < 16; k++) m[k & 3] = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xs + 16 * k)), m[k & 3]);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m[0], m[1]), _mm512_max_ps(m[2], m[3])));
        const float iscale = amax != 0.0f ? 127.0f / amax : 0.0f, db = amax != 0.0f ? 1.0f / iscale : 0.0f;
        const __m512 vis = _mm512_set1_ps(iscale);
        __m512i sv[16];
        ES_UNROLL
        for (int k = 0; k < 16; k++) {
            const __m512 p = _mm512_mul_ps(_mm512_loadu_ps(xs + 16 * k), vis);
            const __m512 v = _mm512_sub_ps(_mm512_add_ps(p, magic), magic);
            const __mmask16 in = _mm512_cmp_ps_mask(_mm512_abs_ps(v), lim, _CMP_LE_OQ); /* false for NaN */
            sv[k] = _mm512_maskz_cvttps_epi32(in, v);
            _mm_storeu_si128((__m128i *)(qs + (sb * 8 + k / 2) * stride * 32 + 16 * (k & 1)), _mm512_cvtsepi32_epi8(sv[k]));
        }
        __m512i sum;
        REDUCE16(__m512i, _mm512_add_epi32, _mm512_unpacklo_epi32, _mm512_unpackhi_epi32, _mm512_unpacklo_epi64,
                 _mm512_unpackhi_epi64, shuf_si, sv, sum);
        int32_t h[16];
        _mm512_storeu_si512(h, sum);
        for (int i = 0; i < 8; i++) {
            const int64_t o = (sb * 8 + i) * stride;
            d[o] = db;
            corr[o] = ES_QX_MAGIC;
            fs[o] = db * (float)(h[2 * i] + h[2 * i + 1]);
            k16[2 * o] = -32 * h[2 * i];
            k16[2 * o + 1] = -32 * h[2 * i + 1];
        }
    }
}

/* ---- int8 kernels --------------------------------------------------------------------------- */

#define QJ 16       /* activation rows per pass over a row group (VNNI) */
#define QJ_NOVNNI 4 /* the maddubs path needs more registers */

/* s + sum over each 4-byte group of u8(a) * s8(4 bytes at p, broadcast). GCC does not fold the
 * broadcast into vpdpbusd's m32bcst operand by itself (it emits a separate vpbroadcastd), and the
 * front end is a bottleneck of the tile loop, so the instruction is written out. */
AI __m512i dpbusd_bcast(__m512i s, __m512i a, const int8_t *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(a), "m"(*(const int32_t *)(const void *)p));
    return s;
}

/* (float)(v - ES_QX_MAGIC) for an accumulator started from the magic (see matmul_impl.h). */
AI __m512 tofloat(__m512i v) { return _mm512_sub_ps(_mm512_castsi512_ps(v), _mm512_set1_ps(ES_QX_MAGIC_F)); }

AI __m512i bcast32(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* A group of 16 consecutive rows. Full groups are addressed as base + i * rb (a few registers; an
 * array of 16 pointers would be reloaded from the stack every block). The last, partial group uses
 * the pointer array, rows past the end repeating the last real one (their lanes are computed and
 * not stored). */
typedef struct grp16 {
    const uint8_t *base;
    bool next_in_chunk; /* the next group belongs to this thread's chunk too (prefetch it) */
    size_t rb, rb3, rb4;
    const uint8_t *rp[16];
    __mmask16 mask;
} grp16;

static void grp16_init(grp16 *g, const es_mat *w, int64_t r0, int64_t r1) {
    g->base = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    g->rb = w->row_bytes;
    g->rb3 = 3 * w->row_bytes;
    g->rb4 = 4 * w->row_bytes;
    for (int i = 0; i < 16; i++) {
        int64_t r = r0 + i < w->rows ? r0 + i : w->rows - 1;
        g->rp[i] = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
    }
    const int64_t valid = r1 - r0 < 16 ? r1 - r0 : 16;
    g->mask = (__mmask16)((1u << valid) - 1);
    g->next_in_chunk = r0 + 32 <= r1;
}

/* Byte `off` of each of the 16 rows: p[i]. */
AI void rows16(const grp16 *g, size_t off, const bool tail, const uint8_t *p[16]) {
    if (tail) {
        ES_UNROLL
        for (int i = 0; i < 16; i++) p[i] = g->rp[i] + off;
        return;
    }
    const uint8_t *q = g->base + off;
    /* opaque to the optimiser: otherwise it turns the 16 addresses into 16 induction variables,
     * which do not fit in registers and are reloaded from the stack every block */
    __asm__("" : "+r"(q));
    ES_UNROLL
    for (int m = 0; m < 4; m++) {
        p[4 * m] = q;
        p[4 * m + 1] = q + g->rb;
        p[4 * m + 2] = q + 2 * g->rb;
        p[4 * m + 3] = q + g->rb3;
        q += g->rb4;
    }
}

/* While block b of a group is computed, prefetches the matching 1/nb of the next group (16 rows,
 * contiguous) into L2, front to back. The group walks 16 rows side by side, which the hardware
 * prefetcher follows well for long rows but poorly for short ones (2048 columns: 34 KB per group,
 * half a page per row): this linear stream ahead of it took such matrices from 7 to 11 GB/s on
 * one core and costs nothing measurable elsewhere. Not past the end of the chunk: the next rows
 * belong to another thread (fetching them twice wastes bandwidth). */
AI void prefetch_next(const grp16 *g, int64_t b, const size_t block_bytes, const bool tail) {
    if (tail || !g->next_in_chunk) return;
    const char *next = (const char *)(g->base + 16 * g->rb) + (size_t)b * block_bytes * 16;
    ES_UNROLL
    for (size_t o = 0; o < block_bytes * 16; o += 64) _mm_prefetch(next + o, _MM_HINT_T1);
}

/* The 16 fp16 block scales at p[i] as f32. Not vpgatherdd: with the gather data sampling
 * mitigation a gather costs more than the rest of the block; scalar loads combined in general
 * registers use ports the vector work leaves idle. */
AI __m512 scales16(const uint8_t *const p[16]) {
    uint16_t h[16];
    ES_UNROLL
    for (int i = 0; i < 16; i++) memcpy(&h[i], p[i], 2);
    /* (written out: the lane index must be a constant even in unoptimised builds) */
#define INS8(v, o)                                                                                                 \
    v = _mm_insert_epi16(v, h[(o) + 1], 1), v = _mm_insert_epi16(v, h[(o) + 2], 2),                               \
    v = _mm_insert_epi16(v, h[(o) + 3], 3), v = _mm_insert_epi16(v, h[(o) + 4], 4),                               \
    v = _mm_insert_epi16(v, h[(o) + 5], 5), v = _mm_insert_epi16(v, h[(o) + 6], 6),                               \
    v = _mm_insert_epi16(v, h[(o) + 7], 7)
    __m128i lo = _mm_cvtsi32_si128(h[0]), hi = _mm_cvtsi32_si128(h[8]);
    INS8(lo, 0);
    INS8(hi, 8);
#undef INS8
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

/* Loads the 32 quant bytes at byte `off` of 16 rows and transposes them: W[k] lane i = bytes
 * 4k..4k+3 of row i. z[i] = [row i | row i+8]; a 4x4 transpose inside each 128-bit lane and a
 * lane permute finish the job. */
AI void load_q8_16(const uint8_t *const p[16], size_t off, __m512i W[8]) {
    __m512i z[8];
    ES_UNROLL
    for (int i = 0; i < 8; i++)
        z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p[i] + off))),
                                  _mm256_loadu_si256((const __m256i *)(p[i + 8] + off)), 1);
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
AI void load_q4_16(const uint8_t *const p[16], size_t off, __m512i L[4], __m512i H[4]) {
    __m512i z[4];
    ES_UNROLL
    for (int i = 0; i < 4; i++) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(p[i] + off)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(p[i + 4] + off)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(p[i + 8] + off)), 2);
        z[i] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(p[i + 12] + off)), 3);
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

/* One block's exact integer dots for J activation rows, the arithmetic of matmul_impl.h, shared by
 * the file-layout and the X16 tiles. jb0: the block's index in qx of activation row j0 (row j0 + j
 * follows at jb0 + j). s[j] comes back ready for tofloat. k outer, j inner: J independent dependency
 * chains side by side for the pipeline. */

/* Q8_0: W[k] = bytes 4k..4k+3 of the 16 rows' quants, as loaded (changed in place). */
AI void q8_block(__m512i W[8], const es_qx *qx, int64_t jb0, const int J, const bool vnni, __m512i s[]) {
    const __m512i ones = _mm512_set1_epi16(1), bias = _mm512_set1_epi8((char)0x80), magic = _mm512_set1_epi32(ES_QX_MAGIC);
    __m512i A[8];
    ES_UNROLL
    for (int k = 0; k < 8; k++) {
        if (vnni) W[k] = _mm512_xor_si512(W[k], bias); /* w + 128 as unsigned */
        else A[k] = _mm512_abs_epi8(W[k]);
    }
    const int8_t *xb = qx->qs + jb0 * 32;
    ES_UNROLL
    for (int j = 0; j < J; j++) s[j] = vnni ? _mm512_set1_epi32(qx->corr[jb0 + j]) : magic;
    ES_UNROLL
    for (int k = 0; k < 8; k++) {
        const __mmask64 neg = vnni ? 0 : _mm512_movepi8_mask(W[k]);
        ES_UNROLL
        for (int j = 0; j < J; j++) {
            if (vnni) {
                s[j] = dpbusd_bcast(s[j], W[k], xb + j * 32 + 4 * k); /* sum (w + 128) x, from magic - 128 sum x */
            } else {
                __m512i xv = bcast32(xb + j * 32 + 4 * k);
                /* x * sign(w): negate x where w < 0 (w == 0 is multiplied by |w| = 0) */
                xv = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
                s[j] = _mm512_add_epi32(s[j], _mm512_madd_epi16(_mm512_maddubs_epi16(A[k], xv), ones));
            }
        }
    }
}

/* Q4_0 (q5 false) / Q5_0: L[k] / H[k] = elements 4k..4k+3 / 16+4k.. of the 16 rows as unsigned
 * codes (nibbles, or 0..31 with the fifth bit); the -8 (-16) comes in through the correction. */
AI void q4_block(const __m512i L[4], const __m512i H[4], const es_qx *qx, int64_t jb0, const int J, const bool vnni,
                 const bool q5, __m512i s[]) {
    const __m512i ones = _mm512_set1_epi16(1);
    const int8_t *xb = qx->qs + jb0 * 32;
    __m512i t[QJ]; /* non-VNNI Q5_0: the int16 sums of half a block */
    ES_UNROLL
    for (int j = 0; j < J; j++) {
        /* VNNI: -8 (-16) * sum(x) + magic; without: int16 sums first, Q5_0's in two halves */
        s[j] = vnni || q5 ? _mm512_set1_epi32(qx->corr[jb0 + j]) : _mm512_setzero_si512();
        t[j] = _mm512_setzero_si512();
    }
    ES_UNROLL
    for (int k = 0; k < 4; k++) {
        ES_UNROLL
        for (int j = 0; j < J; j++) {
            const int8_t *xj = xb + j * 32;
            if (vnni) {
                s[j] = dpbusd_bcast(s[j], L[k], xj + 4 * k);
                s[j] = dpbusd_bcast(s[j], H[k], xj + 16 + 4 * k);
            } else if (!q5) {
                /* int16 pair sums <= 2*15*127: all eight of a block fit in int16 */
                s[j] = _mm512_add_epi16(s[j], _mm512_maddubs_epi16(L[k], bcast32(xj + 4 * k)));
                s[j] = _mm512_add_epi16(s[j], _mm512_maddubs_epi16(H[k], bcast32(xj + 16 + 4 * k)));
            } else {
                /* pair sums <= 2*31*127: four fit in int16, so the block goes in two halves */
                t[j] = _mm512_add_epi16(t[j], _mm512_maddubs_epi16(L[k], bcast32(xj + 4 * k)));
                t[j] = _mm512_add_epi16(t[j], _mm512_maddubs_epi16(H[k], bcast32(xj + 16 + 4 * k)));
                if (k & 1) {
                    s[j] = _mm512_add_epi32(s[j], _mm512_madd_epi16(t[j], ones));
                    t[j] = _mm512_setzero_si512();
                }
            }
        }
    }
    if (!vnni && !q5) {
        ES_UNROLL
        for (int j = 0; j < J; j++)
            s[j] = _mm512_add_epi32(_mm512_madd_epi16(s[j], ones), _mm512_set1_epi32(qx->corr[jb0 + j]));
    }
}

/* acc[j] += (float)dot_j * (dw * dx_j): the one rounding per block of the contract. */
AI void block_acc(__m512 acc[], const __m512i s[], __m512 dw, const es_qx *qx, int64_t jb0, const int J) {
    ES_UNROLL
    for (int j = 0; j < J; j++) {
        const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(qx->d[jb0 + j]));
        acc[j] = _mm512_fmadd_ps(tofloat(s[j]), sc, acc[j]);
    }
}

/* y[j][r0..r0+16) for j in [j0, j0+J), Q8_0 weights. */
AI void q8_tile(const grp16 *g, const es_qx *qx, int64_t cols, int64_t j0, const int J, const bool vnni,
                const bool tail, float *y, int64_t rows, int64_t r0) {
    __m512 acc[QJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < qx->nb; b++) {
        const size_t off = (size_t)b * sizeof(es_block_q8_0);
        __m512i W[8], s[QJ];
        const uint8_t *p[16];
        rows16(g, off, tail, p);
        prefetch_next(g, b, sizeof(es_block_q8_0), tail);
        load_q8_16(p, 2, W);
        const int64_t jb0 = b * qx->n + j0;
        q8_block(W, qx, jb0, J, vnni, s);
        block_acc(acc, s, scales16(p), qx, jb0, J);
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) _mm512_mask_storeu_ps(y + (j0 + j) * rows + r0, g->mask, acc[j]);
}

/* y[j][r0..r0+16) for j in [j0, j0+J), Q4_0 weights (nibbles unsigned, -8 via the correction). */
AI void q4_tile(const grp16 *g, const es_qx *qx, int64_t cols, int64_t j0, const int J, const bool vnni,
                const bool tail, float *y, int64_t rows, int64_t r0) {
    __m512 acc[QJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < qx->nb; b++) {
        const size_t off = (size_t)b * sizeof(es_block_q4_0);
        __m512i L[4], H[4], s[QJ];
        const uint8_t *p[16];
        rows16(g, off, tail, p);
        prefetch_next(g, b, sizeof(es_block_q4_0), tail);
        load_q4_16(p, 2, L, H);
        const int64_t jb0 = b * qx->n + j0;
        q4_block(L, H, qx, jb0, J, vnni, false, s);
        block_acc(acc, s, scales16(p), qx, jb0, J);
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) _mm512_mask_storeu_ps(y + (j0 + j) * rows + r0, g->mask, acc[j]);
}

/* Instantiates the row loop of a tile kernel for a fixed vnni flag, J = 1..qj. */
#define TILE_CASE(tile, vnni, qj, tail, J_)                                                                       \
    case J_: tile(&g, qx, w->cols, j0, J_ <= qj ? J_ : 1, vnni, tail, y, w->rows, r); break;
#define TILE_SWITCH(tile, vnni, qj, tail)                                                                         \
    for (int64_t j0 = 0; j0 < n; j0 += qj) {                                                                     \
        switch (n - j0 < qj ? n - j0 : qj) {                                                                     \
            TILE_CASE(tile, vnni, qj, tail, 1) TILE_CASE(tile, vnni, qj, tail, 2)                                 \
            TILE_CASE(tile, vnni, qj, tail, 3) TILE_CASE(tile, vnni, qj, tail, 4)                                 \
            TILE_CASE(tile, vnni, qj, tail, 5) TILE_CASE(tile, vnni, qj, tail, 6)                                 \
            TILE_CASE(tile, vnni, qj, tail, 7) TILE_CASE(tile, vnni, qj, tail, 8)                                 \
            TILE_CASE(tile, vnni, qj, tail, 9) TILE_CASE(tile, vnni, qj, tail, 10)                                \
            TILE_CASE(tile, vnni, qj, tail, 11) TILE_CASE(tile, vnni, qj, tail, 12)                               \
            TILE_CASE(tile, vnni, qj, tail, 13) TILE_CASE(tile, vnni, qj, tail, 14)                               \
            TILE_CASE(tile, vnni, qj, tail, 15)                                                                  \
        default: tile(&g, qx, w->cols, j0, 16 <= qj ? 16 : 1, vnni, tail, y, w->rows, r); break;                 \
        }                                                                                                        \
    }

#define DEFINE_ROWS(name, tile, vnni, qj)                                                                         \
    static void name(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,         \
                     int64_t r1) {                                                                               \
        for (int64_t r = r0; r < r1; r += 16) {                                                                  \
            grp16 g;                                                                                             \
            grp16_init(&g, w, r, r1);                                                                            \
            if (r + 16 <= w->rows) {                                                                             \
                TILE_SWITCH(tile, vnni, qj, false)                                                               \
            } else {                                                                                             \
                TILE_SWITCH(tile, vnni, qj, true)                                                                \
            }                                                                                                    \
        }                                                                                                        \
    }

DEFINE_ROWS(q8_0_rows_vnni, q8_tile, true, QJ)
DEFINE_ROWS(q4_0_rows_vnni, q4_tile, true, QJ)
DEFINE_ROWS(q8_0_rows_novnni, q8_tile, false, QJ_NOVNNI)
DEFINE_ROWS(q4_0_rows_novnni, q4_tile, false, QJ_NOVNNI)

/* ---- int8 kernels on the X16 layout (kernels/repack.h) ------------------------------------- */

/* A group's block is 8 (Q8_0) or 4 (Q4_0) plain 64-byte loads already in the W[k] order of the
 * kernels above, and its 16 scales one 32-byte load: no shuffles, one linear stream per group.
 * Without the transposes there is little to amortise per block, so a pass takes at most XJ = 8
 * activation rows (the 8 weight vectors, 8 sums and 8 accumulators fit in the 32 registers with no
 * spills) and larger batches make more passes over the group, which is in L2 by then (a group of
 * 16 rows is at most ~100 KB for the shapes we serve). */
#define XJ 8

/* Q5_0: ORs the fifth bits into a block's nibble vectors, from the bit-plane chunk after them
 * (repack.h): vector v's bits are bit v of each byte, moved to bit 4 by a 16-bit shift (which
 * stays within the byte for the bit that is kept) and selected by one ternary-logic op. */
AI void q5_fifth_bits(const uint8_t *q, __m512i L[4], __m512i H[4]) {
    const __m512i hb = _mm512_loadu_si512((const void *)(q + 256)), b4 = _mm512_set1_epi8(0x10);
    ES_UNROLL
    for (int k = 0; k < 4; k++) { /* L[k] is plane k (shift left 4 - k), H[k] plane 4 + k (right k) */
        const __m512i l = _mm512_slli_epi16(hb, (unsigned)(4 - k));
        const __m512i h = k ? _mm512_srli_epi16(hb, (unsigned)k) : hb;
        L[k] = _mm512_ternarylogic_epi32(L[k], l, b4, 0xF8); /* L | (l & b4) */
        H[k] = _mm512_ternarylogic_epi32(H[k], h, b4, 0xF8);
    }
}

/* y[j][r0..r0+16) for j in [j0, j0+J), one group of an X16 matrix. gq: the group's quants, gs: its
 * scales. */
AI void x16_tile(const uint8_t *gq, const uint8_t *gs, const es_qx *qx, int64_t j0, const int J, const bool q8,
                 const bool q5, const bool vnni, const bool pf, __mmask16 mask, float *y, int64_t rows, int64_t r0) {
    const size_t qb = es_x16_qbytes(q8 ? ES_TYPE_Q8_0 : q5 ? ES_TYPE_Q5_0 : ES_TYPE_Q4_0);
    const __m512i lo4 = _mm512_set1_epi8(0x0f);
    __m512 acc[XJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < qx->nb; b++) {
        const uint8_t *q = gq + (size_t)b * qb;
        const int64_t jb0 = b * qx->n + j0;
        if (pf) es_x16_prefetch(q, qb);
        __m512i s[XJ];
        if (q8) {
            __m512i W[8];
            ES_UNROLL
            for (int k = 0; k < 8; k++) W[k] = _mm512_loadu_si512((const void *)(q + 64 * k));
            q8_block(W, qx, jb0, J, vnni, s);
        } else {
            __m512i L[4], H[4];
            ES_UNROLL
            for (int k = 0; k < 4; k++) {
                const __m512i u = _mm512_loadu_si512((const void *)(q + 64 * k));
                L[k] = _mm512_and_si512(u, lo4);
                H[k] = _mm512_and_si512(_mm512_srli_epi16(u, 4), lo4);
            }
            if (q5) q5_fifth_bits(q, L, H);
            q4_block(L, H, qx, jb0, J, vnni, q5, s);
        }
        block_acc(acc, s, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gs + (size_t)b * 32))), qx, jb0, J);
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) _mm512_mask_storeu_ps(y + (j0 + j) * rows + r0, mask, acc[j]);
}

/* y[j][r0..r0+16) for J = 9..16 activation rows from j0 (VNNI only): four rows' sums at a time,
 * each folded into its accumulator at once, so the group's 8 weight vectors, 16 accumulators and 4
 * sums fit the 32 registers. One pass then covers a 9..16-row remainder (a typical verification
 * batch): the group's weights stream from DRAM once while all its rows are computed, instead of a
 * DRAM-bound 8-row pass and a second one from L2. Before the software prefetch (es_x16_prefetch)
 * only 12-15 rows gained (2048 x 5632, 2 threads: 12 rows 0.90 vs 1.03 ms); with it the stream
 * overlaps the compute and a TinyLlama Q8_0 verification of 9-11 tokens takes 66-68 ms in one pass
 * against 88-102 ms in two, of 16 tokens 81-112 against 105-164 ms (interleaved runs, the one pass
 * faster in each). The integer sums are exact in any order: the bits equal the 8-row tiles'. */
AI void x16_tile16(const uint8_t *gq, const uint8_t *gs, const es_qx *qx, int64_t j0, const int J, const bool q8,
                   const bool q5, const bool pf, __mmask16 mask, float *y, int64_t rows, int64_t r0) {
    const size_t qb = es_x16_qbytes(q8 ? ES_TYPE_Q8_0 : q5 ? ES_TYPE_Q5_0 : ES_TYPE_Q4_0);
    const __m512i lo4 = _mm512_set1_epi8(0x0f), bias = _mm512_set1_epi8((char)0x80);
    __m512 acc[16];
    ES_UNROLL
    for (int j = 0; j < J; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < qx->nb; b++) {
        const uint8_t *q = gq + (size_t)b * qb;
        const int64_t jb0 = b * qx->n + j0;
        if (pf) es_x16_prefetch(q, qb);
        __m512i W[8];
        if (q8) {
            ES_UNROLL
            for (int k = 0; k < 8; k++) W[k] = _mm512_xor_si512(_mm512_loadu_si512((const void *)(q + 64 * k)), bias);
        } else {
            ES_UNROLL
            for (int k = 0; k < 4; k++) {
                const __m512i u = _mm512_loadu_si512((const void *)(q + 64 * k));
                W[k] = _mm512_and_si512(u, lo4);
                W[4 + k] = _mm512_and_si512(_mm512_srli_epi16(u, 4), lo4);
            }
            if (q5) q5_fifth_bits(q, W, W + 4);
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(gs + (size_t)b * 32)));
        const int8_t *xb = qx->qs + jb0 * 32;
        ES_UNROLL
        for (int j4 = 0; j4 < J; j4 += 4) { /* four independent sums at a time for the pipeline */
            const int U = J - j4 < 4 ? J - j4 : 4;
            __m512i sj[4];
            ES_UNROLL
            for (int u = 0; u < U; u++) sj[u] = _mm512_set1_epi32(qx->corr[jb0 + j4 + u]);
            ES_UNROLL
            for (int k = 0; k < 4; k++) { /* W[k]: elements 4k..4k+3, W[4 + k]: 16 + 4k.. (both types) */
                ES_UNROLL
                for (int u = 0; u < U; u++) sj[u] = dpbusd_bcast(sj[u], W[k], xb + (j4 + u) * 32 + 4 * k);
                ES_UNROLL
                for (int u = 0; u < U; u++) sj[u] = dpbusd_bcast(sj[u], W[4 + k], xb + (j4 + u) * 32 + 16 + 4 * k);
            }
            ES_UNROLL
            for (int u = 0; u < U; u++)
                acc[j4 + u] = _mm512_fmadd_ps(tofloat(sj[u]), _mm512_mul_ps(dw, _mm512_set1_ps(qx->d[jb0 + j4 + u])),
                                              acc[j4 + u]);
        }
    }
    ES_UNROLL
    for (int j = 0; j < J; j++) _mm512_mask_storeu_ps(y + (j0 + j) * rows + r0, mask, acc[j]);
}

#define X16_CASE16(q8, J_)                                                                                        \
    case J_: x16_tile16(gq, gs, qx, j0, J_, q8, q5, pf, mask, y, w->rows, r); break;

#define X16_CASE(q8, vnni, J_)                                                                                     \
    case J_: x16_tile(gq, gs, qx, j0, J_, q8, q5, vnni, pf, mask, y, w->rows, r); break;

/* Groups of weight rows taken together when the activations outgrow L2 (XG_ACT_BYTES of int8
 * rows): each pass's XJ activation rows are used against XG groups (64 weight rows, ~380 KB of an
 * FFN matrix, held in L2) before moving on, so a prefill of hundreds of rows streams its activations
 * from L3 once per XG groups instead of once per group (measured: 512 rows x 5632 columns 12 %
 * faster on one core). Smaller batches keep one group per sweep, which measured faster for them. */
#define XG 4
#define XG_ACT_BYTES (256 << 10)

#define DEFINE_X16_ROWS(name, q8, q5_, vnni)                                                                           \
    static void name(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,         \
                     int64_t r1) {                                                                               \
        const bool q5 = q5_;                                                                                     \
        const int64_t nb = qx->nb;                                                                               \
        const size_t gbytes = es_x16_group_bytes(w->type, nb), qb = es_x16_qbytes(w->type);                      \
        const int64_t xg = n * qx->nb * 32 > XG_ACT_BYTES ? XG : 1;                                              \
        for (int64_t rb = r0; rb < r1; rb += 16 * xg) {                                                          \
            const int64_t re = r1 - rb < 16 * xg ? r1 : rb + 16 * xg;                                            \
            for (int64_t j0 = 0, step; j0 < n; j0 += step) {                                                     \
                step = vnni && n - j0 >= 9 && n - j0 <= 16 ? n - j0 : XJ;                                        \
                /* a group's first pass streams it from DRAM (prefill sweeps: compute-bound) */                  \
                const bool pf = j0 == 0 && xg == 1;                                                              \
                for (int64_t r = rb; r < re; r += 16) {                                                          \
                    const uint8_t *gq = (const uint8_t *)w->data + (size_t)(r / 16) * gbytes;                   \
                    const uint8_t *gs = gq + (size_t)nb * qb;                                                    \
                    const int64_t valid = r1 - r < 16 ? r1 - r : 16;                                             \
                    const __mmask16 mask = (__mmask16)((1u << valid) - 1);                                       \
                    if (step > XJ) {                                                                             \
                        switch (step) {                                                                          \
                            X16_CASE16(q8, 9) X16_CASE16(q8, 10) X16_CASE16(q8, 11) X16_CASE16(q8, 12)           \
                            X16_CASE16(q8, 13) X16_CASE16(q8, 14) X16_CASE16(q8, 15)                            \
                        default: x16_tile16(gq, gs, qx, j0, 16, q8, q5, pf, mask, y, w->rows, r); break;             \
                        }                                                                                        \
                        continue;                                                                                \
                    }                                                                                            \
                    switch (n - j0 < XJ ? n - j0 : XJ) {                                                         \
                        X16_CASE(q8, vnni, 1) X16_CASE(q8, vnni, 2) X16_CASE(q8, vnni, 3)                        \
                        X16_CASE(q8, vnni, 4) X16_CASE(q8, vnni, 5) X16_CASE(q8, vnni, 6)                        \
                        X16_CASE(q8, vnni, 7)                                                                    \
                    default: x16_tile(gq, gs, qx, j0, XJ, q8, q5, vnni, pf, mask, y, w->rows, r); break;             \
                    }                                                                                            \
                }                                                                                                \
            }                                                                                                    \
        }                                                                                                        \
    }

DEFINE_X16_ROWS(q8_0_x16_vnni, true, false, true)
DEFINE_X16_ROWS(q4_0_x16_vnni, false, false, true)
DEFINE_X16_ROWS(q5_0_x16_vnni, false, true, true)
DEFINE_X16_ROWS(q8_0_x16_novnni, true, false, false)
DEFINE_X16_ROWS(q4_0_x16_novnni, false, false, false)
DEFINE_X16_ROWS(q5_0_x16_novnni, false, true, false)

/* ---- float kernels -------------------------------------------------------------------------- */

/* A tile of FR weight rows x FJ activation rows, one 16-lane f32 accumulator per pair, columns in
 * order in steps of 16 (the last step masked), then the fixed _mm512_reduce_add_ps tree. Rows past
 * the end repeat the last real one and are not stored; the tile is instantiated per number of
 * activation rows. Each (r, j) pair is computed the same way whatever else its tile holds. */
#define FR 4
#define FJ 4

AI __m512 load16w(const uint8_t *row, int64_t c, __mmask16 m, const uint32_t type) {
    if (type == ES_TYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + c);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + c);
    if (type == ES_TYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* FR rows x J activation rows (J <= FJ, a constant after inlining). */
AI void float_tile(const uint8_t *const rp[FR], const float *x, float *y, int64_t cols, int64_t rows, int64_t r,
                   int64_t r1, int64_t j0, const int J, const uint32_t type) {
    const float *xp[FJ];
    ES_UNROLL
    for (int j = 0; j < J; j++) xp[j] = x + (j0 + j) * cols;
    __m512 acc[FR][FJ];
    ES_UNROLL
    for (int i = 0; i < FR; i++) {
        ES_UNROLL
        for (int j = 0; j < J; j++) acc[i][j] = _mm512_setzero_ps();
    }
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        __m512 xv[FJ];
        ES_UNROLL
        for (int j = 0; j < J; j++) xv[j] = _mm512_loadu_ps(xp[j] + c);
        ES_UNROLL
        for (int i = 0; i < FR; i++) {
            __m512 wv = load16w(rp[i], c, (__mmask16)0xffff, type);
            ES_UNROLL
            for (int j = 0; j < J; j++) acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
        }
    }
    if (c < cols) { /* the last columns, masked: the zeros add nothing */
        const __mmask16 m = (__mmask16)((1u << (cols - c)) - 1);
        __m512 xv[FJ];
        ES_UNROLL
        for (int j = 0; j < J; j++) xv[j] = _mm512_maskz_loadu_ps(m, xp[j] + c);
        ES_UNROLL
        for (int i = 0; i < FR; i++) {
            __m512 wv = load16w(rp[i], c, m, type);
            ES_UNROLL
            for (int j = 0; j < J; j++) acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
        }
    }
    ES_UNROLL
    for (int i = 0; i < FR; i++) {
        ES_UNROLL
        for (int j = 0; j < J; j++)
            if (r + i < r1) y[(j0 + j) * rows + r + i] = _mm512_reduce_add_ps(acc[i][j]);
    }
}

AI void float_rows(const es_mat *w, const float *x, float *y, int64_t n, int64_t r0, int64_t r1, const uint32_t type) {
    const int64_t cols = w->cols, rows = w->rows;
    for (int64_t r = r0; r < r1; r += FR) {
        const uint8_t *rp[FR];
        ES_UNROLL
        for (int i = 0; i < FR; i++)
            rp[i] = (const uint8_t *)w->data + (size_t)(r + i < r1 ? r + i : r1 - 1) * w->row_bytes;
        for (int64_t j0 = 0; j0 < n; j0 += FJ) {
            switch (n - j0 < FJ ? n - j0 : FJ) {
            case 1: float_tile(rp, x, y, cols, rows, r, r1, j0, 1, type); break;
            case 2: float_tile(rp, x, y, cols, rows, r, r1, j0, 2, type); break;
            case 3: float_tile(rp, x, y, cols, rows, r, r1, j0, 3, type); break;
            default: float_tile(rp, x, y, cols, rows, r, r1, j0, 4, type); break;
            }
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
    .q8_0_x16 = q8_0_x16_novnni,
    .q4_0_x16 = q4_0_x16_novnni,
    .q5_0_x16 = q5_0_x16_novnni,
    .q4_k_x16 = es_q4_k_x16_avx512,
    .q5_k_x16 = es_q5_k_x16_avx512,
    .q6_k_x16 = es_q6_k_x16_avx512,
    .quant_row = quant_row_avx512,
    .quant_row_k = quant_row_k_avx512,
};

const es_mm_kernels es_mm_avx512_vnni = {
    .f32 = f32_rows_avx512,
    .f16 = f16_rows_avx512,
    .bf16 = bf16_rows_avx512,
    .q8_0 = q8_0_rows_vnni,
    .q4_0 = q4_0_rows_vnni,
    .q8_0_x16 = q8_0_x16_vnni,
    .q4_0_x16 = q4_0_x16_vnni,
    .q5_0_x16 = q5_0_x16_vnni,
    .q4_k_x16 = es_q4_k_x16_avx512_vnni,
    .q5_k_x16 = es_q5_k_x16_avx512_vnni,
    .q6_k_x16 = es_q6_k_x16_avx512_vnni,
    .quant_row = quant_row_avx512,
    .quant_row_k = quant_row_k_avx512,
};
