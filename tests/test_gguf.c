/* test_gguf.c — GGUF writer/reader round trip, value getters and formatting, writer errors, the
 * corruption suite (every malformed input rejected with a message naming the problem, never a
 * crash: the suite also runs under ASan, and every parsed buffer is an exact-size allocation so an
 * over-read is caught), and `edgespec info --json` on a written file when $ES_BIN is set. */
#ifndef ES_CORE_ONLY
#include <cjson/cJSON.h>
#endif
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "util/err.h"
#include "kernels/types.h"
#include "testutil.h"

/* ---- a byte builder for hand-made (and malformed) files ---- */

typedef struct bb {
    uint8_t *p;
    size_t n, cap;
} bb;

static void bb_put(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bb_u8(bb *b, uint8_t v) { bb_put(b, &v, 1); }
static void bb_u32(bb *b, uint32_t v) {
    uint8_t x[4];
    for (int i = 0; i < 4; i++) x[i] = (uint8_t)(v >> (8 * i));
    bb_put(b, x, 4);
}
static void bb_u64(bb *b, uint64_t v) {
    uint8_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint8_t)(v >> (8 * i));
    bb_put(b, x, 8);
}
static void bb_str(bb *b, const char *s) {
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}
static void bb_pad(bb *b, size_t align) {
    while (b->n % align) bb_u8(b, 0);
}
static void bb_zeros(bb *b, size_t n) {
    for (size_t i = 0; i < n; i++) bb_u8(b, 0);
}
static void bb_header(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
static void bb_kv_u32(bb *b, const char *key, uint32_t v) {
    bb_str(b, key);
    bb_u32(b, ES_GGUF_UINT32);
    bb_u32(b, v);
}
static void bb_kv_str(bb *b, const char *key, const char *v) {
    bb_str(b, key);
    bb_u32(b, ES_GGUF_STRING);
    bb_str(b, v);
}
/* tensor info with n_dims dims taken from ne */
static void bb_tensor(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) bb_u64(b, ne[i]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

/* Parses an exact-size copy of buf[0..n) and walks what it finds; returns the status, fills err. */
static es_status parse_copy(const uint8_t *buf, size_t n, es_err *err) {
    uint8_t *copy = malloc(n ? n : 1);
    if (n) memcpy(copy, buf, n);
    es_gguf *g = NULL;
    es_status st = es_gguf_open_buffer(n ? copy : NULL, n, &g, err);
    if (st == ES_OK) {
        /* walk everything, as a consumer would */
        char tmp[256];
        for (int64_t i = 0; i < es_gguf_n_kv(g); i++) es_gguf_kv_format(g, i, tmp, sizeof tmp);
        volatile uint8_t sink = 0;
        for (int64_t i = 0; i < es_gguf_n_tensors(g); i++) {
            const es_gguf_tensor *t = es_gguf_tensor_at(g, i);
            if (t->nbytes) sink ^= ((const uint8_t *)t->data)[t->nbytes - 1];
        }
        (void)sink;
    }
    es_gguf_free(g);
    free(copy);
    return st;
}

/* Expects the builder's bytes to be rejected with `want` and a message containing `keyword`. */
static void expect_reject(const char *label, bb *b, es_status want, const char *keyword) {
    es_err err = {{0}};
    es_status st = parse_copy(b->p, b->n, &err);
    CHECK_MSG(st == want, "%s: got %s (%s), want %s", label, es_status_str(st), err.msg, es_status_str(want));
    CHECK_MSG(st == ES_OK || strstr(err.msg, keyword) != NULL, "%s: message '%s' lacks '%s'", label, err.msg, keyword);
    free(b->p);
    *b = (bb){0};
}

static void expect_accept(const char *label, bb *b) {
    es_err err = {{0}};
    es_status st = parse_copy(b->p, b->n, &err);
    CHECK_MSG(st == ES_OK, "%s: rejected: %s", label, err.msg);
    free(b->p);
    *b = (bb){0};
}

/* A valid base file: kv general.architecture, one f32 [8] tensor "t" at offset 0, 32 data bytes.
 * Variants change one thing. */
static void base_file(bb *b, uint32_t version) {
    bb_header(b, version, 1, 1);
    bb_kv_str(b, "general.architecture", "llama");
    uint64_t ne[1] = {8};
    bb_tensor(b, "t", 1, ne, ES_TYPE_F32, 0);
    bb_pad(b, 32);
    bb_zeros(b, 32);
}

/* A file with one f32 tensor of shape ne[n_dims] / type at offset, followed by data_bytes of data. */
static void one_tensor_file(bb *b, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset, size_t data_bytes) {
    bb_header(b, 3, 1, 0);
    bb_tensor(b, "w", n_dims, ne, type, offset);
    bb_pad(b, 32);
    bb_zeros(b, data_bytes);
}

static void test_corruption(void) {
    bb b = {0};

    base_file(&b, 3);
    expect_accept("valid base v3", &b);
    base_file(&b, 2);
    expect_accept("valid base v2", &b);

    expect_reject("empty buffer", &b, ES_ERR_FORMAT, "empty");

    base_file(&b, 3);
    b.p[3] = 'X';
    expect_reject("bad magic", &b, ES_ERR_FORMAT, "magic");
    bb_put(&b, "GG", 2);
    expect_reject("two bytes", &b, ES_ERR_FORMAT, "magic");

    base_file(&b, 1);
    expect_reject("version 1", &b, ES_ERR_UNSUPPORTED, "version 1");
    bb_put(&b, "GGUF\1\0\0\0", 8);
    expect_reject("version 1, 8 bytes", &b, ES_ERR_UNSUPPORTED, "version 1");
    bb_put(&b, "GGUF\3\0\0\0\0\0", 10);
    expect_reject("header cut", &b, ES_ERR_FORMAT, "truncated header");
    base_file(&b, 99);
    expect_reject("version 99", &b, ES_ERR_UNSUPPORTED, "version 99");
    base_file(&b, 0x03000000u);
    expect_reject("byte-swapped version", &b, ES_ERR_UNSUPPORTED, "big-endian");

    bb_header(&b, 3, 0, 1ull << 62);
    bb_zeros(&b, 64);
    expect_reject("n_kv 2^62", &b, ES_ERR_FORMAT, "n_kv");
    bb_header(&b, 3, 1ull << 62, 0);
    bb_zeros(&b, 64);
    expect_reject("n_tensors 2^62", &b, ES_ERR_FORMAT, "n_tensors");
    bb_header(&b, 3, UINT64_MAX, UINT64_MAX);
    bb_zeros(&b, 64);
    expect_reject("counts 2^64-1", &b, ES_ERR_FORMAT, "impossible");
    bb_header(&b, 3, 2, 3); /* each fits alone, not together: 3*13 + 2*32 > 80 */
    bb_zeros(&b, 80);
    expect_reject("counts together", &b, ES_ERR_FORMAT, "cannot fit");

    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 1ull << 63);
    bb_zeros(&b, 16);
    expect_reject("key length 2^63", &b, ES_ERR_FORMAT, "string length 9223372036854775808");

    bb_header(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, ES_GGUF_STRING);
    bb_u64(&b, 1000);
    bb_put(&b, "abc", 3);
    expect_reject("string longer than file", &b, ES_ERR_FORMAT, "runs past end of file");

    bb_header(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, ES_GGUF_ARRAY);
    bb_u32(&b, ES_GGUF_UINT32);
    bb_u64(&b, 1ull << 61);
    bb_zeros(&b, 16);
    expect_reject("numeric array count huge", &b, ES_ERR_FORMAT, "array of 2305843009213693952 uint32");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, ES_GGUF_ARRAY);
    bb_u32(&b, ES_GGUF_UINT64);
    bb_u64(&b, UINT64_MAX / 4); /* count * 8 overflows */
    bb_zeros(&b, 16);
    expect_reject("array bytes overflow", &b, ES_ERR_FORMAT, "array of");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, ES_GGUF_ARRAY);
    bb_u32(&b, ES_GGUF_STRING);
    bb_u64(&b, 1ull << 60);
    bb_zeros(&b, 16);
    expect_reject("string array count huge", &b, ES_ERR_FORMAT, "strings runs past end");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "tok");
    bb_u32(&b, ES_GGUF_ARRAY);
    bb_u32(&b, ES_GGUF_STRING);
    bb_u64(&b, 2);
    bb_str(&b, "ok");
    bb_u64(&b, 500);
    bb_zeros(&b, 8);
    expect_reject("string array element too long", &b, ES_ERR_FORMAT, "element 1");

    bb_header(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, 13);
    bb_zeros(&b, 16);
    expect_reject("unknown value type 13", &b, ES_ERR_FORMAT, "unknown value type 13");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, ES_GGUF_ARRAY);
    bb_u32(&b, ES_GGUF_ARRAY);
    bb_u64(&b, 1);
    bb_u32(&b, ES_GGUF_UINT8);
    bb_u64(&b, 1);
    bb_u8(&b, 7);
    expect_reject("nested array", &b, ES_ERR_FORMAT, "nested");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, ES_GGUF_ARRAY);
    bb_u32(&b, 13);
    bb_u64(&b, 1);
    bb_zeros(&b, 16);
    expect_reject("unknown array element type", &b, ES_ERR_FORMAT, "element type 13");
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "a");
    bb_u32(&b, ES_GGUF_UINT64);
    bb_u32(&b, 1); /* 4 of 8 value bytes */
    expect_reject("scalar truncated", &b, ES_ERR_FORMAT, "uint64 value runs past end");

    bb_header(&b, 3, 0, 2);
    bb_kv_u32(&b, "a.b", 1);
    bb_kv_u32(&b, "a.b", 2);
    expect_reject("duplicate key", &b, ES_ERR_FORMAT, "duplicate key 'a.b'");
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, ES_GGUF_UINT8);
    bb_u8(&b, 1);
    expect_reject("key with NUL", &b, ES_ERR_FORMAT, "NUL");

    uint64_t ne[5] = {8, 1, 1, 1, 1};
    one_tensor_file(&b, 1, ne, ES_TYPE_F32, 0, 32);
    expect_accept("valid one tensor", &b);
    one_tensor_file(&b, 0, ne, ES_TYPE_F32, 0, 32);
    expect_reject("n_dims 0", &b, ES_ERR_FORMAT, "n_dims 0");
    one_tensor_file(&b, 5, ne, ES_TYPE_F32, 0, 32);
    expect_reject("n_dims 5", &b, ES_ERR_FORMAT, "n_dims 5");
    uint64_t neg[2] = {8, (uint64_t)-5};
    one_tensor_file(&b, 2, neg, ES_TYPE_F32, 0, 32);
    expect_reject("negative ne", &b, ES_ERR_FORMAT, "ne[1] = -5 is negative");
    uint64_t big[3] = {1ull << 32, 1ull << 32, 1};
    one_tensor_file(&b, 3, big, ES_TYPE_F32, 0, 32);
    expect_reject("ne product overflow", &b, ES_ERR_FORMAT, "overflows int64");
    uint64_t bigb[2] = {1ull << 40, 1ull << 22}; /* 2^62 elements fit int64, 2^64 bytes do not */
    one_tensor_file(&b, 2, bigb, ES_TYPE_F32, 0, 32);
    expect_reject("byte size overflow", &b, ES_ERR_FORMAT, "byte size overflows");
    one_tensor_file(&b, 1, ne, 99, 0, 32);
    expect_reject("unknown tensor type 99", &b, ES_ERR_FORMAT, "unknown tensor type 99");
    one_tensor_file(&b, 1, ne, 4, 0, 32);
    expect_reject("removed tensor type 4", &b, ES_ERR_FORMAT, "unknown tensor type 4");
    uint64_t ne33[1] = {33};
    one_tensor_file(&b, 1, ne33, ES_TYPE_Q8_0, 0, 64);
    expect_reject("q8_0 ne0 33", &b, ES_ERR_FORMAT, "block size");
    one_tensor_file(&b, 1, ne, ES_TYPE_F32, 16, 64);
    expect_reject("offset not aligned", &b, ES_ERR_FORMAT, "not aligned");
    one_tensor_file(&b, 1, ne, ES_TYPE_F32, 1024, 32);
    expect_reject("offset past end", &b, ES_ERR_FORMAT, "runs past end of file");
    one_tensor_file(&b, 1, ne, ES_TYPE_F32, 0, 31 + 32 * 0);
    expect_reject("data one byte short", &b, ES_ERR_FORMAT, "[offset 0, 32 bytes] runs past end of file");
    one_tensor_file(&b, 1, ne, ES_TYPE_F32, UINT64_MAX - 31, 32);
    expect_reject("offset+size overflow", &b, ES_ERR_FORMAT, "runs past end of file");

    /* tensor infos end before the data section the padding implies */
    bb_header(&b, 3, 1, 0);
    bb_tensor(&b, "w", 1, ne, ES_TYPE_F32, 0);
    expect_reject("no data section", &b, ES_ERR_FORMAT, "past end of file");

    uint64_t ne16[1] = {16};
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "a", 1, ne16, ES_TYPE_F32, 0);  /* bytes [0, 64) */
    bb_tensor(&b, "b", 1, ne, ES_TYPE_F32, 32);   /* bytes [32, 64) */
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_reject("overlap", &b, ES_ERR_FORMAT, "overlap");
    bb_header(&b, 3, 3, 0); /* a contains c; b after c but inside a */
    bb_tensor(&b, "a", 1, ne16, ES_TYPE_F32, 0);  /* [0, 64) */
    bb_tensor(&b, "b", 1, ne, ES_TYPE_F32, 32);   /* [32, 64) */
    bb_tensor(&b, "c", 1, ne, ES_TYPE_F32, 0);    /* [0, 32) */
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_reject("overlap 3", &b, ES_ERR_FORMAT, "overlap");
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "b", 1, ne, ES_TYPE_F32, 32);   /* out of order, adjacent: fine */
    bb_tensor(&b, "a", 1, ne, ES_TYPE_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_accept("adjacent out of order", &b);
    uint64_t ne0[2] = {8, 0};
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "a", 1, ne, ES_TYPE_F32, 0);
    bb_tensor(&b, "empty", 2, ne0, ES_TYPE_F32, 0); /* no bytes: overlaps nothing */
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    expect_accept("empty tensor", &b);
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "same", 1, ne, ES_TYPE_F32, 0);
    bb_tensor(&b, "same", 1, ne, ES_TYPE_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_reject("duplicate tensor name", &b, ES_ERR_FORMAT, "duplicate tensor name 'same'");

    /* general.alignment: must be a u32 power of two in 1..1 MiB */
    const uint32_t bad_align[] = {0, 3, 48, 1u << 21};
    for (size_t i = 0; i < sizeof bad_align / sizeof bad_align[0]; i++) {
        bb_header(&b, 3, 0, 1);
        bb_kv_u32(&b, "general.alignment", bad_align[i]);
        expect_reject("bad alignment", &b, ES_ERR_FORMAT, "power of two");
    }
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, ES_GGUF_UINT64);
    bb_u64(&b, 32);
    expect_reject("alignment u64", &b, ES_ERR_FORMAT, "must be a uint32");
    bb_header(&b, 3, 0, 1);
    bb_kv_str(&b, "general.alignment", "32");
    expect_reject("alignment string", &b, ES_ERR_FORMAT, "must be a uint32");
    bb_header(&b, 3, 1, 1); /* alignment 64: offset 32 is no longer aligned */
    bb_kv_u32(&b, "general.alignment", 64);
    bb_tensor(&b, "w", 1, ne, ES_TYPE_F32, 32);
    bb_pad(&b, 64);
    bb_zeros(&b, 64);
    expect_reject("offset vs alignment 64", &b, ES_ERR_FORMAT, "not aligned to 64");
    bb_header(&b, 3, 1, 1);
    bb_kv_u32(&b, "general.alignment", 1);
    bb_tensor(&b, "w", 1, ne, ES_TYPE_F32, 3);
    bb_zeros(&b, 35);
    expect_accept("alignment 1", &b);
}

