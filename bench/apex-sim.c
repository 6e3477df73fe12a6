/* apex-sim.c — a SIMULATION, not a measurement: decode steps of a memory-constrained server, timed by
 * an APEX cost profile (src/apex/predict.h), for when no GPU is at hand. The presets (t4, a10,
 * lavapipe) are derived from datasheets and this project's recorded figures (src/apex/presets.c),
 * not measured; the figures it prints are the model's, and only as good as the profile.
 *
 * The device's KV budget holds N sessions of prompt + output tokens; C closed-loop clients each send
 * one request after another (prompt `ctx` tokens, `out` generated tokens, prefill not modelled: it is
 * the same work in both systems, and APEX's workloads are decode-heavy). Two systems:
 *   baseline  vLLM-like, device only: N sessions run, the others wait in a FIFO for a free slot;
 *   hybrid    N sessions keep their KV on the device, the other C − N in host memory, and every step
 *             runs the plan es_apex_step_choose picks (device_only, asymmetric, async_overlap).
 * Each step takes es_apex_predict's time for its plan. Sessions start staggered through their output
 * so the contexts spread as in a steady state. Reported per client count: generated tokens/s, the
 * inter-token latency (between consecutive tokens of one request) p50 / p99, how often each plan ran,
 * and how often the choice matched the paper's rule. Deterministic: no clock, no random numbers.
 *
 * Usage: apex-sim [--profile t4|a10|lavapipe|FILE.json] [--n N] [--clients C] [--ctx P] [--out T]
 *                 [--rounds R] [--json]
 *   --clients defaults to a sweep of 2N, 3N and 4N; --rounds R: the run stops after R·C·T tokens.
 *   FILE.json: {"name", "n_layer", "host_row_bytes", and the es_apex_profile fields by name}.
 * --json prints exactly one JSON object on stdout. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apex/predict.h"
#include "edgespec.h"

typedef struct {
    const char *name, *what;
    int n_layer;
    int64_t host_row_bytes;
    es_apex_profile prof;
} sim_profile;

typedef struct {
    int n, clients, ctx, out, rounds;
} sim_args;

typedef struct {
    double tokens_s, itl_p50, itl_p99, host_itl_p99, wait_p50, seconds;
    int64_t tokens, steps;
    int64_t plans[ES_PLAN_COUNT];
    int64_t paper_agree, paper_asked; /* steps serving host rows whose plan the paper's rule also picks */
} sim_result;

/* Per client: where its current request is. */
typedef struct {
    int pos;           /* tokens generated so far in this request */
    double last;       /* time of its last token */
    bool has_last;     /* a token of this request exists, so the next gap is an inter-token latency */
    double submitted;  /* baseline: when the request joined the queue */
} sim_client;

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int64_t n, double q) {
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int64_t i = (int64_t)(q * (double)n + 0.999999) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return v[i];
}

/* One served token of client c at time now; records its inter-token gap. Returns true when the
 * request is complete (the client's next one starts at pos 0). */
static bool serve(sim_client *c, double now, const sim_args *a, double *itl, int64_t *n_itl, double *host_itl,
                  int64_t *n_host) {
    if (c->has_last) {
        itl[(*n_itl)++] = now - c->last;
        if (host_itl) host_itl[(*n_host)++] = now - c->last;
    }
    c->last = now;
    c->has_last = true;
    if (++c->pos < a->out) return false;
    c->pos = 0;
    c->has_last = false;
    return true;
}

