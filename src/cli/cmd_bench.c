/* cmd_bench.c — `edgespec bench`: measured speed of one model (decode, prefill, the cost of verifying
 * k tokens in one pass, against the memory-bandwidth bound) and `edgespec bench spec`: target-only vs
 * speculative decoding side by side in one run. Benchmarks measure; they assert nothing. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/opts.h"
#include "cli/prompts.h"
#include "kernels/attn.h"
#include "specdec/spec.h"
#include "util/err.h"
#include "util/membw.h"

static const char *k_usage_model =
    "edgespec bench [model] -m MODEL.gguf [--threads N] [--n-prompt N] [--n-gen N] [--ks 1,2,4,8,16,32,64]\n"
    "               [--reps R] [--bw-mib M] [--kv-type f32|f16|q8_0] [--device cpu|vulkan[:N]] [--json]";
static const char *k_usage_spec =
    "edgespec bench spec -m TARGET.gguf --draft D1.gguf[,D2.gguf...] [--threads N] [--n-gen N] [--prompts FILE]\n"
    "               [--n-prompts N] [--draft-max K] [--tree-budget N --tree-depth N --tree-width N]\n"
    "               [--synthetic A1[,A2...]] [--kv-type f32|f16|q8_0] [--json]";

/* A comma list of at most cap sizes in 1..512 into out; its count, or -1 (a list too long is refused,
 * not cut short). */
static int parse_list(const char *s, int *out, int cap) {
    int n = 0;
    char buf[256];
    if (strlen(s) >= sizeof buf) return -1;
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        long v;
        if (n == cap || !cli_parse_long(tok, 1, 512, &v)) return -1;
        out[n++] = (int)v;
    }
    return n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Token, position and sequence arrays for batches of up to cap tokens (one allocation, made before
 * anything is timed: --n-prompt goes to 8192, past any fixed array). */
typedef struct bench_batch {
    int32_t *tok, *pos, *sq;
    int cap;
} bench_batch;

static bool bench_batch_init(bench_batch *bb, int cap) {
    int32_t *a = malloc((size_t)cap * 3 * sizeof *a);
    *bb = (bench_batch){a, a ? a + cap : NULL, a ? a + 2 * (size_t)cap : NULL, a ? cap : 0};
    return a != NULL;
}

/* Median seconds of `reps` passes of k tokens at positions base.. of seq (each truncated away
 * again); -1 when a pass fails (its message in *err). */
static double time_batch(es_ctx *c, const bench_batch *bb, int seq, int base, int k, int reps, int n_vocab, es_err *err) {
    double t[64];
    if (reps > 64) reps = 64;
    if (k > bb->cap) return (void)es_fail(err, ES_ERR_INVALID_ARG, "%d tokens past the batch arrays' %d", k, bb->cap), -1;
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < k; i++) {
            bb->tok[i] = (int32_t)((i * 131 + r * 7 + 3) % n_vocab);
            bb->pos[i] = base + i;
            bb->sq[i] = seq;
        }
        es_batch b = {k, bb->tok, bb->pos, bb->sq, NULL, NULL, NULL};
        double t0 = cli_now();
        if (es_decode(c, &b, err) != ES_OK) return -1;
        t[r] = cli_now() - t0;
        es_seq_truncate(c, seq, base, err);
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return t[reps / 2];
}

/* ---- one model ---------------------------------------------------------------------------------- */

/* bench model's options (k_usage_model). */
typedef struct bm_opts {
    const char *model_path;
    int threads, n_prompt, n_gen, reps, bw_mib;
    int ks[16], nk; /* the verification sizes timed */
    bool json;
    es_kv_type kv_type;
    es_backend_kind backend;
    int device;
} bm_opts;

/* What bench model measured, then what it derives for the report. */
typedef struct bm_result {
    double bw_gbs;       /* the host's memory read bandwidth; 0: not measured */
    double prefill_s;    /* best of 3 prefills of n_prompt tokens */
    double decode_s;     /* n_gen single-token steps */
    double verify_s[16]; /* median of `reps` passes of ks[i] tokens */
    /* derived (bm_summarize) */
    double decode_tps, prefill_tps, weight_bytes, bound_tps, verify_k1_s;
    char desc[256], devname[64];
} bm_result;

