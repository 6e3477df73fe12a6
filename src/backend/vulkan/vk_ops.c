/* vk_ops.c — recording the kernels of vk.h: argument checks, one descriptor set per dispatch, push
 * constants, the grid (split into a second dimension past the 65535 workgroups every device allows
 * in x), and a barrier so the next kernel sees this one's writes. */
#include <string.h>

#include "backend/vulkan/vk_impl.h"
#include "kernels/types.h"
#include "util/err.h"

const char *const es_vk_pipe_shader[ES_VK_PIPE_COUNT] = {
    [ES_VK_PIPE_MV_F32] = "matvec_f32",   [ES_VK_PIPE_MV_F16] = "matvec_f16",   [ES_VK_PIPE_MV_Q4_0] = "matvec_q4_0",
    [ES_VK_PIPE_MV_Q8_0] = "matvec_q8_0", [ES_VK_PIPE_MV_Q4_K] = "matvec_q4_k", [ES_VK_PIPE_MV_Q6_K] = "matvec_q6_k",
    [ES_VK_PIPE_MV_Q5_K] = "matvec_q5_k", [ES_VK_PIPE_MV_BF16] = "matvec_bf16",
    [ES_VK_PIPE_MM_F32] = "matmul_f32",   [ES_VK_PIPE_MM_F16] = "matmul_f16",   [ES_VK_PIPE_MM_Q4_0] = "matmul_q4_0",
    [ES_VK_PIPE_MM_Q8_0] = "matmul_q8_0", [ES_VK_PIPE_MM_Q4_K] = "matmul_q4_k", [ES_VK_PIPE_MM_Q6_K] = "matmul_q6_k",
    [ES_VK_PIPE_MM_Q5_K] = "matmul_q5_k", [ES_VK_PIPE_MM_BF16] = "matmul_bf16",
    [ES_VK_PIPE_RMSNORM] = "rmsnorm",
    [ES_VK_PIPE_ROPE] = "rope",           [ES_VK_PIPE_EW] = "ew",             [ES_VK_PIPE_ROWS] = "rows",
    [ES_VK_PIPE_ATTN] = "attn",           [ES_VK_PIPE_ATTN_F16] = "attn_f16", [ES_VK_PIPE_ATTN_Q8] = "attn_q8",
};

#define ES_VK_MAX_GROUPS 65535u

/* groups workgroups as gx × gy with gx <= 65535 (kernels index gy * gx + x and skip the excess). */
static es_status split_grid(uint64_t groups, uint32_t *gx, uint32_t *gy, es_err *err) {
    *gx = *gy = 1;
    if (groups == 0) groups = 1;
    *gx = groups < ES_VK_MAX_GROUPS ? (uint32_t)groups : ES_VK_MAX_GROUPS;
    const uint64_t y = (groups + *gx - 1) / *gx;
    if (y > ES_VK_MAX_GROUPS) return es_fail(err, ES_ERR_RANGE, "vulkan: %llu workgroups exceed the grid", (unsigned long long)groups);
    *gy = (uint32_t)y;
    return ES_OK;
}

