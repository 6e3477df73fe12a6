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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/opts.h"
#include "cli/prompts.h"
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

/* What fit-exit was asked to do. */
typedef struct fit_opts {
    const char *model_path, *out_path, *prompt_file;
    char default_prompts[4096];
    int layers[ES_EXIT_MAX], n_layers;
    int n_prompts, n_tokens, threads;
    uint64_t seed;
    double temp, lambda;
    bool json;
} fit_opts;

/* Everything one fit holds; fit_free releases it. */
typedef struct fit_run {
    fit_opts o;
    es_err err;
    es_model *m;
    int nl, d, nv;                 /* the model's layers, embedding width, vocabulary */
    int n_ctx;                     /* positions of the context (the model's, at most 4096) */
    es_ctx *ctx;
    es_sampler *smp;
    cli_prompts prompts;           /* the first --prompts lines of --prompt-file */
    int32_t **texts;               /* [n_texts] prompt + generated tokens, text_len[t] of them */
    int *text_len, n_texts;
    es_ridge *ridge[ES_EXIT_MAX];  /* one system per exit layer */
    es_exit_heads *heads, *zero;   /* calibrated, zero-training */
    float *W, *B;                  /* every layer's adapter (n_layers, d, d) and bias (n_layers, d) */
    float *lg;                     /* (FIT_CHUNK, nv) logits of an exit head */
    int *final_top;                /* [FIT_CHUNK] the final layer's top-1 token per row */
    int64_t agree_zero[ES_EXIT_MAX], agree_cal[ES_EXIT_MAX], n_held;
    fit_state fs;
} fit_run;

/* --layers L1[,L2...] into the fit_opts (dst). */
static bool opt_layers(const cli_arg *a) {
    fit_opts *o = a->dst;
    return cli_parse_layers(a->value, o->layers, &o->n_layers);
}

/* Reads argv into *o. Returns -1 to go on, else the exit code: 0 after --help, 2 for a usage error. */
static int parse_options(int argc, char **argv, fit_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_prompts = 16;
    o->n_tokens = 128;
    o->threads = 2;
    o->seed = 1;
    o->temp = 0.8;
    o->lambda = 1e-3;
    char must_layers[80], must_prompts[32];
    snprintf(must_layers, sizeof must_layers, "wants up to %d distinct positive integers (e.g. 4,8)", ES_EXIT_MAX);
    snprintf(must_prompts, sizeof must_prompts, "must be in 2..%d", FIT_MAX_PROMPTS);
    const cli_opt t[] = {
        {.names = "-h|--help", .kind = CLI_STOP, .stop = 1},
        {.names = "--json", .kind = CLI_SET, .dst = &o->json},
        {.names = "-m|--model", .kind = CLI_STR, .dst = &o->model_path},
        {.names = "-o|--output", .kind = CLI_STR, .dst = &o->out_path},
        {.names = "--layers", .kind = CLI_FN, .dst = o, .fn = opt_layers, .must = must_layers},
        {.names = "--prompt-file", .kind = CLI_STR, .dst = &o->prompt_file},
        {.names = "--prompts", .kind = CLI_INT, .dst = &o->n_prompts, .lo = 2, .hi = FIT_MAX_PROMPTS, .must = must_prompts},
        {.names = "--tokens", .kind = CLI_INT, .dst = &o->n_tokens, .lo = 1, .hi = 8192, .must = "must be in 1..8192"},
        {.names = "--threads", .kind = CLI_INT, .dst = &o->threads, .lo = 1, .hi = 512, .must = "must be in 1..512"},
        {.names = "--temp", .kind = CLI_DOUBLE, .dst = &o->temp, .lo = 0, .hi = 10, .must = "must be in 0..10"},
        {.names = "--lambda", .kind = CLI_DOUBLE, .dst = &o->lambda, .lo = 0, .hi = 1e6, .must = "must be in 0..1e6"},
        {.names = "--seed", .kind = CLI_U64, .dst = &o->seed, .must = "must be a non-negative integer"},
    };
    const int rc = cli_opts_parse("fit-exit", k_usage, t, sizeof t / sizeof t[0], argc, argv, NULL, NULL);
    if (rc == 1) {
        print_help();
        return 0;
    }
    if (rc != 0) return rc;
    if (!o->model_path || !o->out_path || !o->n_layers) return cli_usage_error("fit-exit", k_usage, "-m, --layers and -o are required");
    if (!o->prompt_file) {
        snprintf(o->default_prompts, sizeof o->default_prompts, "%s/../prompts/stories.txt", cli_models_dir());
        o->prompt_file = o->default_prompts;
    }
    return -1;
}