/* The options that need code of their own (cli/opts.h handlers; dst: the bm_opts). */
static bool bm_ks(const cli_arg *a) {
    bm_opts *o = a->dst;
    return (o->nk = parse_list(a->value, o->ks, 16)) > 0;
}
static bool bm_device(const cli_arg *a) {
    bm_opts *o = a->dst;
    return cli_parse_device(a->value, &o->backend, &o->device);
}

/* Reads argv into *o with the defaults. Returns -1 to go on, else the exit code: 0 after --help, 2 for
 * a usage error. */
static int bm_parse(int argc, char **argv, bm_opts *o) {
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (bm_opts){.threads = nc > 0 ? (int)nc : 1, .n_prompt = 128, .n_gen = 32, .reps = 5, .bw_mib = 512,
                   .ks = {1, 2, 4, 8, 16, 32, 64}, .nk = 7, .kv_type = ES_KV_F16, .backend = ES_BACKEND_CPU};
    const cli_opt t[] = {
        {.names = "-h|--help", .kind = CLI_STOP, .stop = 1},
        {.names = "--json", .kind = CLI_SET, .dst = &o->json},
        {.names = "-m|--model", .kind = CLI_STR, .dst = &o->model_path},
        {.names = "-t|--threads", .kind = CLI_INT, .dst = &o->threads, .lo = 1, .hi = 512, .must = "must be in 1..512"},
        {.names = "--n-prompt", .kind = CLI_INT, .dst = &o->n_prompt, .lo = 1, .hi = 8192, .must = "must be in 1..8192"},
        {.names = "--n-gen", .kind = CLI_INT, .dst = &o->n_gen, .lo = 1, .hi = 100000, .must = "must be in 1..100000"},
        {.names = "--reps", .kind = CLI_INT, .dst = &o->reps, .lo = 1, .hi = 64, .must = "must be in 1..64"},
        {.names = "--bw-mib", .kind = CLI_INT, .dst = &o->bw_mib, .lo = 0, .hi = 65536, .must = "must be in 0..65536"},
        {.names = "--ks", .kind = CLI_FN, .dst = o, .fn = bm_ks, .must = "must be a comma list of at most 16 sizes in 1..512"},
        {.names = "--kv-type", .kind = CLI_FN, .dst = &o->kv_type, .fn = cli_opt_kv_type, .must = "must be f32, f16 or q8_0"},
        {.names = "--device", .kind = CLI_FN, .dst = o, .fn = bm_device, .must = "must be cpu, vulkan or vulkan:N"},
    };
    const int rc = cli_opts_parse("bench", k_usage_model, t, sizeof t / sizeof t[0], argc, argv, NULL, NULL);
    if (rc == 1) {
        printf("usage: %s\n", k_usage_model);
        return 0;
    }
    if (rc != 0) return rc;
    if (!o->model_path) return cli_usage_error("bench", k_usage_model, "a model is required (-m MODEL.gguf)");
    if (o->backend != ES_BACKEND_CPU) o->bw_mib = 0; /* the host's memory bandwidth bounds nothing on a device */
    return -1;
}

/* Loads the model and a context sized for the longest batch (the prompt or the largest k) and the
 * whole run. Returns 0, else 1 after saying why. */
static int bm_open(const bm_opts *o, es_model **m, es_ctx **c) {
    es_model_params mp = cli_model_params();
    mp.progress = cli_progress;
    mp.no_repack = mp.no_repack || o->backend != ES_BACKEND_CPU; /* a device reads the file's layout */
    if (o->backend != ES_BACKEND_CPU) cli_keep_vulkan_driver();
    es_err err = {{0}};
    if (es_model_load(o->model_path, &mp, m, &err) != ES_OK) return cli_error("bench", "%s", err.msg);
    int kmax = 1;
    for (int i = 0; i < o->nk; i++) if (o->ks[i] > kmax) kmax = o->ks[i];
    es_ctx_params cp = es_ctx_default_params();
    cp.n_threads = o->threads;
    cp.n_batch_max = o->n_prompt > kmax ? o->n_prompt : kmax;
    cp.n_logits_max = 1;
    cp.n_ctx = o->n_prompt + o->n_gen + kmax + 8;
    cp.kv_type = o->kv_type;
    cp.backend = o->backend;
    cp.device = o->device;
    const int n_train = es_model_n_ctx_train(*m);
    if (cp.n_ctx > n_train && n_train >= o->n_prompt + kmax + 8) cp.n_ctx = n_train;
    if (es_ctx_init(*m, &cp, c, &err) != ES_OK) {
        es_model_free(*m);
        *m = NULL;
        return cli_error("bench", "%s", err.msg);
    }
    return 0;
}

