/* draft.c — the draft side: grows a chain or a token tree under the root with a small model.
 *
 * Tree drafting (SpecExec / SpecEdge style): every node has a score, the sum of the draft's
 * log-probabilities along its path. Level by level, the frontier (nodes added at the previous level)
 * is evaluated in ONE batched draft forward; each frontier node proposes its `width` best children
 * (or `width` children sampled without replacement, for the rejection rule); then only the `budget`
 * best-scored nodes of the whole tree are kept. A child never scores above its parent (log q <= 0)
 * and ties keep the shallower node, so the kept set is closed under ancestors.
 *
 * The draft's KV cache follows the tree: an evaluated node occupies a slot whose parent is its
 * parent's slot (es_batch.cache_parent), so branches never see each other; after the verdict the
 * accepted path is compacted with es_seq_keep and everything else dropped. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "specdec/spec.h"
#include "util/err.h"
#include "util/rng.h"

typedef struct dnode {
    int32_t token, parent, depth; /* parent: index into nodes, -1 root */
    float score;                  /* cumulative draft log-probability */
    int32_t slot;                 /* draft KV slot once evaluated, else -1 */
    int32_t order;                /* creation order (tie-break) */
    bool keep;
} dnode;

struct es_drafter {
    es_ctx *ctx;
    int seq;
    int n_vocab, n_ctx;
    es_drafter_params p;
    es_sampler *prop;        /* proposal distribution (temperature, top-k) when sampling */
    es_rng rng;
    int k_cur;
    int kv_confirmed;        /* confirmed tokens in the draft KV (a chain) */
    int32_t *pending;        /* confirmed tokens not yet in the KV (root excluded) */
    int n_pending;
    int32_t *kv_tok;         /* (n_ctx + 8) token held by each chain slot [0, kv_confirmed], root included */
    float *probs;            /* (n_vocab) */
    int32_t *topi;           /* (width) scratch */
    /* this round */
    dnode nodes[ES_SPEC_MAX_NODES * 2 + 64];
    int n_nodes;
    int32_t root_slot;
    int32_t out_index[ES_SPEC_MAX_NODES * 2 + 64]; /* node -> index in the emitted tree */
    int32_t tree_node[ES_SPEC_MAX_NODES];           /* emitted index -> node */
    int n_emitted;                                  /* nodes in the tree the last draft returned */
    int32_t q_off_node[ES_SPEC_MAX_NODES * 2 + 65];  /* proposal of owner o (0 root, i+1 node i) */
    int32_t q_n_node[ES_SPEC_MAX_NODES * 2 + 65];
    /* batch scratch */
    int32_t b_tok[ES_SPEC_MAX_NODES + 1], b_pos[ES_SPEC_MAX_NODES + 1], b_seq[ES_SPEC_MAX_NODES + 1];
    int32_t b_cpar[ES_SPEC_MAX_NODES + 1], b_par[ES_SPEC_MAX_NODES + 1], b_node[ES_SPEC_MAX_NODES + 1];
    int8_t b_logits[ES_SPEC_MAX_NODES + 1];
    double c_pi, c_e, c_sum; /* the chain so far (chain_worth): the draft's chance that all of it is
                                accepted, the tokens the round is expected to give, and the sum of the
                                uncalibrated chances */
    double c_obs, c_exp;     /* tokens accepted, and expected by the draft's own chances, over recent
                                rounds (decayed): the calibration of chain_worth */
    /* es_drafter_set_abort */
    bool (*abort_fn)(void *ud);
    void *abort_ud;
    bool aborted;            /* the last es_drafter_draft stopped early at abort_fn's request */
    /* where an aborted draft stood, for es_drafter_resume: the next level's frontier (tree) or the
       token whose forward pass was next (chain), and the loop's counters */
    bool resumable;
    int r_budget, r_level, r_n_front, r_kept_before, r_order, r_k, r_k_lim;
    int32_t r_parent_slot;
    int r_frontier[ES_SPEC_MAX_NODES + 1];
    es_gstate r_gs;
    /* es_drafter_set_grammar */
    es_gmatcher *gm;         /* borrowed; used as scratch: its state is set to the node's at each use */
    es_gstate g_conf;        /* the automaton after every confirmed token (the root included) */
    es_gstate *g_node;       /* [nodes] the automaton after each draft node's token */
    float *mlogits;          /* (n_vocab) a logits row with the disallowed tokens at -inf (and the bias added) */
    /* es_drafter_set_bias */
    es_logit_bias bias[ES_SAMPLER_MAX_BIAS];
    int n_bias;
};