static es_status dispatch(es_vk *vk, es_vk_pipe pipe, const es_vk_buf *const *bufs, int nb, const void *pc,
                          uint32_t pc_bytes, uint32_t gx, uint32_t gy, uint32_t gz, es_err *err) {
    if (!vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: kernel recorded outside es_vk_begin / es_vk_submit");
    if (vk->n_dispatch >= ES_VK_MAX_DISPATCHES)
        return es_fail(err, ES_ERR_FULL, "vulkan: more than %d kernels in one submission", ES_VK_MAX_DISPATCHES);
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, .descriptorPool = vk->dpool,
                                      .descriptorSetCount = 1, .pSetLayouts = &vk->dsl};
    VkDescriptorSet set;
    VkResult r = vkAllocateDescriptorSets(vk->dev, &ai, &set);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkAllocateDescriptorSets");
    VkDescriptorBufferInfo bi[ES_VK_BINDINGS];
    VkWriteDescriptorSet w[ES_VK_BINDINGS];
    for (int i = 0; i < ES_VK_BINDINGS; i++) {
        const es_vk_buf *b = bufs[i < nb && bufs[i] ? i : 0];
        bi[i] = (VkDescriptorBufferInfo){.buffer = b->buf, .offset = 0, .range = VK_WHOLE_SIZE};
        w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set, .dstBinding = (uint32_t)i,
                                      .descriptorCount = 1, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                      .pBufferInfo = &bi[i]};
    }
    vkUpdateDescriptorSets(vk->dev, ES_VK_BINDINGS, w, 0, NULL);
    vkCmdBindPipeline(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, vk->pipe[pipe]);
    vkCmdBindDescriptorSets(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, vk->layout, 0, 1, &set, 0, NULL);
    uint8_t block[ES_VK_PUSH_BYTES] = {0};
    memcpy(block, pc, pc_bytes);
    vkCmdPushConstants(vk->cmd, vk->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, ES_VK_PUSH_BYTES, block);
    vkCmdDispatch(vk->cmd, gx, gy, gz);
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
    vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb, 0,
                         NULL, 0, NULL);
    vk->n_dispatch++;
    return ES_OK;
}

/* A buffer of at least `bytes` that kernels index with 32-bit byte offsets. */
static es_status need(const es_vk_buf *b, uint64_t bytes, const char *what, es_err *err) {
    if (!b) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: %s buffer missing", what);
    if (bytes > b->bytes || bytes > UINT32_MAX)
        return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: %s needs %llu bytes, its buffer has %zu", what,
                       (unsigned long long)bytes, b->bytes);
    return ES_OK;
}

/* Index of a weight type among the matmul pipelines (the order of es_vk_pipe), -1 if none. */
static int wtype_index(uint32_t type) {
    switch (type) {
    case ES_TYPE_F32: return 0;
    case ES_TYPE_F16: return 1;
    case ES_TYPE_Q4_0: return 2;
    case ES_TYPE_Q8_0: return 3;
    case ES_TYPE_Q4_K: return 4;
    case ES_TYPE_Q6_K: return 5;
    case ES_TYPE_Q5_K: return 6;
    case ES_TYPE_BF16: return 7;
    default: return -1;
    }
}

bool es_vk_matmul_supports(uint32_t type) { return wtype_index(type) >= 0; }

/* Activation rows up to which the matrix–vector kernel runs (it reads each weight piece once for 4). */
#define ES_VK_MV_ROWS 4

es_status es_vk_matmul(es_vk *vk, es_vk_buf *y, const es_vk_buf *w, size_t w_off, uint32_t type, int64_t rows,
                       int64_t cols, const es_vk_buf *x, int64_t n, es_err *err) {
    return es_vk_matmul_part(vk, y, rows, 0, w, w_off, type, rows, cols, x, n, err);
}

