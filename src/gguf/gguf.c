/* gguf.c — the GGUF reader: maps a file (or takes a caller's buffer), validates every field, and
 * indexes keys and tensors.
 *
 * Parsing runs in two steps. The validation pass walks the header once, checking every count,
 * length, type, dimension, offset and size against the bytes that remain (all arithmetic overflow-
 * checked) and records, per key/value and per tensor, where its bytes lie in the buffer; it also sums
 * the bytes every string needs as a NUL-terminated copy. Only then is one arena allocated (its size
 * derived from validated lengths) and the copy pass fills it. Nothing is allocated from a declared
 * count before that count has been checked against the remaining bytes. */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/types.h"
#include "util/err.h"
#include "util/hash.h"

#define GGUF_HEADER_BYTES 24u            /* magic, version, n_tensors, n_kv */
#define GGUF_MIN_KV_BYTES 13u            /* key length (8) + value type (4) + the smallest value (1) */
#define GGUF_MIN_TENSOR_BYTES 32u        /* name length (8) + n_dims (4) + ne[0] (8) + type (4) + offset (8) */
#define GGUF_MAX_ALIGNMENT (1u << 20)

/* A string in the arena: NUL-terminated copy and its length (which excludes the NUL). */
typedef struct gguf_sref {
    const char *s;
    size_t len;
} gguf_sref;

typedef struct gguf_kv {
    const char *key;          /* arena copy (NULL until the copy pass) */
    const uint8_t *key_raw;   /* the key's bytes in the buffer */
    size_t key_len;
    es_gguf_vtype type;
    es_gguf_vtype elem;       /* ARRAY: element type */
    uint64_t n;               /* ARRAY: element count; STRING: byte length */
    const uint8_t *raw;       /* scalar: value bytes; STRING: string bytes; ARRAY: first element */
    const char *str;          /* STRING: arena copy */
    gguf_sref *strs;          /* ARRAY of STRING: n arena copies */
} gguf_kv;

typedef struct gguf_tinfo {
    es_gguf_tensor t;         /* what callers see; t.name is the arena copy */
    const uint8_t *name_raw;
    size_t name_len;
} gguf_tinfo;

struct es_gguf {
    const uint8_t *base;
    size_t size;
    bool mapped;              /* base is our mmap (munmap on free) */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    int64_t n_kv, n_tensors;
    gguf_kv *kvs;             /* [n_kv] */
    gguf_tinfo *tensors;      /* [n_tensors] */
    char *arena;              /* every key, string value, string-array element and tensor name */
    gguf_sref *srefs;         /* elements of every string array, in file order */
    int64_t *kv_slots;        /* open-addressing hash of key -> kv index (-1 empty), size kv_mask+1 */
    uint64_t kv_mask;
    int64_t *tensor_slots;    /* the same for tensor names */
    uint64_t tensor_mask;
};

