/* safetensors.c — the .safetensors header parser (validating) and element reads. */
#include "convert/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert_impl.h"
#include "util/err.h"
#include "util/fp16.h"

struct es_safetensors {
    es_st_tensor *t; /* sorted by name */
    int n;
    const uint8_t *data;
    uint64_t data_size;
    es_mapped map;   /* when opened from a file */
};

static const struct { const char *name; size_t size; } k_dtypes[ES_ST_DTYPE_COUNT] = {
    [ES_ST_BOOL] = {"BOOL", 1}, [ES_ST_U8] = {"U8", 1},     [ES_ST_I8] = {"I8", 1},
    [ES_ST_F8_E4M3] = {"F8_E4M3", 1}, [ES_ST_F8_E5M2] = {"F8_E5M2", 1},
    [ES_ST_I16] = {"I16", 2},   [ES_ST_U16] = {"U16", 2},   [ES_ST_F16] = {"F16", 2},
    [ES_ST_BF16] = {"BF16", 2}, [ES_ST_I32] = {"I32", 4},   [ES_ST_U32] = {"U32", 4},
    [ES_ST_F32] = {"F32", 4},   [ES_ST_F64] = {"F64", 8},   [ES_ST_I64] = {"I64", 8},
    [ES_ST_U64] = {"U64", 8},
};

const char *es_st_dtype_name(es_st_dtype t) { return (unsigned)t < ES_ST_DTYPE_COUNT ? k_dtypes[t].name : "?"; }

void es_st_free(es_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) free(st->t[i].name);
    free(st->t);
    es_unmap_file(&st->map);
    free(st);
}

int es_st_n_tensors(const es_safetensors *st) { return st->n; }
const es_st_tensor *es_st_tensor_at(const es_safetensors *st, int i) { return i >= 0 && i < st->n ? &st->t[i] : NULL; }

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const es_st_tensor *)a)->name, ((const es_st_tensor *)b)->name);
}

const es_st_tensor *es_st_find(const es_safetensors *st, const char *name) {
    es_st_tensor key = {.name = (char *)name};
    return bsearch(&key, st->t, (size_t)st->n, sizeof key, cmp_name);
}

/* A JSON number that is a non-negative integer exactly representable in a double. */
static bool json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    const double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > 9007199254740992.0 || d != floor(d)) return false;
    *out = (uint64_t)d;
    return true;
}

static es_status parse_entry(const cJSON *e, es_st_tensor *t, uint64_t data_size, es_err *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e)) return es_fail(err, ES_ERR_FORMAT, "safetensors: entry '%.64s' is not an object", name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !dt->valuestring) return es_fail(err, ES_ERR_FORMAT, "safetensors: '%.64s' has no dtype string", name);
    int dtype = -1;
    for (int k = 0; k < ES_ST_DTYPE_COUNT; k++)
        if (strcmp(dt->valuestring, k_dtypes[k].name) == 0) dtype = k;
    if (dtype < 0) return es_fail(err, ES_ERR_FORMAT, "safetensors: '%.64s' has unknown dtype '%.16s'", name, dt->valuestring);
    t->dtype = (es_st_dtype)dtype;
    if (!cJSON_IsArray(shape)) return es_fail(err, ES_ERR_FORMAT, "safetensors: '%.64s' has no shape array", name);
    const int nd = cJSON_GetArraySize(shape);
    if (nd > ES_ST_MAX_DIMS) return es_fail(err, ES_ERR_FORMAT, "safetensors: '%.64s' has %d dimensions (at most %d)", name, nd, ES_ST_MAX_DIMS);
    t->n_dims = nd;
    uint64_t numel = 1;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        uint64_t v;
        if (!json_u64(d, &v) || v > INT64_MAX) return es_fail(err, ES_ERR_FORMAT, "safetensors: '%.64s' has a bad shape entry", name);
        t->shape[i] = (int64_t)v;
        if (!es_mul_ok(numel, v, &numel)) return es_fail(err, ES_ERR_FORMAT, "safetensors: '%.64s' shape overflows", name);
    }
    t->numel = numel;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_u64(offs->child, &t->begin) ||
        !json_u64(offs->child->next, &t->end))
        return es_fail(err, ES_ERR_FORMAT, "safetensors: '%.64s' needs data_offsets [begin, end] of non-negative integers", name);
    if (t->begin > t->end || t->end > data_size)
        return es_fail(err, ES_ERR_FORMAT, "safetensors: '%.64s' data_offsets [%llu, %llu] lie outside the %llu-byte data section", name,
                       (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)data_size);
    uint64_t nbytes;
    if (!es_mul_ok(numel, k_dtypes[dtype].size, &nbytes) || nbytes != t->end - t->begin)
        return es_fail(err, ES_ERR_FORMAT, "safetensors: '%.64s' spans %llu bytes but its shape and dtype %s need %llu", name,
                       (unsigned long long)(t->end - t->begin), k_dtypes[dtype].name, (unsigned long long)nbytes);
    return ES_OK;
}