/* ---- writer round trip ---- */

typedef struct fill_ud {
    uint8_t seed;
    int calls;
} fill_ud;

static void pattern(uint8_t *dst, uint64_t n, uint8_t seed) {
    for (uint64_t i = 0; i < n; i++) dst[i] = (uint8_t)(seed + i * 7 + (i >> 8));
}

static es_status fill_pattern(void *ud, void *dst, uint64_t nbytes, es_err *err) {
    fill_ud *f = ud;
    f->calls++;
    pattern(dst, nbytes, f->seed);
    return ES_OK;
}

static es_status fill_fail(void *ud, void *dst, uint64_t nbytes, es_err *err) {
    return es_fail(err, ES_ERR_IO, "source went away");
}

typedef struct prog {
    int calls;
    double last;
    bool monotonic, labelled;
} prog;

static void on_progress(void *ud, const char *what, double f) {
    prog *p = ud;
    if (f < p->last) p->monotonic = false;
    if (!what || strcmp(what, "writing") != 0) p->labelled = false;
    p->last = f;
    p->calls++;
}

static const uint8_t k_u8[] = {0, 1, 255};
static const int8_t k_i8[] = {-128, 0, 127};
static const uint16_t k_u16[] = {0, 65535, 1234};
static const int16_t k_i16[] = {-32768, 32767, -1};
static const uint32_t k_u32[] = {0, 0xffffffffu, 42};
static const int32_t k_i32[] = {INT32_MIN, INT32_MAX, -7};
static const float k_f32[] = {1.5f, -0.0f, 3.0e38f};
static const uint8_t k_bool[] = {1, 0, 1};
static const uint64_t k_u64[] = {0, UINT64_MAX, 1ull << 40};
static const int64_t k_i64[] = {INT64_MIN, INT64_MAX, -3};
static const double k_f64[] = {0.1, -1e300, 2.5};

