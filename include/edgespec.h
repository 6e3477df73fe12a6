/*
 * edgespec.h — the public C API of edgespec.
 *
 * Everything here is an opaque handle with an *_init / *_free pair, or a plain struct of parameters.
 * Every fallible function returns an es_status; when it is not ES_OK and the caller passed a non-NULL
 * es_err, err->msg holds a human-readable sentence naming what was wrong. Library code never exits
 * the process and never prints: logging and progress go through callbacks the caller supplies.
 */
#ifndef EDGESPEC_H
#define EDGESPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ES_VERSION_STRING "0.1.0"

/* ---- status codes ------------------------------------------------------------------------------ */

typedef enum es_status {
    ES_OK = 0,
    ES_ERR_INVALID_ARG,  /* the caller passed something out of contract */
    ES_ERR_IO,           /* a file or socket could not be opened, read or written */
    ES_ERR_FORMAT,       /* malformed input: a model file, tokenizer file, frame or request */
    ES_ERR_UNSUPPORTED,  /* well-formed but not supported (architecture, tensor type, version) */
    ES_ERR_NOMEM,        /* an allocation failed */
    ES_ERR_RANGE,        /* a value is out of its allowed range (context length, token id, ...) */
    ES_ERR_FULL,         /* a capacity is exhausted (KV pool, sequences, sessions) */
    ES_ERR_MISMATCH,     /* two things that must agree do not (draft vs target vocabulary) */
    ES_ERR_PROTOCOL,     /* the peer broke the wire protocol */
    ES_ERR_BUSY,         /* try again later */
    ES_ERR_TIMEOUT,      /* a peer stayed silent too long */
    ES_ERR_INTERNAL,     /* a bug: an invariant did not hold */
    ES_STATUS_COUNT
} es_status;

/* A short, stable, lower-case name for a status ("ok", "format", ...). Never NULL. */
const char *es_status_str(es_status st);

/* Error detail filled by fallible functions (when non-NULL). */
typedef struct es_err {
    char msg[512];
} es_err;

/* Logging and progress callbacks. `level`: 0 error, 1 warning, 2 info, 3 debug. `fraction` in [0,1]. */
typedef void (*es_log_fn)(void *ud, int level, const char *msg);
typedef void (*es_progress_fn)(void *ud, const char *what, double fraction);

/* ---- model ------------------------------------------------------------------------------------- */

typedef struct es_model es_model;

/* Models are memory-mapped read-only: weights stay in the page cache and are shared by every process
 * that maps the same file; only norms and biases stored in non-f32 types are copied (as f32). */
typedef struct es_model_params {
    es_log_fn log;            /* optional */
    es_progress_fn progress;  /* optional */
    void *ud;                 /* passed to log / progress */
    /* Keep every weight matrix in the file's layout. By default Q8_0 / Q4_0 / Q5_0 and K-quant
     * matrices are copied once at load into the interleaved layout the CPU's int8 kernels read
     * fastest (same results, about 1.4x the multiply-add rate; the file's pages are released).
     * Either way a Q5_0 matrix that is not repacked is widened exactly to Q8_0. The CLI sets it when
     * the environment has EDGESPEC_REPACK=0; the library never reads the environment. */
    bool no_repack;
} es_model_params;

es_model_params es_model_default_params(void);

/* Loads a GGUF model (architectures llama and qwen2). */
es_status es_model_load(const char *path, const es_model_params *params, es_model **out, es_err *err);
void es_model_free(es_model *model);

int es_model_n_vocab(const es_model *model);
int es_model_n_ctx_train(const es_model *model);
int es_model_n_layer(const es_model *model);
int es_model_n_embd(const es_model *model);
/* Bytes of weights read for one decode step (every weight matrix once). */
uint64_t es_model_weight_bytes(const es_model *model);
/* A one-line description ("llama 64d 5L 8h/4kv vocab 512 f32"). Copies into buf, returns buf. */
const char *es_model_desc(const es_model *model, char *buf, size_t len);

/* ---- tokenizer --------------------------------------------------------------------------------- */

typedef struct es_tokenizer es_tokenizer;

/* The tokenizer stored in a model's GGUF metadata. Owned by the model: do not free. */
const es_tokenizer *es_model_tokenizer(const es_model *model);

