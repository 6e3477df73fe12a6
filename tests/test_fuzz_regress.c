/* test_fuzz_regress.c — replays stored fuzz inputs through the fuzz targets' one-input functions in
 * the ordinary (and sanitizer) builds, without libFuzzer.
 *
 * tests/data/fuzz-regress/<target>/ holds inputs that once crashed a target (kept as regression tests
 * once fixed) and, for fuzz_session, the recorded valid sessions scripts/fuzz.sh seeds it with — so
 * the server's synchronous test mode (server/server_fuzz.h) and the session invariants run in every
 * `make test`, `make asan` and `make tsan`. A target's invariants abort, so a regression fails this
 * test with the target's message on stderr.
 *
 * A new target gets replayed by adding it to TARGETS below (its LLVMFuzzerTestOneInput is renamed by
 * the include; a target with LLVMFuzzerInitialize guards it with ES_FUZZ_NO_MAIN, as fuzz_session). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define ES_FUZZ_NO_MAIN 1

#define LLVMFuzzerTestOneInput fuzz_proto_one
#include "../src/fuzz/fuzz_proto.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput fuzz_hfconfig_one
#include "../src/fuzz/fuzz_hfconfig.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput fuzz_oai_one
#include "../src/fuzz/fuzz_oai.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput fuzz_grammar_one
#include "../src/fuzz/fuzz_grammar.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput fuzz_jinja_one
#include "../src/fuzz/fuzz_jinja.c"
#undef LLVMFuzzerTestOneInput

#include "../src/fuzz/fuzz_session.c"

typedef struct target {
    const char *name;
    int (*one)(const uint8_t *data, size_t size);
} target;

static const target TARGETS[] = {
    {"fuzz_proto", fuzz_proto_one},
    {"fuzz_hfconfig", fuzz_hfconfig_one},
    {"fuzz_session", es_fuzz_session_one},
    {"fuzz_oai", fuzz_oai_one},
    {"fuzz_grammar", fuzz_grammar_one},
    {"fuzz_jinja", fuzz_jinja_one},
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Replays every file of DIR through one(); returns the number replayed (-1: no such directory). */
static int replay_dir(const char *dir, int (*one)(const uint8_t *, size_t)) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    char *names[512];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 512)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%.1000s/%.255s", dir, names[i]);
        size_t len = 0;
        char *data = es_test_read_file(path, &len);
        CHECK(data != NULL);
        if (data) {
            fprintf(stderr, "replay %s\n", path);
            one((const uint8_t *)data, len);
        }
        free(data);
        free(names[i]);
    }
    return n;
}

int main(void) {
    const char *src = getenv("ES_SRC") ? getenv("ES_SRC") : ".";
    /* fuzz_session's model: the converted test model, unless the environment names one. */
    if (!getenv("EDGESPEC_FUZZ_MODEL")) setenv("EDGESPEC_FUZZ_MODEL", es_test_model("stories260K.gguf"), 1);
    int total = 0;
    for (size_t t = 0; t < sizeof TARGETS / sizeof TARGETS[0]; t++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%.900s/tests/data/fuzz-regress/%s", src, TARGETS[t].name);
        const int n = replay_dir(dir, TARGETS[t].one);
        if (n > 0) total += n;
    }
    CHECK(total > 0); /* at least the recorded sessions */

    /* The session target's state after the replays: one server, nothing left open. */
    if (g_fz.srv) {
        es_server_stats st;
        es_server_get_stats(g_fz.srv, &st);
        CHECK(st.sched.kv_blocks_used == 0);
        CHECK(st.sched.sessions_opened > 0); /* the recorded sessions did open sessions */
        CHECK(st.sched.tokens_generated > 0);
        es_server_free(g_fz.srv);
        es_model_free(g_fz.model);
    }
    return es_test_finish("test_fuzz_regress");
}