/* The model (its exit layers checked), the prompts, a context and a sampler. Returns 0, else the
 * exit code after the error was printed. */
static int fit_setup(fit_run *r) {
    const fit_opts *o = &r->o;
    es_model_params mp = es_model_default_params();
    mp.progress = cli_progress;
    if (es_model_load(o->model_path, &mp, &r->m, &r->err) != ES_OK) return cli_error("fit-exit", "%s: %s", o->model_path, r->err.msg);
    r->nl = es_model_n_layer(r->m);
    r->d = es_model_n_embd(r->m);
    r->nv = es_model_n_vocab(r->m);
    for (int k = 0; k < o->n_layers; k++)
        if (o->layers[k] >= r->nl)
            return cli_usage_error("fit-exit", k_usage, "layer %d: the model has %d layers (exits at 1..%d)", o->layers[k], r->nl,
                                   r->nl - 1);
    if (cli_prompts_read(o->prompt_file, o->n_prompts, NULL, &r->prompts, &r->err) != ES_OK)
        return cli_error("fit-exit", "%s", r->err.msg);
    r->n_texts = r->prompts.count;
    if (r->n_texts < 2)
        return cli_error("fit-exit", "%s has %d prompts; at least 2 are needed (one to fit, one held out)", o->prompt_file, r->n_texts);
    r->n_ctx = es_model_n_ctx_train(r->m);
    if (r->n_ctx > 4096) r->n_ctx = 4096;
    es_ctx_params cp = es_ctx_default_params();
    cp.n_threads = o->threads;
    cp.n_ctx = r->n_ctx;
    cp.n_batch_max = FIT_CHUNK;
    cp.kv_type = ES_KV_F32;
    es_sampler_params sp = es_sampler_default_params();
    sp.temperature = (float)o->temp;
    sp.seed = o->seed;
    r->texts = calloc((size_t)r->n_texts, sizeof *r->texts);
    r->text_len = calloc((size_t)r->n_texts, sizeof *r->text_len);
    if (!r->texts || !r->text_len || es_ctx_init(r->m, &cp, &r->ctx, &r->err) != ES_OK ||
        es_sampler_init(&sp, r->nv, &r->smp, &r->err) != ES_OK)
        return cli_error("fit-exit", "%s", r->err.msg[0] ? r->err.msg : "out of memory");
    return 0;
}

/* 1. generate: prompt t (at most half the context), continued for --tokens tokens or to EOS, into
 * texts[t]. Returns 0, else the exit code after the error was printed. */
static int generate_text(fit_run *r, int t) {
    const es_tokenizer *tok = es_model_tokenizer(r->m);
    const int n_ctx = r->n_ctx;
    int32_t *ids = malloc((size_t)n_ctx * sizeof(int32_t));
    r->texts[t] = ids;
    int n = 0;
    if (!ids || es_tokenize(tok, r->prompts.at[t].text, r->prompts.at[t].len, true, false, ids, n_ctx / 2, &n, &r->err) != ES_OK) {
        return cli_error("fit-exit", "prompt %d: %s", t + 1, ids ? r->err.msg : "out of memory");
    }
    if (n > n_ctx / 2) n = n_ctx / 2;
    if (n == 0) ids[n++] = es_tokenizer_bos(tok) >= 0 ? es_tokenizer_bos(tok) : 0;
    int s;
    if (es_seq_open(r->ctx, &s, &r->err) != ES_OK) return cli_error("fit-exit", "%s", r->err.msg);
    es_sampler_reset(r->smp);
    int32_t pos[FIT_CHUNK], seq[FIT_CHUNK];
    for (int i = 0; i < FIT_CHUNK; i++) seq[i] = s;
    int done_n = 0;
    while (done_n < n) { /* the prompt, in chunks */
        const int k = n - done_n < FIT_CHUNK ? n - done_n : FIT_CHUNK;
        for (int i = 0; i < k; i++) pos[i] = done_n + i;
        es_batch b = {.n_tokens = k, .token = ids + done_n, .pos = pos, .seq = seq};
        if (es_decode(r->ctx, &b, &r->err) != ES_OK) return cli_error("fit-exit", "%s", r->err.msg);
        done_n += k;
    }
    const int32_t eos = es_tokenizer_eos(tok);
    int last_row = (n - 1) % FIT_CHUNK;
    for (int g = 0; g < r->o.n_tokens && n < n_ctx; g++) {
        const int32_t next = es_sampler_sample(r->smp, es_ctx_logits(r->ctx, last_row));
        es_sampler_accept(r->smp, next);
        if (next == eos) break;
        ids[n] = next;
        pos[0] = n;
        es_batch b = {.n_tokens = 1, .token = ids + n, .pos = pos, .seq = seq};
        n++;
        if (es_decode(r->ctx, &b, &r->err) != ES_OK) return cli_error("fit-exit", "%s", r->err.msg);
        last_row = 0;
    }
    r->text_len[t] = n;
    es_seq_close(r->ctx, s);
    return 0;
}

