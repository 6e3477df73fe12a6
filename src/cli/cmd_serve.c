/* cmd_serve.c — `edgespec serve`: runs the verification server (server/server.h) for a target model
 * until SIGINT or SIGTERM, then prints what it did (human-readable on stderr, or one JSON object on
 * stdout with --json).
 *
 * Signals: SIGINT/SIGTERM are blocked before any thread exists, so every thread the server starts
 * inherits the mask and the main thread alone takes them with sigwait — no handler runs inside
 * library code. SIGPIPE is ignored (a vanished peer is an EPIPE, not a dead server).
 *
 * With --http-port the OpenAI-compatible API listens before the model is loaded: until then a small
 * responder answers 503 ({"status":"loading"} on /health), then the server takes the same socket. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/opts.h"
#include "engine/ctx.h"
#include "kernels/attn.h"
#include "transport/keys.h"
#include "wire/proto.h"
#include "transport/tls.h"
#include "http/chat.h"
#include "http/http.h"
#include "server/server.h"
#include "specdec/spec.h"

static const char *k_usage =
    "edgespec serve -m TARGET.gguf [--host ADDR] [--port N] [--draft DRAFT.gguf] [-t N] [--ctx-size N]\n"
    "               [--max-sessions N] [--max-batch-tokens N] [--prefill-chunk N] [--max-tree-nodes N]\n"
    "               [--kv-memory SIZE] [--device-kv-memory SIZE] [--kv-type f32|f16|q8_0] [--sched pipeline|gather] [--group-trial] [--no-prefix-cache] [--batch-window-ms MS] [--max-frame BYTES] [--idle-timeout S]\n"
    "               [--drain-timeout S] [--device cpu|vulkan[:N]] [--exit-layers L[,L...]] [--exit-file FILE]\n"
    "               [--handshake-timeout S] [--max-connections N] [--api-key KEY] [--json] [--verbose]\n"
    "               [--http-port N] [--http-host ADDR] [--http-max-body SIZE] [--model-name NAME]\n"
    "               [--http-max-connections N] [--http-request-timeout S] [--max-queue N] [--queue-timeout S]\n"
    "               [--cors ORIGINS]\n"
    "               [--chat-template auto|chatml|qwen2|llama2|llama3|zephyr|fallback | --chat-template-file FILE]\n"
    "               [--http-no-spec]";

/* --help: the models, the address, sessions, batches, the KV cache and the device */
static void print_help_model(void) {
    printf("  -m, --model FILE         target model (GGUF)\n"
           "  --host ADDR              address to listen on (default 127.0.0.1: this machine only; use\n"
           "                           0.0.0.0 or :: to accept remote clients)\n"
           "  --port N                 TCP port (default 7700; 0 = any free port, printed at start)\n"
           "  --draft FILE             server-side draft model for server-spec sessions (clients without a\n"
           "                           draft of their own); must share the target's vocabulary\n"
           "  -t, --threads N          compute threads of the forward pass (default: number of cores)\n"
           "  -c, --ctx-size N         positions per session (default: the model's context)\n"
           "  --max-sessions N         concurrent sessions (default 64); more are refused as busy\n"
           "  --max-batch-tokens N     rows in one batched forward pass (default 512)\n"
           "  --prefill-chunk N        prompt tokens of one session per step (default 256), so a long\n"
           "                           prompt never stalls the other sessions\n"
           "  --max-tree-nodes N       largest draft tree accepted (default 64, at most %d)\n"
           "  --kv-memory SIZE         KV cache budget shared by all sessions: bytes, or with a suffix\n"
           "                           K, M, G (powers of 1024; e.g. 512M, 2G); default: enough for\n"
           "                           --max-sessions full contexts, at most half of this machine's\n"
           "                           memory. A session that does not fit is busy.\n"
           "  --kv-type f32|f16|q8_0   KV cache element type (default f16; q8_0: 34 bytes per 32 values);\n"
           "                           --kv-memory is divided by the real bytes per token of this type\n"
           "  --device cpu|vulkan[:N]  where the target's forward pass runs (default cpu; `edgespec devices`);\n"
           "                           the server's own --draft stays on the CPU\n"
           "  --device-kv-memory SIZE  two KV tiers (APEX, with --device vulkan): the device holds this much\n"
           "                           of the KV cache; the rest of --kv-memory is host memory, where the\n"
           "                           sessions that do not fit keep their KV and get their attention\n"
           "                           from this machine's cores (--threads) beside the device's work.\n"
           "                           Each step a profiled predictor picks how (asymmetric sub-batches,\n"
           "                           asynchronous overlap, or host sessions wait a step); sessions move\n"
           "                           back to the device when they fit. Prefix-cache pages are shared\n"
           "                           across the tiers (copied over when a session of the other tier\n"
           "                           adopts one; idle device copies make way when room is needed).\n",
           ES_SPEC_MAX_NODES);
}

/* --help: early exits, and how sessions share passes and KV pages */
static void print_help_passes(void) {
    fputs("  --exit-layers L[,L...]   early exits: exit heads after these layers (1..n_layer-1); edges that\n"
          "                           ask (edge --early-exit) get an EARLY frame, the round's provisional\n"
          "                           verdict from the lowest of them, while the rest of the pass runs\n"
          "  --exit-file FILE         calibrated adapters (edgespec fit-exit) for those layers (without\n"
          "                           --exit-layers: every layer the file has); layers without one use\n"
          "                           the zero-training head. Exit tensors in the target's own GGUF are\n"
          "                           used when neither is given\n"
          "  --sched pipeline|gather  how edge sessions share passes (default pipeline): pipeline (SpecEdge)\n"
          "                           splits them into groups verified in turn, so the server computes one\n"
          "                           group while the others' edges draft and their trees travel; gather\n"
          "                           waits for every edge's next tree and verifies them all in one pass\n"
          "  --group-trial            pipeline: check the cycle model's split by measurement (an epoch\n"
          "                           split, one gathered, the faster kept); for edges that share the\n"
          "                           server's cores, where the model's overlap does not exist\n"
          "  --no-prefix-cache        do not keep finished sessions' KV pages for later prompts that start\n"
          "                           with the same tokens (multi-turn chat, resumed edges); on by default\n"
          "  --batch-window-ms MS     wait up to MS for the next trees of the edges due (pipeline: the group\n"
          "                           due; gather: all) so they share a pass (default 20; 0: never wait)\n",
          stdout);
}

