/* cmd_edge.c — `edgespec edge`: generate with a remote target. The edge drafts locally with a small
 * model and the server (`edgespec serve`) verifies; or, with --no-draft / --server-spec, the edge is
 * a plain client of a server that generates. Confirmed text streams to stdout as it is confirmed;
 * with --json one object is printed at the end instead. With --listen the edge instead serves the
 * OpenAI-compatible API on this machine (edge/edge_http.h) until SIGINT / SIGTERM. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/opts.h"
#include "cli/run_opts.h"
#include "cli/run_output.h"
#include "edge/edge.h"
#include "edge/edge_http.h"
#include "http/chat.h"

static const char *k_usage =
    "edgespec edge -d DRAFT.gguf --server HOST:PORT (-p PROMPT | -f FILE) [-n N] [--temp T] [--top-k K]\n"
    "              [--top-p P] [--min-p P] [--seed S] [--spec chain|tree] [--accept greedy|match|rejection]\n"
    "              [--draft-max K] [--draft-min K] [--draft-p-min P] [--tree-budget N] [--tree-depth N]\n"
    "              [--tree-width N] [--proactive on|off] [--early-exit] [--early-follow adaptive|always] [--no-draft | --server-spec]\n"
    "              [--emulate-rtt-ms MS] [--emulate-bandwidth-kbps K] [--fallback local|none] [--reconnect N]\n"
    "              [--api-key K] [--tls [--tls-ca FILE | --tls-insecure] [--tls-server-name NAME]] [-t N] [--json]\n"
    "       edgespec edge -d DRAFT.gguf --server HOST:PORT --listen HOST:PORT [--parallel N] [--queue N]\n"
    "              [--http-api-key K] [--model-name NAME] [--chat-template FAMILY | --chat-template-file FILE]\n"
    "              [--http-max-body SIZE] [--http-max-connections N] [--http-request-timeout S]\n"
    "              [--max-queue N] [--queue-timeout S] [--cors ORIGINS]\n"
    "              [drafting and sampling options as above]";

static void print_help(void) {
    const es_drafter_params dp = es_drafter_default_params(); /* the defaults the options start from */
    printf("usage: %s\n\n"
           "Generates text from PROMPT with the target model of an `edgespec serve` server. By default the edge\n"
           "drafts tokens with DRAFT (which must share the target's vocabulary) and the server verifies them:\n"
           "the output is the target's (greedy: token-identical to running the target alone). The text is\n"
           "printed as it is confirmed; timing on stderr.\n\n"
           "  -d, --draft FILE          draft model (GGUF); also tokenises the prompt and prints the text\n"
           "  --server HOST:PORT        the server (default 127.0.0.1:7700)\n"
           "  -p, --prompt TEXT         prompt text\n"
           "  -f, --file FILE           read the prompt from a file\n"
           "  -n, --n-predict N         tokens to generate at most (default 256)\n"
           "  --temp T                  the target's temperature; 0 = greedy (default 0)\n"
           "  --top-k K / --top-p P / --min-p P / --seed S   sampling as in `edgespec run`\n"
           "  --spec chain|tree         draft a chain or a token tree (default chain)\n"
           "  --accept RULE             greedy (default at --temp 0), match, rejection (default when sampling)\n"
           "  --draft-max K, --draft-min K, --draft-p-min P, --no-adaptive   chain drafting (defaults 8, 1, 0)\n"
           "  --tree-budget N, --tree-depth N, --tree-width N                 tree drafting (%d, %d, %d)\n"
           "  --proactive on|off        draft the next tree while the verdict is in flight, betting on the\n"
           "                            most likely path (default on)\n"
           "  --bet first|best-leaf     the path a bet stands on: the first child at every level (default)\n"
           "                            or SpecEdge's best-scored leaf (hits about half as often here)\n"
           "  --early-exit              ask the server for EARLY frames (serve --exit-layers): the round's\n"
           "                            provisional verdict from an exit layer, from which the next tree\n"
           "                            is drafted while the rest of the verification runs; kept when the\n"
           "                            final verdict agrees (the output stays exactly the target's)\n"
           "  --early-follow adaptive|always  with a proactive bet standing on another path: follow the\n"
           "                            EARLY frame only while EARLY frames have agreed with the verdict\n"
           "                            more often than the bets (default adaptive), or always\n"
           "  --no-server-hints         ignore the server's suggested tree size\n"
           "  --no-draft                the server generates alone (autoregressive); -d optional\n"
           "  --server-spec             the server drafts with its own draft model; -d optional\n"
           "  --emulate-rtt-ms MS       delay every frame by MS/2 each way (WAN emulation on loopback)\n"
           "  --emulate-bandwidth-kbps K  serialise frames at K kbit/s each way\n"
           "  --fallback local|none     when the server goes away: finish with the draft alone (local) or\n"
           "                            reconnect and resume (none, default)\n"
           "  --reconnect N             reconnection attempts: the first at once, then 100 ms doubling to 5 s (default 5)\n"
           "  --io-timeout S            give up on a silent server after S seconds (default 60)\n"
           "  --api-key K               the server's key, if it asks for one (default: $EDGESPEC_API_KEY)\n"
           "  --tls                     connect with TLS (the server runs with --tls-cert); its certificate is\n"
           "                            verified against the system's CA store and must name the --server host\n"
           "  --tls-ca FILE             trust only this PEM CA (e.g. your own) instead; implies --tls\n"
           "  --tls-server-name NAME    the name the certificate must carry (default: the --server host)\n"
           "  --tls-insecure            TLS without verifying the certificate (testing only: anyone on the\n"
           "                            path can impersonate the server); implies --tls\n"
           "  -t, --threads N           draft compute threads (default: number of cores)\n"
           "  -c, --ctx N               draft context length (default: the model's)\n"
           "  --kv-type f32|f16|q8_0    the draft's KV cache element type (default f16)\n"
           "  --no-bos                  do not prepend BOS\n"
           "  --json                    print one JSON object with text, tokens, timings, spec and wire stats\n\n"
           "Local API: with --listen HOST:PORT (e.g. 127.0.0.1:8081) the edge serves the OpenAI-compatible API\n"
           "(POST /v1/completions, /v1/chat/completions, GET /v1/models, /health, /metrics) instead of\n"
           "generating one prompt: each request drafts here and is verified by the server. Runs until SIGINT.\n"
           "  --listen HOST:PORT        where the local API listens (keep it on 127.0.0.1 unless you mean it)\n"
           "  --parallel N              generations at once, each with its own server connection (default 4)\n"
           "  --queue N, --max-queue N  requests waiting for a free worker before 503 + Retry-After (FIFO;\n"
           "                            default 64; 0: 503 at once)\n"
           "  --queue-timeout S         a queued request waiting longer gets 503 + Retry-After (default 60;\n"
           "                            0: no limit)\n"
           "  --cors ORIGINS            let browser pages from ORIGINS (comma list of scheme://host[:port], or\n"
           "                            *) call the local API: CORS headers and OPTIONS preflight (default off)\n"
           "  --http-api-key K          key the local API asks of its clients (Bearer; default none)\n"
           "  --model-name NAME         the model id the API reports (default edgespec-edge)\n"
           "  --chat-template FAMILY    auto (default: the draft model's own Jinja tokenizer.chat_template,\n"
           "                            tools included; a family from its markers when it does not parse),\n"
           "                            or a built-in: chatml, qwen2, llama2, llama3, zephyr or fallback\n"
           "  --chat-template-file FILE a Jinja chat template rendered instead of the model's own (one that\n"
           "                            does not parse: the built-in family its markers name, else refused)\n"
           "  --http-max-body SIZE      largest request body in bytes (default 1048576)\n"
           "  --http-max-connections N  open connections to the local API (default 1024); more get 503\n"
           "  --http-request-timeout S  a request must be complete within S seconds of its connection opening\n"
           "                            or of its previous reply (default 60; 0: off); else 408\n",
           k_usage, dp.tree_budget, dp.tree_depth, dp.tree_width);
}

