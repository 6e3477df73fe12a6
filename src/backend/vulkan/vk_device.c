/* vk_device.c — Vulkan instance, device selection and capabilities, buffers, command submission and
 * the compute pipelines of the kernels (vk.h). The kernels' recording lives in vk_ops.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/vulkan/vk_impl.h"
#include "util/err.h"

bool es_vk_available(void) { return true; }

static const char *vk_result_str(VkResult r) {
    switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER (no Vulkan driver installed?)";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    default: return "VkResult error";
    }
}

es_status es_vk_fail(es_err *err, VkResult r, const char *what) {
    const es_status st = r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY ? ES_ERR_NOMEM : ES_ERR_IO;
    return es_fail(err, st, "vulkan: %s failed: %s (%d)", what, vk_result_str(r), (int)r);
}

/* ---- instance and device capabilities --------------------------------------------------------- */

static VKAPI_ATTR VkBool32 VKAPI_CALL on_debug(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                               VkDebugUtilsMessageTypeFlagsEXT type,
                                               const VkDebugUtilsMessengerCallbackDataEXT *data, void *ud) {
    (void)type;
    es_vk *vk = ud;
    if (vk->p.on_message)
        vk->p.on_message(vk->p.ud, (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) != 0,
                         data && data->pMessage ? data->pMessage : "(no message)");
    return VK_FALSE;
}

static bool has_layer(const char *name) {
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0) return false;
    VkLayerProperties *l = calloc(n, sizeof *l);
    if (!l) return false;
    bool found = false;
    if (vkEnumerateInstanceLayerProperties(&n, l) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            if (!strcmp(l[i].layerName, name)) found = true;
    free(l);
    return found;
}

/* An instance; with a debug messenger reporting to vk (when vk and vk->p.validation). */
static es_status make_instance(es_vk *vk, VkInstance *out, es_err *err) {
    static const char *layer = "VK_LAYER_KHRONOS_validation";
    static const char *ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    const bool validate = vk && vk->p.validation;
    if (validate && !has_layer(layer))
        return es_fail(err, ES_ERR_UNSUPPORTED,
                       "vulkan: validation asked for but the layer %s is not installed (Debian: vulkan-validationlayers)", layer);
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "edgespec",
                             .pEngineName = "edgespec", .apiVersion = VK_API_VERSION_1_2};
    VkDebugUtilsMessengerCreateInfoEXT dbg = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_debug,
        .pUserData = vk};
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app};
    if (validate) {
        ci.enabledLayerCount = 1;
        ci.ppEnabledLayerNames = &layer;
        ci.enabledExtensionCount = 1;
        ci.ppEnabledExtensionNames = &ext;
        ci.pNext = &dbg; /* also covers vkCreateInstance / vkDestroyInstance themselves */
    }
    VkResult r = vkCreateInstance(&ci, NULL, out);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkCreateInstance");
    if (validate) {
        PFN_vkCreateDebugUtilsMessengerEXT mk =
            (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(*out, "vkCreateDebugUtilsMessengerEXT");
        if (!mk || (r = mk(*out, &dbg, NULL, &vk->messenger)) != VK_SUCCESS) {
            vkDestroyInstance(*out, NULL);
            *out = VK_NULL_HANDLE;
            return mk ? es_vk_fail(err, r, "vkCreateDebugUtilsMessengerEXT")
                      : es_fail(err, ES_ERR_UNSUPPORTED, "vulkan: VK_EXT_debug_utils is missing");
        }
    }
    return ES_OK;
}

static bool has_device_ext(VkPhysicalDevice pd, const char *name) {
    uint32_t n = 0;
    if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || n == 0) return false;
    VkExtensionProperties *e = calloc(n, sizeof *e);
    if (!e) return false;
    bool found = false;
    if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, e) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            if (!strcmp(e[i].extensionName, name)) found = true;
    free(e);
    return found;
}

static void describe(VkPhysicalDevice pd, int index, es_device_info *d) {
    memset(d, 0, sizeof *d);
    snprintf(d->backend, sizeof d->backend, "vulkan");
    d->index = index;
    VkPhysicalDeviceSubgroupProperties sg = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 pr = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sg};
    vkGetPhysicalDeviceProperties2(pd, &pr);
    snprintf(d->name, sizeof d->name, "%s", pr.properties.deviceName);
    const char *type = "other";
    switch (pr.properties.deviceType) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: type = "discrete"; break;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: type = "integrated"; break;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: type = "virtual"; break;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: type = "cpu"; break;
    default: break;
    }
    snprintf(d->type, sizeof d->type, "%s", type);
    d->subgroup_size = sg.subgroupSize;
    d->max_storage_buffer_range = pr.properties.limits.maxStorageBufferRange;
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    for (uint32_t h = 0; h < mp.memoryHeapCount; h++)
        if ((mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) && (int64_t)mp.memoryHeaps[h].size > d->memory_bytes)
            d->memory_bytes = (int64_t)mp.memoryHeaps[h].size;

    /* features structs beyond Vulkan 1.1 are chained only where the device reports 1.2 */
    VkPhysicalDeviceShaderFloat16Int8Features f16i8 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
    VkPhysicalDevice8BitStorageFeatures s8 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES, .pNext = &f16i8};
    VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    const bool v12 = pr.properties.apiVersion >= VK_API_VERSION_1_2;
    if (v12) s16.pNext = &s8;
    VkPhysicalDeviceFeatures2 f = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &s16};
    vkGetPhysicalDeviceFeatures2(pd, &f);