/* Decodes a fixed prompt of n_prompt tokens into `seq`: the prefix the decode and verify timings
 * extend. */
static es_status bm_fill_prefix(es_ctx *c, const bench_batch *bb, int seq, int n_prompt, int n_vocab, es_err *err) {
    for (int i = 0; i < n_prompt; i++) {
        bb->tok[i] = (int32_t)((i * 37 + 11) % n_vocab);
        bb->pos[i] = i;
        bb->sq[i] = seq;
    }
    es_batch pb = {n_prompt, bb->tok, bb->pos, bb->sq, NULL, NULL, NULL};
    return es_decode(c, &pb, err);
}

/* Seconds of n_gen single-token steps after the prefix; the steps are truncated away again. */
static double bm_time_decode(es_ctx *c, int seq, int n_prompt, int n_gen, int n_vocab, es_err *err) {
    double t0 = cli_now();
    for (int i = 0; i < n_gen; i++) {
        int32_t t = (int32_t)((i * 17 + 5) % n_vocab), p = n_prompt + i;
        es_batch b = {1, &t, &p, &seq, NULL, NULL, NULL};
        if (es_decode(c, &b, err) != ES_OK) return -1;
    }
    double dec_s = cli_now() - t0;
    es_seq_truncate(c, seq, n_prompt, err);
    return dec_s;
}

/* The measurements, in order: bandwidth, prefill, decode, then one verification pass per k.
 * Returns 0, else 1 after saying which failed. */
static int bm_measure(es_ctx *c, const bm_opts *o, int n_vocab, bm_result *r) {
    es_err err = {{0}};
    int seq, kmax = o->n_prompt;
    for (int i = 0; i < o->nk; i++) kmax = o->ks[i] > kmax ? o->ks[i] : kmax;
    bench_batch bb;
    if (!bench_batch_init(&bb, kmax)) return cli_error("bench", "out of memory");
    int rc = 1;
    if (es_seq_open(c, &seq, &err) != ES_OK) { cli_error("bench", "%s", err.msg); goto done; }
    r->bw_gbs = o->bw_mib > 0 ? es_membw_read_gbs((size_t)o->bw_mib << 20, o->threads, 3) : 0;
    /* prefill: best of 3 */
    r->prefill_s = 1e30;
    for (int i = 0; i < 3; i++) {
        double t = time_batch(c, &bb, seq, 0, o->n_prompt, 1, n_vocab, &err);
        if (t < 0) { cli_error("bench", "prefill of %d tokens: %s", o->n_prompt, err.msg); goto done; }
        if (t > 0 && t < r->prefill_s) r->prefill_s = t;
    }
    /* leave a real prefix in the cache for decode and verify measurements */
    if (bm_fill_prefix(c, &bb, seq, o->n_prompt, n_vocab, &err) != ES_OK) { cli_error("bench", "prefix: %s", err.msg); goto done; }
    /* decode: n_gen single steps */
    if ((r->decode_s = bm_time_decode(c, seq, o->n_prompt, o->n_gen, n_vocab, &err)) < 0) {
        cli_error("bench", "decode: %s", err.msg);
        goto done;
    }
    for (int i = 0; i < o->nk; i++)
        if ((r->verify_s[i] = time_batch(c, &bb, seq, o->n_prompt, o->ks[i], o->reps, n_vocab, &err)) < 0) {
            cli_error("bench", "verification of %d tokens: %s", o->ks[i], err.msg);
            goto done;
        }
    rc = 0;
done:
    free(bb.tok);
    return rc;
}

/* Rates, the bandwidth bound (every weight read once per decoded token) and the k = 1 reference. */
static void bm_summarize(const es_model *m, const bm_opts *o, bm_result *r) {
    r->decode_tps = o->n_gen / r->decode_s;
    r->prefill_tps = o->n_prompt / r->prefill_s;
    r->weight_bytes = (double)es_model_weight_bytes(m);
    r->bound_tps = r->bw_gbs > 0 ? r->bw_gbs * 1e9 / r->weight_bytes : 0;
    r->verify_k1_s = r->verify_s[0];
    for (int i = 0; i < o->nk; i++) if (o->ks[i] == 1) r->verify_k1_s = r->verify_s[i];
    es_model_desc(m, r->desc, sizeof r->desc);
    snprintf(r->devname, sizeof r->devname, "cpu");
    if (o->backend == ES_BACKEND_VULKAN) snprintf(r->devname, sizeof r->devname, "vulkan:%d", o->device);
}