/* Bytes of one scalar value of each type; 0 for STRING / ARRAY / unknown. */
static size_t vtype_size(uint32_t t) {
    switch (t) {
    case ES_GGUF_UINT8: case ES_GGUF_INT8: case ES_GGUF_BOOL: return 1;
    case ES_GGUF_UINT16: case ES_GGUF_INT16: return 2;
    case ES_GGUF_UINT32: case ES_GGUF_INT32: case ES_GGUF_FLOAT32: return 4;
    case ES_GGUF_UINT64: case ES_GGUF_INT64: case ES_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

const char *es_gguf_vtype_name(es_gguf_vtype t) {
    static const char *const names[ES_GGUF_VTYPE_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool", "string", "array", "uint64", "int64", "float64",
    };
    if ((unsigned)t >= ES_GGUF_VTYPE_COUNT) return "unknown";
    return names[t];
}

/* ---- little-endian decoding (the file is little-endian whatever the host) ---- */

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

/* A decoded number: integers are exact (negative ones in i, the rest in u), floats in f. */
typedef struct gguf_num {
    enum { NUM_UINT, NUM_INT, NUM_FLOAT, NUM_BOOL } kind;
    bool f32;               /* NUM_FLOAT read from a float32 (prints with float precision) */
    uint64_t u;
    int64_t i;
    double f;
} gguf_num;

/* Decodes one scalar of type t at p (t must be a scalar type). */
static gguf_num decode_num(uint32_t t, const uint8_t *p) {
    gguf_num n = {NUM_UINT, false, 0, 0, 0.0};
    switch (t) {
    case ES_GGUF_UINT8: n.u = p[0]; break;
    case ES_GGUF_UINT16: n.u = le16(p); break;
    case ES_GGUF_UINT32: n.u = le32(p); break;
    case ES_GGUF_UINT64: n.u = le64(p); break;
    case ES_GGUF_INT8: n.kind = NUM_INT; n.i = (int8_t)p[0]; break;
    case ES_GGUF_INT16: n.kind = NUM_INT; n.i = (int16_t)le16(p); break;
    case ES_GGUF_INT32: n.kind = NUM_INT; n.i = (int32_t)le32(p); break;
    case ES_GGUF_INT64: n.kind = NUM_INT; n.i = (int64_t)le64(p); break;
    case ES_GGUF_BOOL: n.kind = NUM_BOOL; n.u = p[0] != 0; break;
    case ES_GGUF_FLOAT32: {
        uint32_t b = le32(p);
        float f;
        memcpy(&f, &b, 4);
        n.kind = NUM_FLOAT;
        n.f32 = true;
        n.f = f;
        break;
    }
    case ES_GGUF_FLOAT64: {
        uint64_t b = le64(p);
        memcpy(&n.f, &b, 8);
        n.kind = NUM_FLOAT;
        break;
    }
    default: break;
    }
    return n;
}

/* ---- a bounds-checked cursor over the buffer ---- */

typedef struct rd {
    const uint8_t *p;
    size_t size, pos;
} rd;

static size_t rd_left(const rd *r) { return r->size - r->pos; }

static bool rd_take(rd *r, size_t n, const uint8_t **out) {
    if (n > rd_left(r)) return false;
    *out = r->p + r->pos;
    r->pos += n;
    return true;
}

static bool rd_u32(rd *r, uint32_t *v) {
    const uint8_t *q;
    if (!rd_take(r, 4, &q)) return false;
    *v = le32(q);
    return true;
}

static bool rd_u64(rd *r, uint64_t *v) {
    const uint8_t *q;
    if (!rd_take(r, 8, &q)) return false;
    *v = le64(q);
    return true;
}

/* Copies at most ~60 bytes of s into dst as printable ASCII ('?' for anything else), with "..."
 * when cut: for naming keys and tensors in error messages, whatever bytes the file holds. */
static const char *printable(char *dst, size_t cap, const uint8_t *s, size_t len) {
    size_t lim = cap > 4 ? cap - 4 : 0, j = 0;
    if (lim > 60) lim = 60;
    for (size_t i = 0; i < len && j < lim; i++) dst[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (len > lim && cap >= 4) {
        memcpy(dst + j, "...", 3);
        j += 3;
    }
    if (cap) dst[j < cap ? j : cap - 1] = 0;
    return dst;
}

/* Reads a gguf string (u64 length + bytes) after checking the length against what remains. On
 * failure fills err with "<what>: ..." naming the declared length and the bytes left. */
static es_status rd_str(rd *r, const uint8_t **s, size_t *len, es_err *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static es_status rd_str(rd *r, const uint8_t **s, size_t *len, es_err *err, const char *fmt, ...) {
    uint64_t n;
    size_t at = r->pos;
    bool ok = rd_u64(r, &n);
    if (ok && n <= rd_left(r)) {
        *len = (size_t)n;
        rd_take(r, (size_t)n, s);
        return ES_OK;
    }
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (!ok) return es_fail(err, ES_ERR_FORMAT, "%s: string length at byte %zu is truncated (file is %zu bytes)", what, at, r->size);
    return es_fail(err, ES_ERR_FORMAT, "%s: string length %" PRIu64 " at byte %zu runs past end of file (%zu bytes left)",
                   what, n, at, rd_left(r));
}

/* ---- hash indexes (key -> kv, name -> tensor) ---- */

static uint64_t slots_for(int64_t n) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2) cap <<= 1;
    return cap;
}

/* Finds `s` in a table whose entries' bytes come from get(i); returns the slot (empty or match). */
typedef void (*entry_bytes_fn)(const es_gguf *g, int64_t i, const uint8_t **s, size_t *len);

static void kv_bytes(const es_gguf *g, int64_t i, const uint8_t **s, size_t *len) {
    *s = g->kvs[i].key_raw;
    *len = g->kvs[i].key_len;
}

static void tensor_bytes(const es_gguf *g, int64_t i, const uint8_t **s, size_t *len) {
    *s = g->tensors[i].name_raw;
    *len = g->tensors[i].name_len;
}

static uint64_t slot_find(const es_gguf *g, const int64_t *slots, uint64_t mask, entry_bytes_fn get,
                          const void *s, size_t len) {
    uint64_t h = es_fnv1a(ES_FNV_OFFSET, s, len) & mask;
    for (;; h = (h + 1) & mask) {
        int64_t i = slots[h];
        if (i < 0) return h;
        const uint8_t *es;
        size_t elen;
        get(g, i, &es, &elen);
        if (elen == len && memcmp(es, s, len) == 0) return h;
    }
}

/* ---- validation pass ---- */

/* Validates key/value i at the cursor and records where its bytes are. Counts arena bytes and
 * string-array elements into *arena / *n_srefs. */
static es_status parse_kv(es_gguf *g, rd *r, int64_t i, uint64_t *arena, uint64_t *n_srefs, es_err *err) {
    gguf_kv *kv = &g->kvs[i];
    char name[80];
    es_status st = rd_str(r, &kv->key_raw, &kv->key_len, err, "key of key/value %" PRId64, i);
    if (st != ES_OK) return st;
    printable(name, sizeof name, kv->key_raw, kv->key_len);
    if (memchr(kv->key_raw, 0, kv->key_len))
        return es_fail(err, ES_ERR_FORMAT, "key/value %" PRId64 ": key '%s' contains a NUL byte", i, name);

    uint64_t h = slot_find(g, g->kv_slots, g->kv_mask, kv_bytes, kv->key_raw, kv->key_len);
    if (g->kv_slots[h] >= 0)
        return es_fail(err, ES_ERR_FORMAT, "duplicate key '%s' (key/values %" PRId64 " and %" PRId64 ")", name, g->kv_slots[h], i);
    g->kv_slots[h] = i;
    if (!es_add_ok(*arena, (uint64_t)kv->key_len + 1, arena))
        return es_fail(err, ES_ERR_FORMAT, "string sizes overflow");

    uint32_t type;
    if (!rd_u32(r, &type)) return es_fail(err, ES_ERR_FORMAT, "key '%s': value type truncated at end of file", name);
    if (type >= ES_GGUF_VTYPE_COUNT) return es_fail(err, ES_ERR_FORMAT, "key '%s': unknown value type %" PRIu32, name, type);
    kv->type = (es_gguf_vtype)type;

    if (type == ES_GGUF_STRING) {
        size_t len;
        if ((st = rd_str(r, &kv->raw, &len, err, "value of '%s'", name)) != ES_OK) return st;
        kv->n = len;
        if (!es_add_ok(*arena, (uint64_t)len + 1, arena)) return es_fail(err, ES_ERR_FORMAT, "string sizes overflow");
        return ES_OK;
    }
    if (type != ES_GGUF_ARRAY) {
        if (!rd_take(r, vtype_size(type), &kv->raw))
            return es_fail(err, ES_ERR_FORMAT, "key '%s': %s value runs past end of file", name, es_gguf_vtype_name(kv->type));
        return ES_OK;
    }

    uint32_t elem;
    uint64_t n;
    if (!rd_u32(r, &elem) || !rd_u64(r, &n))
        return es_fail(err, ES_ERR_FORMAT, "key '%s': array header runs past end of file", name);
    if (elem == ES_GGUF_ARRAY) return es_fail(err, ES_ERR_FORMAT, "key '%s': nested arrays are not supported", name);
    if (elem >= ES_GGUF_VTYPE_COUNT)
        return es_fail(err, ES_ERR_FORMAT, "key '%s': unknown array element type %" PRIu32, name, elem);
    kv->elem = (es_gguf_vtype)elem;
    kv->n = n;
    kv->raw = r->p + r->pos;
    if (elem != ES_GGUF_STRING) {
        uint64_t bytes;
        if (!es_mul_ok(n, vtype_size(elem), &bytes) || bytes > rd_left(r))
            return es_fail(err, ES_ERR_FORMAT, "key '%s': array of %" PRIu64 " %s runs past end of file (%zu bytes left)",
                           name, n, es_gguf_vtype_name(kv->elem), rd_left(r));
        r->pos += (size_t)bytes;
        return ES_OK;
    }
    /* Each string element takes at least its 8-byte length: bound the count before walking it. */
    if (n > rd_left(r) / 8)
        return es_fail(err, ES_ERR_FORMAT, "key '%s': array of %" PRIu64 " strings runs past end of file (%zu bytes left)",
                       name, n, rd_left(r));
    for (uint64_t k = 0; k < n; k++) {
        const uint8_t *s;
        size_t len;
        st = rd_str(r, &s, &len, err, "key '%s': element %" PRIu64, name, k);
        if (st != ES_OK) return st;
        if (!es_add_ok(*arena, (uint64_t)len + 1, arena)) return es_fail(err, ES_ERR_FORMAT, "string sizes overflow");
    }
    *n_srefs += n;
    return ES_OK;
}

/* Validates tensor info i (name, dims, type, size, offset alignment) and records it. */
static es_status parse_tensor(es_gguf *g, rd *r, int64_t i, uint64_t *arena, es_err *err) {
    gguf_tinfo *ti = &g->tensors[i];
    es_gguf_tensor *t = &ti->t;
    char name[80];
    es_status st = rd_str(r, &ti->name_raw, &ti->name_len, err, "name of tensor %" PRId64, i);
    if (st != ES_OK) return st;
    printable(name, sizeof name, ti->name_raw, ti->name_len);
    if (memchr(ti->name_raw, 0, ti->name_len))
        return es_fail(err, ES_ERR_FORMAT, "tensor %" PRId64 ": name '%s' contains a NUL byte", i, name);
    uint64_t h = slot_find(g, g->tensor_slots, g->tensor_mask, tensor_bytes, ti->name_raw, ti->name_len);
    if (g->tensor_slots[h] >= 0)
        return es_fail(err, ES_ERR_FORMAT, "duplicate tensor name '%s' (tensors %" PRId64 " and %" PRId64 ")", name,
                       g->tensor_slots[h], i);
    g->tensor_slots[h] = i;
    if (!es_add_ok(*arena, (uint64_t)ti->name_len + 1, arena)) return es_fail(err, ES_ERR_FORMAT, "string sizes overflow");

    uint32_t n_dims;
    if (!rd_u32(r, &n_dims)) return es_fail(err, ES_ERR_FORMAT, "tensor '%s': dimension count runs past end of file", name);
    if (n_dims < 1 || n_dims > ES_GGUF_MAX_DIMS)
        return es_fail(err, ES_ERR_FORMAT, "tensor '%s': n_dims %" PRIu32 " is not in 1..%d", name, n_dims, ES_GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t nelem = 1;
    for (int d = 0; d < ES_GGUF_MAX_DIMS; d++) {
        uint64_t v = 1;
        if (d < (int)n_dims && !rd_u64(r, &v))
            return es_fail(err, ES_ERR_FORMAT, "tensor '%s': shape runs past end of file", name);
        if (v > (uint64_t)INT64_MAX)
            return es_fail(err, ES_ERR_FORMAT, "tensor '%s': ne[%d] = %" PRId64 " is negative", name, d, (int64_t)v);
        t->ne[d] = (int64_t)v;
        if (__builtin_mul_overflow(nelem, t->ne[d], &nelem))
            return es_fail(err, ES_ERR_FORMAT, "tensor '%s': element count overflows int64 (ne[%d] = %" PRId64 ")", name, d, t->ne[d]);
    }

    uint32_t type;
    if (!rd_u32(r, &type)) return es_fail(err, ES_ERR_FORMAT, "tensor '%s': type runs past end of file", name);
    const es_type_traits *tt = es_type_get(type);
    if (!tt) return es_fail(err, ES_ERR_FORMAT, "tensor '%s': unknown tensor type %" PRIu32, name, type);
    if (t->ne[0] % tt->blck_size != 0)
        return es_fail(err, ES_ERR_FORMAT, "tensor '%s': row length ne[0] = %" PRId64 " is not a multiple of the %s block size %" PRId64,
                       name, t->ne[0], tt->name, tt->blck_size);
    t->type = type;
    /* bytes = (ne[0] / block) * block bytes * ne[1] * ne[2] * ne[3] */
    uint64_t bytes = (uint64_t)(t->ne[0] / tt->blck_size);
    bool ok = es_mul_ok(bytes, tt->type_size, &bytes);
    for (int d = 1; d < ES_GGUF_MAX_DIMS && ok; d++) ok = es_mul_ok(bytes, (uint64_t)t->ne[d], &bytes);
    if (!ok) return es_fail(err, ES_ERR_FORMAT, "tensor '%s': byte size overflows", name);
    t->nbytes = bytes;

    if (!rd_u64(r, &t->offset)) return es_fail(err, ES_ERR_FORMAT, "tensor '%s': offset runs past end of file", name);
    if (t->offset % g->alignment != 0)
        return es_fail(err, ES_ERR_FORMAT, "tensor '%s': offset %" PRIu64 " is not aligned to %" PRIu32, name, t->offset, g->alignment);
    return ES_OK;
}

/* Reads general.alignment (if present) into g->alignment after checking its type and value. */
static es_status parse_alignment(es_gguf *g, es_err *err) {
    const char *key = "general.alignment";
    uint64_t h = slot_find(g, g->kv_slots, g->kv_mask, kv_bytes, key, strlen(key));
    g->alignment = ES_GGUF_DEFAULT_ALIGNMENT;
    if (g->kv_slots[h] < 0) return ES_OK;
    const gguf_kv *kv = &g->kvs[g->kv_slots[h]];
    if (kv->type != ES_GGUF_UINT32)
        return es_fail(err, ES_ERR_FORMAT, "general.alignment must be a uint32, not %s", es_gguf_vtype_name(kv->type));
    uint32_t a = le32(kv->raw);
    if (a == 0 || (a & (a - 1)) != 0 || a > GGUF_MAX_ALIGNMENT)
        return es_fail(err, ES_ERR_FORMAT, "general.alignment %" PRIu32 " must be a power of two in 1..%u", a, GGUF_MAX_ALIGNMENT);
    g->alignment = a;
    return ES_OK;
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const es_gguf_tensor *x = *(const es_gguf_tensor *const *)a, *y = *(const es_gguf_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* Checks every tensor's bytes lie inside the data section and no two tensors share bytes. Needs
 * the arena names (for messages) and g->data_offset. */
static es_status check_tensor_data(es_gguf *g, es_err *err) {
    if (g->n_tensors == 0) return ES_OK;
    if (g->data_offset > g->size)
        return es_fail(err, ES_ERR_FORMAT, "data section starts at byte %" PRIu64 ", past end of file (%zu bytes)", g->data_offset,
                       g->size);
    const uint64_t avail = g->size - g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        es_gguf_tensor *t = &g->tensors[i].t;
        uint64_t end;
        if (!es_add_ok(t->offset, t->nbytes, &end) || end > avail)
            return es_fail(err, ES_ERR_FORMAT,
                           "tensor '%.80s': data [offset %" PRIu64 ", %" PRIu64 " bytes] runs past end of file (%zu bytes, data section at %" PRIu64 ")",
                           t->name, t->offset, t->nbytes, g->size, g->data_offset);
        t->data = g->base + g->data_offset + t->offset;
    }
    const es_gguf_tensor **order = malloc((size_t)g->n_tensors * sizeof *order);
    if (!order) return es_fail(err, ES_ERR_NOMEM, "out of memory sorting %" PRId64 " tensors", g->n_tensors);
    for (int64_t i = 0; i < g->n_tensors; i++) order[i] = &g->tensors[i].t;
    qsort(order, (size_t)g->n_tensors, sizeof *order, cmp_tensor_offset);
    /* `prev` is the tensor reaching furthest so far; an empty tensor occupies no bytes. */
    const es_gguf_tensor *prev = NULL;
    es_status st = ES_OK;
    for (int64_t i = 0; i < g->n_tensors && st == ES_OK; i++) {
        const es_gguf_tensor *t = order[i];
        if (t->nbytes == 0) continue;
        if (prev && t->offset < prev->offset + prev->nbytes)
            st = es_fail(err, ES_ERR_FORMAT,
                         "tensors '%.80s' [offset %" PRIu64 ", %" PRIu64 " bytes] and '%.80s' [offset %" PRIu64 ", %" PRIu64 " bytes] overlap",
                         prev->name, prev->offset, prev->nbytes, t->name, t->offset, t->nbytes);
        if (!prev || t->offset + t->nbytes > prev->offset + prev->nbytes) prev = t;
    }
    free(order);
    return st;
}

/* The copy pass: NUL-terminated copies of every string into one arena. */
static es_status copy_strings(es_gguf *g, uint64_t arena_bytes, uint64_t n_srefs, es_err *err) {
    g->arena = malloc(arena_bytes ? (size_t)arena_bytes : 1);
    g->srefs = malloc(n_srefs ? (size_t)n_srefs * sizeof *g->srefs : 1);
    if (!g->arena || !g->srefs)
        return es_fail(err, ES_ERR_NOMEM, "out of memory for %" PRIu64 " bytes of strings", arena_bytes);
    char *a = g->arena;
    gguf_sref *sr = g->srefs;
#define COPY(dst, src, len)           \
    do {                              \
        memcpy(a, (src), (len));      \
        a[(len)] = 0;                 \
        (dst) = a;                    \
        a += (len) + 1;               \
    } while (0)
    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kvs[i];
        COPY(kv->key, kv->key_raw, kv->key_len);
        if (kv->type == ES_GGUF_STRING) {
            COPY(kv->str, kv->raw, (size_t)kv->n);
        } else if (kv->type == ES_GGUF_ARRAY && kv->elem == ES_GGUF_STRING) {
            /* already validated: each element is u64 length + that many bytes, all in bounds */
            kv->strs = sr;
            const uint8_t *p = kv->raw;
            for (uint64_t k = 0; k < kv->n; k++, sr++) {
                size_t len = (size_t)le64(p);
                COPY(sr->s, p + 8, len);
                sr->len = len;
                p += 8 + len;
            }
        }
    }
    for (int64_t i = 0; i < g->n_tensors; i++) COPY(g->tensors[i].t.name, g->tensors[i].name_raw, g->tensors[i].name_len);
#undef COPY
    if ((uint64_t)(a - g->arena) != arena_bytes || (uint64_t)(sr - g->srefs) != n_srefs)
        return es_fail(err, ES_ERR_INTERNAL, "gguf string arena size mismatch");
    return ES_OK;
}

static es_status parse(es_gguf *g, es_err *err) {
    if (g->size == 0) return es_fail(err, ES_ERR_FORMAT, "file is empty (not a GGUF file)");
    if (g->size < 4 || memcmp(g->base, "GGUF", 4) != 0) {
        char m[16];
        return es_fail(err, ES_ERR_FORMAT, "not a GGUF file (bad magic '%s')", printable(m, sizeof m, g->base, g->size < 4 ? g->size : 4));
    }
    rd r = {g->base, g->size, 4};
    if (!rd_u32(&r, &g->version))
        return es_fail(err, ES_ERR_FORMAT, "truncated header (%zu bytes, need %u)", g->size, GGUF_HEADER_BYTES);
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0)
            return es_fail(err, ES_ERR_UNSUPPORTED, "GGUF version %#" PRIx32 " looks byte-swapped: big-endian files are not supported", g->version);
        return es_fail(err, ES_ERR_UNSUPPORTED, "unsupported GGUF version %" PRIu32 " (2 and 3 are supported)", g->version);
    }
    uint64_t n_tensors, n_kv;
    if (!rd_u64(&r, &n_tensors) || !rd_u64(&r, &n_kv))
        return es_fail(err, ES_ERR_FORMAT, "truncated header (%zu bytes, need %u)", g->size, GGUF_HEADER_BYTES);
    /* Every key/value and tensor info takes a minimum number of bytes: reject absurd counts before
     * anything is allocated from them. */
    uint64_t need_kv, need_t, need;
    if (!es_mul_ok(n_kv, GGUF_MIN_KV_BYTES, &need_kv) || need_kv > rd_left(&r))
        return es_fail(err, ES_ERR_FORMAT, "n_kv %" PRIu64 " is impossible: the file has %zu bytes after the header", n_kv, rd_left(&r));
    if (!es_mul_ok(n_tensors, GGUF_MIN_TENSOR_BYTES, &need_t) || need_t > rd_left(&r))
        return es_fail(err, ES_ERR_FORMAT, "n_tensors %" PRIu64 " is impossible: the file has %zu bytes after the header", n_tensors,
                       rd_left(&r));
    if (!es_add_ok(need_kv, need_t, &need) || need > rd_left(&r))
        return es_fail(err, ES_ERR_FORMAT, "%" PRIu64 " key/values and %" PRIu64 " tensors cannot fit in the %zu bytes after the header",
                       n_kv, n_tensors, rd_left(&r));
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    g->kvs = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kvs);
    g->tensors = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *g->tensors);
    g->kv_mask = slots_for(g->n_kv) - 1;
    g->tensor_mask = slots_for(g->n_tensors) - 1;
    g->kv_slots = malloc((size_t)(g->kv_mask + 1) * sizeof *g->kv_slots);
    g->tensor_slots = malloc((size_t)(g->tensor_mask + 1) * sizeof *g->tensor_slots);
    if (!g->kvs || !g->tensors || !g->kv_slots || !g->tensor_slots)
        return es_fail(err, ES_ERR_NOMEM, "out of memory for %" PRIu64 " key/values and %" PRIu64 " tensors", n_kv, n_tensors);
    memset(g->kv_slots, 0xff, (size_t)(g->kv_mask + 1) * sizeof *g->kv_slots);
    memset(g->tensor_slots, 0xff, (size_t)(g->tensor_mask + 1) * sizeof *g->tensor_slots);

    uint64_t arena = 0, n_srefs = 0;
    es_status st;
    for (int64_t i = 0; i < g->n_kv; i++)
        if ((st = parse_kv(g, &r, i, &arena, &n_srefs, err)) != ES_OK) return st;
    if ((st = parse_alignment(g, err)) != ES_OK) return st;
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((st = parse_tensor(g, &r, i, &arena, err)) != ES_OK) return st;
    /* The data section starts at the end of the tensor infos rounded up to the alignment. */
    uint64_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    g->data_offset = (uint64_t)r.pos + pad;
    if ((st = copy_strings(g, arena, n_srefs, err)) != ES_OK) return st;
    return check_tensor_data(g, err);
}