#define FEATURE(cond, nm) \
    if ((cond) && d->n_features < ES_DEVICE_FEATURES_MAX) d->features[d->n_features++] = nm
    FEATURE(v12 && f16i8.shaderFloat16, "fp16");
    FEATURE(v12 && f16i8.shaderInt8, "int8");
    FEATURE(s16.storageBuffer16BitAccess, "storage16");
    FEATURE(v12 && s8.storageBuffer8BitAccess, "storage8");
    FEATURE(sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT, "subgroup_arith");
    FEATURE(has_device_ext(pd, "VK_NV_cooperative_matrix"), "coopmat_nv");
    FEATURE(has_device_ext(pd, "VK_KHR_shader_integer_dot_product"), "int_dot");
#undef FEATURE
}

static es_status physical_devices(VkInstance inst, VkPhysicalDevice **out, uint32_t *n, es_err *err) {
    *out = NULL;
    *n = 0;
    VkResult r = vkEnumeratePhysicalDevices(inst, n, NULL);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkEnumeratePhysicalDevices");
    if (*n == 0) return ES_OK;
    *out = calloc(*n, sizeof **out);
    if (!*out) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    r = vkEnumeratePhysicalDevices(inst, n, *out);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        free(*out);
        *out = NULL;
        return es_vk_fail(err, r, "vkEnumeratePhysicalDevices");
    }
    return ES_OK;
}

es_status es_devices(es_device_info *out, int cap, int *n_out, es_err *err) {
    *n_out = 0;
    VkInstance inst;
    es_status st = make_instance(NULL, &inst, err);
    if (st != ES_OK) return st;
    VkPhysicalDevice *pds;
    uint32_t n;
    st = physical_devices(inst, &pds, &n, err);
    if (st == ES_OK) {
        for (uint32_t i = 0; i < n && (int)i < cap; i++) describe(pds[i], (int)i, &out[i]);
        *n_out = (int)n;
    }
    free(pds);
    vkDestroyInstance(inst, NULL);
    return st;
}

/* ---- the device context ----------------------------------------------------------------------- */

static es_status make_pipelines(es_vk *vk, es_err *err) {
    VkDescriptorSetLayoutBinding b[ES_VK_BINDINGS];
    for (int i = 0; i < ES_VK_BINDINGS; i++)
        b[i] = (VkDescriptorSetLayoutBinding){.binding = (uint32_t)i, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1, .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dl = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                          .bindingCount = ES_VK_BINDINGS, .pBindings = b};
    VkResult r = vkCreateDescriptorSetLayout(vk->dev, &dl, NULL, &vk->dsl);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkCreateDescriptorSetLayout");
    VkPushConstantRange pc = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = ES_VK_PUSH_BYTES};
    VkPipelineLayoutCreateInfo pl = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                     .pSetLayouts = &vk->dsl, .pushConstantRangeCount = 1, .pPushConstantRanges = &pc};
    if ((r = vkCreatePipelineLayout(vk->dev, &pl, NULL, &vk->layout)) != VK_SUCCESS)
        return es_vk_fail(err, r, "vkCreatePipelineLayout");
    VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = ES_VK_MAX_DISPATCHES * ES_VK_BINDINGS};
    VkDescriptorPoolCreateInfo dp = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = ES_VK_MAX_DISPATCHES,
                                     .poolSizeCount = 1, .pPoolSizes = &ps};
    if ((r = vkCreateDescriptorPool(vk->dev, &dp, NULL, &vk->dpool)) != VK_SUCCESS)
        return es_vk_fail(err, r, "vkCreateDescriptorPool");
    for (int i = 0; i < ES_VK_PIPE_COUNT; i++) {
        const es_vk_spirv *s = es_vk_shader(es_vk_pipe_shader[i]);
        if (!s) return es_fail(err, ES_ERR_INTERNAL, "vulkan: shader %s is not embedded", es_vk_pipe_shader[i]);
        VkShaderModuleCreateInfo sm = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = s->bytes,
                                       .pCode = s->code};
        VkShaderModule mod;
        if ((r = vkCreateShaderModule(vk->dev, &sm, NULL, &mod)) != VK_SUCCESS) return es_vk_fail(err, r, "vkCreateShaderModule");
        VkComputePipelineCreateInfo cp = {
            .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
            .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                      .module = mod, .pName = "main"},
            .layout = vk->layout};
        r = vkCreateComputePipelines(vk->dev, VK_NULL_HANDLE, 1, &cp, NULL, &vk->pipe[i]);
        vkDestroyShaderModule(vk->dev, mod, NULL);
        if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkCreateComputePipelines");
    }
    return ES_OK;
}

