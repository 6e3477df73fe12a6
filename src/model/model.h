/* model.h — the loaded model: hyper-parameters plus typed views into the memory-mapped GGUF (or
 * into X16 copies of its Q8_0 / Q4_0 / K-quant matrices, kernels/repack.h). */
#ifndef ES_MODEL_MODEL_H
#define ES_MODEL_MODEL_H

#include "edgespec.h"
#include "gguf/gguf.h"
#include "kernels/matmul.h"
#include "model/hparams.h"
#include "tokenizer/tokenizer.h"

typedef struct es_layer {
    const float *attn_norm;        /* (n_embd) */
    es_mat wq;                     /* (n_head*head_dim rows, n_embd cols) */
    es_mat wk, wv;                 /* (n_head_kv*head_dim, n_embd) */
    es_mat wo;                     /* (n_embd, n_head*head_dim) */
    const float *bq, *bk, *bv;     /* qwen2 biases (rows of wq / wk / wv), NULL for llama */
    const float *q_norm, *k_norm;  /* qwen3 per-head RMSNorm weights (head_dim), NULL otherwise */
    const float *ffn_norm;         /* (n_embd) */
    es_mat w1;                     /* gate (n_ff, n_embd) */
    es_mat w2;                     /* down (n_embd, n_ff) */
    es_mat w3;                     /* up   (n_ff, n_embd) */
} es_layer;

struct es_model {
    es_hparams hp;
    es_gguf *gguf;                 /* owns the mapping every es_mat points into */
    es_tokenizer *tok;
    es_mat tok_embd;               /* (n_vocab, n_embd) */
    const float *output_norm;      /* (n_embd) */
    const float *rope_freqs;       /* (rope_dim/2) Llama 3.x RoPE factors, or NULL */
    es_mat output;                 /* (n_vocab, n_embd); a copy of tok_embd's view when tied */
    es_layer *layers;              /* [n_layer] */
    float *owned;                  /* f32 copies of small vectors stored in other types */
    void **packed;                 /* X16 copies of matrices (kernels/repack.h) */
    int n_packed;
    uint64_t weight_bytes;         /* bytes of matrices read per decode step */
    char name[128];
};

/* The inverse frequency of each of the rope_dim/2 rotated pairs: base^(-2i/rope_dim) as float powf
 * computes it (as llama2.c does, so greedy outputs match it), divided by the model's rope_freqs factor
 * and times its linear scaling. Both backends rotate by angles pos · inv[i] from this one table. */
void es_model_rope_inv_freq(const es_model *m, float *inv);

#endif
