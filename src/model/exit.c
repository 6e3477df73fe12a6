/* exit.c — early-exit heads: next-token logits from the hidden state after an intermediate layer.
 *
 * Zero-training heads apply the model's own final norm and output matrix to the early state; a
 * calibrated head first maps it with a linear adapter (h' = W h + b, fitted by `edgespec fit-exit` so
 * that h' approximates the final hidden state). The output matrix is the largest matrix of the model,
 * so the heads have their own thread pool: they run on the compute thread in the middle of a pass
 * (es_exit_fn) while the context's pool is idle.
 *
 * All scratch is allocated in es_exit_heads_init for n_rows_max rows; es_exit_heads_logits never
 * allocates. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "model/model.h"
#include "util/err.h"
#include "util/threadpool.h"

typedef struct exit_head {
    int layer;
    float *w;  /* d × d adapter (row o: weights of output o), NULL: zero-training */
    float *b;  /* d, with w */
    es_mat wm; /* view of w for es_matmul */
} exit_head;

struct es_exit_heads {
    const es_model *model;
    exit_head head[ES_EXIT_MAX];
    int n;
    int n_rows_max;
    es_threadpool *tp;
    float *xa, *xn; /* (n_rows_max, d): adapted rows, normed rows */
    void *mm_scratch;
};

static void rmsnorm(float *o, const float *x, const float *w, int n, float eps) {
    double ss = 0; /* the heads are not bit-matched to the backends: a double sum is simplest */
    for (int j = 0; j < n; j++) ss += (double)x[j] * x[j];
    const float s = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int j = 0; j < n; j++) o[j] = w[j] * (s * x[j]);
}

static exit_head *find(es_exit_heads *h, int layer) {
    for (int i = 0; i < h->n; i++)
        if (h->head[i].layer == layer) return &h->head[i];
    return NULL;
}

es_status es_exit_heads_set_adapter(es_exit_heads *h, int layer, const float *W, const float *b, es_err *err) {
    if (!h) return es_fail(err, ES_ERR_INVALID_ARG, "null exit heads");
    exit_head *e = find(h, layer);
    if (!e) return es_fail(err, ES_ERR_INVALID_ARG, "no exit head at layer %d", layer);
    const size_t d = (size_t)h->model->hp.n_embd;
    if (!W) {
        free(e->w);
        free(e->b);
        e->w = e->b = NULL;
        return ES_OK;
    }
    for (size_t i = 0; i < d * d; i++)
        if (!isfinite(W[i])) return es_fail(err, ES_ERR_FORMAT, "adapter of layer %d has a non-finite weight", layer);
    for (size_t i = 0; b && i < d; i++)
        if (!isfinite(b[i])) return es_fail(err, ES_ERR_FORMAT, "adapter of layer %d has a non-finite bias", layer);
    if (!e->w) {
        e->w = malloc(d * d * sizeof(float));
        e->b = malloc(d * sizeof(float));
        if (!e->w || !e->b) {
            free(e->w);
            free(e->b);
            e->w = e->b = NULL;
            return es_fail(err, ES_ERR_NOMEM, "out of memory for the adapter of layer %d", layer);
        }
    }
    memcpy(e->w, W, d * d * sizeof(float));
    if (b) {
        memcpy(e->b, b, d * sizeof(float));
    } else {
        memset(e->b, 0, d * sizeof(float));
    }
    e->wm = (es_mat){.type = ES_TYPE_F32, .rows = (int64_t)d, .cols = (int64_t)d, .row_bytes = d * sizeof(float), .data = e->w};
    return ES_OK;
}

/* Reads exit.<L>.weight / exit.<L>.bias of `g` into the head at L (missing weight: zero-training). */
static es_status load_adapter(es_exit_heads *h, const es_gguf *g, int layer, es_err *err) {
    char name[64];
    const int64_t d = h->model->hp.n_embd;
    snprintf(name, sizeof name, "exit.%d.weight", layer);
    const es_gguf_tensor *w = es_gguf_find_tensor(g, name);
    if (!w) return ES_OK;
    if (w->type != ES_TYPE_F32 || w->ne[0] != d || w->ne[1] != d || w->ne[2] != 1 || w->ne[3] != 1)
        return es_fail(err, ES_ERR_FORMAT, "tensor '%s' must be F32 of shape [%lld, %lld] (the model's n_embd)", name,
                       (long long)d, (long long)d);
    snprintf(name, sizeof name, "exit.%d.bias", layer);
    const es_gguf_tensor *b = es_gguf_find_tensor(g, name);
    if (b && (b->type != ES_TYPE_F32 || b->ne[0] != d || b->ne[1] != 1 || b->ne[2] != 1 || b->ne[3] != 1))
        return es_fail(err, ES_ERR_FORMAT, "tensor '%s' must be F32 of shape [%lld]", name, (long long)d);
    /* the mapping's data is only 32-byte aligned as a whole: copy (set_adapter does) */
    return es_exit_heads_set_adapter(h, layer, w->data, b ? b->data : NULL, err);
}

void es_exit_heads_free(es_exit_heads *h) {
    if (!h) return;
    for (int i = 0; i < h->n; i++) {
        free(h->head[i].w);
        free(h->head[i].b);
    }
    es_threadpool_free(h->tp);
    free(h->xa);
    free(h->xn);
    free(h->mm_scratch);
    free(h);
}