static es_status open_common(es_gguf *g, es_gguf **out, es_err *err) {
    es_status st = parse(g, err);
    if (st != ES_OK) {
        es_gguf_free(g);
        return st;
    }
    *out = g;
    return ES_OK;
}

es_status es_gguf_open_buffer(const void *data, size_t size, es_gguf **out, es_err *err) {
    if (!out || (!data && size)) return es_fail(err, ES_ERR_INVALID_ARG, "es_gguf_open_buffer: NULL argument");
    *out = NULL;
    es_gguf *g = calloc(1, sizeof *g);
    if (!g) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    g->base = data;
    g->size = size;
    return open_common(g, out, err);
}

/* Maps the file read-only; the descriptor is closed once mapped. Error messages do not repeat the
 * path (callers add it). */
es_status es_gguf_open(const char *path, es_gguf **out, es_err *err) {
    if (!path || !out) return es_fail(err, ES_ERR_INVALID_ARG, "es_gguf_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return es_fail(err, ES_ERR_IO, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return es_fail(err, ES_ERR_IO, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return es_fail(err, ES_ERR_IO, "not a regular file");
    }
    if (sb.st_size == 0) {
        close(fd);
        return es_fail(err, ES_ERR_FORMAT, "file is empty (not a GGUF file)");
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return es_fail(err, ES_ERR_IO, "file too large to map");
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return es_fail(err, ES_ERR_IO, "cannot map %lld bytes: %s", (long long)sb.st_size, strerror(e));
    es_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        munmap(m, (size_t)sb.st_size);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    g->base = m;
    g->size = (size_t)sb.st_size;
    g->mapped = true;
    return open_common(g, out, err);
}

void es_gguf_release(const es_gguf *g, const void *p, size_t len) {
    if (!g || !g->mapped || !p) return;
    const uintptr_t lo = (uintptr_t)g->base, hi = lo + g->size, a = (uintptr_t)p;
    if (a < lo || a > hi || len > hi - a) return;
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t start = (a + page - 1) & ~(page - 1), end = (a + len) & ~(page - 1);
    /* a private read-only file mapping: dropped pages would simply be read from the file again */
    if (end > start) (void)madvise((void *)start, end - start, MADV_DONTNEED);
}

void es_gguf_free(es_gguf *g) {
    if (!g) return;
    if (g->mapped) munmap((void *)g->base, g->size);
    free(g->kvs);
    free(g->tensors);
    free(g->arena);
    free(g->srefs);
    free(g->kv_slots);
    free(g->tensor_slots);
    free(g);
}

/* ---- getters ---- */

uint32_t es_gguf_version(const es_gguf *g) { return g->version; }
uint32_t es_gguf_alignment(const es_gguf *g) { return g->alignment; }
size_t es_gguf_file_size(const es_gguf *g) { return g->size; }
uint64_t es_gguf_data_offset(const es_gguf *g) { return g->data_offset; }
int64_t es_gguf_n_kv(const es_gguf *g) { return g->n_kv; }
int64_t es_gguf_n_tensors(const es_gguf *g) { return g->n_tensors; }

const char *es_gguf_kv_key(const es_gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? g->kvs[i].key : NULL; }

es_gguf_vtype es_gguf_kv_type(const es_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kvs[i].type : ES_GGUF_VTYPE_COUNT;
}

int64_t es_gguf_find_kv(const es_gguf *g, const char *key) {
    if (!g || !key) return -1;
    return g->kv_slots[slot_find(g, g->kv_slots, g->kv_mask, kv_bytes, key, strlen(key))];
}

const es_gguf_tensor *es_gguf_tensor_at(const es_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i].t : NULL;
}

