/* host_attn.h — tree-masked attention of a plan's groups on this machine's cores, over the host KV
 * pool. The CPU backend runs every group through it; a device backend with a host tier runs the
 * groups of host-tier sequences through it while the device works on the rest. */
#ifndef ES_BACKEND_HOST_ATTN_H
#define ES_BACKEND_HOST_ATTN_H

#include <stdatomic.h>
#include <stddef.h>

#include "backend/backend.h"
#include "model/kv.h"
#include "util/threadpool.h"

typedef struct es_host_attn {
    es_kv *kv;
    const es_fwd_plan *p;
    int layer;
    int n_head, n_head_kv, head_dim;
    const int32_t *grp;   /* the plan's groups to run, in any order; NULL: all of them */
    int n_grp;            /* entries of grp (ignored when grp is NULL) */
    const float *q;       /* query rows (n_head · head_dim floats each) */
    float *out;           /* output rows, same shape */
    const int32_t *row;   /* row[i]: where batch row i sits in q and out; NULL: row i */
    float *scratch;       /* per thread: es_host_attn_scratch_floats */
    size_t scratch_floats;
    /* set by es_host_attention */
    int n_sub;
    atomic_int next;
} es_host_attn;

/* Scratch floats one thread needs. */
size_t es_host_attn_scratch_floats(int n_head, int n_head_kv, int head_dim);
/* Runs the groups on tp's threads (each kv head's query heads split further when there are too few
 * work items to keep every thread busy). */
void es_host_attention(es_threadpool *tp, es_host_attn *a);

#endif