/* --help: frame size, timeouts, draining and connection limits */
static void print_help_connections(void) {
    fputs("  --max-frame BYTES        largest frame payload accepted (default 1M; suffixes as above)\n"
          "  --idle-timeout S         close connections silent for S seconds (default 300; 0 = never)\n"
          "  --drain-timeout S        on SIGTERM, drain first: /health turns 503 \"draining\", new sessions are\n"
          "                           refused (edges reconnect elsewhere through a balancer), running ones\n"
          "                           finish; after S seconds the rest are told to move. Exit 0. (default 0:\n"
          "                           stop at once; SIGINT or a second signal always stops at once)\n"
          "  --handshake-timeout S    a new connection must say HELLO within S seconds (default 10)\n"
          "  --max-connections N      open connections at most (default 1024)\n",
          stdout);
}

/* --help: who may connect */
static void print_help_security(void) {
    fputs("  --api-key KEY            clients must present KEY (default: $EDGESPEC_API_KEY if set, else\n"
          "                           none). Keys on a command line are visible to other local users:\n"
          "                           prefer the environment variable.\n"
          "  --api-keys-file FILE     accept every key in FILE too (one per line; blank lines and lines\n"
          "                           starting with '#' ignored); on both ports\n"
          "  --tls-cert FILE          serve TLS (1.2 or newer) on the edge port and the HTTP port, with this\n"
          "                           PEM certificate chain (leaf first); needs --tls-key\n"
          "  --tls-key FILE           the certificate's PEM private key\n",
          stdout);
}

/* --help: the OpenAI-compatible HTTP API */
static void print_help_http(void) {
    fputs("  --http-port N            also serve the OpenAI-compatible HTTP API on port N (0 = any free\n"
          "                           port): POST /v1/completions, /v1/chat/completions (streaming with\n"
          "                           \"stream\": true), GET /v1/models, /health, /metrics (Prometheus).\n"
          "                           Requests share the scheduler and batches with edge sessions.\n"
          "  --http-host ADDR         address of the HTTP API (default: --host)\n"
          "  --http-max-body SIZE     largest request body (default 1M; larger ones get 413)\n"
          "  --http-max-connections N open HTTP connections (default 1024); more get 503 and are closed\n"
          "  --http-request-timeout S a connection's request (headers and body) must be complete within S\n"
          "                           seconds of opening or of its previous reply, however slowly the bytes\n"
          "                           trickle in; else 408 and closed (default 60; 0: off)\n"
          "  --max-queue N            completions waiting for a free session when the scheduler is full\n"
          "                           (FIFO, started as sessions end); beyond N: 503 + Retry-After\n"
          "                           (default 64; 0: 503 at once)\n"
          "  --queue-timeout S        a queued request waiting longer gets 503 + Retry-After (default 60;\n"
          "                           0: no limit)\n"
          "  --cors ORIGINS           let browser pages from ORIGINS (comma list of scheme://host[:port], or\n"
          "                           *) call the HTTP API: CORS headers and OPTIONS preflight (default off)\n"
          "  --model-name NAME        the model id the API reports (default: the model file's name)\n"
          "  --chat-template FAMILY   chat prompt format: auto (default: the model's own Jinja\n"
          "                           tokenizer.chat_template, tools included; one that does not parse is\n"
          "                           warned about and its family, from its markers, serves), or a built-in:\n"
          "                           chatml, qwen2, llama2, llama3, zephyr, or fallback (\"role: text\" lines)\n"
          "  --chat-template-file FILE a Jinja chat template rendered instead of the model's own (one that\n"
          "                           does not parse: the built-in family its markers name, else refused)\n"
          "  --http-no-spec           with --draft, HTTP requests still generate autoregressively\n"
          "                           (default: they use the server-side draft)\n",
          stdout);
}

/* --help: what is printed, then the advice on exposing the server */
static void print_help_output(void) {
    fputs("  --json                   at exit, print one JSON object with the statistics on stdout\n"
          "  --verbose                log every connection and session event on stderr\n\n"
          "Without --tls-cert both ports speak plain TCP/HTTP: anyone on the path can read prompts, text and\n"
          "keys. Before exposing the server beyond this machine, use TLS (or a TLS proxy / VPN) and api\n"
          "keys; see \"Security\" in the README.\n",
          stdout);
}

static void print_help(void) {
    printf("usage: %s\n\n"
           "Runs the verification server: edge clients (`edgespec edge`) connect over TCP, draft tokens\n"
           "locally and send token trees; the server verifies every session's tree in one batched forward\n"
           "pass of the target model. Clients without a draft model get tokens generated by the server.\n"
           "Prints \"listening on HOST:PORT\" on stderr once it accepts connections; runs until SIGINT or\n"
           "SIGTERM, then closes every session (clients are told the server is stopping) and prints stats.\n\n",
           k_usage);
    print_help_model();
    print_help_passes();
    print_help_connections();
    print_help_security();
    print_help_http();
    print_help_output();
}

/* ud: the serve_state's log_level. */
static void serve_log(void *ud, int level, const char *msg) {
    if (level > *(const int *)ud) return;
    static const char *names[] = {"error", "warning", "info", "debug"};
    if (level < 0) level = 0;
    if (level > 3) level = 3;
    fprintf(stderr, "edgespec serve: %s: %s\n", names[level], msg);
}