typedef struct arr_case {
    const char *key;
    es_gguf_vtype elem;
    const void *data;
    size_t esize;
} arr_case;

static const arr_case k_arrs[] = {
    {"arr.u8", ES_GGUF_UINT8, k_u8, 1},    {"arr.i8", ES_GGUF_INT8, k_i8, 1},
    {"arr.u16", ES_GGUF_UINT16, k_u16, 2}, {"arr.i16", ES_GGUF_INT16, k_i16, 2},
    {"arr.u32", ES_GGUF_UINT32, k_u32, 4}, {"arr.i32", ES_GGUF_INT32, k_i32, 4},
    {"arr.f32", ES_GGUF_FLOAT32, k_f32, 4}, {"arr.bool", ES_GGUF_BOOL, k_bool, 1},
    {"arr.u64", ES_GGUF_UINT64, k_u64, 8}, {"arr.i64", ES_GGUF_INT64, k_i64, 8},
    {"arr.f64", ES_GGUF_FLOAT64, k_f64, 8},
};
#define N_ARRS (sizeof k_arrs / sizeof k_arrs[0])

/* tensors written by the round trip: name, type, n_dims, ne */
typedef struct tcase {
    const char *name;
    uint32_t type;
    int n_dims;
    int64_t ne[4];
    bool use_fill;
    uint64_t nbytes;
} tcase;

