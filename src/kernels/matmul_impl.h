/* matmul_impl.h — what the per-ISA kernel files share with matmul.c (internal to src/kernels).
 *
 * Arithmetic contract, the same at every CPU level so results do not depend on it:
 *
 * Quantised weights (Q8_0, Q4_0, Q5_0). Each activation row x[cols] is quantised per 32-element block to
 * int8 with an f32 scale (not fp16 like a real Q8_0 block: this costs nothing in memory traffic and
 * keeps the activation error at the int8 rounding alone):
 *     dx = max|x| / 127,  q = nearbyint(x * (1/dx))   (round half to even, |q| <= 127)
 * and the row's output is, with the blocks summed strictly in order b = 0, 1, ...:
 *     acc = 0;  acc = fmaf((float)isum_b, dw_b * dx_b, acc)
 * where isum_b is the exact integer dot of the block (w_q - 8 for Q4_0, w_q - 16 for
 * Q5_0) and dw_b the weight scale.
 * Integer sums are exact and fmaf rounds once, so every level (scalar reference, AVX2, AVX-512
 * with or without VNNI, NEON with or without the dot-product extension) produces bit-identical y — for any n, any row tiling and any thread split.
 *
 * K-quant weights (Q4_K, Q5_K, Q6_K) use the same per-32 activation blocks, but quantised as
 * llama.cpp's Q8_K does: one scale per 256 values (a super-block), with its arithmetic
 *     iscale = 127 / max|x| over the 256,  q = round_half_even(x * iscale),  dx = 1 / iscale
 * so the eight blocks of a super-block share dx, and the integer products are llama.cpp's. Every level
 * computes max|x| exactly (a NaN element is skipped, as fmaxf does), iscale and dx in scalar f32 as
 * above, the product x * iscale unfused and rounded half to even, and stores 0 where the rounded value
 * lies outside [-127, 127] (only a non-finite input gets there), so the int8 values and dx are the
 * same at every level (matmul.c: quant_row_q8k_ref; es_mm_kernels.quant_row_k). A Q4_K / Q5_K
 * sub-block is one activation block, a Q6_K sub-block half of one. Per activation block b the
 * quantisation also yields xsum_b (the sum of its 32 int8 values, as an exact integer) and
 *     fs_b = dx_b * (float)xsum_b                        (one rounding; es_qx.fs)
 * and the sums of its two halves (es_qx.k16 holds -32 times them, the Q6_K offset).
 *
 *   Q4_K / Q5_K, per weight row and activation row, super-block by super-block in order, with the
 *   sub-blocks s = 0..7 (activation block b = 8 * superblock + s) in order:
 *       a = 0;  mn = 0
 *       for s:  a  = fmaf((float)isum_s, (float)sc_s * dx_b, a)    isum_s = sum q * x_int8, q >= 0
 *               mn = fmaf((float)m_s, fs_b, mn)
 *       acc = fmaf(d, a, acc);  acc = fmaf(-dmin, mn, acc)
 *   (d, dmin the fp16 super-scales as f32; sc_s, m_s the 6-bit scale and min.)
 *
 *   Q6_K, per activation block b = 2 sub-blocks c0 = 2(b mod 8), c1 = c0 + 1, in order:
 *       v = sc_c0 * isum_c0 + sc_c1 * isum_c1              (exact int32; isum_c = sum (q - 32) x)
 *       acc = fmaf((float)v, d * dx_b, acc)                (int -> float rounds to nearest even,
 *                                                           as cvtdq2ps does; |v| may pass 2^24)
 *
 * Float weights (F32, F16, BF16) use the f32 activations directly. Each level accumulates in its
 * own lane layout, so results differ between levels by rounding only; within one level each
 * (row, activation row) pair is computed the same way whatever n or the thread split is. */
#ifndef ES_KERNELS_MATMUL_IMPL_H
#define ES_KERNELS_MATMUL_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/matmul.h"

/* Rows are handed to kernels in chunks that start at a multiple of this (the widest row group a
 * kernel processes at once), so a row's arithmetic never depends on where a chunk starts. */
#define ES_MM_ROW_ALIGN 16

/* The activations quantised for an int8 kernel, block-major so that a kernel walking the blocks
 * of a weight row finds the n activation rows of a block next to each other (one pointer, constant
 * offsets): block b of activation row j is qs[(b * n + j) * 32 ..], d[b * n + j], corr[b * n + j]. */
