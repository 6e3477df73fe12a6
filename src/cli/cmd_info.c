/* cmd_info.c — `edgespec info MODEL.gguf [--json] [--no-tensors]`: a GGUF file's header, metadata and
 * tensor table, as text or as one JSON object. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "gguf/gguf.h"
#include "kernels/types.h"

static const char k_usage[] = "edgespec info MODEL.gguf [--json] [--no-tensors]";

/* JSON arrays longer than this are summarised as {"type", "count", "head": [first JSON_HEAD]}. */
#define JSON_ARRAY_MAX 16
#define JSON_HEAD 8

static void print_help(void) {
    printf("usage: %s\n\n"
           "Prints a GGUF file's version, alignment, data offset and size, every metadata key/value and\n"
           "the tensor table (name, type, shape, offset, bytes) with totals.\n\n"
           "options:\n"
           "  --json         print one JSON object instead of text\n"
           "  --no-tensors   leave out the tensor table (totals are still printed)\n"
           "  -h, --help     show this help\n",
           k_usage);
}

/* A float32 as the double nearest its shortest decimal form, so JSON shows 0.1 rather than
 * 0.10000000149011612. */
static double f32_shortest(double d) {
    char tmp[40];
    for (int p = 1; p <= 9; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, d);
        if (strtof(tmp, NULL) == (float)d) return strtod(tmp, NULL);
    }
    return d;
}

static cJSON *json_string(const char *s, size_t len) {
    char *c = cli_utf8_clean(s, len);
    cJSON *j = cJSON_CreateString(c ? c : "");
    free(c);
    return j;
}

/* Element i of array `key` (numeric, bool or string) as JSON. */
static cJSON *json_elem(const es_gguf *g, const char *key, es_gguf_vtype elem, uint64_t i) {
    if (elem == ES_GGUF_STRING) {
        size_t len = 0;
        const char *s = es_gguf_arr_str(g, key, i, &len);
        return json_string(s ? s : "", s ? len : 0);
    }
    double d = 0;
    es_gguf_arr_f64(g, key, i, &d);
    if (elem == ES_GGUF_BOOL) return cJSON_CreateBool(d != 0);
    return cJSON_CreateNumber(elem == ES_GGUF_FLOAT32 ? f32_shortest(d) : d);
}

/* The value of key/value i as JSON (see the header comment for arrays). */
static cJSON *json_value(const es_gguf *g, int64_t i) {
    const char *key = es_gguf_kv_key(g, i);
    switch (es_gguf_kv_type(g, i)) {
    case ES_GGUF_STRING: {
        const char *s;
        size_t len;
        es_gguf_get_str(g, key, &s, &len);
        return json_string(s, len);
    }
    case ES_GGUF_BOOL: {
        bool b = false;
        es_gguf_get_bool(g, key, &b);
        return cJSON_CreateBool(b);
    }
    case ES_GGUF_FLOAT32: case ES_GGUF_FLOAT64: {
        double d = 0;
        es_gguf_get_f64(g, key, &d);
        return cJSON_CreateNumber(es_gguf_kv_type(g, i) == ES_GGUF_FLOAT32 ? f32_shortest(d) : d);
    }
    case ES_GGUF_ARRAY: {
        es_gguf_vtype elem;
        uint64_t n;
        es_gguf_get_arr(g, key, &elem, &n);
        cJSON *arr = cJSON_CreateArray();
        uint64_t show = n <= JSON_ARRAY_MAX ? n : JSON_HEAD;
        for (uint64_t k = 0; k < show; k++) cJSON_AddItemToArray(arr, json_elem(g, key, elem, k));
        if (n <= JSON_ARRAY_MAX) return arr;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", es_gguf_vtype_name(elem));
        cJSON_AddNumberToObject(o, "count", (double)n);
        cJSON_AddItemToObject(o, "head", arr);
        return o;
    }
    default: {
        int64_t v;
        uint64_t u = 0;
        if (es_gguf_get_i64(g, key, &v)) return cJSON_CreateNumber((double)v);
        es_gguf_get_u64(g, key, &u);
        return cJSON_CreateNumber((double)u);
    }
    }
}