static const tcase k_tensors[] = {
    {"tok_embd.weight", ES_TYPE_F32, 2, {8, 3, 1, 1}, false, 8 * 3 * 4},
    {"blk.0.attn_q.weight", ES_TYPE_F16, 2, {16, 2, 1, 1}, true, 16 * 2 * 2},
    {"blk.0.ffn_up.weight", ES_TYPE_Q8_0, 3, {64, 2, 2, 1}, true, 2 * 34 * 2 * 2},
    {"blk.0.ffn_down.weight", ES_TYPE_Q4_0, 2, {32, 3, 1, 1}, false, 18 * 3},
    {"output_norm.weight", ES_TYPE_F32, 1, {5, 1, 1, 1}, true, 20},
    {"blk.1.4d", ES_TYPE_F32, 4, {4, 1, 2, 3}, false, 4 * 4 * 6},
};
#define N_TENSORS (sizeof k_tensors / sizeof k_tensors[0])

static void build_writer(es_gguf_writer *w, uint8_t **direct) {
    CHECK(es_gguf_set_str(w, "general.architecture", "llama") == ES_OK);
    CHECK(es_gguf_set_u32(w, "t.u32", 0xdeadbeefu) == ES_OK);
    CHECK(es_gguf_set_i32(w, "t.i32", -123456) == ES_OK);
    CHECK(es_gguf_set_u64(w, "t.u64", UINT64_MAX - 5) == ES_OK);
    CHECK(es_gguf_set_f32(w, "t.f32", 3.25f) == ES_OK);
    CHECK(es_gguf_set_bool(w, "t.bool", true) == ES_OK);
    CHECK(es_gguf_set_bool(w, "t.false", false) == ES_OK);
    CHECK(es_gguf_set_str(w, "t.str", "h\xc3\xa9llo \"world\"\n") == ES_OK);
    CHECK(es_gguf_set_str(w, "t.empty", "") == ES_OK);
    CHECK(es_gguf_set_u32(w, "t.replaced", 1) == ES_OK);
    CHECK(es_gguf_set_str(w, "t.replaced", "two") == ES_OK);
    CHECK(es_gguf_set_u32(w, "general.alignment", 64) == ES_OK);
    for (size_t i = 0; i < N_ARRS; i++) CHECK(es_gguf_set_arr(w, k_arrs[i].key, k_arrs[i].elem, k_arrs[i].data, 3) == ES_OK);
    CHECK(es_gguf_set_arr(w, "arr.empty", ES_GGUF_UINT32, NULL, 0) == ES_OK);
    uint32_t seq[512];
    for (uint32_t i = 0; i < 512; i++) seq[i] = i;
    CHECK(es_gguf_set_arr(w, "arr.long", ES_GGUF_UINT32, seq, 512) == ES_OK);
    const char *strs[] = {"<unk>", "", "a\0b", "\xe2\x96\x81the"};
    const size_t lens[] = {5, 0, 3, 6};
    CHECK(es_gguf_set_arr_str(w, "tokenizer.ggml.tokens", strs, lens, 4) == ES_OK);
    const char *plain[] = {"x", "yy"};
    CHECK(es_gguf_set_arr_str(w, "arr.strs_nolen", plain, NULL, 2) == ES_OK);
    CHECK(es_gguf_set_arr_str(w, "arr.strs_empty", NULL, NULL, 0) == ES_OK);
    /* bad arguments */
    CHECK(es_gguf_set_arr(w, "bad", ES_GGUF_STRING, strs, 1) == ES_ERR_INVALID_ARG);
    CHECK(es_gguf_set_arr(w, "bad", ES_GGUF_ARRAY, seq, 1) == ES_ERR_INVALID_ARG);
    CHECK(es_gguf_set_arr(w, "bad", ES_GGUF_UINT32, NULL, 3) == ES_ERR_INVALID_ARG);
    CHECK(es_gguf_set_str(w, NULL, "x") == ES_ERR_INVALID_ARG);

    static fill_ud fills[N_TENSORS];
    for (size_t i = 0; i < N_TENSORS; i++) {
        const tcase *tc = &k_tensors[i];
        fills[i] = (fill_ud){(uint8_t)(17 * i + 3), 0};
        if (tc->use_fill) {
            direct[i] = NULL;
            CHECK_OK(es_gguf_add_tensor_fill(w, tc->name, tc->type, tc->n_dims, tc->ne, fill_pattern, &fills[i]), (es_err *)NULL);
        } else {
            direct[i] = malloc(tc->nbytes ? tc->nbytes : 1);
            pattern(direct[i], tc->nbytes, fills[i].seed);
            CHECK_OK(es_gguf_add_tensor(w, tc->name, tc->type, tc->n_dims, tc->ne, direct[i]), (es_err *)NULL);
        }
    }
    /* writer-side validation */
    int64_t ne33[1] = {33}, neneg[2] = {8, -1}, ne8[1] = {8}, nezero[2] = {8, 0};
    CHECK(es_gguf_add_tensor(w, "z", ES_TYPE_F32, 2, nezero, direct[0]) == ES_ERR_INVALID_ARG);
    CHECK(es_gguf_add_tensor(w, "q", ES_TYPE_Q8_0, 1, ne33, direct[0]) == ES_ERR_INVALID_ARG);
    CHECK(es_gguf_add_tensor(w, "n", ES_TYPE_F32, 2, neneg, direct[0]) == ES_ERR_INVALID_ARG);
    CHECK(es_gguf_add_tensor(w, "d", ES_TYPE_F32, 0, ne8, direct[0]) == ES_ERR_INVALID_ARG);
    CHECK(es_gguf_add_tensor(w, "u", 99, 1, ne8, direct[0]) == ES_ERR_INVALID_ARG);
    CHECK(es_gguf_add_tensor(w, "tok_embd.weight", ES_TYPE_F32, 1, ne8, direct[0]) == ES_ERR_INVALID_ARG);
    CHECK(es_gguf_add_tensor(w, "x", ES_TYPE_F32, 1, ne8, NULL) == ES_ERR_INVALID_ARG);
    char longname[80];
    memset(longname, 'n', 64);
    longname[64] = 0;
    CHECK(es_gguf_add_tensor(w, longname, ES_TYPE_F32, 1, ne8, direct[0]) == ES_ERR_INVALID_ARG);
}