static void bm_print_json(const es_model *m, const bm_opts *o, const bm_result *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", o->model_path);
    cJSON_AddStringToObject(j, "model_desc", r->desc);
    cJSON_AddNumberToObject(j, "threads", o->threads);
    cJSON_AddStringToObject(j, "device", r->devname);
    cJSON_AddStringToObject(j, "kv_type", es_kv_type_name(o->kv_type));
    cJSON_AddNumberToObject(j, "kv_bytes_per_token", (double)es_ctx_kv_bytes_per_token(m, o->kv_type));
    cJSON_AddNumberToObject(j, "weight_bytes_per_token", r->weight_bytes);
    cJSON_AddNumberToObject(j, "memory_bandwidth_gbs", r->bw_gbs);
    cJSON_AddNumberToObject(j, "decode_tokens_per_second", r->decode_tps);
    cJSON_AddNumberToObject(j, "decode_bound_tokens_per_second", r->bound_tps);
    cJSON_AddNumberToObject(j, "decode_fraction_of_bound", r->bound_tps > 0 ? r->decode_tps / r->bound_tps : 0);
    cJSON_AddNumberToObject(j, "prefill_tokens", o->n_prompt);
    cJSON_AddNumberToObject(j, "prefill_tokens_per_second", r->prefill_tps);
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < o->nk; i++) {
        cJSON *v = cJSON_CreateObject();
        cJSON_AddNumberToObject(v, "k", o->ks[i]);
        cJSON_AddNumberToObject(v, "ms", r->verify_s[i] * 1e3);
        cJSON_AddNumberToObject(v, "cost_vs_k1", r->verify_s[i] / r->verify_k1_s);
        cJSON_AddNumberToObject(v, "tokens_per_second", o->ks[i] / r->verify_s[i]);
        cJSON_AddItemToArray(arr, v);
    }
    cJSON_AddItemToObject(j, "verify", arr);
    char *s = cJSON_PrintUnformatted(j);
    puts(s);
    free(s);
    cJSON_Delete(j);
}

static void bm_print_text(const es_model *m, const bm_opts *o, const bm_result *r) {
    printf("model      %s\n           %s\nthreads    %d\ndevice     %s\n", o->model_path, r->desc, o->threads, r->devname);
    printf("kv cache   %s, %lld bytes per token\n", es_kv_type_name(o->kv_type), (long long)es_ctx_kv_bytes_per_token(m, o->kv_type));
    printf("bandwidth  %.1f GB/s read -> decode bound %.1f tok/s (%.1f MB per token)\n", r->bw_gbs, r->bound_tps, r->weight_bytes / 1e6);
    printf("decode     %.2f tok/s (%.0f%% of the bound)\n", r->decode_tps, r->bound_tps > 0 ? 100 * r->decode_tps / r->bound_tps : 0);
    printf("prefill    %.2f tok/s (%d tokens)\n", r->prefill_tps, o->n_prompt);
    printf("verify     k  ms       cost/k1  tok/s\n");
    for (int i = 0; i < o->nk; i++)
        printf("           %-3d%-9.2f%-9.2f%.1f\n", o->ks[i], r->verify_s[i] * 1e3, r->verify_s[i] / r->verify_k1_s, o->ks[i] / r->verify_s[i]);
}

static int bench_model(int argc, char **argv) {
    bm_opts o;
    const int prc = bm_parse(argc, argv, &o);
    if (prc >= 0) return prc;
    es_model *m = NULL;
    es_ctx *c = NULL;
    const int orc = bm_open(&o, &m, &c);
    if (orc != 0) return orc;
    bm_result r = {0};
    const int mrc = bm_measure(c, &o, es_model_n_vocab(m), &r);
    if (mrc == 0) {
        bm_summarize(m, &o, &r);
        if (o.json) bm_print_json(m, &o, &r);
        else bm_print_text(m, &o, &r);
    }
    es_ctx_free(c);
    es_model_free(m);
    return mrc;
}

/* ---- speculative side by side ------------------------------------------------------------------ */

