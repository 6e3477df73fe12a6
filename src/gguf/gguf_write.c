/* gguf_write.c — the GGUF v3 writer: collects key/values and tensors, then writes header, key/values,
 * tensor infos, padding to the alignment, and every tensor's data padded to the alignment — the layout
 * llama.cpp expects (each tensor's offset equals the padded end of the previous one). */
#include "gguf/gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/types.h"
#include "util/err.h"

#define GGUF_MAX_NAME 64             /* llama.cpp rejects tensor names of 64 bytes or more */
#define GGUF_MAX_ALIGNMENT (1u << 20)
#define WRITE_BUFFER (4u << 20)
#define WRITE_CHUNK (16u << 20)      /* direct tensor data is written in chunks for progress */

typedef struct wkv {
    char *key;
    es_gguf_vtype type;
    es_gguf_vtype elem;     /* ARRAY: element type */
    uint8_t scalar[8];      /* scalars: the little-endian value bytes */
    uint64_t n;             /* STRING: byte length; ARRAY: element count */
    void *data;             /* STRING: the bytes; numeric ARRAY: packed elements; string ARRAY: all bytes */
    char **strs;            /* string ARRAY: element pointers into data */
    uint64_t *lens;
} wkv;

typedef struct wtensor {
    char *name;
    uint32_t type;
    int n_dims;
    int64_t ne[ES_GGUF_MAX_DIMS];
    uint64_t nbytes;
    uint64_t offset;        /* in the data section, set by es_gguf_write */
    const void *data;       /* direct data, or NULL when fill is set */
    es_gguf_fill_fn fill;
    void *ud;
} wtensor;

struct es_gguf_writer {
    wkv *kvs;
    int64_t n_kv, cap_kv;
    wtensor *tensors;
    int64_t n_tensors, cap_tensors;
};

