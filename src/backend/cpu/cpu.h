/* cpu.h — the CPU backend: the forward pass on this machine's cores with the kernels of src/kernels
 * (SIMD level chosen at run time), its own thread pool, and the KV rows in host memory (es_kv). */
#ifndef ES_BACKEND_CPU_H
#define ES_BACKEND_CPU_H

#include "backend/backend.h"
#include "model/kv.h"
#include "model/model.h"

/* A CPU backend for `model` writing into `kv` (not owned; it must outlive the backend), with
 * n_threads compute threads (the caller of forward is one of them) and scratch for batches of up to
 * n_batch_max rows and n_logits_max rows of logits, allocated here once. ES_ERR_NOMEM if that fails. */
es_status es_backend_cpu_init(const es_model *model, es_kv *kv, int n_threads, int n_batch_max, int n_logits_max,
                              es_backend **out, es_err *err);

#endif
