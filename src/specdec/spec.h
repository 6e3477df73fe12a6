/* spec.h — speculative decoding: a draft side that proposes a token tree and a verify side that checks
 * it against the target model in one forward pass.
 *
 * The two sides are separate objects that share nothing but what would cross a network: the tree
 * (token ids, parent indices, and — for the rejection rule only — the draft's sparse proposal
 * distributions) and the verdict (accepted node path + one bonus token). The edge–server split sends
 * exactly these over the wire.
 *
 * Conventions. The *confirmed* sequence is the prompt plus every emitted token. Each side's KV cache
 * holds the confirmed sequence except its last token, the *root* of the next round. A round: the
 * drafter grows a tree under the root; the verifier evaluates root + tree in one batch, walks the tree
 * with the acceptance rule, keeps root + accepted path in its KV, and returns the path plus a bonus
 * token sampled from the target at the end of the path; the bonus is the next root. A tree with no
 * nodes is a plain autoregressive step. */
#ifndef ES_SPEC_SPEC_H
#define ES_SPEC_SPEC_H

#include <stdbool.h>
#include <stdint.h>

#include "edgespec.h"
#include "grammar/grammar.h"

#define ES_SPEC_MAX_NODES 256 /* draft nodes per tree (root excluded) */
#define ES_SPEC_MAX_Q 64      /* entries of one sparse proposal distribution */

typedef enum es_accept_rule {
    ES_ACCEPT_GREEDY = 0,   /* target argmax per node; output identical to target-only greedy */
    ES_ACCEPT_MATCH,        /* sample-then-match (SpecEdge): one target sample per node */
    ES_ACCEPT_REJECTION,    /* speculative sampling: min(1, p/q), residual max(0, p - q); trees use
                               recursive rejection sampling over siblings drawn without replacement */
    ES_ACCEPT_SYNTHETIC,    /* benchmarking only: accept each draft token with probability alpha */
} es_accept_rule;

const char *es_accept_rule_name(es_accept_rule r);
/* "greedy" | "match" | "rejection" | "synthetic"; -1 if unknown. */
int es_accept_rule_parse(const char *s);

/* A draft tree. Nodes are in topological order (parent index < own index); parent -1 = the root.
 * Siblings appear in the order they were drawn (the rejection rule depends on it). */
typedef struct es_spec_tree {
    int n;
    int32_t token[ES_SPEC_MAX_NODES];
    int32_t parent[ES_SPEC_MAX_NODES];
    int32_t depth[ES_SPEC_MAX_NODES]; /* 1 for children of the root */
    /* Sparse proposal distributions (rejection rule only): the distribution the children of owner o
     * were drawn from, o = 0 for the root and o = k+1 for node k; q_n[o] == 0 if o has no children. */
    bool has_q;
    int32_t q_off[ES_SPEC_MAX_NODES + 1];
    int32_t q_n[ES_SPEC_MAX_NODES + 1];
    int32_t q_tok[ES_SPEC_MAX_NODES * 8];
    float q_p[ES_SPEC_MAX_NODES * 8];
    int q_used;
} es_spec_tree;

/* Checks the invariants a verifier relies on (counts, parent order, depths, token range, q sums).
 * Used on every tree that arrives from elsewhere. */
es_status es_spec_tree_validate(const es_spec_tree *t, int n_vocab, es_err *err);

#define ES_SPEC_MAX_PATH 257
typedef struct es_spec_verdict {
    int n_accepted;                      /* nodes on the accepted path */
    int32_t path[ES_SPEC_MAX_PATH];      /* their indices, root's child first */
    int32_t bonus;                       /* target token after the path */
    int n_tokens;                        /* n_accepted + 1 */
    int32_t tokens[ES_SPEC_MAX_PATH + 1];/* emitted tokens: path tokens, then the bonus */
} es_spec_verdict;

/* Fails with ES_ERR_MISMATCH (naming the first differing token) unless draft and target share the
 * vocabulary: same size, same text for every token, same BOS and EOS. */
es_status es_spec_check_vocab(const es_tokenizer *target, const es_tokenizer *draft, es_err *err);

/* ---- acceptance at one node (pure functions over distributions; unit-tested for exactness) ---- */