/* Encodes UTF-8 text. add_bos: prepend BOS when the tokenizer has one and its vocabulary asks for it
 * (tokenizer.ggml.add_bos_token: true for llama2.c / SentencePiece vocabularies, usually false for
 * Qwen2); EOS is never appended. parse_special: recognise control-token texts (e.g. "<|im_start|>")
 * in the input; user-defined added tokens are always recognised. Writes at most `cap` ids and sets
 * *n_out to the number the full encoding has; when that is larger than `cap` nothing beyond `cap` is
 * written (cap 0 with ids NULL counts). */
es_status es_tokenize(const es_tokenizer *tok, const char *text, size_t len, bool add_bos, bool parse_special,
                      int32_t *ids, int cap, int *n_out, es_err *err);
/* The bytes of one token (byte-fallback tokens decoded to their byte; control tokens to nothing).
 * prev: the previous token or -1 (SentencePiece drops the leading space of the first piece after BOS).
 * Returns bytes written: at most `cap`, a longer piece is cut (a buffer of 256 bytes holds any piece
 * of the usual vocabularies; es_tokenizer_max_token_len in tokenizer.h gives the exact bound). */
int es_token_to_piece(const es_tokenizer *tok, int32_t prev, int32_t id, char *buf, int cap);
int es_tokenizer_n_vocab(const es_tokenizer *tok);
int32_t es_tokenizer_bos(const es_tokenizer *tok);  /* -1 if none */
int32_t es_tokenizer_eos(const es_tokenizer *tok);  /* -1 if none */
/* 64-bit fingerprint of every token's text, the vocabulary size and BOS/EOS: equal fingerprints mean
 * two models share a vocabulary. */
uint64_t es_tokenizer_fingerprint(const es_tokenizer *tok);

/* ---- context: KV cache + forward pass ---------------------------------------------------------- */

typedef struct es_ctx es_ctx;

/* Why a generation ended: the scheduler's events, the wire protocol's VERDICT / TOKENS / CLOSE frames
 * (their stop byte, docs/PROTOCOL.md) and the HTTP API's finish_reason all use these values. */
typedef enum es_stop_reason {
    ES_STOP_NONE = 0,    /* still generating */
    ES_STOP_EOS = 1,     /* a stop token was emitted (it is the last token sent) */
    ES_STOP_LENGTH = 2,  /* max_tokens reached */
    ES_STOP_CONTEXT = 3, /* context full */
    ES_STOP_CLIENT = 4,  /* the client closed the session */
    ES_STOP_ERROR = 5,
} es_stop_reason;

/* Element type of the KV cache rows. F16 (the default) halves the memory of F32 with a logit error
 * far below what changes a greedy choice except at near-ties; Q8_0 (int8 with one fp16 scale per 32
 * values, as GGUF Q8_0) quarters it and needs n_head_kv * head_dim and head_dim multiples of 32. */
typedef enum es_kv_type {
    ES_KV_F16 = 0,
    ES_KV_F32 = 1,
    ES_KV_Q8_0 = 2,
} es_kv_type;

/* "f32", "f16", "q8_0"; "unknown" otherwise. */
const char *es_kv_type_name(es_kv_type type);

typedef enum es_backend_kind { ES_BACKEND_CPU = 0, ES_BACKEND_VULKAN = 1 } es_backend_kind;