typedef struct edge_opts {
    es_run_opts r;           /* the options shared with `edgespec run` */
    const char *draft_path;  /* -d: handed to run's parser as --draft */
    const char *host;
    char host_buf[256];
    int port;
    bool proactive, no_draft, server_spec, hints, early_exit;
    int early_follow;
    int bet;
    double rtt_ms, kbps, io_timeout;
    bool fallback;
    int reconnect;
    const char *api_key;
    bool tls, tls_insecure;
    const char *tls_ca, *tls_name;
    /* --listen: the local OpenAI API */
    bool listen;
    char listen_host[256];
    int listen_port;
    int parallel, queue;
    const char *http_key, *model_name;
    int chat_family;
    const char *chat_template;
    long max_body;
    int max_conns;       /* --http-max-connections (0: default) */
    double req_timeout;  /* --http-request-timeout (0: default, < 0: off) */
    double queue_timeout; /* --queue-timeout (0: no limit) */
    const char *cors;     /* --cors */
} edge_opts;

/* "HOST:PORT" or "[V6]:PORT" into host (cap bytes) and port (min_port..65535). */
static bool parse_hostport(const char *v, char *host, size_t cap, int *port, long min_port) {
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v) return false;
    long pv;
    if (!cli_parse_long(colon + 1, min_port, 65535, &pv)) return false;
    size_t hl = (size_t)(colon - v);
    if (v[0] == '[' && hl >= 2 && v[hl - 1] == ']') { v++; hl -= 2; } /* [v6]:port */
    if (hl == 0 || hl >= cap) return false;
    memcpy(host, v, hl);
    host[hl] = 0;
    *port = (int)pv;
    return true;
}

