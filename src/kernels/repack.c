/* repack.c — building the X16 layout (kernels/repack.h), reading rows back from it, and the
 * scalar reference kernels on it (the SIMD ones live with the other kernels of their ISA). */
#include "kernels/repack.h"

#include <math.h>
#include <string.h>

#include "kernels/matmul_impl.h"
#include "util/fp16.h"

bool es_mat_can_repack(const es_mat *w) {
    const int64_t blk = es_x16_is_kquant(w->type) ? ES_QK_K : ES_QK;
    return w->layout == ES_LAYOUT_ROWS &&
           (w->type == ES_TYPE_Q8_0 || w->type == ES_TYPE_Q4_0 || w->type == ES_TYPE_Q5_0 || es_x16_is_kquant(w->type)) &&
           w->rows > 0 &&
           w->cols >= blk && w->cols % blk == 0 && w->row_bytes >= es_row_size(w->type, w->cols);
}

size_t es_mat_repacked_size(const es_mat *w) {
    if (!es_mat_can_repack(w)) return 0;
    const uint64_t groups = (uint64_t)(w->rows + ES_X16_ROWS - 1) / ES_X16_ROWS;
    uint64_t total;
    if (__builtin_mul_overflow(groups, (uint64_t)es_x16_group_bytes(w->type, w->cols / ES_QK), &total) || total > SIZE_MAX)
        return 0;
    return (size_t)total;
}

typedef struct repack_task {
    const es_mat *w;
    uint8_t *dst;
} repack_task;

/* File-block byte offsets (K-quants) of the quant words, the 12 packed scales, the fp16s. */
typedef struct kq_file {
    size_t bsz, qs, qh, scales, d, dmin;
} kq_file;

static kq_file kq_file_of(uint32_t type) {
    switch (type) {
    case ES_TYPE_Q4_K: return (kq_file){sizeof(es_block_q4_k), 16, 0, 4, 0, 2};
    case ES_TYPE_Q5_K: return (kq_file){sizeof(es_block_q5_k), 48, 16, 4, 0, 2};
    default: return (kq_file){sizeof(es_block_q6_k), 0, 128, 192, 208, 0};
    }
}

/* File word k (0 .. NC-1, the numbering of repack.h) of a K-quant block. */
static inline size_t kq_word_off(const kq_file *f, size_t k) { return k < 32 ? f->qs + 4 * k : f->qh + 4 * (k - 32); }

/* Super-block sb of row lane i of a group (src: the row's file block, NULL for a padding row). */
static void kq_pack_lane(uint32_t type, const uint8_t *src, uint8_t *dst, int i) {
    const kq_file f = kq_file_of(type);
    const size_t nc = es_x16_kq_chunks(type), sc = es_x16_kq_sc(type);
    for (size_t k = 0; k < nc; k++) {
        if (src) memcpy(dst + 64 * k + 4 * i, src + kq_word_off(&f, k), 4);
        else memset(dst + 64 * k + 4 * i, 0, 4);
    }
    if (type == ES_TYPE_Q6_K) {
        for (int c = 0; c < 16; c++) dst[sc + 16 * c + i] = src ? src[f.scales + c] : 0;
        if (src) memcpy(dst + es_x16_kq_d(type) + 2 * i, src + f.d, 2);
        else memset(dst + es_x16_kq_d(type) + 2 * i, 0, 2);
        memset(dst + es_x16_kq_d(type) + 32 + 2 * i, 0, 2);
        return;
    }
    for (int s = 0; s < 8; s++) {
        uint8_t v = 0, m = 0;
        if (src) es_kq_scale_min(s, src + f.scales, &v, &m);
        dst[sc + 16 * s + i] = v;
        dst[es_x16_kq_m(type) + 16 * s + i] = m;
    }
    if (src) {
        memcpy(dst + es_x16_kq_d(type) + 2 * i, src + f.d, 2);
        memcpy(dst + es_x16_kq_dmin(type) + 2 * i, src + f.dmin, 2);
    } else {
        memset(dst + es_x16_kq_d(type) + 2 * i, 0, 2);
        memset(dst + es_x16_kq_dmin(type) + 2 * i, 0, 2);
    }
}

