/* cmd_fit_exit.c — `edgespec fit-exit -m TARGET.gguf --layers L1,L2 -o TARGET-exits.gguf`: fits the
 * calibrated early-exit adapters of a target model on text the model generates itself.
 *
 * 1. generate: from the first --prompts lines of the prompt file, the model continues each prompt
 *    for --tokens tokens (sampled at --temp with --seed; 0: greedy);
 * 2. collect: each text is run again as one prefill with every row's logits asked, and an exit hook
 *    hands over the hidden state after every requested layer and after the last one; the rows of
 *    the first texts go into one ridge system per layer (h_L → h_final), the last quarter of the
 *    texts is held out;
 * 3. fit: (XᵀX + λI) W = XᵀY by Cholesky in double (model/ridge.h);
 * 4. evaluate: on the held-out rows, how often the exit head's top-1 token equals the final layer's,
 *    for the zero-training head (final norm + output on h_L) and the calibrated one;
 * 5. write exit.<L>.weight / exit.<L>.bias (and the agreement figures as metadata) to -o. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "gguf/gguf.h"
#include "kernels/types.h"
#include "model/ridge.h"
#include "util/err.h"

static const char k_usage[] =
    "edgespec fit-exit -m TARGET.gguf --layers L1[,L2...] -o OUT.gguf [--prompt-file FILE] [--prompts N]\n"
    "                  [--tokens N] [--temp T] [--seed N] [--lambda X] [--threads N] [--json]";

#define FIT_MAX_PROMPTS 256
#define FIT_CHUNK 64 /* rows per collection pass */

static void print_help(void) {
    printf("usage: %s\n\n"
           "Fits a calibrated early-exit head (a linear adapter W_L h + b_L from the hidden state after\n"
           "layer L to the final one, by ridge regression) for each layer, on text the model generates\n"
           "itself, and writes them as GGUF tensors exit.<L>.weight / exit.<L>.bias for `serve\n"
           "--exit-file`. Reports, on held-out text (the last quarter of the prompts), how often each\n"
           "layer's exit head picks the final layer's top-1 token: zero-training (the model's final\n"
           "norm and output head applied to h_L) and calibrated.\n\n"
           "options:\n"
           "  -m, --model FILE     the target model (GGUF)\n"
           "  --layers L1,L2,...   exit layers, each in 1..n_layer-1 (at most %d)\n"
           "  -o, --output FILE    where to write the adapters\n"
           "  --prompt-file FILE   one prompt per line (default: ../shared/prompts/stories.txt beside\n"
           "                       the models folder)\n"
           "  --prompts N          use the first N prompts (default 16; at least 2)\n"
           "  --tokens N           tokens generated per prompt (default 128)\n"
           "  --temp T             sampling temperature of the generation (default 0.8; 0 greedy)\n"
           "  --seed N             sampling seed (default 1)\n"
           "  --lambda X           ridge strength relative to the mean feature energy (default 1e-3)\n"
           "  --threads N          compute threads (default 2)\n"
           "  --json               print one JSON object {model, n_layer, n_embd, output, train_rows,\n"
           "                       heldout_rows, layers: [{layer, zero_top1, calibrated_top1}]}\n"
           "  -h, --help           show this help\n",
           k_usage, ES_EXIT_MAX);
}

typedef struct fit_state {
    const es_model *m;
    int d, n_exit;
    int layers[ES_EXIT_MAX];     /* the exit layers (increasing) */
    float *h[ES_EXIT_MAX];       /* (FIT_CHUNK, d) rows of the current pass after each exit layer */
    float *hf;                   /* (FIT_CHUNK, d) final rows */
    int n_rows;
} fit_state;

