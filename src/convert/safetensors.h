/* safetensors.h — reading Hugging Face .safetensors files.
 *
 * Layout: u64 little-endian header length N, then N bytes of JSON (possibly padded with spaces):
 * {"<name>": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"k": "v", ...}}; then the data section, which the offsets index (relative to its
 * start). The parser checks the header length against the file, that every entry is well-formed, that
 * end - begin = product(shape) × dtype size, that every range lies inside the data section, that no
 * two ranges overlap and that no name repeats. */
#ifndef ES_CONVERT_SAFETENSORS_H
#define ES_CONVERT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"

#define ES_ST_MAX_DIMS 8
#define ES_ST_MAX_HEADER (100u << 20) /* 100 MiB of JSON is far beyond any real checkpoint */

typedef enum es_st_dtype {
    ES_ST_BOOL, ES_ST_U8, ES_ST_I8, ES_ST_F8_E4M3, ES_ST_F8_E5M2, ES_ST_I16, ES_ST_U16, ES_ST_F16, ES_ST_BF16,
    ES_ST_I32, ES_ST_U32, ES_ST_F32, ES_ST_F64, ES_ST_I64, ES_ST_U64, ES_ST_DTYPE_COUNT
} es_st_dtype;

typedef struct es_st_tensor {
    char *name;
    es_st_dtype dtype;
    int n_dims;
    int64_t shape[ES_ST_MAX_DIMS]; /* outermost first, as in PyTorch: a Linear weight is [out, in] */
    uint64_t numel;
    uint64_t begin, end;           /* within the data section */
    const uint8_t *data;           /* begin's address */
} es_st_tensor;

typedef struct es_safetensors es_safetensors;

/* Parses a file held in buf[0..size) (not copied: it must outlive the handle). */
es_status es_st_parse(const void *buf, size_t size, es_safetensors **out, es_err *err);
/* Maps a file read-only and parses it. */
es_status es_st_open(const char *path, es_safetensors **out, es_err *err);
void es_st_free(es_safetensors *st);

int es_st_n_tensors(const es_safetensors *st);
const es_st_tensor *es_st_tensor_at(const es_safetensors *st, int i); /* in name order */
const es_st_tensor *es_st_find(const es_safetensors *st, const char *name);

const char *es_st_dtype_name(es_st_dtype t);

/* Elements [first, first + n) of an F32, F16 or BF16 tensor as f32 (the caller keeps the range
 * within numel). ES_ERR_UNSUPPORTED for other dtypes. */
es_status es_st_read_f32(const es_st_tensor *t, uint64_t first, int64_t n, float *dst, es_err *err);

#endif