/* The ridge systems, the buffers of the collection, and the exit hook that fills fs. Returns 0, else
 * the exit code after the error was printed. */
static int fit_prepare(fit_run *r) {
    const fit_opts *o = &r->o;
    const int d = r->d;
    r->fs.m = r->m;
    r->fs.d = d;
    r->fs.n_exit = o->n_layers;
    memcpy(r->fs.layers, o->layers, sizeof o->layers);
    for (int k = 0; k < o->n_layers; k++) {
        r->fs.h[k] = malloc((size_t)FIT_CHUNK * d * sizeof(float));
        if (!r->fs.h[k] || es_ridge_init(d, d, &r->ridge[k], &r->err) != ES_OK)
            return cli_error("fit-exit", "%s", r->err.msg[0] ? r->err.msg : "out of memory");
    }
    r->fs.hf = malloc((size_t)FIT_CHUNK * d * sizeof(float));
    r->lg = malloc((size_t)FIT_CHUNK * r->nv * sizeof(float));
    r->W = malloc((size_t)o->n_layers * d * d * sizeof(float)); /* every layer's adapter, solved once */
    r->B = malloc((size_t)o->n_layers * d * sizeof(float));
    r->final_top = malloc(FIT_CHUNK * sizeof(int));
    if (!r->fs.hf || !r->lg || !r->W || !r->B || !r->final_top) return cli_error("fit-exit", "out of memory");
    int hook_layers[ES_EXIT_MAX + 1];
    memcpy(hook_layers, o->layers, (size_t)o->n_layers * sizeof(int));
    hook_layers[o->n_layers] = r->nl;
    if (es_ctx_set_exit_hook(r->ctx, hook_layers, o->n_layers + 1, on_exit_rows, &r->fs, &r->err) != ES_OK ||
        es_exit_heads_init(r->m, NULL, o->layers, o->n_layers, FIT_CHUNK, o->threads, &r->heads, &r->err) != ES_OK ||
        es_exit_heads_init(r->m, NULL, o->layers, o->n_layers, FIT_CHUNK, o->threads, &r->zero, &r->err) != ES_OK)
        return cli_error("fit-exit", "%s", r->err.msg);
    return 0;
}

/* One pass of text t with every row's logits asked: 2. collect (the exit hook's rows into the ridge
 * systems), or 4. evaluate (how often each exit head's top-1 token is the final layer's). Returns 0,
 * else the exit code after the error was printed. */
static int sweep_text(fit_run *r, int t, bool evaluate) {
    const fit_opts *o = &r->o;
    const int nv = r->nv;
    int s;
    if (es_seq_open(r->ctx, &s, &r->err) != ES_OK) return cli_error("fit-exit", "%s", r->err.msg);
    int32_t pos[FIT_CHUNK], seq[FIT_CHUNK];
    int8_t want[FIT_CHUNK];
    for (int i = 0; i < FIT_CHUNK; i++) { seq[i] = s; want[i] = 1; }
    for (int at = 0; at < r->text_len[t]; at += FIT_CHUNK) {
        const int k = r->text_len[t] - at < FIT_CHUNK ? r->text_len[t] - at : FIT_CHUNK;
        for (int i = 0; i < k; i++) pos[i] = at + i;
        es_batch b = {.n_tokens = k, .token = r->texts[t] + at, .pos = pos, .seq = seq, .logits = want};
        r->fs.n_rows = 0;
        if (es_decode(r->ctx, &b, &r->err) != ES_OK) return cli_error("fit-exit", "%s", r->err.msg);
        if (!evaluate) {
            for (int e = 0; e < o->n_layers; e++) es_ridge_add(r->ridge[e], r->fs.h[e], r->fs.hf, k);
            continue;
        }
        for (int i = 0; i < k; i++) r->final_top[i] = argmax(es_ctx_logits(r->ctx, i), nv);
        r->n_held += k;
        for (int e = 0; e < o->n_layers; e++)
            for (int cal = 0; cal < 2; cal++) {
                if (es_exit_heads_logits(cal ? r->heads : r->zero, o->layers[e], r->fs.h[e], k, r->lg, &r->err) != ES_OK)
                    return cli_error("fit-exit", "%s", r->err.msg);
                for (int i = 0; i < k; i++)
                    if (argmax(r->lg + (size_t)i * nv, nv) == r->final_top[i]) (cal ? r->agree_cal : r->agree_zero)[e]++;
            }
    }
    es_seq_close(r->ctx, s);
    return 0;
}