es_status es_vk_matmul_part(es_vk *vk, es_vk_buf *y, int64_t y_stride, int64_t y_off, const es_vk_buf *w, size_t w_off,
                            uint32_t type, int64_t rows, int64_t cols, const es_vk_buf *x, int64_t n, es_err *err) {
    if (!es_vk_matmul_supports(type))
        return es_fail(err, ES_ERR_UNSUPPORTED, "vulkan: no matmul kernel for %s weights", es_type_name(type));
    if (rows <= 0 || cols <= 0 || n <= 0 || w_off % 4 || y_off < 0 || y_stride < y_off + rows)
        return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: matmul of %lld x %lld weights, %lld rows, offset %zu", (long long)rows,
                       (long long)cols, (long long)n, w_off);
    const size_t row_bytes = es_row_size(type, cols);
    if (row_bytes == 0)
        return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: %lld columns are not whole %s blocks", (long long)cols, es_type_name(type));
    es_status st;
    if ((st = need(w, w_off + (uint64_t)rows * row_bytes, "matmul weight", err)) != ES_OK ||
        (st = need(x, (uint64_t)n * cols * 4, "matmul input", err)) != ES_OK ||
        (st = need(y, ((uint64_t)(n - 1) * y_stride + y_off + rows) * 4, "matmul output", err)) != ES_OK)
        return st;
    const uint32_t pc[7] = {(uint32_t)rows, (uint32_t)cols, (uint32_t)n, (uint32_t)row_bytes, (uint32_t)w_off,
                            (uint32_t)y_stride, (uint32_t)y_off};
    const es_vk_buf *b[3] = {w, x, y};
    const int t = wtype_index(type);
    uint32_t gx, gy;
    if (n <= ES_VK_MV_ROWS) {
        if ((st = split_grid(((uint64_t)rows + 7) / 8, &gx, &gy, err)) != ES_OK) return st; /* 8 rows per workgroup */
        return dispatch(vk, (es_vk_pipe)(ES_VK_PIPE_MV_F32 + t), b, 3, pc, sizeof pc, gx, gy, 1, err);
    }
    /* tiles of 32 × 32: weight-row tiles in x (then z), activation tiles in y */
    const uint64_t tiles_n = ((uint64_t)n + 31) / 32;
    if ((st = split_grid(((uint64_t)rows + 31) / 32, &gx, &gy, err)) != ES_OK) return st;
    if (tiles_n > ES_VK_MAX_GROUPS) return es_fail(err, ES_ERR_RANGE, "vulkan: %lld activation rows exceed the grid", (long long)n);
    return dispatch(vk, (es_vk_pipe)(ES_VK_PIPE_MM_F32 + t), b, 3, pc, sizeof pc, gx, (uint32_t)tiles_n, gy, err);
}

es_status es_vk_rmsnorm(es_vk *vk, es_vk_buf *y, es_vk_buf *x, const es_vk_buf *r, const es_vk_buf *w, int64_t n,
                        int64_t d, float eps, es_err *err) {
    if (n <= 0 || d <= 0) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: rmsnorm of %lld rows of %lld", (long long)n, (long long)d);
    const uint64_t bytes = (uint64_t)n * d * 4;
    es_status st;
    if ((st = need(x, bytes, "rmsnorm input", err)) != ES_OK || (st = need(y, bytes, "rmsnorm output", err)) != ES_OK ||
        (st = need(w, (uint64_t)d * 4, "rmsnorm weight", err)) != ES_OK || (r && (st = need(r, bytes, "residual", err)) != ES_OK))
        return st;
    struct { uint32_t n, d, add; float eps; } pc = {(uint32_t)n, (uint32_t)d, r != NULL, eps};
    const es_vk_buf *b[4] = {x, w, y, r ? r : x};
    uint32_t gx, gy;
    if ((st = split_grid((uint64_t)n, &gx, &gy, err)) != ES_OK) return st;
    return dispatch(vk, ES_VK_PIPE_RMSNORM, b, 4, &pc, sizeof pc, gx, gy, 1, err);
}

es_status es_vk_rope(es_vk *vk, es_vk_buf *v, const es_vk_buf *cs, const es_vk_buf *sn, int64_t n, int n_heads,
                     int head_dim, int rope_dim, bool neox, int64_t row_stride, es_err *err) {
    if (n <= 0 || n_heads <= 0 || rope_dim <= 0 || rope_dim % 2 || rope_dim > head_dim || row_stride < (int64_t)n_heads * head_dim)
        return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: rope of %d heads of %d (rope %d), stride %lld", n_heads, head_dim,
                       rope_dim, (long long)row_stride);
    es_status st;
    const uint64_t tab = (uint64_t)n * (rope_dim / 2) * 4;
    if ((st = need(v, ((uint64_t)(n - 1) * row_stride + (uint64_t)n_heads * head_dim) * 4, "rope vectors", err)) != ES_OK ||
        (st = need(cs, tab, "rope cos", err)) != ES_OK || (st = need(sn, tab, "rope sin", err)) != ES_OK)
        return st;
    const uint32_t pc[6] = {(uint32_t)n, (uint32_t)n_heads, (uint32_t)head_dim, (uint32_t)rope_dim, neox, (uint32_t)row_stride};
    const es_vk_buf *b[3] = {v, cs, sn};
    uint32_t gx, gy;
    if ((st = split_grid(((uint64_t)n * n_heads * (rope_dim / 2) + 63) / 64, &gx, &gy, err)) != ES_OK) return st;
    return dispatch(vk, ES_VK_PIPE_ROPE, b, 3, pc, sizeof pc, gx, gy, 1, err);
}