typedef struct es_ctx_params {
    int n_threads;        /* compute threads (>= 1) */
    int n_ctx;            /* max positions per sequence (0: the model's training context) */
    int n_seq_max;        /* max sequences alive at once */
    int n_batch_max;      /* max tokens in one es_decode call */
    int kv_block_size;    /* tokens per KV page (default 16) */
    int64_t kv_blocks;    /* pages in the pool (0: enough for n_seq_max full sequences) */
    int n_logits_max;     /* max rows of logits one es_decode may ask for (0: n_batch_max) */
    es_kv_type kv_type;   /* element type of the cached K / V rows (default ES_KV_F16) */
    /* Where the forward pass runs. ES_BACKEND_CPU (default): this machine's cores, n_threads of them.
     * ES_BACKEND_VULKAN: Vulkan device `device` (es_devices); the weights are uploaded at es_ctx_init
     * (they must be in the file's layout: load the model with no_repack; F32, F16, BF16, Q8_0, Q4_0,
     * Q4_K, Q5_K, Q6_K and Q5_0 widened to Q8_0 have kernels), the KV rows live in device memory as
     * f32, f16 or q8_0 as kv_type says (q8_0 where kv_dim is a multiple of 64, else f16), and logits
     * come back for the rows that ask. n_threads is not used there. */
    es_backend_kind backend;
    int device;
    /* Vulkan: enable VK_LAYER_KHRONOS_validation and pass its messages to device_message (tests). */
    bool device_validation;
    void (*device_message)(void *ud, bool is_error, const char *msg);
    void *device_message_ud;
    /* Largest buffer one weight matrix may occupy on the device (0: the device's maxStorageBufferRange);
     * larger matrices are split by rows across buffers. Tests set it small to exercise the split. */
    int64_t device_buffer_max;
    /* Vulkan: KV pages that also have room in device memory. 0: all kv_blocks (the cache lives on the
     * device). Fewer gives the context two tiers (APEX): the pool's kv_blocks pages are in host
     * memory, and each sequence's rows are either in device memory (its attention runs there) or in
     * host memory (its attention runs on this machine's cores, n_threads of them, overlapped with the
     * device's work). Sequences start in the device tier; es_seq_set_tier moves them, and a device-tier
     * sequence that finds no device page left moves to the host tier by itself. Both tiers hold the
     * same rows: kv_type f32, f16, or q8_0 where the device keeps q8_0 (kv_dim a multiple of 64). */
    int64_t device_kv_blocks;
} es_ctx_params;

es_ctx_params es_ctx_default_params(void);

es_status es_ctx_init(const es_model *model, const es_ctx_params *params, es_ctx **out, es_err *err);
void es_ctx_free(es_ctx *ctx);

/* One forward pass over n tokens of one or more sequences.
 *
 * Token i belongs to sequence seq[i] and is stored in that sequence's KV cache in the next free slot
 * (slots are taken in batch order). Every token attends to itself and its ancestors, and nothing else:
 *  - parent[i] >= 0: its parent is batch token parent[i] (which must come earlier, same sequence);
 *  - parent[i] == -1: its parent is in the cache: slot cache_parent[i] when cache_parent is given and
 *    cache_parent[i] >= 0, else the sequence's last slot before this call.
 * A chain (prefill, chain verification) has parent[i] = i-1; a token tree gives each node its parent;
 * a tree grown over several calls (draft trees) points new nodes at cached slots. Slots of one branch
 * are never seen by another, so rejected branches need no cleanup before es_seq_keep.
 * pos[i] is the RoPE position (the token's depth in the sequence).
 * logits[i] != 0 asks for the logits of row i (read them with es_ctx_logits(ctx, i)).
 * parent == NULL means a chain per sequence; logits == NULL means logits for the last token only. */
typedef struct es_batch {
    int n_tokens;
    const int32_t *token;
    const int32_t *pos;
    const int32_t *seq;
    const int32_t *parent;
    const int8_t *logits;
    const int32_t *cache_parent;
} es_batch;

es_status es_decode(es_ctx *ctx, const es_batch *batch, es_err *err);
/* Logits (n_vocab floats) of batch row i of the last es_decode, or NULL if they were not asked for. */
const float *es_ctx_logits(const es_ctx *ctx, int i);

/* ---- KV tiers (a Vulkan context with device_kv_blocks < kv_blocks) ---- */
typedef enum { ES_KV_TIER_DEVICE = 0, ES_KV_TIER_HOST = 1 } es_kv_tier;
/* How a pass with host-tier rows overlaps the two: ASYNC_OVERLAP runs every row's linear layers in
 * one device batch while the host computes the host-tier rows' attention, joined before the output
 * projection; ASYMMETRIC splits the batch into two sub-batches (whole sequences each) whose device
 * work and host attention alternate, so the host works on one while the device runs the other. */
typedef enum { ES_HYBRID_ASYNC_OVERLAP = 0, ES_HYBRID_ASYMMETRIC = 1 } es_hybrid_mode;
/* Moves a sequence's KV rows to `tier` now (whole pages). Up, the copy is submitted and not waited
 * for: the device runs it before the next pass, which the host records meanwhile; down, the rows are
 * in host memory on return. ES_ERR_FULL: not enough free device pages (nothing moved);
 * ES_ERR_UNSUPPORTED: the context has one tier. */