/* Recursive rejection sampling at a node whose children tokens c[0..m) were drawn without replacement
 * from the sparse proposal (qt, qp, nq). p is the target distribution (n_vocab, modified in place:
 * it ends as the residual). Returns the index of the accepted child, or -1 and *bonus = a sample of
 * the final residual. u() draws uniforms. */
int es_spec_rrs(float *p, int n_vocab, const int32_t *c, int m, const int32_t *qt, const float *qp, int nq,
                double (*u)(void *), void *uctx, int32_t *bonus);
/* Samples from an (unnormalised, non-negative) distribution by inverse CDF. */
int32_t es_spec_sample(const float *p, int n, double r);

/* ---- verify side ------------------------------------------------------------------------------ */

typedef struct es_verifier es_verifier;

typedef struct es_verifier_params {
    es_accept_rule rule;
    es_sampler_params sampling; /* the target's sampling (temperature 0 for greedy) */
    double synthetic_alpha;     /* ES_ACCEPT_SYNTHETIC */
} es_verifier_params;

/* Verifies trees for sequence `seq` of a target context (which it does not own). */
es_status es_verifier_init(es_ctx *ctx, int seq, const es_verifier_params *p, es_verifier **out, es_err *err);
void es_verifier_free(es_verifier *v);
/* Puts confirmed tokens (all but the root) into the target's cache, in chunks. */
es_status es_verifier_prefill(es_verifier *v, const int32_t *tokens, int n, es_err *err);
/* The repetition penalty's history: confirmed tokens before the first root (the prompt but its last
 * token, as prefilled), in order. Each round then adds its root and the accepted path itself, so the
 * penalty at every node sees exactly the tokens before it, as `edgespec run` does (which accepts the
 * prompt into its sampler). Call once, before the first round; no-op without a penalty. */
void es_verifier_add_history(es_verifier *v, const int32_t *tokens, int n);
/* One round: evaluates root + tree, applies the rule, keeps root + accepted path in the KV.
 * Exactly es_verifier_stage into a private builder + es_decode + es_verifier_finish. */
es_status es_verifier_verify(es_verifier *v, int32_t root, const es_spec_tree *tree, es_spec_verdict *out, es_err *err);

/* ---- batched verification: many verifiers' rows in ONE es_decode ------------------------------
 *
 * A server verifying many sessions stages each session's rows into one builder, runs one es_decode
 * over the whole batch (weights read once for everybody), then finishes each verifier:
 *
 *     es_batch_builder_clear(&bb);
 *     for each session: es_verifier_stage_prefill(v, chunk, m, &bb)   (optional, prompt rows)
 *                       es_verifier_stage(v, root, tree, &bb)         (optional, one round)
 *     es_batch b = es_batch_builder_batch(&bb);  es_decode(ctx, &b);
 *     for each session with a round: es_verifier_finish(v, &verdict)
 *
 * Rows carry absolute batch parent indices, so sessions never see each other. A verifier may stage
 * prompt rows and then one round in the same builder (the root then hangs off the last prompt row).
 * Staging only writes rows and remembers where they are; it touches neither the KV cache nor the
 * sampler, so when the decode fails the caller can clear the builder and stage again (e.g. each
 * session alone). es_batch_builder_clear makes everything staged before it stale. */
typedef struct es_batch_builder {
    int cap;           /* rows allocated */
    int n;             /* rows staged */
    int n_logits;      /* staged rows that ask for logits */
    uint64_t gen;      /* bumped by every clear */
    int32_t *token;    /* [cap] the es_batch arrays */
    int32_t *pos;
    int32_t *seq;
    int32_t *parent;   /* absolute batch row, or -1: the sequence's last cached slot */
    int32_t *cache_parent; /* always -1 (kept so other stagers can point at cached slots) */
    int8_t *logits;
} es_batch_builder;

es_status es_batch_builder_init(es_batch_builder *bb, int cap, es_err *err);
void es_batch_builder_free(es_batch_builder *bb);
void es_batch_builder_clear(es_batch_builder *bb);
/* The staged rows as an es_batch (pointers into bb: valid until the builder changes). */
es_batch es_batch_builder_batch(const es_batch_builder *bb);

/* Appends n confirmed tokens (a chunk of the prompt; no logits) after whatever this verifier holds
 * in its cache plus what it already staged in bb. ES_ERR_FULL if bb lacks room (nothing staged). */
