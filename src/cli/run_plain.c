/* run_plain.c — autoregressive generation for `edgespec run` without a draft model. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/run_opts.h"
#include "cli/run_output.h"

int es_run_plain(es_run_opts *o) {
    int rc = 1;
    es_err err = {{0}};
    es_ctx *ctx = NULL;
    es_sampler *smp = NULL;
    int32_t *prompt_ids = NULL, *pos = NULL, *seqv = NULL, *gen = NULL;
    es_model *model = es_run_load_model("run", o->model_path, o->backend);
    if (!model) goto done;
    const es_tokenizer *tok = es_model_tokenizer(model);

    es_run_prompt pr;
    if (es_run_tokenize(tok, o, &pr) != 0) goto done;
    prompt_ids = pr.ids;
    const int n_prompt = pr.n;

    es_ctx_params cp = es_ctx_default_params();
    cp.n_threads = o->n_threads;
    cp.n_ctx = o->n_ctx;
    cp.n_batch_max = o->n_batch;
    cp.kv_type = o->kv_type;
    cp.n_logits_max = 1;
    es_run_device_params(o, &cp);
    if (es_ctx_init(model, &cp, &ctx, &err) != ES_OK) { cli_error("run", "%s", err.msg); goto done; }
    const int n_ctx = o->n_ctx > 0 ? o->n_ctx : es_model_n_ctx_train(model);
    if (n_prompt >= n_ctx) {
        cli_error("run", "the prompt has %d tokens but the context holds %d", n_prompt, n_ctx);
        goto done;
    }
    if (es_sampler_init(&o->sp, es_model_n_vocab(model), &smp, &err) != ES_OK) { cli_error("run", "%s", err.msg); goto done; }
    for (int i = 0; i < n_prompt; i++) es_sampler_accept(smp, prompt_ids[i]);

    int seq;
    if (es_seq_open(ctx, &seq, &err) != ES_OK) { cli_error("run", "%s", err.msg); goto done; }
    pos = malloc((size_t)o->n_batch * sizeof *pos);
    seqv = malloc((size_t)o->n_batch * sizeof *seqv);
    gen = malloc(((size_t)o->n_predict + 1) * sizeof *gen);
    if (!pos || !seqv || !gen) { cli_error("run", "out of memory"); goto done; }
    for (int i = 0; i < o->n_batch; i++) seqv[i] = seq;

    es_run_output out;
    es_run_output_init(&out, o, tok, prompt_ids, n_prompt);

    /* Prefill in chunks; logits of the last prompt token only. */
    double t0 = cli_now();
    const float *logits = NULL;
    for (int at = 0; at < n_prompt; at += o->n_batch) {
        int n = n_prompt - at < o->n_batch ? n_prompt - at : o->n_batch;
        for (int i = 0; i < n; i++) pos[i] = at + i;
        es_batch b = {n, prompt_ids + at, pos, seqv, NULL, NULL, NULL};
        if (es_decode(ctx, &b, &err) != ES_OK) { cli_error("run", "prefill: %s", err.msg); goto done; }
        logits = es_ctx_logits(ctx, n - 1);
    }
    double t1 = cli_now();
    out.prefill_s = t1 - t0;

    int n_gen = 0;
    const char *stop = "length";
    const int32_t bos = es_tokenizer_bos(tok), eos = es_tokenizer_eos(tok);
    while (n_gen < o->n_predict) {
        if (n_prompt + n_gen >= n_ctx) { stop = "context"; break; }
        int32_t t = es_sampler_sample(smp, logits);
        es_sampler_accept(smp, t);
        if (t == eos || t == bos) { stop = "eos"; gen[n_gen++] = t; break; }
        gen[n_gen++] = t;
        es_run_output_token(&out, t);
        if (n_gen >= o->n_predict || n_prompt + n_gen >= n_ctx) break;
        int32_t p = n_prompt + n_gen - 1;
        es_batch b = {1, &t, &p, &seq, NULL, NULL, NULL};
        if (es_decode(ctx, &b, &err) != ES_OK) { cli_error("run", "decode: %s", err.msg); goto done; }
        logits = es_ctx_logits(ctx, 0);
    }
    if (n_gen >= o->n_predict && strcmp(stop, "eos") != 0) stop = "length";
    out.decode_s = cli_now() - t1;
    es_run_output_finish(&out, gen, n_gen, stop, model, NULL);
    es_run_output_free(&out);
    rc = 0;
done:
    free(pos);
    free(seqv);
    free(gen);
    free(prompt_ids);
    es_sampler_free(smp);
    es_ctx_free(ctx);
    es_model_free(model);
    es_run_opts_free(o);
    return rc;
}