static size_t scalar_size(es_gguf_vtype t) {
    switch (t) {
    case ES_GGUF_UINT8: case ES_GGUF_INT8: case ES_GGUF_BOOL: return 1;
    case ES_GGUF_UINT16: case ES_GGUF_INT16: return 2;
    case ES_GGUF_UINT32: case ES_GGUF_INT32: case ES_GGUF_FLOAT32: return 4;
    case ES_GGUF_UINT64: case ES_GGUF_INT64: case ES_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static void put_le(uint8_t *p, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

es_gguf_writer *es_gguf_writer_init(void) { return calloc(1, sizeof(es_gguf_writer)); }

static void wkv_clear(wkv *kv) {
    free(kv->data);
    free(kv->strs);
    free(kv->lens);
    kv->data = NULL;
    kv->strs = NULL;
    kv->lens = NULL;
}

void es_gguf_writer_free(es_gguf_writer *w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) {
        wkv_clear(&w->kvs[i]);
        free(w->kvs[i].key);
    }
    for (int64_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    free(w);
}

/* Stores a prepared value under key: replaces the value of an existing key (freeing the old one)
 * or appends a new key. On failure `v`'s allocations are freed. */
static es_status put_kv(es_gguf_writer *w, const char *key, wkv *v) {
    if (!w || !key) {
        wkv_clear(v);
        return ES_ERR_INVALID_ARG;
    }
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) {
            wkv_clear(&w->kvs[i]);
            v->key = w->kvs[i].key;
            w->kvs[i] = *v;
            return ES_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        int64_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
        wkv *k = realloc(w->kvs, (size_t)cap * sizeof *k);
        if (!k) {
            wkv_clear(v);
            return ES_ERR_NOMEM;
        }
        w->kvs = k;
        w->cap_kv = cap;
    }
    v->key = strdup(key);
    if (!v->key) {
        wkv_clear(v);
        return ES_ERR_NOMEM;
    }
    w->kvs[w->n_kv++] = *v;
    return ES_OK;
}

static es_status set_scalar(es_gguf_writer *w, const char *key, es_gguf_vtype type, uint64_t bits) {
    wkv v = {0};
    v.type = type;
    put_le(v.scalar, bits, scalar_size(type));
    return put_kv(w, key, &v);
}

es_status es_gguf_set_u32(es_gguf_writer *w, const char *key, uint32_t v) { return set_scalar(w, key, ES_GGUF_UINT32, v); }
es_status es_gguf_set_i32(es_gguf_writer *w, const char *key, int32_t v) { return set_scalar(w, key, ES_GGUF_INT32, (uint32_t)v); }
es_status es_gguf_set_u64(es_gguf_writer *w, const char *key, uint64_t v) { return set_scalar(w, key, ES_GGUF_UINT64, v); }
es_status es_gguf_set_bool(es_gguf_writer *w, const char *key, bool v) { return set_scalar(w, key, ES_GGUF_BOOL, v ? 1 : 0); }

es_status es_gguf_set_f32(es_gguf_writer *w, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return set_scalar(w, key, ES_GGUF_FLOAT32, bits);
}

static es_status set_str_n(es_gguf_writer *w, const char *key, const char *s, size_t len) {
    if (!s && len) return ES_ERR_INVALID_ARG;
    wkv v = {0};
    v.type = ES_GGUF_STRING;
    v.n = len;
    v.data = malloc(len ? len : 1);
    if (!v.data) return ES_ERR_NOMEM;
    if (len) memcpy(v.data, s, len);
    return put_kv(w, key, &v);
}

es_status es_gguf_set_str(es_gguf_writer *w, const char *key, const char *v) {
    if (!v) return ES_ERR_INVALID_ARG;
    return set_str_n(w, key, v, strlen(v));
}

es_status es_gguf_set_arr(es_gguf_writer *w, const char *key, es_gguf_vtype elem, const void *data, uint64_t n) {
    size_t es = scalar_size(elem);
    uint64_t bytes;
    if (es == 0 || (!data && n) || !es_mul_ok(n, es, &bytes) || bytes > SIZE_MAX) return ES_ERR_INVALID_ARG;
    wkv v = {0};
    v.type = ES_GGUF_ARRAY;
    v.elem = elem;
    v.n = n;
    v.data = malloc(bytes ? (size_t)bytes : 1);
    if (!v.data) return ES_ERR_NOMEM;
    if (bytes) memcpy(v.data, data, (size_t)bytes);
    return put_kv(w, key, &v);
}

es_status es_gguf_set_arr_str(es_gguf_writer *w, const char *key, const char *const *strs, const size_t *lens, uint64_t n) {
    if ((!strs && n) || n > SIZE_MAX / sizeof(char *)) return ES_ERR_INVALID_ARG;
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (!strs[i] && (!lens || lens[i])) return ES_ERR_INVALID_ARG;
        size_t len = lens ? lens[i] : strlen(strs[i]);
        if (!es_add_ok(total, (uint64_t)len + 1, &total) || total > SIZE_MAX) return ES_ERR_INVALID_ARG;
    }
    wkv v = {0};
    v.type = ES_GGUF_ARRAY;
    v.elem = ES_GGUF_STRING;
    v.n = n;
    v.data = malloc(total ? (size_t)total : 1);
    v.strs = malloc(n ? (size_t)n * sizeof *v.strs : 1);
    v.lens = malloc(n ? (size_t)n * sizeof *v.lens : 1);
    if (!v.data || !v.strs || !v.lens) {
        wkv_clear(&v);
        return ES_ERR_NOMEM;
    }
    char *p = v.data;
    for (uint64_t i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : strlen(strs[i]);
        if (len) memcpy(p, strs[i], len);
        p[len] = 0;
        v.strs[i] = p;
        v.lens[i] = len;
        p += len + 1;
    }
    return put_kv(w, key, &v);
}

/* Copies one key/value of a reader, keeping its exact type. */
static es_status copy_one(es_gguf_writer *w, const es_gguf *src, int64_t i) {
    const char *key = es_gguf_kv_key(src, i);
    es_gguf_vtype t = es_gguf_kv_type(src, i);
    switch (t) {
    case ES_GGUF_STRING: {
        const char *s;
        size_t len;
        if (!es_gguf_get_str(src, key, &s, &len)) return ES_ERR_INTERNAL;
        return set_str_n(w, key, s, len);
    }
    case ES_GGUF_ARRAY: {
        es_gguf_vtype elem;
        uint64_t n;
        if (!es_gguf_get_arr(src, key, &elem, &n)) return ES_ERR_INTERNAL;
        if (elem != ES_GGUF_STRING) return es_gguf_set_arr(w, key, elem, es_gguf_arr_data(src, key), n);
        if (n > SIZE_MAX / sizeof(char *)) return ES_ERR_NOMEM;
        const char **strs = malloc(n ? (size_t)n * sizeof *strs : 1);
        size_t *lens = malloc(n ? (size_t)n * sizeof *lens : 1);
        es_status st = ES_ERR_NOMEM;
        if (strs && lens) {
            for (uint64_t k = 0; k < n; k++) strs[k] = es_gguf_arr_str(src, key, k, &lens[k]);
            st = es_gguf_set_arr_str(w, key, strs, lens, n);
        }
        free(strs);
        free(lens);
        return st;
    }
    case ES_GGUF_FLOAT32: case ES_GGUF_FLOAT64: {
        double d;
        if (!es_gguf_get_f64(src, key, &d)) return ES_ERR_INTERNAL;
        if (t == ES_GGUF_FLOAT32) return es_gguf_set_f32(w, key, (float)d);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return set_scalar(w, key, t, bits);
    }
    case ES_GGUF_BOOL: {
        bool b;
        if (!es_gguf_get_bool(src, key, &b)) return ES_ERR_INTERNAL;
        return es_gguf_set_bool(w, key, b);
    }
    default: {
        /* integers: the value fits the type it was read as, so its low bytes are its encoding */
        int64_t iv;
        uint64_t uv;
        if (es_gguf_get_i64(src, key, &iv)) return set_scalar(w, key, t, (uint64_t)iv);
        if (es_gguf_get_u64(src, key, &uv)) return set_scalar(w, key, t, uv);
        return ES_ERR_INTERNAL;
    }
    }
}

es_status es_gguf_copy_kv(es_gguf_writer *w, const es_gguf *src) {
    if (!w || !src) return ES_ERR_INVALID_ARG;
    for (int64_t i = 0; i < es_gguf_n_kv(src); i++) {
        es_status st = copy_one(w, src, i);
        if (st != ES_OK) return st;
    }
    return ES_OK;
}

/* Validates a tensor's name, type and shape and appends it (bytes set from the shape). */
static es_status add_tensor(es_gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                            const void *data, es_gguf_fill_fn fill, void *ud) {
    if (!w || !name || !ne || n_dims < 1 || n_dims > ES_GGUF_MAX_DIMS || strlen(name) >= GGUF_MAX_NAME)
        return ES_ERR_INVALID_ARG;
    const es_type_traits *tt = es_type_get(type);
    if (!tt) return ES_ERR_INVALID_ARG;
    wtensor t = {0};
    t.type = type;
    t.n_dims = n_dims;
    for (int d = 0; d < ES_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 1) return ES_ERR_INVALID_ARG; /* empty tensors trip some GGUF readers */
    }
    if (t.ne[0] % tt->blck_size != 0) return ES_ERR_INVALID_ARG;
    /* bytes = es_row_size(type, ne[0]) * ne[1] * ne[2] * ne[3], overflow-checked */
    uint64_t bytes = (uint64_t)(t.ne[0] / tt->blck_size);
    bool ok = es_mul_ok(bytes, tt->type_size, &bytes);
    for (int d = 1; d < ES_GGUF_MAX_DIMS && ok; d++) ok = es_mul_ok(bytes, (uint64_t)t.ne[d], &bytes);
    if (!ok || (!data && !fill && bytes)) return ES_ERR_INVALID_ARG;
    t.nbytes = bytes;
    t.data = data;
    t.fill = fill;
    t.ud = ud;
    for (int64_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return ES_ERR_INVALID_ARG;
    if (w->n_tensors == w->cap_tensors) {
        int64_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
        wtensor *p = realloc(w->tensors, (size_t)cap * sizeof *p);
        if (!p) return ES_ERR_NOMEM;
        w->tensors = p;
        w->cap_tensors = cap;
    }
    t.name = strdup(name);
    if (!t.name) return ES_ERR_NOMEM;
    w->tensors[w->n_tensors++] = t;
    return ES_OK;
}

es_status es_gguf_add_tensor(es_gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne, const void *data) {
    return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

es_status es_gguf_add_tensor_fill(es_gguf_writer *w, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                                  es_gguf_fill_fn fill, void *ud) {
    if (!fill) return ES_ERR_INVALID_ARG;
    return add_tensor(w, name, type, n_dims, ne, NULL, fill, ud);
}

/* ---- writing ---- */

typedef struct wout {
    FILE *f;
    uint64_t pos, total;     /* bytes written so far / the file's final size */
    bool failed;
    int err_no;
    es_progress_fn progress;
    void *ud;
} wout;

static void out_bytes(wout *o, const void *p, size_t n) {
    if (o->failed || n == 0) return;
    if (fwrite(p, 1, n, o->f) != n) {
        o->failed = true;
        o->err_no = errno;
        return;
    }
    o->pos += n;
}

static void out_u32(wout *o, uint32_t v) {
    uint8_t b[4];
    put_le(b, v, 4);
    out_bytes(o, b, 4);
}

static void out_u64(wout *o, uint64_t v) {
    uint8_t b[8];
    put_le(b, v, 8);
    out_bytes(o, b, 8);
}

static void out_str(wout *o, const char *s, uint64_t len) {
    out_u64(o, len);
    out_bytes(o, s, (size_t)len);
}

static void out_pad(wout *o, uint32_t align) {
    static const uint8_t zeros[256];
    uint64_t pad = (align - o->pos % align) % align;
    while (pad > 0 && !o->failed) {
        size_t n = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        out_bytes(o, zeros, n);
        pad -= n;
    }
}

static void out_progress(wout *o) {
    if (o->progress) o->progress(o->ud, "writing", o->total ? (double)o->pos / (double)o->total : 1.0);
}

static uint64_t kv_bytes(const wkv *kv) {
    uint64_t n = 8 + strlen(kv->key) + 4;
    if (kv->type == ES_GGUF_STRING) return n + 8 + kv->n;
    if (kv->type != ES_GGUF_ARRAY) return n + scalar_size(kv->type);
    n += 4 + 8;
    if (kv->elem != ES_GGUF_STRING) return n + kv->n * scalar_size(kv->elem);
    for (uint64_t i = 0; i < kv->n; i++) n += 8 + kv->lens[i];
    return n;
}

static void out_kv(wout *o, const wkv *kv) {
    out_str(o, kv->key, strlen(kv->key));
    out_u32(o, (uint32_t)kv->type);
    if (kv->type == ES_GGUF_STRING) {
        out_str(o, kv->data, kv->n);
    } else if (kv->type != ES_GGUF_ARRAY) {
        out_bytes(o, kv->scalar, scalar_size(kv->type));
    } else {
        out_u32(o, (uint32_t)kv->elem);
        out_u64(o, kv->n);
        if (kv->elem != ES_GGUF_STRING) out_bytes(o, kv->data, (size_t)(kv->n * scalar_size(kv->elem)));
        else
            for (uint64_t i = 0; i < kv->n; i++) out_str(o, kv->strs[i], kv->lens[i]);
    }
}

static uint64_t align_up(uint64_t x, uint32_t a) { return x + (a - x % a) % a; }

/* Writes one tensor's data (direct, in chunks, or produced by its fill callback). */
static es_status out_tensor(wout *o, const wtensor *t, es_err *err) {
    if (t->data) {
        const uint8_t *p = t->data;
        for (uint64_t done = 0; done < t->nbytes && !o->failed;) {
            uint64_t n = t->nbytes - done < WRITE_CHUNK ? t->nbytes - done : WRITE_CHUNK;
            out_bytes(o, p + done, (size_t)n);
            done += n;
            out_progress(o);
        }
        return ES_OK;
    }
    if (t->nbytes == 0) return ES_OK;
    if (t->nbytes > SIZE_MAX) return es_fail(err, ES_ERR_NOMEM, "tensor '%s': %" PRIu64 " bytes do not fit in memory", t->name, t->nbytes);
    void *buf = calloc(1, (size_t)t->nbytes);
    if (!buf) return es_fail(err, ES_ERR_NOMEM, "tensor '%s': cannot allocate %" PRIu64 " bytes", t->name, t->nbytes);
    es_status st = t->fill(t->ud, buf, t->nbytes, err);
    if (st == ES_OK) out_bytes(o, buf, (size_t)t->nbytes);
    else {
        char prefix[96];
        snprintf(prefix, sizeof prefix, "tensor '%s'", t->name);
        es_err_prefix(err, prefix);
    }
    free(buf);
    out_progress(o);
    return st;
}

/* Layout: header, key/values, tensor infos, zero padding to the alignment, then each tensor's data
 * followed by zero padding to the alignment. Tensor offsets are assigned here in insertion order. */
static es_status write_all(es_gguf_writer *w, wout *o, uint32_t align, es_err *err) {
    uint64_t header = 4 + 4 + 8 + 8;
    for (int64_t i = 0; i < w->n_kv; i++) header += kv_bytes(&w->kvs[i]);
    for (int64_t i = 0; i < w->n_tensors; i++) header += 8 + strlen(w->tensors[i].name) + 4 + 8 * (uint64_t)w->tensors[i].n_dims + 4 + 8;
    uint64_t data_start = align_up(header, align), off = 0;
    for (int64_t i = 0; i < w->n_tensors; i++) {
        w->tensors[i].offset = off;
        if (!es_add_ok(off, w->tensors[i].nbytes, &off) || off > UINT64_MAX - align)
            return es_fail(err, ES_ERR_INVALID_ARG, "tensor data exceeds 2^64 bytes");
        off = align_up(off, align);
    }
    if (!es_add_ok(data_start, off, &o->total)) return es_fail(err, ES_ERR_INVALID_ARG, "file size exceeds 2^64 bytes");

    out_bytes(o, "GGUF", 4);
    out_u32(o, 3);
    out_u64(o, (uint64_t)w->n_tensors);
    out_u64(o, (uint64_t)w->n_kv);
    for (int64_t i = 0; i < w->n_kv; i++) out_kv(o, &w->kvs[i]);
    for (int64_t i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        out_str(o, t->name, strlen(t->name));
        out_u32(o, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) out_u64(o, (uint64_t)t->ne[d]);
        out_u32(o, t->type);
        out_u64(o, t->offset);
    }
    if (!o->failed && o->pos != header) return es_fail(err, ES_ERR_INTERNAL, "gguf header size %" PRIu64 " != %" PRIu64, o->pos, header);
    out_pad(o, align);
    out_progress(o);
    for (int64_t i = 0; i < w->n_tensors && !o->failed; i++) {
        es_status st = out_tensor(o, &w->tensors[i], err);
        if (st != ES_OK) return st;
        out_pad(o, align);
    }
    if (o->failed) return es_fail(err, ES_ERR_IO, "write failed after %" PRIu64 " bytes: %s", o->pos, strerror(o->err_no));
    if (o->pos != o->total) return es_fail(err, ES_ERR_INTERNAL, "gguf file size %" PRIu64 " != %" PRIu64, o->pos, o->total);
    return ES_OK;
}

es_status es_gguf_write(es_gguf_writer *w, const char *path, es_progress_fn progress, void *ud, es_err *err) {
    if (!w || !path) return es_fail(err, ES_ERR_INVALID_ARG, "es_gguf_write: NULL argument");
    uint32_t align = ES_GGUF_DEFAULT_ALIGNMENT;
    for (int64_t i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kvs[i];
        if (strcmp(kv->key, "general.alignment") != 0) continue;
        if (kv->type != ES_GGUF_UINT32)
            return es_fail(err, ES_ERR_INVALID_ARG, "general.alignment must be a uint32, not %s", es_gguf_vtype_name(kv->type));
        align = (uint32_t)kv->scalar[0] | (uint32_t)kv->scalar[1] << 8 | (uint32_t)kv->scalar[2] << 16 | (uint32_t)kv->scalar[3] << 24;
        if (align == 0 || (align & (align - 1)) != 0 || align > GGUF_MAX_ALIGNMENT)
            return es_fail(err, ES_ERR_INVALID_ARG, "general.alignment %" PRIu32 " must be a power of two in 1..%u", align, GGUF_MAX_ALIGNMENT);
    }
    FILE *f = fopen(path, "wb");
    if (!f) return es_fail(err, ES_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    char *vbuf = malloc(WRITE_BUFFER);
    if (vbuf) setvbuf(f, vbuf, _IOFBF, WRITE_BUFFER);
    wout o = {f, 0, 0, false, 0, progress, ud};
    es_status st = write_all(w, &o, align, err);
    if (fflush(f) != 0 && st == ES_OK) st = es_fail(err, ES_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    if (fclose(f) != 0 && st == ES_OK) st = es_fail(err, ES_ERR_IO, "cannot close %s: %s", path, strerror(errno));
    free(vbuf);
    if (st != ES_OK) {
        remove(path);
        return st;
    }
    if (progress) progress(ud, "writing", 1.0);
    return ES_OK;
}