const es_gguf_tensor *es_gguf_find_tensor(const es_gguf *g, const char *name) {
    if (!g || !name) return NULL;
    int64_t i = g->tensor_slots[slot_find(g, g->tensor_slots, g->tensor_mask, tensor_bytes, name, strlen(name))];
    return i >= 0 ? &g->tensors[i].t : NULL;
}

static const gguf_kv *find(const es_gguf *g, const char *key) {
    int64_t i = es_gguf_find_kv(g, key);
    return i >= 0 ? &g->kvs[i] : NULL;
}

/* A scalar kv decoded, or false for absent / string / array. */
static bool find_num(const es_gguf *g, const char *key, gguf_num *n) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type == ES_GGUF_STRING || kv->type == ES_GGUF_ARRAY) return false;
    *n = decode_num(kv->type, kv->raw);
    return true;
}

bool es_gguf_get_u32(const es_gguf *g, const char *key, uint32_t *out) {
    uint64_t v;
    if (!es_gguf_get_u64(g, key, &v) || v > UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}

bool es_gguf_get_u64(const es_gguf *g, const char *key, uint64_t *out) {
    gguf_num n;
    if (!find_num(g, key, &n)) return false;
    if (n.kind == NUM_UINT) *out = n.u;
    else if (n.kind == NUM_INT && n.i >= 0) *out = (uint64_t)n.i;
    else return false;
    return true;
}

bool es_gguf_get_i64(const es_gguf *g, const char *key, int64_t *out) {
    gguf_num n;
    if (!find_num(g, key, &n)) return false;
    if (n.kind == NUM_INT) *out = n.i;
    else if (n.kind == NUM_UINT && n.u <= (uint64_t)INT64_MAX) *out = (int64_t)n.u;
    else return false;
    return true;
}

bool es_gguf_get_f64(const es_gguf *g, const char *key, double *out) {
    gguf_num n;
    if (!find_num(g, key, &n) || n.kind == NUM_BOOL) return false;
    *out = n.kind == NUM_FLOAT ? n.f : n.kind == NUM_INT ? (double)n.i : (double)n.u;
    return true;
}

bool es_gguf_get_f32(const es_gguf *g, const char *key, float *out) {
    double d;
    if (!es_gguf_get_f64(g, key, &d)) return false;
    *out = (float)d;
    return true;
}

bool es_gguf_get_bool(const es_gguf *g, const char *key, bool *out) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != ES_GGUF_BOOL) return false;
    *out = kv->raw[0] != 0;
    return true;
}