es_status es_vk_init(const es_vk_params *p, es_vk **out, es_err *err) {
    *out = NULL;
    es_vk *vk = calloc(1, sizeof *vk);
    if (!vk) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    vk->p = *p;
    es_status st = make_instance(vk, &vk->inst, err);
    if (st != ES_OK) {
        es_vk_free(vk);
        return st;
    }
    VkPhysicalDevice *pds;
    uint32_t n;
    if ((st = physical_devices(vk->inst, &pds, &n, err)) != ES_OK) {
        es_vk_free(vk);
        return st;
    }
    if (p->device < 0 || (uint32_t)p->device >= n) {
        free(pds);
        es_vk_free(vk);
        return es_fail(err, ES_ERR_RANGE, "vulkan: no device %d (%u found; `edgespec devices` lists them)", p->device, n);
    }
    vk->pd = pds[p->device];
    free(pds);
    describe(vk->pd, p->device, &vk->info);
    VkPhysicalDeviceProperties pr;
    vkGetPhysicalDeviceProperties(vk->pd, &pr);
    vk->limits = pr.limits;
    vkGetPhysicalDeviceMemoryProperties(vk->pd, &vk->mem);

    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(vk->pd, &nq, NULL);
    VkQueueFamilyProperties qf[16];
    if (nq > 16) nq = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(vk->pd, &nq, qf);
    vk->qfam = UINT32_MAX;
    for (uint32_t i = 0; i < nq && vk->qfam == UINT32_MAX; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) vk->qfam = i;
    if (vk->qfam == UINT32_MAX) {
        const es_status bad = es_fail(err, ES_ERR_UNSUPPORTED, "vulkan: device %d (%s) has no compute queue", p->device, vk->info.name);
        es_vk_free(vk); /* after the message, which names the device from vk */
        return bad;
    }
    if (vk->limits.maxComputeWorkGroupInvocations < 64 || vk->limits.maxComputeSharedMemorySize < 16384) {
        const es_status bad =
            es_fail(err, ES_ERR_UNSUPPORTED, "vulkan: device %d (%s) allows too small workgroups", p->device, vk->info.name);
        es_vk_free(vk);
        return bad;
    }
    const float prio = 1.0f;
    VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = vk->qfam,
                                  .queueCount = 1, .pQueuePriorities = &prio};
    VkDeviceCreateInfo di = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .queueCreateInfoCount = 1, .pQueueCreateInfos = &qi};
    VkResult r = vkCreateDevice(vk->pd, &di, NULL, &vk->dev);
    if (r != VK_SUCCESS) {
        es_vk_free(vk);
        return es_vk_fail(err, r, "vkCreateDevice");
    }
    vkGetDeviceQueue(vk->dev, vk->qfam, 0, &vk->queue);
    VkCommandPoolCreateInfo cpi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT, .queueFamilyIndex = vk->qfam};
    VkCommandBuffer cbs[2];
    VkCommandBufferAllocateInfo ca = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 2};
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if ((r = vkCreateCommandPool(vk->dev, &cpi, NULL, &vk->cpool)) != VK_SUCCESS ||
        (ca.commandPool = vk->cpool, r = vkAllocateCommandBuffers(vk->dev, &ca, cbs)) != VK_SUCCESS ||
        (r = vkCreateFence(vk->dev, &fi, NULL, &vk->fence)) != VK_SUCCESS) {
        es_vk_free(vk);
        return es_vk_fail(err, r, "creating the command pool");
    }
    vk->cmd = cbs[0];
    vk->xfer = cbs[1];
    if ((st = make_pipelines(vk, err)) != ES_OK ||
        (st = es_vk_buf_alloc_kind(vk, ES_VK_STAGING_BYTES, true, &vk->staging, err)) != ES_OK) {
        es_vk_free(vk);
        return st;
    }
    *out = vk;
    return ES_OK;
}

