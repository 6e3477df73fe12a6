#include "cli/run_opts.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/opts.h"
#include "specdec/spec.h"

static char *read_text_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); buf = NULL; break; }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[len] = 0;
    return buf;
}

/* The options that need code of their own (cli/opts.h handlers). */
static bool opt_device(const cli_arg *a) {
    es_run_opts *o = a->dst;
    return cli_parse_device(a->value, &o->backend, &o->device);
}
/* dst: {&top_k, &top_k_set}: an explicit --top-k survives the default of 40 when sampling */
static bool opt_top_k(const cli_arg *a) {
    void *const *d = a->dst;
    long lv;
    if (!cli_parse_long(a->value, 0, 1 << 30, &lv)) return false;
    *(int *)d[0] = (int)lv;
    *(bool *)d[1] = true;
    return true;
}
/* --logit-bias TOKEN=BIAS, repeatable (the token id's vocabulary range is checked with the model);
 * prints its own errors */
static bool opt_logit_bias(const cli_arg *a) {
    es_sampler_params *sp = a->dst;
    const char *v = a->value, *eq = strchr(v, '=');
    char id[32];
    long lv;
    double dv;
    if (!eq || (size_t)(eq - v) >= sizeof id) return cli_usage_error(a->cmd, a->usage, "--logit-bias takes TOKEN=BIAS, got '%s'", v), false;
    memcpy(id, v, (size_t)(eq - v));
    id[eq - v] = 0;
    if (!cli_parse_long(id, 0, INT32_MAX, &lv) || !cli_parse_float(eq + 1, -100, 100, &dv))
        return cli_usage_error(a->cmd, a->usage, "--logit-bias takes TOKEN=BIAS (a token id, a bias in -100..100), got '%s'", v), false;
    for (int k = 0; k < sp->n_bias; k++)
        if (sp->bias[k].id == (int32_t)lv) return cli_usage_error(a->cmd, a->usage, "--logit-bias names token %ld twice", lv), false;
    if (sp->n_bias >= ES_SAMPLER_MAX_BIAS) return cli_usage_error(a->cmd, a->usage, "at most %d --logit-bias", ES_SAMPLER_MAX_BIAS), false;
    sp->bias[sp->n_bias].id = (int32_t)lv;
    sp->bias[sp->n_bias].bias = (float)dv;
    sp->n_bias++;
    return true;
}