static bool parse_server(const char *v, edge_opts *o) {
    if (!parse_hostport(v, o->host_buf, sizeof o->host_buf, &o->port, 1)) return false;
    o->host = o->host_buf;
    return true;
}

/* The options that need code of their own (cli/opts.h handlers; dst: the edge_opts). */
static bool opt_server(const cli_arg *a) { return parse_server(a->value, a->dst); }
static bool opt_on_off(const char *v, const char *on, const char *off, bool *dst) {
    if (!strcmp(v, on)) *dst = true;
    else if (!strcmp(v, off)) *dst = false;
    else return false;
    return true;
}
static bool opt_proactive(const cli_arg *a) { return opt_on_off(a->value, "on", "off", &((edge_opts *)a->dst)->proactive); }
static bool opt_fallback(const cli_arg *a) { return opt_on_off(a->value, "local", "none", &((edge_opts *)a->dst)->fallback); }
static bool opt_tls_insecure(const cli_arg *a) {
    edge_opts *o = a->dst;
    o->tls = o->tls_insecure = true;
    return true;
}
static bool opt_tls_ca(const cli_arg *a) {
    edge_opts *o = a->dst;
    o->tls = true;
    o->tls_ca = a->value;
    return true;
}
static bool opt_tls_name(const cli_arg *a) {
    edge_opts *o = a->dst;
    if (!*a->value || strlen(a->value) > 255) return false;
    o->tls = true;
    o->tls_name = a->value;
    return true;
}
static bool opt_listen(const cli_arg *a) {
    edge_opts *o = a->dst;
    o->listen = true;
    return parse_hostport(a->value, o->listen_host, sizeof o->listen_host, &o->listen_port, 0);
}
static bool opt_chat_template(const cli_arg *a) {
    edge_opts *o = a->dst;
    o->chat_family = strcmp(a->value, "auto") ? es_chat_family_parse(a->value) : -1;
    o->chat_template = NULL;
    return !strcmp(a->value, "auto") || o->chat_family >= 0;
}
static bool opt_chat_template_file(const cli_arg *a) { /* prints its own errors */
    edge_opts *o = a->dst;
    return cli_chat_template_file(a->cmd, a->value, &o->chat_template, &o->chat_family);
}

