/* hparams.h — a model's shape, read from and written to GGUF metadata, and the standard tensor names
 * (the ones llama.cpp uses, so our files interoperate). */
#ifndef ES_MODEL_HPARAMS_H
#define ES_MODEL_HPARAMS_H

#include "edgespec.h"
#include "gguf/gguf.h"

typedef enum es_arch { ES_ARCH_LLAMA = 0, ES_ARCH_QWEN2 = 1, ES_ARCH_PHI3 = 2, ES_ARCH_QWEN3 = 3 } es_arch;

typedef struct es_hparams {
    es_arch arch;
    int n_embd;       /* model width d */
    int n_ff;         /* FFN hidden width */
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;     /* n_embd / n_head unless the file says otherwise */
    int n_vocab;
    int n_ctx_train;
    float rms_eps;
    float rope_base;  /* θ */
    int rope_dim;     /* dimensions rotated per head (= head_dim) */
    bool rope_neox;   /* true: pairs (i, i + rope_dim/2) (qwen2, NEOX); false: (2i, 2i+1) (llama) */
    float rope_freq_scale; /* linear RoPE scaling: angles × this (1 / rope.scaling.factor; 1 without scaling) */
    bool qkv_bias;    /* qwen2 */
    bool qk_norm;     /* qwen3: each head of q and of k is RMS-normed (attn_q_norm / attn_k_norm, head_dim
                         weights) after the projection, before RoPE */
    bool fused;       /* phi3: one attn_qkv matrix (Q, K, V rows in turn) and one ffn_up holding the gate
                         rows then the up rows (no ffn_gate) */
    bool tied_output; /* no output.weight: the classifier is token_embd */
} es_hparams;

const char *es_arch_name(es_arch a);

/* Reads <arch>.* keys. Validates ranges (positive, divisible, not absurd). */
es_status es_hparams_from_gguf(const es_gguf *g, es_hparams *hp, es_err *err);
/* Writes general.architecture and the <arch>.* keys. */
es_status es_hparams_to_gguf(const es_hparams *hp, es_gguf_writer *w, es_err *err);
/* Checks internal consistency (for converters and synth before writing). */
es_status es_hparams_validate(const es_hparams *hp, es_err *err);

/* Standard tensor names: "token_embd.weight", "output_norm.weight", "output.weight", and per layer
 * "blk.<il>.<suffix>" with suffix attn_norm.weight, attn_q.weight, attn_k.weight, attn_v.weight,
 * attn_output.weight, attn_q.bias, attn_k.bias, attn_v.bias, ffn_norm.weight, ffn_gate.weight (W1),
 * ffn_down.weight (W2), ffn_up.weight (W3), attn_q_norm.weight / attn_k_norm.weight [head_dim] (qwen3), and
 * the optional rope_freqs.weight [rope_dim/2] (Llama 3.x: each inverse frequency is divided by its factor). Shapes (ggml order ne0 = row length):
 *   token_embd [n_embd, n_vocab], attn_q [n_embd, n_head*head_dim], attn_k/v [n_embd, n_head_kv*head_dim],
 *   attn_output [n_head*head_dim, n_embd], ffn_gate/up [n_embd, n_ff], ffn_down [n_ff, n_embd],
 *   output [n_embd, n_vocab], norms [n_embd], biases [out]. */
const char *es_tensor_name(char *buf, size_t cap, int layer, const char *suffix);

#endif