/* bench spec's options (k_usage_spec). */
typedef struct spec_opts {
    const char *target_path, *drafts_arg, *prompts_path;
    int threads, n_gen, n_prompts, draft_max, tb, td, tw; /* tb, td, tw: the tree's budget, depth, width */
    double alphas[8]; /* --synthetic: the acceptance rates */
    int na;           /* 0: real acceptance */
    bool json;
    es_kv_type kv_type;
    char prompts_default[4096]; /* prompts_path when --prompts is not given */
} spec_opts;

typedef struct spec_case {
    const char *draft;    /* NULL: target only */
    es_draft_mode mode;
    double alpha;         /* < 0: real acceptance */
} spec_case;

typedef struct spec_result {
    double seconds;
    long tokens, rounds, drafted, accepted;
    double cost_ratio; /* the chain's es_drafter_params.cost_ratio (0: off) */
} spec_result;

/* What every row of the table shares: the options, the target and its prompts (with its tokens), the
 * target-only speed the rows compare with, and the JSON rows. */
typedef struct spec_run {
    const spec_opts *o;
    es_model_params mp;
    es_model *target;
    const cli_prompts *prompts;
    double base_tps;
    cJSON *rows;
} spec_run;

/* One case over every prompt: a fresh target and draft context, one verifier and drafter per prompt.
 * The sums go into *res; a failure is reported and ends the case with what it has. */
static int run_case(const spec_run *sr, es_model *draft, const spec_case *sc, spec_result *res) {
    const spec_opts *o = sr->o;
    es_model *target = sr->target;
    const cli_prompts *pr = sr->prompts;
    memset(res, 0, sizeof *res);
    es_err err = {{0}};
    es_ctx_params cp = es_ctx_default_params();
    cp.n_threads = o->threads;
    cp.n_batch_max = ES_SPEC_MAX_NODES + 1;
    cp.kv_type = o->kv_type;
    es_ctx *tc = NULL, *dc = NULL;
    if (es_ctx_init(target, &cp, &tc, &err) != ES_OK) return cli_error("bench", "%s", err.msg);
    es_model *dm = draft ? draft : target;
    if (es_ctx_init(dm, &cp, &dc, &err) != ES_OK) { es_ctx_free(tc); return cli_error("bench", "%s", err.msg); }
    int n_ctx = es_model_n_ctx_train(target) < es_model_n_ctx_train(dm) ? es_model_n_ctx_train(target) : es_model_n_ctx_train(dm);
    int32_t *out = malloc((size_t)o->n_gen * sizeof *out);
    if (!out) {
        es_ctx_free(dc);
        es_ctx_free(tc);
        return cli_error("bench", "out of memory");
    }
    const int32_t stops[2] = {es_tokenizer_bos(es_model_tokenizer(target)), es_tokenizer_eos(es_model_tokenizer(target))};
    for (int p = 0; p < pr->count; p++) {
        const cli_prompt *q = &pr->at[p];
        int ts, ds;
        es_seq_open(tc, &ts, &err);
        es_seq_open(dc, &ds, &err);
        es_verifier_params vp = {sc->alpha >= 0 ? ES_ACCEPT_SYNTHETIC : ES_ACCEPT_GREEDY, es_sampler_default_params(), sc->alpha};
        vp.sampling.temperature = 0;
        vp.sampling.repeat_penalty = 1.0f;
        es_drafter_params dp = es_drafter_default_params();
        dp.mode = sc->mode;
        dp.k_max = draft ? o->draft_max : 1;
        dp.adaptive = sc->alpha < 0;
        if (draft && dp.adaptive) dp.cost_ratio = es_drafter_cost_ratio(target, draft); /* as run --draft's */
        res->cost_ratio = dp.mode == ES_DRAFT_CHAIN ? dp.cost_ratio : 0;
        dp.tree_budget = o->tb;
        dp.tree_depth = o->td;
        dp.tree_width = o->tw;
        es_verifier *v = NULL;
        es_drafter *d = NULL;
        es_spec_stats st;
        /* target only = empty trees: each round is one autoregressive step */
        if (es_verifier_init(tc, ts, &vp, &v, &err) != ES_OK || es_drafter_init(dc, ds, &dp, &d, &err) != ES_OK) {
            cli_error("bench", "%s", err.msg);
            break;
        }
        double t0 = cli_now();
        es_status s;
        if (!draft) {
            /* no drafter work at all: verify empty trees */
            s = es_verifier_prefill(v, q->tok, q->n_tok - 1, &err);
            es_spec_tree *tree = calloc(1, sizeof *tree);
            if (s == ES_OK && !tree) s = es_fail(&err, ES_ERR_NOMEM, "out of memory");
            es_spec_verdict vd;
            int32_t root = q->tok[q->n_tok - 1];
            int n = 0;
            while (s == ES_OK && n < o->n_gen && q->n_tok + n < n_ctx) {
                s = es_verifier_verify(v, root, tree, &vd, &err);
                root = vd.bonus;
                n++;
                res->rounds++;
                if (root == stops[0] || root == stops[1]) break;
            }
            free(tree);
            res->tokens += n;
        } else {
            s = es_spec_generate(d, v, q->tok, q->n_tok, o->n_gen, n_ctx, stops, 2, out, &st, NULL, NULL, &err);
            res->tokens += st.n_generated;
            res->rounds += st.rounds;
            res->drafted += st.drafted;
            res->accepted += st.accepted;
        }
        res->seconds += cli_now() - t0;
        es_drafter_free(d);
        es_verifier_free(v);
        es_seq_close(tc, ts);
        es_seq_close(dc, ds);
        if (s != ES_OK) { cli_error("bench", "%s", err.msg); break; }
    }
    free(out);
    es_ctx_free(tc);
    es_ctx_free(dc);
    return 0;
}