void es_x16_kq_unpack(const es_mat *w, int64_t r, int64_t sb, void *blk) {
    const uint32_t type = w->type;
    const kq_file f = kq_file_of(type);
    const size_t nc = es_x16_kq_chunks(type), sbb = es_x16_kq_sb_bytes(type);
    const uint8_t *src = (const uint8_t *)w->data + (size_t)(r / ES_X16_ROWS) * es_x16_group_bytes(type, w->cols / ES_QK) +
                         (size_t)sb * sbb;
    const int i = (int)(r % ES_X16_ROWS);
    uint8_t *dst = blk;
    for (size_t k = 0; k < nc; k++) memcpy(dst + kq_word_off(&f, k), src + 64 * k + 4 * i, 4);
    const uint8_t *sc = src + es_x16_kq_sc(type);
    memcpy(dst + f.d, src + es_x16_kq_d(type) + 2 * i, 2);
    if (type == ES_TYPE_Q6_K) {
        for (int c = 0; c < 16; c++) dst[f.scales + c] = sc[16 * c + i];
        return;
    }
    memcpy(dst + f.dmin, src + es_x16_kq_dmin(type) + 2 * i, 2);
    /* the inverse of es_kq_scale_min: every one of the 96 bits is used, so the bytes come back */
    uint8_t *q = dst + f.scales;
    const uint8_t *mn = src + es_x16_kq_m(type);
    for (int j = 0; j < 4; j++) {
        const uint8_t s0 = sc[16 * j + i], m0 = mn[16 * j + i], s1 = sc[16 * (j + 4) + i], m1 = mn[16 * (j + 4) + i];
        q[j] = (uint8_t)((s0 & 63) | ((s1 >> 4) << 6));
        q[j + 4] = (uint8_t)((m0 & 63) | ((m1 >> 4) << 6));
        q[j + 8] = (uint8_t)((s1 & 15) | ((m1 & 15) << 4));
    }
}

static void repack_worker(void *ud, int ith, int nth) {
    const repack_task *t = ud;
    const es_mat *w = t->w;
    if (es_x16_is_kquant(w->type)) {
        const int64_t nsb = w->cols / ES_QK_K, groups = (w->rows + ES_X16_ROWS - 1) / ES_X16_ROWS;
        const size_t sbb = es_x16_kq_sb_bytes(w->type), bsz = kq_file_of(w->type).bsz;
        int64_t g0, g1;
        es_split_range(groups, ith, nth, &g0, &g1);
        for (int64_t g = g0; g < g1; g++)
            for (int64_t sb = 0; sb < nsb; sb++) {
                uint8_t *dst = t->dst + (size_t)(g * nsb + sb) * sbb;
                for (int i = 0; i < ES_X16_ROWS; i++) {
                    const int64_t r = g * ES_X16_ROWS + i;
                    kq_pack_lane(w->type,
                                 r < w->rows ? (const uint8_t *)w->data + (size_t)r * w->row_bytes + (size_t)sb * bsz : NULL,
                                 dst, i);
                }
            }
        return;
    }
    const int64_t nb = w->cols / ES_QK, groups = (w->rows + ES_X16_ROWS - 1) / ES_X16_ROWS;
    const size_t qb = es_x16_qbytes(w->type), gbytes = es_x16_group_bytes(w->type, nb);
    const bool q5 = w->type == ES_TYPE_Q5_0;
    const size_t bsz = w->type == ES_TYPE_Q8_0 ? sizeof(es_block_q8_0) : q5 ? sizeof(es_block_q5_0) : sizeof(es_block_q4_0);
    const size_t words = q5 ? 4 : qb / 64; /* 4-byte quant words per row and block */
    int64_t g0, g1;
    es_split_range(groups, ith, nth, &g0, &g1);
    for (int64_t g = g0; g < g1; g++) {
        uint8_t *gq = t->dst + (size_t)g * gbytes, *gs = gq + (size_t)nb * qb;
        for (int i = 0; i < ES_X16_ROWS; i++) {
            const int64_t r = g * ES_X16_ROWS + i;
            for (int64_t b = 0; b < nb; b++) {
                uint8_t *q = gq + (size_t)b * qb, *s = gs + (size_t)b * 32;
                if (r >= w->rows) { /* padding row: zero scale, zero quants */
                    for (size_t k = 0; k < qb / 64; k++) memset(q + 64 * k + 4 * i, 0, 4);
                    memset(s + 2 * i, 0, 2);
                    continue;
                }
                const uint8_t *src = (const uint8_t *)w->data + (size_t)r * w->row_bytes + (size_t)b * bsz;
                /* every block starts with its fp16 scale; Q5_0's fifth bits follow it, then the
                 * nibbles as in Q4_0 */
                const uint8_t *sq = src + (q5 ? 6 : 2);
                for (size_t k = 0; k < words; k++) memcpy(q + 64 * k + 4 * i, sq + 4 * k, 4);
                if (q5) {
                    uint32_t qh;
                    memcpy(&qh, src + 2, 4);
                    for (int m = 0; m < 4; m++) { /* the bit planes of repack.h */
                        uint8_t v = 0;
                        for (int p = 0; p < 8; p++) v |= (uint8_t)(((qh >> (4 * p + m)) & 1u) << p);
                        q[256 + 4 * i + m] = v;
                    }
                }
                memcpy(s + 2 * i, src, 2);
            }
        }
    }
}

void es_mat_repack(es_threadpool *tp, const es_mat *w, void *dst, es_mat *out) {
    repack_task t = {w, dst};
    es_threadpool_run(tp, repack_worker, &t);
    *out = *w;
    out->data = dst;
    out->layout = ES_LAYOUT_X16;
}