es_status es_drafter_set_bias(es_drafter *d, const es_logit_bias *bias, int n, es_err *err) {
    if (n < 0 || n > ES_SAMPLER_MAX_BIAS || (n > 0 && !bias)) return es_fail(err, ES_ERR_INVALID_ARG, "at most %d logit-bias entries", ES_SAMPLER_MAX_BIAS);
    d->n_bias = 0;
    for (int k = 0; k < n; k++)
        if (bias[k].id >= 0 && bias[k].id < d->n_vocab && isfinite(bias[k].bias)) d->bias[d->n_bias++] = bias[k];
    if (d->n_bias && !d->mlogits && !(d->mlogits = malloc((size_t)d->n_vocab * sizeof *d->mlogits))) {
        d->n_bias = 0;
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    return ES_OK;
}

/* logits with the request's logit bias added (into mlogits; logits may already be mlogits), as the
 * target's sampler adds it: the draft then proposes what the biased target will pick. */
static const float *biased(es_drafter *d, const float *logits) {
    if (!d->n_bias) return logits;
    if (logits != d->mlogits) memcpy(d->mlogits, logits, (size_t)d->n_vocab * sizeof *d->mlogits);
    for (int k = 0; k < d->n_bias; k++)
        if (d->mlogits[d->bias[k].id] > -INFINITY) d->mlogits[d->bias[k].id] += d->bias[k].bias;
    return d->mlogits;
}

es_status es_drafter_set_grammar(es_drafter *d, es_gmatcher *m, es_err *err) {
    d->gm = m;
    if (!m) return ES_OK;
    if (!d->g_node) d->g_node = malloc(sizeof d->nodes / sizeof d->nodes[0] * sizeof *d->g_node);
    if (!d->mlogits) d->mlogits = malloc((size_t)d->n_vocab * sizeof *d->mlogits);
    if (!d->g_node || !d->mlogits) { d->gm = NULL; return es_fail(err, ES_ERR_NOMEM, "out of memory"); }
    d->g_conf = *es_gmatcher_state(m);
    return ES_OK;
}

/* The state after token tok from state from (into out); false if the grammar refuses it. */
static bool grammar_step(es_drafter *d, const es_gstate *from, int32_t tok, es_gstate *out) {
    es_gmatcher_set_state(d->gm, from);
    if (!es_gmatcher_accept(d->gm, tok)) return false;
    *out = *es_gmatcher_state(d->gm);
    return true;
}

void es_drafter_set_abort(es_drafter *d, bool (*fn)(void *ud), void *ud) {
    d->abort_fn = fn;
    d->abort_ud = ud;
}

bool es_drafter_aborted(const es_drafter *d) { return d->aborted; }

/* Asked before each draft forward pass after the root's; a yes ends the tree where it stands. */
static bool want_abort(es_drafter *d) {
    if (d->abort_fn && d->abort_fn(d->abort_ud)) d->aborted = true;
    return d->aborted;
}

float es_drafter_cost_ratio(const es_model *target, const es_model *draft) {
    const uint64_t tb = es_model_weight_bytes(target);
    return tb > 0 ? (float)((double)es_model_weight_bytes(draft) / (double)tb) : 0.0f;
}

es_drafter_params es_drafter_default_params(void) {
    es_drafter_params p;
    memset(&p, 0, sizeof p);
    p.mode = ES_DRAFT_CHAIN;
    p.k_max = 8;
    p.k_min = 1;
    p.p_min = 0.0f;
    p.adaptive = true;
    p.tree_budget = 8; /* see README, "Choosing tree parameters" */
    p.tree_depth = 8;
    p.tree_width = 4;
    p.temperature = 1.0f;
    p.q_top_k = 32;
    return p;
}

es_status es_drafter_init(es_ctx *ctx, int seq, const es_drafter_params *p, es_drafter **out, es_err *err) {
    *out = NULL;
    if (p->k_max < 1 || p->k_max > ES_SPEC_MAX_NODES) return es_fail(err, ES_ERR_INVALID_ARG, "draft length must be in 1..%d", ES_SPEC_MAX_NODES);
    if (p->k_min < 0 || p->k_min > p->k_max) return es_fail(err, ES_ERR_INVALID_ARG, "draft minimum must be in 0..draft maximum");
    if (p->tree_budget < 1 || p->tree_budget > ES_SPEC_MAX_NODES) return es_fail(err, ES_ERR_INVALID_ARG, "tree budget must be in 1..%d", ES_SPEC_MAX_NODES);
    if (p->tree_depth < 1 || p->tree_depth > ES_SPEC_MAX_NODES) return es_fail(err, ES_ERR_INVALID_ARG, "tree depth must be in 1..%d", ES_SPEC_MAX_NODES);
    if (p->tree_width < 1 || p->tree_width > 64) return es_fail(err, ES_ERR_INVALID_ARG, "tree width must be in 1..64");
    if (p->sample && (p->q_top_k < 1 || p->q_top_k > ES_SPEC_MAX_Q))
        return es_fail(err, ES_ERR_INVALID_ARG, "proposal top-k must be in 1..%d", ES_SPEC_MAX_Q);
    if (p->sample && !(p->temperature > 0)) return es_fail(err, ES_ERR_INVALID_ARG, "proposal temperature must be > 0");
    es_drafter *d = calloc(1, sizeof *d);
    if (!d) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    d->ctx = ctx;
    d->seq = seq;
    d->p = *p;
    d->n_vocab = es_model_n_vocab(es_ctx_model(ctx));
    d->n_ctx = es_model_n_ctx_train(es_ctx_model(ctx));
    d->k_cur = p->k_max;
    d->kv_confirmed = es_seq_len(ctx, seq);
    es_rng_seed(&d->rng, p->seed ^ 0xd4afull);
    d->pending = malloc((size_t)(d->n_ctx + 8) * sizeof(int32_t));
    d->kv_tok = malloc((size_t)(d->n_ctx + 8) * sizeof(int32_t));
    d->probs = malloc((size_t)d->n_vocab * sizeof(float));
    d->topi = malloc(64 * sizeof(int32_t));
    if (!d->pending || !d->kv_tok || !d->probs || !d->topi) { es_drafter_free(d); return es_fail(err, ES_ERR_NOMEM, "out of memory"); }
    if (p->sample) {
        es_sampler_params sp = es_sampler_default_params();
        sp.temperature = p->temperature;
        sp.top_k = p->q_top_k;
        sp.top_p = 1.0f;
        sp.min_p = 0.0f;
        sp.repeat_penalty = 1.0f;
        sp.seed = p->seed;
        es_status st = es_sampler_init(&sp, d->n_vocab, &d->prop, err);
        if (st != ES_OK) { es_drafter_free(d); return st; }
    }
    *out = d;
    return ES_OK;
}

void es_drafter_free(es_drafter *d) {
    if (!d) return;
    es_sampler_free(d->prop);
    free(d->pending);
    free(d->kv_tok);
    free(d->probs);
    free(d->topi);
    free(d->g_node);
    free(d->mlogits);
    free(d);
}

int es_drafter_k(const es_drafter *d) { return d->k_cur; }
int es_drafter_kv_len(const es_drafter *d) { return d->kv_confirmed; }

es_status es_drafter_prefill(es_drafter *d, const int32_t *tokens, int n, es_err *err) {
    if (n < 0 || d->n_pending + n > d->n_ctx) return es_fail(err, ES_ERR_RANGE, "draft prefill of %d tokens exceeds the context", n);
    memcpy(d->pending + d->n_pending, tokens, (size_t)n * sizeof(int32_t));
    d->n_pending += n;
    return ES_OK;
}

/* Evaluates the pending chain followed by the root; returns the root's logits. */
static es_status eval_root(es_drafter *d, int32_t root, const float **logits, es_err *err) {
    es_status st = es_seq_truncate(d->ctx, d->seq, d->kv_confirmed, err); /* drop any stale tree slots */
    if (st != ES_OK) return st;
    int32_t *all = d->pending; /* pending has room for the root */
    all[d->n_pending] = root;
    const int n = d->n_pending + 1, chunk = ES_SPEC_MAX_NODES + 1;
    if (d->kv_confirmed + n > d->n_ctx) return es_fail(err, ES_ERR_RANGE, "draft context of %d positions is full", d->n_ctx);
    memcpy(d->kv_tok + d->kv_confirmed, all, (size_t)n * sizeof(int32_t));
    for (int at = 0; at < n; at += chunk) {
        const int m = n - at < chunk ? n - at : chunk;
        const int base = es_seq_len(d->ctx, d->seq);
        for (int i = 0; i < m; i++) { d->b_pos[i] = base + i; d->b_seq[i] = d->seq; }
        es_batch b = {m, all + at, d->b_pos, d->b_seq, NULL, NULL, NULL};
        if ((st = es_decode(d->ctx, &b, err)) != ES_OK) return st;
        if (at + m == n) *logits = es_ctx_logits(d->ctx, m - 1);
    }
    d->root_slot = es_seq_len(d->ctx, d->seq) - 1;
    d->kv_confirmed = d->root_slot; /* the root is not confirmed-in-KV until accepted */
    d->n_pending = 0;
    return ES_OK;
}

/* log-softmax normaliser of a logits row */
static float log_sum_exp(const float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++) if (x[i] > m) m = x[i];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)(x[i] - m));
    return m + (float)log(s);
}

