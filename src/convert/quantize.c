/* quantize.c — rewrites the weight matrices of a GGUF in another type, keeping all metadata.
 *
 * A weight matrix is a 2-D tensor whose name ends in ".weight" and is not a norm. Each is converted
 * row by row (dequantised through its type's to_float first when the source is quantised); a matrix
 * whose rows are not whole blocks of the target type stays (or becomes) F32. Everything else is
 * copied byte for byte from the input mapping. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert/convert_impl.h"
#include "kernels/types.h"
#include "util/err.h"

typedef struct q_src {
    const es_gguf_tensor *t;
    const es_type_traits *tr;
    size_t row_bytes;
} q_src;

static es_status q_row(void *ud, int64_t row, float *dst, es_err *err) {
    const q_src *s = ud;
    s->tr->to_float((const uint8_t *)s->t->data + (size_t)row * s->row_bytes, dst, s->t->ne[0]);
    return ES_OK;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static bool same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

es_status es_quantize(const char *in_path, const char *out_path, uint32_t type, const es_convert_opts *opts_in, es_err *err) {
    const es_convert_opts opts = opts_in ? *opts_in : es_convert_default_opts();
    if (!in_path || !out_path) return es_fail(err, ES_ERR_INVALID_ARG, "missing path");
    if (!es_convert_type_ok(type))
        return es_fail(err, ES_ERR_INVALID_ARG, "cannot write weights as %s (f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m)",
                       es_convert_type_name(type));
    if (same_file(in_path, out_path)) return es_fail(err, ES_ERR_INVALID_ARG, "input and output are the same file: %s", in_path);

    es_gguf *g = NULL;
    es_status st = es_gguf_open(in_path, &g, err);
    if (st != ES_OK) {
        es_err_prefix(err, in_path);
        return st;
    }
    es_gguf_writer *w = es_gguf_writer_init();
    es_plan plan;
    es_plan_init(&plan, opts.n_threads, opts.log, opts.ud);
    int64_t n_converted = 0;
    if (!w) {
        st = es_fail(err, ES_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = es_gguf_copy_kv(w, g)) != ES_OK) {
        st = es_fail(err, st, "copying the metadata of %s failed", in_path);
        goto done;
    }
    if (opts.name && (st = es_gguf_set_str(w, "general.name", opts.name)) != ES_OK) {
        st = es_fail(err, st, "writing general.name failed");
        goto done;
    }
    if ((st = es_write_file_type(w, type, err)) != ES_OK) goto done;
    /* what the Q4_K_M rule needs: the layer count (from the blk.N tensor names) and whether the
     * token embedding doubles as the classifier */
    plan.tied_output = true;
    for (int64_t i = 0; i < es_gguf_n_tensors(g); i++) {
        const char *name = es_gguf_tensor_at(g, i)->name;
        int layer = -1;
        if (sscanf(name, "blk.%d.", &layer) == 1 && layer >= 0 && layer < 65536 && layer >= plan.n_layers)
            plan.n_layers = layer + 1;
        if (!strcmp(name, "output.weight")) plan.tied_output = false;
    }

    for (int64_t i = 0; i < es_gguf_n_tensors(g); i++) {
        const es_gguf_tensor *t = es_gguf_tensor_at(g, i);
        const bool matrix = t->n_dims == 2 && ends_with(t->name, ".weight") && !strstr(t->name, "norm");
        uint32_t target = t->type;
        if (matrix) {
            target = es_matrix_type(&plan, type, t->name, t->ne[0]);
        }
        if (target == t->type) {
            if ((st = es_plan_add_bytes(&plan, t->name, t->type, t->n_dims, t->ne, t->data, err)) != ES_OK) goto done;
            continue;
        }
        const es_type_traits *tr = es_type_get(t->type);
        if (!tr || !tr->to_float) {
            st = es_fail(err, ES_ERR_UNSUPPORTED, "%s: tensor %s has type %s, which cannot be converted", in_path, t->name,
                         es_type_name(t->type));
            goto done;
        }
        q_src *s = malloc(sizeof *s);
        if (!s) {
            st = es_fail(err, ES_ERR_NOMEM, "out of memory");
            goto done;
        }
        *s = (q_src){.t = t, .tr = tr, .row_bytes = es_row_size(t->type, t->ne[0])};
        if ((st = es_plan_add_rows(&plan, t->name, target, t->n_dims, t->ne, q_row, s, true, err)) != ES_OK) goto done;
        n_converted++;
    }
    if ((st = es_plan_write(&plan, w, out_path, opts.progress, opts.ud, err)) != ES_OK) goto done;
    if (opts.stats) {
        memset(opts.stats, 0, sizeof *opts.stats);
        opts.stats->n_tensors = plan.n;
        opts.stats->n_converted = n_converted;
        opts.stats->n_kept_f32 = plan.n_kept_f32;
        opts.stats->n_params = es_plan_n_params(&plan);
        opts.stats->bytes_in = es_gguf_file_size(g);
        opts.stats->bytes_out = es_file_size_of(out_path);
    }
done:
    es_plan_free(&plan);
    if (w) es_gguf_writer_free(w);
    es_gguf_free(g);
    return st;
}