es_status es_verifier_stage_prefill(es_verifier *v, const int32_t *tokens, int n, es_batch_builder *bb, es_err *err);
/* Validates the tree and appends root + nodes (logits for every row). `tree` is referenced, not
 * copied: it must stay unchanged until es_verifier_finish. One round per verifier per builder. */
es_status es_verifier_stage(es_verifier *v, int32_t root, const es_spec_tree *tree, es_batch_builder *bb, es_err *err);
/* After the builder's batch went through es_decode: walks the staged tree with the acceptance rule
 * over the batch's logits, keeps root + accepted path in the KV, and clears the staged round. */
es_status es_verifier_finish(es_verifier *v, es_spec_verdict *out, es_err *err);
/* Early exits. es_verifier_enable_provisional allocates what es_verifier_provisional needs (once).
 * es_verifier_provisional: the verdict the staged round (staged in bb) would get if its rows had
 * `logits` (root first, then node u at row u + 1; n_vocab floats each: an exit head's), walked with a
 * copy of the verifier's sampler and coin, so the draws are the ones the final walk will make and
 * nothing of the verifier changes: the final verdict is the same whether or not this was called. */
es_status es_verifier_enable_provisional(es_verifier *v, es_err *err);
es_status es_verifier_provisional(es_verifier *v, const es_batch_builder *bb, const float *logits, es_spec_verdict *out,
                                  es_err *err);
/* The batch row of the root of the round staged in bb (-1: none), and its tree's nodes. */
int es_verifier_staged_root(const es_verifier *v, const es_batch_builder *bb);
int es_verifier_staged_nodes(const es_verifier *v, const es_batch_builder *bb);

/* ---- constrained decoding (grammar/grammar.h) ----
 * From now on every node the acceptance walk visits draws under the matcher's mask for the sequence so
 * far (greedy: argmax over the allowed tokens; match: a sample of the masked distribution; rejection:
 * recursive rejection sampling against the masked, renormalised target, so the output keeps exactly
 * that distribution whatever the drafts were), and the matcher advances by every emitted token. The
 * matcher is borrowed; it must stand at the state after the confirmed tokens (reset before the first
 * round). A draft token the grammar refuses is simply never accepted. NULL turns it off. */
typedef struct es_gmatcher es_gmatcher;
void es_verifier_set_grammar(es_verifier *v, es_gmatcher *m);

/* ---- log-probabilities of the emitted tokens (the OpenAI API's logprobs) ----
 * The target's own distribution at each emitted token: log-softmax of its raw logits (temperature 1,
 * before penalties, logit bias and top-k / top-p / min-p), as OpenAI and vLLM report them — so they do
 * not depend on the request's sampling settings. */
#define ES_SPEC_MAX_TOP_LOGPROBS 20
typedef struct es_token_logprob {
    float logprob;                              /* log p(emitted token) */
    int n_top;                                  /* entries in top_* */
    int32_t top_id[ES_SPEC_MAX_TOP_LOGPROBS];   /* the most likely tokens, most likely first (ties: lower id) */
    float top_logprob[ES_SPEC_MAX_TOP_LOGPROBS];
} es_token_logprob;
/* From now on es_verifier_finish also computes, for each emitted token, its log-probability and the
 * top_n most likely tokens (0..ES_SPEC_MAX_TOP_LOGPROBS); top_n < 0 turns it off (the default). The
 * buffer is allocated here, once. ES_ERR_INVALID_ARG for top_n above the maximum. */
es_status es_verifier_set_logprobs(es_verifier *v, int top_n, es_err *err);
/* log p(tok) under softmax(logits) and the top_n most likely tokens (0..ES_SPEC_MAX_TOP_LOGPROBS), as
 * the verifier reports them; for other sources of logits (an edge generating alone). */
void es_token_logprob_compute(const float *logits, int n_vocab, int32_t tok, int top_n, es_token_logprob *out);
/* After es_verifier_finish: one entry per verdict token (tokens[0..n_tokens)), NULL when off. Valid
 * until the next es_verifier_finish. */
const es_token_logprob *es_verifier_logprobs(const es_verifier *v);

/* ---- draft side ------------------------------------------------------------------------------- */

typedef struct es_drafter es_drafter;

typedef enum es_draft_mode { ES_DRAFT_CHAIN = 0, ES_DRAFT_TREE = 1 } es_draft_mode;