static es_status ew(es_vk *vk, uint32_t op, es_vk_buf *a, const es_vk_buf *b, int64_t count, int64_t b_count, int64_t width,
                    es_err *err) {
    if (count <= 0 || width <= 0) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: elementwise op over %lld", (long long)count);
    es_status st;
    if ((st = need(a, (uint64_t)count * 4, "elementwise target", err)) != ES_OK ||
        (st = need(b, (uint64_t)b_count * 4, "elementwise operand", err)) != ES_OK)
        return st;
    const uint32_t pc[3] = {(uint32_t)count, op, (uint32_t)width};
    const es_vk_buf *bufs[2] = {a, b};
    uint32_t gx, gy;
    if ((st = split_grid(((uint64_t)count + 63) / 64, &gx, &gy, err)) != ES_OK) return st;
    return dispatch(vk, ES_VK_PIPE_EW, bufs, 2, pc, sizeof pc, gx, gy, 1, err);
}

es_status es_vk_add(es_vk *vk, es_vk_buf *a, const es_vk_buf *b, int64_t count, es_err *err) {
    return ew(vk, 0, a, b, count, count, 1, err);
}

es_status es_vk_bias(es_vk *vk, es_vk_buf *a, const es_vk_buf *bias, int64_t n, int64_t width, es_err *err) {
    return ew(vk, 1, a, bias, n * width, width, width, err);
}

es_status es_vk_swiglu(es_vk *vk, es_vk_buf *g, const es_vk_buf *u, int64_t count, es_err *err) {
    return ew(vk, 2, g, u, count, count, 1, err);
}

static es_status rows_op(es_vk *vk, es_vk_buf *dst, const es_vk_buf *src, const es_vk_buf *idx, int64_t n, int64_t d,
                         uint32_t mode, es_err *err) {
    if (n <= 0 || d <= 0 || (mode == 2 && d % 2) || (mode == 3 && d % 64))
        return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: rows op over %lld x %lld", (long long)n, (long long)d);
    const uint64_t big = (uint64_t)n * d * 4, one = mode == 3 ? (uint64_t)d / 32 * 34 : (uint64_t)d * (mode == 2 ? 2 : 4);
    es_status st;
    if ((st = need(idx, (uint64_t)n * 4, "row index", err)) != ES_OK || (st = need(mode ? src : dst, big, "rows", err)) != ES_OK ||
        (st = need(mode ? dst : src, one, "rows", err)) != ES_OK)
        return st;
    const uint32_t pc[3] = {(uint32_t)n, (uint32_t)d, mode};
    const es_vk_buf *b[3] = {src, dst, idx};
    uint32_t gx, gy;
    const uint64_t items = mode == 3 ? (uint64_t)n : mode == 2 ? (uint64_t)n * (uint64_t)(d / 2) : (uint64_t)n * d;
    if ((st = split_grid((items + 63) / 64, &gx, &gy, err)) != ES_OK) return st;
    return dispatch(vk, ES_VK_PIPE_ROWS, b, 3, pc, sizeof pc, gx, gy, 1, err);
}

