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
#include "kernels/attn.h"
#include "specdec/spec.h"
#include "util/membw.h"

static const char *k_usage_model =
    "edgespec bench [model] -m MODEL.gguf [--threads N] [--n-prompt N] [--n-gen N] [--ks 1,2,4,8,16,32,64]\n"
    "               [--reps R] [--bw-mib M] [--kv-type f32|f16|q8_0] [--device cpu|vulkan[:N]] [--json]";
static const char *k_usage_spec =
    "edgespec bench spec -m TARGET.gguf --draft D1.gguf[,D2.gguf...] [--threads N] [--n-gen N] [--prompts FILE]\n"
    "               [--n-prompts N] [--draft-max K] [--tree-budget N --tree-depth N --tree-width N]\n"
    "               [--synthetic A1[,A2...]] [--kv-type f32|f16|q8_0] [--json]";

static int parse_list(const char *s, int *out, int cap) {
    int n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok && n < cap; tok = strtok(NULL, ",")) {
        long v;
        if (!cli_parse_long(tok, 1, 512, &v)) return -1;
        out[n++] = (int)v;
    }
    return n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds of `reps` runs of a k-token chain on top of a prefix of `base` tokens. */
static double time_batch(es_ctx *c, int seq, int base, int k, int reps, int n_vocab) {
    int32_t tok[512], pos[512], sq[512];
    double t[64];
    if (reps > 64) reps = 64;
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < k; i++) { tok[i] = (int32_t)((i * 131 + r * 7 + 3) % n_vocab); pos[i] = base + i; sq[i] = seq; }
        es_batch b = {k, tok, pos, sq, NULL, NULL, NULL};
        es_err err;
        double t0 = cli_now();
        if (es_decode(c, &b, &err) != ES_OK) return -1;
        t[r] = cli_now() - t0;
        es_seq_truncate(c, seq, base, &err);
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return t[reps / 2];
}