int es_run_opts_parse(int argc, char **argv, es_run_opts *o, const char *usage) {
    const char *cmd = argc > 0 && argv[0] ? argv[0] : "run"; /* "run", or "edge" sharing these options */
    memset(o, 0, sizeof *o);
    o->cmd = !strcmp(cmd, "edge") ? "edge" : "run";
    o->n_predict = 256;
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    o->n_threads = nc > 0 ? (int)nc : 1;
    o->n_batch = 512;
    o->kv_type = ES_KV_F16;
    o->add_bos = true;
    o->sp = es_sampler_default_params();
    o->sp.temperature = 0.0f;
    o->sp.top_k = 0;
    o->sp.top_p = 1.0f;
    o->sp.min_p = 0.0f;
    o->sp.repeat_penalty = 1.0f;
    o->sp.repeat_last_n = 64;
    o->sp.seed = 42;
    o->spec_mode = "chain";
    o->accept = NULL;
    o->draft_max = 8;
    o->draft_min = 1;
    o->draft_p_min = 0.0;
    const es_drafter_params dp = es_drafter_default_params(); /* one place for the defaults (help prints them) */
    o->tree_budget = dp.tree_budget;
    o->tree_depth = dp.tree_depth;
    o->tree_width = dp.tree_width;
    o->synthetic_alpha = -1;
    o->adaptive = true;
    const char *file = NULL;
    bool top_k_set = false;
    void *top_k_dst[2] = {&o->sp.top_k, &top_k_set};
    const cli_opt t[] = {
        {.names = "-h|--help", .kind = CLI_STOP, .stop = -1},
        {.names = "--help-spec", .kind = CLI_STOP, .stop = -2},
        {.names = "--json", .kind = CLI_SET, .dst = &o->json},
        {.names = "--no-bos", .kind = CLI_CLEAR, .dst = &o->add_bos},
        {.names = "-m|--model", .kind = CLI_STR, .dst = &o->model_path},
        {.names = "-p|--prompt", .kind = CLI_STR, .dst = &o->prompt},
        {.names = "-f|--file", .kind = CLI_STR, .dst = &file},
        {.names = "-n|--n-predict", .kind = CLI_INT, .dst = &o->n_predict, .lo = 0, .hi = 1 << 24, .must = "must be an integer in 0..16777216"},
        {.names = "-t|--threads", .kind = CLI_INT, .dst = &o->n_threads, .lo = 1, .hi = 512, .must = "must be in 1..512"},
        {.names = "-c|--ctx", .kind = CLI_INT, .dst = &o->n_ctx, .lo = 1, .hi = 1 << 24, .must = "must be a positive integer"},
        {.names = "--device", .kind = CLI_FN, .dst = o, .fn = opt_device, .must = "must be cpu, vulkan or vulkan:N"},
        {.names = "--kv-type", .kind = CLI_FN, .dst = &o->kv_type, .fn = cli_opt_kv_type, .must = "must be f32, f16 or q8_0"},
        {.names = "-b|--batch", .kind = CLI_INT, .dst = &o->n_batch, .lo = 1, .hi = 8192, .must = "must be in 1..8192"},
        {.names = "--temp|--temperature", .kind = CLI_FLOAT, .dst = &o->sp.temperature, .lo = 0, .hi = 1e6, .must = "must be a number >= 0"},
        {.names = "--top-k", .kind = CLI_FN, .dst = top_k_dst, .fn = opt_top_k, .must = "must be an integer >= 0"},
        {.names = "--top-p", .kind = CLI_FLOAT, .dst = &o->sp.top_p, .lo = 0, .hi = 1, .must = "must be in (0, 1]", .lo_open = true},
        {.names = "--min-p", .kind = CLI_FLOAT, .dst = &o->sp.min_p, .lo = 0, .hi = 1, .must = "must be in [0, 1]"},
        {.names = "--repeat-penalty", .kind = CLI_FLOAT, .dst = &o->sp.repeat_penalty, .lo = 1e-3, .hi = 1e3, .must = "must be > 0"},
        {.names = "--repeat-last-n", .kind = CLI_INT, .dst = &o->sp.repeat_last_n, .lo = 0, .hi = 1 << 20, .must = "must be >= 0"},
        {.names = "--presence-penalty", .kind = CLI_FLOAT, .dst = &o->sp.presence_penalty, .lo = -2, .hi = 2, .must = "must be in -2..2"},
        {.names = "--frequency-penalty", .kind = CLI_FLOAT, .dst = &o->sp.frequency_penalty, .lo = -2, .hi = 2, .must = "must be in -2..2"},
        {.names = "--logit-bias", .kind = CLI_FN, .dst = &o->sp, .fn = opt_logit_bias},
        {.names = "-s|--seed", .kind = CLI_U64, .dst = &o->sp.seed, .must = "must be a non-negative integer"},
        {.names = "--draft|-md|--model-draft", .kind = CLI_STR, .dst = &o->draft_path},
        {.names = "--spec", .kind = CLI_STR, .dst = &o->spec_mode, .choices = "chain|tree", .must = "must be chain or tree"},
        {.names = "--accept", .kind = CLI_STR, .dst = &o->accept, .choices = "greedy|match|rejection", .must = "must be greedy, match or rejection"},
        {.names = "--draft-max", .kind = CLI_INT, .dst = &o->draft_max, .lo = 1, .hi = 256, .must = "must be in 1..256"},
        {.names = "--draft-min", .kind = CLI_INT, .dst = &o->draft_min, .lo = 0, .hi = 256, .must = "must be in 0..256"},
        {.names = "--draft-p-min", .kind = CLI_DOUBLE, .dst = &o->draft_p_min, .lo = 0, .hi = 1, .must = "must be in [0, 1]"},
        {.names = "--tree-budget", .kind = CLI_INT, .dst = &o->tree_budget, .lo = 1, .hi = 1024, .must = "must be in 1..1024"},
        {.names = "--tree-depth", .kind = CLI_INT, .dst = &o->tree_depth, .lo = 1, .hi = 256, .must = "must be in 1..256"},
        {.names = "--tree-width", .kind = CLI_INT, .dst = &o->tree_width, .lo = 1, .hi = 64, .must = "must be in 1..64"},
        {.names = "--synthetic-accept", .kind = CLI_DOUBLE, .dst = &o->synthetic_alpha, .lo = 0, .hi = 1, .must = "must be in [0, 1]"},
        {.names = "--no-adaptive", .kind = CLI_CLEAR, .dst = &o->adaptive},
    };
    const int rc = cli_opts_parse(cmd, usage, t, sizeof t / sizeof t[0], argc, argv, NULL, NULL);
    if (rc != 0) return rc;
    if (!o->model_path) return cli_usage_error(cmd, usage, "a model is required (-m MODEL.gguf)");
    if (o->prompt && file) return cli_usage_error(cmd, usage, "give either -p or -f, not both");
    if (file) {
        o->prompt_owned = read_text_file(file);
        if (!o->prompt_owned) return cli_usage_error(cmd, usage, "cannot read prompt file '%s'", file);
        o->prompt = o->prompt_owned;
    }
    if (!o->prompt) o->prompt = "";
    if (o->sp.temperature > 0 && !top_k_set) o->sp.top_k = 40;
    if (!o->accept) o->accept = o->sp.temperature > 0 ? "rejection" : "greedy";
    return 0;
}