/* 3. fit: each layer's (XᵀX + λI) W = XᵀY, solved and set as the calibrated head's adapter. */
static int fit_solve(fit_run *r) {
    const fit_opts *o = &r->o;
    const int d = r->d;
    for (int k = 0; k < o->n_layers; k++) {
        cli_progress(NULL, "solving", (double)k / o->n_layers);
        float *wk = r->W + (size_t)k * d * d, *bk = r->B + (size_t)k * d;
        if (es_ridge_solve(r->ridge[k], o->lambda, wk, bk, &r->err) != ES_OK ||
            es_exit_heads_set_adapter(r->heads, o->layers[k], wk, bk, &r->err) != ES_OK)
            return cli_error("fit-exit", "layer %d: %s", o->layers[k], r->err.msg);
    }
    return 0;
}

/* 5. write: the adapters as exit.<L>.weight / exit.<L>.bias, the agreement figures as metadata. */
static int write_adapters(fit_run *r, const float *zero_top, const float *cal_top) {
    const fit_opts *o = &r->o;
    const int d = r->d;
    es_gguf_writer *w = es_gguf_writer_init();
    if (!w) return cli_error("fit-exit", "out of memory");
    int32_t layers32[ES_EXIT_MAX];
    for (int k = 0; k < o->n_layers; k++) layers32[k] = o->layers[k];
    char desc[256];
    es_model_desc(r->m, desc, sizeof desc);
    es_status ws = es_gguf_set_str(w, "general.type", "edgespec-exit-heads");
    if (ws == ES_OK) ws = es_gguf_set_str(w, "edgespec.exit.target", desc);
    if (ws == ES_OK) ws = es_gguf_set_u32(w, "edgespec.exit.n_embd", (uint32_t)d);
    if (ws == ES_OK) ws = es_gguf_set_u32(w, "edgespec.exit.n_layer", (uint32_t)r->nl);
    if (ws == ES_OK) ws = es_gguf_set_arr(w, "edgespec.exit.layers", ES_GGUF_INT32, layers32, (uint64_t)o->n_layers);
    if (ws == ES_OK) ws = es_gguf_set_arr(w, "edgespec.exit.zero_top1", ES_GGUF_FLOAT32, zero_top, (uint64_t)o->n_layers);
    if (ws == ES_OK) ws = es_gguf_set_arr(w, "edgespec.exit.calibrated_top1", ES_GGUF_FLOAT32, cal_top, (uint64_t)o->n_layers);
    for (int k = 0; k < o->n_layers && ws == ES_OK; k++) {
        char name[64];
        const int64_t ne2[2] = {d, d}, ne1[1] = {d};
        float *wk = r->W + (size_t)k * d * d, *bk = r->B + (size_t)k * d;
        snprintf(name, sizeof name, "exit.%d.weight", o->layers[k]);
        if ((ws = es_gguf_add_tensor(w, name, ES_TYPE_F32, 2, ne2, wk)) != ES_OK) break;
        snprintf(name, sizeof name, "exit.%d.bias", o->layers[k]);
        ws = es_gguf_add_tensor(w, name, ES_TYPE_F32, 1, ne1, bk);
    }
    if (ws == ES_OK) ws = es_gguf_write(w, o->out_path, NULL, NULL, &r->err);
    es_gguf_writer_free(w);
    if (ws != ES_OK) return cli_error("fit-exit", "%s: %s", o->out_path, r->err.msg[0] ? r->err.msg : es_status_str(ws));
    return 0;
}