/* The w best tokens of a logits row (descending). */
static int top_tokens(const float *x, int n, int w, int32_t *out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (k < w) k++;
        else if (x[i] <= x[out[k - 1]]) continue;
        int j = k - 1;
        while (j > 0 && x[out[j - 1]] < x[i]) { out[j] = out[j - 1]; j--; }
        out[j] = i;
    }
    return k;
}

typedef struct child { int32_t token; float logq; } child;

/* Proposes up to w children of one node from its logits. When sampling, also records the node's
 * sparse proposal q into the tree (owner o). Returns the number of children. */
static int propose(es_drafter *d, const float *logits, int w, child *out, es_spec_tree *t, int owner, float *top_p,
                   const es_gstate *gs) {
    *top_p = 0;
    if (d->gm && gs) { /* constrained: the node's own mask */
        es_gmatcher_set_state(d->gm, gs);
        if (es_gmatcher_ended(d->gm)) return 0; /* nothing follows an end token */
        const uint64_t *mask = es_gmatcher_mask(d->gm);
        bool any = false;
        for (int i = 0; i < d->n_vocab; i++) {
            const bool in = es_mask_test(mask, i) && logits[i] == logits[i];
            d->mlogits[i] = in ? logits[i] : -INFINITY;
            any |= in && logits[i] > -INFINITY;
        }
        if (!any) return 0;
        logits = d->mlogits;
    }
    logits = biased(d, logits);
    if (!d->p.sample) {
        const float lse = log_sum_exp(logits, d->n_vocab);
        int k = top_tokens(logits, d->n_vocab, w, d->topi);
        while (k > 0 && logits[d->topi[k - 1]] == -INFINITY) k--; /* fewer allowed tokens than w */
        for (int j = 0; j < k; j++) out[j] = (child){d->topi[j], logits[d->topi[j]] - lse};
        *top_p = k ? expf(out[0].logq) : 0;
        return k;
    }
    /* Sparse proposal: the draft's distribution at the proposal temperature, top q_top_k. */
    es_sampler_probs(d->prop, logits, d->probs);
    int nq = 0;
    const int cap = (int)(sizeof t->q_tok / sizeof t->q_tok[0]);
    if (t->q_used + d->p.q_top_k > cap) return 0; /* proposal table full: no more children */
    const int off = t->q_used;
    float best = 0;
    for (int i = 0; i < d->n_vocab && nq < ES_SPEC_MAX_Q; i++)
        if (d->probs[i] > 0) {
            t->q_tok[off + nq] = i;
            t->q_p[off + nq] = d->probs[i];
            if (d->probs[i] > best) best = d->probs[i];
            nq++;
        }
    double s = 0;
    for (int k = 0; k < nq; k++) s += t->q_p[off + k];
    for (int k = 0; k < nq; k++) t->q_p[off + k] = (float)(t->q_p[off + k] / s);
    d->q_off_node[owner] = off;
    d->q_n_node[owner] = nq;
    t->q_used += nq;
    *top_p = best;
    /* w draws without replacement */
    float q[ES_SPEC_MAX_Q];
    for (int k = 0; k < nq; k++) q[k] = t->q_p[off + k];
    int m = 0;
    for (; m < w && m < nq; m++) {
        int kk = es_spec_sample(q, nq, es_rng_uniform(&d->rng));
        out[m] = (child){t->q_tok[off + kk], logf(t->q_p[off + kk])};
        q[kk] = 0;
    }
    return m;
}