/* --synthetic A1[,A2...]: at most 8 rates in 0..1 into the spec_opts (dst). */
static bool spec_alphas(const cli_arg *a) {
    spec_opts *o = a->dst;
    char buf[256];
    if (strlen(a->value) >= sizeof buf) return false;
    snprintf(buf, sizeof buf, "%s", a->value);
    o->na = 0;
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        double v;
        if (o->na == 8 || !cli_parse_float(t, 0, 1, &v)) return false;
        o->alphas[o->na++] = v;
    }
    return true;
}

/* --draft D1[,D2...]: at most SPEC_MAX_DRAFTS files, the list under SPEC_DRAFTS_BYTES (refused, not cut
 * short: a draft left out would be missing from the table without a word). */
#define SPEC_MAX_DRAFTS 16
#define SPEC_DRAFTS_BYTES 2048
static bool spec_drafts(const cli_arg *a) {
    int n = 1;
    for (const char *c = a->value; *c; c++) n += *c == ',';
    if (!a->value[0] || n > SPEC_MAX_DRAFTS || strlen(a->value) >= SPEC_DRAFTS_BYTES) return false;
    *(const char **)a->dst = a->value;
    return true;
}

/* Reads argv (argv[1] == "spec") into *o with the defaults. Returns -1 to go on, else the exit code:
 * 0 after --help, 2 for a usage error. */
static int spec_parse(int argc, char **argv, spec_opts *o) {
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (spec_opts){.threads = nc > 0 ? (int)nc : 1, .n_gen = 128, .n_prompts = 8, .draft_max = 8, .tb = 8, .td = 8, .tw = 4,
                     .kv_type = ES_KV_F16};
    char must_budget[64];
    snprintf(must_budget, sizeof must_budget, "must be in 1..%d", ES_SPEC_MAX_NODES);
    const cli_opt t[] = {
        {.names = "-h|--help", .kind = CLI_STOP, .stop = 1},
        {.names = "--json", .kind = CLI_SET, .dst = &o->json},
        {.names = "-m|--model", .kind = CLI_STR, .dst = &o->target_path},
        {.names = "--draft", .kind = CLI_FN, .dst = &o->drafts_arg, .fn = spec_drafts, .must = "must be a comma list of at most 16 GGUF files"},
        {.names = "--prompts", .kind = CLI_STR, .dst = &o->prompts_path},
        {.names = "--synthetic", .kind = CLI_FN, .dst = o, .fn = spec_alphas, .must = "must be a comma list of at most 8 rates in 0..1"},
        {.names = "--kv-type", .kind = CLI_FN, .dst = &o->kv_type, .fn = cli_opt_kv_type, .must = "must be f32, f16 or q8_0"},
        {.names = "-t|--threads", .kind = CLI_INT, .dst = &o->threads, .lo = 1, .hi = 512, .must = "must be in 1..512"},
        {.names = "--n-gen", .kind = CLI_INT, .dst = &o->n_gen, .lo = 1, .hi = 100000, .must = "must be in 1..100000"},
        {.names = "--n-prompts", .kind = CLI_INT, .dst = &o->n_prompts, .lo = 1, .hi = 10000, .must = "must be in 1..10000"},
        {.names = "--draft-max", .kind = CLI_INT, .dst = &o->draft_max, .lo = 1, .hi = 64, .must = "must be in 1..64"},
        {.names = "--tree-budget", .kind = CLI_INT, .dst = &o->tb, .lo = 1, .hi = ES_SPEC_MAX_NODES, .must = must_budget},
        {.names = "--tree-depth", .kind = CLI_INT, .dst = &o->td, .lo = 1, .hi = 64, .must = "must be in 1..64"},
        {.names = "--tree-width", .kind = CLI_INT, .dst = &o->tw, .lo = 1, .hi = 64, .must = "must be in 1..64"},
    };
    const int rc = cli_opts_parse("bench", k_usage_spec, t, sizeof t / sizeof t[0], argc - 1, argv + 1, NULL, NULL);
    if (rc == 1) {
        printf("usage: %s\n", k_usage_spec);
        return 0;
    }
    if (rc != 0) return rc;
    if (!o->target_path || !o->drafts_arg) return cli_usage_error("bench", k_usage_spec, "-m TARGET and --draft DRAFT are required");
    if (!o->prompts_path) {
        snprintf(o->prompts_default, sizeof o->prompts_default, "%s/../prompts/stories.txt", cli_models_dir());
        o->prompts_path = o->prompts_default;
    }
    return -1;
}

