/* vk.h — the Vulkan compute device layer: device selection and capabilities, buffers in device
 * memory, and the kernels of the forward pass as compute shaders (the .comp files under shaders/, compiled by glslc at
 * build time and embedded in the binary).
 *
 * Work is recorded, then submitted: es_vk_begin opens a command buffer, each kernel call records one
 * dispatch followed by a barrier (the next kernel sees its writes), es_vk_submit runs them all and
 * waits. Buffer reads and writes (es_vk_buf_write / es_vk_buf_read) run outside a recording.
 *
 * When the build found no Vulkan loader or no glslc (the aarch64 cross build, say), every function
 * here returns ES_ERR_UNSUPPORTED saying so, and es_vk_available() is false. */
#ifndef ES_BACKEND_VK_H
#define ES_BACKEND_VK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"

/* Whether this build has the Vulkan backend. */
bool es_vk_available(void);

typedef struct es_vk_params {
    int device;           /* index in es_devices' list */
    /* Enable VK_LAYER_KHRONOS_validation and report its messages (warnings and errors) through
     * on_message; ES_ERR_UNSUPPORTED if the layer is not installed. Tests turn it on. */
    bool validation;
    void (*on_message)(void *ud, bool is_error, const char *msg);
    void *ud;
    /* Never map buffers, even where device memory is host-visible: every write and read goes through
     * the staging buffer, as on a discrete GPU without resizable BAR (tests on lavapipe). */
    bool force_staging;
} es_vk_params;

typedef struct es_vk es_vk;
typedef struct es_vk_buf es_vk_buf;

/* Opens device p->device: a compute queue, the pipelines of every kernel, a staging buffer.
 * ES_ERR_RANGE for an index past the list, ES_ERR_UNSUPPORTED for a device without what the kernels
 * need, ES_ERR_IO when the driver refuses. */
es_status es_vk_init(const es_vk_params *p, es_vk **out, es_err *err);
void es_vk_free(es_vk *vk);
/* Name and capabilities of the open device. */
const es_device_info *es_vk_info(const es_vk *vk);

/* A buffer of `bytes` in device memory (host-visible when the device offers that for device-local
 * memory, else reached through the staging buffer). ES_ERR_NOMEM when the device is out of memory,
 * ES_ERR_RANGE when bytes exceeds what one binding may cover (maxStorageBufferRange). */
es_status es_vk_buf_alloc(es_vk *vk, size_t bytes, es_vk_buf **out, es_err *err);
void es_vk_buf_free(es_vk *vk, es_vk_buf *b);
size_t es_vk_buf_size(const es_vk_buf *b);
/* Copies host bytes into / out of a buffer at byte offset `off` (4-byte aligned; off + bytes within
 * the buffer). Not while recording. */
es_status es_vk_buf_write(es_vk *vk, es_vk_buf *b, size_t off, const void *src, size_t bytes, es_err *err);
es_status es_vk_buf_read(es_vk *vk, const es_vk_buf *b, size_t off, void *dst, size_t bytes, es_err *err);

/* Sizes the host-visible ring through which es_vk_upload and es_vk_readback move data inside a
 * recording: `bytes` is the most one recording moves (plus 64 per transfer for alignment). */
es_status es_vk_ring_init(es_vk *vk, size_t bytes, es_err *err);
/* Recorded: src (copied into the ring now) lands in dst at dst_off when the submission runs, before
 * the kernels recorded after it. One submission per pass, however many inputs it has. */
es_status es_vk_upload(es_vk *vk, es_vk_buf *dst, size_t dst_off, const void *src, size_t bytes, es_err *err);
/* Recorded: bytes of src at src_off are copied into the ring when the submission runs (after every
 * kernel recorded before); *out points at them from es_vk_submit until the next es_vk_begin. */
es_status es_vk_readback(es_vk *vk, const es_vk_buf *src, size_t src_off, size_t bytes, const void **out, es_err *err);

es_status es_vk_begin(es_vk *vk, es_err *err);
/* Runs everything recorded since es_vk_begin and waits for it. ES_ERR_IO if the device is lost. */
es_status es_vk_submit(es_vk *vk, es_err *err);

