/* gguf.h — reading and writing GGUF v3 files (the llama.cpp / ggml model container).
 *
 * Layout (little-endian): magic "GGUF", u32 version (3; 2 accepted), u64 n_tensors, u64 n_kv; then n_kv
 * key/value pairs (gguf string key, u32 value type, value); then n_tensors tensor infos (name, u32
 * n_dims, u64 ne[n_dims], u32 ggml type, u64 offset relative to the data section); then padding to
 * `general.alignment` (default 32); then the data section. A gguf string is u64 length + bytes (no NUL).
 *
 * The reader validates every count, length, dimension, type, offset, size and alignment with
 * overflow-checked arithmetic before using it, and never allocates from a declared length without
 * first checking it against the bytes that remain in the file. */
#ifndef ES_GGUF_H
#define ES_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"

typedef enum es_gguf_vtype {
    ES_GGUF_UINT8 = 0, ES_GGUF_INT8 = 1, ES_GGUF_UINT16 = 2, ES_GGUF_INT16 = 3,
    ES_GGUF_UINT32 = 4, ES_GGUF_INT32 = 5, ES_GGUF_FLOAT32 = 6, ES_GGUF_BOOL = 7,
    ES_GGUF_STRING = 8, ES_GGUF_ARRAY = 9, ES_GGUF_UINT64 = 10, ES_GGUF_INT64 = 11,
    ES_GGUF_FLOAT64 = 12, ES_GGUF_VTYPE_COUNT
} es_gguf_vtype;

#define ES_GGUF_DEFAULT_ALIGNMENT 32
#define ES_GGUF_MAX_DIMS 4

/* ---- reader ---- */

typedef struct es_gguf es_gguf;

typedef struct es_gguf_tensor {
    const char *name;          /* NUL-terminated copy */
    uint32_t type;             /* es_ggml_type (kernels/types.h) */
    int n_dims;
    int64_t ne[ES_GGUF_MAX_DIMS]; /* ne[0] is the row length (contiguous); unused dims are 1 */
    uint64_t offset;           /* from the start of the data section */
    uint64_t nbytes;
    const void *data;          /* points into the mapping */
} es_gguf_tensor;

/* Opens and validates a file (memory-mapped, read-only). Errors: ES_ERR_IO (cannot open / map),
 * ES_ERR_FORMAT (malformed), ES_ERR_UNSUPPORTED (a GGUF version other than 2 or 3). err->msg names
 * what is wrong but not the path (callers prefix it). */
es_status es_gguf_open(const char *path, es_gguf **out, es_err *err);
/* Parses a caller-owned buffer (not copied; must outlive the handle). Used by tests and fuzzers. */
es_status es_gguf_open_buffer(const void *data, size_t size, es_gguf **out, es_err *err);
void es_gguf_free(es_gguf *g);

uint32_t es_gguf_version(const es_gguf *g);
uint32_t es_gguf_alignment(const es_gguf *g);
size_t es_gguf_file_size(const es_gguf *g);
uint64_t es_gguf_data_offset(const es_gguf *g);

int64_t es_gguf_n_kv(const es_gguf *g);
const char *es_gguf_kv_key(const es_gguf *g, int64_t i);
es_gguf_vtype es_gguf_kv_type(const es_gguf *g, int64_t i);
int64_t es_gguf_find_kv(const es_gguf *g, const char *key); /* -1 if absent */

/* Typed getters by key. Integer getters accept any integer type whose value fits; they return false
 * when the key is absent or of an incompatible type / out of range for the requested type. */
bool es_gguf_get_u32(const es_gguf *g, const char *key, uint32_t *out);
bool es_gguf_get_i64(const es_gguf *g, const char *key, int64_t *out);
bool es_gguf_get_f32(const es_gguf *g, const char *key, float *out); /* float32/float64/integers */
bool es_gguf_get_bool(const es_gguf *g, const char *key, bool *out);
/* Any unsigned integer, or a non-negative signed one. */
bool es_gguf_get_u64(const es_gguf *g, const char *key, uint64_t *out);
/* float32/float64/integers (not bool), as a double (exact for float64 and integers below 2^53). */
bool es_gguf_get_f64(const es_gguf *g, const char *key, double *out);
/* String value: pointer into a NUL-terminated copy; *len excludes the NUL (strings may hold NULs). */
bool es_gguf_get_str(const es_gguf *g, const char *key, const char **s, size_t *len);
/* Array value: element type and count. */
bool es_gguf_get_arr(const es_gguf *g, const char *key, es_gguf_vtype *elem_type, uint64_t *n);
/* For a numeric array: a pointer to the packed little-endian elements (in the mapping). */
const void *es_gguf_arr_data(const es_gguf *g, const char *key);
/* Element i of a numeric (or bool) array as a double; false if absent, not numeric or i >= n. */
bool es_gguf_arr_f64(const es_gguf *g, const char *key, uint64_t i, double *out);
/* For a string array: element i (NUL-terminated copy) and its length. */
const char *es_gguf_arr_str(const es_gguf *g, const char *key, uint64_t i, size_t *len);