es_status es_exit_heads_init(const es_model *model, const char *path, const int *layers, int n, int n_rows_max,
                             int n_threads, es_exit_heads **out, es_err *err) {
    *out = NULL;
    if (!model) return es_fail(err, ES_ERR_INVALID_ARG, "null model");
    const int nl = model->hp.n_layer;
    const size_t d = (size_t)model->hp.n_embd;
    if (n < 0 || n > ES_EXIT_MAX || (n > 0 && !layers))
        return es_fail(err, ES_ERR_INVALID_ARG, "%d exit layers (at most %d)", n, ES_EXIT_MAX);
    if (n_rows_max <= 0 || n_rows_max > 8192) return es_fail(err, ES_ERR_INVALID_ARG, "exit heads: rows %d (1..8192)", n_rows_max);
    if (n_threads <= 0 || n_threads > 512) return es_fail(err, ES_ERR_INVALID_ARG, "exit heads: threads %d (1..512)", n_threads);
    es_gguf *g = NULL;
    es_status st;
    if (path && (st = es_gguf_open(path, &g, err)) != ES_OK) {
        es_err_prefix(err, path);
        return st;
    }
    int want[ES_EXIT_MAX], nw = 0;
    if (n > 0) {
        for (int i = 0; i < n; i++) want[nw++] = layers[i];
    } else if (g) { /* every layer the file has an adapter for */
        for (int64_t t = 0; t < es_gguf_n_tensors(g); t++) {
            int L;
            char rest[16];
            if (sscanf(es_gguf_tensor_at(g, t)->name, "exit.%d.%15s", &L, rest) == 2 && !strcmp(rest, "weight")) {
                if (nw == ES_EXIT_MAX) {
                    es_gguf_free(g);
                    return es_fail(err, ES_ERR_FORMAT, "%s has adapters for more than %d layers", path, ES_EXIT_MAX);
                }
                want[nw++] = L;
            }
        }
        if (nw == 0) {
            es_gguf_free(g);
            return es_fail(err, ES_ERR_FORMAT, "%s has no exit.<L>.weight tensors", path);
        }
    } else {
        return es_fail(err, ES_ERR_INVALID_ARG, "exit heads need layers or a file with adapters");
    }
    for (int i = 0; i < nw; i++) {
        bool dup = false;
        for (int j = 0; j < i; j++) dup |= want[j] == want[i];
        if (want[i] < 1 || want[i] >= nl || dup) {
            es_gguf_free(g);
            return es_fail(err, ES_ERR_RANGE, "exit layer %d: must be distinct and in 1..%d (the model has %d layers)",
                           want[i], nl - 1, nl);
        }
    }
    es_exit_heads *h = calloc(1, sizeof *h);
    if (!h) {
        es_gguf_free(g);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    h->model = model;
    h->n_rows_max = n_rows_max;
    for (int i = 0; i < nw; i++) h->head[h->n++].layer = want[i];
    h->xa = malloc((size_t)n_rows_max * d * sizeof(float));
    h->xn = malloc((size_t)n_rows_max * d * sizeof(float));
    const size_t mm = es_matmul_scratch_size(n_rows_max, (int64_t)d);
    h->mm_scratch = malloc(mm ? mm : 1);
    st = !h->xa || !h->xn || !h->mm_scratch ? es_fail(err, ES_ERR_NOMEM, "out of memory for exit-head scratch") : ES_OK;
    if (st == ES_OK) st = es_threadpool_init(n_threads, &h->tp, err);
    for (int i = 0; i < h->n && st == ES_OK && g; i++) {
        st = load_adapter(h, g, h->head[i].layer, err);
        if (st != ES_OK) es_err_prefix(err, path);
    }
    es_gguf_free(g);
    if (st != ES_OK) {
        es_exit_heads_free(h);
        return st;
    }
    *out = h;
    return ES_OK;
}

int es_exit_heads_count(const es_exit_heads *h) { return h ? h->n : 0; }
int es_exit_heads_layer(const es_exit_heads *h, int i) { return h && i >= 0 && i < h->n ? h->head[i].layer : -1; }
bool es_exit_heads_calibrated(const es_exit_heads *h, int i) { return h && i >= 0 && i < h->n && h->head[i].w; }

es_status es_exit_heads_logits(es_exit_heads *h, int layer, const float *hidden, int n_rows, float *logits, es_err *err) {
    if (!h || !hidden || !logits) return es_fail(err, ES_ERR_INVALID_ARG, "null exit heads, hidden rows or logits");
    exit_head *e = find(h, layer);
    if (!e) return es_fail(err, ES_ERR_INVALID_ARG, "no exit head at layer %d", layer);
    if (n_rows < 0 || n_rows > h->n_rows_max)
        return es_fail(err, ES_ERR_RANGE, "%d rows for an exit head (at most %d)", n_rows, h->n_rows_max);
    if (n_rows == 0) return ES_OK;
    const es_hparams *hp = &h->model->hp;
    const int d = hp->n_embd;
    const float *src = hidden;
    if (e->w) {
        es_matmul(h->tp, h->xa, &e->wm, hidden, n_rows, h->mm_scratch);
        for (int r = 0; r < n_rows; r++)
            for (int j = 0; j < d; j++) h->xa[(size_t)r * d + j] += e->b[j];
        src = h->xa;
    }
    for (int r = 0; r < n_rows; r++) rmsnorm(h->xn + (size_t)r * d, src + (size_t)r * d, h->model->output_norm, d, hp->rms_eps);
    es_matmul(h->tp, logits, &h->model->output, h->xn, n_rows, h->mm_scratch);
    return ES_OK;
}