static int64_t tensor_elems(const es_gguf_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

/* Total bytes and parameters of every tensor (saturating: a file may declare absurd shapes). */
static void totals(const es_gguf *g, uint64_t *bytes, uint64_t *params) {
    *bytes = *params = 0;
    for (int64_t i = 0; i < es_gguf_n_tensors(g); i++) {
        const es_gguf_tensor *t = es_gguf_tensor_at(g, i);
        if (__builtin_add_overflow(*bytes, t->nbytes, bytes)) *bytes = UINT64_MAX;
        if (__builtin_add_overflow(*params, (uint64_t)tensor_elems(t), params)) *params = UINT64_MAX;
    }
}

static int print_json(const es_gguf *g, bool tensors) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "version", es_gguf_version(g));
    cJSON_AddNumberToObject(root, "alignment", es_gguf_alignment(g));
    cJSON_AddNumberToObject(root, "data_offset", (double)es_gguf_data_offset(g));
    cJSON_AddNumberToObject(root, "n_kv", (double)es_gguf_n_kv(g));
    cJSON_AddNumberToObject(root, "n_tensors", (double)es_gguf_n_tensors(g));
    cJSON_AddNumberToObject(root, "file_size", (double)es_gguf_file_size(g));
    cJSON *md = cJSON_AddObjectToObject(root, "metadata");
    for (int64_t i = 0; i < es_gguf_n_kv(g); i++) {
        const char *key = es_gguf_kv_key(g, i);
        char *clean = cli_utf8_clean(key, strlen(key));
        cJSON_AddItemToObject(md, clean ? clean : key, json_value(g, i));
        free(clean);
    }
    if (tensors) {
        cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
        for (int64_t i = 0; i < es_gguf_n_tensors(g); i++) {
            const es_gguf_tensor *t = es_gguf_tensor_at(g, i);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", t->name);
            cJSON_AddStringToObject(o, "type", es_type_name(t->type));
            cJSON *shape = cJSON_AddArrayToObject(o, "shape");
            for (int d = 0; d < t->n_dims; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->ne[d]));
            cJSON_AddNumberToObject(o, "offset", (double)t->offset);
            cJSON_AddNumberToObject(o, "bytes", (double)t->nbytes);
            cJSON_AddItemToArray(ts, o);
        }
    }
    uint64_t bytes, params;
    totals(g, &bytes, &params);
    cJSON_AddNumberToObject(root, "tensor_bytes", (double)bytes);
    cJSON_AddNumberToObject(root, "n_params", (double)params);
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    if (!s) return cli_error("info", "out of memory");
    puts(s);
    free(s);
    return 0;
}

static void print_text(const char *path, const es_gguf *g, bool tensors) {
    printf("file          %s\n", path);
    printf("version       %" PRIu32 "\n", es_gguf_version(g));
    printf("alignment     %" PRIu32 "\n", es_gguf_alignment(g));
    printf("data offset   %" PRIu64 "\n", es_gguf_data_offset(g));
    printf("file size     %zu bytes\n", es_gguf_file_size(g));

    int kw = 8;
    for (int64_t i = 0; i < es_gguf_n_kv(g); i++) {
        int l = (int)strlen(es_gguf_kv_key(g, i));
        if (l > kw) kw = l > 48 ? 48 : l;
    }
    printf("\nmetadata: %" PRId64 " key/values\n", es_gguf_n_kv(g));
    char value[512], type[32];
    for (int64_t i = 0; i < es_gguf_n_kv(g); i++) {
        const char *key = es_gguf_kv_key(g, i);
        es_gguf_vtype t = es_gguf_kv_type(g, i), elem;
        if (t == ES_GGUF_ARRAY && es_gguf_get_arr(g, key, &elem, NULL))
            snprintf(type, sizeof type, "array[%s]", es_gguf_vtype_name(elem));
        else snprintf(type, sizeof type, "%s", es_gguf_vtype_name(t));
        printf("  %-*s  %-14s %s\n", kw, key, type, es_gguf_kv_format(g, i, value, sizeof value));
    }

    if (tensors) {
        int nw = 4;
        for (int64_t i = 0; i < es_gguf_n_tensors(g); i++) {
            int l = (int)strlen(es_gguf_tensor_at(g, i)->name);
            if (l > nw) nw = l > 64 ? 64 : l;
        }
        printf("\ntensors: %" PRId64 "\n", es_gguf_n_tensors(g));
        printf("  %-*s  %-6s %-26s %14s %14s\n", nw, "name", "type", "shape", "offset", "bytes");
        for (int64_t i = 0; i < es_gguf_n_tensors(g); i++) {
            const es_gguf_tensor *t = es_gguf_tensor_at(g, i);
            char shape[128];
            int n = snprintf(shape, sizeof shape, "[");
            for (int d = 0; d < t->n_dims; d++)
                n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, d ? ", " : "", t->ne[d]);
            snprintf(shape + n, sizeof shape - (size_t)n, "]");
            printf("  %-*s  %-6s %-26s %14" PRIu64 " %14" PRIu64 "\n", nw, t->name, es_type_name(t->type), shape, t->offset,
                   t->nbytes);
        }
    }
    uint64_t bytes, params;
    totals(g, &bytes, &params);
    printf("\ntotal: %" PRId64 " tensors, %" PRIu64 " bytes, %" PRIu64 " parameters\n", es_gguf_n_tensors(g), bytes, params);
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    bool json = false, tensors = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_help();
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--no-tensors")) {
            tensors = false;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("info", k_usage, "unknown option '%s'", a);
        } else if (path) {
            return cli_usage_error("info", k_usage, "one model file at a time ('%s' and '%s')", path, a);
        } else {
            path = a;
        }
    }
    if (!path) return cli_usage_error("info", k_usage, "no model file given");

    es_gguf *g = NULL;
    es_err err = {{0}};
    if (es_gguf_open(path, &g, &err) != ES_OK) return cli_error("info", "%s: %s", path, err.msg);
    int rc = 0;
    if (json) rc = print_json(g, tensors);
    else print_text(path, g, tensors);
    es_gguf_free(g);
    if (fflush(stdout) != 0) rc = cli_error("info", "cannot write output");
    return rc;
}