void es_vk_free(es_vk *vk) {
    if (!vk) return;
    if (vk->dev) {
        vkDeviceWaitIdle(vk->dev);
        es_vk_buf_free(vk, vk->staging);
        es_vk_buf_free(vk, vk->ring);
        for (int i = 0; i < ES_VK_ASYNC_SLOTS; i++) {
            es_vk_buf_free(vk, vk->async[i].stage);
            if (vk->async[i].fence) vkDestroyFence(vk->dev, vk->async[i].fence, NULL);
        }
        for (int i = 0; i < ES_VK_PIPE_COUNT; i++)
            if (vk->pipe[i]) vkDestroyPipeline(vk->dev, vk->pipe[i], NULL);
        if (vk->dpool) vkDestroyDescriptorPool(vk->dev, vk->dpool, NULL);
        if (vk->layout) vkDestroyPipelineLayout(vk->dev, vk->layout, NULL);
        if (vk->dsl) vkDestroyDescriptorSetLayout(vk->dev, vk->dsl, NULL);
        if (vk->fence) vkDestroyFence(vk->dev, vk->fence, NULL);
        for (int i = 1; i < vk->n_cmds; i++)
            if (vk->fences[i]) vkDestroyFence(vk->dev, vk->fences[i], NULL);
        if (vk->cpool) vkDestroyCommandPool(vk->dev, vk->cpool, NULL);
        vkDestroyDevice(vk->dev, NULL);
    }
    if (vk->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT rm =
            (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(vk->inst, "vkDestroyDebugUtilsMessengerEXT");
        if (rm) rm(vk->inst, vk->messenger, NULL);
    }
    if (vk->inst) vkDestroyInstance(vk->inst, NULL);
    free(vk->cmds);
    free(vk->fences);
    free(vk);
}

const es_device_info *es_vk_info(const es_vk *vk) { return &vk->info; }

/* ---- buffers ---------------------------------------------------------------------------------- */

/* Memory type for `bits` with all of `want`, or -1. */
static int mem_type(const es_vk *vk, uint32_t bits, VkMemoryPropertyFlags want) {
    for (uint32_t i = 0; i < vk->mem.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (vk->mem.memoryTypes[i].propertyFlags & want) == want) return (int)i;
    return -1;
}

es_status es_vk_buf_alloc_kind(es_vk *vk, size_t bytes, bool host, es_vk_buf **out, es_err *err) {
    *out = NULL;
    if (bytes == 0) bytes = 4;
    if (!host && bytes > vk->limits.maxStorageBufferRange - 3) /* host kinds are never bound to a shader */
        return es_fail(err, ES_ERR_RANGE, "vulkan: a buffer of %zu bytes exceeds the device's maxStorageBufferRange (%u)",
                       bytes, vk->limits.maxStorageBufferRange);
    es_vk_buf *b = calloc(1, sizeof *b);
    if (!b) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    b->bytes = bytes;
    /* shaders read whole 32-bit words: a buffer whose size is not a multiple of 4 (odd counts of
     * Q8_0 / Q4_0 / F16 rows) gets its last word in full */
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = (bytes + 3) & ~(size_t)3,
                             .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                      VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                             .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkResult r = vkCreateBuffer(vk->dev, &bi, NULL, &b->buf);
    if (r != VK_SUCCESS) {
        free(b);
        return es_vk_fail(err, r, "vkCreateBuffer");
    }
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(vk->dev, b->buf, &req);
    const VkMemoryPropertyFlags hv = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    /* device-local and mappable first (lavapipe, integrated GPUs, resizable BAR), then device-local
     * only (reached through staging); staging buffers take any mappable memory */
    const VkMemoryPropertyFlags tries[2] = {host ? hv : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | hv,
                                            host ? hv : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT};
    r = VK_ERROR_OUT_OF_DEVICE_MEMORY;
    for (int t = 0; t < 2 && r != VK_SUCCESS; t++) {
        const int mt = mem_type(vk, req.memoryTypeBits, tries[t]);
        if (mt < 0) continue;
        VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                                   .memoryTypeIndex = (uint32_t)mt};
        r = vkAllocateMemory(vk->dev, &ai, NULL, &b->mem);
        if (r == VK_SUCCESS) b->host = (vk->mem.memoryTypes[mt].propertyFlags & hv) == hv && (host || !vk->p.force_staging);
    }
    if (r != VK_SUCCESS) {
        vkDestroyBuffer(vk->dev, b->buf, NULL);
        free(b);
        return es_fail(err, ES_ERR_NOMEM, "vulkan: cannot allocate %zu bytes of device memory on %s: %s", bytes,
                       vk->info.name, vk_result_str(r));
    }
    if ((r = vkBindBufferMemory(vk->dev, b->buf, b->mem, 0)) != VK_SUCCESS ||
        (b->host && (r = vkMapMemory(vk->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map)) != VK_SUCCESS)) {
        es_vk_buf_free(vk, b);
        return es_vk_fail(err, r, "binding buffer memory");
    }
    *out = b;
    return ES_OK;
}