static es_model *load_model(const char *path, bool device) {
    es_model_params mp = cli_model_params();
    if (device) mp.no_repack = true; /* a device reads the file's layout */
    mp.progress = cli_progress;
    mp.log = cli_log;
    es_model *m = NULL;
    es_err err = {{0}};
    if (es_model_load(path, &mp, &m, &err) != ES_OK) {
        cli_error("serve", "%s", err.msg);
        return NULL;
    }
    return m;
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void print_stats_human(const es_server_stats *st, double uptime) {
    const es_sched_stats *k = &st->sched;
    double active = k->busy_seconds + k->idle_seconds;
    fprintf(stderr,
            "edgespec serve: %.1f s up; %lld steps, mean batch %.1f rows (max %d; %lld verify, %lld prefill, %lld ar)\n"
            "edgespec serve: %lld tokens generated; %lld rounds, %lld drafted, %lld accepted (acceptance length %.2f)\n"
            "edgespec serve: compute %.2f s busy, idle %.0f%%, %.2f CPU s\n"
            "edgespec serve: sessions %lld opened, %lld refused, %lld failed; connections %lld (%lld refused)\n"
            "edgespec serve: frames %lld in / %lld out, bytes %lld in / %lld out, %lld protocol errors\n",
            uptime, (long long)k->steps, k->steps ? (double)k->batch_rows / (double)k->steps : 0.0, k->max_batch_rows,
            (long long)k->verify_rows, (long long)k->prefill_rows, (long long)k->ar_rows, (long long)k->tokens_generated,
            (long long)k->rounds, (long long)k->drafted, (long long)k->accepted,
            k->rounds ? 1.0 + (double)k->accepted / (double)k->rounds : 0.0, k->busy_seconds,
            active > 0 ? 100.0 * k->idle_seconds / active : 100.0, k->compute_cpu_seconds, (long long)k->sessions_opened,
            (long long)k->sessions_refused, (long long)k->sessions_failed, (long long)st->connections_total,
            (long long)st->connections_refused, (long long)st->frames_in, (long long)st->frames_out,
            (long long)st->bytes_in, (long long)st->bytes_out, (long long)st->protocol_errors);
    if (st->http.requests || st->http.conns_refused || st->http.conns_timed_out)
        fprintf(stderr, "edgespec serve: http %lld requests (%lld errors, %lld completions, %lld client disconnects), "
                        "%lld prompt / %lld completion tokens; connections %lld refused (limit), %lld cut (request timeout)\n",
                (long long)st->http.requests, (long long)st->http.errors, (long long)st->http.completions,
                (long long)st->http.disconnects, (long long)st->http.prompt_tokens, (long long)st->http.completion_tokens,
                (long long)st->http.conns_refused, (long long)st->http.conns_timed_out);
}

/* "cpu", or "vulkan:N (name, M MiB)" for the device the target runs on; *info gets the device's
 * description when the driver lists it (memory_bytes 0 otherwise). */
static void device_desc(es_backend_kind backend, int device, char *buf, size_t len, es_device_info *info) {
    memset(info, 0, sizeof *info);
    snprintf(buf, len, "cpu");
    if (backend != ES_BACKEND_VULKAN) return;
    es_device_info d[16];
    int n = 0;
    es_err err = {{0}};
    if (es_devices(d, 16, &n, &err) == ES_OK && device < n && device < 16) {
        *info = d[device];
        snprintf(buf, len, "vulkan:%d (%s, %lld MiB)", device, d[device].name, (long long)(d[device].memory_bytes >> 20));
    } else {
        snprintf(buf, len, "vulkan:%d", device);
    }
}

static void print_stats_json(const es_server_stats *st, double uptime, double process_cpu, const char *host, int port,
                             es_kv_type kv_type, int policy, const char *device) {
    const es_sched_stats *k = &st->sched;
    double active = k->busy_seconds + k->idle_seconds;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "host", host);
    cJSON_AddNumberToObject(o, "port", port);
    cJSON_AddNumberToObject(o, "uptime_seconds", uptime);
    cJSON_AddNumberToObject(o, "steps", (double)k->steps);
    cJSON_AddNumberToObject(o, "batch_rows", (double)k->batch_rows);
    cJSON_AddNumberToObject(o, "mean_batch_rows", k->steps ? (double)k->batch_rows / (double)k->steps : 0.0);
    cJSON_AddNumberToObject(o, "max_batch_rows", k->max_batch_rows);
    cJSON_AddNumberToObject(o, "verify_rows", (double)k->verify_rows);
    cJSON_AddNumberToObject(o, "prefill_rows", (double)k->prefill_rows);
    cJSON_AddNumberToObject(o, "ar_rows", (double)k->ar_rows);
    cJSON_AddNumberToObject(o, "tokens_generated", (double)k->tokens_generated);
    cJSON_AddNumberToObject(o, "rounds", (double)k->rounds);
    cJSON_AddNumberToObject(o, "drafted", (double)k->drafted);
    cJSON_AddNumberToObject(o, "accepted", (double)k->accepted);
    cJSON_AddNumberToObject(o, "exit_layer", k->exit_layer);
    cJSON_AddNumberToObject(o, "early_frames", (double)k->early_frames);
    cJSON_AddNumberToObject(o, "early_agreed", (double)k->early_agreed);
    cJSON *trees = cJSON_AddObjectToObject(o, "trees"); /* edge trees verified, by how the edge drafted them */
    for (int t = 0; trees && t < ES_TREE_ORIGINS; t++) cJSON_AddNumberToObject(trees, es_tree_origin_name(t), (double)st->trees[t]);
    cJSON_AddNumberToObject(o, "busy_seconds", k->busy_seconds);
    cJSON_AddNumberToObject(o, "idle_seconds", k->idle_seconds);
    cJSON_AddNumberToObject(o, "idle_fraction", active > 0 ? k->idle_seconds / active : 1.0);
    cJSON_AddStringToObject(o, "sched", es_sched_policy_name(policy));
    cJSON_AddNumberToObject(o, "server_busy_fraction", active > 0 ? k->busy_seconds / active : 0.0);
    cJSON_AddNumberToObject(o, "sessions_per_pass", k->steps ? (double)k->pass_sessions / (double)k->steps : 0.0);
    cJSON_AddNumberToObject(o, "edge_sessions_per_pass", k->steps ? (double)k->pass_edge_sessions / (double)k->steps : 0.0);
    cJSON_AddNumberToObject(o, "rows_per_pass", k->steps ? (double)k->batch_rows / (double)k->steps : 0.0);
    cJSON_AddNumberToObject(o, "groups", k->groups);
    cJSON *gt = cJSON_AddObjectToObject(o, "group_trial"); /* the measured check of the model's split */
    if (gt) {
        cJSON_AddNumberToObject(gt, "model_groups", k->trial_model_groups);
        cJSON_AddNumberToObject(gt, "one_group_tokens_per_s", k->trial_rate_one);
        cJSON_AddNumberToObject(gt, "split_tokens_per_s", k->trial_rate_split);
        cJSON_AddNumberToObject(gt, "epochs", (double)k->trial_epochs);
    }
    cJSON_AddNumberToObject(o, "edge_round_trip_seconds", k->round_trip_s);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)k->prompt_tokens);
    cJSON_AddNumberToObject(o, "prefix_cache_hit_tokens", (double)k->prefix_hit_tokens);
    cJSON_AddNumberToObject(o, "prefix_cache_blocks", (double)k->prefix_cached_blocks);
    cJSON_AddNumberToObject(o, "prefix_cache_evicted_blocks", (double)k->prefix_evicted_blocks);
    cJSON_AddNumberToObject(o, "step_wait_seconds", k->step_wait_s);
    cJSON_AddNumberToObject(o, "pass_row_ratio", k->pass_row_ratio);
    cJSON_AddNumberToObject(o, "compute_cpu_seconds", k->compute_cpu_seconds);
    cJSON_AddNumberToObject(o, "draft_seconds", k->draft_seconds);
    cJSON_AddNumberToObject(o, "process_cpu_seconds", process_cpu);
    cJSON_AddNumberToObject(o, "sessions_opened", (double)k->sessions_opened);
    cJSON_AddNumberToObject(o, "sessions_refused", (double)k->sessions_refused);
    cJSON_AddNumberToObject(o, "sessions_failed", (double)k->sessions_failed);
    cJSON_AddNumberToObject(o, "connections_total", (double)st->connections_total);
    cJSON_AddNumberToObject(o, "connections_refused", (double)st->connections_refused);
    cJSON_AddNumberToObject(o, "auth_failures", (double)st->auth_failures);
    cJSON_AddNumberToObject(o, "tls_handshake_failures", (double)st->tls_handshake_failures);
    cJSON_AddNumberToObject(o, "frames_in", (double)st->frames_in);
    cJSON_AddNumberToObject(o, "frames_out", (double)st->frames_out);
    cJSON_AddNumberToObject(o, "bytes_in", (double)st->bytes_in);
    cJSON_AddNumberToObject(o, "bytes_out", (double)st->bytes_out);
    cJSON_AddNumberToObject(o, "protocol_errors", (double)st->protocol_errors);
    cJSON_AddNumberToObject(o, "kv_blocks_total", (double)k->kv_blocks_total);
    cJSON_AddNumberToObject(o, "kv_bytes_per_block", (double)k->kv_bytes_per_block);
    cJSON_AddStringToObject(o, "kv_type", es_kv_type_name(kv_type));
    cJSON_AddStringToObject(o, "device", device);
    /* two KV tiers (APEX): zeros with one */
    cJSON_AddBoolToObject(o, "kv_tiers", k->tiered);
    cJSON_AddNumberToObject(o, "device_kv_blocks_total", (double)k->device_kv_blocks_total);
    cJSON_AddNumberToObject(o, "device_kv_blocks_used", (double)k->device_kv_blocks_used);
    cJSON_AddNumberToObject(o, "device_kv_blocks_cached", (double)k->device_kv_blocks_cached);
    cJSON_AddNumberToObject(o, "host_tier_sessions", (double)k->host_tier_sessions);
    cJSON_AddNumberToObject(o, "host_tier_sessions_now", k->host_tier_now);
    cJSON_AddNumberToObject(o, "tier_moves_to_host", (double)k->tier_moves_to_host);
    cJSON_AddNumberToObject(o, "tier_moves_to_device", (double)k->tier_moves_to_device);
    cJSON_AddNumberToObject(o, "tier_auto_to_host", (double)k->tier_auto_to_host);
    cJSON_AddNumberToObject(o, "tier_copies_async", (double)k->tier_copies_async);
    cJSON_AddNumberToObject(o, "tier_copy_waits", (double)k->tier_copy_waits);
    cJSON *plans = cJSON_AddObjectToObject(o, "plans");
    if (plans) {
        cJSON_AddNumberToObject(plans, "device_only", (double)k->plans[0]);
        cJSON_AddNumberToObject(plans, "asymmetric", (double)k->plans[1]);
        cJSON_AddNumberToObject(plans, "async_overlap", (double)k->plans[2]);
    }
    cJSON_AddNumberToObject(o, "prediction_error_p50", k->prediction_error_p50);
    cJSON_AddNumberToObject(o, "prediction_error_p90", k->prediction_error_p90);
    cJSON_AddStringToObject(o, "apex_profile", k->apex_profile == 2 ? "measured" : k->apex_profile == 1 ? "preset" : "none");
    cJSON *h = cJSON_AddObjectToObject(o, "http");
    if (h) {
        cJSON_AddNumberToObject(h, "requests", (double)st->http.requests);
        cJSON_AddNumberToObject(h, "errors", (double)st->http.errors);
        cJSON_AddNumberToObject(h, "completions", (double)st->http.completions);
        cJSON_AddNumberToObject(h, "disconnects", (double)st->http.disconnects);
        cJSON_AddNumberToObject(h, "prompt_tokens", (double)st->http.prompt_tokens);
        cJSON_AddNumberToObject(h, "completion_tokens", (double)st->http.completion_tokens);
        cJSON_AddNumberToObject(h, "connections_refused", (double)st->http.conns_refused);
        cJSON_AddNumberToObject(h, "connections_timed_out", (double)st->http.conns_timed_out);
    }
    char *txt = cJSON_PrintUnformatted(o);
    if (txt) printf("%s\n", txt);
    fflush(stdout);
    free(txt);
    cJSON_Delete(o);
}