typedef struct es_qx {
    const int8_t *qs;    /* [nb][n][32] quantised values */
    const float *d;      /* [nb][n] per-block scales dx */
    const int32_t *corr; /* [nb][n] ES_QX_MAGIC - c * (sum of the block's qs): c = 128 for Q8_0, 8 for Q4_0, 16 for Q5_0 */
    const float *fs;     /* [nb][n] dx * (float)(sum of the block's qs); K-quants only, else NULL */
    const int32_t *k16;  /* [nb][n][2] -32 * (sum of each 16-value half of the block); K-quants only */
    int64_t nb;          /* blocks per row = cols / 32 */
    int64_t n;           /* activation rows */
    int64_t kq_decode;   /* K-quant X16 AVX-512 kernels: decode each super-block once into a buffer
                            from this many activation rows on (0: never); see ES_KQ_DECODE_ROWS */
} es_qx;

/* The K-quant X16 AVX-512 kernels (kernels/kquant_avx512.c) compute a pass of up to 4 activation
 * rows straight from the weights (tiles), and for larger batches either make more such passes or
 * decode each super-block once into a 4 KB buffer that the rows' dot steps then read. Which is
 * faster depends on the core: on AMD Zen 4 the buffer (64 512-bit stores and their reloads per
 * super-block, at half rate there) lost at every batch size measured (bench_kernels 8960 x 1536,
 * 2 threads: Q4_K 8 rows 0.58 ms with tiles against 0.81 decoded, 16 rows 0.96 / 1.20, 128 rows
 * 5.84 / 6.64; Q6_K 8 rows 0.77 / 0.97; the 1.5B Q4_K_M target's verification of 8 tokens 76-82 ms
 * against 93-100, of 16 115-130 / 139-142), so es_qx_quantize sets kq_decode to 0 there and to this
 * elsewhere (es_cpu_kq_decode_set lets the tests run both). */
#define ES_KQ_DECODE_ROWS 5

/* Software prefetch for the AVX-512 X16 kernels, which read each group as one linear stream: while
 * a block is computed in a group's first pass, the bytes ES_X16_PREFETCH_AHEAD further on are
 * requested into L1. The hardware prefetchers alone stall at every 4 KB page boundary, and once a
 * pass has several activation rows to compute per block the core issues loads too slowly for them
 * to run far ahead. Measured on random TinyLlama-1.1B weights, 2 threads, Cascade Lake, repeated
 * interleaved runs: Q8_0 verify of 8 tokens 69-80 ms against 98-111 without; Q4_K_M decode 38-44
 * ms against 68 (58 % -> ~90 % of the bandwidth bound), its 16-token verify 138-153 against 178.
 * 2 and 8 KB ahead were no better than 4, L2 hints (T1) slightly worse. The AVX2 kernels are
 * compute-bound from 4 rows on and their 16-row activation blocks fill L1: there it measured slower
 * and is not used; the Q8_0 / Q4_0 prefill sweeps (kernels/matmul_avx512.c, XG) are
 * compute-bound too and skip it (pp512 measured 150 tok/s with it, against 171 in an earlier,
 * quieter run without). Past the end of a group the addresses are the next group's (or unmapped, which
 * prefetches ignore). */
#ifndef ES_X16_PREFETCH_AHEAD
#define ES_X16_PREFETCH_AHEAD 4096
#endif
static inline void es_x16_prefetch(const uint8_t *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + ES_X16_PREFETCH_AHEAD + o, 0, 3);
}

/* Integer-to-float without cvtdq2ps (which competes with vpdpbusd for port 0 on Intel cores):
 * for |v| < 2^22 the bits ES_QX_MAGIC + v are the float 12582912 + v exactly, so subtracting
 * ES_QX_MAGIC_F gives (float)v exactly, on a port that is free. The correction in es_qx already
 * contains the magic, so an accumulator started from it needs nothing more. Block dots are at most
 * 32 * 128 * 127 < 2^22 in magnitude. */
#define ES_QX_MAGIC 0x4B400000
#define ES_QX_MAGIC_F 12582912.0f

/* Computes y[j][r] for all j < n and r in [r0, r1) (r0 a multiple of ES_MM_ROW_ALIGN; r1 too, or
 * w->rows). x is the f32 input [n][cols] (used by float kernels), qx the quantised one (int8
 * kernels). y has row stride w->rows. */
typedef void (*es_mm_rows_fn)(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0,
                              int64_t r1);

/* Quantises one activation row x[nb * 32]: block b goes to qs[b * stride * 32 ..], d[b * stride],
 * corr[b * stride] (stride = n for the es_qx layout; c is the correction multiplier). Bit-identical
 * at every level. */
typedef void (*es_quant_row_fn)(const float *x, int64_t nb, int64_t stride, int32_t c, int8_t *qs, float *d,
                                int32_t *corr);

/* Quantises one activation row x[nb * 32] for K-quant weights (Q8_K, nb a multiple of 8): block b
 * goes to qs[b * stride * 32 ..], d[b * stride], corr[b * stride] (ES_QX_MAGIC), fs[b * stride] and
 * k16[2 * b * stride ..] (the es_qx layout seen from row j = the pointers advanced by j). The block
 * sums come from the int8 values while they are in registers: es_qx's fs and k16 need no pass of
 * their own. Bit-identical at every level. */