es_status es_vk_buf_alloc(es_vk *vk, size_t bytes, es_vk_buf **out, es_err *err) {
    return es_vk_buf_alloc_kind(vk, bytes, false, out, err);
}

void es_vk_buf_free(es_vk *vk, es_vk_buf *b) {
    if (!b) return;
    if (b->map) vkUnmapMemory(vk->dev, b->mem);
    if (b->buf) vkDestroyBuffer(vk->dev, b->buf, NULL);
    if (b->mem) vkFreeMemory(vk->dev, b->mem, NULL);
    free(b);
}

size_t es_vk_buf_size(const es_vk_buf *b) { return b->bytes; }

/* Runs one copy between a buffer and the staging buffer and waits. */
static es_status staged_copy(es_vk *vk, VkBuffer src, size_t src_off, VkBuffer dst, size_t dst_off, size_t bytes,
                             es_err *err) {
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VkResult r = vkBeginCommandBuffer(vk->xfer, &bi);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkBeginCommandBuffer");
    VkBufferCopy c = {.srcOffset = src_off, .dstOffset = dst_off, .size = bytes};
    vkCmdCopyBuffer(vk->xfer, src, dst, 1, &c);
    if ((r = vkEndCommandBuffer(vk->xfer)) != VK_SUCCESS) return es_vk_fail(err, r, "vkEndCommandBuffer");
    return es_vk_run(vk, vk->xfer, err);
}

static es_status check_range(const es_vk *vk, const es_vk_buf *b, size_t off, size_t bytes, es_err *err) {
    if (vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: buffer transfer while recording");
    if (off % 4 || off > b->bytes || bytes > b->bytes - off)
        return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: transfer of %zu bytes at %zu outside a buffer of %zu", bytes, off,
                       b->bytes);
    return ES_OK;
}

es_status es_vk_buf_write(es_vk *vk, es_vk_buf *b, size_t off, const void *src, size_t bytes, es_err *err) {
    es_status st = check_range(vk, b, off, bytes, err);
    if (st == ES_OK) st = es_vk_async_wait(vk, err); /* (an upload in flight may target these bytes) */
    if (st != ES_OK) return st;
    if (b->map) {
        memcpy((char *)b->map + off, src, bytes);
        return ES_OK;
    }
    for (size_t done = 0; done < bytes;) {
        const size_t k = bytes - done < ES_VK_STAGING_BYTES ? bytes - done : ES_VK_STAGING_BYTES;
        memcpy(vk->staging->map, (const char *)src + done, k);
        if ((st = staged_copy(vk, vk->staging->buf, 0, b->buf, off + done, k, err)) != ES_OK) return st;
        done += k;
    }
    return ES_OK;
}

es_status es_vk_buf_read(es_vk *vk, const es_vk_buf *b, size_t off, void *dst, size_t bytes, es_err *err) {
    es_status st = check_range(vk, b, off, bytes, err);
    if (st == ES_OK) st = es_vk_async_wait(vk, err);
    if (st != ES_OK) return st;
    if (b->map) {
        memcpy(dst, (const char *)b->map + off, bytes);
        return ES_OK;
    }
    for (size_t done = 0; done < bytes;) {
        const size_t k = bytes - done < ES_VK_STAGING_BYTES ? bytes - done : ES_VK_STAGING_BYTES;
        if ((st = staged_copy(vk, b->buf, off + done, vk->staging->buf, 0, k, err)) != ES_OK) return st;
        memcpy((char *)dst + done, vk->staging->map, k);
        done += k;
    }
    return ES_OK;
}

/* ---- submission ------------------------------------------------------------------------------- */

es_status es_vk_run(es_vk *vk, VkCommandBuffer cb, es_err *err) {
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cb};
    VkResult r = vkQueueSubmit(vk->queue, 1, &si, vk->fence);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkQueueSubmit");
    r = vkWaitForFences(vk->dev, 1, &vk->fence, VK_TRUE, UINT64_MAX);
    vkResetFences(vk->dev, 1, &vk->fence);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkWaitForFences");
    return ES_OK;
}

/* Waits for the flushed submissions of the pass (they ran before its last one, or a failed pass left
 * them) and resets their fences for the next pass. */
static es_status drain(es_vk *vk, es_err *err) {
    es_status st = ES_OK;
    for (int t = 0; t < vk->cur; t++) {
        VkResult r = vkWaitForFences(vk->dev, 1, &vk->fences[t + 1], VK_TRUE, UINT64_MAX);
        if (r != VK_SUCCESS && st == ES_OK) st = es_vk_fail(err, r, "vkWaitForFences");
        vkResetFences(vk->dev, 1, &vk->fences[t + 1]);
    }
    vk->cur = 0;
    if (vk->n_cmds > 0) vk->cmd = vk->cmds[0];
    return st;
}

