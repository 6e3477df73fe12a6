/* sampler.c — temperature / top-k / top-p / min-p / repetition-penalty sampling over one row of
 * logits. The pipeline and the random-stream contract are documented in sample/sampler.h.
 *
 * Everything is computed in one scratch array of (value, id) pairs sized n_vocab at init, so sampling
 * never allocates. The ordering used everywhere is "larger value first, then lower id", a strict
 * total order (ids are distinct), which makes every selection and tie deterministic. es_sampler_probs
 * and es_sampler_sample share es_sampler_dist, so the distribution returned is the one drawn from. */
#include "sample/sampler.h"

#include <float.h>
#include <stdbool.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "util/rng.h"

/* The penalty window is a ring buffer allocated at init; cap it so a typo cannot ask for gigabytes. */
#define ES_SAMPLER_MAX_LAST_N (1 << 20)

struct es_sampler {
    es_sampler_params p;
    int n_vocab;
    es_rng rng;
    es_sampler_cand *cand;  /* (n_vocab) scratch: logits, then probabilities, of the candidates */
    uint32_t *count;        /* (n_vocab) all zero between calls; occurrences in the penalty window */
    int32_t *hist;          /* (repeat_last_n) ring of accepted tokens */
    int hist_head;          /* next slot to write */
    int hist_len;           /* valid entries, <= repeat_last_n */
    double q_sum;           /* sum of the probabilities es_sampler_dist left in cand (~1) */
    double mass[256];       /* top-p's histogram: softmax mass by float exponent of e */
    const uint64_t *mask;   /* es_sampler_set_mask: allowed tokens (bit t), or NULL; borrowed */
};

void es_sampler_set_mask(es_sampler *s, const uint64_t *mask) { s->mask = mask; }

/* The lowest allowed token (0 without a mask): what a distribution with no finite logit collapses to. */
static int32_t first_allowed(const es_sampler *s) {
    if (!s->mask) return 0;
    for (int w = 0; w < (s->n_vocab + 63) / 64; w++)
        if (s->mask[w]) {
            const int32_t t = w * 64 + __builtin_ctzll(s->mask[w]);
            return t < s->n_vocab ? t : 0;
        }
    return 0;
}

es_sampler_params es_sampler_default_params(void) {
    /* llama.cpp's defaults, except the seed, which is fixed so runs are reproducible by default. */
    es_sampler_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .seed = 0x5eed,
    };
    return p;
}