/* What `serve` was asked to do: its options, checked by parse_options and check_options. */
typedef struct serve_opts {
    const char *model_path, *draft_path, *host, *api_key;
    const char *http_host, *model_name, *keys_file, *tls_cert, *tls_key;
    long port, http_port; /* http_port -1: no HTTP API */
    bool json, verbose;
    double drain_timeout_s;
    es_server_params sp; /* what the options set directly; start_server fills in the rest */
} serve_opts;

/* Everything serve holds while it runs; serve_free releases it in reverse order of creation. */
typedef struct serve_state {
    serve_opts o;
    int log_level;              /* serve_log's threshold (its ud): 1, or 3 with --verbose */
    es_keys keys;               /* --api-keys-file */
    const char **key_ptrs;      /* keys.k as the server's api_keys */
    struct ssl_ctx_st *tls;     /* --tls-cert / --tls-key */
    int http_fd;                /* the HTTP socket, until es_server_start takes it; -1: none */
    es_http_loading *loading;   /* the 503 responder on http_fd while the models load */
    char name_buf[256];         /* the model id the API reports, when --model-name is not given */
    es_model *target, *draft;
    es_server *srv;
    char devdesc[320];          /* the device the target runs on, for the reports */
    double t0;                  /* when the server started, for the uptime */
} serve_state;