/* Parses the edge-only options and hands the rest to the `run` parser (which knows the shared ones). */
static int parse(int argc, char **argv, edge_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 7700;
    o->proactive = true;
    o->hints = true;
    o->io_timeout = 60;
    o->reconnect = 5;
    o->parallel = 4;
    o->queue = 64;
    o->queue_timeout = 60;
    o->chat_family = -1;
    static const int bet_vals[] = {ES_BET_FIRST, ES_BET_BEST_LEAF};
    static const int follow_vals[] = {ES_EARLY_FOLLOW_ADAPTIVE, ES_EARLY_FOLLOW_ALWAYS};
    const cli_opt t[] = {
        {.names = "-h|--help", .kind = CLI_STOP, .stop = -1},
        {.names = "-d|--draft|-md|--model-draft", .kind = CLI_STR, .dst = &o->draft_path},
        {.names = "-m|--model", .kind = CLI_REFUSE, .must = "the target lives on the server; give the draft with -d"},
        {.names = "-b|--batch|--synthetic-accept|--help-spec", .kind = CLI_REFUSE, .must = "not available with `edgespec edge`"},
        {.names = "--server", .kind = CLI_FN, .dst = o, .fn = opt_server, .must = "must be HOST:PORT"},
        {.names = "--bet", .kind = CLI_CHOICE, .dst = &o->bet, .choices = "first|best-leaf", .vals = bet_vals,
         .must = "must be first or best-leaf"},
        {.names = "--proactive", .kind = CLI_FN, .dst = o, .fn = opt_proactive, .must = "must be on or off"},
        {.names = "--early-exit", .kind = CLI_SET, .dst = &o->early_exit},
        {.names = "--early-follow", .kind = CLI_CHOICE, .dst = &o->early_follow, .choices = "adaptive|always",
         .vals = follow_vals, .must = "must be adaptive or always"},
        {.names = "--no-draft", .kind = CLI_SET, .dst = &o->no_draft},
        {.names = "--server-spec", .kind = CLI_SET, .dst = &o->server_spec},
        {.names = "--no-server-hints", .kind = CLI_CLEAR, .dst = &o->hints},
        {.names = "--emulate-rtt-ms", .kind = CLI_DOUBLE, .dst = &o->rtt_ms, .lo = 0, .hi = 1e6, .must = "must be >= 0"},
        {.names = "--emulate-bandwidth-kbps", .kind = CLI_DOUBLE, .dst = &o->kbps, .lo = 0, .hi = 1e9, .must = "must be >= 0"},
        {.names = "--fallback", .kind = CLI_FN, .dst = o, .fn = opt_fallback, .must = "must be local or none"},
        {.names = "--reconnect", .kind = CLI_INT, .dst = &o->reconnect, .lo = 0, .hi = 1000, .must = "must be in 0..1000"},
        {.names = "--io-timeout", .kind = CLI_DOUBLE, .dst = &o->io_timeout, .lo = 0.001, .hi = 1e6, .must = "must be > 0"},
        {.names = "--api-key", .kind = CLI_STR, .dst = &o->api_key},
        {.names = "--tls", .kind = CLI_SET, .dst = &o->tls},
        {.names = "--tls-insecure", .kind = CLI_FN0, .dst = o, .fn = opt_tls_insecure},
        {.names = "--tls-ca", .kind = CLI_FN, .dst = o, .fn = opt_tls_ca},
        {.names = "--tls-server-name", .kind = CLI_FN, .dst = o, .fn = opt_tls_name, .must = "must be 1..255 bytes"},
        {.names = "--listen", .kind = CLI_FN, .dst = o, .fn = opt_listen, .must = "must be HOST:PORT"},
        {.names = "--parallel", .kind = CLI_INT, .dst = &o->parallel, .lo = 1, .hi = 256, .must = "must be in 1..256"},
        {.names = "--queue|--max-queue", .kind = CLI_INT, .dst = &o->queue, .lo = 0, .hi = 1 << 20, .must = "must be in 0..1048576"},
        {.names = "--queue-timeout", .kind = CLI_DOUBLE, .dst = &o->queue_timeout, .lo = 0, .hi = 86400, .must = "must be 0..86400 seconds (0: no limit)"},
        {.names = "--cors", .kind = CLI_STR, .dst = &o->cors, .max = 1000, .must = "must be * or a comma list of origins (at most 1000 bytes)"},
        {.names = "--http-api-key", .kind = CLI_STR, .dst = &o->http_key, .max = 256, .must = "must be 1..256 bytes"},
        {.names = "--model-name", .kind = CLI_STR, .dst = &o->model_name, .max = 255, .must = "must be 1..255 bytes"},
        {.names = "--chat-template", .kind = CLI_FN, .dst = o, .fn = opt_chat_template, .must = "must be auto, chatml, qwen2, llama2, llama3, zephyr or fallback"},
        {.names = "--chat-template-file", .kind = CLI_FN, .dst = o, .fn = opt_chat_template_file},
        {.names = "--http-max-body", .kind = CLI_LONG, .dst = &o->max_body, .lo = 256, .hi = 1L << 30, .must = "must be in 256..1073741824 bytes"},
        {.names = "--http-max-connections", .kind = CLI_INT, .dst = &o->max_conns, .lo = 1, .hi = 1000000, .must = "must be in 1..1000000"},
        {.names = "--http-request-timeout", .kind = CLI_DOUBLE, .dst = &o->req_timeout, .lo = 0, .hi = 86400, .zero_off = true,
         .must = "must be 0..86400 seconds (0: off)"},
    };
    /* what no row names goes to run's parser (which knows the options the two share) as
     * "edge -m - [--draft DRAFT] REST...": it wants a model, and the edge's model is the draft */
    char **rest = calloc((size_t)argc + 5, sizeof *rest);
    if (!rest) return cli_error("edge", "out of memory");
    int nr = 0, n_extra = 0;
    rest[nr++] = "edge";
    rest[nr++] = "-m";
    rest[nr++] = "-";
    char **extra = rest + 5;
    int rc = cli_opts_parse("edge", k_usage, t, sizeof t / sizeof t[0], argc, argv, extra, &n_extra);
    const bool have_draft = o->draft_path != NULL;
    if (have_draft) {
        rest[nr++] = "--draft";
        rest[nr++] = (char *)o->draft_path;
    }
    memmove(rest + nr, extra, (size_t)n_extra * sizeof *rest);
    nr += n_extra;
    if (rc == 0) {
        rc = es_run_opts_parse(nr, rest, &o->r, k_usage);
        if (rc == -1 || rc == -2) rc = -1;
    }
    free(rest);
    if (rc != 0) return rc;
    o->r.model_path = NULL;
    if (o->r.backend != ES_BACKEND_CPU)
        return cli_usage_error("edge", k_usage, "--device is for run, serve and bench: an edge drafts on its CPU");
    if (o->no_draft && o->server_spec) return cli_usage_error("edge", k_usage, "give --no-draft or --server-spec, not both");
    if (!have_draft && !o->no_draft && !o->server_spec)
        return cli_usage_error("edge", k_usage, "a draft model is required (-d DRAFT.gguf), or --no-draft / --server-spec");
    if (o->listen && !have_draft)
        return cli_usage_error("edge", k_usage, "--listen needs a draft model (-d DRAFT.gguf): it also tokenises the requests");
    if (!strcmp(o->r.accept, "greedy") && o->r.sp.temperature > 0)
        return cli_usage_error("edge", k_usage, "--accept greedy needs --temp 0; use match or rejection when sampling");
    if (o->tls_insecure && o->tls_ca)
        return cli_usage_error("edge", k_usage, "give --tls-ca FILE or --tls-insecure, not both");
    if (!o->api_key) {
        const char *env = getenv("EDGESPEC_API_KEY");
        if (env && *env) o->api_key = env;
    }
    if (o->tls_insecure)
        fprintf(stderr, "edgespec edge: WARNING: --tls-insecure: the server's certificate is NOT verified; anyone on the "
                        "network path can impersonate the server and read the prompts, text and api key\n");
    return 0;
}