es_status es_sampler_init(const es_sampler_params *p, int n_vocab, es_sampler **out, es_err *err) {
    if (!out) return es_fail(err, ES_ERR_INVALID_ARG, "sampler: out is NULL");
    *out = NULL;
    if (!p) return es_fail(err, ES_ERR_INVALID_ARG, "sampler: params is NULL");
    if (n_vocab <= 0) return es_fail(err, ES_ERR_INVALID_ARG, "sampler: n_vocab must be > 0 (got %d)", n_vocab);
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return es_fail(err, ES_ERR_INVALID_ARG, "sampler: temperature must be finite and >= 0 (got %g)",
                       (double)p->temperature);
    if (p->top_k < 0) return es_fail(err, ES_ERR_INVALID_ARG, "sampler: top_k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return es_fail(err, ES_ERR_INVALID_ARG, "sampler: top_p must be in (0, 1] (got %g)", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return es_fail(err, ES_ERR_INVALID_ARG, "sampler: min_p must be in [0, 1] (got %g)", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return es_fail(err, ES_ERR_INVALID_ARG, "sampler: repeat_penalty must be finite and > 0 (got %g)",
                       (double)p->repeat_penalty);
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return es_fail(err, ES_ERR_INVALID_ARG, "sampler: presence and frequency penalties must be finite");
    if (p->repeat_last_n < 0 || p->repeat_last_n > ES_SAMPLER_MAX_LAST_N)
        return es_fail(err, ES_ERR_INVALID_ARG, "sampler: repeat_last_n must be in [0, %d] (got %d)",
                       ES_SAMPLER_MAX_LAST_N, p->repeat_last_n);

    if (p->n_bias < 0 || p->n_bias > ES_SAMPLER_MAX_BIAS)
        return es_fail(err, ES_ERR_INVALID_ARG, "sampler: %d logit-bias entries (at most %d)", p->n_bias, ES_SAMPLER_MAX_BIAS);
    for (int i = 0; i < p->n_bias; i++) {
        if (p->bias[i].id < 0 || p->bias[i].id >= n_vocab)
            return es_fail(err, ES_ERR_INVALID_ARG, "sampler: logit bias for token %d, outside the vocabulary (0..%d)", p->bias[i].id,
                           n_vocab - 1);
        if (!isfinite(p->bias[i].bias))
            return es_fail(err, ES_ERR_INVALID_ARG, "sampler: the logit bias of token %d is not finite", p->bias[i].id);
        for (int j = 0; j < i; j++)
            if (p->bias[j].id == p->bias[i].id)
                return es_fail(err, ES_ERR_INVALID_ARG, "sampler: token %d has two logit-bias entries", p->bias[i].id);
    }

    es_sampler *s = calloc(1, sizeof *s);
    if (!s) return es_fail(err, ES_ERR_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->count = calloc((size_t)n_vocab, sizeof *s->count);
    s->hist = malloc((size_t)(p->repeat_last_n > 0 ? p->repeat_last_n : 1) * sizeof *s->hist);
    if (!s->cand || !s->count || !s->hist) {
        es_sampler_free(s);
        return es_fail(err, ES_ERR_NOMEM, "sampler: out of memory for vocabulary of %d", n_vocab);
    }
    es_rng_seed(&s->rng, p->seed);
    *out = s;
    return ES_OK;
}

void es_sampler_free(es_sampler *s) {
    if (!s) return;
    free(s->cand);
    free(s->count);
    free(s->hist);
    free(s);
}

bool es_sampler_penalized(const es_sampler_params *p) {
    return p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
}

/* Tokens outside [0, n_vocab) cannot have been sampled and are ignored. */
void es_sampler_accept(es_sampler *s, int32_t token) {
    if (s->p.repeat_last_n == 0 || token < 0 || token >= s->n_vocab) return;
    s->hist[s->hist_head] = token;
    s->hist_head = (s->hist_head + 1) % s->p.repeat_last_n;
    if (s->hist_len < s->p.repeat_last_n) s->hist_len++;
}

void es_sampler_reset(es_sampler *s) {
    s->hist_head = 0;
    s->hist_len = 0;
    es_rng_seed(&s->rng, s->p.seed);
}

double es_sampler_uniform(es_sampler *s) { return es_rng_uniform(&s->rng); }

/* ---- ordering and selection over (value, id) pairs ------------------------------------------------- */

static inline int cand_before(const es_sampler_cand *a, const es_sampler_cand *b) {
    return a->p > b->p || (a->p == b->p && a->id < b->id);
}

static inline void cand_swap(es_sampler_cand *a, es_sampler_cand *b) {
    es_sampler_cand t = *a;
    *a = *b;
    *b = t;
}

/* Median-of-three pivot, then a branchless Lomuto partition of c[lo..hi) (hi - lo >= 3). Returns the
 * pivot's final index s: [lo,s) come before it, (s,hi) after it. When mass != NULL, adds the sum of
 * the values that went to [lo,s) to *mass (it rides on the same pass). */
static size_t cand_partition(es_sampler_cand *c, size_t lo, size_t hi, double *mass) {
    const size_t mid = lo + (hi - lo) / 2;
    if (cand_before(&c[mid], &c[lo])) cand_swap(&c[mid], &c[lo]);
    if (cand_before(&c[hi - 1], &c[lo])) cand_swap(&c[hi - 1], &c[lo]);
    if (cand_before(&c[hi - 1], &c[mid])) cand_swap(&c[hi - 1], &c[mid]);
    cand_swap(&c[mid], &c[hi - 1]);
    const es_sampler_cand pivot = c[hi - 1];
    size_t store = lo;
    double m = 0.0;
    for (size_t i = lo; i < hi - 1; i++) {
        /* Always swap, advance conditionally: no unpredictable branch per element. Elements move as
         * one 64-bit word: c[store] is often re-read right after being written, and a 64-bit load
         * cannot be forwarded from two 32-bit stores (a stall of ~15 cycles per element). */
        uint64_t xw, sw;
        memcpy(&xw, &c[i], sizeof xw);
        memcpy(&sw, &c[store], sizeof sw);
        const es_sampler_cand x = c[i];
        const int b = cand_before(&x, &pivot);
        memcpy(&c[i], &sw, sizeof sw);
        memcpy(&c[store], &xw, sizeof xw);
        store += (size_t)b;
        m += b ? (double)x.p : 0.0;
    }
    cand_swap(&c[store], &c[hi - 1]);
    if (mass) *mass += m;
    return store;
}

static void cand_insertion_sort(es_sampler_cand *c, size_t n) {
    for (size_t i = 1; i < n; i++) {
        const es_sampler_cand x = c[i];
        size_t j = i;
        for (; j > 0 && cand_before(&x, &c[j - 1]); j--) c[j] = c[j - 1];
        c[j] = x;
    }
}

static void heap_sift_down(es_sampler_cand *c, size_t k, size_t i);

void es_cand_heap_sort(es_sampler_cand *c, size_t n) {
    for (size_t i = n / 2; i-- > 0;) heap_sift_down(c, n, i);
    for (size_t k = n; k > 1; k--) {
        cand_swap(&c[0], &c[k - 1]);  /* the root is the last in order among c[0..k) */
        heap_sift_down(c, k - 1, 0);
    }
}

/* Introsort of c[0..n) by cand_before: quicksort, insertion sort below 16, heap sort when the depth
 * budget runs out. Recurses on the smaller side only, so the stack is O(log n). */
static void cand_sort_depth(es_sampler_cand *c, size_t n, int depth) {
    while (n > 16) {
        if (depth-- == 0) {
            es_cand_heap_sort(c, n);
            return;
        }
        const size_t s = cand_partition(c, 0, n, NULL);
        if (s < n - s - 1) {
            cand_sort_depth(c, s, depth);
            c += s + 1;
            n -= s + 1;
        } else {
            cand_sort_depth(c + s + 1, n - s - 1, depth);
            n = s;
        }
    }
    cand_insertion_sort(c, n);
}

static int depth_budget(size_t n) {
    int d = 8;
    for (; n > 1; n >>= 1) d += 2;
    return d;
}

void es_cand_sort(es_sampler_cand *c, size_t n) { cand_sort_depth(c, n, depth_budget(n)); }

/* Quickselect; after 2*log2(n)+8 rounds without converging (adversarial input) it sorts what is
 * left, so the worst case is O(n log n). Expected O(n).
 * Invariant: everything in [0,lo) comes before everything in [lo,n), and [lo,hi) before [hi,n). */
void es_cand_select(es_sampler_cand *c, size_t n, size_t k) {
    size_t lo = 0, hi = n;
    int budget = depth_budget(n);
    if (k == 0 || k >= n) return;
    while (lo < k && k < hi) {
        if (hi - lo <= 16 || budget-- == 0) {
            es_cand_sort(c + lo, hi - lo);
            return;
        }
        const size_t s = cand_partition(c, lo, hi, NULL);
        if (s < k) lo = s + 1;
        else hi = s;
    }
}

/* Step 6's selection: rearranges c[0..n) (unnormalised probabilities) so that c[0..L) is the shortest
 * prefix, in cand_before order, whose mass reaches `target`, and returns L (>= 1; n when even all of
 * it falls short through rounding). Like quickselect, but each partition also sums the mass that went
 * left, which tells which side the boundary is on, so nothing is sorted except ranges of <= 16 (or
 * what is left after an adversarial run of bad pivots). c[0..L) is in no particular order. */
static size_t top_p_select(es_sampler_cand *c, size_t n, double target) {
    size_t lo = 0, hi = n;
    double acc = 0.0;  /* mass of c[0..lo), every element of which comes before c[lo..n) */
    int budget = depth_budget(n);
    while (hi - lo > 16 && budget-- > 0) {
        double left = 0.0;
        const size_t s = cand_partition(c, lo, hi, &left);
        if (acc + left >= target) {
            hi = s;  /* the prefix ends strictly before the pivot */
        } else if (acc + left + c[s].p >= target) {
            return s + 1;
        } else {
            acc += left + c[s].p;
            lo = s + 1;
        }
    }
    es_cand_sort(c + lo, hi - lo);
    for (size_t i = lo; i < hi; i++) {
        acc += c[i].p;
        if (acc >= target) return i + 1;
    }
    return hi;  /* the partition sums said [0,hi) reaches the target; the re-summation fell short by
                 * rounding */
}

/* Restores the heap property below node i of a heap c[0..k) whose root is the element that comes
 * last under cand_before (the weakest of the kept top-k). */
static void heap_sift_down(es_sampler_cand *c, size_t k, size_t i) {
    for (;;) {
        size_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < k && cand_before(&c[worst], &c[l])) worst = l;
        if (r < k && cand_before(&c[worst], &c[r])) worst = r;
        if (worst == i) return;
        cand_swap(&c[i], &c[worst]);
        i = worst;
    }
}

