/* verify.c — the verify side: one target forward pass over root + draft tree, the acceptance walk,
 * and compaction of the target's KV to root + accepted path. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "sample/sampler.h"
#include "specdec/spec.h"
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
    int32_t children[ES_SPEC_MAX_NODES];
    es_batch_builder own;   /* es_verifier_verify / es_verifier_prefill: one round or chunk at a time */
    /* what is staged in a builder (valid while st_bb->gen == st_gen) */
    const es_batch_builder *st_bb;
    uint64_t st_gen;
    int st_rows;            /* rows of this sequence staged */
    int st_last;            /* batch row of the last of them (-1: none) */
    int st_root;            /* batch row of the staged root (-1: no round staged) */
    int st_root_r0;         /* es_verifier_finish: the root's row during its walk */
    int st_L;               /* the root's KV slot */
    int32_t st_root_tok;    /* the staged root token */
    const es_spec_tree *st_tree;
    es_token_logprob *lp;   /* [ES_SPEC_MAX_PATH + 1] es_verifier_set_logprobs (NULL: off) */
    int lp_top;
    es_sampler *psmp;       /* es_verifier_provisional: a copy of smp's state per walk (NULL: off) */
    es_gmatcher *gm;        /* es_verifier_set_grammar (borrowed), or NULL */
};

void es_verifier_set_grammar(es_verifier *v, es_gmatcher *m) { v->gm = m; }

static double sampler_uniform(void *ud) { return es_sampler_uniform(ud); }

/* ---- the batch builder ------------------------------------------------------------------------ */

