/* convert.h — producing GGUF files: from llama2.c checkpoints, from Hugging Face directories, by
 * re-quantising a GGUF, and synthetic models for performance work. */
#ifndef ES_CONVERT_H
#define ES_CONVERT_H

#include "edgespec.h"

/* What a conversion produced (filled on success when the caller passes a pointer in the options). */
typedef struct es_convert_stats {
    int64_t n_tensors;        /* tensors written */
    int64_t n_converted;      /* tensors whose data was converted to the output type (quantize: changed type) */
    int64_t n_kept_f32;       /* weight matrices left in F32 (or, for a K-quant, written in its 32-block
                                 stand-in Q4_0 / Q8_0) because their rows are not whole blocks */
    uint64_t n_params;        /* elements in all tensors */
    uint64_t bytes_in;        /* size of the input file(s) */
    uint64_t bytes_out;       /* size of the written file */
} es_convert_stats;

/* A weight "type" that is a per-tensor mix rather than one type (passed where a weight type is, in
 * es_convert_opts.out_type, es_quantize and es_synth_opts.type): llama.cpp's Q4_K_M rule. Q4_K for
 * most matrices and the token embedding; Q6_K for the output matrix (the token embedding when it is
 * tied), and for attn_v and ffn_down in the first and last eighth of the layers and every third
 * layer in between (layer i of n: i < n/8, i >= 7n/8 or (i - n/8) % 3 == 2). Outside ggml's ids. */
#define ES_MIX_Q4_K_M 0x100u

/* True for the weight types (and mixes) a converter can produce: f32, f16, bf16, q8_0, q4_0, q4_k,
 * q5_k, q6_k, ES_MIX_Q4_K_M. */
bool es_convert_type_ok(uint32_t type);
/* A weight type or mix by name: the names of es_type_from_name plus "q4_k_m"; -1 if unknown. */
int es_convert_type_from_name(const char *name);
/* The name of a weight type or mix ("q4_k_m" for ES_MIX_Q4_K_M). */
const char *es_convert_type_name(uint32_t type);

typedef struct es_convert_opts {
    uint32_t out_type;        /* type of the 2-D weight matrices: ES_TYPE_F32 (default), F16, BF16, Q8_0, Q4_0.
                                 Matrices whose row length is not a multiple of the block size stay F32;
                                 norms and biases are always F32. */
    const char *name;         /* general.name (NULL: derived from the input file name) */
    es_progress_fn progress;  /* optional */
    es_log_fn log;            /* optional */
    void *ud;
    int n_threads;            /* threads converting big tensors (0: online CPUs, at most 8) */
    es_convert_stats *stats;  /* optional: filled on success */
} es_convert_opts;

es_convert_opts es_convert_default_opts(void);

/* llama2.c checkpoint (legacy fp32 header of 7 int32, "ak42" version 1 fp32 or version 2 int8 — the
 * int8 groups are dequantised exactly, q·s, since they may cross row boundaries) + its tokenizer.
 * Writes arch llama, rms eps 1e-5, rope base 10000, context = seq_len. ES_ERR_FORMAT for a bad header
 * or a file whose size is not exactly what the header implies. */
es_status es_convert_llama2c(const char *model_path, const char *tokenizer_path, const char *out_path,
                             const es_convert_opts *opts, es_err *err);
/* Hugging Face directory: config.json (model_type llama or qwen2; rope_scaling must be null),
 * model.safetensors (F32/F16/BF16; not sharded), tokenizer.json (+ tokenizer_config.json). Llama q/k
 * rows are permuted from HF's rotate-half layout to consecutive RoPE pairs; qwen2 keeps NEOX. */
es_status es_convert_hf(const char *dir, const char *out_path, const es_convert_opts *opts, es_err *err);
/* Rewrites every 2-D weight matrix (".weight", not a norm) of a GGUF in `type`, dequantising first
 * when the source is quantised; rows that are not whole blocks stay F32. Metadata is kept
 * (general.file_type updated); other tensors are copied byte for byte. opts->out_type is ignored. */
es_status es_quantize(const char *in_path, const char *out_path, uint32_t type, const es_convert_opts *opts,
                      es_err *err);

typedef struct es_synth_opts {
    const char *shape;        /* tinyllama-1.1b, llama-7b, qwen2-0.5b, stories15m, stories42m, stories110m,
                                 or "custom:dim=512,ff=1376,layers=9,heads=8,kv=4[,ctx=N][,vocab=N][,arch=llama|qwen2]
                                 [,tied=0|1]" (defaults ctx 2048, vocab 32000, llama, tied 1) */
    const char *pad_from;     /* NULL: random weights; else the small GGUF to expand */
    const char *tokenizer;    /* random mode: a llama2.c tokenizer .bin for the vocabulary (NULL: synthetic:
                                 <unk>, <s>, </s>, byte tokens <0x00>..<0xFF>, then "tok_<i>") */
    uint32_t type;            /* weight type (F32 default) */
    float noise;              /* pad mode: std-dev of values put into the zero blocks */
    uint64_t seed;
    const char *out_path;
    es_progress_fn progress;
    es_log_fn log;
    void *ud;
    int n_threads;            /* 0: online CPUs, at most 8 */
    es_convert_stats *stats;  /* optional: filled on success */
} es_synth_opts;

/* Random (pad_from NULL) or padded synthetic model (see synth.c for the construction). A bad shape, a
 * shape that cannot host the small model, or a bad type / noise: ES_ERR_INVALID_ARG. */
es_status es_synth(const es_synth_opts *opts, es_err *err);
/* Validates a shape name (or custom:... spec) and gives its vocabulary size. */
es_status es_synth_check_shape(const char *shape, int *n_vocab, es_err *err);

#endif