static int node_cmp(const void *a, const void *b) {
    const dnode *x = *(dnode *const *)a, *y = *(dnode *const *)b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->depth != y->depth) return x->depth < y->depth ? -1 : 1;
    return x->order < y->order ? -1 : 1;
}

/* Chain: each next token the draft's best (or, sampling, a draw), evaluated one at a time, until
 * k_max (adaptive: the current length), a token below p_min past k_min, the grammar's end, or an
 * abort. */
/* The chain's forward pass of token k (its logits for the next). */
static es_status chain_eval(es_drafter *d, es_spec_tree *t, int k, int32_t *parent_slot, const float **logits, es_err *err) {
    int32_t pos = d->root_slot + k + 1;
    es_batch b = {1, &t->token[k], &pos, &d->seq, NULL, NULL, parent_slot};
    int32_t par = -1;
    b.parent = &par;
    es_status st = es_decode(d->ctx, &b, err);
    if (st != ES_OK) return st;
    *parent_slot = es_seq_len(d->ctx, d->seq) - 1;
    d->nodes[k].slot = *parent_slot;
    *logits = es_ctx_logits(d->ctx, 0);
    return ES_OK;
}

/* Whether a chain of k + 1 tokens, token k drafted at the draft's probability top_p, is worth
 * another draft step. With r = cost_ratio and costs in target steps, the round so far costs
 * C = 1 + (k + 1) r (the verification, about one step while it is memory-bound, and the draft steps
 * including the next) and is expected to give E = 1 + sum_j pi_j tokens, pi_j the chance that the
 * first j + 1 tokens are all accepted. The next token adds at most pi_k tokens, each worth C / E
 * target steps at the round's rate, for r more: it is drafted while pi_k C >= r E. pi_j is the
 * product of the draft's top probabilities, scaled by how many tokens such products have predicted
 * against how many were accepted (a distilled draft can be right far more often than it is sure),
 * at most 1. So a draft that costs a third of the target stops once the chain's chance has fallen
 * to about a half, and one that costs little (r below CHAIN_COST_MIN) drafts to k_lim. */
#define CHAIN_COST_MIN 0.05
static bool chain_worth(es_drafter *d, int k, float top_p) {
    if (k == 0) {
        d->c_pi = d->c_e = 1.0;
        d->c_sum = 0.0;
    }
    d->c_pi *= top_p;
    d->c_sum += d->c_pi;
    const double rho = d->c_exp > 0 ? d->c_obs / d->c_exp : 1.0, pi = fmin(1.0, rho * d->c_pi);
    d->c_e += pi;
    /* below CHAIN_COST_MIN a cut saves too little to bet a round on pi, an estimate: a distilled
       draft's products fall fast where it is still right (stories260K's draft-mid) */
    const double r = d->p.cost_ratio;
    if (!(r >= CHAIN_COST_MIN) || k + 1 < d->p.k_min) return true;
    return pi * (1.0 + (k + 1) * r) >= r * d->c_e;
}