es_status es_batch_builder_init(es_batch_builder *bb, int cap, es_err *err) {
    memset(bb, 0, sizeof *bb);
    if (cap < 1 || cap > (1 << 20)) return es_fail(err, ES_ERR_INVALID_ARG, "batch builder capacity %d out of range", cap);
    bb->cap = cap;
    bb->token = malloc((size_t)cap * sizeof(int32_t));
    bb->pos = malloc((size_t)cap * sizeof(int32_t));
    bb->seq = malloc((size_t)cap * sizeof(int32_t));
    bb->parent = malloc((size_t)cap * sizeof(int32_t));
    bb->cache_parent = malloc((size_t)cap * sizeof(int32_t));
    bb->logits = malloc((size_t)cap);
    if (!bb->token || !bb->pos || !bb->seq || !bb->parent || !bb->cache_parent || !bb->logits) {
        es_batch_builder_free(bb);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    return ES_OK;
}

void es_batch_builder_free(es_batch_builder *bb) {
    if (!bb) return;
    free(bb->token);
    free(bb->pos);
    free(bb->seq);
    free(bb->parent);
    free(bb->cache_parent);
    free(bb->logits);
    memset(bb, 0, sizeof *bb);
}

void es_batch_builder_clear(es_batch_builder *bb) {
    bb->n = 0;
    bb->n_logits = 0;
    bb->gen++;
}

es_batch es_batch_builder_batch(const es_batch_builder *bb) {
    es_batch b = {bb->n, bb->token, bb->pos, bb->seq, bb->parent, bb->logits, bb->cache_parent};
    return b;
}

/* Forgets staging done in another builder or before the last clear of this one. */
static void staging_sync(es_verifier *v, const es_batch_builder *bb) {
    if (v->st_bb == bb && v->st_gen == bb->gen) return;
    v->st_bb = bb;
    v->st_gen = bb->gen;
    v->st_rows = 0;
    v->st_last = -1;
    v->st_root = -1;
    v->st_tree = NULL;
}

/* ---- the verifier ----------------------------------------------------------------------------- */

es_status es_verifier_init(es_ctx *ctx, int seq, const es_verifier_params *p, es_verifier **out, es_err *err) {
    *out = NULL;
    if (p->rule < ES_ACCEPT_GREEDY || p->rule > ES_ACCEPT_SYNTHETIC) return es_fail(err, ES_ERR_INVALID_ARG, "unknown acceptance rule");
    if (p->rule == ES_ACCEPT_GREEDY && p->sampling.temperature != 0)
        return es_fail(err, ES_ERR_INVALID_ARG, "the greedy rule needs temperature 0 (use match or rejection to sample)");
    es_verifier *v = calloc(1, sizeof *v);
    if (!v) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    v->ctx = ctx;
    v->seq = seq;
    v->p = *p;
    v->n_vocab = es_model_n_vocab(es_ctx_model(ctx));
    v->st_last = v->st_root = -1;
    es_status st = es_sampler_init(&p->sampling, v->n_vocab, &v->smp, err);
    if (st != ES_OK) { free(v); return st; }
    es_rng_seed(&v->rng, p->sampling.seed ^ 0x5eedf00dull);
    v->probs = malloc((size_t)v->n_vocab * sizeof(float));
    if (!v->probs) { es_verifier_free(v); return es_fail(err, ES_ERR_NOMEM, "out of memory"); }
    if ((st = es_batch_builder_init(&v->own, ES_SPEC_MAX_NODES + 1, err)) != ES_OK) { es_verifier_free(v); return st; }
    *out = v;
    return ES_OK;
}

void es_verifier_free(es_verifier *v) {
    if (!v) return;
    es_sampler_free(v->smp);
    es_sampler_free(v->psmp);
    free(v->probs);
    free(v->lp);
    es_batch_builder_free(&v->own);
    free(v);
}

es_status es_verifier_stage_prefill(es_verifier *v, const int32_t *tokens, int n, es_batch_builder *bb, es_err *err) {
    staging_sync(v, bb);
    if (n < 0) return es_fail(err, ES_ERR_INVALID_ARG, "prefill of %d tokens", n);
    if (v->st_root >= 0) return es_fail(err, ES_ERR_INVALID_ARG, "prompt rows staged after this builder's round");
    if (n > bb->cap - bb->n) return es_fail(err, ES_ERR_FULL, "batch has room for %d rows, not %d", bb->cap - bb->n, n);
    const int base = es_seq_len(v->ctx, v->seq) + v->st_rows;
    for (int i = 0; i < n; i++) {
        const int r = bb->n + i;
        bb->token[r] = tokens[i];
        bb->pos[r] = base + i;
        bb->seq[r] = v->seq;
        bb->parent[r] = i == 0 ? v->st_last : r - 1;
        bb->cache_parent[r] = -1;
        bb->logits[r] = 0;
    }
    if (n > 0) v->st_last = bb->n + n - 1;
    bb->n += n;
    v->st_rows += n;
    return ES_OK;
}

es_status es_verifier_prefill(es_verifier *v, const int32_t *tokens, int n, es_err *err) {
    const int chunk = v->own.cap;
    for (int at = 0; at < n; at += chunk) {
        const int m = n - at < chunk ? n - at : chunk;
        es_batch_builder_clear(&v->own);
        es_status st = es_verifier_stage_prefill(v, tokens + at, m, &v->own, err);
        if (st != ES_OK) return st;
        es_batch b = es_batch_builder_batch(&v->own);
        if ((st = es_decode(v->ctx, &b, err)) != ES_OK) return st;
    }
    return ES_OK;
}

void es_verifier_add_history(es_verifier *v, const int32_t *tokens, int n) {
    if (!es_sampler_penalized(&v->p.sampling)) return;
    const int keep = v->p.sampling.repeat_last_n; /* only the last ones can matter */
    for (int i = n > keep ? n - keep : 0; i < n; i++) es_sampler_accept(v->smp, tokens[i]);
}

es_status es_verifier_stage(es_verifier *v, int32_t root, const es_spec_tree *t, es_batch_builder *bb, es_err *err) {
    staging_sync(v, bb);
    es_status st = es_spec_tree_validate(t, v->n_vocab, err);
    if (st != ES_OK) return st;
    if (v->p.rule == ES_ACCEPT_REJECTION && t->n > 0 && !t->has_q)
        return es_fail(err, ES_ERR_INVALID_ARG, "the rejection rule needs the draft's proposal distributions");
    if (root < 0 || root >= v->n_vocab) return es_fail(err, ES_ERR_RANGE, "root token %d outside the vocabulary", root);
    if (v->st_root >= 0) return es_fail(err, ES_ERR_INVALID_ARG, "a round is already staged in this builder");
    const int n = t->n + 1;
    if (n > bb->cap - bb->n) return es_fail(err, ES_ERR_FULL, "batch has room for %d rows, not %d", bb->cap - bb->n, n);
    const int L = es_seq_len(v->ctx, v->seq) + v->st_rows, r0 = bb->n;
    /* Node u is batch row r0 + u + 1; the root (row r0) hangs off this verifier's last staged
     * prompt row, or its last cached slot. */
    bb->token[r0] = root;
    bb->pos[r0] = L;
    bb->parent[r0] = v->st_last;
    for (int i = 0; i < t->n; i++) {
        bb->token[r0 + i + 1] = t->token[i];
        bb->pos[r0 + i + 1] = L + t->depth[i];
        bb->parent[r0 + i + 1] = r0 + t->parent[i] + 1;
    }
    for (int i = r0; i < r0 + n; i++) { bb->seq[i] = v->seq; bb->logits[i] = 1; bb->cache_parent[i] = -1; }
    bb->n += n;
    bb->n_logits += n;
    v->st_rows += n;
    v->st_last = r0 + n - 1;
    v->st_root = r0;
    v->st_L = L;
    v->st_root_tok = root;
    v->st_tree = t;
    return ES_OK;
}

es_status es_verifier_set_logprobs(es_verifier *v, int top_n, es_err *err) {
    if (top_n > ES_SPEC_MAX_TOP_LOGPROBS)
        return es_fail(err, ES_ERR_INVALID_ARG, "top logprobs %d above the maximum %d", top_n, ES_SPEC_MAX_TOP_LOGPROBS);
    if (top_n < 0) {
        free(v->lp);
        v->lp = NULL;
        return ES_OK;
    }
    if (!v->lp && !(v->lp = calloc(ES_SPEC_MAX_PATH + 1, sizeof *v->lp))) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    v->lp_top = top_n;
    return ES_OK;
}

const es_token_logprob *es_verifier_logprobs(const es_verifier *v) { return v->lp; }

/* Insertion into a short sorted list: strict comparison keeps the lower id first on ties, as the
 * greedy argmax does. */
void es_token_logprob_compute(const float *logits, int n_vocab, int32_t tok, int top_n, es_token_logprob *out) {
    float mx = logits[0];
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - mx);
    const double lse = mx + log(sum);
    out->logprob = (float)(logits[tok] - lse);
    int n = 0;
    for (int i = 0; i < n_vocab && top_n > 0; i++) {
        const float l = logits[i];
        if (n == top_n && !(l > out->top_logprob[n - 1])) continue;
        int k = n < top_n ? n++ : n - 1;
        while (k > 0 && l > out->top_logprob[k - 1]) {
            out->top_logprob[k] = out->top_logprob[k - 1];
            out->top_id[k] = out->top_id[k - 1];
            k--;
        }
        out->top_logprob[k] = l;
        out->top_id[k] = i;
    }
    for (int k = 0; k < n; k++) out->top_logprob[k] = (float)(out->top_logprob[k] - lse);
    out->n_top = n;
}