static int bench_model(int argc, char **argv) {
    const char *model_path = NULL;
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = nc > 0 ? (int)nc : 1, n_prompt = 128, n_gen = 32, reps = 5, bw_mib = 512;
    int ks[16] = {1, 2, 4, 8, 16, 32, 64}, nk = 7;
    bool json = false;
    es_kv_type kv_type = ES_KV_F16;
    es_backend_kind backend = ES_BACKEND_CPU;
    int device = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long lv;
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("usage: %s\n", k_usage_model); return 0; }
        if (!v) return cli_usage_error("bench", k_usage_model, "unknown option or missing value: '%s'", a);
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model_path = v;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { if (!cli_parse_long(v, 1, 512, &lv)) return cli_usage_error("bench", k_usage_model, "bad --threads '%s'", v); threads = (int)lv; }
        else if (!strcmp(a, "--n-prompt")) { if (!cli_parse_long(v, 1, 8192, &lv)) return cli_usage_error("bench", k_usage_model, "bad --n-prompt '%s'", v); n_prompt = (int)lv; }
        else if (!strcmp(a, "--n-gen")) { if (!cli_parse_long(v, 1, 100000, &lv)) return cli_usage_error("bench", k_usage_model, "bad --n-gen '%s'", v); n_gen = (int)lv; }
        else if (!strcmp(a, "--reps")) { if (!cli_parse_long(v, 1, 64, &lv)) return cli_usage_error("bench", k_usage_model, "bad --reps '%s'", v); reps = (int)lv; }
        else if (!strcmp(a, "--bw-mib")) { if (!cli_parse_long(v, 0, 65536, &lv)) return cli_usage_error("bench", k_usage_model, "bad --bw-mib '%s'", v); bw_mib = (int)lv; }
        else if (!strcmp(a, "--ks")) { if ((nk = parse_list(v, ks, 16)) <= 0) return cli_usage_error("bench", k_usage_model, "bad --ks '%s'", v); }
        else if (!strcmp(a, "--kv-type")) { if (!cli_parse_kv_type(v, &kv_type)) return cli_usage_error("bench", k_usage_model, "bad --kv-type '%s' (f32, f16 or q8_0)", v); }
        else if (!strcmp(a, "--device")) { if (!cli_parse_device(v, &backend, &device)) return cli_usage_error("bench", k_usage_model, "bad --device '%s' (cpu, vulkan or vulkan:N)", v); }
        else return cli_usage_error("bench", k_usage_model, "unknown option '%s'", a);
    }
    if (!model_path) return cli_usage_error("bench", k_usage_model, "a model is required (-m MODEL.gguf)");
    es_model_params mp = cli_model_params();
    mp.progress = cli_progress;
    mp.no_repack = mp.no_repack || backend != ES_BACKEND_CPU; /* a device reads the file's layout */
    char devname[64] = "cpu";
    if (backend == ES_BACKEND_VULKAN) snprintf(devname, sizeof devname, "vulkan:%d", device);
    if (backend != ES_BACKEND_CPU) {
        bw_mib = 0; /* the host's memory bandwidth bounds nothing on a device */
        cli_keep_vulkan_driver();
    }
    es_model *m = NULL;
    es_err err = {{0}};
    if (es_model_load(model_path, &mp, &m, &err) != ES_OK) return cli_error("bench", "%s", err.msg);
    int kmax = 1;
    for (int i = 0; i < nk; i++) if (ks[i] > kmax) kmax = ks[i];
    es_ctx_params cp = es_ctx_default_params();
    cp.n_threads = threads;
    cp.n_batch_max = n_prompt > kmax ? n_prompt : kmax;
    cp.n_logits_max = 1;
    cp.n_ctx = n_prompt + n_gen + kmax + 8;
    cp.kv_type = kv_type;
    cp.backend = backend;
    cp.device = device;
    if (cp.n_ctx > es_model_n_ctx_train(m) && es_model_n_ctx_train(m) >= n_prompt + kmax + 8) cp.n_ctx = es_model_n_ctx_train(m);
    es_ctx *c = NULL;
    if (es_ctx_init(m, &cp, &c, &err) != ES_OK) { es_model_free(m); return cli_error("bench", "%s", err.msg); }
    const int nv = es_model_n_vocab(m);
    int seq;
    es_seq_open(c, &seq, &err);

    double bw = bw_mib > 0 ? es_membw_read_gbs((size_t)bw_mib << 20, threads, 3) : 0;
    /* prefill: best of 3 */
    double pf_best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t = time_batch(c, seq, 0, n_prompt, 1, nv);
        if (t > 0 && t < pf_best) pf_best = t;
    }
    /* leave a real prefix in the cache for decode and verify measurements */
    int32_t *ptok = malloc((size_t)n_prompt * sizeof *ptok), *ppos = malloc((size_t)n_prompt * sizeof *ppos), *psq = malloc((size_t)n_prompt * sizeof *psq);
    for (int i = 0; i < n_prompt; i++) { ptok[i] = (int32_t)((i * 37 + 11) % nv); ppos[i] = i; psq[i] = seq; }
    es_batch pb = {n_prompt, ptok, ppos, psq, NULL, NULL, NULL};
    es_decode(c, &pb, &err);
    /* decode: n_gen single steps */
    double t0 = cli_now();
    for (int i = 0; i < n_gen; i++) {
        int32_t t = (int32_t)((i * 17 + 5) % nv), p = n_prompt + i;
        es_batch b = {1, &t, &p, &seq, NULL, NULL, NULL};
        if (es_decode(c, &b, &err) != ES_OK) break;
    }
    double dec_s = cli_now() - t0;
    es_seq_truncate(c, seq, n_prompt, &err);
    double kt[16] = {0};
    for (int i = 0; i < nk; i++) kt[i] = time_batch(c, seq, n_prompt, ks[i], reps, nv);
    double k1 = kt[0];
    for (int i = 0; i < nk; i++) if (ks[i] == 1) k1 = kt[i];

    const double dec_tps = n_gen / dec_s, pf_tps = n_prompt / pf_best;
    const double bytes = (double)es_model_weight_bytes(m);
    const double bound = bw > 0 ? bw * 1e9 / bytes : 0;
    char desc[256];
    es_model_desc(m, desc, sizeof desc);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", model_path);
        cJSON_AddStringToObject(j, "model_desc", desc);
        cJSON_AddNumberToObject(j, "threads", threads);
        cJSON_AddStringToObject(j, "device", devname);
        cJSON_AddStringToObject(j, "kv_type", es_kv_type_name(kv_type));
        cJSON_AddNumberToObject(j, "kv_bytes_per_token", (double)es_ctx_kv_bytes_per_token(m, kv_type));
        cJSON_AddNumberToObject(j, "weight_bytes_per_token", bytes);
        cJSON_AddNumberToObject(j, "memory_bandwidth_gbs", bw);
        cJSON_AddNumberToObject(j, "decode_tokens_per_second", dec_tps);
        cJSON_AddNumberToObject(j, "decode_bound_tokens_per_second", bound);
        cJSON_AddNumberToObject(j, "decode_fraction_of_bound", bound > 0 ? dec_tps / bound : 0);
        cJSON_AddNumberToObject(j, "prefill_tokens", n_prompt);
        cJSON_AddNumberToObject(j, "prefill_tokens_per_second", pf_tps);
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; i < nk; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "k", ks[i]);
            cJSON_AddNumberToObject(o, "ms", kt[i] * 1e3);
            cJSON_AddNumberToObject(o, "cost_vs_k1", kt[i] / k1);
            cJSON_AddNumberToObject(o, "tokens_per_second", ks[i] / kt[i]);
            cJSON_AddItemToArray(arr, o);
        }
        cJSON_AddItemToObject(j, "verify", arr);
        char *s = cJSON_PrintUnformatted(j);
        puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        printf("model      %s\n           %s\nthreads    %d\ndevice     %s\n", model_path, desc, threads, devname);
        printf("kv cache   %s, %lld bytes per token\n", es_kv_type_name(kv_type), (long long)es_ctx_kv_bytes_per_token(m, kv_type));
        printf("bandwidth  %.1f GB/s read -> decode bound %.1f tok/s (%.1f MB per token)\n", bw, bound, bytes / 1e6);
        printf("decode     %.2f tok/s (%.0f%% of the bound)\n", dec_tps, bound > 0 ? 100 * dec_tps / bound : 0);
        printf("prefill    %.2f tok/s (%d tokens)\n", pf_tps, n_prompt);
        printf("verify     k  ms       cost/k1  tok/s\n");
        for (int i = 0; i < nk; i++) printf("           %-3d%-9.2f%-9.2f%.1f\n", ks[i], kt[i] * 1e3, kt[i] / k1, ks[i] / kt[i]);
    }
    free(ptok); free(ppos); free(psq);
    es_ctx_free(c);
    es_model_free(m);
    return 0;
}