/* Quant byte t (0 .. QB/16-1, the file block's byte t) and scale of row lane i in a group's block. */
static inline uint8_t x16_qbyte(const uint8_t *q, int i, int t) { return q[64 * (t / 4) + 4 * i + t % 4]; }
/* Q5_0: the fifth bit of element e (0..31) of row lane i in a group's block (the bit planes). */
static inline int x16_q5_bit(const uint8_t *q, int i, int e) { return (q[256 + 4 * i + e % 4] >> (e / 4)) & 1; }
static inline uint16_t x16_scale(const uint8_t *s, int i) {
    uint16_t h;
    memcpy(&h, s + 2 * i, 2);
    return h;
}

void es_x16_get_row(const es_mat *w, int64_t r, float *dst) {
    const int64_t nb = w->cols / ES_QK;
    if (r < 0 || r >= w->rows) {
        for (int64_t c = 0; c < w->cols; c++) dst[c] = NAN;
        return;
    }
    if (es_x16_is_kquant(w->type)) {
        const es_type_traits *tr = es_type_get(w->type);
        es_block_q6_k blk; /* the largest K-quant block */
        for (int64_t sb = 0; sb < w->cols / ES_QK_K; sb++) {
            es_x16_kq_unpack(w, r, sb, &blk);
            tr->to_float(&blk, dst + sb * ES_QK_K, ES_QK_K);
        }
        return;
    }
    const size_t qb = es_x16_qbytes(w->type);
    const uint8_t *gq = (const uint8_t *)w->data + (size_t)(r / ES_X16_ROWS) * es_x16_group_bytes(w->type, nb);
    const uint8_t *gs = gq + (size_t)nb * qb;
    const int i = (int)(r % ES_X16_ROWS);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *q = gq + (size_t)b * qb;
        const float d = es_fp16_to_fp32(x16_scale(gs + (size_t)b * 32, i));
        float *o = dst + b * ES_QK;
        if (w->type == ES_TYPE_Q8_0) {
            for (int t = 0; t < ES_QK; t++) o[t] = d * (float)(int8_t)x16_qbyte(q, i, t);
        } else {
            const bool q5 = w->type == ES_TYPE_Q5_0;
            for (int t = 0; t < ES_QK / 2; t++) {
                const uint8_t v = x16_qbyte(q, i, t);
                if (q5) {
                    o[t] = d * (float)((int)(v & 0x0f) + 16 * x16_q5_bit(q, i, t) - 16);
                    o[t + ES_QK / 2] = d * (float)((int)(v >> 4) + 16 * x16_q5_bit(q, i, t + ES_QK / 2) - 16);
                } else {
                    o[t] = d * (float)((int)(v & 0x0f) - 8);
                    o[t + ES_QK / 2] = d * (float)((int)(v >> 4) - 8);
                }
            }
        }
    }
}

/* Scalar reference on X16, the arithmetic of matmul_impl.h: integer block dot, then one fmaf per
 * block in block order. */
static void x16_rows_ref(const es_mat *w, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1) {
    const int64_t nb = qx->nb, rows = w->rows;
    const size_t qb = es_x16_qbytes(w->type), gbytes = es_x16_group_bytes(w->type, nb);
    const bool q8 = w->type == ES_TYPE_Q8_0, q5 = w->type == ES_TYPE_Q5_0;
    const int off = q5 ? 16 : 8; /* the codes' offset */
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *gq = (const uint8_t *)w->data + (size_t)(r / ES_X16_ROWS) * gbytes, *gs = gq + (size_t)nb * qb;
        const int i = (int)(r % ES_X16_ROWS);
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *q = gq + (size_t)b * qb;
                const int8_t *xb = qx->qs + (b * n + j) * ES_QK;
                int32_t s = 0;
                if (q8) {
                    for (int t = 0; t < ES_QK; t++) s += (int32_t)(int8_t)x16_qbyte(q, i, t) * xb[t];
                } else {
                    for (int t = 0; t < ES_QK / 2; t++) {
                        const uint8_t v = x16_qbyte(q, i, t);
                        const int32_t lo = (v & 0x0f) + (q5 ? 16 * x16_q5_bit(q, i, t) : 0);
                        const int32_t hi = (v >> 4) + (q5 ? 16 * x16_q5_bit(q, i, t + ES_QK / 2) : 0);
                        s += (lo - off) * xb[t] + (hi - off) * xb[t + ES_QK / 2];
                    }
                }
                acc = fmaf((float)s, es_fp16_to_fp32(x16_scale(gs + (size_t)b * 32, i)) * qx->d[b * n + j], acc);
            }
            y[j * rows + r] = acc;
        }
    }
}

void es_x16_rows_ref(const es_mat *w, const float *x, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1) {
    x16_rows_ref(w, qx, y, n, r0, r1);
}