/* The options that need code of their own (cli/opts.h handlers; dst: the server's parameters). */
static bool opt_exit_layers(const cli_arg *a) {
    es_sched_params *sp = &((es_server_params *)a->dst)->sched;
    return cli_parse_layers(a->value, sp->exit_layers, &sp->n_exit_layers);
}
static bool opt_sched(const cli_arg *a) {
    const int pol = es_sched_policy_parse(a->value);
    if (pol >= 0) ((es_server_params *)a->dst)->sched.policy = pol;
    return pol >= 0;
}
static bool opt_device(const cli_arg *a) {
    es_sched_params *sp = &((es_server_params *)a->dst)->sched;
    return cli_parse_device(a->value, &sp->backend, &sp->device);
}
static bool opt_chat_template(const cli_arg *a) {
    es_server_params *sp = a->dst;
    const int f = strcmp(a->value, "auto") ? es_chat_family_parse(a->value) : -1;
    if (strcmp(a->value, "auto") && f < 0) return false;
    sp->chat_family = f;
    sp->chat_template = NULL;
    return true;
}
static bool opt_chat_template_file(const cli_arg *a) { /* prints its own errors */
    es_server_params *sp = a->dst;
    return cli_chat_template_file(a->cmd, a->value, &sp->chat_template, &sp->chat_family);
}

/* Reads argv into *o. Returns -1 to go on, else the exit code: 0 after --help, 2 for a usage error. */
static int parse_options(int argc, char **argv, serve_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 7700;
    o->http_port = -1;
    o->sp = es_server_default_params();
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    o->sp.sched.n_threads = nc > 0 ? (int)nc : 1;
    es_server_params *sp = &o->sp;
    es_sched_params *sc = &o->sp.sched;
    char must_nodes[64], must_key[64], must_exits[96];
    snprintf(must_nodes, sizeof must_nodes, "must be in 1..%d", ES_SPEC_MAX_NODES);
    snprintf(must_key, sizeof must_key, "must be 1..%d bytes", ES_PROTO_MAX_KEY);
    snprintf(must_exits, sizeof must_exits, "wants up to %d distinct positive layer numbers", ES_EXIT_MAX);
    const cli_opt t[] = {
        {.names = "-h|--help", .kind = CLI_STOP, .stop = 1},
        {.names = "--json", .kind = CLI_SET, .dst = &o->json},
        {.names = "-v|--verbose", .kind = CLI_SET, .dst = &o->verbose},
        {.names = "-m|--model", .kind = CLI_STR, .dst = &o->model_path},
        {.names = "--draft|-md|--model-draft", .kind = CLI_STR, .dst = &o->draft_path},
        {.names = "--host", .kind = CLI_STR, .dst = &o->host, .max = 255, .must = "must be a host name or address"},
        {.names = "-p|--port", .kind = CLI_LONG, .dst = &o->port, .lo = 0, .hi = 65535, .must = "must be in 0..65535"},
        {.names = "-t|--threads", .kind = CLI_INT, .dst = &sc->n_threads, .lo = 1, .hi = 512, .must = "must be in 1..512"},
        {.names = "-c|--ctx-size|--ctx", .kind = CLI_INT, .dst = &sc->n_ctx, .lo = 2, .hi = 1 << 24, .must = "must be in 2..16777216"},
        {.names = "--max-sessions", .kind = CLI_INT, .dst = &sc->max_sessions, .lo = 1, .hi = 65536, .must = "must be in 1..65536"},
        {.names = "--max-batch-tokens", .kind = CLI_INT, .dst = &sc->max_batch_tokens, .lo = 1, .hi = 65536, .must = "must be in 1..65536"},
        {.names = "--prefill-chunk", .kind = CLI_INT, .dst = &sc->prefill_chunk, .lo = 1, .hi = 65536, .must = "must be in 1..65536"},
        {.names = "--max-tree-nodes", .kind = CLI_INT, .dst = &sc->max_tree_nodes, .lo = 1, .hi = ES_SPEC_MAX_NODES, .must = must_nodes},
        {.names = "--kv-memory", .kind = CLI_I64, .dst = &sc->kv_memory_bytes, .lo = 1, .hi = (double)(1ull << 50), .must = "must be a size such as 536870912, 512M or 2G"},
        {.names = "--device-kv-memory", .kind = CLI_I64, .dst = &sc->device_kv_memory_bytes, .lo = 1, .hi = (double)(1ull << 50), .must = "must be a size such as 268435456, 256M or 1G"},
        {.names = "--kv-type", .kind = CLI_FN, .dst = &sc->kv_type, .fn = cli_opt_kv_type, .must = "must be f32, f16 or q8_0"},
        {.names = "--exit-layers", .kind = CLI_FN, .dst = sp, .fn = opt_exit_layers, .must = must_exits},
        {.names = "--exit-file", .kind = CLI_STR, .dst = &sc->exit_file},
        {.names = "--no-prefix-cache", .kind = CLI_CLEAR, .dst = &sc->prefix_cache},
        {.names = "--group-trial", .kind = CLI_SET, .dst = &sc->group_trial},
        {.names = "--sched", .kind = CLI_FN, .dst = sp, .fn = opt_sched, .must = "must be pipeline or gather"},
        {.names = "--device", .kind = CLI_FN, .dst = sp, .fn = opt_device, .must = "must be cpu, vulkan or vulkan:N"},
        {.names = "--batch-window-ms", .kind = CLI_DOUBLE, .dst = &sc->batch_window_ms, .lo = 0, .hi = 10000, .must = "must be in 0..10000"},
        {.names = "--max-frame", .kind = CLI_U32, .dst = &sp->max_payload, .lo = 4096, .hi = (double)(64ull << 20), .must = "must be a size in 4096..64M bytes"},
        {.names = "--drain-timeout", .kind = CLI_DOUBLE, .dst = &o->drain_timeout_s, .lo = 0, .hi = 1e7, .must = "must be a number of seconds >= 0"},
        {.names = "--idle-timeout", .kind = CLI_DOUBLE, .dst = &sp->idle_timeout_s, .lo = 0, .hi = 1e7, .must = "must be a number of seconds >= 0"},
        {.names = "--handshake-timeout", .kind = CLI_DOUBLE, .dst = &sp->handshake_timeout_s, .lo = 0, .hi = 1e7, .must = "must be a number of seconds > 0", .lo_open = true},
        {.names = "--max-connections", .kind = CLI_INT, .dst = &sp->max_connections, .lo = 1, .hi = 1 << 20, .must = "must be in 1..1048576"},
        {.names = "--api-key", .kind = CLI_STR, .dst = &o->api_key, .max = ES_PROTO_MAX_KEY, .must = must_key},
        {.names = "--api-keys-file", .kind = CLI_STR, .dst = &o->keys_file},
        {.names = "--tls-cert", .kind = CLI_STR, .dst = &o->tls_cert},
        {.names = "--tls-key", .kind = CLI_STR, .dst = &o->tls_key},
        {.names = "--http-port", .kind = CLI_LONG, .dst = &o->http_port, .lo = 0, .hi = 65535, .must = "must be in 0..65535"},
        {.names = "--http-host", .kind = CLI_STR, .dst = &o->http_host, .max = 255, .must = "must be a host name or address"},
        {.names = "--http-max-body", .kind = CLI_ZU, .dst = &sp->http_max_body, .lo = 256, .hi = (double)(1ull << 30), .must = "must be a size in 256..1G bytes"},
        {.names = "--http-max-connections", .kind = CLI_INT, .dst = &sp->http_max_connections, .lo = 1, .hi = 1000000, .must = "must be in 1..1000000"},
        {.names = "--http-request-timeout", .kind = CLI_DOUBLE, .dst = &sp->http_request_timeout_s, .lo = 0, .hi = 86400,
         .zero_off = true, .must = "must be 0..86400 seconds (0: off)"},
        {.names = "--max-queue", .kind = CLI_INT, .dst = &sp->http_max_queue, .lo = 0, .hi = 1 << 20, .must = "must be in 0..1048576"},
        {.names = "--queue-timeout", .kind = CLI_DOUBLE, .dst = &sp->http_queue_timeout_s, .lo = 0, .hi = 86400, .must = "must be 0..86400 seconds (0: no limit)"},
        {.names = "--cors", .kind = CLI_STR, .dst = &sp->http_cors, .max = 1000, .must = "must be * or a comma list of origins (at most 1000 bytes)"},
        {.names = "--model-name", .kind = CLI_STR, .dst = &o->model_name, .max = 255, .must = "must be 1..255 bytes"},
        {.names = "--chat-template", .kind = CLI_FN, .dst = sp, .fn = opt_chat_template, .must = "must be auto, chatml, qwen2, llama2, llama3, zephyr or fallback"},
        {.names = "--chat-template-file", .kind = CLI_FN, .dst = sp, .fn = opt_chat_template_file},
        {.names = "--http-no-spec", .kind = CLI_CLEAR, .dst = &sp->http_server_spec},
    };
    const int rc = cli_opts_parse("serve", k_usage, t, sizeof t / sizeof t[0], argc, argv, NULL, NULL);
    if (rc == 1) {
        print_help();
        return 0;
    }
    return rc == 0 ? -1 : rc;
}

