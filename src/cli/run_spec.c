/* run_spec.c — `edgespec run --draft`: speculative decoding in one process. The drafter and the
 * verifier are the same objects the edge and the server use; here they simply live side by side. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/run_opts.h"
#include "cli/run_output.h"
#include "specdec/spec.h"

void es_run_opts_print_spec_help(void) {
    const es_drafter_params dp = es_drafter_default_params(); /* what `run` uses unless told otherwise */
    printf("Speculative decoding with `edgespec run -m TARGET.gguf --draft DRAFT.gguf`:\n\n"
           "  --draft FILE           draft model; must share the target's vocabulary (checked)\n"
           "  --spec chain|tree      draft a chain of tokens or a token tree (default chain)\n"
           "  --accept RULE          greedy (default at --temp 0): output identical to the target alone;\n"
           "                         match: sample-then-match (SpecEdge), one target sample per node;\n"
           "                         rejection (default when sampling): speculative sampling, min(1, p/q)\n"
           "                         with residual resampling; recursive over siblings for trees.\n"
           "                         All three keep the target's output distribution exactly.\n"
           "  --draft-max K          chain: most draft tokens per round (default 8)\n"
           "  --draft-min K          chain: fewest tokens when adapting (default 1)\n"
           "  --draft-p-min P        chain: stop drafting when the draft's top probability < P (default 0)\n"
           "  --no-adaptive          chain: always draft --draft-max tokens\n"
           "                         (adaptive chains also stop early where another draft step would\n"
           "                         cost more than it is expected to return: the draft's confidence\n"
           "                         in the chain against its cost, the ratio of the weights' bytes)\n"
           "  --tree-budget N        tree: most nodes (default %d)\n"
           "  --tree-depth N         tree: most levels (default %d)\n"
           "  --tree-width N         tree: most children per node (default %d)\n"
           "  --synthetic-accept A   BENCHMARKING ONLY: accept each draft token with probability A; the\n"
           "                         output is then NOT the target's (reported as synthetic)\n",
           dp.tree_budget, dp.tree_depth, dp.tree_width);
}

static void on_token(void *ud, int32_t t) { es_run_output_token(ud, t); }

static es_ctx *make_ctx(es_model *m, const es_run_opts *o, bool target) {
    es_ctx_params cp = es_ctx_default_params();
    cp.n_threads = o->n_threads;
    cp.n_ctx = o->n_ctx;
    cp.n_batch_max = ES_SPEC_MAX_NODES + 1;
    cp.kv_type = o->kv_type;
    if (target) es_run_device_params(o, &cp);
    es_ctx *c = NULL;
    es_err err = {{0}};
    if (es_ctx_init(m, &cp, &c, &err) != ES_OK) cli_error("run", "%s", err.msg);
    return c;
}

/* The drafter's parameters from the run options and the acceptance rule. An adaptive chain on the
 * CPU is told what a draft step costs against a target step (es_drafter_cost_ratio); not one whose
 * target runs on a device, whose step costs what its own memory does. */
static es_drafter_params drafter_params(const es_run_opts *o, int rule, const es_model *target, const es_model *draft) {
    es_drafter_params dp = es_drafter_default_params();
    dp.mode = strcmp(o->spec_mode, "tree") == 0 ? ES_DRAFT_TREE : ES_DRAFT_CHAIN;
    dp.k_max = o->draft_max;
    dp.k_min = o->draft_min > o->draft_max ? o->draft_max : o->draft_min;
    dp.p_min = (float)o->draft_p_min;
    dp.adaptive = o->adaptive;
    if (o->adaptive && o->backend == ES_BACKEND_CPU) dp.cost_ratio = es_drafter_cost_ratio(target, draft);
    dp.tree_budget = o->tree_budget;
    dp.tree_depth = o->tree_depth;
    dp.tree_width = o->tree_width;
    dp.sample = rule == ES_ACCEPT_REJECTION;
    dp.temperature = o->sp.temperature > 0 ? o->sp.temperature : 1.0f;
    dp.seed = o->sp.seed;
    return dp;
}

/* The `spec` object of run --json: the draft, the rule and what the rounds did. */
static cJSON *spec_json(const es_run_opts *o, int rule, const es_drafter_params *dp, const es_spec_stats *st) {
    const int rounds = st->rounds;
    const long drafted = st->drafted, accepted = st->accepted;
    const long *depth_hits = st->accepted_at_depth;
    const double t_draft = st->draft_seconds, t_verify = st->verify_seconds;
    cJSON *spec = cJSON_CreateObject();
    cJSON_AddStringToObject(spec, "draft", o->draft_path);
    cJSON_AddStringToObject(spec, "mode", o->spec_mode);
    cJSON_AddStringToObject(spec, "accept", es_accept_rule_name((es_accept_rule)rule));
    cJSON_AddBoolToObject(spec, "synthetic", rule == ES_ACCEPT_SYNTHETIC);
    if (rule == ES_ACCEPT_SYNTHETIC) cJSON_AddNumberToObject(spec, "synthetic_alpha", o->synthetic_alpha);
    cJSON_AddNumberToObject(spec, "rounds", rounds);
    cJSON_AddNumberToObject(spec, "drafted", (double)drafted);
    cJSON_AddNumberToObject(spec, "accepted", (double)accepted);
    cJSON_AddNumberToObject(spec, "acceptance_length", rounds ? 1.0 + (double)accepted / rounds : 0);
    cJSON_AddNumberToObject(spec, "acceptance_rate", drafted ? (double)accepted / (double)drafted : 0);
    int maxd = 0;
    for (int k = 1; k <= ES_SPEC_MAX_PATH; k++)
        if (depth_hits[k]) maxd = k;
    cJSON *dh = cJSON_CreateArray();
    for (int k = 1; k <= maxd; k++) cJSON_AddItemToArray(dh, cJSON_CreateNumber((double)depth_hits[k]));
    cJSON_AddItemToObject(spec, "accepted_at_depth", dh);
    cJSON_AddNumberToObject(spec, "draft_seconds", t_draft);
    cJSON_AddNumberToObject(spec, "verify_seconds", t_verify);
    if (dp->mode == ES_DRAFT_TREE) {
        cJSON_AddNumberToObject(spec, "tree_budget", dp->tree_budget);
        cJSON_AddNumberToObject(spec, "tree_depth", dp->tree_depth);
        cJSON_AddNumberToObject(spec, "tree_width", dp->tree_width);
    } else {
        cJSON_AddNumberToObject(spec, "draft_max", dp->k_max);
        cJSON_AddBoolToObject(spec, "adaptive", dp->adaptive);
        cJSON_AddNumberToObject(spec, "cost_ratio", dp->cost_ratio);
    }
    return spec;
}