es_status es_vk_begin(es_vk *vk, es_err *err) {
    if (vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: es_vk_begin while recording");
    es_status dst = drain(vk, err);
    if (dst == ES_OK) dst = es_vk_async_submit(vk, err); /* staged uploads go first */
    if (dst != ES_OK) return dst;
    VkResult r = vkResetDescriptorPool(vk->dev, vk->dpool, 0);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkResetDescriptorPool");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    if ((r = vkBeginCommandBuffer(vk->cmd, &bi)) != VK_SUCCESS) return es_vk_fail(err, r, "vkBeginCommandBuffer");
    if (vk->async_unordered) { /* the asynchronous copies submitted before land before this recording reads or writes */
        VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                              .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                                               VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
        vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                             0, 1, &mb, 0, NULL, 0, NULL);
        vk->async_unordered = false;
    }
    vk->recording = true;
    vk->n_dispatch = 0;
    vk->ring_used = 0;
    return ES_OK;
}

es_status es_vk_ring_init(es_vk *vk, size_t bytes, es_err *err) {
    if (vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: ring sized while recording");
    es_vk_buf_free(vk, vk->ring);
    vk->ring = NULL;
    return es_vk_buf_alloc_kind(vk, bytes, true, &vk->ring, err);
}

/* A 64-byte aligned piece of the ring for this recording. */
static es_status ring_take(es_vk *vk, size_t bytes, size_t *off, es_err *err) {
    if (!vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: transfer recorded outside es_vk_begin / es_vk_submit");
    const size_t at = (vk->ring_used + 63) & ~(size_t)63;
    if (!vk->ring || at > vk->ring->bytes || bytes > vk->ring->bytes - at)
        return es_fail(err, ES_ERR_FULL, "vulkan: %zu bytes do not fit the transfer ring (%zu)", bytes, vk->ring ? vk->ring->bytes : 0);
    *off = at;
    vk->ring_used = at + bytes;
    return ES_OK;
}

/* Whether an upload of `bytes` at dst_off lies inside dst (else the error says so). */
static bool upload_fits(const es_vk_buf *dst, size_t dst_off, size_t bytes, es_err *err) {
    if (dst_off <= dst->bytes && bytes <= dst->bytes - dst_off) return true;
    es_fail(err, ES_ERR_INVALID_ARG, "vulkan: upload of %zu bytes at %zu outside a buffer of %zu", bytes, dst_off, dst->bytes);
    return false;
}

es_status es_vk_upload(es_vk *vk, es_vk_buf *dst, size_t dst_off, const void *src, size_t bytes, es_err *err) {
    if (bytes == 0) return ES_OK;
    if (!upload_fits(dst, dst_off, bytes, err)) return ES_ERR_INVALID_ARG;
    size_t at;
    es_status st = ring_take(vk, bytes, &at, err);
    if (st != ES_OK) return st;
    memcpy((char *)vk->ring->map + at, src, bytes); /* made visible to the device by the submission */
    return es_vk_copy(vk, dst, dst_off, vk->ring, at, bytes, err);
}

es_status es_vk_readback(es_vk *vk, const es_vk_buf *src, size_t src_off, size_t bytes, const void **out, es_err *err) {
    *out = NULL;
    if (src_off > src->bytes || bytes > src->bytes - src_off)
        return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: readback of %zu bytes at %zu outside a buffer of %zu", bytes, src_off, src->bytes);
    size_t at;
    es_status st = ring_take(vk, bytes, &at, err);
    if (st != ES_OK) return st;
    /* the kernels' writes before the copy, the copy before the host reads after the fence */
    VkMemoryBarrier before = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                              .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT};
    vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &before, 0, NULL, 0, NULL);
    if (bytes) {
        VkBufferCopy c = {.srcOffset = src_off, .dstOffset = at, .size = bytes};
        vkCmdCopyBuffer(vk->cmd, src->buf, vk->ring->buf, 1, &c);
    }
    VkMemoryBarrier after = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                             .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &after, 0, NULL, 0, NULL);
    *out = (const char *)vk->ring->map + at;
    return ES_OK;
}