/* The rules between options, and the api key from the environment. Returns -1 to go on, else 2. */
static int check_options(serve_opts *o) {
    if (!o->model_path) return cli_usage_error("serve", k_usage, "a target model is required (-m TARGET.gguf)");
    if (!o->api_key) {
        const char *env = getenv("EDGESPEC_API_KEY");
        if (env && *env) {
            if (strlen(env) > ES_PROTO_MAX_KEY) return cli_usage_error("serve", k_usage, "$EDGESPEC_API_KEY must be at most %d bytes", ES_PROTO_MAX_KEY);
            o->api_key = env;
        }
    }
    if (!o->tls_cert != !o->tls_key)
        return cli_usage_error("serve", k_usage, "TLS needs both --tls-cert FILE and --tls-key FILE");
    const es_sched_params *k = &o->sp.sched;
    if (k->prefill_chunk > k->max_batch_tokens)
        return cli_usage_error("serve", k_usage, "--prefill-chunk (%d) cannot exceed --max-batch-tokens (%d)", k->prefill_chunk,
                               k->max_batch_tokens);
    if (k->max_tree_nodes + 1 > k->max_batch_tokens)
        return cli_usage_error("serve", k_usage, "--max-batch-tokens (%d) must hold a whole tree: at least --max-tree-nodes + 1 (%d)",
                               k->max_batch_tokens, k->max_tree_nodes + 1);
    /* both listeners would take the same socket: refuse before "HTTP API listening" is printed */
    if (o->http_port > 0 && o->http_port == o->port && (!o->http_host || !strcmp(o->http_host, o->host)))
        return cli_usage_error("serve", k_usage, "--port and --http-port must differ (both are %ld)", o->port);
    return -1;
}

/* SIGINT/SIGTERM blocked before any thread exists (model loading may start some), so that all of them
 * inherit the mask and only the main thread takes the signals, in sigwait. */