typedef struct es_drafter_params {
    es_draft_mode mode;
    int k_max;           /* chain: most tokens per round */
    int k_min;           /* chain: fewest tokens per round when adaptive */
    float p_min;         /* chain: stop drafting when the draft's top probability falls below */
    bool adaptive;       /* chain: grow k by 2 after a fully accepted round, shrink to accepted+1 else */
    float cost_ratio;    /* chain: what one draft step costs in target steps (run --draft: the ratio of
                          * the weights' bytes, both read once per step); > 0: the chain stops where
                          * another step would cost more than it is expected to return (draft.c,
                          * chain_worth); below 0.05, 0 included: off */
    int tree_budget;     /* tree: most nodes */
    int tree_depth;      /* tree: most levels */
    int tree_width;      /* tree: most children per node */
    bool sample;         /* draw children by sampling without replacement and ship q (rejection rule) */
    float temperature;   /* proposal temperature when sampling */
    int q_top_k;         /* proposal support when sampling (<= ES_SPEC_MAX_Q) */
    uint64_t seed;
} es_drafter_params;

es_drafter_params es_drafter_default_params(void);
/* cost_ratio for a draft beside a target on the CPU: each reads its weights once per step, so the
 * ratio of their weight bytes (a constant, so a seed gives the same rounds on every run). 0 when the
 * target has no weight bytes. */
float es_drafter_cost_ratio(const es_model *target, const es_model *draft);

es_status es_drafter_init(es_ctx *ctx, int seq, const es_drafter_params *p, es_drafter **out, es_err *err);
void es_drafter_free(es_drafter *d);
/* Records confirmed tokens (all but the root); they are evaluated lazily with the next draft. */
es_status es_drafter_prefill(es_drafter *d, const int32_t *tokens, int n, es_err *err);
/* Grows a tree under `root` with at most `max_nodes` nodes (and depth <= max_depth). */
es_status es_drafter_draft(es_drafter *d, int32_t root, int max_nodes, es_spec_tree *out, es_err *err);
/* An optional hook asked before each draft forward pass after the root's: when it says yes, the
 * draft stops where it stands (a smaller but valid tree, the cache as after any draft) and
 * es_drafter_aborted is true until the next es_drafter_draft. The edge uses it to stop a proactive
 * bet's drafting as soon as the real verdict is in. NULL removes it. */
void es_drafter_set_abort(es_drafter *d, bool (*fn)(void *ud), void *ud);
bool es_drafter_aborted(const es_drafter *d);
/* Goes on with a draft the hook stopped, into the same tree t, to what the draft would have been
 * without the stop: the same nodes, scores and random draws (the drafter must not have been used
 * since: es_drafter_accept / _rewind / _predict forbid it). Nothing to do when the last draft ran to
 * its end. The edge finishes a proactive tree cut short when its bet turns out right. */
es_status es_drafter_resume(es_drafter *d, es_spec_tree *t, es_err *err);
/* The draft's cumulative log-probability of node k of the tree the last es_drafter_draft returned
 * (the sum along its path, the score trees are grown by); NAN once the tree is gone (after
 * es_drafter_accept or _rewind) or for k outside it. */
float es_drafter_node_score(const es_drafter *d, int k);
/* Constrained drafting: proposals are drawn under the grammar's mask for their own path (each tree node
 * keeps its automaton state), so drafts stay inside the grammar and the masked target accepts them as
 * often as it would without one. m is the drafter's own matcher (not the verifier's; borrowed), reset
 * to the start of the output; es_drafter_accept advances it by each verdict's tokens. Proactive bets:
 * the state is part of es_drafter_state (es_drafter_rewind leaves it), so a missed bet is undone by
 * es_drafter_restore + es_drafter_feed_grammar. NULL turns it off. ES_ERR_NOMEM only. */
es_status es_drafter_set_grammar(es_drafter *d, es_gmatcher *m, es_err *err);
/* The request's logit bias (the target's sampler adds it to every verified position): the drafter
 * adds it too, so it proposes what the biased target picks (ids outside the vocabulary are skipped;
 * penalties, which depend on the history, are not mirrored). n = 0 removes it. */