bool es_gguf_get_str(const es_gguf *g, const char *key, const char **s, size_t *len) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != ES_GGUF_STRING) return false;
    *s = kv->str;
    if (len) *len = (size_t)kv->n;
    return true;
}

bool es_gguf_get_arr(const es_gguf *g, const char *key, es_gguf_vtype *elem_type, uint64_t *n) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != ES_GGUF_ARRAY) return false;
    if (elem_type) *elem_type = kv->elem;
    if (n) *n = kv->n;
    return true;
}

const void *es_gguf_arr_data(const es_gguf *g, const char *key) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != ES_GGUF_ARRAY || kv->elem == ES_GGUF_STRING) return NULL;
    return kv->raw;
}

bool es_gguf_arr_f64(const es_gguf *g, const char *key, uint64_t i, double *out) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != ES_GGUF_ARRAY || kv->elem == ES_GGUF_STRING || i >= kv->n) return false;
    gguf_num n = decode_num(kv->elem, kv->raw + i * vtype_size(kv->elem));
    *out = n.kind == NUM_FLOAT ? n.f : n.kind == NUM_INT ? (double)n.i : (double)n.u;
    return true;
}

const char *es_gguf_arr_str(const es_gguf *g, const char *key, uint64_t i, size_t *len) {
    const gguf_kv *kv = find(g, key);
    if (!kv || kv->type != ES_GGUF_ARRAY || kv->elem != ES_GGUF_STRING || i >= kv->n) return NULL;
    if (len) *len = kv->strs[i].len;
    return kv->strs[i].s;
}