es_status es_seq_set_tier(es_ctx *ctx, int seq, es_kv_tier tier, es_err *err);
es_kv_tier es_seq_tier(const es_ctx *ctx, int seq);
/* The mode of the passes that follow (default ASYNC_OVERLAP). */
void es_ctx_set_hybrid_mode(es_ctx *ctx, es_hybrid_mode mode);
typedef struct es_tier_info {
    bool tiered;                    /* the context has two tiers */
    int64_t device_blocks_total;    /* device pages */
    int64_t device_blocks_used;     /* device pages holding rows (idle prefix-cache pages included) */
    int64_t device_blocks_cached;   /* of them, copies no device-tier sequence holds (prefix-cache pages
                                       nobody uses now): given back whenever a sequence needs room */
    int64_t device_evictions;       /* such copies given back (brought down first if only the device had them) */
    int host_seqs;                  /* open sequences in the host tier now */
    int64_t moves_to_host, moves_to_device; /* sequences moved (es_seq_set_tier and automatic) */
    int64_t auto_to_host;           /* of which: a device-tier sequence found no device page left */
    int64_t pages_moved;            /* pages copied between the tiers */
    int64_t xfer_async;             /* copies up submitted without the host waiting for them (it records
                                       the next pass meanwhile; the device runs the copy first) */
    int64_t xfer_waits;             /* times the host waited for an earlier copy up to free its staging */
    int64_t hybrid_passes[2];       /* passes with host-tier rows, by es_hybrid_mode */
    double host_attn_seconds;       /* wall time of the host tier's attention (K/V stores included) */
} es_tier_info;
void es_ctx_tier_info(const es_ctx *ctx, es_tier_info *out);

/* Sequences live in a shared paged KV pool. */
es_status es_seq_open(es_ctx *ctx, int *seq_out, es_err *err);
void es_seq_close(es_ctx *ctx, int seq);                       /* frees its pages */
int es_seq_len(const es_ctx *ctx, int seq);                     /* slots held (tokens of every branch) */
es_status es_seq_truncate(es_ctx *ctx, int seq, int len, es_err *err);
/* Keeps `n` of the tokens at slots >= base (slots[k] strictly increasing, each >= base and < len)
 * by moving them to slots base, base+1, ... and truncating to base + n. This is how the accepted path
 * of a verified token tree is kept and the rejected branches dropped; the kept slots must form a path
 * (each the parent of the next, the first a child of slot base-1) and become a plain chain. */
es_status es_seq_keep(es_ctx *ctx, int seq, int base, const int32_t *slots, int n, es_err *err);
/* Pages held by open sequences (pages only the prefix cache holds count as free). */
int64_t es_ctx_kv_blocks_used(const es_ctx *ctx);
int64_t es_ctx_kv_blocks_total(const es_ctx *ctx);

/* The prefix cache (off until enabled): the KV pages of a token prefix outlive their sequence and a
 * later sequence that starts with the same tokens adopts them instead of computing them again (whole
 * pages; a page is copied before anyone writes into a shared one, so no sequence sees another's
 * rows change). Cached pages nobody else holds are reclaimed, least recently released first, when
 * the pool runs out. */
es_status es_ctx_prefix_cache_enable(es_ctx *ctx, es_err *err);
/* On an empty sequence: adopts the cached pages matching tokens[0..n); returns the slots it holds now
 * (the prefix already computed), 0 without a cache or a match. */
int es_seq_prefix_adopt(es_ctx *ctx, int seq, const int32_t *tokens, int n);
/* Offers the sequence's full pages to the cache: slot i must hold tokens[i] (its confirmed tokens,
 * along one chain). Returns the pages newly cached. */
int es_seq_prefix_keep(es_ctx *ctx, int seq, const int32_t *tokens, int n);
typedef struct es_prefix_cache_info {
    bool enabled;
    int64_t cached_blocks;   /* pages in the cache */
    int64_t idle_blocks;     /* of them, held by no sequence (reclaimable) */
    int64_t hit_tokens;      /* prompt tokens adopted instead of computed, since start */
    int64_t evicted_blocks;  /* pages dropped from the cache to make room */
} es_prefix_cache_info;
void es_ctx_prefix_cache_info(const es_ctx *ctx, es_prefix_cache_info *out);
/* Bytes of KV cache one token (one slot) takes for `model` with rows of `type`: K and V of every
 * layer (2 * n_layer * n_head_kv * head_dim * bytes per element; q8_0: 34 bytes per 32 elements).
 * 0 if the model's shape does not allow the type. */