/* Same contract as es_cand_select. For small k, a heap of the k best seen so far in c[0..k): in a
 * realistic (unsorted) vocabulary almost every element loses one predictable comparison with the
 * root, so this is one cheap pass. Elements are swapped, never overwritten, so when an adversarial
 * order (e.g. ascending logits) makes too many of them enter the heap, quickselect takes over. */
static void top_k_select(es_sampler_cand *c, size_t n, size_t k) {
    if (k > 4096 || k > n / 16) {
        es_cand_select(c, n, k);
        return;
    }
    for (size_t i = k / 2; i-- > 0;) heap_sift_down(c, k, i);
    size_t budget = n / 8 + 4 * k;
    for (size_t i = k; i < n; i++) {
        if (!cand_before(&c[i], &c[0])) continue;
        if (budget-- == 0) {
            es_cand_select(c, n, k);
            return;
        }
        cand_swap(&c[i], &c[0]);
        heap_sift_down(c, k, 0);
    }
}

/* ---- the pipeline ---------------------------------------------------------------------------------- */

/* Step 1 on one value: NaN -> -inf, +inf -> FLT_MAX. */
static inline float sanitise(float x) {
    if (x != x) return -INFINITY;
    return x > FLT_MAX ? FLT_MAX : x;
}

static inline bool penalty_active(const es_sampler *s) {
    return es_sampler_penalized(&s->p) && s->hist_len > 0;
}