es_status es_vk_submit(es_vk *vk, es_err *err) {
    if (!vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: es_vk_submit without es_vk_begin");
    vk->recording = false;
    VkResult r = vkEndCommandBuffer(vk->cmd);
    es_status st = r != VK_SUCCESS ? es_vk_fail(err, r, "vkEndCommandBuffer") : es_vk_run(vk, vk->cmd, err);
    const es_status d = drain(vk, err);
    return st != ES_OK ? st : d;
}

es_status es_vk_reserve_flushes(es_vk *vk, int n, es_err *err) {
    if (vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: flushes reserved while recording");
    if (n < 0 || n > 65536) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: %d flushes", n);
    if (n + 1 <= vk->n_cmds) return ES_OK;
    VkCommandBuffer *cmds = realloc(vk->cmds, (size_t)(n + 1) * sizeof *cmds);
    if (cmds) vk->cmds = cmds;
    VkFence *fences = realloc(vk->fences, (size_t)(n + 1) * sizeof *fences);
    if (fences) vk->fences = fences;
    if (!cmds || !fences) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    if (vk->n_cmds == 0) { /* the home command buffer is the one es_vk_init made */
        vk->cmds[0] = vk->cmd;
        vk->fences[0] = VK_NULL_HANDLE;
        vk->n_cmds = 1;
    }
    const int add = n + 1 - vk->n_cmds;
    VkCommandBufferAllocateInfo ca = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = vk->cpool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = (uint32_t)add};
    VkResult r = vkAllocateCommandBuffers(vk->dev, &ca, vk->cmds + vk->n_cmds);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkAllocateCommandBuffers");
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    for (int i = 0; i < add; i++) {
        vk->fences[vk->n_cmds] = VK_NULL_HANDLE;
        if ((r = vkCreateFence(vk->dev, &fi, NULL, &vk->fences[vk->n_cmds])) != VK_SUCCESS) return es_vk_fail(err, r, "vkCreateFence");
        vk->n_cmds++;
    }
    return ES_OK;
}

es_status es_vk_flush(es_vk *vk, int *ticket, es_err *err) {
    if (!vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: es_vk_flush without es_vk_begin");
    if (vk->cur + 1 >= vk->n_cmds) return es_fail(err, ES_ERR_FULL, "vulkan: more than %d flushes in one pass", vk->n_cmds > 0 ? vk->n_cmds - 1 : 0);
    VkResult r = vkEndCommandBuffer(vk->cmd);
    if (r != VK_SUCCESS) {
        vk->recording = false;
        return es_vk_fail(err, r, "vkEndCommandBuffer");
    }
    /* ticket t is the submission of cmds[t], signalled on fences[t + 1] (fences[0] is unused: the
     * last recording of a pass waits on vk->fence) */
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &vk->cmd};
    if ((r = vkQueueSubmit(vk->queue, 1, &si, vk->fences[vk->cur + 1])) != VK_SUCCESS) {
        vk->recording = false;
        return es_vk_fail(err, r, "vkQueueSubmit");
    }
    *ticket = vk->cur++;
    vk->cmd = vk->cmds[vk->cur];
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    if ((r = vkBeginCommandBuffer(vk->cmd, &bi)) != VK_SUCCESS) {
        vk->recording = false;
        return es_vk_fail(err, r, "vkBeginCommandBuffer");
    }
    /* everything submitted before finishes before anything recorded from here on starts */
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_MEMORY_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT};
    vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    return ES_OK;
}

es_status es_vk_wait(es_vk *vk, int ticket, es_err *err) {
    if (ticket < 0 || ticket + 1 >= vk->n_cmds) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: no flush %d", ticket);
    VkResult r = vkWaitForFences(vk->dev, 1, &vk->fences[ticket + 1], VK_TRUE, UINT64_MAX);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkWaitForFences");
    return ES_OK;
}

es_status es_vk_buf_alloc_host(es_vk *vk, size_t bytes, es_vk_buf **out, es_err *err) {
    return es_vk_buf_alloc_kind(vk, bytes, true, out, err);
}

void *es_vk_buf_map(es_vk_buf *b) { return b->map; }

es_status es_vk_copy_to_host(es_vk *vk, es_vk_buf *dst, size_t dst_off, const es_vk_buf *src, size_t src_off, size_t bytes,
                             es_err *err) {
    if (!vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: copy recorded outside es_vk_begin / es_vk_submit");
    if (!dst->map || src_off > src->bytes || bytes > src->bytes - src_off || dst_off > dst->bytes || bytes > dst->bytes - dst_off)
        return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: copy to host of %zu bytes outside its buffers", bytes);
    VkMemoryBarrier before = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                              .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT};
    vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &before, 0, NULL, 0, NULL);
    if (bytes) {
        VkBufferCopy c = {.srcOffset = src_off, .dstOffset = dst_off, .size = bytes};
        vkCmdCopyBuffer(vk->cmd, src->buf, dst->buf, 1, &c);
    }
    VkMemoryBarrier after = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                             .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(vk->cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &after, 0, NULL, 0, NULL);
    return ES_OK;
}

/* ---- asynchronous uploads --------------------------------------------------------------------- */

