/* vk_impl.h — internals of the Vulkan device layer shared by vk_device.c and vk_ops.c. */
#ifndef ES_BACKEND_VK_IMPL_H
#define ES_BACKEND_VK_IMPL_H

#include <vulkan/vulkan.h>

#include "backend/vulkan/vk.h"

/* Storage-buffer bindings every pipeline's one descriptor set has (unused ones point at a bound buffer). */
#define ES_VK_BINDINGS 8
/* Bytes of push constants every pipeline layout declares (each kernel's block fits in it). */
#define ES_VK_PUSH_BYTES 32
/* Dispatches one recording may hold (descriptor sets in the pool). */
#define ES_VK_MAX_DISPATCHES 4096
/* Bytes of the host-visible staging buffer through which non-mappable buffers are written and read. */
#define ES_VK_STAGING_BYTES ((size_t)4 << 20)

/* One embedded SPIR-V module (vk_shaders.c, generated at build time from the .comp files under shaders/). */
typedef struct es_vk_spirv {
    const char *name;
    const uint32_t *code;
    size_t bytes;
} es_vk_spirv;
const es_vk_spirv *es_vk_shader(const char *name);

/* Pipelines: one per (kernel, weight type). es_vk_pipe_shader names each one's module. */
typedef enum {
    /* per weight type, in the order of es_vk_wtype (vk_ops.c) */
    ES_VK_PIPE_MV_F32, ES_VK_PIPE_MV_F16, ES_VK_PIPE_MV_Q4_0, ES_VK_PIPE_MV_Q8_0, ES_VK_PIPE_MV_Q4_K, ES_VK_PIPE_MV_Q6_K,
    ES_VK_PIPE_MV_Q5_K, ES_VK_PIPE_MV_BF16,
    ES_VK_PIPE_MM_F32, ES_VK_PIPE_MM_F16, ES_VK_PIPE_MM_Q4_0, ES_VK_PIPE_MM_Q8_0, ES_VK_PIPE_MM_Q4_K, ES_VK_PIPE_MM_Q6_K,
    ES_VK_PIPE_MM_Q5_K, ES_VK_PIPE_MM_BF16,
    ES_VK_PIPE_RMSNORM, ES_VK_PIPE_ROPE, ES_VK_PIPE_EW, ES_VK_PIPE_ROWS, ES_VK_PIPE_ATTN, ES_VK_PIPE_ATTN_F16, ES_VK_PIPE_ATTN_Q8,
    ES_VK_PIPE_COUNT
} es_vk_pipe;
extern const char *const es_vk_pipe_shader[ES_VK_PIPE_COUNT];

struct es_vk_buf {
    VkBuffer buf;
    VkDeviceMemory mem;
    size_t bytes;
    bool host;  /* host-visible and coherent: written and read through map */
    void *map;
};

struct es_vk {
    es_vk_params p;
    es_device_info info;
    VkInstance inst;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice pd;
    VkPhysicalDeviceLimits limits;
    VkPhysicalDeviceMemoryProperties mem;
    VkDevice dev;
    uint32_t qfam;
    VkQueue queue;
    VkCommandPool cpool;
    VkCommandBuffer cmd;   /* kernels, between es_vk_begin and es_vk_submit */
    VkCommandBuffer xfer;  /* staged copies */
    VkFence fence;
    /* es_vk_flush: the recording goes on in cmds[cur] after cmds[0 .. cur) were submitted, each with
     * its fence (es_vk_reserve_flushes); cmds[0] is cmd's home */
    VkCommandBuffer *cmds;
    VkFence *fences;
    int n_cmds, cur;
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkDescriptorPool dpool;
    VkPipeline pipe[ES_VK_PIPE_COUNT];
    es_vk_buf *staging;
    es_vk_buf *ring;       /* es_vk_upload / es_vk_readback, reset by es_vk_begin */
    size_t ring_used;
    bool recording;
    int n_dispatch;
    /* es_vk_async_*: uploads the host does not wait for, staged in slots used in turn; a slot is
     * reused once its fence has signalled */
    struct vk_async_slot {
        VkCommandBuffer cmd;
        VkFence fence;
        es_vk_buf *stage;
        size_t used;
        bool open, busy; /* recording / submitted and not yet seen done */
    } async[ES_VK_ASYNC_SLOTS];
    int async_cur;
    bool async_unordered;  /* submitted since the last es_vk_begin: the next recording starts with a barrier */
    int64_t async_submits, async_waits;
};

es_status es_vk_fail(es_err *err, VkResult r, const char *what);
/* host: a mappable staging-kind buffer rather than device-local memory */
es_status es_vk_buf_alloc_kind(es_vk *vk, size_t bytes, bool host, es_vk_buf **out, es_err *err);
/* Submits one command buffer and waits for it. */
es_status es_vk_run(es_vk *vk, VkCommandBuffer cb, es_err *err);

#endif
