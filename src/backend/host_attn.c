/* host_attn.c — see host_attn.h. */
#include "backend/host_attn.h"

#include <math.h>

#include "kernels/attn.h"

size_t es_host_attn_scratch_floats(int n_head, int n_head_kv, int head_dim) {
    return es_attn_multi_scratch_floats(ES_ATTN_GROUP_MAX * (n_head / n_head_kv), head_dim);
}

/* Work items w = (token group, kv head, sub-group), taken dynamically, latest groups (longest
 * contexts) first. Each runs es_attn_multi over the group's tokens for the query heads of its
 * sub-group. */
static void worker(void *ud, int ith, int nth) {
    (void)nth;
    es_host_attn *t = ud;
    const es_fwd_plan *p = t->p;
    const int hd = t->head_dim, qd = t->n_head * hd, group = t->n_head / t->n_head_kv;
    const int sub = group / t->n_sub, per_grp = t->n_head_kv * t->n_sub;
    const float scale = 1.0f / sqrtf((float)hd);
    float *scratch = t->scratch + (size_t)ith * t->scratch_floats;
    const int n_grp = t->grp ? t->n_grp : p->n_grp;
    const int64_t total = (int64_t)n_grp * per_grp;
    es_attn_query tq[ES_ATTN_GROUP_MAX];
    for (;;) {
        const int64_t w = atomic_fetch_add(&t->next, 1);
        if (w >= total) break;
        const int gi = n_grp - 1 - (int)(w / per_grp), r = (int)(w % per_grp);
        const int g = t->grp ? t->grp[gi] : gi;
        const int kvh = r / t->n_sub, h0 = kvh * group + (r % t->n_sub) * sub;
        const int i0 = p->grp_start[g], nt = p->grp_start[g + 1] - i0;
        for (int k = 0; k < nt; k++) {
            const int i = i0 + k, at = t->row ? t->row[i] : i;
            tq[k].q = t->q + (size_t)at * qd + (size_t)h0 * hd;
            tq[k].out = t->out + (size_t)at * qd + (size_t)h0 * hd;
            tq[k].anc = p->anc + p->anc_off[i];
            tq[k].n_anc = p->anc_len[i];
        }
        es_attn_cache view;
        es_kv_attn_view(t->kv, p->b->seq[i0], t->layer, &view);
        es_attn_multi(&view, kvh, hd, sub, scale, p->prefix_len[i0], p->grp_common[g], tq, nt, scratch);
    }
}

void es_host_attention(es_threadpool *tp, es_host_attn *a) {
    const int nth = es_threadpool_n_threads(tp), group = a->n_head / a->n_head_kv;
    const int n_grp = a->grp ? a->n_grp : a->p->n_grp;
    /* split each kv head's query heads into sub-groups only when there are too few items to keep
     * every thread busy (decode of one token with few kv heads) */
    int n_sub = 1;
    while ((int64_t)n_grp * a->n_head_kv * n_sub < 2 * (int64_t)nth && group % (2 * n_sub) == 0) n_sub *= 2;
    a->n_sub = n_sub;
    atomic_store(&a->next, 0);
    if (n_grp > 0) es_threadpool_run(tp, worker, a);
}
