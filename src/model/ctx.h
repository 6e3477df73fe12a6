/* ctx.h — in-library accessors of es_ctx that the public API does not expose. */
#ifndef ES_MODEL_CTX_H
#define ES_MODEL_CTX_H

#include "edgespec.h"

/* CPU seconds used so far by the context's thread-pool workers (the thread calling es_decode is not
 * included: it measures itself with CLOCK_THREAD_CPUTIME_ID). A server reports the sum as the cost
 * of its compute. Safe to call from any thread. */
double es_ctx_worker_cpu_seconds(es_ctx *ctx);
/* Bytes of one KV page of a context for `model` with kv_block_size slots per page: the K and V rows
 * of every layer, f32 (2 * n_layer * block_size * n_head_kv * head_dim * 4; see model/kv.c). */
int64_t es_model_kv_bytes_per_block(const es_model *model, int kv_block_size);

#endif
