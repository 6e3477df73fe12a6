/* sampler.h — internals of the token sampler (the public part is the "sampling" section of
 * edgespec.h), for speculative decoding, which needs the sampler's distributions and stream directly.
 *
 * The pipeline, applied to a copy of the raw logits (n_vocab floats, never modified):
 *
 *   1. sanitise    NaN -> -inf, +inf -> FLT_MAX (so no arithmetic below produces NaN)
 *   1a. mask       with a grammar mask set (es_sampler_set_mask), disallowed tokens -> -inf
 *   1b. bias       each logit_bias entry's value is added to its token's logit (clamped as in 1)
 *   2. penalties   for each distinct token among the last repeat_last_n accepted ones: logit > 0 ->
 *                  logit / repeat_penalty, else logit * repeat_penalty, then minus count *
 *                  frequency_penalty + presence_penalty, count = its occurrences in the window
 *                  (llama.cpp semantics); the result is clamped to FLT_MAX again
 *   3. temperature temperature == 0 stops here: a one-hot at the argmax (ties -> lowest id); so
 *                  does top_k == 1, whose result is the same one-hot
 *   4. top-k       keep the top_k largest logits (ties -> lowest id), by partial selection
 *   5. softmax     p_i ∝ exp((l_i - l_max) / T) over the kept tokens
 *   6. top-p       keep the smallest prefix of the kept tokens sorted by p descending (ties -> lowest
 *                  id) whose mass reaches top_p of the total; always >= 1 token
 *   7. min-p       drop tokens with p < min_p * p_max (the top token always stays)
 *   8. renormalise over the survivors
 *   9. draw        inverse CDF with one uniform from the sampler's own es_rng stream
 *
 * If no token has a logit above -inf after step 2 (all -inf or NaN), the distribution is a one-hot at
 * token 0, for every temperature.
 *
 * Random stream: es_sampler_sample consumes exactly one uniform when temperature > 0 and none when
 * temperature == 0; es_sampler_probs consumes none; es_sampler_uniform consumes one. So the stream's
 * position depends only on the sequence of calls, never on the logits.
 *
 * Cost (n_vocab = 150k, one core): greedy one read pass; top-k by a heap (quickselect for large k);
 * min-p without top-p exponentiates only the tokens near its threshold; top-p exponentiates the
 * top-k set, prunes it with a histogram of mass by binary exponent, and finds its boundary with a
 * mass-summing quickselect, so nothing is fully sorted. No call allocates.
 *
 * es_sampler_reset returns the sampler to the state es_sampler_init left it in: the history is
 * cleared AND the stream is reseeded to params.seed, so a reset sampler replays a fresh one exactly
 * (a server that reuses a sampler per request with the same seed gets the same output).
 */
#ifndef ES_SAMPLE_SAMPLER_H
#define ES_SAMPLE_SAMPLER_H

#include "edgespec.h"

/* One token of a sparse distribution. */
typedef struct es_sampler_cand {
    float p;     /* probability (normalised over the returned set); 0 is possible after underflow */
    int32_t id;  /* token id in [0, n_vocab) */
} es_sampler_cand;

/* Computes the distribution es_sampler_sample would draw from and returns it sparsely: *out points at
 * n entries (returned, >= 1) with distinct ids; every other token has probability 0. The array is the
 * sampler's scratch: valid until the next call on this sampler. Order: unspecified. Allocates
 * nothing; consumes no randomness. */
int es_sampler_dist(es_sampler *s, const float *logits, const es_sampler_cand **out);

/* Inverse-CDF draw from a dense distribution probs[n] (non-negative, need not sum to 1) with a
 * uniform u in [0,1): the first i whose cumulative sum exceeds u * sum. Never returns an index whose
 * probability is 0 unless every probability is 0, in which case it returns 0. */
int32_t es_sample_dense(const float *probs, int n, double u);

/* Orderings of candidate arrays by "p descending, then id ascending" (a strict total order for
 * distinct ids), e.g. to pick the k most likely children of a draft-tree node.
 * es_cand_select: rearranges c[0..n) so that c[0..k) hold the first k in that order, in no particular
 * order among themselves (expected O(n), worst case O(n log n); no-op when k == 0 or k >= n).
 * es_cand_sort: sorts c[0..n) in that order (introsort, O(n log n) worst case).
 * es_cand_heap_sort: the same by heap sort, es_cand_sort's fallback (exposed for its tests). */
void es_cand_select(es_sampler_cand *c, size_t n, size_t k);
void es_cand_sort(es_sampler_cand *c, size_t n);
void es_cand_heap_sort(es_sampler_cand *c, size_t n);

/* Copies src's stream position and penalty history into dst, a sampler made with the same params and
 * n_vocab (for walks that must draw what src would draw without advancing it). */
void es_sampler_copy_state(es_sampler *dst, const es_sampler *src);
/* Constrained decoding (a grammar's mask, grammar/grammar.h): from now on only tokens whose bit is set
 * in mask ((n_vocab + 63) / 64 words, bit t of word t / 64) can be drawn. It is applied right after
 * step 1 (a disallowed token's logit becomes -inf), so greedy is the argmax over the allowed tokens and
 * every distribution is the masked one renormalised. When no allowed token has a finite logit, the
 * one-hot goes to the lowest allowed token instead of token 0. The mask is borrowed (the caller keeps
 * it alive and may change its bits between calls); NULL removes it. */
void es_sampler_set_mask(es_sampler *s, const uint64_t *mask);

#endif