/* The first row: the target alone, the speed every other row is compared with (sr->base_tps). */
static void spec_run_baseline(spec_run *sr) {
    spec_result base;
    spec_case none = {NULL, ES_DRAFT_CHAIN, -1};
    run_case(sr, NULL, &none, &base);
    sr->base_tps = base.tokens / base.seconds;
    if (!sr->o->json) printf("%-40s %-6s %-6s %8s %8s %8s %8s\n", "draft", "mode", "alpha", "tok/s", "speedup", "acc.len", "E_k");
    if (!sr->o->json) printf("%-40s %-6s %-6s %8.2f %8.2f %8s %8s\n", "(target only)", "-", "-", sr->base_tps, 1.0, "1.00", "-");
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "draft", "none");
    cJSON_AddNumberToObject(b, "tokens_per_second", sr->base_tps);
    cJSON_AddNumberToObject(b, "tokens", (double)base.tokens);
    cJSON_AddItemToArray(sr->rows, b);
}

/* One row: a draft in one mode at one acceptance rate (ai: its index in --synthetic's rates, synthetic
 * runs only). E_k is the expected tokens per chain round of k = --draft-max at that rate. */
static void spec_add_row(spec_run *sr, const char *dname, int mode, int ai, const spec_result *r) {
    const spec_opts *o = sr->o;
    const int na = o->na;
    const double tps = r->tokens / r->seconds, al = r->rounds ? 1.0 + (double)r->accepted / r->rounds : 0;
    const double alpha = na ? o->alphas[ai] : (r->drafted ? (double)r->accepted / r->drafted : 0);
    const int k = o->draft_max;
    const double ek = alpha < 1 ? (1 - pow(alpha, k + 1)) / (1 - alpha) : k + 1;
    cJSON *row = cJSON_CreateObject();
    cJSON_AddStringToObject(row, "draft", dname);
    cJSON_AddStringToObject(row, "mode", mode ? "tree" : "chain");
    cJSON_AddBoolToObject(row, "synthetic", na > 0);
    if (na) cJSON_AddNumberToObject(row, "synthetic_alpha", o->alphas[ai]);
    cJSON_AddNumberToObject(row, "tokens_per_second", tps);
    cJSON_AddNumberToObject(row, "speedup", tps / sr->base_tps);
    cJSON_AddNumberToObject(row, "acceptance_length", al);
    cJSON_AddNumberToObject(row, "acceptance_rate", r->drafted ? (double)r->accepted / r->drafted : 0);
    cJSON_AddNumberToObject(row, "expected_chain_tokens_per_round", ek);
    cJSON_AddNumberToObject(row, "cost_ratio", r->cost_ratio);
    cJSON_AddNumberToObject(row, "rounds", (double)r->rounds);
    cJSON_AddNumberToObject(row, "tokens", (double)r->tokens);
    cJSON_AddItemToArray(sr->rows, row);
    if (!o->json) {
        char as[16];
        snprintf(as, sizeof as, na ? "%.2f" : "real", o->alphas[na ? ai : 0]);
        printf("%-40s %-6s %-6s %8.2f %8.2f %8.2f %8.2f\n", dname, mode ? "tree" : "chain", as, tps, tps / sr->base_tps, al, ek);
    }
}