typedef struct sink {
    es_run_output out;  /* streamed text (with a local tokenizer) */
    bool have_tok, json;
} sink;

static void on_tokens(void *ud, const int32_t *toks, int n, double t_s) {
    (void)t_s;
    sink *s = ud;
    for (int i = 0; i < n; i++) {
        if (s->have_tok) es_run_output_token(&s->out, toks[i]);
        else if (!s->json) {
            printf("%d ", toks[i]);
            fflush(stdout);
        }
    }
}

static const char *stop_name(int stop) {
    switch (stop) {
    case ES_STOP_EOS: return "eos";
    case ES_STOP_LENGTH: return "length";
    case ES_STOP_CONTEXT: return "context";
    case ES_STOP_CLIENT: return "client";
    case ES_STOP_ERROR: return "error";
    default: return "none";
    }
}

static cJSON *int_array(const int32_t *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static const char *mode_name(const es_edge_params *p) {
    return p->mode == ES_MODE_AR ? "ar" : p->mode == ES_MODE_SERVER_SPEC ? "server-spec" : "edge";
}

/* --json when the edge fails before generating: the object still comes, with no tokens and the error. */
static void print_fail_json(const edge_opts *o, const char *mode, const char *msg) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "server", o->host);
    cJSON_AddNumberToObject(j, "port", o->port);
    cJSON_AddStringToObject(j, "mode", mode);
    cJSON_AddStringToObject(j, "error", msg);
    cJSON_AddStringToObject(j, "text", "");
    cJSON_AddItemToObject(j, "tokens", cJSON_CreateArray());
    cJSON_AddNumberToObject(j, "n_generated", 0);
    cJSON_AddStringToObject(j, "stop", "error");
    char *js = cJSON_PrintUnformatted(j);
    if (js) puts(js);
    free(js);
    cJSON_Delete(j);
}

static void edge_log(void *ud, int level, const char *msg) {
    (void)ud;
    char line[600];
    snprintf(line, sizeof line, "edge: %s", msg);
    cli_log(NULL, level, line);
}

/* The edge parameters the options describe (shared by one-shot generation and --listen). */
static es_edge_params edge_params(const edge_opts *o, const es_model *draft) {
    es_edge_params p = es_edge_default_params();
    p.host = o->host;
    p.port = o->port;
    p.draft = draft;
    p.mode = o->no_draft ? ES_MODE_AR : o->server_spec ? ES_MODE_SERVER_SPEC : ES_MODE_EDGE;
    p.rule = es_accept_rule_parse(o->r.accept);
    p.sampling = o->r.sp;
    es_drafter_params *dp = &p.draft_params;
    dp->mode = strcmp(o->r.spec_mode, "tree") == 0 ? ES_DRAFT_TREE : ES_DRAFT_CHAIN;
    dp->k_max = o->r.draft_max;
    dp->k_min = o->r.draft_min > o->r.draft_max ? o->r.draft_max : o->r.draft_min;
    dp->p_min = (float)o->r.draft_p_min;
    dp->adaptive = o->r.adaptive;
    dp->tree_budget = o->r.tree_budget > ES_SPEC_MAX_NODES ? ES_SPEC_MAX_NODES : o->r.tree_budget;
    dp->tree_depth = o->r.tree_depth;
    dp->tree_width = o->r.tree_width;
    dp->sample = p.rule == ES_ACCEPT_REJECTION;
    dp->temperature = o->r.sp.temperature > 0 ? o->r.sp.temperature : 1.0f;
    dp->seed = o->r.sp.seed;
    p.proactive = o->proactive;
    p.bet = o->bet;
    p.early_exit = o->early_exit;
    p.early_follow = o->early_follow;
    p.adapt_to_server = o->hints;
    p.n_threads = o->r.n_threads;
    p.n_ctx = o->r.n_ctx;
    p.kv_type = o->r.kv_type;
    p.emulate_rtt_ms = o->rtt_ms;
    p.emulate_bandwidth_kbps = o->kbps;
    p.api_key = o->api_key;
    p.reconnect_attempts = o->reconnect;
    p.fallback_local = o->fallback;
    p.io_timeout_s = o->io_timeout;
    p.log = edge_log;
    p.tls = o->tls;
    p.tls_ca = o->tls_ca;
    p.tls_insecure = o->tls_insecure;
    p.tls_server_name = o->tls_name;
    return p;
}

static void listen_log(void *ud, int level, const char *msg) {
    (void)ud;
    if (level <= 2) fprintf(stderr, "edgespec edge: %s\n", msg);
}