int64_t es_ctx_kv_bytes_per_token(const es_model *model, es_kv_type type);
const es_model *es_ctx_model(const es_ctx *ctx);

/* ---- early exits ------------------------------------------------------------------------------ */

/* Most exit layers one context or one set of exit heads takes. */
#define ES_EXIT_MAX 8

/* Called by es_decode on the thread that runs it, in the middle of the pass, as soon as the first
 * `layer` layers are done (layer == n_layer: after the last one, the residual stream before the output
 * norm). hidden holds n_rows rows of n_embd floats: row r is the state of batch row rows[r], for the
 * rows that asked for logits, in batch order. Both stay valid only during the call. The pass goes on
 * when the callback returns, so it should be quick (hand the rows to another thread, or compute an
 * exit head's logits). */
typedef void (*es_exit_fn)(void *ud, int layer, const float *hidden, int n_rows, const int32_t *rows);

/* Asks every later es_decode on `ctx` to call fn after each of layers[0 .. n) (distinct values in
 * 1 .. n_layer, at most ES_EXIT_MAX). n == 0 (or fn NULL) turns the hook off. CPU and Vulkan both:
 * the device pass is split at each exit layer and the rows read back there. */
es_status es_ctx_set_exit_hook(es_ctx *ctx, const int *layers, int n, es_exit_fn fn, void *ud, es_err *err);

/* Exit heads: next-token logits from an intermediate hidden state h (after layer L) without running
 * the rest of the model. Zero-training: output(final_norm(h)), the model's own head on the early
 * state. Calibrated: output(final_norm(W_L h + b_L)) with a linear adapter (d × d plus bias) fitted so
 * that W_L h + b_L approximates the final hidden state (edgespec fit-exit). Adapters are stored as
 * GGUF tensors exit.<L>.weight (F32, ne {d, d}: row o holds the weights of output o) and exit.<L>.bias
 * (F32, ne {d}), in a file of their own or in the model's GGUF (llama.cpp ignores unknown tensors). */
typedef struct es_exit_heads es_exit_heads;

/* Heads for `model` at layers[0 .. n) (1 .. n_layer - 1; n == 0: every layer that `path` has an
 * adapter for). path (may be NULL): a GGUF with exit.<L>.* tensors; a layer with an adapter there is
 * calibrated, one without is zero-training. n_rows_max: most rows one es_exit_heads_logits call takes;
 * n_threads: threads of its own pool (the calling thread is one of them). */
es_status es_exit_heads_init(const es_model *model, const char *path, const int *layers, int n, int n_rows_max,
                             int n_threads, es_exit_heads **out, es_err *err);
void es_exit_heads_free(es_exit_heads *h);
int es_exit_heads_count(const es_exit_heads *h);
int es_exit_heads_layer(const es_exit_heads *h, int i);       /* the i-th head's layer */
bool es_exit_heads_calibrated(const es_exit_heads *h, int i); /* whether it has an adapter */
/* Replaces (W non-NULL) or removes (W NULL: zero-training) the adapter of the head at `layer`.
 * W: d × d, row o the weights of output o; b: d floats or NULL (zero). Copied. */
es_status es_exit_heads_set_adapter(es_exit_heads *h, int layer, const float *W, const float *b, es_err *err);
/* Logits (n_rows × n_vocab) of the head at `layer` for n_rows hidden states (n_rows × n_embd, as an
 * es_exit_fn receives them). Never allocates; not thread-safe (one caller at a time per object). */
es_status es_exit_heads_logits(es_exit_heads *h, int layer, const float *hidden, int n_rows, float *logits,
                               es_err *err);

/* ---- sampling ---------------------------------------------------------------------------------- */