/* Whether the logits are changed before temperature (bias or penalty): the raw-argmax shortcut is off. */
static inline bool adjust_active(const es_sampler *s) { return s->p.n_bias > 0 || penalty_active(s) || s->mask; }

/* Steps 1-2: cand[i] = {sanitised, biased, penalised logit i, i} for every token. Returns the largest
 * value (-inf when no token has a finite one). */
static float prepare_logits(es_sampler *s, const float *logits) {
    es_sampler_cand *c = s->cand;
    const int n = s->n_vocab;
    float vmax = -INFINITY;
    for (int i = 0; i < n; i++) {
        const float x = sanitise(logits[i]);
        c[i].p = x;
        c[i].id = i;
        vmax = x > vmax ? x : vmax;
    }
    if (!adjust_active(s)) return vmax;
    if (s->mask) /* step 1c: a grammar's disallowed tokens can never be drawn */
        for (int i = 0; i < n; i++)
            if (!((s->mask[i >> 6] >> (i & 63)) & 1u)) c[i].p = -INFINITY;
    for (int j = 0; j < s->p.n_bias; j++) { /* ids checked at init; -inf stays -inf */
        es_sampler_cand *b = &c[s->p.bias[j].id];
        b->p = sanitise(b->p + s->p.bias[j].bias);
    }
    if (penalty_active(s)) { /* llama.cpp's order: repetition, then frequency and presence */
        const float pen = s->p.repeat_penalty, freq = s->p.frequency_penalty, pres = s->p.presence_penalty;
        for (int j = 0; j < s->hist_len; j++) s->count[s->hist[j]]++;
        for (int j = 0; j < s->hist_len; j++) {
            const int32_t t = s->hist[j];
            const uint32_t k = s->count[t];
            if (k == 0) continue; /* done at its first occurrence */
            s->count[t] = 0;
            float x = c[t].p;
            if (pen != 1.0f) x = x > 0.0f ? x / pen : x * pen;
            c[t].p = sanitise(x - ((float)k * freq + pres));
        }
    }
    /* A biased or penalised token may have been the max (or have become it): rescan. */
    vmax = -INFINITY;
    for (int i = 0; i < n; i++) vmax = c[i].p > vmax ? c[i].p : vmax;
    return vmax;
}

