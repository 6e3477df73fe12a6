/* verify.c — the verify side: one target forward pass over root + draft tree, the acceptance walk,
 * and compaction of the target's KV to root + accepted path. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spec/spec.h"
#include "util/err.h"
#include "util/rng.h"

struct es_verifier {
    es_ctx *ctx;
    int seq;
    int n_vocab;
    es_verifier_params p;
    es_sampler *smp;
    es_rng rng;             /* synthetic acceptance coin flips */
    float *probs;           /* (n_vocab) target distribution at the current node */
    int32_t batch_tok[ES_SPEC_MAX_NODES + 1], batch_pos[ES_SPEC_MAX_NODES + 1], batch_seq[ES_SPEC_MAX_NODES + 1];
    int32_t batch_par[ES_SPEC_MAX_NODES + 1];
    int8_t batch_logits[ES_SPEC_MAX_NODES + 1];
    int32_t children[ES_SPEC_MAX_NODES];
};

static double sampler_uniform(void *ud) { return es_sampler_uniform(ud); }

es_status es_verifier_init(es_ctx *ctx, int seq, const es_verifier_params *p, es_verifier **out, es_err *err) {
    *out = NULL;
    if (p->rule < ES_ACCEPT_GREEDY || p->rule > ES_ACCEPT_SYNTHETIC) return es_fail(err, ES_ERR_INVALID_ARG, "unknown acceptance rule");
    if (p->rule == ES_ACCEPT_GREEDY && p->sampling.temperature != 0)
        return es_fail(err, ES_ERR_INVALID_ARG, "the greedy rule needs temperature 0 (use match or rejection to sample)");
    if (p->sampling.repeat_penalty != 1.0f && p->sampling.repeat_penalty != 0.0f)
        return es_fail(err, ES_ERR_UNSUPPORTED, "repetition penalty is not supported with speculative decoding");
    es_verifier *v = calloc(1, sizeof *v);
    if (!v) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    v->ctx = ctx;
    v->seq = seq;
    v->p = *p;
    v->n_vocab = es_model_n_vocab(es_ctx_model(ctx));
    es_status st = es_sampler_init(&p->sampling, v->n_vocab, &v->smp, err);
    if (st != ES_OK) { free(v); return st; }
    es_rng_seed(&v->rng, p->sampling.seed ^ 0x5eedf00dull);
    v->probs = malloc((size_t)v->n_vocab * sizeof(float));
    if (!v->probs) { es_verifier_free(v); return es_fail(err, ES_ERR_NOMEM, "out of memory"); }
    *out = v;
    return ES_OK;
}

void es_verifier_free(es_verifier *v) {
    if (!v) return;
    es_sampler_free(v->smp);
    free(v->probs);
    free(v);
}

es_status es_verifier_prefill(es_verifier *v, const int32_t *tokens, int n, es_err *err) {
    const int chunk = ES_SPEC_MAX_NODES + 1;
    for (int at = 0; at < n; at += chunk) {
        const int m = n - at < chunk ? n - at : chunk;
        const int base = es_seq_len(v->ctx, v->seq);
        for (int i = 0; i < m; i++) { v->batch_pos[i] = base + i; v->batch_seq[i] = v->seq; v->batch_logits[i] = 0; }
        es_batch b = {m, tokens + at, v->batch_pos, v->batch_seq, NULL, v->batch_logits, NULL};
        es_status st = es_decode(v->ctx, &b, err);
        if (st != ES_OK) return st;
    }
    return ES_OK;
}

/* The target's token at a node under greedy / match: argmax or one sample of its distribution. */
static int32_t target_token(es_verifier *v, const float *logits) {
    return es_sampler_sample(v->smp, logits);
}

es_status es_verifier_verify(es_verifier *v, int32_t root, const es_spec_tree *t, es_spec_verdict *out, es_err *err) {
    es_status st = es_spec_tree_validate(t, v->n_vocab, err);
    if (st != ES_OK) return st;
    if (v->p.rule == ES_ACCEPT_REJECTION && t->n > 0 && !t->has_q)
        return es_fail(err, ES_ERR_INVALID_ARG, "the rejection rule needs the draft's proposal distributions");
    if (root < 0 || root >= v->n_vocab) return es_fail(err, ES_ERR_RANGE, "root token %d outside the vocabulary", root);
    const int L = es_seq_len(v->ctx, v->seq), n = t->n + 1;
    v->batch_tok[0] = root;
    v->batch_pos[0] = L;
    v->batch_par[0] = -1;
    for (int i = 0; i < t->n; i++) {
        v->batch_tok[i + 1] = t->token[i];
        v->batch_pos[i + 1] = L + t->depth[i];
        v->batch_par[i + 1] = t->parent[i] + 1;
    }
    for (int i = 0; i < n; i++) { v->batch_seq[i] = v->seq; v->batch_logits[i] = 1; }
    es_batch b = {n, v->batch_tok, v->batch_pos, v->batch_seq, v->batch_par, v->batch_logits, NULL};
    if ((st = es_decode(v->ctx, &b, err)) != ES_OK) return st;

    /* Walk from the root. Node u is batch row u+1 (root = row 0 = node -1). */
    int u = -1;
    out->n_accepted = 0;
    for (;;) {
        int m = 0;
        for (int i = (u < 0 ? 0 : u + 1); i < t->n; i++)
            if (t->parent[i] == u) v->children[m++] = i;
        const float *logits = es_ctx_logits(v->ctx, u + 1);
        int next = -1;
        int32_t bonus = -1;
        if (v->p.rule == ES_ACCEPT_REJECTION) {
            es_sampler_probs(v->smp, logits, v->probs);
            int32_t ctok[ES_SPEC_MAX_NODES];
            for (int j = 0; j < m; j++) ctok[j] = t->token[v->children[j]];
            const int o = u + 1;
            const int nq = m > 0 ? t->q_n[o] : 0;
            const int j = es_spec_rrs(v->probs, v->n_vocab, ctok, m, nq ? t->q_tok + t->q_off[o] : NULL,
                                      nq ? t->q_p + t->q_off[o] : NULL, nq, sampler_uniform, v->smp, &bonus);
            if (j >= 0) next = v->children[j];
        } else if (v->p.rule == ES_ACCEPT_SYNTHETIC) {
            if (m > 0 && es_rng_uniform(&v->rng) < v->p.synthetic_alpha) next = v->children[0];
            else bonus = target_token(v, logits);
        } else { /* greedy and match: one target token per node, follow the child that matches */
            const int32_t tt = target_token(v, logits);
            for (int j = 0; j < m; j++)
                if (t->token[v->children[j]] == tt) { next = v->children[j]; break; }
            if (next < 0) bonus = tt;
        }
        if (next < 0) {
            out->bonus = bonus;
            break;
        }
        out->path[out->n_accepted++] = next;
        u = next;
    }
    out->n_tokens = 0;
    for (int k = 0; k < out->n_accepted; k++) out->tokens[out->n_tokens++] = t->token[out->path[k]];
    out->tokens[out->n_tokens++] = out->bonus;

    /* Keep root + path: the root sits at slot L, node k at slot L + 1 + k. */
    int32_t slots[ES_SPEC_MAX_PATH + 1];
    slots[0] = L;
    for (int k = 0; k < out->n_accepted; k++) slots[k + 1] = L + 1 + out->path[k];
    return es_seq_keep(v->ctx, v->seq, L, slots, out->n_accepted + 1, err);
}