/* Logits of row `row` of the staged round (0: the root, u + 1: node u). */
typedef const float *(*row_logits_fn)(void *ud, int row);

static const float *ctx_row_logits(void *ud, int row) {
    es_verifier *v = ud;
    return es_ctx_logits(v->ctx, v->st_root_r0 + row);
}

/* The acceptance walk of tree t over the rows' logits with sampler smp and coin rng: fills
 * out->path, n_accepted and bonus (not the tokens). */
static void walk(es_verifier *v, const es_spec_tree *t, es_sampler *smp, es_rng *rng, es_gmatcher *gm, row_logits_fn row_logits, void *ud,
                 es_spec_verdict *out) {
    /* Walk from the root. Node u is batch row r0 + u + 1 (root = row r0 = node -1). The penalty
     * history follows the walk: the node's distribution sees the root and the path up to it. Only
     * the accepted path is walked, so the history never needs undoing. */
    const bool hist = es_sampler_penalized(&v->p.sampling);
    if (hist) es_sampler_accept(smp, v->st_root_tok);
    int u = -1;
    out->n_accepted = 0;
    for (;;) {
        int m = 0;
        for (int i = (u < 0 ? 0 : u + 1); i < t->n; i++)
            if (t->parent[i] == u) v->children[m++] = i;
        const float *logits = row_logits(ud, u + 1);
        /* the grammar's mask at this node: every rule below then draws from the masked target */
        const uint64_t *mask = gm ? es_gmatcher_mask(gm) : NULL;
        es_sampler_set_mask(smp, mask);
        int next = -1;
        int32_t bonus = -1;
        if (v->p.rule == ES_ACCEPT_REJECTION) {
            es_sampler_probs(smp, logits, v->probs);
            int32_t ctok[ES_SPEC_MAX_NODES];
            for (int j = 0; j < m; j++) ctok[j] = t->token[v->children[j]];
            const int o = u + 1;
            const int nq = m > 0 ? t->q_n[o] : 0;
            const int j = es_spec_rrs(v->probs, v->n_vocab, ctok, m, nq ? t->q_tok + t->q_off[o] : NULL,
                                      nq ? t->q_p + t->q_off[o] : NULL, nq, sampler_uniform, smp, &bonus);
            if (j >= 0) next = v->children[j];
        } else if (v->p.rule == ES_ACCEPT_SYNTHETIC) {
            if (m > 0 && es_rng_uniform(rng) < v->p.synthetic_alpha && (!mask || es_mask_test(mask, t->token[v->children[0]])))
                next = v->children[0];
            else bonus = es_sampler_sample(smp, logits);
        } else { /* greedy and match: one target token per node, follow the child that matches */
            const int32_t tt = es_sampler_sample(smp, logits);
            for (int j = 0; j < m; j++)
                if (t->token[v->children[j]] == tt) { next = v->children[j]; break; }
            if (next < 0) bonus = tt;
        }
        if (next < 0) {
            out->bonus = bonus;
            if (gm) es_gmatcher_accept(gm, bonus); /* allowed: drawn under the mask */
            break;
        }
        if (gm) es_gmatcher_accept(gm, t->token[next]);
        out->path[out->n_accepted++] = next;
        if (hist) es_sampler_accept(smp, t->token[next]);
        u = next;
    }
    es_sampler_set_mask(smp, NULL);
}