static void check_read(const es_gguf *g, uint8_t **direct) {
    CHECK(es_gguf_version(g) == 3);
    CHECK(es_gguf_alignment(g) == 64);
    CHECK(es_gguf_data_offset(g) % 64 == 0);
    CHECK(es_gguf_n_tensors(g) == (int64_t)N_TENSORS);
    /* 12 scalars/strings (t.replaced counted once, plus alignment and architecture), 11 typed
     * arrays, empty, long, 3 string arrays */
    CHECK_MSG(es_gguf_n_kv(g) == 11 + (int64_t)N_ARRS + 5, "n_kv %" PRId64, es_gguf_n_kv(g));

    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f32;
    double f64;
    bool b;
    const char *s;
    size_t len;
    CHECK(es_gguf_get_u32(g, "t.u32", &u32) && u32 == 0xdeadbeefu);
    CHECK(es_gguf_get_i64(g, "t.u32", &i64) && i64 == 0xdeadbeefll);
    CHECK(es_gguf_get_i64(g, "t.i32", &i64) && i64 == -123456);
    CHECK(!es_gguf_get_u32(g, "t.i32", &u32));
    CHECK(!es_gguf_get_u64(g, "t.i32", &u64));
    CHECK(es_gguf_get_u64(g, "t.u64", &u64) && u64 == UINT64_MAX - 5);
    CHECK(!es_gguf_get_i64(g, "t.u64", &i64));
    CHECK(!es_gguf_get_u32(g, "t.u64", &u32));
    CHECK(es_gguf_get_f32(g, "t.f32", &f32) && f32 == 3.25f);
    CHECK(es_gguf_get_f64(g, "t.f32", &f64) && f64 == 3.25);
    CHECK(es_gguf_get_f32(g, "t.i32", &f32) && f32 == -123456.0f);
    CHECK(!es_gguf_get_u32(g, "t.f32", &u32));
    CHECK(es_gguf_get_bool(g, "t.bool", &b) && b);
    CHECK(es_gguf_get_bool(g, "t.false", &b) && !b);
    CHECK(!es_gguf_get_bool(g, "t.u32", &b));
    CHECK(!es_gguf_get_u32(g, "t.bool", &u32));
    CHECK(!es_gguf_get_f32(g, "t.bool", &f32));
    CHECK(es_gguf_get_str(g, "t.str", &s, &len) && len == 15 && strcmp(s, "h\xc3\xa9llo \"world\"\n") == 0);
    CHECK(es_gguf_get_str(g, "t.empty", &s, &len) && len == 0 && s[0] == 0);
    CHECK(es_gguf_get_str(g, "t.replaced", &s, &len) && strcmp(s, "two") == 0);
    CHECK(!es_gguf_get_u32(g, "t.replaced", &u32));
    CHECK(!es_gguf_get_str(g, "t.u32", &s, &len));
    CHECK(!es_gguf_get_u32(g, "no.such.key", &u32));
    CHECK(es_gguf_find_kv(g, "no.such.key") == -1);
    CHECK(es_gguf_find_kv(g, "t.u3") == -1);
    int64_t ki = es_gguf_find_kv(g, "t.u32");
    CHECK(ki >= 0 && strcmp(es_gguf_kv_key(g, ki), "t.u32") == 0 && es_gguf_kv_type(g, ki) == ES_GGUF_UINT32);
    CHECK(es_gguf_kv_key(g, -1) == NULL && es_gguf_kv_key(g, es_gguf_n_kv(g)) == NULL);

    for (size_t i = 0; i < N_ARRS; i++) {
        es_gguf_vtype et;
        uint64_t n;
        CHECK_MSG(es_gguf_get_arr(g, k_arrs[i].key, &et, &n) && et == k_arrs[i].elem && n == 3, "%s", k_arrs[i].key);
        const void *d = es_gguf_arr_data(g, k_arrs[i].key);
        CHECK_MSG(d && memcmp(d, k_arrs[i].data, 3 * k_arrs[i].esize) == 0, "%s bytes", k_arrs[i].key);
        CHECK(es_gguf_arr_str(g, k_arrs[i].key, 0, &len) == NULL);
    }
    CHECK(es_gguf_arr_f64(g, "arr.i16", 0, &f64) && f64 == -32768.0);
    CHECK(es_gguf_arr_f64(g, "arr.f64", 1, &f64) && f64 == -1e300);
    CHECK(es_gguf_arr_f64(g, "arr.u64", 1, &f64) && f64 == 18446744073709551615.0);
    CHECK(!es_gguf_arr_f64(g, "arr.u8", 3, &f64));
    es_gguf_vtype et;
    uint64_t n;
    CHECK(es_gguf_get_arr(g, "arr.empty", &et, &n) && n == 0 && et == ES_GGUF_UINT32);
    CHECK(es_gguf_get_arr(g, "arr.long", &et, &n) && n == 512);
    CHECK(es_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) && et == ES_GGUF_STRING && n == 4);
    CHECK(es_gguf_arr_data(g, "tokenizer.ggml.tokens") == NULL);
    s = es_gguf_arr_str(g, "tokenizer.ggml.tokens", 0, &len);
    CHECK(s && len == 5 && strcmp(s, "<unk>") == 0);
    s = es_gguf_arr_str(g, "tokenizer.ggml.tokens", 1, &len);
    CHECK(s && len == 0 && s[0] == 0);
    s = es_gguf_arr_str(g, "tokenizer.ggml.tokens", 2, &len);
    CHECK(s && len == 3 && memcmp(s, "a\0b", 4) == 0);
    s = es_gguf_arr_str(g, "tokenizer.ggml.tokens", 3, &len);
    CHECK(s && len == 6 && strcmp(s, "\xe2\x96\x81the") == 0);
    CHECK(es_gguf_arr_str(g, "tokenizer.ggml.tokens", 4, &len) == NULL);
    s = es_gguf_arr_str(g, "arr.strs_nolen", 1, &len);
    CHECK(s && len == 2 && strcmp(s, "yy") == 0);
    CHECK(es_gguf_get_arr(g, "arr.strs_empty", &et, &n) && n == 0 && et == ES_GGUF_STRING);

    uint64_t expect_off = 0;
    for (size_t i = 0; i < N_TENSORS; i++) {
        const tcase *tc = &k_tensors[i];
        const es_gguf_tensor *t = es_gguf_tensor_at(g, (int64_t)i);
        CHECK(t && es_gguf_find_tensor(g, tc->name) == t);
        if (!t) continue;
        CHECK_MSG(strcmp(t->name, tc->name) == 0 && t->type == tc->type && t->n_dims == tc->n_dims, "%s", tc->name);
        CHECK(memcmp(t->ne, tc->ne, sizeof t->ne) == 0);
        CHECK_MSG(t->nbytes == tc->nbytes, "%s: %" PRIu64 " bytes", tc->name, t->nbytes);
        CHECK(t->nbytes == es_row_size(tc->type, tc->ne[0]) * (uint64_t)(tc->ne[1] * tc->ne[2] * tc->ne[3]));
        CHECK_MSG(t->offset == expect_off, "%s: offset %" PRIu64 " want %" PRIu64, tc->name, t->offset, expect_off);
        CHECK(t->offset % 64 == 0);
        uint8_t *want = malloc(t->nbytes ? t->nbytes : 1);
        pattern(want, t->nbytes, (uint8_t)(17 * i + 3));
        CHECK_MSG(memcmp(t->data, want, t->nbytes) == 0, "%s data", tc->name);
        if (direct[i]) CHECK(memcmp(t->data, direct[i], t->nbytes) == 0);
        free(want);
        expect_off += (tc->nbytes + 63) / 64 * 64;
    }
    CHECK(es_gguf_tensor_at(g, (int64_t)N_TENSORS) == NULL && es_gguf_tensor_at(g, -1) == NULL);
    CHECK(es_gguf_find_tensor(g, "nope") == NULL);
    CHECK(es_gguf_file_size(g) == es_gguf_data_offset(g) + expect_off);
    /* padding bytes are zero */
    const es_gguf_tensor *t4 = es_gguf_find_tensor(g, "output_norm.weight");
    const uint8_t *pad = (const uint8_t *)t4->data + t4->nbytes;
    bool zeros = true;
    for (int k = 0; k < 64 - 20; k++) zeros = zeros && pad[k] == 0;
    CHECK(zeros);
}