/* Sum of c[0..n).p in double, four accumulators (no single loop-carried add chain). */
static double sum_p(const es_sampler_cand *c, size_t n) {
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += c[i].p;
        a1 += c[i + 1].p;
        a2 += c[i + 2].p;
        a3 += c[i + 3].p;
    }
    for (; i < n; i++) a0 += c[i].p;
    return (a0 + a1) + (a2 + a3);
}

/* Greedy without penalties, straight from the raw logits (one read-only pass). Same result as
 * prepare_logits + cand_argmax: sanitised values, ties -> lowest id, all -inf/NaN -> 0. */
static int32_t argmax_raw(const float *logits, int n) {
    float best = -INFINITY;
    int32_t id = 0;
    for (int i = 0; i < n; i++) {
        const float x = sanitise(logits[i]);
        if (x > best) {
            best = x;
            id = i;
        }
    }
    return id;
}

/* Leaves a one-hot at token `id` in cand[0]. */
static int one_hot(es_sampler *s, int32_t id) {
    s->cand[0].p = 1.0f;
    s->cand[0].id = id;
    s->q_sum = 1.0;
    return 1;
}

/* Float exponent field (0..127 for e in [0, 1]): bucket b >= 1 holds e in [2^(b-127), 2^(b-126)),
 * bucket 0 holds zero and subnormals. */
static inline unsigned exp_bucket(float e) {
    uint32_t bits;
    memcpy(&bits, &e, sizeof bits);
    return (bits >> 23) & 0xff;
}