/* Every row of one draft: chain and tree at its real acceptance, or a chain at each synthetic rate.
 * A draft that does not load or does not share the target's vocabulary is reported and skipped. */
static void spec_run_draft(spec_run *sr, const char *dname) {
    es_err err = {{0}};
    es_model *dm = NULL;
    if (es_model_load(dname, &sr->mp, &dm, &err) != ES_OK) { cli_error("bench", "%s", err.msg); return; }
    if (es_spec_check_vocab(es_model_tokenizer(sr->target), es_model_tokenizer(dm), &err) != ES_OK) {
        cli_error("bench", "%s: %s", dname, err.msg);
        es_model_free(dm);
        return;
    }
    const int na = sr->o->na, n_alpha = na ? na : 1;
    for (int ai = 0; ai < n_alpha; ai++)
        /* Synthetic acceptance flips one coin per depth on the first child only, so a tree would be a
           chain with wasted verify rows: synthetic runs measure chains (as vLLM's synthetic sampler). */
        for (int mode = 0; mode < (na ? 1 : 2); mode++) {
            spec_case sc = {dname, (es_draft_mode)mode, na ? sr->o->alphas[ai] : -1};
            spec_result r;
            run_case(sr, dm, &sc, &r);
            spec_add_row(sr, dname, mode, ai, &r);
        }
    es_model_free(dm);
}

/* The run's settings and its rows (sr->rows moves into the printed object). */
static void spec_print_json(spec_run *sr) {
    const spec_opts *o = sr->o;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "target", o->target_path);
    cJSON_AddNumberToObject(j, "threads", o->threads);
    cJSON_AddStringToObject(j, "kv_type", es_kv_type_name(o->kv_type));
    cJSON_AddNumberToObject(j, "n_gen", o->n_gen);
    cJSON_AddNumberToObject(j, "n_prompts", sr->prompts->count);
    cJSON_AddNumberToObject(j, "draft_max", o->draft_max);
    cJSON_AddNumberToObject(j, "tree_budget", o->tb);
    cJSON_AddNumberToObject(j, "tree_depth", o->td);
    cJSON_AddNumberToObject(j, "tree_width", o->tw);
    cJSON_AddItemToObject(j, "results", sr->rows);
    sr->rows = NULL;
    char *s = cJSON_PrintUnformatted(j);
    puts(s);
    free(s);
    cJSON_Delete(j);
}

static int bench_spec(int argc, char **argv) {
    spec_opts o;
    const int rc = spec_parse(argc, argv, &o);
    if (rc >= 0) return rc;
    spec_run sr = {.o = &o, .mp = cli_model_params()};
    es_err err = {{0}};
    if (es_model_load(o.target_path, &sr.mp, &sr.target, &err) != ES_OK) return cli_error("bench", "%s", err.msg);
    cli_prompts prompts;
    if (cli_prompts_read(o.prompts_path, o.n_prompts, es_model_tokenizer(sr.target), &prompts, &err) != ES_OK ||
        prompts.count == 0) {
        /* no prompt would make every row 0 tokens in 0 seconds (tokens/s NaN) */
        if (prompts.count == 0 && !err.msg[0]) snprintf(err.msg, sizeof err.msg, "no line of %s gives a token", o.prompts_path);
        cli_prompts_free(&prompts);
        es_model_free(sr.target);
        return cli_error("bench", "prompts: %s", err.msg);
    }
    sr.prompts = &prompts;
    char dbuf[SPEC_DRAFTS_BYTES];
    snprintf(dbuf, sizeof dbuf, "%s", o.drafts_arg);
    const char *dnames[SPEC_MAX_DRAFTS];
    int nd = 0;
    for (char *t = strtok(dbuf, ","); t && nd < SPEC_MAX_DRAFTS; t = strtok(NULL, ",")) dnames[nd++] = t;
    sr.rows = cJSON_CreateArray();
    spec_run_baseline(&sr);
    for (int di = 0; di < nd; di++) spec_run_draft(&sr, dnames[di]);
    if (o.json) spec_print_json(&sr);
    cJSON_Delete(sr.rows);
    cli_prompts_free(&prompts);
    es_model_free(sr.target);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "spec")) return bench_spec(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "serve")) return bench_serve(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "model")) return bench_model(argc - 1, argv + 1);
    return bench_model(argc, argv);
}