/* Order of application (details in src/sample/sampler.h): NaN logits -> -inf, +inf -> FLT_MAX;
 * logit bias (added to the listed tokens' logits); penalties over the distinct tokens among the last
 * repeat_last_n accepted: repetition (logit > 0 -> logit / penalty, else logit * penalty), then minus
 * count * frequency_penalty + presence_penalty (count: occurrences in that window; llama.cpp's rule);
 * temperature (0: one-hot argmax, ties -> lowest id); top-k; softmax; top-p (smallest most-likely set
 * whose mass reaches top_p, >= 1 token); min-p (drop p < min_p * p_max); renormalise; draw by inverse
 * CDF with one uniform from the sampler's own stream (none when temperature is 0). No token with a
 * finite logit: one-hot at token 0. A sampler is not thread-safe; use one per sequence. */
typedef struct es_sampler es_sampler;

/* Most logit-bias entries a sampler takes (kept in the parameters by value, so they copy freely). */
#define ES_SAMPLER_MAX_BIAS 128

typedef struct es_logit_bias {
    int32_t id;             /* token id in [0, n_vocab) */
    float bias;             /* added to the token's logit (finite; -100 all but bans the token) */
} es_logit_bias;

typedef struct es_sampler_params {
    float temperature;      /* 0: greedy (argmax) */
    int top_k;              /* 0: off */
    float top_p;            /* 1: off */
    float min_p;            /* 0: off */
    float repeat_penalty;   /* 1: off */
    int repeat_last_n;      /* tokens the penalties look back over */
    float presence_penalty; /* 0: off (finite) */
    float frequency_penalty; /* 0: off (finite) */
    uint64_t seed;
    int n_bias;             /* entries of bias in use (0: off); distinct ids */
    es_logit_bias bias[ES_SAMPLER_MAX_BIAS];
} es_sampler_params;

es_sampler_params es_sampler_default_params(void);
es_status es_sampler_init(const es_sampler_params *p, int n_vocab, es_sampler **out, es_err *err);
void es_sampler_free(es_sampler *s);
/* Whether any history-dependent penalty is on (repetition != 1, presence or frequency != 0). */
bool es_sampler_penalized(const es_sampler_params *p);
/* Samples a token from raw logits (not modified). */
int32_t es_sampler_sample(es_sampler *s, const float *logits);
/* The normalised distribution sampling would draw from (after penalties, temperature, top-k/p,
 * min-p) written to probs[n_vocab]; for temperature 0 a one-hot at the argmax. Speculative
 * acceptance rules need p and q as distributions. */
void es_sampler_probs(es_sampler *s, const float *logits, float *probs);
/* Records an emitted token (for the repetition penalty). */
void es_sampler_accept(es_sampler *s, int32_t token);
/* Back to the state es_sampler_init left: clears the history and reseeds the stream with params.seed. */
void es_sampler_reset(es_sampler *s);
/* Uniform double in [0,1) from the sampler's seeded stream. */
double es_sampler_uniform(es_sampler *s);

/* ---- compute devices --------------------------------------------------------------------------- */

#define ES_DEVICE_FEATURES_MAX 8

/* A device a forward pass can run on besides the CPU (today: Vulkan compute devices). */
typedef struct es_device_info {
    char backend[16];                   /* "vulkan" */
    int index;                          /* N of --device vulkan:N */
    char name[256];                     /* the driver's device name */
    char type[16];                      /* "discrete", "integrated", "virtual", "cpu", "other" */
    int64_t memory_bytes;               /* the largest device-local memory heap */
    uint32_t subgroup_size;             /* 8 on lavapipe, 32 on NVIDIA, 32/64 on AMD: no kernel assumes it */
    int64_t max_storage_buffer_range;   /* most bytes one buffer binding may cover */
    int n_features;
    const char *features[ES_DEVICE_FEATURES_MAX]; /* static names: "fp16", "int8", "storage16",
                                                     "storage8", "subgroup_arith", "coopmat_nv", "int_dot" */
} es_device_info;

/* Lists the Vulkan devices: the first min(n, cap) into out, their number into *n.
 * Returns ES_ERR_UNSUPPORTED when this build has no Vulkan backend (no loader or glslc at build time),
 * ES_ERR_IO when the Vulkan loader or a driver cannot be used (none installed: *n = 0). */
es_status es_devices(es_device_info *out, int cap, int *n, es_err *err);

#ifdef __cplusplus
}
#endif
#endif /* EDGESPEC_H */