/* The vLLM-like baseline: admission at N, FIFO queue, device-only steps. */
static int run_baseline(const sim_profile *sp, const sim_args *a, sim_result *res) {
    const int C = a->clients, N = a->n < C ? a->n : C;
    const int64_t target = (int64_t)a->rounds * C * a->out;
    sim_client *cl = calloc((size_t)C, sizeof *cl);
    int *slot = calloc((size_t)N, sizeof *slot), *queue = calloc((size_t)C, sizeof *queue);
    double *itl = malloc((size_t)(target + C) * sizeof *itl), *wait = malloc((size_t)(target + C) * sizeof *wait);
    if (!cl || !slot || !queue || !itl || !wait) return -1;
    int q_head = 0, q_len = 0;
    for (int i = 0; i < C; i++) {
        if (i < N) {
            slot[i] = i;
            cl[i].pos = (int)((int64_t)i * a->out / N);
        } else {
            queue[(q_head + q_len++) % C] = i;
        }
    }
    int64_t n_itl = 0, n_wait = 0;
    double now = 0;
    *res = (sim_result){0};
    while (res->tokens < target) {
        es_apex_step st = {.n_layer = sp->n_layer, .dev_rows = N};
        for (int s = 0; s < N; s++) st.dev_ctx += a->ctx + cl[slot[s]].pos;
        now += es_apex_predict(&sp->prof, ES_PLAN_DEVICE_ONLY, &st);
        res->steps++;
        res->plans[ES_PLAN_DEVICE_ONLY]++;
        for (int s = 0; s < N; s++) {
            res->tokens++;
            if (!serve(&cl[slot[s]], now, a, itl, &n_itl, NULL, NULL)) continue;
            cl[slot[s]].submitted = now; /* closed loop: the next request is sent at once */
            if (q_len == 0) continue;    /* C == N: the client keeps its slot */
            queue[(q_head + q_len++) % C] = slot[s];
            slot[s] = queue[q_head];
            q_head = (q_head + 1) % C;
            q_len--;
            wait[n_wait++] = now - cl[slot[s]].submitted;
        }
    }
    res->seconds = now;
    res->tokens_s = (double)res->tokens / now;
    res->itl_p50 = pct(itl, n_itl, 0.5);
    res->itl_p99 = pct(itl, n_itl, 0.99);
    res->wait_p50 = pct(wait, n_wait, 0.5);
    free(cl);
    free(slot);
    free(queue);
    free(itl);
    free(wait);
    return 0;
}

/* The hybrid: N sessions on the device, C − N in host memory, the predictor's plan every step. */
static int run_hybrid(const sim_profile *sp, const sim_args *a, sim_result *res) {
    const int C = a->clients, N = a->n < C ? a->n : C, H = C - N;
    const int64_t target = (int64_t)a->rounds * C * a->out;
    sim_client *cl = calloc((size_t)C, sizeof *cl);
    double *itl = malloc((size_t)(target + C) * sizeof *itl), *host_itl = malloc((size_t)(target + C) * sizeof *host_itl);
    es_apex *ap = NULL;
    es_err err;
    if (!cl || !itl || !host_itl || es_apex_new(&sp->prof, &ap, &err) != ES_OK) return -1;
    for (int i = 0; i < N; i++) cl[i].pos = (int)((int64_t)i * a->out / N);
    for (int j = 0; j < H; j++) cl[N + j].pos = (int)((int64_t)j * a->out / H);
    int64_t n_itl = 0, n_host = 0;
    double now = 0;
    *res = (sim_result){0};
    while (res->tokens < target) {
        es_apex_step st = {.n_layer = sp->n_layer, .dev_rows = N, .host_rows = H, .host_row_bytes = sp->host_row_bytes};
        for (int i = 0; i < N; i++) st.dev_ctx += a->ctx + cl[i].pos;
        for (int i = N; i < C; i++) st.host_ctx += a->ctx + cl[i].pos;
        const es_plan plan = es_apex_step_choose(ap, &st, NULL);
        now += es_apex_predict(&sp->prof, plan, &st);
        res->steps++;
        res->plans[plan]++;
        if (H > 0 && plan != ES_PLAN_DEVICE_ONLY) {
            res->paper_asked++;
            res->paper_agree += plan == es_apex_paper_rule(&sp->prof, &st);
        }
        const int served = plan == ES_PLAN_DEVICE_ONLY ? N : C;
        for (int i = 0; i < served; i++) {
            res->tokens++;
            serve(&cl[i], now, a, itl, &n_itl, i >= N ? host_itl : NULL, &n_host);
        }
    }
    res->seconds = now;
    res->tokens_s = (double)res->tokens / now;
    res->itl_p50 = pct(itl, n_itl, 0.5);
    res->itl_p99 = pct(itl, n_itl, 0.99);
    res->host_itl_p99 = pct(host_itl, n_host, 0.99);
    es_apex_free(ap);
    free(cl);
    free(itl);
    free(host_itl);
    return 0;
}

/* ---- the profile: a preset, or a JSON file ---- */

static bool json_num(const cJSON *o, const char *key, double *v, bool required) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!x) return !required;
    if (!cJSON_IsNumber(x)) return false;
    *v = x->valuedouble;
    return true;
}