/* ---- printable values ---- */

/* An appender into a fixed buffer: output past the capacity is dropped and marked with "...". */
typedef struct sbuf {
    char *buf;
    size_t cap, len;
    bool full;
} sbuf;

static void sb_puts(sbuf *b, const char *s, size_t n) {
    if (b->full) return;
    if (n >= b->cap - b->len) {
        b->full = true;
        return;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    sb_puts(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A quoted, escaped string of at most `max` source bytes (cut on a UTF-8 character boundary). */
static void sb_quoted(sbuf *b, const char *s, size_t len, size_t max) {
    size_t n = len;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--;
    }
    sb_puts(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_puts(b, e, 2);
        } else if (c == '\n') sb_puts(b, "\\n", 2);
        else if (c == '\t') sb_puts(b, "\\t", 2);
        else if (c == '\r') sb_puts(b, "\\r", 2);
        else if (c < 0x20 || c == 0x7f) sb_printf(b, "\\x%02x", c);
        else sb_puts(b, (const char *)&c, 1);
    }
    if (n < len) sb_printf(b, "...\" (%zu bytes)", len);
    else sb_puts(b, "\"", 1);
}

static void sb_num(sbuf *b, gguf_num n) {
    switch (n.kind) {
    case NUM_UINT: sb_printf(b, "%" PRIu64, n.u); break;
    case NUM_INT: sb_printf(b, "%" PRId64, n.i); break;
    case NUM_FLOAT: {
        /* the shortest text that reads back as the same value: 1e-05, not 9.99999975e-06 */
        char tmp[40];
        for (int p = 1; p <= 17; p++) {
            snprintf(tmp, sizeof tmp, "%.*g", p, n.f);
            if (n.f32 ? strtof(tmp, NULL) == (float)n.f : strtod(tmp, NULL) == n.f) break;
        }
        sb_puts(b, tmp, strlen(tmp));
        break;
    }
    case NUM_BOOL: sb_puts(b, n.u ? "true" : "false", n.u ? 4 : 5); break;
    }
}

/* Arrays of more than FORMAT_ALL elements show the first FORMAT_HEAD and the count. */
#define FORMAT_ALL 8
#define FORMAT_HEAD 5

const char *es_gguf_kv_format(const es_gguf *g, int64_t i, char *buf, size_t cap) {
    if (!buf || cap == 0) return buf;
    buf[0] = 0;
    if (!g || i < 0 || i >= g->n_kv) return buf;
    const gguf_kv *kv = &g->kvs[i];
    sbuf b = {buf, cap, 0, false};
    if (kv->type == ES_GGUF_STRING) {
        sb_quoted(&b, kv->str, (size_t)kv->n, 80);
    } else if (kv->type != ES_GGUF_ARRAY) {
        sb_num(&b, decode_num(kv->type, kv->raw));
    } else {
        uint64_t show = kv->n <= FORMAT_ALL ? kv->n : FORMAT_HEAD;
        sb_puts(&b, "[", 1);
        for (uint64_t k = 0; k < show; k++) {
            if (k) sb_puts(&b, ", ", 2);
            if (kv->elem == ES_GGUF_STRING) sb_quoted(&b, kv->strs[k].s, kv->strs[k].len, 24);
            else sb_num(&b, decode_num(kv->elem, kv->raw + k * vtype_size(kv->elem)));
        }
        if (show < kv->n) sb_printf(&b, "%s... (%" PRIu64 " items)", show ? ", " : "", kv->n);
        sb_puts(&b, "]", 1);
    }
    if (b.full && cap > 4) {
        /* mark the cut; step back to a UTF-8 character boundary first */
        size_t at = b.len < cap - 4 ? b.len : cap - 4;
        while (at > 0 && ((unsigned char)buf[at] & 0xc0) == 0x80) at--;
        memcpy(buf + at, "...", 3);
        b.len = at + 3;
    }
    buf[b.len < cap ? b.len : cap - 1] = 0;
    return buf;
}