es_status es_vk_rows(es_vk *vk, es_vk_buf *dst, const es_vk_buf *src, const es_vk_buf *idx, int64_t n, int64_t d,
                     bool scatter, es_err *err) {
    return rows_op(vk, dst, src, idx, n, d, scatter ? 1u : 0u, err);
}

es_status es_vk_rows_f16(es_vk *vk, es_vk_buf *dst, const es_vk_buf *src, const es_vk_buf *idx, int64_t n, int64_t d, es_err *err) {
    return rows_op(vk, dst, src, idx, n, d, 2u, err);
}

es_status es_vk_rows_q8(es_vk *vk, es_vk_buf *dst, const es_vk_buf *src, const es_vk_buf *idx, int64_t n, int64_t d, es_err *err) {
    return rows_op(vk, dst, src, idx, n, d, 3u, err);
}

es_status es_vk_copy(es_vk *vk, es_vk_buf *dst, size_t dst_off, const es_vk_buf *src, size_t src_off, size_t bytes,
                     es_err *err) {
    if (!vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: copy recorded outside es_vk_begin / es_vk_submit");
    if (src_off > src->bytes || bytes > src->bytes - src_off || dst_off > dst->bytes || bytes > dst->bytes - dst_off)
        return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: copy of %zu bytes outside its buffers", bytes);
    if (bytes == 0) return ES_OK;
    VkBufferCopy c = {.srcOffset = src_off, .dstOffset = dst_off, .size = bytes};
    vkCmdCopyBuffer(vk->cmd, src->buf, dst->buf, 1, &c);
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_READ_BIT |
                                           VK_ACCESS_SHADER_WRITE_BIT};
    vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    return ES_OK;
}

es_status es_vk_attention(es_vk *vk, const es_vk_attn_args *a, es_err *err) {
    if (a->n <= 0 || a->n_head <= 0 || a->n_head_kv <= 0 || a->n_head % a->n_head_kv || a->head_dim <= 0 ||
        a->head_dim > ES_VK_ATTN_MAX_HEAD_DIM || a->block_size <= 0 || (a->kv_f16 && a->head_dim % 2) ||
        (a->kv_q8 && (a->head_dim % 32 || (a->n_head_kv * a->head_dim) % 64)))
        return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: attention of %d heads (%d kv) of %d", a->n_head, a->n_head_kv, a->head_dim);
    const uint64_t qbytes = (uint64_t)a->n * a->n_head * a->head_dim * 4;
    es_status st;
    if ((st = need(a->q, qbytes, "attention q", err)) != ES_OK || (st = need(a->out, qbytes, "attention output", err)) != ES_OK ||
        (st = need(a->meta, (uint64_t)a->n * 16, "attention rows", err)) != ES_OK ||
        (st = need(a->k_cache, 4, "k cache", err)) != ES_OK || (st = need(a->v_cache, 4, "v cache", err)) != ES_OK ||
        (st = need(a->anc, 4, "ancestors", err)) != ES_OK || (st = need(a->tab, 4, "block tables", err)) != ES_OK)
        return st;
    struct { uint32_t n, n_head, n_head_kv, head_dim, kv_dim, bs; float scale; } pc = {
        (uint32_t)a->n, (uint32_t)a->n_head, (uint32_t)a->n_head_kv, (uint32_t)a->head_dim,
        (uint32_t)(a->n_head_kv * a->head_dim), (uint32_t)a->block_size, a->scale};
    const es_vk_buf *b[7] = {a->q, a->k_cache, a->v_cache, a->out, a->meta, a->anc, a->tab};
    uint32_t gx, gy;
    if ((st = split_grid((uint64_t)a->n * a->n_head, &gx, &gy, err)) != ES_OK) return st;
    return dispatch(vk, a->kv_q8 ? ES_VK_PIPE_ATTN_Q8 : a->kv_f16 ? ES_VK_PIPE_ATTN_F16 : ES_VK_PIPE_ATTN, b, 7, &pc, sizeof pc, gx, gy, 1, err);
}
