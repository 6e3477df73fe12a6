/* ctx.h — in-library accessors of es_ctx that the public API does not expose. */
#ifndef ES_ENGINE_CTX_H
#define ES_ENGINE_CTX_H

#include "edgespec.h"

/* CPU seconds used so far by the context's thread-pool workers (the thread calling es_decode is not
 * included: it measures itself with CLOCK_THREAD_CPUTIME_ID). A server reports the sum as the cost
 * of its compute. Safe to call from any thread. */
double es_ctx_worker_cpu_seconds(es_ctx *ctx);
/* Bytes of one KV page of a context for `model` with kv_block_size slots per page and rows of `type`:
 * the K and V rows of every layer (see es_kv_bytes_per_block in model/kv.h); 0 if the type cannot
 * hold the model's rows. Pool sizes from a memory budget divide by this. */
int64_t es_model_kv_bytes_per_block(const es_model *model, int kv_block_size, es_kv_type type);

#endif