static void block_signals(sigset_t *sigs) {
    sigemptyset(sigs);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Keys and certificates are checked before anything listens or loads: a typo fails at once. */
static bool load_credentials(serve_state *s) {
    es_err err = {{0}};
    if (s->o.keys_file) {
        if (es_keys_load_file(&s->keys, s->o.keys_file, &err) != ES_OK) {
            cli_error("serve", "%s", err.msg);
            return false;
        }
        if (!(s->key_ptrs = malloc((size_t)s->keys.n * sizeof *s->key_ptrs))) {
            cli_error("serve", "out of memory");
            return false;
        }
        for (int k = 0; k < s->keys.n; k++) s->key_ptrs[k] = s->keys.k[k];
        s->o.sp.api_keys = s->key_ptrs;
        s->o.sp.n_api_keys = s->keys.n;
    }
    if (s->o.tls_cert && es_tls_server_ctx(s->o.tls_cert, s->o.tls_key, &s->tls, &err) != ES_OK) {
        cli_error("serve", "%s", err.msg);
        return false;
    }
    s->o.sp.tls = s->tls;
    return true;
}

/* With --http-port: the API listens before the models load, and answers 503 until they have. */
static bool open_http_api(serve_state *s) {
    serve_opts *o = &s->o;
    if (o->http_port < 0) return true;
    if (!o->http_host) o->http_host = o->host;
    es_err err = {{0}};
    int bound = 0;
    if (es_http_listen(o->http_host, (int)o->http_port, &s->http_fd, &bound, &err) != ES_OK ||
        es_http_loading_start(s->http_fd, s->tls, &s->loading, &err) != ES_OK) {
        cli_error("serve", "%s", err.msg);
        return false;
    }
    const bool v6h = strchr(o->http_host, ':') != NULL;
    fprintf(stderr, "HTTP API listening on %s://%s%s%s:%d\n", s->tls ? "https" : "http", v6h ? "[" : "", o->http_host,
            v6h ? "]" : "", bound);
    fflush(stderr);
    if (!o->model_name) { /* the file's name without folders and .gguf */
        const char *b = strrchr(o->model_path, '/');
        snprintf(s->name_buf, sizeof s->name_buf, "%s", b ? b + 1 : o->model_path);
        char *dot = strstr(s->name_buf, ".gguf");
        if (dot && dot != s->name_buf && dot[5] == 0) *dot = 0;
        o->model_name = s->name_buf;
    }
    return true;
}

/* The test hooks of `serve`, read from the environment here in the command and never by the library;
 * they are not options because no user needs them (all the hooks: README, "Test hooks"):
 *  - EDGESPEC_TEST_LOAD_GATE=FILE: with --http-port, the loading phase lasts until FILE exists, so a
 *    test sees /health answer 503 "loading" without assuming how long a load takes;
 *  - EDGESPEC_TEST_PARK_AFTER=N: every session parks after N generated tokens (its KV held, no further
 *    round) until it is closed (es_sched_params.park_after_tokens), so a test keeps generations running
 *    for as long as it checks a full scheduler, a drain or a disconnecting client. */
static bool apply_test_hooks(serve_state *s) {
    const char *gate = s->o.http_port >= 0 ? getenv("EDGESPEC_TEST_LOAD_GATE") : NULL;
    if (gate && *gate) {
        const struct timespec tick = {0, 10 * 1000000L};
        for (int i = 0; access(gate, F_OK) != 0; i++) {
            if (i == 60000) { /* ten minutes: the test that set it is gone */
                cli_error("serve", "EDGESPEC_TEST_LOAD_GATE %s never appeared", gate);
                return false;
            }
            nanosleep(&tick, NULL);
        }
    }
    const char *park = getenv("EDGESPEC_TEST_PARK_AFTER");
    long park_n;
    if (park && cli_parse_long(park, 1, 1 << 30, &park_n)) s->o.sp.sched.park_after_tokens = (int)park_n;
    return true;
}

/* The target, and the server-side draft, which must share its vocabulary. */
static bool load_models(serve_state *s) {
    serve_opts *o = &s->o;
    if (o->sp.sched.backend != ES_BACKEND_CPU) cli_keep_vulkan_driver();
    if (!(s->target = load_model(o->model_path, o->sp.sched.backend != ES_BACKEND_CPU))) return false;
    if (!o->draft_path) return true;
    if (!(s->draft = load_model(o->draft_path, false))) return false;
    es_err err = {{0}};
    if (es_spec_check_vocab(es_model_tokenizer(s->target), es_model_tokenizer(s->draft), &err) != ES_OK) {
        cli_error("serve", "draft %s cannot draft for %s: %s", o->draft_path, o->model_path, err.msg);
        return false;
    }
    o->sp.sched.draft = s->draft;
    return true;
}

/* The defaults that depend on the models: the exit layers and the KV pool's size. */
static bool resolve_defaults(serve_state *s) {
    es_sched_params *k = &s->o.sp.sched;
    if (!k->n_exit_layers) { /* the file's layers, or exit tensors in the target's own GGUF */
        const char *src = k->exit_file ? k->exit_file : s->o.model_path;
        if (!cli_exit_layers_in(src, k->exit_layers, &k->n_exit_layers)) {
            cli_error("serve", "cannot read %s", src);
            return false;
        }
        if (k->exit_file && !k->n_exit_layers) {
            cli_error("serve", "%s has no exit.<L>.weight tensors (give --exit-layers for zero-training heads)", src);
            return false;
        }
        if (k->n_exit_layers && !k->exit_file) k->exit_file = s->o.model_path;
    }
    if (k->n_ctx > es_model_n_ctx_train(s->target))
        fprintf(stderr, "edgespec serve: warning: --ctx-size %d is beyond the model's training context %d\n", k->n_ctx,
                es_model_n_ctx_train(s->target));
    if (k->kv_memory_bytes <= 0) {
        /* the default pool holds a full context for every session; with a real model's context
           (Qwen2.5: 32,768) and 64 sessions that is tens of GB, so it is capped at half of this
           machine's memory: sessions are admitted while pages are free (busy otherwise), as with an
           explicit --kv-memory */
        const es_sched_params d = es_sched_default_params();
        const int64_t ms = k->max_sessions > 0 ? k->max_sessions : d.max_sessions;
        const int64_t ctx = k->n_ctx > 0 ? k->n_ctx : es_model_n_ctx_train(s->target);
        const int64_t per_block = es_model_kv_bytes_per_block(s->target, 16, k->kv_type);
        const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
        const double full = (double)ms * (double)((ctx + 15) / 16) * (double)per_block;
        const double cap = pages > 0 && page > 0 ? 0.5 * (double)pages * (double)page : 0;
        if (per_block > 0 && cap > 0 && full > cap) {
            k->kv_memory_bytes = (int64_t)cap;
            fprintf(stderr, "edgespec serve: KV pool %.1f GiB, half of this machine's memory (%lld full %lld-token contexts "
                            "would take %.1f GiB): about %.0f tokens in all; --kv-memory sets it\n",
                    cap / 1073741824.0, (long long)ms, (long long)ctx, full / 1073741824.0, cap / (double)per_block * 16.0);
        }
    }
    return true;
}

/* Hands the models, the HTTP socket and the settings to the server, which starts listening. */
static bool start_server(serve_state *s) {
    es_server_params *sp = &s->o.sp;
    sp->host = s->o.host;
    sp->port = (int)s->o.port;
    sp->target = s->target;
    sp->target_tok = es_model_tokenizer(s->target);
    sp->api_key = s->o.api_key;
    sp->log = serve_log;
    sp->log_ud = &s->log_level;
    if (s->http_fd >= 0) {
        es_http_loading_stop(s->loading); /* the socket stays open: connections wait in its backlog */
        s->loading = NULL;
        sp->http = true;
        sp->http_fd = s->http_fd;
        sp->http_host = s->o.http_host;
        sp->model_name = s->o.model_name;
        s->http_fd = -1; /* es_server_start owns it now */
    }
    s->t0 = cli_now();
    es_device_info devinfo;
    device_desc(sp->sched.backend, sp->sched.device, s->devdesc, sizeof s->devdesc, &devinfo);
    sp->device_name = devinfo.name[0] ? devinfo.name : NULL;
    sp->device_memory_bytes = devinfo.memory_bytes;
    es_err err = {{0}};
    if (es_server_start(sp, &s->srv, &err) != ES_OK) {
        cli_error("serve", "%s", err.msg);
        return false;
    }
    return true;
}

static bool is_local(const char *host) { return !strcmp(host, "127.0.0.1") || !strcmp(host, "localhost") || !strcmp(host, "::1"); }

/* What runs where, the warnings about exposure, then "listening on", which scripts wait for. */
static void report_start(const serve_state *s) {
    const serve_opts *o = &s->o;
    const es_server_params *sp = &o->sp;
    char desc[128];
    es_model_desc(s->target, desc, sizeof desc);
    const bool v6 = strchr(o->host, ':') != NULL;
    const bool local = is_local(o->host) && (!sp->http || !o->http_host || is_local(o->http_host));
    const bool keys = o->api_key || s->keys.n;
    fprintf(stderr, "edgespec serve: %s%s%s, %d thread%s%s%s%s\n", desc, s->draft ? ", draft " : "", s->draft ? o->draft_path : "",
            sp->sched.n_threads, sp->sched.n_threads == 1 ? "" : "s", keys ? ", api key required" : "", s->tls ? ", TLS" : "",
            local ? "" : ", reachable from other machines");
    if (sp->sched.backend != ES_BACKEND_CPU) fprintf(stderr, "edgespec serve: the target's forward pass runs on %s\n", s->devdesc);
    es_server_stats ts;
    es_server_get_stats(s->srv, &ts);
    const es_sched_stats *k = &ts.sched;
    if (k->tiered)
        fprintf(stderr, "edgespec serve: two KV tiers: %lld pages (%.1f KiB) on the device of %lld in all, host-tier attention on "
                        "%d thread%s, predictor profile %s; prefix cache %s\n",
                (long long)k->device_kv_blocks_total, (double)k->device_kv_blocks_total * (double)k->kv_bytes_per_block / 1024.0,
                (long long)k->kv_blocks_total, sp->sched.n_threads, sp->sched.n_threads == 1 ? "" : "s",
                k->apex_profile == 2 ? "measured at start-up" : "a preset scaled to this model", sp->sched.prefix_cache ? "on" : "off");
    else if (sp->sched.device_kv_memory_bytes > 0)
        fprintf(stderr, "edgespec serve: --device-kv-memory holds the whole KV pool: one tier\n");
    if (!local && !s->tls)
        fprintf(stderr, "edgespec serve: warning: listening beyond this machine without TLS: traffic and keys travel in "
                        "clear text (see --tls-cert)\n");
    if (!local && !keys)
        fprintf(stderr, "edgespec serve: warning: listening beyond this machine without an api key: anyone who can "
                        "reach the port can use the model (see --api-key / --api-keys-file)\n");
    fprintf(stderr, "listening on %s%s%s:%d\n", v6 ? "[" : "", o->host, v6 ? "]" : "", es_server_port(s->srv));
    if (sp->http) fprintf(stderr, "edgespec serve: HTTP API ready (model \"%s\")\n", o->model_name);
    fflush(stderr);
}

static int wait_for_signal(const sigset_t *sigs) {
    int sig = 0;
    while (sigwait(sigs, &sig) != 0) {
    }
    return sig;
}

/* SIGTERM with --drain-timeout: the sessions already running finish here while a balancer sends new
 * ones elsewhere; the wait ends when none is left (checked every 50 ms), at the deadline, or at a
 * second signal. */
static void drain(serve_state *s, const sigset_t *sigs) {
    es_server_drain(s->srv);
    es_server_stats ds;
    es_server_get_stats(s->srv, &ds);
    fprintf(stderr, "edgespec serve: terminated, draining %d session%s (at most %.3g s)\n", ds.sched.sessions_active,
            ds.sched.sessions_active == 1 ? "" : "s", s->o.drain_timeout_s);
    fflush(stderr);
    const double t_drain = cli_now();
    for (;;) {
        es_server_get_stats(s->srv, &ds);
        if (ds.sched.sessions_active == 0) break;
        if (cli_now() - t_drain >= s->o.drain_timeout_s) {
            fprintf(stderr, "edgespec serve: drain timeout: %d session%s told to move\n", ds.sched.sessions_active,
                    ds.sched.sessions_active == 1 ? "" : "s");
            break;
        }
        const struct timespec tick = {0, 50 * 1000000L};
        if (sigtimedwait(sigs, NULL, &tick) > 0) {
            fprintf(stderr, "edgespec serve: a second signal: stopping now\n");
            break;
        }
    }
    fprintf(stderr, "edgespec serve: drained, stopping\n");
}

/* Stops the server (every session is told it is stopping) and prints what it did. */
static void stop_and_report(serve_state *s) {
    es_server_stop(s->srv);
    es_server_stats st;
    es_server_get_stats(s->srv, &st);
    const int port_used = es_server_port(s->srv);
    es_server_free(s->srv);
    s->srv = NULL;
    const double uptime = cli_now() - s->t0;
    const es_sched_params *k = &s->o.sp.sched;
    if (s->o.json) print_stats_json(&st, uptime, cpu_seconds(), s->o.host, port_used, k->kv_type, k->policy, s->devdesc);
    else print_stats_human(&st, uptime);
}

static void serve_free(serve_state *s) {
    es_http_loading_stop(s->loading);
    if (s->http_fd >= 0) close(s->http_fd);
    es_server_free(s->srv);
    es_tls_ctx_free(s->tls); /* after the server and the loading responder, which use it */
    free(s->key_ptrs);
    es_keys_free(&s->keys);
    es_model_free(s->draft);
    es_model_free(s->target);
}

int cmd_serve(int argc, char **argv) {
    serve_state s;
    memset(&s, 0, sizeof s);
    s.http_fd = -1;
    int rc = parse_options(argc, argv, &s.o);
    if (rc < 0) rc = check_options(&s.o);
    if (rc >= 0) return rc;
    s.log_level = s.o.verbose ? 3 : 1;
    sigset_t sigs;
    block_signals(&sigs);
    rc = 1;
    if (load_credentials(&s) && open_http_api(&s) && apply_test_hooks(&s) && load_models(&s) && resolve_defaults(&s) &&
        start_server(&s)) {
        report_start(&s);
        const int sig = wait_for_signal(&sigs);
        if (sig == SIGTERM && s.o.drain_timeout_s > 0) drain(&s, &sigs);
        else fprintf(stderr, "edgespec serve: %s, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
        stop_and_report(&s);
        rc = 0;
    }
    serve_free(&s);
    return rc;
}