/* Chain tokens from k on (logits: the draft's after token k - 1, or the root's). */
static es_status chain_from(es_drafter *d, const float *logits, int k, int k_lim, int32_t parent_slot, es_gstate gs, es_spec_tree *t,
                            es_err *err) {
    child ch[64];
    float top_p;
    for (; k < k_lim; k++) {
        if (propose(d, logits, 1, ch, t, k, &top_p, d->gm ? &gs : NULL) < 1) break;
        if (d->gm && !grammar_step(d, &gs, ch[0].token, &gs)) break;
        if (d->p.p_min > 0 && top_p < d->p.p_min && k >= d->p.k_min) break;
        t->token[k] = ch[0].token;
        t->parent[k] = k - 1;
        t->depth[k] = k + 1;
        t->n = k + 1;
        d->nodes[k] = (dnode){ch[0].token, k - 1, k + 1, 0, -1, k, true};
        const bool worth = chain_worth(d, k, top_p); /* (its sums count every token, the last too) */
        if (k + 1 == k_lim || !worth) break;
        if (want_abort(d)) { /* token k's pass is what comes next */
            d->resumable = true;
            d->r_k = k;
            d->r_k_lim = k_lim;
            d->r_parent_slot = parent_slot;
            if (d->gm) d->r_gs = gs;
            break;
        }
        es_status st = chain_eval(d, t, k, &parent_slot, &logits, err);
        if (st != ES_OK) return st;
    }
    for (int k2 = 0; k2 < t->n; k2++) d->tree_node[k2] = k2;
    d->n_nodes = d->n_emitted = t->n;
    if (t->has_q)
        for (int o = 0; o <= t->n; o++) { t->q_off[o] = d->q_off_node[o]; t->q_n[o] = d->q_n_node[o]; }
    return ES_OK;
}

static es_status draft_chain(es_drafter *d, const float *logits, int max_nodes, es_spec_tree *t, es_err *err) {
    int k_lim = d->p.adaptive ? d->k_cur : d->p.k_max;
    if (k_lim > max_nodes) k_lim = max_nodes;
    es_gstate gs;
    if (d->gm) gs = d->g_conf;
    else memset(&gs, 0, sizeof gs);
    return chain_from(d, logits, 0, k_lim, d->root_slot, gs, t, err);
}

/* One level of the tree: up to tree_width children of every frontier node, scored by their cumulative
 * log q, appended to d->nodes. */
static void expand_level(es_drafter *d, es_spec_tree *t, const int *frontier, int n_front, const float *const *front_logits, int level,
                         int budget, int kept_before, int *order) {
    const int cap_nodes = (int)(sizeof d->nodes / sizeof d->nodes[0]);
    const int first_new = d->n_nodes;
    child ch[64];
    float top_p;
    for (int f = 0; f < n_front; f++) {
        const int pn = frontier[f];
        const float base = pn < 0 ? 0.0f : d->nodes[pn].score;
        /* Sampling: how many children a node gets is fixed before they are drawn (best-scored
         * frontier nodes first, while the budget lasts) and nothing drawn is pruned afterwards.
         * Choosing by the drawn tokens' scores would bias the children away from the proposal
         * q that recursive rejection sampling assumes they were drawn from. */
        int w = d->p.tree_width;
        if (d->p.sample) {
            const int left = budget - (d->n_nodes - first_new) - kept_before;
            w = w < left ? w : left;
            if (w <= 0) break;
        }
        const es_gstate *gs = !d->gm ? NULL : pn < 0 ? &d->g_conf : &d->g_node[pn];
        const int m = propose(d, front_logits[f], w, ch, t, pn + 1, &top_p, gs);
        for (int j = 0; j < m && d->n_nodes < cap_nodes; j++) {
            if (d->gm && !grammar_step(d, gs, ch[j].token, &d->g_node[d->n_nodes])) continue;
            dnode *nd = &d->nodes[d->n_nodes++];
            *nd = (dnode){ch[j].token, pn, level, base + ch[j].logq, -1, (*order)++, true};
        }
    }
}

/* Sampling: the next frontier is the new nodes [first_new, n_nodes) best first, as many as the budget
 * could still give a child (room). */
static int frontier_sampled(es_drafter *d, int first_new, int room, int *frontier) {
    dnode *sorted[sizeof d->nodes / sizeof d->nodes[0]];
    int n_new = 0;
    for (int i = first_new; i < d->n_nodes; i++) sorted[n_new++] = &d->nodes[i];
    qsort(sorted, (size_t)n_new, sizeof sorted[0], node_cmp);
    int n_front = 0;
    for (int i = 0; i < n_new && n_front < room && n_front < ES_SPEC_MAX_NODES; i++) frontier[n_front++] = (int)(sorted[i] - d->nodes);
    return n_front;
}

/* Greedy: keep the best `budget` nodes overall, the set closed under ancestors. Returns how many were
 * kept before this cut; *cut is the score of the last one kept when the budget is full (else -inf). */