static int load_profile_file(const char *path, sim_profile *sp, char **name_buf) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "apex-sim: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char buf[1 << 16];
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *o = cJSON_Parse(buf);
    double n_layer = 0, row_bytes = 0;
    es_apex_profile *p = &sp->prof;
    *p = (es_apex_profile){0};
    const bool ok = o && cJSON_IsObject(o) && json_num(o, "n_layer", &n_layer, true) &&
                    json_num(o, "host_row_bytes", &row_bytes, false) && json_num(o, "lin_a", &p->lin_a, true) &&
                    json_num(o, "lin_b", &p->lin_b, true) && json_num(o, "gatt_a", &p->gatt_a, true) &&
                    json_num(o, "gatt_b", &p->gatt_b, true) && json_num(o, "gatt_c", &p->gatt_c, true) &&
                    json_num(o, "catt_a", &p->catt_a, true) && json_num(o, "catt_b", &p->catt_b, true) &&
                    json_num(o, "catt_c", &p->catt_c, true) && json_num(o, "sync_s", &p->sync_s, false) &&
                    json_num(o, "xfer_b", &p->xfer_b, false) && json_num(o, "contend", &p->contend, false);
    es_err err;
    if (!ok || n_layer < 1 || n_layer > 1024 || row_bytes < 0 || es_apex_profile_check(p, &err) != ES_OK) {
        fprintf(stderr, "apex-sim: %s: not a profile (n_layer 1..1024, the es_apex_profile fields as numbers)\n", path);
        cJSON_Delete(o);
        return -1;
    }
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(o, "name");
    *name_buf = strdup(cJSON_IsString(nm) ? nm->valuestring : path);
    sp->name = *name_buf;
    sp->what = "from a profile file";
    sp->n_layer = (int)n_layer;
    sp->host_row_bytes = (int64_t)row_bytes;
    cJSON_Delete(o);
    return *name_buf ? 0 : -1;
}

static cJSON *profile_json(const sim_profile *sp) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", sp->name);
    cJSON_AddStringToObject(o, "what", sp->what);
    cJSON_AddNumberToObject(o, "n_layer", sp->n_layer);
    cJSON_AddNumberToObject(o, "host_row_bytes", (double)sp->host_row_bytes);
    const es_apex_profile *p = &sp->prof;
    const struct { const char *k; double v; } f[] = {
        {"lin_a", p->lin_a},   {"lin_b", p->lin_b},   {"gatt_a", p->gatt_a}, {"gatt_b", p->gatt_b},
        {"gatt_c", p->gatt_c}, {"catt_a", p->catt_a}, {"catt_b", p->catt_b}, {"catt_c", p->catt_c},
        {"sync_s", p->sync_s}, {"xfer_b", p->xfer_b}, {"contend", p->contend},
    };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) cJSON_AddNumberToObject(o, f[i].k, f[i].v);
    return o;
}

static cJSON *result_json(const sim_result *r, bool hybrid) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "tokens_per_s", r->tokens_s);
    cJSON_AddNumberToObject(o, "itl_p50_ms", 1e3 * r->itl_p50);
    cJSON_AddNumberToObject(o, "itl_p99_ms", 1e3 * r->itl_p99);
    cJSON_AddNumberToObject(o, "tokens", (double)r->tokens);
    cJSON_AddNumberToObject(o, "steps", (double)r->steps);
    cJSON_AddNumberToObject(o, "simulated_s", r->seconds);
    if (!hybrid) {
        cJSON_AddNumberToObject(o, "queue_wait_p50_s", r->wait_p50);
        return o;
    }
    cJSON_AddNumberToObject(o, "host_itl_p99_ms", 1e3 * r->host_itl_p99);
    cJSON *plans = cJSON_AddObjectToObject(o, "plans");
    for (int k = 0; k < ES_PLAN_COUNT; k++) cJSON_AddNumberToObject(plans, es_plan_name((es_plan)k), (double)r->plans[k]);
    cJSON_AddNumberToObject(o, "paper_rule_agree",
                            r->paper_asked ? (double)r->paper_agree / (double)r->paper_asked : 1.0);
    return o;
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--profile t4|a10|lavapipe|FILE.json] [--n N] [--clients C] [--ctx P] [--out T] [--rounds R] "
            "[--json]\n",
            argv0);
}

static bool parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    const long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || end == s || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