/* ---- speculative side by side ------------------------------------------------------------------ */

typedef struct spec_case {
    const char *draft;    /* NULL: target only */
    es_draft_mode mode;
    double alpha;         /* < 0: real acceptance */
} spec_case;

typedef struct spec_result {
    double seconds;
    long tokens, rounds, drafted, accepted;
} spec_result;

static int run_case(es_model *target, es_model *draft, const spec_case *sc, int threads, es_kv_type kv_type, int n_gen, int32_t **prompts,
                    const int *np, int n_prompts, int draft_max, int tb, int td, int tw, spec_result *res) {
    memset(res, 0, sizeof *res);
    es_err err = {{0}};
    es_ctx_params cp = es_ctx_default_params();
    cp.n_threads = threads;
    cp.n_batch_max = ES_SPEC_MAX_NODES + 1;
    cp.kv_type = kv_type;
    es_ctx *tc = NULL, *dc = NULL;
    if (es_ctx_init(target, &cp, &tc, &err) != ES_OK) return cli_error("bench", "%s", err.msg);
    es_model *dm = draft ? draft : target;
    if (es_ctx_init(dm, &cp, &dc, &err) != ES_OK) { es_ctx_free(tc); return cli_error("bench", "%s", err.msg); }
    int n_ctx = es_model_n_ctx_train(target) < es_model_n_ctx_train(dm) ? es_model_n_ctx_train(target) : es_model_n_ctx_train(dm);
    int32_t *out = malloc((size_t)n_gen * sizeof *out);
    const int32_t stops[2] = {es_tokenizer_bos(es_model_tokenizer(target)), es_tokenizer_eos(es_model_tokenizer(target))};
    for (int p = 0; p < n_prompts; p++) {
        int ts, ds;
        es_seq_open(tc, &ts, &err);
        es_seq_open(dc, &ds, &err);
        es_verifier_params vp = {sc->alpha >= 0 ? ES_ACCEPT_SYNTHETIC : ES_ACCEPT_GREEDY, es_sampler_default_params(), sc->alpha};
        vp.sampling.temperature = 0;
        vp.sampling.repeat_penalty = 1.0f;
        es_drafter_params dp = es_drafter_default_params();
        dp.mode = sc->mode;
        dp.k_max = draft ? draft_max : 1;
        dp.adaptive = sc->alpha < 0;
        dp.tree_budget = tb;
        dp.tree_depth = td;
        dp.tree_width = tw;
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
            s = es_verifier_prefill(v, prompts[p], np[p] - 1, &err);
            es_spec_tree *tree = calloc(1, sizeof *tree);
            es_spec_verdict vd;
            int32_t root = prompts[p][np[p] - 1];
            int n = 0;
            while (s == ES_OK && n < n_gen && np[p] + n < n_ctx) {
                s = es_verifier_verify(v, root, tree, &vd, &err);
                root = vd.bonus;
                n++;
                res->rounds++;
                if (root == stops[0] || root == stops[1]) break;
            }
            free(tree);
            res->tokens += n;
        } else {
            s = es_spec_generate(d, v, prompts[p], np[p], n_gen, n_ctx, stops, 2, out, &st, NULL, NULL, &err);
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

static int bench_spec(int argc, char **argv) {
    const char *target_path = NULL, *drafts_arg = NULL, *prompts_path = NULL, *alphas_arg = NULL;
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = nc > 0 ? (int)nc : 1, n_gen = 128, n_prompts = 8, draft_max = 8, tb = 8, td = 8, tw = 4;
    bool json = false;
    es_kv_type kv_type = ES_KV_F16;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long lv;
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { printf("usage: %s\n", k_usage_spec); return 0; }
        if (!v) return cli_usage_error("bench", k_usage_spec, "unknown option or missing value: '%s'", a);
        i++;
#define INTOPT(name, var, lo, hi) else if (!strcmp(a, name)) { if (!cli_parse_long(v, lo, hi, &lv)) return cli_usage_error("bench", k_usage_spec, "bad %s '%s'", name, v); var = (int)lv; }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) target_path = v;
        else if (!strcmp(a, "--draft")) drafts_arg = v;
        else if (!strcmp(a, "--prompts")) prompts_path = v;
        else if (!strcmp(a, "--synthetic")) alphas_arg = v;
        else if (!strcmp(a, "--kv-type")) { if (!cli_parse_kv_type(v, &kv_type)) return cli_usage_error("bench", k_usage_spec, "bad --kv-type '%s' (f32, f16 or q8_0)", v); }
        INTOPT("--threads", threads, 1, 512)
        INTOPT("-t", threads, 1, 512)
        INTOPT("--n-gen", n_gen, 1, 100000)
        INTOPT("--n-prompts", n_prompts, 1, 10000)
        INTOPT("--draft-max", draft_max, 1, 64)
        INTOPT("--tree-budget", tb, 1, ES_SPEC_MAX_NODES)
        INTOPT("--tree-depth", td, 1, 64)
        INTOPT("--tree-width", tw, 1, 64)
        else return cli_usage_error("bench", k_usage_spec, "unknown option '%s'", a);
#undef INTOPT
    }
    if (!target_path || !drafts_arg) return cli_usage_error("bench", k_usage_spec, "-m TARGET and --draft DRAFT are required");
    char pdefault[4096];
    if (!prompts_path) {
        snprintf(pdefault, sizeof pdefault, "%s/../prompts/stories.txt", cli_models_dir());
        prompts_path = pdefault;
    }
    es_model_params mp = cli_model_params();
    es_err err = {{0}};
    es_model *target = NULL;
    if (es_model_load(target_path, &mp, &target, &err) != ES_OK) return cli_error("bench", "%s", err.msg);
    const es_tokenizer *tok = es_model_tokenizer(target);
    /* prompts */
    FILE *f = fopen(prompts_path, "r");
    if (!f) { es_model_free(target); return cli_error("bench", "cannot read prompts from %s", prompts_path); }
    int32_t *prompts[10000];
    int np[10000], n = 0;
    char line[4096];
    while (n < n_prompts && fgets(line, sizeof line, f)) {
        size_t l = strcspn(line, "\r\n");
        line[l] = 0;
        if (!l) continue;
        prompts[n] = malloc((l + 8) * sizeof(int32_t));
        es_tokenize(tok, line, l, true, false, prompts[n], (int)l + 8, &np[n], &err);
        n++;
    }
    fclose(f);
    n_prompts = n;

    char dbuf[2048];
    snprintf(dbuf, sizeof dbuf, "%s", drafts_arg);
    const char *dnames[16];
    int nd = 0;
    for (char *t = strtok(dbuf, ","); t && nd < 16; t = strtok(NULL, ",")) dnames[nd++] = t;
    double alphas[8];
    int na = 0;
    if (alphas_arg) {
        char abuf[256];
        snprintf(abuf, sizeof abuf, "%s", alphas_arg);
        for (char *t = strtok(abuf, ","); t && na < 8; t = strtok(NULL, ",")) {
            double a;
            if (!cli_parse_float(t, 0, 1, &a)) { es_model_free(target); return cli_usage_error("bench", k_usage_spec, "bad --synthetic '%s'", t); }
            alphas[na++] = a;
        }
    }

    cJSON *rows = cJSON_CreateArray();
    spec_result base;
    spec_case none = {NULL, ES_DRAFT_CHAIN, -1};
    run_case(target, NULL, &none, threads, kv_type, n_gen, prompts, np, n_prompts, draft_max, tb, td, tw, &base);
    const double base_tps = base.tokens / base.seconds;
    if (!json) printf("%-40s %-6s %-6s %8s %8s %8s %8s\n", "draft", "mode", "alpha", "tok/s", "speedup", "acc.len", "E_k");
    if (!json) printf("%-40s %-6s %-6s %8.2f %8.2f %8s %8s\n", "(target only)", "-", "-", base_tps, 1.0, "1.00", "-");
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "draft", "none");
    cJSON_AddNumberToObject(b, "tokens_per_second", base_tps);
    cJSON_AddNumberToObject(b, "tokens", (double)base.tokens);
    cJSON_AddItemToArray(rows, b);
    for (int di = 0; di < nd; di++) {
        es_model *dm = NULL;
        if (es_model_load(dnames[di], &mp, &dm, &err) != ES_OK) { cli_error("bench", "%s", err.msg); continue; }
        if (es_spec_check_vocab(tok, es_model_tokenizer(dm), &err) != ES_OK) { cli_error("bench", "%s: %s", dnames[di], err.msg); es_model_free(dm); continue; }
        const int n_alpha = na ? na : 1;
        for (int ai = 0; ai < n_alpha; ai++)
            /* Synthetic acceptance flips one coin per depth on the first child only, so a tree would be a
               chain with wasted verify rows: synthetic runs measure chains (as vLLM's synthetic sampler). */
            for (int mode = 0; mode < (na ? 1 : 2); mode++) {
                spec_case sc = {dnames[di], (es_draft_mode)mode, na ? alphas[ai] : -1};
                spec_result r;
                run_case(target, dm, &sc, threads, kv_type, n_gen, prompts, np, n_prompts, draft_max, tb, td, tw, &r);
                const double tps = r.tokens / r.seconds, al = r.rounds ? 1.0 + (double)r.accepted / r.rounds : 0;
                const double alpha = na ? alphas[ai] : (r.drafted ? (double)r.accepted / r.drafted : 0);
                const int k = draft_max;
                const double ek = alpha < 1 ? (1 - pow(alpha, k + 1)) / (1 - alpha) : k + 1;
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "draft", dnames[di]);
                cJSON_AddStringToObject(o, "mode", mode ? "tree" : "chain");
                cJSON_AddBoolToObject(o, "synthetic", na > 0);
                if (na) cJSON_AddNumberToObject(o, "synthetic_alpha", alphas[ai]);
                cJSON_AddNumberToObject(o, "tokens_per_second", tps);
                cJSON_AddNumberToObject(o, "speedup", tps / base_tps);
                cJSON_AddNumberToObject(o, "acceptance_length", al);
                cJSON_AddNumberToObject(o, "acceptance_rate", r.drafted ? (double)r.accepted / r.drafted : 0);
                cJSON_AddNumberToObject(o, "expected_chain_tokens_per_round", ek);
                cJSON_AddNumberToObject(o, "rounds", (double)r.rounds);
                cJSON_AddNumberToObject(o, "tokens", (double)r.tokens);
                cJSON_AddItemToArray(rows, o);
                if (!json) {
                    char as[16];
                    snprintf(as, sizeof as, na ? "%.2f" : "real", alphas[na ? ai : 0]);
                    printf("%-40s %-6s %-6s %8.2f %8.2f %8.2f %8.2f\n", dnames[di], mode ? "tree" : "chain", as, tps, tps / base_tps, al, ek);
                }
            }
        es_model_free(dm);
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "target", target_path);
        cJSON_AddNumberToObject(j, "threads", threads);
        cJSON_AddStringToObject(j, "kv_type", es_kv_type_name(kv_type));
        cJSON_AddNumberToObject(j, "n_gen", n_gen);
        cJSON_AddNumberToObject(j, "n_prompts", n_prompts);
        cJSON_AddNumberToObject(j, "draft_max", draft_max);
        cJSON_AddNumberToObject(j, "tree_budget", tb);
        cJSON_AddNumberToObject(j, "tree_depth", td);
        cJSON_AddNumberToObject(j, "tree_width", tw);
        cJSON_AddItemToObject(j, "results", rows);
        char *s = cJSON_PrintUnformatted(j);
        puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        cJSON_Delete(rows);
    }
    for (int i = 0; i < n_prompts; i++) free(prompts[i]);
    es_model_free(target);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "spec")) return bench_spec(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "serve")) return bench_serve(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "model")) return bench_model(argc - 1, argv + 1);
    return bench_model(argc, argv);
}