int es_sampler_dist(es_sampler *s, const float *logits, const es_sampler_cand **out) {
    es_sampler_cand *c = s->cand;
    *out = c;
    const es_sampler_params *p = &s->p;
    size_t n = (size_t)s->n_vocab;

    if (p->temperature == 0.0f || p->top_k == 1) {
        if (!adjust_active(s)) return one_hot(s, argmax_raw(logits, s->n_vocab));
        prepare_logits(s, logits);
        size_t best = 0;  /* ties -> lowest id: only a strictly larger value moves it */
        for (size_t i = 1; i < n; i++)
            if (c[i].p > c[best].p) best = i;
        if (c[best].p == -INFINITY) return one_hot(s, first_allowed(s)); /* all -inf: token 0 or the first allowed */
        return one_hot(s, c[best].id);
    }
    const float vmax = prepare_logits(s, logits);
    if (vmax == -INFINITY) return one_hot(s, first_allowed(s));

    /* Step 4: top-k (values are still logits; the order is the same after softmax). The max is in. */
    if (p->top_k > 0 && (size_t)p->top_k < n) {
        top_k_select(c, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
    }

    const float t = p->temperature;
    const bool top_p_on = p->top_p < 1.0f;
    /* Min-p alone needs no total over every token, so tokens certainly below its threshold are
     * dropped before exponentiating: expf(z) >= min_p needs z >= ln(min_p), and the 0.01 margin
     * dwarfs expf's and logf's rounding. The exact test follows below. */
    if (!top_p_on && p->min_p > 0.0f) {
        const float zmin = logf(p->min_p) - 0.01f;
        size_t keep = 0;
        for (size_t i = 0; i < n; i++) {
            /* Branchless in-place compaction (keep <= i); the dropped are not needed again. */
            const es_sampler_cand x = c[i];
            c[keep] = x;
            keep += (size_t)((x.p - vmax) / t >= zmin);
        }
        n = keep;  /* >= 1: the max has z = 0 */
    }

    /* Step 5: unnormalised softmax; the max maps to exactly 1, the others into [0, 1]. (-FLT_MAX -
     * FLT_MAX overflows to -inf, whose exp is 0, so no NaN can arise.) When top-p is on, also a
     * histogram of the mass by binary exponent, used below to discard most tokens before selecting. */
    double *mass = s->mass;
    double total = 0.0;
    if (top_p_on) {
        memset(s->mass, 0, sizeof s->mass);
        for (size_t i = 0; i < n; i++) {
            const float e = expf((c[i].p - vmax) / t);
            c[i].p = e;
            mass[exp_bucket(e)] += e;
        }
        for (int b = 255; b >= 0; b--) total += mass[b];
    } else {
        for (size_t i = 0; i < n; i++) c[i].p = expf((c[i].p - vmax) / t);
        total = sum_p(c, n);
    }

    /* Steps 6-7. Both keep a prefix of one order (p descending, ids ascending), so the result is the
     * shorter prefix. First discard, with one partition pass, tokens that cannot survive either:
     * min-p's (p < min_p * p_max is e < min_p, since p_max's e is 1), and top-p's: if the tokens with
     * e >= 2^(b-127) already hold the target mass, no token below that bound is in top-p's prefix.
     * Then top-p selects among what is left, measuring mass against the full total. */
    const double target = (double)p->top_p * total;
    float thr = p->min_p;
    if (top_p_on) {
        double cum = 0.0;
        for (int b = 255; b >= 1; b--) {
            cum += mass[b];
            if (cum >= target) {
                const float lb = ldexpf(1.0f, b - 127);
                if (lb > thr) thr = lb;
                break;
            }
        }
    }
    const size_t n_soft = n;
    if (thr > 0.0f) {
        size_t keep = 0;
        for (size_t i = 0; i < n; i++) {
            const es_sampler_cand x = c[i];
            c[keep] = x;
            keep += (size_t)(x.p >= thr);
        }
        n = keep;  /* >= 1: the max has e = 1 >= thr (min_p <= 1, and lb <= 1 as e <= 1) */
    }
    if (top_p_on) n = top_p_select(c, n, target);

    /* Step 8; q_sum is what the inverse CDF in es_sampler_sample scales its uniform by. */
    const double kept = n == n_soft ? total : sum_p(c, n);
    const double inv = 1.0 / kept;  /* kept >= 1: the max is always kept */
    for (size_t i = 0; i < n; i++) c[i].p = (float)(c[i].p * inv);
    s->q_sum = sum_p(c, n);
    return (int)n;
}

void es_sampler_probs(es_sampler *s, const float *logits, float *probs) {
    const es_sampler_cand *c;
    const int n = es_sampler_dist(s, logits, &c);
    memset(probs, 0, (size_t)s->n_vocab * sizeof *probs);
    for (int i = 0; i < n; i++) probs[c[i].id] = c[i].p;
}

int32_t es_sampler_sample(es_sampler *s, const float *logits) {
    const es_sampler_cand *c;
    const int n = es_sampler_dist(s, logits, &c);
    if (s->p.temperature == 0.0f) return c[0].id;
    /* Inverse CDF over the stored (float) probabilities, the exact values es_sampler_probs returns;
     * scaling u by their sum makes the draw exact even though the floats sum to 1 only within rounding. */
    const double r = es_rng_uniform(&s->rng) * s->q_sum;
    double cum = 0.0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (c[i].p <= 0.0f) continue;
        cum += c[i].p;
        last = i;
        if (r < cum) return c[i].id;
    }
    return c[last].id;
}

int32_t es_sample_dense(const float *probs, int n, double u) {
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        if (probs[i] > 0.0f) sum += probs[i];
    if (!(sum > 0.0)) return 0;
    const double r = u * sum;
    double cum = 0.0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (!(probs[i] > 0.0f)) continue;
        cum += probs[i];
        last = i;
        if (r < cum) return i;
    }
    return last;
}

void es_sampler_copy_state(es_sampler *dst, const es_sampler *src) {
    dst->rng = src->rng;
    const int cap = src->p.repeat_last_n < dst->p.repeat_last_n ? src->p.repeat_last_n : dst->p.repeat_last_n;
    if (cap > 0 && src->hist && dst->hist) memcpy(dst->hist, src->hist, (size_t)cap * sizeof(int32_t));
    dst->hist_head = src->hist_head;
    dst->hist_len = src->hist_len;
}
