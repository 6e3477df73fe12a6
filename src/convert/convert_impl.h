/* convert_impl.h — pieces shared by the converters (llama2.c, Hugging Face, quantize, synth).
 *
 * Every producer describes its output as a "plan": a list of tensors, each either a block of bytes that
 * is already in the output type, or a row source — a function that produces row r (ne[0] floats) on
 * demand. At write time each row-source tensor becomes an es_gguf_add_tensor_fill whose callback pulls
 * the rows (on several threads for big tensors) and converts them to the tensor's type, so no producer
 * ever holds a whole output model in memory. */
#ifndef ES_CONVERT_IMPL_H
#define ES_CONVERT_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "convert/convert.h"
#include "gguf/gguf.h"
#include "model/hparams.h"
#include "tokenizer/tokenizer.h"

/* ---- read-only file mapping ---- */

typedef struct es_mapped {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
} es_mapped;

es_status es_map_file(const char *path, es_mapped *m, es_err *err);
void es_unmap_file(es_mapped *m);
/* Reads a whole (small) file into a NUL-terminated malloc'd buffer; fails beyond max bytes. */
es_status es_read_small_file(const char *path, size_t max, char **out, size_t *len, es_err *err);
/* Size of a file in bytes (0 if it cannot be read). */
uint64_t es_file_size_of(const char *path);

/* ---- plans ---- */

/* Produces row `row` (ne[0] floats) of a tensor into dst. Must be safe to call from several threads
 * at once for different rows (sources are read-only, random streams are seeded per row). */
typedef es_status (*es_row_fn)(void *ud, int64_t row, float *dst, es_err *err);

typedef struct es_plan_tensor {
    char *name;
    uint32_t type;           /* output type */
    int n_dims;
    int64_t ne[ES_GGUF_MAX_DIMS];
    const void *bytes;       /* non-NULL: the data, already in `type`, referenced until the write */
    es_row_fn row;           /* else: rows produced as f32 and converted to `type` */
    void *ud;                /* row's argument; freed with free() when own_ud */
    bool own_ud;
    int n_threads;
} es_plan_tensor;

typedef struct es_plan {
    es_plan_tensor *t;
    int n, cap;
    int n_threads;           /* threads used to fill a big tensor (>= 1) */
    int n_kept_f32;          /* matrices es_matrix_type left in F32 (or in a 32-block fallback type) */
    int n_layers;            /* for the ES_MIX_Q4_K_M rule (0: unknown; attn_v / ffn_down then stay Q4_K) */
    bool tied_output;        /* the model has no output.weight: token_embd is the classifier (Q4_K_M: Q6_K) */
    char kept_example[96];   /* the first of them, and the type it could not take */
    char kept_type[16];
    es_log_fn log;
    void *ud;
} es_plan;

void es_plan_init(es_plan *p, int n_threads, es_log_fn log, void *ud);
void es_plan_free(es_plan *p);
/* Adds a tensor whose rows come from row(ud, r). When own_ud, ud is freed with the plan (also on
 * failure of this call). */
es_status es_plan_add_rows(es_plan *p, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                           es_row_fn row, void *ud, bool own_ud, es_err *err);
/* Adds a tensor whose bytes are given in its type's layout. */
es_status es_plan_add_bytes(es_plan *p, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                            const void *bytes, es_err *err);
/* Registers every tensor with the writer and writes the file. The plan must outlive this call. */
es_status es_plan_write(es_plan *p, es_gguf_writer *w, const char *path, es_progress_fn progress, void *pud,
                        es_err *err);
/* Elements of all tensors. */
uint64_t es_plan_n_params(const es_plan *p);

/* The type a weight matrix gets: `want` unless its rows (ne0) are not a multiple of the block size,
 * in which case F32 (a debug log line names it; es_plan_write logs a summary). */
uint32_t es_matrix_type(es_plan *p, uint32_t want, const char *name, int64_t ne0);

/* general.file_type value (llama.cpp's LLAMA_FTYPE_*) for a weight type. */
uint32_t es_file_type_of(uint32_t type);
/* Writes general.file_type and, for quantised types, general.quantization_version. */
es_status es_write_file_type(es_gguf_writer *w, uint32_t type, es_err *err);
/* A new writer holding the metadata every converted model starts with: the shape, general.name
 * (`name`, or the stem of `src_path`), general.file_type and the tokenizer. NULL *out on failure. */
es_status es_convert_writer_begin(const es_hparams *hp, const char *name, const char *src_path, uint32_t out_type,
                                  const es_vocab_spec *vocab, es_gguf_writer **out, es_err *err);

/* Copies one key/value of a reader into the writer (integers keep their value, though narrow integer
 * types are widened to 32 bits; nested arrays are not supported). */
es_status es_copy_kv_one(es_gguf_writer *w, const es_gguf *g, int64_t i, es_err *err);
/* Copies every key that starts with prefix. */
es_status es_copy_kv_prefix(es_gguf_writer *w, const es_gguf *g, const char *prefix, es_err *err);

/* Default thread count for filling tensors: online CPUs, at most 8. */
int es_convert_default_threads(void);

/* "dir/name.ext" -> "name" into buf. */
const char *es_path_stem(const char *path, char *buf, size_t cap);

#define es_convert_logf es_logf /* the shared formatter (util/err.h) */

/* Parses a Hugging Face config.json (text of len bytes, not NUL-terminated) into hyper-parameters
 * (validated); *tie: tie_word_embeddings. The error names what is wrong; the caller adds the path.
 * (hf.c; exposed for its fuzz target.) */
es_status es_hf_parse_config(const char *text, size_t len, es_hparams *hp, bool *tie, es_err *err);

#endif
