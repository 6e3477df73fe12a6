/* vk_none.c — the Vulkan device layer of a build without Vulkan (no loader or no glslc found when it
 * was configured: the aarch64 cross build, say). Nothing can be opened, so every call says why. */
#include "backend/vulkan/vk.h"
#include "util/err.h"

#define ES_VK_NONE "this edgespec was built without Vulkan (the Vulkan loader or glslc was missing at build time)"

bool es_vk_available(void) { return false; }

es_status es_devices(es_device_info *out, int cap, int *n, es_err *err) {
    (void)out, (void)cap;
    *n = 0;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}

es_status es_vk_init(const es_vk_params *p, es_vk **out, es_err *err) {
    (void)p;
    *out = NULL;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}

void es_vk_free(es_vk *vk) { (void)vk; }
const es_device_info *es_vk_info(const es_vk *vk) { (void)vk; return NULL; }
es_status es_vk_buf_alloc(es_vk *vk, size_t bytes, es_vk_buf **out, es_err *err) {
    (void)vk, (void)bytes;
    *out = NULL;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
void es_vk_buf_free(es_vk *vk, es_vk_buf *b) { (void)vk, (void)b; }
size_t es_vk_buf_size(const es_vk_buf *b) { (void)b; return 0; }
es_status es_vk_buf_write(es_vk *vk, es_vk_buf *b, size_t off, const void *src, size_t bytes, es_err *err) {
    (void)vk, (void)b, (void)off, (void)src, (void)bytes;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_buf_read(es_vk *vk, const es_vk_buf *b, size_t off, void *dst, size_t bytes, es_err *err) {
    (void)vk, (void)b, (void)off, (void)dst, (void)bytes;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_ring_init(es_vk *vk, size_t bytes, es_err *err) {
    (void)vk, (void)bytes;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_upload(es_vk *vk, es_vk_buf *dst, size_t dst_off, const void *src, size_t bytes, es_err *err) {
    (void)vk, (void)dst, (void)dst_off, (void)src, (void)bytes;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_readback(es_vk *vk, const es_vk_buf *src, size_t src_off, size_t bytes, const void **out, es_err *err) {
    (void)vk, (void)src, (void)src_off, (void)bytes;
    *out = NULL;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_async_init(es_vk *vk, size_t slot_bytes, es_err *err) {
    (void)vk, (void)slot_bytes;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_async_upload(es_vk *vk, es_vk_buf *dst, size_t dst_off, const void *src, size_t bytes, es_err *err) {
    (void)vk, (void)dst, (void)dst_off, (void)src, (void)bytes;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_async_submit(es_vk *vk, es_err *err) { (void)vk; return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE); }
es_status es_vk_async_wait(es_vk *vk, es_err *err) { (void)vk; return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE); }
void es_vk_async_stats(const es_vk *vk, int64_t *submits, int64_t *waits) {
    (void)vk;
    *submits = *waits = 0;
}
es_status es_vk_begin(es_vk *vk, es_err *err) { (void)vk; return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE); }
es_status es_vk_submit(es_vk *vk, es_err *err) { (void)vk; return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE); }
bool es_vk_matmul_supports(uint32_t type) { (void)type; return false; }
es_status es_vk_matmul(es_vk *vk, es_vk_buf *y, const es_vk_buf *w, size_t w_off, uint32_t type, int64_t rows,
                       int64_t cols, const es_vk_buf *x, int64_t n, es_err *err) {
    (void)vk, (void)y, (void)w, (void)w_off, (void)type, (void)rows, (void)cols, (void)x, (void)n;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_matmul_part(es_vk *vk, es_vk_buf *y, int64_t y_stride, int64_t y_off, const es_vk_buf *w, size_t w_off,
                            uint32_t type, int64_t rows, int64_t cols, const es_vk_buf *x, int64_t n, es_err *err) {
    (void)vk, (void)y, (void)y_stride, (void)y_off, (void)w, (void)w_off, (void)type, (void)rows, (void)cols, (void)x, (void)n;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_rmsnorm(es_vk *vk, es_vk_buf *y, es_vk_buf *x, const es_vk_buf *r, const es_vk_buf *w, int64_t n,
                        int64_t d, float eps, es_err *err) {
    (void)vk, (void)y, (void)x, (void)r, (void)w, (void)n, (void)d, (void)eps;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_rope(es_vk *vk, es_vk_buf *v, const es_vk_buf *cs, const es_vk_buf *sn, int64_t n, int n_heads,
                     int head_dim, int rope_dim, bool neox, int64_t row_stride, es_err *err) {
    (void)vk, (void)v, (void)cs, (void)sn, (void)n, (void)n_heads, (void)head_dim, (void)rope_dim, (void)neox, (void)row_stride;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_add(es_vk *vk, es_vk_buf *a, const es_vk_buf *b, int64_t count, es_err *err) {
    (void)vk, (void)a, (void)b, (void)count;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_bias(es_vk *vk, es_vk_buf *a, const es_vk_buf *bias, int64_t n, int64_t width, es_err *err) {
    (void)vk, (void)a, (void)bias, (void)n, (void)width;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_swiglu(es_vk *vk, es_vk_buf *g, const es_vk_buf *u, int64_t count, es_err *err) {
    (void)vk, (void)g, (void)u, (void)count;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_rows(es_vk *vk, es_vk_buf *dst, const es_vk_buf *src, const es_vk_buf *idx, int64_t n, int64_t d,
                     bool scatter, es_err *err) {
    (void)vk, (void)dst, (void)src, (void)idx, (void)n, (void)d, (void)scatter;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_copy(es_vk *vk, es_vk_buf *dst, size_t dst_off, const es_vk_buf *src, size_t src_off, size_t bytes,
                     es_err *err) {
    (void)vk, (void)dst, (void)dst_off, (void)src, (void)src_off, (void)bytes;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_attention(es_vk *vk, const es_vk_attn_args *a, es_err *err) {
    (void)vk, (void)a;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}

#include "backend/vulkan/vk_backend.h"

es_status es_backend_vulkan_init(const es_model *model, es_kv *kv, const es_ctx_params *p, es_backend **out,
                                 es_err *err) {
    (void)model, (void)kv, (void)p;
    *out = NULL;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_reserve_flushes(es_vk *vk, int n, es_err *err) {
    (void)vk, (void)n;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_flush(es_vk *vk, int *ticket, es_err *err) {
    (void)vk;
    *ticket = -1;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_wait(es_vk *vk, int ticket, es_err *err) {
    (void)vk, (void)ticket;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_buf_alloc_host(es_vk *vk, size_t bytes, es_vk_buf **out, es_err *err) {
    (void)vk, (void)bytes;
    *out = NULL;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
void *es_vk_buf_map(es_vk_buf *b) { (void)b; return NULL; }
es_status es_vk_copy_to_host(es_vk *vk, es_vk_buf *dst, size_t dst_off, const es_vk_buf *src, size_t src_off, size_t bytes,
                             es_err *err) {
    (void)vk, (void)dst, (void)dst_off, (void)src, (void)src_off, (void)bytes;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
es_status es_vk_rows_q8(es_vk *vk, es_vk_buf *dst, const es_vk_buf *src, const es_vk_buf *idx, int64_t n, int64_t d, es_err *err) {
    (void)vk, (void)dst, (void)src, (void)idx, (void)n, (void)d;
    return es_fail(err, ES_ERR_UNSUPPORTED, ES_VK_NONE);
}