static int keep_best(es_drafter *d, int budget, float *cut) {
    dnode *sorted[sizeof d->nodes / sizeof d->nodes[0]];
    int n_alive = 0;
    for (int i = 0; i < d->n_nodes; i++)
        if (d->nodes[i].keep) sorted[n_alive++] = &d->nodes[i];
    qsort(sorted, (size_t)n_alive, sizeof sorted[0], node_cmp);
    for (int i = budget; i < n_alive; i++) sorted[i]->keep = false;
    /* ties are broken toward parents, so this only triggers on exact score ties across depths */
    for (int i = 0; i < d->n_nodes; i++)
        if (d->nodes[i].parent >= 0 && !d->nodes[d->nodes[i].parent].keep) d->nodes[i].keep = false;
    *cut = n_alive >= budget ? sorted[budget - 1]->score : -INFINITY;
    return n_alive;
}

/* Greedy: the next frontier is the surviving new nodes that could still add children above the cut. */
static int frontier_greedy(es_drafter *d, int first_new, int n_alive, int budget, float cut, int *frontier) {
    int n_front = 0;
    for (int i = first_new; i < d->n_nodes && n_front < ES_SPEC_MAX_NODES; i++)
        if (d->nodes[i].keep && (n_alive < budget || d->nodes[i].score > cut)) {
            d->b_node[n_front] = i;
            frontier[n_front++] = i;
        }
    return n_front;
}

/* One batched draft forward over the frontier: each node gets its KV slot, and its logits for the
 * next level. */
static es_status eval_frontier(es_drafter *d, const int *frontier, int n_front, const float **front_logits, es_err *err) {
    const int base = es_seq_len(d->ctx, d->seq);
    for (int f = 0; f < n_front; f++) {
        const dnode *nd = &d->nodes[frontier[f]];
        d->b_tok[f] = nd->token;
        d->b_pos[f] = d->root_slot + nd->depth; /* root sits at position root_slot */
        d->b_seq[f] = d->seq;
        d->b_par[f] = -1;
        d->b_cpar[f] = nd->parent < 0 ? d->root_slot : d->nodes[nd->parent].slot;
        d->b_logits[f] = 1;
    }
    es_batch b = {n_front, d->b_tok, d->b_pos, d->b_seq, d->b_par, d->b_logits, d->b_cpar};
    es_status st = es_decode(d->ctx, &b, err);
    if (st != ES_OK) return st;
    for (int f = 0; f < n_front; f++) {
        d->nodes[frontier[f]].slot = base + f;
        front_logits[f] = es_ctx_logits(d->ctx, f);
    }
    return ES_OK;
}

/* The kept nodes into t in creation order (parents before children), with the proposals (sampling)
 * indexed by emitted owner. */
static void emit_tree(es_drafter *d, es_spec_tree *t) {
    int n = 0;
    for (int i = 0; i < d->n_nodes; i++) {
        d->out_index[i] = -1;
        if (!d->nodes[i].keep || n >= ES_SPEC_MAX_NODES) continue;
        const int par = d->nodes[i].parent;
        if (par >= 0 && d->out_index[par] < 0) continue;
        t->token[n] = d->nodes[i].token;
        t->parent[n] = par < 0 ? -1 : d->out_index[par];
        t->depth[n] = d->nodes[i].depth;
        d->tree_node[n] = i;
        d->out_index[i] = n++;
    }
    t->n = n;
    d->n_emitted = n;
    if (t->has_q) {
        t->q_off[0] = d->q_off_node[0];
        t->q_n[0] = d->q_n_node[0];
        for (int k = 0; k < n; k++) {
            t->q_off[k + 1] = d->q_off_node[d->tree_node[k] + 1];
            t->q_n[k + 1] = d->q_n_node[d->tree_node[k] + 1];
        }
    }
}

/* Tree: level by level, from the root (node -1, its logits in hand): expand the frontier, choose the
 * next frontier (sampling: best first within the budget; greedy: the best `budget` nodes overall),
 * evaluate it in one batched forward; then emit the kept nodes. */
static es_status tree_from(es_drafter *d, int level, int *frontier, int n_front, const float **front_logits, int budget, int kept_before,
                           int order, es_spec_tree *t, es_err *err);

static es_status draft_tree(es_drafter *d, const float *logits, int max_nodes, es_spec_tree *t, es_err *err) {
    const int budget = d->p.tree_budget < max_nodes ? d->p.tree_budget : max_nodes;
    int frontier[ES_SPEC_MAX_NODES + 1];
    frontier[0] = -1;
    const float *front_logits[ES_SPEC_MAX_NODES + 1];
    front_logits[0] = logits;
    return tree_from(d, 1, frontier, 1, front_logits, budget, 0, 0, t, err);
}

/* Levels from `level` on, the frontier's logits in hand (kept_before, sampling: nodes added before this
 * level; order: nodes created so far). */