static void print_report(const fit_run *r, const float *zero_top, const float *cal_top) {
    const fit_opts *o = &r->o;
    const int64_t train_rows = es_ridge_rows(r->ridge[0]);
    if (o->json) {
        cJSON *j = cJSON_CreateObject(), *jl = cJSON_CreateArray();
        char *mc = cli_utf8_clean(o->model_path, strlen(o->model_path)), *oc = cli_utf8_clean(o->out_path, strlen(o->out_path));
        cJSON_AddStringToObject(j, "model", mc ? mc : "");
        cJSON_AddStringToObject(j, "output", oc ? oc : "");
        free(mc);
        free(oc);
        cJSON_AddNumberToObject(j, "n_layer", r->nl);
        cJSON_AddNumberToObject(j, "n_embd", r->d);
        cJSON_AddNumberToObject(j, "texts", r->n_texts);
        cJSON_AddNumberToObject(j, "train_rows", (double)train_rows);
        cJSON_AddNumberToObject(j, "heldout_rows", (double)r->n_held);
        cJSON_AddNumberToObject(j, "lambda", o->lambda);
        for (int k = 0; k < o->n_layers; k++) {
            cJSON *l = cJSON_CreateObject();
            cJSON_AddNumberToObject(l, "layer", o->layers[k]);
            cJSON_AddNumberToObject(l, "zero_top1", zero_top[k]);
            cJSON_AddNumberToObject(l, "calibrated_top1", cal_top[k]);
            cJSON_AddItemToArray(jl, l);
        }
        cJSON_AddItemToObject(j, "layers", jl);
        char *out = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (out) printf("%s\n", out);
        free(out);
        return;
    }
    char desc[256];
    es_model_desc(r->m, desc, sizeof desc);
    printf("fit-exit: %s, %d texts (%lld rows fitted, %lld held out) -> %s\n", desc, r->n_texts, (long long)train_rows,
           (long long)r->n_held, o->out_path);
    printf("%6s  %14s  %16s\n", "layer", "zero-training", "calibrated");
    for (int k = 0; k < o->n_layers; k++)
        printf("%3d/%-2d  %13.1f%%  %15.1f%%\n", o->layers[k], r->nl, 100 * zero_top[k], 100 * cal_top[k]);
}

static void fit_free(fit_run *r) {
    for (int k = 0; k < ES_EXIT_MAX; k++) {
        es_ridge_free(r->ridge[k]);
        free(r->fs.h[k]);
    }
    free(r->fs.hf);
    free(r->lg);
    free(r->final_top);
    free(r->W);
    free(r->B);
    for (int t = 0; r->texts && t < r->n_texts; t++) free(r->texts[t]);
    free(r->texts);
    free(r->text_len);
    cli_prompts_free(&r->prompts);
    es_exit_heads_free(r->heads);
    es_exit_heads_free(r->zero);
    es_sampler_free(r->smp);
    es_ctx_free(r->ctx);
    es_model_free(r->m);
}

/* The five steps of the file's header: generate, collect, fit, evaluate, write. */
static int fit_exit(fit_run *r) {
    int rc = fit_setup(r);
    if (rc) return rc;
    for (int t = 0; t < r->n_texts; t++) {
        cli_progress(NULL, "generating", (double)t / r->n_texts);
        if ((rc = generate_text(r, t))) return rc;
    }
    /* collect and fit on the first texts; the last quarter is held out for the evaluation */
    const int n_held_texts = r->n_texts / 4 > 0 ? r->n_texts / 4 : 1, n_train = r->n_texts - n_held_texts;
    if ((rc = fit_prepare(r))) return rc;
    for (int t = 0; t < n_train; t++) {
        cli_progress(NULL, "collecting", (double)t / n_train);
        if ((rc = sweep_text(r, t, false))) return rc;
    }
    if ((rc = fit_solve(r))) return rc;
    for (int t = n_train; t < r->n_texts; t++) {
        cli_progress(NULL, "evaluating", (double)(t - n_train) / (r->n_texts - n_train));
        if ((rc = sweep_text(r, t, true))) return rc;
    }
    cli_progress(NULL, "", 1.0);
    float zero_top[ES_EXIT_MAX], cal_top[ES_EXIT_MAX];
    for (int k = 0; k < r->o.n_layers; k++) {
        zero_top[k] = r->n_held ? (float)r->agree_zero[k] / (float)r->n_held : 0;
        cal_top[k] = r->n_held ? (float)r->agree_cal[k] / (float)r->n_held : 0;
    }
    if ((rc = write_adapters(r, zero_top, cal_top))) return rc;
    print_report(r, zero_top, cal_top);
    return 0;
}

int cmd_fit_exit(int argc, char **argv) {
    fit_run r;
    memset(&r, 0, sizeof r);
    int rc = parse_options(argc, argv, &r.o);
    if (rc >= 0) return rc;
    rc = fit_exit(&r);
    fit_free(&r);
    return rc;
}