int main(int argc, char **argv) {
    const char *profile = "t4";
    sim_args a = {.n = 4, .clients = 0, .ctx = 512, .out = 512, .rounds = 4};
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(o, "--json")) {
            json = true;
            continue;
        }
        if (!strcmp(o, "--profile") && v) profile = v;
        else if (!strcmp(o, "--n")) ok = parse_int(v, 1, 4096, &a.n);
        else if (!strcmp(o, "--clients")) ok = parse_int(v, 1, 65536, &a.clients);
        else if (!strcmp(o, "--ctx")) ok = parse_int(v, 1, 1 << 20, &a.ctx);
        else if (!strcmp(o, "--out")) ok = parse_int(v, 1, 1 << 20, &a.out);
        else if (!strcmp(o, "--rounds")) ok = parse_int(v, 1, 1000, &a.rounds);
        else ok = false;
        if (!ok) {
            usage(argv[0]);
            return 2;
        }
        i++;
    }
    sim_profile sp;
    char *name_buf = NULL;
    const es_apex_preset *pre = es_apex_preset_find(profile);
    if (pre) {
        sp = (sim_profile){pre->name, pre->what, pre->n_layer, pre->host_row_bytes, pre->profile};
    } else if (strlen(profile) > 5 && !strcmp(profile + strlen(profile) - 5, ".json")) {
        if (load_profile_file(profile, &sp, &name_buf) != 0) return 1;
    } else {
        fprintf(stderr, "apex-sim: no profile named %s (t4, a10, lavapipe, or a .json file)\n", profile);
        return 2;
    }
    int sweep[3] = {2 * a.n, 3 * a.n, 4 * a.n}, n_sweep = 3;
    if (a.clients > 0) {
        sweep[0] = a.clients;
        n_sweep = 1;
    }
    const char *note = "SIMULATION from a model profile (es_apex_predict step times), not a measurement";
    cJSON *root = cJSON_CreateObject(), *runs = NULL;
    if (json) {
        cJSON_AddStringToObject(root, "bench", "apex-sim");
        cJSON_AddBoolToObject(root, "simulated", true);
        cJSON_AddStringToObject(root, "note", note);
        cJSON *args = cJSON_AddArrayToObject(root, "args"); /* the command line, to rerun it */
        for (int i = 1; i < argc; i++) cJSON_AddItemToArray(args, cJSON_CreateString(argv[i]));
        cJSON_AddItemToObject(root, "profile", profile_json(&sp));
        cJSON_AddNumberToObject(root, "device_sessions", a.n);
        cJSON_AddNumberToObject(root, "ctx", a.ctx);
        cJSON_AddNumberToObject(root, "out", a.out);
        cJSON_AddNumberToObject(root, "rounds", a.rounds);
        cJSON_AddNumberToObject(root, "max_host_wait", ES_APEX_MAX_HOST_WAIT);
        runs = cJSON_AddArrayToObject(root, "runs");
    } else {
        printf("apex-sim: %s\nprofile %s: %s\nN = %d device sessions, prompt %d, output %d tokens, %d requests per client\n\n",
               note, sp.name, sp.what, a.n, a.ctx, a.out, a.rounds);
        printf("%7s | %-29s | %-64s | %s\n", "", "baseline: device only, admit N", "hybrid: N on device, rest in host memory",
               "hybrid /");
        printf("%7s | %8s %9s %9s | %8s %9s %9s %10s %-21s | %s\n", "clients", "tok/s", "ITL p50", "ITL p99", "tok/s",
               "ITL p50", "ITL p99", "host p99", "plans DO/asym/async", "baseline");
    }
    for (int s = 0; s < n_sweep; s++) {
        a.clients = sweep[s];
        sim_result base, hyb;
        if (run_baseline(&sp, &a, &base) != 0 || run_hybrid(&sp, &a, &hyb) != 0) {
            fprintf(stderr, "apex-sim: out of memory\n");
            return 1;
        }
        const double ratio = hyb.tokens_s / base.tokens_s;
        if (json) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddNumberToObject(r, "clients", a.clients);
            cJSON_AddItemToObject(r, "baseline", result_json(&base, false));
            cJSON_AddItemToObject(r, "hybrid", result_json(&hyb, true));
            cJSON_AddNumberToObject(r, "throughput_ratio", ratio);
            cJSON_AddItemToArray(runs, r);
        } else {
            char plans[64];
            snprintf(plans, sizeof plans, "%lld/%lld/%lld", (long long)hyb.plans[0], (long long)hyb.plans[1],
                     (long long)hyb.plans[2]);
            printf("%7d | %8.2f %7.1fms %7.1fms | %8.2f %7.1fms %7.1fms %8.1fms %-21s | %.2fx\n", a.clients,
                   base.tokens_s, 1e3 * base.itl_p50, 1e3 * base.itl_p99, hyb.tokens_s, 1e3 * hyb.itl_p50,
                   1e3 * hyb.itl_p99, 1e3 * hyb.host_itl_p99, plans, ratio);
        }
    }
    if (json) {
        char *out = cJSON_PrintUnformatted(root);
        if (out) puts(out);
        free(out);
    } else {
        printf("\nsimulated, not measured: step times are the profile's predictions (src/apex/presets.c derives them)\n");
    }
    cJSON_Delete(root);
    free(name_buf);
    return 0;
}