static void check_format(const es_gguf *g) {
    char buf[512];
    struct { const char *key, *want; } cases[] = {
        {"t.u32", "3735928559"},
        {"t.i32", "-123456"},
        {"t.u64", "18446744073709551610"},
        {"t.f32", "3.25"},
        {"t.bool", "true"},
        {"t.str", "\"h\xc3\xa9llo \\\"world\\\"\\n\""},
        {"t.empty", "\"\""},
        {"arr.long", "[0, 1, 2, 3, 4, ... (512 items)]"},
        {"arr.i8", "[-128, 0, 127]"},
        {"arr.bool", "[true, false, true]"},
        {"arr.f32", "[1.5, -0, 3e+38]"},
        {"arr.f64", "[0.1, -1e+300, 2.5]"},
        {"arr.empty", "[]"},
        {"tokenizer.ggml.tokens", "[\"<unk>\", \"\", \"a\\x00b\", \"\xe2\x96\x81the\"]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t k = es_gguf_find_kv(g, cases[i].key);
        const char *got = es_gguf_kv_format(g, k, buf, sizeof buf);
        CHECK_MSG(got == buf && strcmp(buf, cases[i].want) == 0, "%s: got '%s' want '%s'", cases[i].key, buf, cases[i].want);
    }
    /* small buffers: always terminated, never overrun, cut marked with "..." */
    int64_t k = es_gguf_find_kv(g, "arr.long");
    for (size_t cap = 1; cap < 40; cap++) { /* the full text is 32 chars */
        char *small = malloc(cap);
        es_gguf_kv_format(g, k, small, cap);
        CHECK(strlen(small) < cap);
        if (cap > 4 && cap <= 32) CHECK_MSG(strcmp(small + strlen(small) - 3, "...") == 0, "cap %zu: '%s'", cap, small);
        free(small);
    }
    /* long strings are cut after 80 bytes with the length */
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    es_gguf_writer *w = es_gguf_writer_init();
    CHECK(es_gguf_set_str(w, "long", big) == ES_OK);
    const char *path = es_test_tmp("gguf_long.gguf");
    es_err err = {{0}};
    CHECK_OK(es_gguf_write(w, path, NULL, NULL, &err), &err);
    es_gguf_writer_free(w);
    es_gguf *g2 = NULL;
    CHECK_OK(es_gguf_open(path, &g2, &err), &err);
    if (g2) {
        es_gguf_kv_format(g2, 0, buf, sizeof buf);
        CHECK_MSG(strstr(buf, "...\" (299 bytes)") != NULL && strlen(buf) < 110, "long: '%s'", buf);
        CHECK(es_gguf_n_tensors(g2) == 0 && es_gguf_alignment(g2) == 32);
        es_gguf_free(g2);
    }
    CHECK(strcmp(es_gguf_vtype_name(ES_GGUF_FLOAT64), "float64") == 0);
    CHECK(strcmp(es_gguf_vtype_name(ES_GGUF_STRING), "string") == 0);
    CHECK(strcmp(es_gguf_vtype_name((es_gguf_vtype)77), "unknown") == 0);
}

/* `edgespec info --json` on the written file: one JSON object with the documented fields. */
#ifdef ES_CORE_ONLY
/* core-only builds (cross builds) have no program, and no cJSON to read its output */
static void check_cli(const char *path) { printf("test_gguf: core-only build, skipping the edgespec info check\n"); }
#else
static void check_cli(const char *path) {
    const char *bin = getenv("ES_BIN");
    /* CTest sets ES_BIN; without it the check cannot run, and that is a failure, not a pass */
    CHECK_MSG(bin && access(bin, X_OK) == 0, "ES_BIN (the edgespec program) is not set or not executable: '%s'", bin ? bin : "");
    if (!bin || access(bin, X_OK) != 0) return;
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' info '%s' --json", bin, path);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return;
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    size_t got;
    while ((got = fread(out + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 == cap) out = realloc(out, cap *= 2);
    }
    out[n] = 0;
    CHECK(pclose(p) == 0);
    cJSON *j = cJSON_Parse(out);
    CHECK_MSG(j != NULL, "not JSON: %.200s", out);
    if (j) {
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "version")) == 3);
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "alignment")) == 64);
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "n_tensors")) == N_TENSORS);
        cJSON *md = cJSON_GetObjectItem(j, "metadata");
        CHECK(cJSON_IsObject(md));
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(md, "t.u32")) == 3735928559.0);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(md, "t.bool")));
        const char *arch = cJSON_GetStringValue(cJSON_GetObjectItem(md, "general.architecture"));
        CHECK(arch && strcmp(arch, "llama") == 0);
        cJSON *lng = cJSON_GetObjectItem(md, "arr.long");
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(lng, "count")) == 512);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(lng, "head")) == 8);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(md, "arr.u16")) == 3);
        cJSON *ts = cJSON_GetObjectItem(j, "tensors");
        CHECK(cJSON_GetArraySize(ts) == (int)N_TENSORS);
        cJSON *t2 = cJSON_GetArrayItem(ts, 2);
        const char *ty = cJSON_GetStringValue(cJSON_GetObjectItem(t2, "type"));
        CHECK(ty && strcmp(ty, "q8_0") == 0);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(t2, "shape")) == 3);
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(t2, "bytes")) == 2 * 34 * 2 * 2);
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "n_params")) == 24 + 32 + 256 + 96 + 5 + 24);
        cJSON_Delete(j);
    }
    free(out);
    /* a bad file: exit 1 and the path in the message */
    snprintf(cmd, sizeof cmd, "'%s' info /nonexistent/x.gguf 2>&1", bin);
    p = popen(cmd, "r");
    char line[512] = {0};
    if (p) {
        if (!fgets(line, sizeof line, p)) line[0] = 0;
        int rc = pclose(p);
        CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    }
    CHECK_MSG(strstr(line, "edgespec info: /nonexistent/x.gguf: ") == line, "'%s'", line);
}
#endif