/* --listen: serves the local OpenAI API until SIGINT / SIGTERM, then prints what it did. */
static int run_listen(edge_opts *o) {
    /* blocked before any thread exists, so that only this thread takes them (sigwait) */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    int rc = 1;
    es_err err = {{0}};
    es_edge_http *srv = NULL;
    es_model *draft = es_run_load_model("edge", o->r.draft_path, ES_BACKEND_CPU);
    if (!draft) goto done;
    char name[256];
    snprintf(name, sizeof name, "%s", o->model_name ? o->model_name : "edgespec-edge");
    es_edge_http_params hp = es_edge_http_default_params();
    hp.host = o->listen_host;
    hp.port = o->listen_port;
    hp.edge = edge_params(o, draft);
    hp.workers = o->parallel;
    hp.queue = o->queue;
    hp.queue_timeout_s = o->queue_timeout;
    hp.cors = o->cors;
    hp.api_key = o->http_key;
    hp.model_name = name;
    hp.max_body = (size_t)o->max_body;
    hp.max_connections = o->max_conns;
    hp.request_timeout_s = o->req_timeout;
    hp.chat_family = o->chat_family;
    hp.chat_template = o->chat_template;
    hp.log = listen_log;
    if (es_edge_http_start(&hp, &srv, &err) != ES_OK) {
        cli_error("edge", "%s", err.msg);
        goto done;
    }
    const bool v6 = strchr(o->listen_host, ':') != NULL;
    fprintf(stderr, "edgespec edge: draft %s, server %s:%d, %d workers\n", o->r.draft_path, o->host, o->port, o->parallel);
    fprintf(stderr, "HTTP API listening on http://%s%s%s:%d\n", v6 ? "[" : "", o->listen_host, v6 ? "]" : "",
            es_edge_http_port(srv));
    fflush(stderr);
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    fprintf(stderr, "edgespec edge: %s, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
    es_edge_http_stats st;
    es_edge_http_get_stats(srv, &st);
    es_edge_http_free(srv);
    srv = NULL;
    fprintf(stderr, "edgespec edge: %lld generations (%lld failed, %lld refused), %lld prompt / %lld generated tokens, "
                    "%lld rounds, acceptance length %.2f\n",
            (long long)st.generations, (long long)st.failures, (long long)st.refused, (long long)st.prompt_tokens,
            (long long)st.generated_tokens, (long long)st.rounds, st.rounds ? 1.0 + (double)st.accepted / (double)st.rounds : 0.0);
    rc = 0;
done:
    es_edge_http_free(srv);
    es_model_free(draft);
    es_run_opts_free(&o->r);
    return rc;
}

/* The client, connected to the server. Unreachable with --fallback local and a draft, it starts with
 * the draft alone (the generation switches to the server when it answers). False after the error was
 * printed (with --json, as the result object too). */
static bool edge_connect(const edge_opts *o, const es_edge_params *p, bool have_draft, es_edge **e) {
    es_err err = {{0}};
    if (es_edge_init(p, e, &err) != ES_OK) {
        cli_error("edge", "%s", err.msg);
        return false;
    }
    const es_status cs = es_edge_reconnect(*e, &err);
    if (cs == ES_OK) return true;
    if ((cs == ES_ERR_IO || cs == ES_ERR_TIMEOUT) && p->fallback_local && have_draft) {
        fprintf(stderr, "edgespec edge: %s:%d: %s; starting with the draft model alone\n", o->host, o->port, err.msg);
        return true;
    }
    cli_error("edge", "%s:%d: %s", o->host, o->port, err.msg);
    if (o->r.json) print_fail_json(o, mode_name(p), err.msg);
    return false;
}

/* The tokens that end the generation: BOS and EOS, the draft's or (without one) the server's. */
static int stop_tokens(const es_tokenizer *tok, const es_edge *e, int32_t stops[2]) {
    const es_msg_welcome *wl = es_edge_server_info(e);
    int n_stop = 0;
    const int32_t bos = tok ? es_tokenizer_bos(tok) : wl->bos, eos = tok ? es_tokenizer_eos(tok) : wl->eos;
    if (bos >= 0) stops[n_stop++] = bos;
    if (eos >= 0 && eos != bos) stops[n_stop++] = eos;
    return n_stop;
}

/* --json: the generation as one object; after a failure (s, error) too, with the tokens it had. */
static void print_result_json(const edge_opts *o, const es_edge_params *p, const es_edge_stats *st, const int32_t *gen,
                              const char *text, es_status s, const char *error) {
    const int ng = st->n_generated;
    const int64_t wire_bytes = st->bytes_sent + st->bytes_received;
    cJSON *j = cJSON_CreateObject();
    if (s != ES_OK) cJSON_AddStringToObject(j, "error", error);
    cJSON_AddStringToObject(j, "server", o->host);
    cJSON_AddNumberToObject(j, "port", o->port);
    cJSON_AddStringToObject(j, "mode", mode_name(p));
    if (o->r.draft_path) cJSON_AddStringToObject(j, "draft", o->r.draft_path);
    cJSON_AddStringToObject(j, "text", text);
    cJSON_AddItemToObject(j, "tokens", int_array(gen, ng));
    cJSON_AddNumberToObject(j, "n_prompt", st->n_prompt);
    cJSON_AddNumberToObject(j, "n_generated", ng);
    cJSON_AddStringToObject(j, "stop", stop_name(s != ES_OK ? ES_STOP_ERROR : st->stop));
    cJSON_AddNumberToObject(j, "temperature", o->r.sp.temperature);
    cJSON_AddNumberToObject(j, "seed", (double)o->r.sp.seed);
    cJSON *t = cJSON_AddObjectToObject(j, "timings");
    cJSON_AddNumberToObject(t, "ttft_ms", st->ttft_s * 1000.0);
    cJSON_AddNumberToObject(t, "total_s", st->total_s);
    cJSON_AddNumberToObject(t, "tokens_per_s", st->total_s > 0 ? ng / st->total_s : 0);
    cJSON *rs = cJSON_AddArrayToObject(t, "resume_ms"); /* per reconnection: server lost -> first token after */
    for (int k = 0; rs && k < st->n_resumes; k++) cJSON_AddItemToArray(rs, cJSON_CreateNumber(st->resume_s[k] * 1000.0));
    cJSON *sp = cJSON_AddObjectToObject(j, "spec");
    cJSON_AddStringToObject(sp, "draft_mode", o->r.spec_mode);
    cJSON_AddStringToObject(sp, "accept", o->r.accept);
    cJSON_AddNumberToObject(sp, "rounds", st->rounds);
    cJSON_AddNumberToObject(sp, "drafted", (double)st->drafted);
    cJSON_AddNumberToObject(sp, "accepted", (double)st->accepted);
    cJSON_AddNumberToObject(sp, "acceptance_length", st->rounds ? 1.0 + (double)st->accepted / st->rounds : 0);
    cJSON_AddNumberToObject(sp, "acceptance_rate", st->drafted ? (double)st->accepted / (double)st->drafted : 0);
    int maxd = 0;
    for (int k = 1; k <= ES_SPEC_MAX_PATH; k++)
        if (st->accepted_at_depth[k]) maxd = k;
    cJSON *dh = cJSON_AddArrayToObject(sp, "accepted_at_depth");
    for (int k = 1; k <= maxd; k++) cJSON_AddItemToArray(dh, cJSON_CreateNumber((double)st->accepted_at_depth[k]));
    cJSON *pa = cJSON_AddObjectToObject(sp, "proactive");
    cJSON_AddBoolToObject(pa, "enabled", p->mode == ES_MODE_EDGE && o->proactive);
    cJSON_AddStringToObject(pa, "bet", o->bet == ES_BET_FIRST ? "first" : "best-leaf");
    cJSON_AddNumberToObject(pa, "attempts", (double)st->proactive_attempts);
    cJSON_AddNumberToObject(pa, "hits", (double)st->proactive_hits);
    cJSON_AddNumberToObject(pa, "cut_to_hint", (double)st->proactive_cut);
    cJSON_AddNumberToObject(pa, "stopped_by_verdict", (double)st->proactive_stopped);
    cJSON_AddNumberToObject(pa, "resumed", (double)st->proactive_resumed);
    cJSON_AddNumberToObject(pa, "hit_ratio", st->proactive_attempts ? (double)st->proactive_hits / (double)st->proactive_attempts : 0);
    cJSON *tr = cJSON_AddObjectToObject(sp, "trees"); /* trees sent, by how they were drafted (as serve counts them) */
    for (int k = 0; tr && k < ES_TREE_ORIGINS; k++) cJSON_AddNumberToObject(tr, es_tree_origin_name(k), (double)st->trees[k]);
    cJSON *ea = cJSON_AddObjectToObject(j, "early");
    cJSON_AddBoolToObject(ea, "enabled", p->mode == ES_MODE_EDGE && o->early_exit);
    cJSON_AddNumberToObject(ea, "frames", (double)st->early_frames);
    cJSON_AddNumberToObject(ea, "agreed", (double)st->early_agreed);
    cJSON_AddNumberToObject(ea, "kept", (double)st->early_kept);
    cJSON_AddNumberToObject(ea, "ignored", (double)st->early_ignored);
    cJSON_AddNumberToObject(ea, "lead_ms_p50", es_edge_early_lead_p50(st));
    cJSON_AddNumberToObject(sp, "draft_s", st->draft_seconds);
    cJSON_AddNumberToObject(sp, "wait_s", st->wait_seconds);
    cJSON *w = cJSON_AddObjectToObject(j, "wire");
    cJSON_AddNumberToObject(w, "bytes_sent", (double)st->bytes_sent);
    cJSON_AddNumberToObject(w, "bytes_received", (double)st->bytes_received);
    cJSON_AddNumberToObject(w, "frames", (double)(st->frames_sent + st->frames_received));
    cJSON_AddNumberToObject(w, "bytes_per_token", ng ? (double)wire_bytes / ng : 0);
    cJSON_AddNumberToObject(j, "reconnects", st->reconnects);
    cJSON_AddNumberToObject(j, "fallback_tokens", st->fallback_tokens);
    char *js = cJSON_PrintUnformatted(j);
    if (js) puts(js);
    free(js);
    cJSON_Delete(j);
}

/* Without --json: the text ends its line on stdout, the statistics go to stderr. */
static void print_result_human(const es_edge_params *p, const es_edge_stats *st) {
    const int ng = st->n_generated;
    const double tps = st->total_s > 0 ? ng / st->total_s : 0;
    const int64_t wire_bytes = st->bytes_sent + st->bytes_received;
    putchar('\n');
    fflush(stdout);
    fprintf(stderr, "edgespec edge: %s mode, prompt %d tokens, generated %d tokens in %.3f s (%.1f tok/s), ttft %.1f ms, stop: %s\n",
            mode_name(p), st->n_prompt, ng, st->total_s, tps, st->ttft_s * 1000.0, stop_name(st->stop));
    if (p->mode == ES_MODE_EDGE)
        fprintf(stderr, "edgespec edge: %d rounds, acceptance length %.2f, rate %.2f, proactive %ld/%ld hits, draft %.3f s, wait %.3f s\n",
                st->rounds, st->rounds ? 1.0 + (double)st->accepted / st->rounds : 0,
                st->drafted ? (double)st->accepted / (double)st->drafted : 0, st->proactive_hits, st->proactive_attempts,
                st->draft_seconds, st->wait_seconds);
    fprintf(stderr, "edgespec edge: wire %lld bytes sent, %lld received, %.1f bytes/token", (long long)st->bytes_sent,
            (long long)st->bytes_received, ng ? (double)wire_bytes / ng : 0.0);
    if (st->reconnects) fprintf(stderr, ", %d reconnects", st->reconnects);
    if (st->fallback_tokens) fprintf(stderr, ", %d tokens from the draft alone (server gone)", st->fallback_tokens);
    fputc('\n', stderr);
}

/* One generation: the draft (when given) tokenises the prompt, the client connects, generates while
 * the tokens stream out, then reports. */
int cmd_edge(int argc, char **argv) {
    edge_opts o;
    int rc = parse(argc, argv, &o);
    if (rc == -1) {
        print_help();
        return 0;
    }
    if (rc != 0) return rc;
    if (o.listen) return run_listen(&o);
    rc = 1;
    es_err err = {{0}};
    es_model *draft = NULL;
    es_edge *e = NULL;
    int32_t *gen = NULL;
    es_run_prompt pr = {0};
    sink sk;
    memset(&sk, 0, sizeof sk);
    sk.json = o.r.json;
    if (o.r.draft_path && !(draft = es_run_load_model("edge", o.r.draft_path, ES_BACKEND_CPU))) goto done;
    const es_tokenizer *tok = draft ? es_model_tokenizer(draft) : NULL;
    if (tok && es_run_tokenize(tok, &o.r, &pr) != 0) goto done;
    const es_edge_params p = edge_params(&o, draft);
    if (!edge_connect(&o, &p, draft != NULL, &e)) goto done;
    int32_t stops[2];
    const int n_stop = stop_tokens(tok, e, stops);
    gen = malloc(((size_t)o.r.n_predict + 1) * sizeof *gen);
    if (!gen) { cli_error("edge", "out of memory"); goto done; }
    sk.have_tok = tok != NULL;
    if (tok) es_run_output_init(&sk.out, &o.r, tok, pr.ids, pr.n);
    es_edge_stats st;
    memset(&st, 0, sizeof st);
    es_status s = ES_OK;
    if (o.r.n_predict > 0) {
        if (tok) s = es_edge_generate(e, pr.ids, pr.n, o.r.n_predict, stops, n_stop, gen, &st, on_tokens, &sk, &err);
        else s = es_edge_generate_text(e, o.r.prompt, o.r.n_predict, stops, n_stop, gen, &st, on_tokens, &sk, &err);
    }
    if (s != ES_OK) {
        if (!o.r.json) putchar('\n');
        cli_error("edge", "%s", err.msg);
    }
    if (o.r.json) print_result_json(&o, &p, &st, gen, tok ? es_run_output_utf8(&sk.out) : "", s, err.msg);
    else if (s == ES_OK) print_result_human(&p, &st);
    if (tok) es_run_output_free(&sk.out);
    rc = s == ES_OK ? 0 : 1;
done:
    free(gen);
    free(pr.ids);
    es_edge_free(e);
    es_model_free(draft);
    es_run_opts_free(&o.r);
    return rc;
}