static int cmp_begin(const void *a, const void *b) {
    const es_st_tensor *x = *(const es_st_tensor *const *)a, *y = *(const es_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

es_status es_st_parse(const void *buf, size_t size, es_safetensors **out, es_err *err) {
    *out = NULL;
    const uint8_t *p = buf;
    if (size < 8) return es_fail(err, ES_ERR_FORMAT, "safetensors: file is %zu bytes, too short for a header", size);
    uint64_t hlen;
    memcpy(&hlen, p, 8);
    if (hlen > size - 8) return es_fail(err, ES_ERR_FORMAT, "safetensors: header length %llu exceeds the file (%zu bytes)", (unsigned long long)hlen, size);
    if (hlen > ES_ST_MAX_HEADER) return es_fail(err, ES_ERR_FORMAT, "safetensors: header length %llu is implausibly large", (unsigned long long)hlen);
    if (hlen < 2 || p[8] != '{') return es_fail(err, ES_ERR_FORMAT, "safetensors: header is not a JSON object");

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)p + 8, (size_t)hlen, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return es_fail(err, ES_ERR_FORMAT, "safetensors: header is not valid JSON");
    }
    for (const char *q = end; q && q < (const char *)p + 8 + hlen; q++)
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != 0) {
            cJSON_Delete(root);
            return es_fail(err, ES_ERR_FORMAT, "safetensors: trailing bytes after the JSON header");
        }

    es_status st = ES_OK;
    es_safetensors *s = calloc(1, sizeof *s);
    es_st_tensor **by_begin = NULL;
    if (!s) {
        cJSON_Delete(root);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    s->data = p + 8 + hlen;
    s->data_size = size - 8 - hlen;
    int n = 0;
    for (const cJSON *e = root->child; e; e = e->next) n++; /* bounded by the header's size */
    s->t = calloc((size_t)(n ? n : 1), sizeof *s->t);
    if (!s->t) {
        st = es_fail(err, ES_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!e->string) {
            st = es_fail(err, ES_ERR_FORMAT, "safetensors: entry without a name");
            goto fail;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                st = es_fail(err, ES_ERR_FORMAT, "safetensors: __metadata__ is not an object");
                goto fail;
            }
            continue;
        }
        es_st_tensor *t = &s->t[s->n];
        if ((st = parse_entry(e, t, s->data_size, err)) != ES_OK) goto fail;
        t->name = strdup(e->string);
        if (!t->name) {
            st = es_fail(err, ES_ERR_NOMEM, "out of memory");
            goto fail;
        }
        t->data = s->data + t->begin;
        s->n++;
    }
    qsort(s->t, (size_t)s->n, sizeof *s->t, cmp_name);
    for (int i = 1; i < s->n; i++)
        if (strcmp(s->t[i - 1].name, s->t[i].name) == 0) {
            st = es_fail(err, ES_ERR_FORMAT, "safetensors: tensor '%.64s' appears twice", s->t[i].name);
            goto fail;
        }
    by_begin = malloc((size_t)(s->n ? s->n : 1) * sizeof *by_begin);
    if (!by_begin) {
        st = es_fail(err, ES_ERR_NOMEM, "out of memory");
        goto fail;
    }
    int m = 0;
    for (int i = 0; i < s->n; i++)
        if (s->t[i].end > s->t[i].begin) by_begin[m++] = &s->t[i];
    qsort(by_begin, (size_t)m, sizeof *by_begin, cmp_begin);
    for (int i = 1; i < m; i++)
        if (by_begin[i]->begin < by_begin[i - 1]->end) {
            st = es_fail(err, ES_ERR_FORMAT, "safetensors: the data of '%.64s' and '%.64s' overlap", by_begin[i - 1]->name, by_begin[i]->name);
            goto fail;
        }
    free(by_begin);
    cJSON_Delete(root);
    *out = s;
    return ES_OK;
fail:
    free(by_begin);
    cJSON_Delete(root);
    es_st_free(s);
    return st;
}

es_status es_st_open(const char *path, es_safetensors **out, es_err *err) {
    es_mapped m;
    es_status st = es_map_file(path, &m, err);
    if (st != ES_OK) return st;
    st = es_st_parse(m.data, m.size, out, err);
    if (st != ES_OK) {
        es_unmap_file(&m);
        es_err_prefix(err, path);
        return st;
    }
    (*out)->map = m;
    return ES_OK;
}

es_status es_st_read_f32(const es_st_tensor *t, uint64_t first, int64_t n, float *dst, es_err *err) {
    switch (t->dtype) {
    case ES_ST_F32:
        memcpy(dst, t->data + first * 4, (size_t)n * 4);
        return ES_OK;
    case ES_ST_F16:
    case ES_ST_BF16: {
        const uint8_t *src = t->data + first * 2;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = t->dtype == ES_ST_F16 ? es_fp16_to_fp32(h) : es_bf16_to_fp32(h);
        }
        return ES_OK;
    }
    default:
        return es_fail(err, ES_ERR_UNSUPPORTED, "tensor %s: dtype %s is not supported (F32, F16, BF16 are)", t->name,
                       es_st_dtype_name(t->dtype));
    }
}
