/* vk_backend.h — the forward pass on a Vulkan device (vk_forward.c): an es_backend over vk.h. */
#ifndef ES_BACKEND_VK_BACKEND_H
#define ES_BACKEND_VK_BACKEND_H

#include "backend/backend.h"
#include "model/kv.h"
#include "model/model.h"

/* Opens device p->device, uploads every weight once in its GGUF type, and allocates the device KV
 * cache (f32 rows, one row per slot of `kv`'s pool: the same block tables) and the activations for
 * p->n_batch_max rows / p->n_logits_max rows of logits. ES_ERR_UNSUPPORTED for weights without a
 * kernel or in the CPU's repacked layout, ES_ERR_NOMEM when the device runs out of memory,
 * ES_ERR_RANGE when one buffer would exceed the device's binding limit; the message names which. */
es_status es_backend_vulkan_init(const es_model *model, es_kv *kv, const es_ctx_params *p, es_backend **out,
                                 es_err *err);

#endif
