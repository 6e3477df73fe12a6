#include "cli/run_opts.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
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
    bool top_k_set = false;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long lv;
        double dv;
#define NEED_VALUE() \
    if (!v) return cli_usage_error(cmd, usage, "%s needs a value", a); \
    i++;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return -1;
        else if (!strcmp(a, "--help-spec")) return -2;
        else if (!strcmp(a, "--json")) o->json = true;
        else if (!strcmp(a, "--no-bos")) o->add_bos = false;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_VALUE(); o->model_path = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEED_VALUE(); o->prompt = v; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { NEED_VALUE(); file = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 0, 1 << 24, &lv)) return cli_usage_error(cmd, usage, "-n must be an integer in 0..16777216, got '%s'", v);
            o->n_predict = (int)lv;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 1, 512, &lv)) return cli_usage_error(cmd, usage, "--threads must be in 1..512, got '%s'", v);
            o->n_threads = (int)lv;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 1, 1 << 24, &lv)) return cli_usage_error(cmd, usage, "--ctx must be a positive integer, got '%s'", v);
            o->n_ctx = (int)lv;
        } else if (!strcmp(a, "--device")) {
            NEED_VALUE();
            if (!cli_parse_device(v, &o->backend, &o->device))
                return cli_usage_error(cmd, usage, "--device must be cpu, vulkan or vulkan:N, got '%s'", v);
        } else if (!strcmp(a, "--kv-type")) {
            NEED_VALUE();
            if (!cli_parse_kv_type(v, &o->kv_type)) return cli_usage_error(cmd, usage, "--kv-type must be f32, f16 or q8_0, got '%s'", v);
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 1, 8192, &lv)) return cli_usage_error(cmd, usage, "--batch must be in 1..8192, got '%s'", v);
            o->n_batch = (int)lv;
        } else if (!strcmp(a, "--temp") || !strcmp(a, "--temperature")) {
            NEED_VALUE();
            if (!cli_parse_float(v, 0, 1e6, &dv)) return cli_usage_error(cmd, usage, "--temp must be a number >= 0, got '%s'", v);
            o->sp.temperature = (float)dv;
        } else if (!strcmp(a, "--top-k")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 0, 1 << 30, &lv)) return cli_usage_error(cmd, usage, "--top-k must be an integer >= 0, got '%s'", v);
            o->sp.top_k = (int)lv;
            top_k_set = true;
        } else if (!strcmp(a, "--top-p")) {
            NEED_VALUE();
            if (!cli_parse_float(v, 0, 1, &dv) || dv <= 0) return cli_usage_error(cmd, usage, "--top-p must be in (0, 1], got '%s'", v);
            o->sp.top_p = (float)dv;
        } else if (!strcmp(a, "--min-p")) {
            NEED_VALUE();
            if (!cli_parse_float(v, 0, 1, &dv)) return cli_usage_error(cmd, usage, "--min-p must be in [0, 1], got '%s'", v);
            o->sp.min_p = (float)dv;
        } else if (!strcmp(a, "--repeat-penalty")) {
            NEED_VALUE();
            if (!cli_parse_float(v, 1e-3, 1e3, &dv)) return cli_usage_error(cmd, usage, "--repeat-penalty must be > 0, got '%s'", v);
            o->sp.repeat_penalty = (float)dv;
        } else if (!strcmp(a, "--repeat-last-n")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 0, 1 << 20, &lv)) return cli_usage_error(cmd, usage, "--repeat-last-n must be >= 0, got '%s'", v);
            o->sp.repeat_last_n = (int)lv;
        } else if (!strcmp(a, "--presence-penalty") || !strcmp(a, "--frequency-penalty")) {
            NEED_VALUE();
            if (!cli_parse_float(v, -2, 2, &dv)) return cli_usage_error(cmd, usage, "%s must be in -2..2, got '%s'", a, v);
            if (a[2] == 'p') o->sp.presence_penalty = (float)dv;
            else o->sp.frequency_penalty = (float)dv;
        } else if (!strcmp(a, "--logit-bias")) {
            NEED_VALUE();
            /* TOKEN=BIAS (repeatable; the token id's vocabulary range is checked with the model) */
            const char *eq = strchr(v, '=');
            char id[32];
            if (!eq || (size_t)(eq - v) >= sizeof id) return cli_usage_error(cmd, usage, "--logit-bias takes TOKEN=BIAS, got '%s'", v);
            memcpy(id, v, (size_t)(eq - v));
            id[eq - v] = 0;
            if (!cli_parse_long(id, 0, INT32_MAX, &lv) || !cli_parse_float(eq + 1, -100, 100, &dv))
                return cli_usage_error(cmd, usage, "--logit-bias takes TOKEN=BIAS (a token id, a bias in -100..100), got '%s'", v);
            for (int k = 0; k < o->sp.n_bias; k++)
                if (o->sp.bias[k].id == (int32_t)lv) return cli_usage_error(cmd, usage, "--logit-bias names token %ld twice", lv);
            if (o->sp.n_bias >= ES_SAMPLER_MAX_BIAS) return cli_usage_error(cmd, usage, "at most %d --logit-bias", ES_SAMPLER_MAX_BIAS);
            o->sp.bias[o->sp.n_bias].id = (int32_t)lv;
            o->sp.bias[o->sp.n_bias].bias = (float)dv;
            o->sp.n_bias++;
        } else if (!strcmp(a, "--seed") || !strcmp(a, "-s")) {
            NEED_VALUE();
            if (!cli_parse_u64(v, &o->sp.seed)) return cli_usage_error(cmd, usage, "--seed must be a non-negative integer, got '%s'", v);
        } else if (!strcmp(a, "--draft") || !strcmp(a, "-md") || !strcmp(a, "--model-draft")) { NEED_VALUE(); o->draft_path = v; }
        else if (!strcmp(a, "--spec")) {
            NEED_VALUE();
            if (strcmp(v, "chain") && strcmp(v, "tree")) return cli_usage_error(cmd, usage, "--spec must be chain or tree, got '%s'", v);
            o->spec_mode = v;
        } else if (!strcmp(a, "--accept")) {
            NEED_VALUE();
            if (strcmp(v, "greedy") && strcmp(v, "match") && strcmp(v, "rejection"))
                return cli_usage_error(cmd, usage, "--accept must be greedy, match or rejection, got '%s'", v);
            o->accept = v;
        } else if (!strcmp(a, "--draft-max")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 1, 256, &lv)) return cli_usage_error(cmd, usage, "--draft-max must be in 1..256, got '%s'", v);
            o->draft_max = (int)lv;
        } else if (!strcmp(a, "--draft-min")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 0, 256, &lv)) return cli_usage_error(cmd, usage, "--draft-min must be in 0..256, got '%s'", v);
            o->draft_min = (int)lv;
        } else if (!strcmp(a, "--draft-p-min")) {
            NEED_VALUE();
            if (!cli_parse_float(v, 0, 1, &dv)) return cli_usage_error(cmd, usage, "--draft-p-min must be in [0, 1], got '%s'", v);
            o->draft_p_min = dv;
        } else if (!strcmp(a, "--tree-budget")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 1, 1024, &lv)) return cli_usage_error(cmd, usage, "--tree-budget must be in 1..1024, got '%s'", v);
            o->tree_budget = (int)lv;
        } else if (!strcmp(a, "--tree-depth")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 1, 256, &lv)) return cli_usage_error(cmd, usage, "--tree-depth must be in 1..256, got '%s'", v);
            o->tree_depth = (int)lv;
        } else if (!strcmp(a, "--tree-width")) {
            NEED_VALUE();
            if (!cli_parse_long(v, 1, 64, &lv)) return cli_usage_error(cmd, usage, "--tree-width must be in 1..64, got '%s'", v);
            o->tree_width = (int)lv;
        } else if (!strcmp(a, "--synthetic-accept")) {
            NEED_VALUE();
            if (!cli_parse_float(v, 0, 1, &dv)) return cli_usage_error(cmd, usage, "--synthetic-accept must be in [0, 1], got '%s'", v);
            o->synthetic_alpha = dv;
        } else if (!strcmp(a, "--no-adaptive")) o->adaptive = false;
        else return cli_usage_error(cmd, usage, "unknown option '%s'", a);
#undef NEED_VALUE
    }
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