/* Printable value for `edgespec info`: numbers, true/false, strings quoted, escaped and cut after
 * 80 bytes, arrays of more than 8 elements shortened to `[1, 2, 3, 4, 5, ... (512 items)]`. Output
 * longer than cap is cut and ends in "...". Returns buf. */
const char *es_gguf_kv_format(const es_gguf *g, int64_t i, char *buf, size_t cap);

int64_t es_gguf_n_tensors(const es_gguf *g);
const es_gguf_tensor *es_gguf_tensor_at(const es_gguf *g, int64_t i);
const es_gguf_tensor *es_gguf_find_tensor(const es_gguf *g, const char *name); /* NULL if absent */

const char *es_gguf_vtype_name(es_gguf_vtype t);

/* Tells the OS that the bytes [p, p + len) of a mapped file will not be read again (a tensor that
 * was copied into another layout), so its pages leave the process's resident set. Only whole pages
 * inside the range are released; no effect for a buffer opened with es_gguf_open_buffer. */
void es_gguf_release(const es_gguf *g, const void *p, size_t len);

/* ---- writer ---- */

typedef struct es_gguf_writer es_gguf_writer;

/* Fills `nbytes` of tensor data at `dst` (the whole tensor, in its type's layout). */
typedef es_status (*es_gguf_fill_fn)(void *ud, void *dst, uint64_t nbytes, es_err *err);

es_gguf_writer *es_gguf_writer_init(void); /* NULL on allocation failure */
void es_gguf_writer_free(es_gguf_writer *w);
/* Setting a key that exists replaces its value. Strings and arrays are copied. */
es_status es_gguf_set_u32(es_gguf_writer *w, const char *key, uint32_t v);
es_status es_gguf_set_i32(es_gguf_writer *w, const char *key, int32_t v);
es_status es_gguf_set_u64(es_gguf_writer *w, const char *key, uint64_t v);
es_status es_gguf_set_f32(es_gguf_writer *w, const char *key, float v);
es_status es_gguf_set_bool(es_gguf_writer *w, const char *key, bool v);
es_status es_gguf_set_str(es_gguf_writer *w, const char *key, const char *v);
/* Numeric array of a scalar element type (not STRING/ARRAY), n packed little-endian elements. */
es_status es_gguf_set_arr(es_gguf_writer *w, const char *key, es_gguf_vtype elem, const void *data, uint64_t n);
/* lens may be NULL when every string is NUL-terminated (then strlen is used). */
es_status es_gguf_set_arr_str(es_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens, uint64_t n);
/* Copies every key/value of a reader into the writer (e.g. quantize keeps the metadata). */
es_status es_gguf_copy_kv(es_gguf_writer *w, const es_gguf *src);
/* Adds a tensor whose bytes are `data` (referenced, not copied: must stay valid until write).
 * ES_ERR_INVALID_ARG for a name of 64 bytes or more (llama.cpp's limit) or already added, an unknown
 * type, n_dims outside 1..4, a dimension < 1, or ne[0] not a multiple of the type's block size. */
es_status es_gguf_add_tensor(es_gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne, const void *data);
/* Adds a tensor whose bytes are produced at write time by fill(ud, ...) (for files larger than memory). */
es_status es_gguf_add_tensor_fill(es_gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                                  es_gguf_fill_fn fill, void *ud);
/* Writes the file (alignment 32 unless general.alignment was set). progress may be NULL. */
es_status es_gguf_write(es_gguf_writer *w, const char *path, es_progress_fn progress, void *ud, es_err *err);

#endif
