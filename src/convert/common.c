/* common.c — file mapping, output plans (row sources converted at write time, in parallel), and the
 * small metadata helpers every converter needs. */
#include "convert/convert_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/types.h"
#include "util/err.h"

es_convert_opts es_convert_default_opts(void) {
    es_convert_opts o;
    memset(&o, 0, sizeof o);
    o.out_type = ES_TYPE_F32;
    return o;
}

int es_convert_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 8) n = 8;
    return (int)n;
}

const char *es_path_stem(const char *path, char *buf, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    /* a directory path given with a trailing slash: use the last component */
    if (n == 0) {
        size_t len = strlen(path);
        while (len > 1 && path[len - 1] == '/') len--;
        const char *b = path;
        for (size_t i = 0; i < len; i++)
            if (path[i] == '/' && i + 1 < len) b = path + i + 1;
        n = (size_t)(path + len - b);
        base = b;
    }
    const char *dot = memchr(base, '.', n);
    if (dot && dot != base) n = (size_t)(dot - base);
    if (n >= cap) n = cap - 1;
    memcpy(buf, base, n);
    buf[n] = 0;
    return buf;
}

/* ---- mapping ---- */

es_status es_map_file(const char *path, es_mapped *m, es_err *err) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return es_fail(err, ES_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return es_fail(err, ES_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return es_fail(err, ES_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return ES_OK;
    }
    void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return es_fail(err, ES_ERR_IO, "%s: cannot map: %s", path, strerror(e));
    m->data = p;
    m->size = (size_t)sb.st_size;
    return ES_OK;
}

es_status es_read_small_file(const char *path, size_t max, char **out, size_t *len, es_err *err) {
    *out = NULL;
    es_mapped m;
    es_status st = es_map_file(path, &m, err);
    if (st != ES_OK) return st;
    if (m.size > max) {
        es_unmap_file(&m);
        return es_fail(err, ES_ERR_FORMAT, "%s: %zu bytes is too large (at most %zu)", path, m.size, max);
    }
    char *buf = malloc(m.size + 1);
    if (!buf) {
        es_unmap_file(&m);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    if (m.size) memcpy(buf, m.data, m.size);
    buf[m.size] = 0;
    if (len) *len = m.size;
    es_unmap_file(&m);
    *out = buf;
    return ES_OK;
}

uint64_t es_file_size_of(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && sb.st_size > 0 ? (uint64_t)sb.st_size : 0;
}

void es_unmap_file(es_mapped *m) {
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

/* ---- types ---- */

bool es_convert_type_ok(uint32_t type) {
    return type == ES_TYPE_F32 || type == ES_TYPE_F16 || type == ES_TYPE_BF16 || type == ES_TYPE_Q8_0 ||
           type == ES_TYPE_Q4_0 || type == ES_TYPE_Q4_K || type == ES_TYPE_Q5_K || type == ES_TYPE_Q6_K ||
           type == ES_MIX_Q4_K_M;
}

int es_convert_type_from_name(const char *name) {
    if (name && !strcasecmp(name, "q4_k_m")) return (int)ES_MIX_Q4_K_M;
    return es_type_from_name(name);
}

const char *es_convert_type_name(uint32_t type) { return type == ES_MIX_Q4_K_M ? "q4_k_m" : es_type_name(type); }

uint32_t es_file_type_of(uint32_t type) {
    switch (type) {
    case ES_TYPE_F16: return 1;  /* LLAMA_FTYPE_MOSTLY_F16 */
    case ES_TYPE_Q4_0: return 2; /* LLAMA_FTYPE_MOSTLY_Q4_0 */
    case ES_TYPE_Q8_0: return 7; /* LLAMA_FTYPE_MOSTLY_Q8_0 */
    case ES_TYPE_BF16: return 32; /* LLAMA_FTYPE_MOSTLY_BF16 */
    case ES_TYPE_Q4_K: return 14; /* LLAMA_FTYPE_MOSTLY_Q4_K_S: all matrices Q4_K */
    case ES_TYPE_Q5_K: return 16; /* LLAMA_FTYPE_MOSTLY_Q5_K_S */
    case ES_TYPE_Q6_K: return 18; /* LLAMA_FTYPE_MOSTLY_Q6_K */
    case ES_MIX_Q4_K_M: return 15; /* LLAMA_FTYPE_MOSTLY_Q4_K_M */
    default: return 0;           /* LLAMA_FTYPE_ALL_F32 */
    }
}

es_status es_write_file_type(es_gguf_writer *w, uint32_t type, es_err *err) {
    es_status st = es_gguf_set_u32(w, "general.file_type", es_file_type_of(type));
    if (st == ES_OK && es_file_type_of(type) != 0 && type != ES_TYPE_F16 && type != ES_TYPE_BF16)
        st = es_gguf_set_u32(w, "general.quantization_version", 2);
    if (st != ES_OK) return es_fail(err, st, "writing general.file_type failed");
    return ES_OK;
}

/* ---- plans ---- */

void es_plan_init(es_plan *p, int n_threads, es_log_fn log, void *ud) {
    memset(p, 0, sizeof *p);
    p->n_threads = n_threads > 0 ? n_threads : es_convert_default_threads();
    p->log = log;
    p->ud = ud;
}

void es_plan_free(es_plan *p) {
    for (int i = 0; i < p->n; i++) {
        free(p->t[i].name);
        if (p->t[i].own_ud) free(p->t[i].ud);
    }
    free(p->t);
    memset(p, 0, sizeof *p);
}

static es_status plan_push(es_plan *p, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                           es_plan_tensor **out, es_err *err) {
    if (n_dims < 1 || n_dims > ES_GGUF_MAX_DIMS) return es_fail(err, ES_ERR_INTERNAL, "%s: bad dimension count", name);
    if (!es_type_get(type)) return es_fail(err, ES_ERR_INTERNAL, "%s: bad type", name);
    for (int i = 0; i < n_dims; i++)
        if (ne[i] <= 0) return es_fail(err, ES_ERR_INTERNAL, "%s: bad shape", name);
    if (es_row_size(type, ne[0]) == 0)
        return es_fail(err, ES_ERR_INTERNAL, "%s: rows of %lld do not fit type %s", name, (long long)ne[0], es_type_name(type));
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        es_plan_tensor *t = realloc(p->t, (size_t)cap * sizeof *t);
        if (!t) return es_fail(err, ES_ERR_NOMEM, "out of memory");
        p->t = t;
        p->cap = cap;
    }
    es_plan_tensor *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    t->type = type;
    t->n_dims = n_dims;
    for (int i = 0; i < ES_GGUF_MAX_DIMS; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
    t->n_threads = p->n_threads;
    p->n++;
    *out = t;
    return ES_OK;
}

es_status es_plan_add_rows(es_plan *p, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                           es_row_fn row, void *ud, bool own_ud, es_err *err) {
    es_plan_tensor *t;
    const es_type_traits *tr = es_type_get(type);
    es_status st = tr && tr->from_float ? plan_push(p, name, type, n_dims, ne, &t, err)
                                        : es_fail(err, ES_ERR_INTERNAL, "%s: cannot produce type %s", name, es_type_name(type));
    if (st != ES_OK) {
        if (own_ud) free(ud);
        return st;
    }
    t->row = row;
    t->ud = ud;
    t->own_ud = own_ud;
    return ES_OK;
}

es_status es_plan_add_bytes(es_plan *p, const char *name, uint32_t type, int n_dims, const int64_t *ne,
                            const void *bytes, es_err *err) {
    es_plan_tensor *t;
    es_status st = plan_push(p, name, type, n_dims, ne, &t, err);
    if (st != ES_OK) return st;
    t->bytes = bytes;
    return ES_OK;
}

uint64_t es_plan_n_params(const es_plan *p) {
    uint64_t n = 0;
    for (int i = 0; i < p->n; i++) n += (uint64_t)(p->t[i].ne[0] * p->t[i].ne[1] * p->t[i].ne[2] * p->t[i].ne[3]);
    return n;
}

/* llama.cpp's "more bits" layers of Q4_K_M: the first and last eighth, and every third between. */
static bool more_bits_layer(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* The type the ES_MIX_Q4_K_M rule gives a matrix (before the row-length fallback). */
static uint32_t q4_k_m_type(const es_plan *p, const char *name) {
    if (!strcmp(name, "output.weight") || (p->tied_output && !strcmp(name, "token_embd.weight"))) return ES_TYPE_Q6_K;
    int layer = -1, len = 0;
    if (sscanf(name, "blk.%d.%n", &layer, &len) == 1 && len > 0 && layer >= 0 && p->n_layers > 0 &&
        (!strcmp(name + len, "attn_v.weight") || !strcmp(name + len, "ffn_down.weight")) &&
        more_bits_layer(layer, p->n_layers))
        return ES_TYPE_Q6_K;
    return ES_TYPE_Q4_K;
}

/* A K-quant needs rows of whole 256-element super-blocks; the 32-block type that stands in for it
 * otherwise: Q4_0 for Q4_K (the same 4.5 bits per weight), Q8_0 for Q5_K and Q6_K (no 5- or
 * 6-bit 32-block type is implemented; Q8_0 keeps at least their precision). */
static uint32_t kquant_fallback(uint32_t type) {
    switch (type) {
    case ES_TYPE_Q4_K: return ES_TYPE_Q4_0;
    case ES_TYPE_Q5_K:
    case ES_TYPE_Q6_K: return ES_TYPE_Q8_0;
    default: return type;
    }
}

uint32_t es_matrix_type(es_plan *p, uint32_t want, const char *name, int64_t ne0) {
    if (want == ES_MIX_Q4_K_M) want = q4_k_m_type(p, name);
    const es_type_traits *tr = es_type_get(want);
    if (!tr || ne0 % tr->blck_size == 0) return want;
    const uint32_t fb = kquant_fallback(want);
    const es_type_traits *ftr = es_type_get(fb);
    const uint32_t got = fb != want && ne0 % ftr->blck_size == 0 ? fb : ES_TYPE_F32;
    if (p->n_kept_f32++ == 0) {
        snprintf(p->kept_example, sizeof p->kept_example, "%s", name);
        snprintf(p->kept_type, sizeof p->kept_type, "%s", tr->name);
    }
    es_convert_logf(p->log, p->ud, 3, "%s: rows of %lld are not a multiple of %s's block of %lld: written as %s", name,
                    (long long)ne0, tr->name, (long long)tr->blck_size, es_type_name(got));
    return got;
}

/* One thread's share of a tensor fill: rows [lo, hi). */
typedef struct fill_job {
    const es_plan_tensor *t;
    uint8_t *dst;
    size_t row_bytes;
    int64_t lo, hi;
    es_status st;
    es_err err;
} fill_job;

static void *fill_rows(void *arg) {
    fill_job *j = arg;
    const es_plan_tensor *t = j->t;
    const es_type_traits *tr = es_type_get(t->type);
    float *buf = malloc((size_t)t->ne[0] * sizeof(float));
    if (!buf) {
        j->st = es_fail(&j->err, ES_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int64_t r = j->lo; r < j->hi; r++) {
        es_status st = t->row(t->ud, r, buf, &j->err);
        if (st != ES_OK) {
            j->st = st;
            break;
        }
        tr->from_float(buf, j->dst + (size_t)r * j->row_bytes, t->ne[0]);
    }
    free(buf);
    return NULL;
}

/* es_gguf_fill_fn for a row-source tensor: splits the rows over up to t->n_threads threads. */
static es_status plan_fill(void *ud, void *dst, uint64_t nbytes, es_err *err) {
    const es_plan_tensor *t = ud;
    const int64_t nrows = t->ne[1] * t->ne[2] * t->ne[3];
    const size_t row_bytes = es_row_size(t->type, t->ne[0]);
    if ((uint64_t)nrows * row_bytes != nbytes)
        return es_fail(err, ES_ERR_INTERNAL, "%s: writer asked for %llu bytes, tensor has %llu", t->name,
                       (unsigned long long)nbytes, (unsigned long long)((uint64_t)nrows * row_bytes));
    int nth = t->n_threads;
    const int64_t min_rows_per_thread = 4, work = nrows * t->ne[0];
    if (work < (1 << 18)) nth = 1;
    if (nth > nrows / min_rows_per_thread) nth = (int)(nrows / min_rows_per_thread);
    if (nth < 1) nth = 1;
    if (nth > 64) nth = 64;
    fill_job jobs[64];
    pthread_t tids[64];
    bool started[64] = {false};
    for (int i = 0; i < nth; i++) {
        jobs[i] = (fill_job){.t = t, .dst = dst, .row_bytes = row_bytes, .st = ES_OK};
        jobs[i].err.msg[0] = 0;
        jobs[i].lo = nrows * i / nth;
        jobs[i].hi = nrows * (i + 1) / nth;
    }
    for (int i = 1; i < nth; i++) started[i] = pthread_create(&tids[i], NULL, fill_rows, &jobs[i]) == 0;
    fill_rows(&jobs[0]);
    for (int i = 1; i < nth; i++) {
        if (started[i]) pthread_join(tids[i], NULL);
        else fill_rows(&jobs[i]); /* could not start a thread: do its share here */
    }
    for (int i = 0; i < nth; i++)
        if (jobs[i].st != ES_OK) {
            if (err) memcpy(err->msg, jobs[i].err.msg, sizeof err->msg);
            return jobs[i].st;
        }
    return ES_OK;
}

es_status es_plan_write(es_plan *p, es_gguf_writer *w, const char *path, es_progress_fn progress, void *pud,
                        es_err *err) {
    if (p->n_kept_f32)
        es_convert_logf(p->log, p->ud, 2, "%d weight matrices kept as f32 or a 32-block type: their rows are not whole %s blocks (e.g. %s)",
                        p->n_kept_f32, p->kept_type, p->kept_example);
    for (int i = 0; i < p->n; i++) {
        es_plan_tensor *t = &p->t[i];
        es_status st = t->bytes ? es_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->bytes)
                                : es_gguf_add_tensor_fill(w, t->name, t->type, t->n_dims, t->ne, plan_fill, t);
        if (st != ES_OK) return es_fail(err, st, "adding tensor %s to the output failed", t->name);
    }
    return es_gguf_write(w, path, progress, pud, err);
}

/* ---- metadata copy ---- */

es_status es_copy_kv_one(es_gguf_writer *w, const es_gguf *g, int64_t i, es_err *err) {
    const char *key = es_gguf_kv_key(g, i);
    es_gguf_vtype vt = es_gguf_kv_type(g, i);
    es_status st = ES_OK;
    int64_t iv;
    switch (vt) {
    case ES_GGUF_UINT8:
    case ES_GGUF_UINT16:
    case ES_GGUF_UINT32:
        if (!es_gguf_get_i64(g, key, &iv)) goto bad;
        st = es_gguf_set_u32(w, key, (uint32_t)iv);
        break;
    case ES_GGUF_INT8:
    case ES_GGUF_INT16:
    case ES_GGUF_INT32:
        if (!es_gguf_get_i64(g, key, &iv)) goto bad;
        st = es_gguf_set_i32(w, key, (int32_t)iv);
        break;
    case ES_GGUF_UINT64:
    case ES_GGUF_INT64:
        if (!es_gguf_get_i64(g, key, &iv) || iv < 0) goto bad;
        st = es_gguf_set_u64(w, key, (uint64_t)iv);
        break;
    case ES_GGUF_FLOAT32:
    case ES_GGUF_FLOAT64: {
        float f;
        if (!es_gguf_get_f32(g, key, &f)) goto bad;
        st = es_gguf_set_f32(w, key, f);
        break;
    }
    case ES_GGUF_BOOL: {
        bool b;
        if (!es_gguf_get_bool(g, key, &b)) goto bad;
        st = es_gguf_set_bool(w, key, b);
        break;
    }
    case ES_GGUF_STRING: {
        const char *s;
        size_t len;
        if (!es_gguf_get_str(g, key, &s, &len)) goto bad;
        st = es_gguf_set_str(w, key, s);
        break;
    }
    case ES_GGUF_ARRAY: {
        es_gguf_vtype et;
        uint64_t n;
        if (!es_gguf_get_arr(g, key, &et, &n)) goto bad;
        if (et == ES_GGUF_STRING) {
            if (n > SIZE_MAX / sizeof(char *)) goto bad;
            const char **strs = malloc((size_t)(n ? n : 1) * sizeof *strs);
            size_t *lens = malloc((size_t)(n ? n : 1) * sizeof *lens);
            if (!strs || !lens) {
                free(strs);
                free(lens);
                return es_fail(err, ES_ERR_NOMEM, "out of memory copying %s", key);
            }
            for (uint64_t k = 0; k < n; k++) {
                strs[k] = es_gguf_arr_str(g, key, k, &lens[k]);
                if (!strs[k]) {
                    free(strs);
                    free(lens);
                    goto bad;
                }
            }
            st = es_gguf_set_arr_str(w, key, strs, lens, n);
            free(strs);
            free(lens);
        } else if (et == ES_GGUF_ARRAY) {
            return es_fail(err, ES_ERR_UNSUPPORTED, "metadata key %s: nested arrays are not supported", key);
        } else {
            const void *data = es_gguf_arr_data(g, key);
            if (!data && n) goto bad;
            st = es_gguf_set_arr(w, key, et, data, n);
        }
        break;
    }
    default:
        goto bad;
    }
    if (st != ES_OK) return es_fail(err, st, "copying metadata key %s failed", key);
    return ES_OK;
bad:
    return es_fail(err, ES_ERR_FORMAT, "metadata key %s: cannot read its value", key ? key : "?");
}

es_status es_copy_kv_prefix(es_gguf_writer *w, const es_gguf *g, const char *prefix, es_err *err) {
    const size_t n = strlen(prefix);
    for (int64_t i = 0; i < es_gguf_n_kv(g); i++) {
        const char *key = es_gguf_kv_key(g, i);
        if (!key || strncmp(key, prefix, n) != 0) continue;
        es_status st = es_copy_kv_one(w, g, i, err);
        if (st != ES_OK) return st;
    }
    return ES_OK;
}

es_status es_convert_writer_begin(const es_hparams *hp, const char *name, const char *src_path, uint32_t out_type,
                                  const es_vocab_spec *vocab, es_gguf_writer **out, es_err *err) {
    *out = NULL;
    es_gguf_writer *w = es_gguf_writer_init();
    if (!w) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    char stem[128];
    es_status st;
    if ((st = es_hparams_to_gguf(hp, w, err)) != ES_OK) goto fail;
    if ((st = es_gguf_set_str(w, "general.name", name ? name : es_path_stem(src_path, stem, sizeof stem))) != ES_OK) {
        st = es_fail(err, st, "writing general.name failed");
        goto fail;
    }
    if ((st = es_write_file_type(w, out_type, err)) != ES_OK) goto fail;
    if ((st = es_vocab_write_gguf(vocab, w, err)) != ES_OK) goto fail;
    *out = w;
    return ES_OK;
fail:
    es_gguf_writer_free(w);
    return st;
}