int es_run_speculative(es_run_opts *o) {
    int rc = 1;
    es_err err = {{0}};
    es_model *target = NULL, *draft = NULL;
    es_ctx *tctx = NULL, *dctx = NULL;
    es_verifier *ver = NULL;
    es_drafter *dr = NULL;
    int32_t *gen = NULL;
    es_run_prompt pr = {0};
    if (!(target = es_run_load_model("run", o->model_path, o->backend)) ||
        !(draft = es_run_load_model("run", o->draft_path, ES_BACKEND_CPU))) goto done;
    const es_tokenizer *tok = es_model_tokenizer(target);
    if (es_spec_check_vocab(tok, es_model_tokenizer(draft), &err) != ES_OK) {
        cli_error("run", "draft %s cannot draft for %s: %s", o->draft_path, o->model_path, err.msg);
        goto done;
    }
    int rule = o->synthetic_alpha >= 0 ? ES_ACCEPT_SYNTHETIC : es_accept_rule_parse(o->accept);
    if (rule == ES_ACCEPT_GREEDY && o->sp.temperature > 0) {
        cli_error("run", "--accept greedy needs --temp 0; use match or rejection when sampling");
        goto done;
    }
    if (es_run_tokenize(tok, o, &pr) != 0) goto done;
    if (!(tctx = make_ctx(target, o, true)) || !(dctx = make_ctx(draft, o, false))) goto done;
    const int n_ctx_t = o->n_ctx > 0 ? o->n_ctx : es_model_n_ctx_train(target);
    const int n_ctx_d = o->n_ctx > 0 ? o->n_ctx : es_model_n_ctx_train(draft);
    const int n_ctx = n_ctx_t < n_ctx_d ? n_ctx_t : n_ctx_d;
    if (pr.n >= n_ctx) { cli_error("run", "the prompt has %d tokens but the context holds %d", pr.n, n_ctx); goto done; }

    int tseq, dseq;
    if (es_seq_open(tctx, &tseq, &err) != ES_OK || es_seq_open(dctx, &dseq, &err) != ES_OK) { cli_error("run", "%s", err.msg); goto done; }
    es_verifier_params vp = {.rule = (es_accept_rule)rule, .sampling = o->sp, .synthetic_alpha = o->synthetic_alpha};
    if (es_verifier_init(tctx, tseq, &vp, &ver, &err) != ES_OK) { cli_error("run", "%s", err.msg); goto done; }
    const es_drafter_params dp = drafter_params(o, rule, target, draft);
    if (es_drafter_init(dctx, dseq, &dp, &dr, &err) != ES_OK) { cli_error("run", "%s", err.msg); goto done; }

    es_run_output out;
    es_run_output_init(&out, o, tok, pr.ids, pr.n);
    gen = malloc(((size_t)o->n_predict + 1) * sizeof *gen);
    if (!gen) { cli_error("run", "out of memory"); goto done; }
    const int32_t stops[2] = {es_tokenizer_bos(tok), es_tokenizer_eos(tok)};
    es_spec_stats st;
    double t0 = cli_now();
    if (es_spec_generate(dr, ver, pr.ids, pr.n, o->n_predict, n_ctx, stops, 2, gen, &st, on_token, &out, &err) != ES_OK) {
        cli_error("run", "%s", err.msg);
        es_run_output_free(&out);
        goto done;
    }
    /* prefill happens inside the first rounds (lazily on the draft side), so it is counted as decode */
    out.decode_s = cli_now() - t0;
    cJSON *spec = spec_json(o, rule, &dp, &st);
    if (rule == ES_ACCEPT_SYNTHETIC) fprintf(stderr, "edgespec run: SYNTHETIC acceptance (alpha %.2f): output is not the target's\n", o->synthetic_alpha);
    es_run_output_finish(&out, gen, st.n_generated, st.stop, target, spec);
    es_run_output_free(&out);
    rc = 0;
done:
    free(gen);
    free(pr.ids);
    es_drafter_free(dr);
    es_verifier_free(ver);
    es_ctx_free(dctx);
    es_ctx_free(tctx);
    es_model_free(draft);
    es_model_free(target);
    es_run_opts_free(o);
    return rc;
}
