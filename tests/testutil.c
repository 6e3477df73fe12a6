#include "testutil.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <sys/stat.h>

int es_test_failures = 0;
int es_test_checks = 0;

int es_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, es_test_checks - es_test_failures, es_test_failures);
    return es_test_failures ? 1 : 0;
}

const char *es_test_errmsg(const void *err) { return err ? ((const es_err *)err)->msg : ""; }

static const char *env_or(const char *var, const char *dflt) {
    const char *v = getenv(var);
    return v && *v ? v : dflt;
}

#define SLOTS 16
static char g_paths[SLOTS][4096];
static int g_slot;

static const char *join(const char *dir, const char *file) {
    char *p = g_paths[g_slot++ % SLOTS];
    if (snprintf(p, 4096, "%s/%s", dir, file) >= 4096) fprintf(stderr, "testutil: path too long: %s/%s\n", dir, file);
    return p;
}

const char *es_test_shared_model(const char *file) { return join(env_or("EDGESPEC_MODELS", "../shared/models"), file); }
const char *es_test_model(const char *file) { return join(env_or("ES_TEST_MODELS", "build/models"), file); }
const char *es_test_shared(const char *rel) { return join(env_or("ES_SHARED", "../shared"), rel); }

const char *es_test_tmp(const char *file) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tmp", env_or("ES_BUILD", "build"));
    mkdir(dir, 0755);
    return join(dir, file);
}

char *es_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long n = ftell(f);
    if (n < 0) { fclose(f); return NULL; }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) { buf[n] = 0; if (len) *len = (size_t)n; }
    return buf;
}

es_model *es_test_load_model(const char *file) {
    es_err err = {{0}};
    es_model *m = NULL;
    es_model_params mp = es_model_default_params();
    es_status st = es_model_load(es_test_model(file), &mp, &m, &err);
    CHECK_MSG(st == ES_OK, "loading %s: %s", file, err.msg);
    return m;
}

int es_test_json_ints(const cJSON *arr, int32_t *out, int cap) {
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) if (n < cap) out[n++] = (int32_t)it->valuedouble;
    return n;
}