es_status es_drafter_set_bias(es_drafter *d, const es_logit_bias *bias, int n, es_err *err);
/* Moves the grammar's confirmed state by tokens the drafter confirmed some other way: es_drafter_accept
 * moves it by each verdict's tokens, es_drafter_restore puts back a saved one, and a proactive bet that
 * missed (rewind + restore) is followed by this with the real verdict's tokens. Tokens it refuses are
 * skipped (the target, masked by the same grammar, never emits them). No-op without a grammar. */
void es_drafter_feed_grammar(es_drafter *d, const int32_t *tokens, int n);
/* Applies a verdict: keeps root + accepted path in the draft cache, queues the rest. */
es_status es_drafter_accept(es_drafter *d, const es_spec_tree *tree, const es_spec_verdict *v, es_err *err);
/* Current chain length target (adaptive). */
int es_drafter_k(const es_drafter *d);
/* The adaptive chain-length rule es_drafter_accept applies after a round of n_drafted tokens of which
 * n_accepted were accepted (chain mode with adaptive on; otherwise nothing). */
void es_drafter_adapt(es_drafter *d, int n_drafted, int n_accepted);

/* ---- proactive drafting (SpecEdge): draft the next tree while the verdict is in flight ----
 *
 * Bet: after es_drafter_draft(root) -> tree T (es_drafter_kv_len is then the root's slot, call it
 * base), save the state, apply a made-up verdict accepting the bet path with es_drafter_accept,
 * es_drafter_predict the bonus b', and es_drafter_draft(b') the next tree. Hit (the real verdict
 * accepted that path and its bonus is b'): carry on with the next tree. Miss: es_drafter_rewind to
 * base + 1 + j (root plus the j leading path tokens the bet and the verdict share are still valid in
 * the cache), pending = the rest of the real accepted path, restore the saved state and apply
 * es_drafter_adapt for the real verdict; then es_drafter_draft(real bonus) as usual. Restoring the
 * random stream makes a proactive run draft exactly the trees a non-proactive one would. */
typedef struct es_drafter_state {
    int k_cur;        /* adaptive chain length */
    uint64_t rng[4];  /* the sampling stream (rejection-rule trees) */
    es_gstate g_conf; /* the grammar's state after the confirmed tokens (es_drafter_set_grammar) */
} es_drafter_state;

void es_drafter_save(const es_drafter *d, es_drafter_state *s);
void es_drafter_restore(es_drafter *d, const es_drafter_state *s);
/* Truncates the draft cache to kv_len (<= es_drafter_kv_len) confirmed tokens, drops any tree, and
 * makes `pending` (n_pending tokens, root excluded) the confirmed tokens still to evaluate. */
es_status es_drafter_rewind(es_drafter *d, int kv_len, const int32_t *pending, int n_pending, es_err *err);
/* Evaluates the pending tokens (none pending: the last cached token is popped and re-evaluated, for
 * its logits) and returns the draft's argmax after them in *next (ties: lowest id; with a grammar, the
 * best token it allows, which then counts as confirmed for it). Afterwards the cache holds every
 * confirmed token and es_drafter_draft(d, *next, ...) drafts under that root. */
es_status es_drafter_predict(es_drafter *d, int32_t *next, es_err *err);
/* Confirmed tokens held in the draft cache (a prefix of the confirmed sequence); the rest are fed
 * with the next draft. */
int es_drafter_kv_len(const es_drafter *d);

/* ---- a whole generation --------------------------------------------------------------------- */

typedef struct es_spec_stats {
    int rounds;
    long drafted, accepted;
    long accepted_at_depth[ES_SPEC_MAX_PATH + 1]; /* [d]: rounds that accepted at least d tokens */
    double draft_seconds, verify_seconds;
    int n_generated;
    const char *stop;                             /* "length", "eos", "context" */
} es_spec_stats;

/* Runs draft/verify rounds from a prompt (both sides fresh: nothing of the prompt in their caches)
 * until n_predict tokens, a stop token (any of stop_ids) or the context end. Generated tokens go to
 * out (capacity n_predict; the stop token included); on_token (optional) sees each one as it is
 * confirmed, stop token excluded. */
es_status es_spec_generate(es_drafter *d, es_verifier *v, const int32_t *prompt, int n_prompt, int n_predict, int n_ctx,
                           const int32_t *stop_ids, int n_stop, int32_t *out, es_spec_stats *st,
                           void (*on_token)(void *ud, int32_t tok), void *ud, es_err *err);

#endif