/* A pass that hands work to the host in the middle (the hybrid pass of host-tier sessions) submits
 * what is recorded so far without waiting, and goes on recording: es_vk_flush returns a ticket that
 * es_vk_wait waits for, so the host computes while the device runs. Submissions run in order (each
 * recording starts with a full barrier), and es_vk_submit waits for all of them. At most `n` flushes
 * between es_vk_begin and es_vk_submit (es_vk_reserve_flushes, not while recording). */
es_status es_vk_reserve_flushes(es_vk *vk, int n, es_err *err);
es_status es_vk_flush(es_vk *vk, int *ticket, es_err *err);
es_status es_vk_wait(es_vk *vk, int ticket, es_err *err);
/* A buffer in host memory the device copies to and from (never bound to a kernel): written and read
 * through es_vk_buf_map between submissions. */
es_status es_vk_buf_alloc_host(es_vk *vk, size_t bytes, es_vk_buf **out, es_err *err);
void *es_vk_buf_map(es_vk_buf *b);
/* Recorded: bytes of src at src_off into the host buffer dst at dst_off, after every kernel recorded
 * before, readable on the host once the submission holding it is waited for. */
es_status es_vk_copy_to_host(es_vk *vk, es_vk_buf *dst, size_t dst_off, const es_vk_buf *src, size_t src_off, size_t bytes,
                             es_err *err);

/* Asynchronous uploads (two KV tiers: sessions promoted to the device tier). es_vk_async_upload
 * stages host bytes now and records their copy into dst; es_vk_async_submit hands the copies to the
 * queue and returns without waiting. Outside a recording. They run before anything submitted after
 * them: es_vk_begin submits what is still open and starts the next recording with a barrier, and the
 * buffer reads / writes wait for them. ES_VK_ASYNC_SLOTS staging slots of slot_bytes each are used in
 * turn; the host waits only when the slot it needs next is still being copied from (es_vk_async_stats'
 * waits), so one upload is at most slot_bytes (ES_ERR_RANGE). */
#define ES_VK_ASYNC_SLOTS 2
es_status es_vk_async_init(es_vk *vk, size_t slot_bytes, es_err *err);
es_status es_vk_async_upload(es_vk *vk, es_vk_buf *dst, size_t dst_off, const void *src, size_t bytes, es_err *err);
es_status es_vk_async_submit(es_vk *vk, es_err *err);
/* Waits until every asynchronous upload has landed. */
es_status es_vk_async_wait(es_vk *vk, es_err *err);
/* Submissions made without waiting, and the times the host waited for a staging slot. */
void es_vk_async_stats(const es_vk *vk, int64_t *submits, int64_t *waits);

/* ---- kernels (recorded; each checks its arguments and returns ES_ERR_INVALID_ARG on misuse) ---- */

/* Whether es_vk_matmul takes weights of this GGUF type (F32, F16, Q8_0, Q4_0, Q4_K, Q6_K). */
bool es_vk_matmul_supports(uint32_t type);
/* y[n][rows] = x[n][cols] · wᵀ, w of `type` in GGUF's row layout (rows of row_bytes from byte
 * w_off, a multiple of 4). Quantised types need cols a multiple of their block (32; 256 for K-quants). A matrix–vector
 * kernel for n <= 4 (each weight read once), a tiled matrix–matrix one above. */
es_status es_vk_matmul(es_vk *vk, es_vk_buf *y, const es_vk_buf *w, size_t w_off, uint32_t type, int64_t rows,
                       int64_t cols, const es_vk_buf *x, int64_t n, es_err *err);
/* The same, writing y[a][y_off + r] for rows of y_stride floats: one part of a matrix whose rows are
 * split across buffers (each at most maxStorageBufferRange). */
es_status es_vk_matmul_part(es_vk *vk, es_vk_buf *y, int64_t y_stride, int64_t y_off, const es_vk_buf *w, size_t w_off,
                            uint32_t type, int64_t rows, int64_t cols, const es_vk_buf *x, int64_t n, es_err *err);
/* y[i] = w ⊙ x[i] / sqrt(mean(x[i]²) + eps) for n rows of d; with r non-NULL x[i] += r[i] first (and
 * x keeps the sum). */