es_status es_vk_async_init(es_vk *vk, size_t slot_bytes, es_err *err) {
    if (vk->async[0].stage) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: asynchronous uploads set up twice");
    VkCommandBuffer cbs[ES_VK_ASYNC_SLOTS];
    VkCommandBufferAllocateInfo ca = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = vk->cpool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = ES_VK_ASYNC_SLOTS};
    VkResult r = vkAllocateCommandBuffers(vk->dev, &ca, cbs);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkAllocateCommandBuffers");
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    for (int i = 0; i < ES_VK_ASYNC_SLOTS; i++) {
        struct vk_async_slot *a = &vk->async[i];
        a->cmd = cbs[i];
        if ((r = vkCreateFence(vk->dev, &fi, NULL, &a->fence)) != VK_SUCCESS) return es_vk_fail(err, r, "vkCreateFence");
        const es_status st = es_vk_buf_alloc_kind(vk, slot_bytes, true, &a->stage, err);
        if (st != ES_OK) return st;
    }
    return ES_OK;
}

/* Slot i free for staging: its last submission has landed (waited for when it has not yet; a wait
 * for staging counted). */
static es_status async_ready(es_vk *vk, int i, bool staging, es_err *err) {
    struct vk_async_slot *a = &vk->async[i];
    if (!a->busy) return ES_OK;
    VkResult r = vkGetFenceStatus(vk->dev, a->fence);
    if (r == VK_NOT_READY) {
        vk->async_waits += staging;
        r = vkWaitForFences(vk->dev, 1, &a->fence, VK_TRUE, UINT64_MAX);
    }
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkWaitForFences");
    vkResetFences(vk->dev, 1, &a->fence);
    a->busy = false;
    return ES_OK;
}

es_status es_vk_async_submit(es_vk *vk, es_err *err) {
    struct vk_async_slot *a = &vk->async[vk->async_cur];
    if (!a->open) return ES_OK;
    a->open = false;
    VkResult r = vkEndCommandBuffer(a->cmd);
    if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkEndCommandBuffer");
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &a->cmd};
    if ((r = vkQueueSubmit(vk->queue, 1, &si, a->fence)) != VK_SUCCESS) return es_vk_fail(err, r, "vkQueueSubmit");
    a->busy = true;
    vk->async_unordered = true;
    vk->async_submits++;
    vk->async_cur = (vk->async_cur + 1) % ES_VK_ASYNC_SLOTS;
    return ES_OK;
}

es_status es_vk_async_upload(es_vk *vk, es_vk_buf *dst, size_t dst_off, const void *src, size_t bytes, es_err *err) {
    if (vk->recording) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: asynchronous upload while recording");
    if (!vk->async[0].stage) return es_fail(err, ES_ERR_INVALID_ARG, "vulkan: asynchronous uploads not set up (es_vk_async_init)");
    if (!upload_fits(dst, dst_off, bytes, err)) return ES_ERR_INVALID_ARG;
    const size_t cap = vk->async[0].stage->bytes;
    if (bytes > cap) return es_fail(err, ES_ERR_RANGE, "vulkan: an asynchronous upload of %zu bytes exceeds its staging (%zu)", bytes, cap);
    if (bytes == 0) return ES_OK;
    struct vk_async_slot *a = &vk->async[vk->async_cur];
    size_t at = (a->used + 63) & ~(size_t)63;
    es_status st;
    if (a->open && (at > cap || bytes > cap - at)) { /* full: on its way, and the next slot */
        if ((st = es_vk_async_submit(vk, err)) != ES_OK) return st;
        a = &vk->async[vk->async_cur];
    }
    if (!a->open) {
        if ((st = async_ready(vk, vk->async_cur, true, err)) != ES_OK) return st;
        VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                       .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
        VkResult r = vkBeginCommandBuffer(a->cmd, &bi);
        if (r != VK_SUCCESS) return es_vk_fail(err, r, "vkBeginCommandBuffer");
        a->open = true;
        a->used = 0;
        at = 0;
    }
    memcpy((char *)a->stage->map + at, src, bytes); /* made visible to the device by the submission */
    VkBufferCopy c = {.srcOffset = at, .dstOffset = dst_off, .size = bytes};
    vkCmdCopyBuffer(a->cmd, a->stage->buf, dst->buf, 1, &c);
    a->used = at + bytes;
    return ES_OK;
}

es_status es_vk_async_wait(es_vk *vk, es_err *err) {
    es_status st = es_vk_async_submit(vk, err);
    for (int i = 0; i < ES_VK_ASYNC_SLOTS && st == ES_OK; i++) st = async_ready(vk, i, false, err);
    return st;
}

void es_vk_async_stats(const es_vk *vk, int64_t *submits, int64_t *waits) {
    *submits = vk->async_submits;
    *waits = vk->async_waits;
}