typedef void (*es_quant_row_k_fn)(const float *x, int64_t nb, int64_t stride, int8_t *qs, float *d, int32_t *corr,
                                  float *fs, int32_t *k16);

typedef struct es_mm_kernels {
    es_mm_rows_fn f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k;
    es_mm_rows_fn q8_0_x16, q4_0_x16; /* Q8_0 / Q4_0 in the X16 layout (kernels/repack.h) */
    es_mm_rows_fn q5_0, q5_0_x16;     /* Q5_0 (the file layout: the reference only) */
    es_mm_rows_fn q4_k_x16, q5_k_x16, q6_k_x16; /* the K-quants in the X16 layout */
    es_quant_row_fn quant_row;
    es_quant_row_k_fn quant_row_k;
} es_mm_kernels;

/* The scalar reference on X16 matrices, Q8_0, Q4_0 and Q5_0 (kernels/repack.c). */
void es_x16_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1);

/* es_matmul's first step, on its own for tests and benchmarks: the activations x[n][cols] quantised
 * as weights of `type` want them (Q8_0 / Q4_0 / Q5_0: es_quant_row_fn; Q4_K / Q5_K / Q6_K: Q8_K with fs and
 * k16) into qx, whose arrays point into scratch (es_matmul_scratch_size(n, cols) bytes), by the
 * kernels of the level in use; rows split across tp's threads when tp is not NULL. False (qx
 * untouched) for a type with f32 activations, n < 1, or cols not a multiple of the type's block
 * (32, or 256 for the K-quants). */
bool es_qx_quantize(es_threadpool *tp, uint32_t type, const float *x, int64_t n, int64_t cols, void *scratch,
                    es_qx *qx);

/* Scalar reference kernels of the K-quants (kernels/matmul_kquant.c), for either layout. */
void es_q4_k_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1);
void es_q5_k_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1);
void es_q6_k_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1);

/* Per-level kernel tables (constant). es_mm_ref has every entry; in the others a NULL entry falls
 * back to es_mm_ref's (the quant_row entry must be set where any int8 kernel is; quant_row_k may
 * be NULL). */
extern const es_mm_kernels es_mm_ref;
#if defined(__x86_64__) || defined(_M_X64)
extern const es_mm_kernels es_mm_avx2;
extern const es_mm_kernels es_mm_avx512;      /* AVX-512 BW/VL, int8 dots with maddubs/madd */
extern const es_mm_kernels es_mm_avx512_vnni; /* the same with vpdpbusd */
/* The K-quant kernels of the SIMD levels, [0] Q4_K, [1] Q5_K, [2] Q6_K (kquant_avx2.c,
 * kquant_avx512.c). Kept out of the tables above so those files stay untouched; es_matmul uses
 * them where a table's own K-quant entry is NULL. A NULL entry here falls back to es_mm_ref. */
extern const es_mm_rows_fn es_kq_avx2[3];
extern const es_mm_rows_fn es_kq_avx512[3];
extern const es_mm_rows_fn es_kq_avx512_vnni[3];
/* The K-quant kernels on the X16 layout (same files); matmul_avx2.c and matmul_avx512.c put them
 * in their tables' *_x16 entries. */
#define ES_KQ_X16_DECL(name)                                                                                      \
    void name(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1)
ES_KQ_X16_DECL(es_q4_k_x16_avx2);
ES_KQ_X16_DECL(es_q5_k_x16_avx2);
ES_KQ_X16_DECL(es_q6_k_x16_avx2);
ES_KQ_X16_DECL(es_q4_k_x16_avx512);
ES_KQ_X16_DECL(es_q5_k_x16_avx512);
ES_KQ_X16_DECL(es_q6_k_x16_avx512);
ES_KQ_X16_DECL(es_q4_k_x16_avx512_vnni);
ES_KQ_X16_DECL(es_q5_k_x16_avx512_vnni);
ES_KQ_X16_DECL(es_q6_k_x16_avx512_vnni);
#endif
#if defined(__aarch64__)
extern const es_mm_kernels es_mm_neon;         /* int8 dots with vmull_s8 / vpadalq_s16 */
extern const es_mm_kernels es_mm_neon_dotprod; /* the same with vdotq_s32 (Armv8.2 dot product) */
/* The K-quant kernels of the NEON levels on the file layout, [0] Q4_K, [1] Q5_K, [2] Q6_K
 * (kquant_neon.c), used by es_matmul like es_kq_avx2 where the table's own entry is NULL. */
extern const es_mm_rows_fn es_kq_neon[3];
extern const es_mm_rows_fn es_kq_neon_dotprod[3];
#endif

#endif