static es_status tree_from(es_drafter *d, int level, int *frontier, int n_front, const float **front_logits, int budget, int kept_before,
                           int order, es_spec_tree *t, es_err *err) {
    for (; level <= d->p.tree_depth && n_front > 0; level++) {
        const int first_new = d->n_nodes;
        expand_level(d, t, frontier, n_front, front_logits, level, budget, kept_before, &order);
        if (d->p.sample) {
            kept_before = d->n_nodes;
            if (level == d->p.tree_depth || kept_before >= budget) break;
            n_front = frontier_sampled(d, first_new, budget - kept_before, frontier);
        } else {
            float cut;
            const int n_alive = keep_best(d, budget, &cut);
            if (level == d->p.tree_depth) break;
            n_front = frontier_greedy(d, first_new, n_alive, budget, cut, frontier);
        }
        if (n_front == 0) break;
        if (want_abort(d)) { /* the frontier's pass is what comes next */
            d->resumable = true;
            d->r_level = level + 1;
            d->r_n_front = n_front;
            memcpy(d->r_frontier, frontier, (size_t)n_front * sizeof *frontier);
            d->r_kept_before = kept_before;
            d->r_order = order;
            d->r_budget = budget;
            break;
        }
        es_status st = eval_frontier(d, frontier, n_front, front_logits, err);
        if (st != ES_OK) return st;
    }
    emit_tree(d, t);
    return ES_OK;
}

es_status es_drafter_resume(es_drafter *d, es_spec_tree *t, es_err *err) {
    if (!d->aborted || !d->resumable) return ES_OK;
    d->aborted = d->resumable = false;
    if (d->p.mode == ES_DRAFT_CHAIN) {
        const float *logits = NULL;
        int32_t parent_slot = d->r_parent_slot;
        es_status st = chain_eval(d, t, d->r_k, &parent_slot, &logits, err);
        if (st != ES_OK) return st;
        return chain_from(d, logits, d->r_k + 1, d->r_k_lim, parent_slot, d->r_gs, t, err);
    }
    int frontier[ES_SPEC_MAX_NODES + 1];
    const float *front_logits[ES_SPEC_MAX_NODES + 1];
    memcpy(frontier, d->r_frontier, (size_t)d->r_n_front * sizeof *frontier);
    es_status st = eval_frontier(d, frontier, d->r_n_front, front_logits, err);
    if (st != ES_OK) return st;
    return tree_from(d, d->r_level, frontier, d->r_n_front, front_logits, d->r_budget, d->r_kept_before, d->r_order, t, err);
}

es_status es_drafter_draft(es_drafter *d, int32_t root, int max_nodes, es_spec_tree *t, es_err *err) {
    memset(t, 0, offsetof(es_spec_tree, q_tok));
    t->q_used = 0;
    t->has_q = d->p.sample;
    d->n_nodes = 0;
    d->n_emitted = 0;
    d->aborted = d->resumable = false;
    memset(d->q_n_node, 0, sizeof d->q_n_node);
    memset(d->q_off_node, 0, sizeof d->q_off_node);
    const float *logits = NULL;
    es_status st = eval_root(d, root, &logits, err);
    if (st != ES_OK) return st;
    const int room = d->n_ctx - es_seq_len(d->ctx, d->seq) - 1;
    if (max_nodes > room) max_nodes = room;
    if (max_nodes <= 0) return ES_OK;
    return d->p.mode == ES_DRAFT_CHAIN ? draft_chain(d, logits, max_nodes, t, err) : draft_tree(d, logits, max_nodes, t, err);
}

float es_drafter_node_score(const es_drafter *d, int k) {
    if (!d || k < 0 || k >= d->n_emitted || d->n_nodes == 0) return NAN;
    return d->nodes[d->tree_node[k]].score;
}

es_status es_drafter_accept(es_drafter *d, const es_spec_tree *t, const es_spec_verdict *v, es_err *err) {
    d->resumable = false;
    /* Keep the root, then the evaluated prefix of the accepted path. */
    int32_t slots[ES_SPEC_MAX_PATH + 1];
    int n = 0;
    slots[n++] = d->root_slot;
    int k = 0;
    for (; k < v->n_accepted; k++) {
        const int idx = v->path[k];
        if (idx < 0 || idx >= t->n) return es_fail(err, ES_ERR_RANGE, "verdict names node %d of a %d-node tree", idx, t->n);
        const int32_t s = d->nodes[d->tree_node[idx]].slot;
        if (s < 0) break;
        slots[n++] = s;
    }
    es_status st = es_seq_keep(d->ctx, d->seq, d->root_slot, slots, n, err);
    if (st != ES_OK) return st;
    d->kv_confirmed = d->root_slot + n;
    for (int i = 1; i < n; i++) d->kv_tok[d->root_slot + i] = t->token[v->path[i - 1]];
    /* accepted tokens the draft never evaluated are fed with the next round */
    for (; k < v->n_accepted; k++) d->pending[d->n_pending++] = t->token[v->path[k]];
    d->n_nodes = 0;
    es_drafter_feed_grammar(d, v->tokens, v->n_tokens); /* the confirmed state moves by the verdict's tokens */
    es_drafter_adapt(d, t->n, v->n_accepted);
    return ES_OK;
}

