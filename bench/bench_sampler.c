/* bench_sampler.c — time per es_sampler_sample / es_sampler_probs call at vocabulary sizes of real
 * models, for the common parameter sets. One JSON object per line on stdout:
 *   {"bench":"sampler","n_vocab":151936,"config":"defaults","op":"sample","us":123.4}
 * Usage: bench_sampler [reps] [bandwidth_threads]   (bandwidth_threads > 0 also probes memory
 * read bandwidth with a 1 GiB buffer and prints {"bench":"read_bandwidth",...}). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"
#include "edgespec.h"
#include "util/rng.h"

static void emit(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    if (s) puts(s);
    free(s);
    cJSON_Delete(o);
}

int main(int argc, char **argv) {
    const int reps = argc > 1 ? atoi(argv[1]) : 50;
    const int bw_threads = argc > 2 ? atoi(argv[2]) : 0;
    if (reps <= 0) {
        fprintf(stderr, "usage: %s [reps > 0] [bandwidth_threads]\n", argv[0]);
        return 2;
    }
    const int vocabs[] = {32000, 151936};
    struct { const char *name; float t; int k; float tp, mp, pen; } cfg[] = {
        {"greedy", 0.0f, 0, 1.0f, 0.0f, 1.0f},
        {"plain", 1.0f, 0, 1.0f, 0.0f, 1.0f},
        {"defaults", 0.8f, 40, 0.95f, 0.05f, 1.0f},
        {"top_p=0.9", 1.0f, 0, 0.9f, 0.0f, 1.0f},
        {"min_p=0.05", 1.0f, 0, 1.0f, 0.05f, 1.0f},
        {"penalty+defaults", 0.8f, 40, 0.95f, 0.05f, 1.1f},
    };
    es_rng r;
    es_rng_seed(&r, 1);
    for (size_t v = 0; v < sizeof vocabs / sizeof *vocabs; v++) {
        const int n = vocabs[v];
        float *logits = malloc((size_t)n * sizeof *logits), *probs = malloc((size_t)n * sizeof *probs);
        if (!logits || !probs) return 1;
        /* Roughly the spread of real LM logits: a few strong candidates over a broad background. */
        for (int i = 0; i < n; i++) logits[i] = (float)(2.5 * es_rng_normal(&r));
        for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
            es_sampler_params p = es_sampler_default_params();
            p.temperature = cfg[c].t;
            p.top_k = cfg[c].k;
            p.top_p = cfg[c].tp;
            p.min_p = cfg[c].mp;
            p.repeat_penalty = cfg[c].pen;
            es_sampler *s = NULL;
            es_err err;
            if (es_sampler_init(&p, n, &s, &err) != ES_OK) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            for (int i = 0; i < 64; i++) es_sampler_accept(s, (int32_t)(es_rng_next(&r) % (uint64_t)n));
            for (int op = 0; op < 2; op++) {
                const double t0 = es_bench_now();
                for (int i = 0; i < reps; i++) {
                    if (op == 0) (void)es_sampler_sample(s, logits);
                    else es_sampler_probs(s, logits, probs);
                }
                const double us = 1e6 * (es_bench_now() - t0) / reps;
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "bench", "sampler");
                cJSON_AddNumberToObject(o, "n_vocab", n);
                cJSON_AddStringToObject(o, "config", cfg[c].name);
                cJSON_AddStringToObject(o, "op", op == 0 ? "sample" : "probs");
                cJSON_AddNumberToObject(o, "us", us);
                emit(o);
            }
            es_sampler_free(s);
        }
        free(logits);
        free(probs);
    }
    if (bw_threads > 0) {
        const double gbs = es_bench_read_bandwidth_gbs(bw_threads, 0);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "bench", "read_bandwidth");
        cJSON_AddNumberToObject(o, "threads", bw_threads);
        cJSON_AddNumberToObject(o, "gbs", gbs);
        emit(o);
    }
    return 0;
}