void es_run_opts_free(es_run_opts *o) { free(o->prompt_owned); }

void es_textbuf_append(es_textbuf *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1) cap *= 2;
        char *ns = realloc(t->s, cap);
        if (!ns) return;
        t->s = ns;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = 0;
}

void cli_keep_vulkan_driver(void) {
#ifdef ES_SANITIZED
    dlopen("libvulkan_lvp.so", RTLD_NOW | RTLD_NODELETE); /* absent is fine: then nothing is unloaded either */
#endif
}

bool cli_parse_device(const char *s, es_backend_kind *kind, int *index) {
    long n = 0;
    if (!strcmp(s, "cpu")) { *kind = ES_BACKEND_CPU; *index = 0; return true; }
    if (!strcmp(s, "vulkan")) { *kind = ES_BACKEND_VULKAN; *index = 0; return true; }
    if (!strncmp(s, "vulkan:", 7) && cli_parse_long(s + 7, 0, 255, &n)) { *kind = ES_BACKEND_VULKAN; *index = (int)n; return true; }
    return false;
}

static void on_device_message(void *ud, bool is_error, const char *msg) {
    (void)ud;
    fprintf(stderr, "edgespec: vulkan validation %s: %s\n", is_error ? "error" : "warning", msg);
}

void es_run_device_params(const es_run_opts *o, es_ctx_params *cp) {
    cp->backend = o->backend;
    cp->device = o->device;
    if (o->backend != ES_BACKEND_CPU) cli_keep_vulkan_driver();
    /* a test hook of the command, never read by the library (README, "Test hooks") */
    const char *v = getenv("EDGESPEC_VK_VALIDATION");
    if (o->backend == ES_BACKEND_VULKAN && v && !strcmp(v, "1")) {
        cp->device_validation = true;
        cp->device_message = on_device_message;
    }
}

es_model *es_run_load_model(const char *cmd, const char *path, es_backend_kind backend) {
    es_model_params mp = cli_model_params();
    if (backend != ES_BACKEND_CPU) mp.no_repack = true;
    mp.progress = cli_progress;
    mp.log = cli_log;
    es_model *m = NULL;
    es_err err = {{0}};
    if (es_model_load(path, &mp, &m, &err) != ES_OK) {
        cli_error(cmd, "%s", err.msg);
        return NULL;
    }
    return m;
}