static void test_round_trip(void) {
    uint8_t *direct[N_TENSORS];
    es_gguf_writer *w = es_gguf_writer_init();
    CHECK(w != NULL);
    build_writer(w, direct);
    const char *path = es_test_tmp("gguf_roundtrip.gguf");
    es_err err = {{0}};
    prog pr = {0, 0.0, true, true};
    CHECK_OK(es_gguf_write(w, path, on_progress, &pr, &err), &err);
    CHECK(pr.calls >= 2 && pr.monotonic && pr.labelled && pr.last == 1.0);

    es_gguf *g = NULL;
    CHECK_OK(es_gguf_open(path, &g, &err), &err);
    if (g) {
        check_read(g, direct);
        check_format(g);

        /* copy_kv keeps every key with its type and value */
        es_gguf_writer *w2 = es_gguf_writer_init();
        CHECK(es_gguf_copy_kv(w2, g) == ES_OK);
        const char *path2 = es_test_tmp("gguf_copy.gguf");
        CHECK_OK(es_gguf_write(w2, path2, NULL, NULL, &err), &err);
        es_gguf_writer_free(w2);
        es_gguf *g2 = NULL;
        CHECK_OK(es_gguf_open(path2, &g2, &err), &err);
        if (g2) {
            CHECK(es_gguf_n_kv(g2) == es_gguf_n_kv(g) && es_gguf_alignment(g2) == 64);
            for (int64_t i = 0; i < es_gguf_n_kv(g); i++) {
                char a[512], b[512];
                const char *key = es_gguf_kv_key(g, i);
                int64_t j = es_gguf_find_kv(g2, key);
                CHECK_MSG(j >= 0 && es_gguf_kv_type(g2, j) == es_gguf_kv_type(g, i), "copy %s", key);
                if (j < 0) continue;
                es_gguf_kv_format(g, i, a, sizeof a);
                es_gguf_kv_format(g2, j, b, sizeof b);
                CHECK_MSG(strcmp(a, b) == 0, "copy %s: '%s' vs '%s'", key, a, b);
            }
            for (size_t i = 0; i < N_ARRS; i++)
                CHECK(memcmp(es_gguf_arr_data(g2, k_arrs[i].key), k_arrs[i].data, 3 * k_arrs[i].esize) == 0);
            size_t l2;
            const char *s2 = es_gguf_arr_str(g2, "tokenizer.ggml.tokens", 2, &l2);
            CHECK(s2 && l2 == 3 && memcmp(s2, "a\0b", 3) == 0);
            es_gguf_free(g2);
        }
        es_gguf_free(g);
    }

    /* the same bytes through open_buffer */
    size_t len = 0;
    char *bytes = es_test_read_file(path, &len);
    CHECK(bytes != NULL);
    if (bytes) {
        es_gguf *gb = NULL;
        CHECK_OK(es_gguf_open_buffer(bytes, len, &gb, &err), &err);
        if (gb) {
            check_read(gb, direct);
            CHECK(es_gguf_find_tensor(gb, "tok_embd.weight")->data == bytes + es_gguf_data_offset(gb));
            es_gguf_free(gb);
        }
        free(bytes);
    }
    check_cli(path);

    for (size_t i = 0; i < N_TENSORS; i++) free(direct[i]);
    es_gguf_writer_free(w);
}

