/* repack.c — building the X16 layout (kernels/repack.h), reading rows back from it, and the
 * scalar reference kernels on it (the SIMD ones live with the other kernels of their ISA). */
#include "kernels/repack.h"

#include <math.h>
#include <string.h>

#include "kernels/matmul_impl.h"
#include "util/fp16.h"

bool es_mat_can_repack(const es_mat *w) {
    return w->layout == ES_LAYOUT_ROWS && (w->type == ES_TYPE_Q8_0 || w->type == ES_TYPE_Q4_0) && w->rows > 0 &&
           w->cols >= ES_QK && w->cols % ES_QK == 0 && w->row_bytes >= es_row_size(w->type, w->cols);
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

static void repack_worker(void *ud, int ith, int nth) {
    const repack_task *t = ud;
    const es_mat *w = t->w;
    const int64_t nb = w->cols / ES_QK, groups = (w->rows + ES_X16_ROWS - 1) / ES_X16_ROWS;
    const size_t qb = es_x16_qbytes(w->type), gbytes = es_x16_group_bytes(w->type, nb);
    const size_t bsz = w->type == ES_TYPE_Q8_0 ? sizeof(es_block_q8_0) : sizeof(es_block_q4_0);
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
                const uint8_t *sq = src + 2; /* Q8_0 and Q4_0 blocks: fp16 scale, then the quants */
                for (size_t k = 0; k < qb / 64; k++) memcpy(q + 64 * k + 4 * i, sq + 4 * k, 4);
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
            for (int t = 0; t < ES_QK / 2; t++) {
                const uint8_t v = x16_qbyte(q, i, t);
                o[t] = d * (float)((int)(v & 0x0f) - 8);
                o[t + ES_QK / 2] = d * (float)((int)(v >> 4) - 8);
            }
        }
    }
}

/* Scalar reference on X16, the arithmetic of matmul_impl.h: integer block dot, then one fmaf per
 * block in block order. */
static void x16_rows_ref(const es_mat *w, const es_qx *qx, float *y, int64_t n, int64_t r0, int64_t r1) {
    const int64_t nb = qx->nb, rows = w->rows;
    const size_t qb = es_x16_qbytes(w->type), gbytes = es_x16_group_bytes(w->type, nb);
    const bool q8 = w->type == ES_TYPE_Q8_0;
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
                        s += ((int32_t)(v & 0x0f) - 8) * xb[t] + ((int32_t)(v >> 4) - 8) * xb[t + ES_QK / 2];
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