static void on_exit_rows(void *ud, int layer, const float *hidden, int n_rows, const int32_t *rows) {
    (void)rows;
    fit_state *s = ud;
    s->n_rows = n_rows;
    const size_t bytes = (size_t)n_rows * s->d * sizeof(float);
    if (layer == es_model_n_layer(s->m)) {
        memcpy(s->hf, hidden, bytes);
        return;
    }
    for (int k = 0; k < s->n_exit; k++)
        if (s->layers[k] == layer) memcpy(s->h[k], hidden, bytes);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Reads up to `max` non-empty lines of `path` into malloc'd strings. */
static int read_prompts(const char *path, char **out, int max, int *n) {
    FILE *f = fopen(path, "r");
    if (!f) return cli_error("fit-exit", "cannot open %s: %s", path, strerror(errno));
    char line[4096];
    *n = 0;
    while (*n < max && fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = 0;
        if (!l) continue;
        out[*n] = strdup(line);
        if (!out[*n]) {
            fclose(f);
            return cli_error("fit-exit", "out of memory");
        }
        (*n)++;
    }
    fclose(f);
    return 0;
}

int cmd_fit_exit(int argc, char **argv) {
    const char *model_path = NULL, *out_path = NULL, *prompt_file = NULL;
    static char default_prompts[4096];
    int layers[ES_EXIT_MAX], n_layers = 0, n_prompts = 16, n_tokens = 128, threads = 2;
    uint64_t seed = 1;
    double temp = 0.8, lambda = 1e-3;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const bool has = i + 1 < argc;
        long v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_help();
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && has) {
            model_path = argv[++i];
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has) {
            out_path = argv[++i];
        } else if (!strcmp(a, "--layers") && has) {
            if (!cli_parse_layers(argv[++i], layers, &n_layers))
                return cli_usage_error("fit-exit", k_usage, "--layers wants up to %d distinct positive integers, e.g. 4,8",
                                       ES_EXIT_MAX);
        } else if (!strcmp(a, "--prompt-file") && has) {
            prompt_file = argv[++i];
        } else if (!strcmp(a, "--prompts") && has) {
            if (!cli_parse_long(argv[++i], 2, FIT_MAX_PROMPTS, &v))
                return cli_usage_error("fit-exit", k_usage, "--prompts must be in 2..%d", FIT_MAX_PROMPTS);
            n_prompts = (int)v;
        } else if (!strcmp(a, "--tokens") && has) {
            if (!cli_parse_long(argv[++i], 1, 8192, &v)) return cli_usage_error("fit-exit", k_usage, "--tokens must be in 1..8192");
            n_tokens = (int)v;
        } else if (!strcmp(a, "--threads") && has) {
            if (!cli_parse_long(argv[++i], 1, 512, &v)) return cli_usage_error("fit-exit", k_usage, "--threads must be in 1..512");
            threads = (int)v;
        } else if (!strcmp(a, "--temp") && has) {
            if (!cli_parse_float(argv[++i], 0, 10, &temp)) return cli_usage_error("fit-exit", k_usage, "--temp must be in 0..10");
        } else if (!strcmp(a, "--lambda") && has) {
            if (!cli_parse_float(argv[++i], 0, 1e6, &lambda)) return cli_usage_error("fit-exit", k_usage, "--lambda must be in 0..1e6");
        } else if (!strcmp(a, "--seed") && has) {
            if (!cli_parse_u64(argv[++i], &seed)) return cli_usage_error("fit-exit", k_usage, "--seed must be an unsigned integer");
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else {
            return cli_usage_error("fit-exit", k_usage, "unknown or incomplete option '%s'", a);
        }
    }
    if (!model_path || !out_path || !n_layers) return cli_usage_error("fit-exit", k_usage, "-m, --layers and -o are required");
    if (!prompt_file) {
        snprintf(default_prompts, sizeof default_prompts, "%s/../prompts/stories.txt", cli_models_dir());
        prompt_file = default_prompts;
    }

    int rc = 1;
    es_err err = {{0}};
    es_model *m = NULL;
    es_ctx *ctx = NULL;
    es_sampler *smp = NULL;
    es_exit_heads *heads = NULL, *zero = NULL; /* calibrated, zero-training */
    es_ridge *ridge[ES_EXIT_MAX] = {0};
    es_gguf_writer *w = NULL;
    char *prompts[FIT_MAX_PROMPTS] = {0};
    int32_t **texts = NULL;
    int *text_len = NULL, n_texts = 0;
    float *W = NULL, *B = NULL, *lg = NULL;
    int64_t agree_zero[ES_EXIT_MAX] = {0}, agree_cal[ES_EXIT_MAX] = {0}, n_held = 0;
    fit_state fs = {0};

    es_model_params mp = es_model_default_params();
    mp.progress = cli_progress;
    if (es_model_load(model_path, &mp, &m, &err) != ES_OK) {
        cli_error("fit-exit", "%s: %s", model_path, err.msg);
        goto done;
    }
    const int nl = es_model_n_layer(m), d = es_model_n_embd(m), nv = es_model_n_vocab(m);
    for (int k = 0; k < n_layers; k++)
        if (layers[k] >= nl) {
            rc = cli_usage_error("fit-exit", k_usage, "layer %d: the model has %d layers (exits at 1..%d)", layers[k], nl, nl - 1);
            goto done;
        }
    if (read_prompts(prompt_file, prompts, n_prompts, &n_texts)) goto done;
    if (n_texts < 2) {
        cli_error("fit-exit", "%s has %d prompts; at least 2 are needed (one to fit, one held out)", prompt_file, n_texts);
        goto done;
    }
    const es_tokenizer *tok = es_model_tokenizer(m);
    int n_ctx = es_model_n_ctx_train(m);
    if (n_ctx > 4096) n_ctx = 4096;
    es_ctx_params cp = es_ctx_default_params();
    cp.n_threads = threads;
    cp.n_ctx = n_ctx;
    cp.n_batch_max = FIT_CHUNK;
    cp.kv_type = ES_KV_F32;
    es_sampler_params sp = es_sampler_default_params();
    sp.temperature = (float)temp;
    sp.seed = seed;
    texts = calloc((size_t)n_texts, sizeof *texts);
    text_len = calloc((size_t)n_texts, sizeof *text_len);
    if (!texts || !text_len || es_ctx_init(m, &cp, &ctx, &err) != ES_OK || es_sampler_init(&sp, nv, &smp, &err) != ES_OK) {
        cli_error("fit-exit", "%s", err.msg[0] ? err.msg : "out of memory");
        goto done;
    }

    /* 1. generate */
    for (int t = 0; t < n_texts; t++) {
        cli_progress(NULL, "generating", (double)t / n_texts);
        int32_t *ids = malloc((size_t)n_ctx * sizeof(int32_t));
        texts[t] = ids;
        int n = 0;
        if (!ids || es_tokenize(tok, prompts[t], strlen(prompts[t]), true, false, ids, n_ctx / 2, &n, &err) != ES_OK) {
            cli_error("fit-exit", "prompt %d: %s", t + 1, ids ? err.msg : "out of memory");
            goto done;
        }
        if (n > n_ctx / 2) n = n_ctx / 2;
        if (n == 0) ids[n++] = es_tokenizer_bos(tok) >= 0 ? es_tokenizer_bos(tok) : 0;
        int s;
        if (es_seq_open(ctx, &s, &err) != ES_OK) goto fail;
        es_sampler_reset(smp);
        int32_t pos[FIT_CHUNK], seq[FIT_CHUNK];
        for (int i = 0; i < FIT_CHUNK; i++) seq[i] = s;
        int done_n = 0;
        while (done_n < n) { /* the prompt, in chunks */
            const int k = n - done_n < FIT_CHUNK ? n - done_n : FIT_CHUNK;
            for (int i = 0; i < k; i++) pos[i] = done_n + i;
            es_batch b = {.n_tokens = k, .token = ids + done_n, .pos = pos, .seq = seq};
            if (es_decode(ctx, &b, &err) != ES_OK) goto fail;
            done_n += k;
        }
        const int32_t eos = es_tokenizer_eos(tok);
        int last_row = (n - 1) % FIT_CHUNK;
        for (int g = 0; g < n_tokens && n < n_ctx; g++) {
            const int32_t next = es_sampler_sample(smp, es_ctx_logits(ctx, last_row));
            es_sampler_accept(smp, next);
            if (next == eos) break;
            ids[n] = next;
            pos[0] = n;
            es_batch b = {.n_tokens = 1, .token = ids + n, .pos = pos, .seq = seq};
            n++;
            if (es_decode(ctx, &b, &err) != ES_OK) goto fail;
            last_row = 0;
        }
        text_len[t] = n;
        es_seq_close(ctx, s);
    }

    /* 2. collect, 3. fit on the first texts; the last quarter is held out */
    const int n_held_texts = n_texts / 4 > 0 ? n_texts / 4 : 1, n_train = n_texts - n_held_texts;
    fs.m = m;
    fs.d = d;
    fs.n_exit = n_layers;
    memcpy(fs.layers, layers, sizeof layers);
    for (int k = 0; k < n_layers; k++) {
        fs.h[k] = malloc((size_t)FIT_CHUNK * d * sizeof(float));
        if (!fs.h[k] || es_ridge_init(d, d, &ridge[k], &err) != ES_OK) {
            cli_error("fit-exit", "%s", err.msg[0] ? err.msg : "out of memory");
            goto done;
        }
    }
    fs.hf = malloc((size_t)FIT_CHUNK * d * sizeof(float));
    lg = malloc((size_t)FIT_CHUNK * nv * sizeof(float));
    W = malloc((size_t)n_layers * d * d * sizeof(float)); /* every layer's adapter, solved once */
    B = malloc((size_t)n_layers * d * sizeof(float));
    int *final_top = malloc(FIT_CHUNK * sizeof(int));
    if (!fs.hf || !lg || !W || !B || !final_top) {
        free(final_top);
        cli_error("fit-exit", "out of memory");
        goto done;
    }
    int hook_layers[ES_EXIT_MAX + 1];
    memcpy(hook_layers, layers, (size_t)n_layers * sizeof(int));
    hook_layers[n_layers] = nl;
    if (es_ctx_set_exit_hook(ctx, hook_layers, n_layers + 1, on_exit_rows, &fs, &err) != ES_OK ||
        es_exit_heads_init(m, NULL, layers, n_layers, FIT_CHUNK, threads, &heads, &err) != ES_OK ||
        es_exit_heads_init(m, NULL, layers, n_layers, FIT_CHUNK, threads, &zero, &err) != ES_OK) {
        free(final_top);
        goto fail;
    }
    /* two sweeps over the texts: training rows into the systems, then (after the fit) the held-out
     * rows through both heads */
    for (int phase = 0; phase < 2; phase++) {
        if (phase == 1) {
            for (int k = 0; k < n_layers; k++) {
                cli_progress(NULL, "solving", (double)k / n_layers);
                float *wk = W + (size_t)k * d * d, *bk = B + (size_t)k * d;
                if (es_ridge_solve(ridge[k], lambda, wk, bk, &err) != ES_OK ||
                    es_exit_heads_set_adapter(heads, layers[k], wk, bk, &err) != ES_OK) {
                    free(final_top);
                    cli_error("fit-exit", "layer %d: %s", layers[k], err.msg);
                    goto done;
                }
            }
        }
        const int t0 = phase == 0 ? 0 : n_train, t1 = phase == 0 ? n_train : n_texts;
        for (int t = t0; t < t1; t++) {
            cli_progress(NULL, phase == 0 ? "collecting" : "evaluating", (double)(t - t0) / (t1 - t0));
            int s;
            if (es_seq_open(ctx, &s, &err) != ES_OK) {
                free(final_top);
                goto fail;
            }
            int32_t pos[FIT_CHUNK], seq[FIT_CHUNK];
            int8_t want[FIT_CHUNK];
            for (int i = 0; i < FIT_CHUNK; i++) { seq[i] = s; want[i] = 1; }
            for (int at = 0; at < text_len[t]; at += FIT_CHUNK) {
                const int k = text_len[t] - at < FIT_CHUNK ? text_len[t] - at : FIT_CHUNK;
                for (int i = 0; i < k; i++) pos[i] = at + i;
                es_batch b = {.n_tokens = k, .token = texts[t] + at, .pos = pos, .seq = seq, .logits = want};
                fs.n_rows = 0;
                if (es_decode(ctx, &b, &err) != ES_OK) {
                    free(final_top);
                    goto fail;
                }
                if (phase == 0) {
                    for (int e = 0; e < n_layers; e++) es_ridge_add(ridge[e], fs.h[e], fs.hf, k);
                    continue;
                }
                for (int i = 0; i < k; i++) final_top[i] = argmax(es_ctx_logits(ctx, i), nv);
                n_held += k;
                for (int e = 0; e < n_layers; e++)
                    for (int cal = 0; cal < 2; cal++) {
                        if (es_exit_heads_logits(cal ? heads : zero, layers[e], fs.h[e], k, lg, &err) != ES_OK) {
                            free(final_top);
                            goto fail;
                        }
                        for (int i = 0; i < k; i++)
                            if (argmax(lg + (size_t)i * nv, nv) == final_top[i]) (cal ? agree_cal : agree_zero)[e]++;
                    }
            }
            es_seq_close(ctx, s);
        }
    }
    free(final_top);
    cli_progress(NULL, "", 1.0);

    /* 5. write */
    w = es_gguf_writer_init();
    if (!w) {
        cli_error("fit-exit", "out of memory");
        goto done;
    }
    int32_t layers32[ES_EXIT_MAX];
    float zero_top[ES_EXIT_MAX], cal_top[ES_EXIT_MAX];
    for (int k = 0; k < n_layers; k++) {
        layers32[k] = layers[k];
        zero_top[k] = n_held ? (float)agree_zero[k] / (float)n_held : 0;
        cal_top[k] = n_held ? (float)agree_cal[k] / (float)n_held : 0;
    }
    char desc[256];
    es_model_desc(m, desc, sizeof desc);
    es_status ws = es_gguf_set_str(w, "general.type", "edgespec-exit-heads");
    if (ws == ES_OK) ws = es_gguf_set_str(w, "edgespec.exit.target", desc);
    if (ws == ES_OK) ws = es_gguf_set_u32(w, "edgespec.exit.n_embd", (uint32_t)d);
    if (ws == ES_OK) ws = es_gguf_set_u32(w, "edgespec.exit.n_layer", (uint32_t)nl);
    if (ws == ES_OK) ws = es_gguf_set_arr(w, "edgespec.exit.layers", ES_GGUF_INT32, layers32, (uint64_t)n_layers);
    if (ws == ES_OK) ws = es_gguf_set_arr(w, "edgespec.exit.zero_top1", ES_GGUF_FLOAT32, zero_top, (uint64_t)n_layers);
    if (ws == ES_OK) ws = es_gguf_set_arr(w, "edgespec.exit.calibrated_top1", ES_GGUF_FLOAT32, cal_top, (uint64_t)n_layers);
    for (int k = 0; k < n_layers && ws == ES_OK; k++) {
        char name[64];
        const int64_t ne2[2] = {d, d}, ne1[1] = {d};
        float *wk = W + (size_t)k * d * d, *bk = B + (size_t)k * d;
        snprintf(name, sizeof name, "exit.%d.weight", layers[k]);
        if ((ws = es_gguf_add_tensor(w, name, ES_TYPE_F32, 2, ne2, wk)) != ES_OK) break;
        snprintf(name, sizeof name, "exit.%d.bias", layers[k]);
        ws = es_gguf_add_tensor(w, name, ES_TYPE_F32, 1, ne1, bk);
    }
    if (ws == ES_OK) ws = es_gguf_write(w, out_path, NULL, NULL, &err);
    if (ws != ES_OK) {
        cli_error("fit-exit", "%s: %s", out_path, err.msg[0] ? err.msg : es_status_str(ws));
        goto done;
    }
    int64_t train_rows = es_ridge_rows(ridge[0]);
    if (json) {
        cJSON *j = cJSON_CreateObject(), *jl = cJSON_CreateArray();
        char *mc = cli_utf8_clean(model_path, strlen(model_path)), *oc = cli_utf8_clean(out_path, strlen(out_path));
        cJSON_AddStringToObject(j, "model", mc ? mc : "");
        cJSON_AddStringToObject(j, "output", oc ? oc : "");
        free(mc);
        free(oc);
        cJSON_AddNumberToObject(j, "n_layer", nl);
        cJSON_AddNumberToObject(j, "n_embd", d);
        cJSON_AddNumberToObject(j, "texts", n_texts);
        cJSON_AddNumberToObject(j, "train_rows", (double)train_rows);
        cJSON_AddNumberToObject(j, "heldout_rows", (double)n_held);
        cJSON_AddNumberToObject(j, "lambda", lambda);
        for (int k = 0; k < n_layers; k++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "layer", layers[k]);
            cJSON_AddNumberToObject(o, "zero_top1", zero_top[k]);
            cJSON_AddNumberToObject(o, "calibrated_top1", cal_top[k]);
            cJSON_AddItemToArray(jl, o);
        }
        cJSON_AddItemToObject(j, "layers", jl);
        char *out = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (out) printf("%s\n", out);
        free(out);
    } else {
        printf("fit-exit: %s, %d texts (%lld rows fitted, %lld held out) -> %s\n", desc, n_texts, (long long)train_rows,
               (long long)n_held, out_path);
        printf("%6s  %14s  %16s\n", "layer", "zero-training", "calibrated");
        for (int k = 0; k < n_layers; k++)
            printf("%3d/%-2d  %13.1f%%  %15.1f%%\n", layers[k], nl, 100 * zero_top[k], 100 * cal_top[k]);
    }
    rc = 0;
    goto done;
fail:
    cli_error("fit-exit", "%s", err.msg);
done:
    for (int k = 0; k < ES_EXIT_MAX; k++) {
        es_ridge_free(ridge[k]);
        free(fs.h[k]);
    }
    free(fs.hf);
    free(lg);
    free(W);
    free(B);
    for (int t = 0; texts && t < n_texts; t++) free(texts[t]);
    free(texts);
    free(text_len);
    for (int i = 0; i < FIT_MAX_PROMPTS; i++) free(prompts[i]);
    es_gguf_writer_free(w);
    es_exit_heads_free(heads);
    es_exit_heads_free(zero);
    es_sampler_free(smp);
    es_ctx_free(ctx);
    es_model_free(m);
    return rc;
}