static void test_writer_errors(void) {
    es_err err = {{0}};
    const char *path = es_test_tmp("gguf_fail.gguf");
    int64_t ne[1] = {32};
    fill_ud ok = {1, 0};

    es_gguf_writer *w = es_gguf_writer_init();
    CHECK(es_gguf_add_tensor_fill(w, "a", ES_TYPE_F32, 1, ne, fill_pattern, &ok) == ES_OK);
    CHECK(es_gguf_add_tensor_fill(w, "b", ES_TYPE_F32, 1, ne, fill_fail, NULL) == ES_OK);
    CHECK(es_gguf_write(w, path, NULL, NULL, &err) == ES_ERR_IO);
    CHECK_MSG(strstr(err.msg, "tensor 'b'") && strstr(err.msg, "source went away"), "'%s'", err.msg);
    CHECK_MSG(access(path, F_OK) != 0, "partial file left behind");
    es_gguf_writer_free(w);

    const uint32_t bad[] = {0, 3, 1u << 21};
    for (size_t i = 0; i < 3; i++) {
        w = es_gguf_writer_init();
        CHECK(es_gguf_set_u32(w, "general.alignment", bad[i]) == ES_OK);
        CHECK(es_gguf_write(w, path, NULL, NULL, &err) == ES_ERR_INVALID_ARG);
        CHECK(strstr(err.msg, "power of two") != NULL);
        es_gguf_writer_free(w);
    }
    w = es_gguf_writer_init();
    CHECK(es_gguf_set_u64(w, "general.alignment", 64) == ES_OK);
    CHECK(es_gguf_write(w, path, NULL, NULL, &err) == ES_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "uint32") != NULL);
    es_gguf_writer_free(w);

    w = es_gguf_writer_init();
    CHECK(es_gguf_write(w, "/nonexistent-dir/x.gguf", NULL, NULL, &err) == ES_ERR_IO);
    CHECK(strstr(err.msg, "cannot create") != NULL);
    es_gguf_writer_free(w);
    es_gguf_writer_free(NULL);

    /* open: a missing file, a directory, an empty file, a truncated file */
    es_gguf *g = (es_gguf *)&err;
    CHECK(es_gguf_open("/nonexistent/model.gguf", &g, &err) == ES_ERR_IO && g == NULL);
    CHECK(strstr(err.msg, "No such file") != NULL);
    CHECK(es_gguf_open("/", &g, &err) == ES_ERR_IO);
    FILE *f = fopen(path, "wb");
    fclose(f);
    CHECK(es_gguf_open(path, &g, &err) == ES_ERR_FORMAT && strstr(err.msg, "empty"));
    f = fopen(path, "wb");
    fwrite("GGUF\3\0\0\0\1\0", 1, 10, f);
    fclose(f);
    CHECK(es_gguf_open(path, &g, &err) == ES_ERR_FORMAT && strstr(err.msg, "truncated"));
    remove(path);
}

/* Every proper prefix of a small valid file is rejected; random byte damage never crashes. */
static void test_truncation_and_damage(void) {
    es_gguf_writer *w = es_gguf_writer_init();
    CHECK(es_gguf_set_str(w, "general.architecture", "llama") == ES_OK);
    CHECK(es_gguf_set_u32(w, "llama.block_count", 2) == ES_OK);
    const char *toks[] = {"a", "bc", "def"};
    CHECK(es_gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3) == ES_OK);
    float sc[3] = {0.5f, 1.5f, -2};
    CHECK(es_gguf_set_arr(w, "tokenizer.ggml.scores", ES_GGUF_FLOAT32, sc, 3) == ES_OK);
    /* tensor sizes are multiples of the alignment, so the file ends exactly at the last byte of data */
    int64_t ne_a[2] = {8, 2}, ne_b[1] = {16};
    uint8_t da[64], db[32];
    pattern(da, 64, 1);
    pattern(db, 32, 2);
    CHECK(es_gguf_add_tensor(w, "a", ES_TYPE_F32, 2, ne_a, da) == ES_OK);
    CHECK(es_gguf_add_tensor(w, "b", ES_TYPE_F16, 1, ne_b, db) == ES_OK);
    const char *path = es_test_tmp("gguf_small.gguf");
    es_err err = {{0}};
    CHECK_OK(es_gguf_write(w, path, NULL, NULL, &err), &err);
    es_gguf_writer_free(w);
    size_t len = 0;
    uint8_t *file = (uint8_t *)es_test_read_file(path, &len);
    CHECK(file != NULL && len > 100);
    if (!file) return;

    CHECK(parse_copy(file, len, &err) == ES_OK);
    int bad = 0;
    for (size_t n = 0; n < len; n++) {
        es_status st = parse_copy(file, n, &err);
        if (st != ES_ERR_FORMAT) {
            bad++;
            fprintf(stderr, "prefix %zu of %zu: %s\n", n, len, es_status_str(st));
        }
    }
    CHECK_MSG(bad == 0, "%d prefixes not rejected", bad);

    /* random damage: 1-4 bytes overwritten; must parse or fail cleanly */
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    uint8_t *copy = malloc(len);
    int ok = 0, rejected = 0;
    for (int it = 0; it < 4000; it++) {
        memcpy(copy, file, len);
        int k = 1 + (int)(rng % 4);
        for (int j = 0; j < k; j++) {
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            size_t at = (size_t)(rng % len);
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            copy[at] = (it & 1) ? (uint8_t)rng : (uint8_t)(copy[at] ^ (1u << (rng % 8)));
        }
        es_status st = parse_copy(copy, len, &err);
        if (st == ES_OK) ok++;
        else if (st == ES_ERR_FORMAT || st == ES_ERR_UNSUPPORTED) rejected++;
        else CHECK_MSG(false, "damage: unexpected %s: %s", es_status_str(st), err.msg);
    }
    CHECK(ok > 0 && rejected > 0);
    free(copy);
    free(file);
}

/* The converted test models (the models fixture makes them) open and carry what a loader needs. */
static void test_models(void) {
    const char *names[] = {"stories260K.gguf", "stories260K-q8_0.gguf", "tinystories656k.gguf"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *path = es_test_model(names[i]);
        /* the models fixture makes them before any test runs: missing means it failed */
        CHECK_MSG(access(path, R_OK) == 0, "%s not found (the models_setup fixture converts it)", path);
        if (access(path, R_OK) != 0) continue;
        es_gguf *g = NULL;
        es_err err = {{0}};
        CHECK_OK(es_gguf_open(path, &g, &err), &err);
        if (!g) continue;
        const char *arch;
        size_t len;
        es_gguf_vtype et;
        uint64_t n;
        CHECK(es_gguf_get_str(g, "general.architecture", &arch, &len));
        CHECK(es_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) && et == ES_GGUF_STRING && n > 0);
        CHECK(es_gguf_n_tensors(g) > 0);
        CHECK(es_gguf_find_tensor(g, "token_embd.weight") != NULL);
        es_gguf_free(g);
    }
}

int main(void) {
    test_corruption();
    test_models();
    test_round_trip();
    test_writer_errors();
    test_truncation_and_damage();
    return es_test_finish("test_gguf");
}