void es_drafter_adapt(es_drafter *d, int n_drafted, int n_accepted) {
    if (!d->p.adaptive || d->p.mode != ES_DRAFT_CHAIN || n_drafted <= 0) return;
    if (d->p.cost_ratio > 0) { /* chain_worth's calibration: this round's record, older ones fading */
        d->c_obs = 0.9 * d->c_obs + n_accepted;
        d->c_exp = 0.9 * d->c_exp + d->c_sum;
    }
    if (n_accepted >= n_drafted) d->k_cur = d->k_cur + 2 < d->p.k_max ? d->k_cur + 2 : d->p.k_max;
    else d->k_cur = n_accepted + 1 > d->p.k_min ? n_accepted + 1 : (d->p.k_min > 0 ? d->p.k_min : 1);
}

void es_drafter_save(const es_drafter *d, es_drafter_state *s) {
    s->k_cur = d->k_cur;
    memcpy(s->rng, d->rng.s, sizeof s->rng);
    s->g_conf = d->g_conf;
}

void es_drafter_restore(es_drafter *d, const es_drafter_state *s) {
    d->k_cur = s->k_cur;
    memcpy(d->rng.s, s->rng, sizeof s->rng);
    d->g_conf = s->g_conf;
}

void es_drafter_feed_grammar(es_drafter *d, const int32_t *tokens, int n) {
    if (!d->gm || n <= 0) return;
    es_gmatcher_set_state(d->gm, &d->g_conf);
    for (int i = 0; i < n; i++) es_gmatcher_accept(d->gm, tokens[i]);
    d->g_conf = *es_gmatcher_state(d->gm);
}

es_status es_drafter_rewind(es_drafter *d, int kv_len, const int32_t *pending, int n_pending, es_err *err) {
    d->resumable = false;
    if (kv_len < 0 || kv_len > d->kv_confirmed)
        return es_fail(err, ES_ERR_INVALID_ARG, "cannot rewind the draft cache to %d of %d confirmed tokens", kv_len, d->kv_confirmed);
    if (n_pending < 0 || kv_len + n_pending > d->n_ctx)
        return es_fail(err, ES_ERR_RANGE, "rewind leaves %d + %d tokens, beyond the draft context %d", kv_len, n_pending, d->n_ctx);
    es_status st = es_seq_truncate(d->ctx, d->seq, kv_len, err);
    if (st != ES_OK) return st;
    d->kv_confirmed = kv_len;
    if (n_pending > 0) memcpy(d->pending, pending, (size_t)n_pending * sizeof(int32_t));
    d->n_pending = n_pending;
    d->n_nodes = 0;
    return ES_OK;
}

es_status es_drafter_predict(es_drafter *d, int32_t *next, es_err *err) {
    d->resumable = false;
    es_status st = es_seq_truncate(d->ctx, d->seq, d->kv_confirmed, err); /* drop tree slots */
    if (st != ES_OK) return st;
    if (d->n_pending == 0) { /* recompute the last cached token's logits */
        if (d->kv_confirmed == 0) return es_fail(err, ES_ERR_INVALID_ARG, "nothing to predict from: the draft holds no tokens");
        d->kv_confirmed--;
        if ((st = es_seq_truncate(d->ctx, d->seq, d->kv_confirmed, err)) != ES_OK) return st;
        d->pending[0] = d->kv_tok[d->kv_confirmed];
        d->n_pending = 1;
    }
    const int n = d->n_pending, chunk = ES_SPEC_MAX_NODES + 1;
    if (d->kv_confirmed + n > d->n_ctx) return es_fail(err, ES_ERR_RANGE, "draft context of %d positions is full", d->n_ctx);
    const float *logits = NULL;
    for (int at = 0; at < n; at += chunk) {
        const int m = n - at < chunk ? n - at : chunk;
        const int base = es_seq_len(d->ctx, d->seq);
        for (int i = 0; i < m; i++) { d->b_pos[i] = base + i; d->b_seq[i] = d->seq; }
        es_batch b = {m, d->pending + at, d->b_pos, d->b_seq, NULL, NULL, NULL};
        if ((st = es_decode(d->ctx, &b, err)) != ES_OK) return st;
        if (at + m == n) logits = es_ctx_logits(d->ctx, m - 1);
    }
    memcpy(d->kv_tok + d->kv_confirmed, d->pending, (size_t)n * sizeof(int32_t));
    d->kv_confirmed += n;
    d->n_pending = 0;
    d->n_nodes = 0;
    logits = biased(d, logits);
    int32_t best = -1;
    const uint64_t *mask = NULL;
    if (d->gm) {
        es_gmatcher_set_state(d->gm, &d->g_conf);
        mask = es_gmatcher_mask(d->gm);
    }
    for (int i = 0; i < d->n_vocab; i++)
        if ((!mask || es_mask_test(mask, i)) && (best < 0 || logits[i] > logits[best])) best = i;
    if (best < 0) best = 0; /* the grammar allows nothing more: any guess misses alike */
    *next = best;
    es_drafter_feed_grammar(d, next, 1);
    return ES_OK;
}