es_status es_verifier_finish(es_verifier *v, es_spec_verdict *out, es_err *err) {
    const es_spec_tree *t = v->st_tree;
    const int r0 = v->st_root, L = v->st_L;
    if (!v->st_bb || v->st_gen != v->st_bb->gen || r0 < 0 || !t)
        return es_fail(err, ES_ERR_INVALID_ARG, "no round staged for this verifier");
    v->st_root = -1; /* one finish per staged round, whatever happens below */
    v->st_root_r0 = r0;
    v->st_tree = NULL;
    if (es_seq_len(v->ctx, v->seq) != L + t->n + 1 || !es_ctx_logits(v->ctx, r0))
        return es_fail(err, ES_ERR_INVALID_ARG, "the staged round was not decoded");

    walk(v, t, v->smp, &v->rng, v->gm, ctx_row_logits, v, out);
    out->n_tokens = 0;
    for (int k = 0; k < out->n_accepted; k++) out->tokens[out->n_tokens++] = t->token[out->path[k]];
    out->tokens[out->n_tokens++] = out->bonus;
    /* token k was drawn at the root (k = 0) or at path node k - 1 */
    for (int k = 0; v->lp && k < out->n_tokens; k++)
        es_token_logprob_compute(es_ctx_logits(v->ctx, k == 0 ? r0 : r0 + out->path[k - 1] + 1), v->n_vocab, out->tokens[k], v->lp_top,
                      &v->lp[k]);

    /* Keep root + path: the root sits at slot L, node k at slot L + 1 + k. */
    int32_t slots[ES_SPEC_MAX_PATH + 1];
    slots[0] = L;
    for (int k = 0; k < out->n_accepted; k++) slots[k + 1] = L + 1 + out->path[k];
    return es_seq_keep(v->ctx, v->seq, L, slots, out->n_accepted + 1, err);
}

es_status es_verifier_enable_provisional(es_verifier *v, es_err *err) {
    if (v->psmp) return ES_OK;
    return es_sampler_init(&v->p.sampling, v->n_vocab, &v->psmp, err);
}

int es_verifier_staged_root(const es_verifier *v, const es_batch_builder *bb) {
    if (v->st_bb != bb || v->st_gen != bb->gen || !v->st_tree) return -1;
    return v->st_root;
}

int es_verifier_staged_nodes(const es_verifier *v, const es_batch_builder *bb) {
    return es_verifier_staged_root(v, bb) < 0 ? -1 : v->st_tree->n;
}

typedef struct {
    const float *logits;
    int n_vocab;
} buf_rows;

static const float *buf_row_logits(void *ud, int row) {
    const buf_rows *b = ud;
    return b->logits + (size_t)row * b->n_vocab;
}

es_status es_verifier_provisional(es_verifier *v, const es_batch_builder *bb, const float *logits, es_spec_verdict *out,
                                  es_err *err) {
    if (!v->psmp) return es_fail(err, ES_ERR_INVALID_ARG, "provisional verdicts are not enabled on this verifier");
    if (es_verifier_staged_root(v, bb) < 0) return es_fail(err, ES_ERR_INVALID_ARG, "no round staged in this builder");
    /* a copy of the sampler's state and of the coin: the same draws the final walk will make, while
     * the real ones stay untouched (the provisional verdict never changes what is emitted) */
    es_sampler_copy_state(v->psmp, v->smp);
    es_rng rng = v->rng;
    buf_rows b = {logits, v->n_vocab};
    /* without the grammar: the matcher must not advance for a hint, and a provisional path outside
       the grammar only costs a dropped pre-draft */
    walk(v, v->st_tree, v->psmp, &rng, NULL, buf_row_logits, &b, out);
    const es_spec_tree *t = v->st_tree;
    out->n_tokens = 0;
    for (int k = 0; k < out->n_accepted; k++) out->tokens[out->n_tokens++] = t->token[out->path[k]];
    out->tokens[out->n_tokens++] = out->bonus;
    return ES_OK;
}

es_status es_verifier_verify(es_verifier *v, int32_t root, const es_spec_tree *t, es_spec_verdict *out, es_err *err) {
    es_batch_builder_clear(&v->own);
    es_status st = es_verifier_stage(v, root, t, &v->own, err);
    if (st != ES_OK) return st;
    es_batch b = es_batch_builder_batch(&v->own);
    if ((st = es_decode(v->ctx, &b, err)) != ES_OK) return st;
    return es_verifier_finish(v, out, err);
}