es_status es_vk_rmsnorm(es_vk *vk, es_vk_buf *y, es_vk_buf *x, const es_vk_buf *r, const es_vk_buf *w, int64_t n,
                        int64_t d, float eps, es_err *err);
/* In-place RoPE of n rows (row_stride floats apart) of n_heads heads: consecutive pairs, or halves
 * when neox; cs / sn hold n × rope_dim/2 cosines and sines of each row's angles. */
es_status es_vk_rope(es_vk *vk, es_vk_buf *v, const es_vk_buf *cs, const es_vk_buf *sn, int64_t n, int n_heads,
                     int head_dim, int rope_dim, bool neox, int64_t row_stride, es_err *err);
/* a[i] += b[i] for i < count. */
es_status es_vk_add(es_vk *vk, es_vk_buf *a, const es_vk_buf *b, int64_t count, es_err *err);
/* a[i][j] += bias[j] for n rows of width. */
es_status es_vk_bias(es_vk *vk, es_vk_buf *a, const es_vk_buf *bias, int64_t n, int64_t width, es_err *err);
/* g[i] = silu(g[i]) · u[i] for i < count. */
es_status es_vk_swiglu(es_vk *vk, es_vk_buf *g, const es_vk_buf *u, int64_t count, es_err *err);
/* Rows of d floats by the int32 index list idx[n]: gather (dst[r] = src[idx[r]]) or scatter
 * (dst[idx[r]] = src[r]). Indices must lie within the buffers (not checked on the device). */
es_status es_vk_rows(es_vk *vk, es_vk_buf *dst, const es_vk_buf *src, const es_vk_buf *idx, int64_t n, int64_t d,
                     bool scatter, es_err *err);
/* Scatters n rows of d f32 values from src into the f16 rows idx[r] of dst (d even; round to nearest
 * as the device converts). */
es_status es_vk_rows_f16(es_vk *vk, es_vk_buf *dst, const es_vk_buf *src, const es_vk_buf *idx, int64_t n, int64_t d, es_err *err);
/* Scatters n rows of d f32 values from src into the q8_0 rows idx[r] of dst (GGUF Q8_0 blocks of 32:
 * an fp16 scale max|x| / 127, int8 values rounded half away from zero, as the CPU quantises; d a
 * multiple of 64, so every row starts on a 32-bit word); a negative index is skipped. */
es_status es_vk_rows_q8(es_vk *vk, es_vk_buf *dst, const es_vk_buf *src, const es_vk_buf *idx, int64_t n, int64_t d, es_err *err);
/* Copies bytes between buffers (regions must not overlap); later kernels and copies see it. */
es_status es_vk_copy(es_vk *vk, es_vk_buf *dst, size_t dst_off, const es_vk_buf *src, size_t src_off, size_t bytes,
                     es_err *err);

/* Tree-masked attention over a paged cache (shaders/attn.comp). For each of n rows and n_head query
 * heads: q (n, n_head·head_dim) attends to its sequence's slots [0, meta[4i]) and then
 * anc[meta[4i+1] .. + meta[4i+2]), slot s in cache row tab[meta[4i+3] + s / bs] · bs + s % bs of
 * k_cache / v_cache (rows of kv_dim = n_head_kv·head_dim); out gets (n, n_head·head_dim). The
 * softmax runs online over tiles of slots, so no scratch grows with the context; head_dim <= 256
 * (ES_VK_ATTN_MAX_HEAD_DIM). */
#define ES_VK_ATTN_MAX_HEAD_DIM 256
typedef struct es_vk_attn_args {
    es_vk_buf *out;
    const es_vk_buf *q, *k_cache, *v_cache, *meta, *anc, *tab;
    int64_t n;
    int n_head, n_head_kv, head_dim, block_size;
    float scale;
    bool kv_f16; /* the cache rows are f16 (es_vk_rows_f16), else f32 */
    bool kv_q8;  /* the cache rows are q8_0 (es_vk_rows_q8); kv_f16 ignored */
} es_vk_attn_args;
es_status es_vk_attention(es_vk *vk, const es_vk_attn_args *a, es_err *err);

#endif
