/* test_sampler.c — the sampler against a straightforward double-precision reference (full sorts, no
 * partial selection), plus the properties speculative decoding relies on: es_sampler_sample draws
 * from exactly the distribution es_sampler_probs returns, and the stream is reproducible by seed. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgespec.h"
#include "sample/sampler.h"
#include "testutil.h"
#include "util/rng.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static es_sampler_params plain(float temperature, uint64_t seed) {
    es_sampler_params p = es_sampler_default_params();
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.seed = seed;
    return p;
}

static es_sampler *make(const es_sampler_params *p, int n_vocab) {
    es_sampler *s = NULL;
    es_err err_ = {{0}}, *err = &err_;
    CHECK_OK(es_sampler_init(p, n_vocab, &s, err), err);
    return s;
}

static void random_logits(es_rng *r, float *l, int n, double scale) {
    for (int i = 0; i < n; i++) l[i] = (float)(scale * es_rng_normal(r));
}

/* ---- reference ------------------------------------------------------------------------------------ */

typedef struct { double v; int id; } ref_item;

static int ref_cmp(const void *x, const void *y) {
    const ref_item *a = x, *b = y;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->id - b->id;
}

/* The documented pipeline, done the obvious way. hist: the penalty window (duplicates allowed). */
static void ref_probs(const float *logits, int n, const es_sampler_params *p, const int32_t *hist, int n_hist,
                      double *out) {
    ref_item *it = malloc((size_t)n * sizeof *it);
    float *l = malloc((size_t)n * sizeof *l);
    for (int i = 0; i < n; i++) {
        float x = logits[i];
        if (isnan(x)) x = -INFINITY;
        if (x == INFINITY) x = FLT_MAX;
        l[i] = x;
    }
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < n_hist; j++) seen |= hist[j] == i;
        if (seen && p->repeat_penalty != 1.0f) {
            float x = l[i] > 0 ? l[i] / p->repeat_penalty : l[i] * p->repeat_penalty;
            l[i] = x == INFINITY ? FLT_MAX : x;
        }
    }
    for (int i = 0; i < n; i++) out[i] = 0.0;
    for (int i = 0; i < n; i++) it[i] = (ref_item){l[i], i};
    qsort(it, (size_t)n, sizeof *it, ref_cmp);
    if (it[0].v == -INFINITY) { out[0] = 1.0; goto done; }
    if (p->temperature == 0.0f) { out[it[0].id] = 1.0; goto done; }
    int m = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    double vmax = it[0].v, total = 0.0;
    for (int i = 0; i < m; i++) {
        it[i].v = exp((it[i].v - vmax) / (double)p->temperature);
        total += it[i].v;
    }
    qsort(it, (size_t)m, sizeof *it, ref_cmp);
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        int k = 0;
        while (k < m) {
            cum += it[k++].v;
            if (cum >= (double)p->top_p * total) break;
        }
        m = k;
    }
    int k = 0;
    while (k < m && it[k].v >= (double)p->min_p) k++;
    m = k;
    double kept = 0.0;
    for (int i = 0; i < m; i++) kept += it[i].v;
    for (int i = 0; i < m; i++) out[it[i].id] = it[i].v / kept;
done:
    free(it);
    free(l);
}

/* Checks probs against the reference: same support, values within tol, sum 1. */
static void check_against_ref(const char *what, const float *probs, const double *ref, int n, double tol) {
    double sum = 0.0, maxdiff = 0.0;
    int support_bad = 0;
    for (int i = 0; i < n; i++) {
        sum += probs[i];
        if ((ref[i] == 0.0) != (probs[i] == 0.0f) && (ref[i] > 1e-30 || probs[i] > 1e-30f)) support_bad++;
        double d = fabs(probs[i] - ref[i]);
        if (d > maxdiff) maxdiff = d;
    }
    CHECK_MSG(fabs(sum - 1.0) < 1e-5, "%s: sum %.9f", what, sum);
    CHECK_MSG(support_bad == 0, "%s: %d tokens differ in support", what, support_bad);
    CHECK_MSG(maxdiff < tol, "%s: max |p - ref| = %g", what, maxdiff);
}

/* ---- tests ---------------------------------------------------------------------------------------- */

static void test_greedy(void) {
    float l[10] = {0.5f, 1.0f, -2.0f, 3.0f, 0.0f, 2.9f, 1.0f, 3.0f, -1.0f, 0.0f};
    es_sampler_params p = plain(0.0f, 1);
    p.top_k = 3;  /* ignored when greedy */
    p.top_p = 0.5f;
    es_sampler *s = make(&p, 10);
    es_sampler *ref = make(&p, 10);
    CHECK(es_sampler_sample(s, l) == 3);  /* 3 and 7 tie: lowest id */
    float probs[10];
    es_sampler_probs(s, l, probs);
    for (int i = 0; i < 10; i++) CHECK(probs[i] == (i == 3 ? 1.0f : 0.0f));
    /* Greedy sampling consumes no randomness. */
    for (int i = 0; i < 5; i++) es_sampler_sample(s, l);
    CHECK(es_sampler_uniform(s) == es_sampler_uniform(ref));
    es_sampler_free(s);
    es_sampler_free(ref);

    /* top_k = 1 at any temperature is greedy, on random vocabularies. */
    es_rng r;
    es_rng_seed(&r, 7);
    float big[1000];
    p = plain(1.5f, 3);
    p.top_k = 1;
    s = make(&p, 1000);
    int agree = 0;
    for (int t = 0; t < 50; t++) {
        random_logits(&r, big, 1000, 2.0);
        int am = 0;
        for (int i = 1; i < 1000; i++)
            if (big[i] > big[am]) am = i;
        agree += es_sampler_sample(s, big) == am;
    }
    CHECK(agree == 50);
    es_sampler_free(s);
}

static void test_seeds(void) {
    es_rng r;
    es_rng_seed(&r, 11);
    float l[50];
    random_logits(&r, l, 50, 1.0);
    es_sampler_params p = plain(1.0f, 1234);
    es_sampler *a = make(&p, 50), *b = make(&p, 50);
    p.seed = 1235;
    es_sampler *c = make(&p, 50);
    int same_ab = 0, same_ac = 0;
    for (int i = 0; i < 1000; i++) {
        int32_t ta = es_sampler_sample(a, l), tb = es_sampler_sample(b, l), tc = es_sampler_sample(c, l);
        same_ab += ta == tb;
        same_ac += ta == tc;
        CHECK(ta >= 0 && ta < 50);
    }
    CHECK(same_ab == 1000);
    CHECK(same_ac < 1000);
    /* es_sampler_uniform continues the same stream: interleaving stays reproducible. */
    CHECK(es_sampler_uniform(a) == es_sampler_uniform(b));
    double u = es_sampler_uniform(a);
    CHECK(u >= 0.0 && u < 1.0);
    (void)es_sampler_uniform(b);

    /* The stream is es_rng seeded with params.seed, and one sample at T > 0 takes one uniform. */
    es_rng mirror;
    es_rng_seed(&mirror, 77);
    p.seed = 77;
    es_sampler *m = make(&p, 50);
    CHECK(es_sampler_uniform(m) == es_rng_uniform(&mirror));
    (void)es_sampler_sample(m, l);
    (void)es_rng_uniform(&mirror);
    CHECK(es_sampler_uniform(m) == es_rng_uniform(&mirror));
    es_sampler_free(m);

    /* Reset = a fresh sampler: history cleared and the stream reseeded. */
    p.seed = 1234;
    es_sampler *fresh = make(&p, 50);
    es_sampler_accept(a, 3);
    es_sampler_reset(a);
    int same = 0;
    for (int i = 0; i < 200; i++) same += es_sampler_sample(a, l) == es_sampler_sample(fresh, l);
    CHECK(same == 200);
    es_sampler_free(a);
    es_sampler_free(b);
    es_sampler_free(c);
    es_sampler_free(fresh);
}

static void test_temperature_softmax(void) {
    es_rng r;
    es_rng_seed(&r, 5);
    const int n = 300;
    float l[300], probs[300];
    double ref[300];
    const float temps[] = {0.25f, 0.7f, 1.0f, 1.6f};
    for (int k = 0; k < 4; k++) {
        random_logits(&r, l, n, 3.0);
        es_sampler_params p = plain(temps[k], 9);
        es_sampler *s = make(&p, n);
        es_sampler_probs(s, l, probs);
        /* softmax(l / T) computed directly in double */
        double mx = -INFINITY, z = 0.0, maxrel = 0.0;
        for (int i = 0; i < n; i++) mx = l[i] > mx ? l[i] : mx; /* not fmax: GCC 12 aarch64 ICEs vectorising it */
        for (int i = 0; i < n; i++) z += (ref[i] = exp(((double)l[i] - mx) / temps[k]));
        for (int i = 0; i < n; i++) {
            ref[i] /= z;
            if (ref[i] > 1e-12) maxrel = fmax(maxrel, fabs(probs[i] - ref[i]) / ref[i]);
        }
        CHECK_MSG(maxrel < 1e-5, "T=%g: max relative error %g", (double)temps[k], maxrel);
        check_against_ref("plain temperature", probs, ref, n, 1e-6);
        es_sampler_free(s);
    }
}

/* Filters: support and values against the reference on random logits, many parameter combos. */
static void test_filters(void) {
    es_rng r;
    es_rng_seed(&r, 21);
    const int n = 500;
    float l[500], probs[500];
    double ref[500];
    const int ks[] = {0, 1, 2, 5, 40, 499, 500, 1000};
    const float ps[] = {1.0f, 0.95f, 0.5f, 0.1f, 1e-6f};
    const float mps[] = {0.0f, 0.05f, 0.3f, 1.0f};
    int combos = 0;
    for (size_t a = 0; a < sizeof ks / sizeof *ks; a++)
        for (size_t b = 0; b < sizeof ps / sizeof *ps; b++)
            for (size_t c = 0; c < sizeof mps / sizeof *mps; c++) {
                random_logits(&r, l, n, 2.0);
                es_sampler_params p = plain(0.9f, 2);
                p.top_k = ks[a];
                p.top_p = ps[b];
                p.min_p = mps[c];
                es_sampler *s = make(&p, n);
                es_sampler_probs(s, l, probs);
                ref_probs(l, n, &p, NULL, 0, ref);
                char what[96];
                snprintf(what, sizeof what, "top_k=%d top_p=%g min_p=%g", p.top_k, (double)p.top_p, (double)p.min_p);
                check_against_ref(what, probs, ref, n, 1e-5);
                int nz = 0;
                for (int i = 0; i < n; i++) nz += probs[i] > 0.0f;
                CHECK(nz >= 1);
                if (p.top_k > 0) CHECK_MSG(nz <= p.top_k, "%s: %d nonzero", what, nz);
                /* The sparse view agrees with the dense one. */
                const es_sampler_cand *cd;
                int m = es_sampler_dist(s, l, &cd);
                int agree = 1;
                for (int i = 0; i < m; i++) agree &= probs[cd[i].id] == cd[i].p;
                CHECK(agree && m >= nz);
                es_sampler_free(s);
                combos++;
            }
    CHECK(combos == 160);

    /* Many small vocabularies just above the sort cutoff of 16, so that top-p's boundary often falls
     * exactly on a partition pivot. */
    int bad = 0;
    for (int trial = 0; trial < 3000; trial++) {
        const int m = 17 + (int)(es_rng_next(&r) % 48);
        random_logits(&r, l, m, 1.5);
        es_sampler_params p = plain(1.0f, 2);
        p.top_p = (float)(0.05 + 0.9 * es_rng_uniform(&r));
        p.min_p = trial % 3 == 0 ? 0.02f : 0.0f;
        es_sampler *s = make(&p, m);
        es_sampler_probs(s, l, probs);
        ref_probs(l, m, &p, NULL, 0, ref);
        for (int i = 0; i < m; i++) bad += fabs(probs[i] - ref[i]) > 1e-5;
        es_sampler_free(s);
    }
    CHECK_MSG(bad == 0, "small vocabularies: %d probabilities differ from the reference", bad);

    /* Hand-checked case: logits ln(0.4), ln(0.3), ln(0.2), ln(0.1) at T = 1. */
    float q[4] = {logf(0.1f), logf(0.4f), logf(0.2f), logf(0.3f)};
    es_sampler_params p = plain(1.0f, 1);
    p.top_p = 0.65f;  /* 0.4 + 0.3 = 0.7 >= 0.65: keeps ids 1 and 3 */
    es_sampler *s = make(&p, 4);
    float pr[4];
    es_sampler_probs(s, q, pr);
    CHECK(pr[0] == 0.0f && pr[2] == 0.0f);
    CHECK(fabsf(pr[1] - 4.0f / 7.0f) < 1e-6f && fabsf(pr[3] - 3.0f / 7.0f) < 1e-6f);
    es_sampler_free(s);
    p = plain(1.0f, 1);
    p.min_p = 0.45f;  /* keeps p >= 0.18: ids 1, 2, 3 */
    s = make(&p, 4);
    es_sampler_probs(s, q, pr);
    CHECK(pr[0] == 0.0f && fabsf(pr[1] - 4.0f / 9.0f) < 1e-6f && fabsf(pr[2] - 2.0f / 9.0f) < 1e-6f && fabsf(pr[3] - 3.0f / 9.0f) < 1e-6f);
    es_sampler_free(s);
}

static void test_penalty(void) {
    /* Token 0 positive, token 1 negative, both in the window; token 2 untouched. */
    float l[5] = {2.0f, -1.0f, 1.0f, 0.5f, 0.0f};
    es_sampler_params p = plain(1.0f, 4);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 3;
    es_sampler *s = make(&p, 5);
    float probs[5];
    double ref[5];
    es_sampler_accept(s, 0);
    es_sampler_accept(s, 1);
    es_sampler_accept(s, 0);  /* duplicates count once */
    es_sampler_accept(s, -1); /* out of range: ignored */
    es_sampler_accept(s, 99);
    es_sampler_probs(s, l, probs);
    /* Expected logits: {1, -2, 1, 0.5, 0} */
    double e[5] = {exp(1.0), exp(-2.0), exp(1.0), exp(0.5), exp(0.0)}, z = 0.0;
    for (int i = 0; i < 5; i++) z += e[i];
    double maxd = 0.0;
    for (int i = 0; i < 5; i++) maxd = fmax(maxd, fabs(probs[i] - e[i] / z));
    CHECK_MSG(maxd < 1e-6, "penalised probs off by %g", maxd);
    int32_t hist[3] = {0, 1, 0};
    ref_probs(l, 5, &p, hist, 3, ref);
    check_against_ref("penalty", probs, ref, 5, 1e-6);

    /* The window slides: after 3 accepts of token 3 only token 3 is penalised (0.5 -> 0.25). */
    es_sampler_accept(s, 3);
    es_sampler_accept(s, 3);
    es_sampler_accept(s, 3);
    es_sampler_probs(s, l, probs);
    int32_t hist2[1] = {3};
    ref_probs(l, 5, &p, hist2, 1, ref);
    check_against_ref("penalty window", probs, ref, 5, 1e-6);
    CHECK(probs[0] > probs[2]);  /* token 0 no longer penalised */

    /* Greedy honours the penalty: token 0 wins until it is accepted, then drops from 2 to 0.5 and
     * token 2 wins. */
    p.temperature = 0.0f;
    p.repeat_penalty = 4.0f;
    es_sampler *g = make(&p, 5);
    CHECK(es_sampler_sample(g, l) == 0);
    es_sampler_accept(g, 0);
    CHECK(es_sampler_sample(g, l) == 2);
    es_sampler_reset(g);  /* history cleared */
    CHECK(es_sampler_sample(g, l) == 0);
    es_sampler_free(g);

    /* repeat_last_n = 0 disables the penalty whatever its value. */
    p = plain(1.0f, 4);
    p.repeat_penalty = 3.0f;
    p.repeat_last_n = 0;
    es_sampler *off = make(&p, 5);
    es_sampler_accept(off, 0);
    es_sampler_probs(off, l, probs);
    ref_probs(l, 5, &p, NULL, 0, ref);
    check_against_ref("penalty off", probs, ref, 5, 1e-6);
    es_sampler_free(off);
    es_sampler_free(s);
}

/* 200k draws on 16 tokens: total variation between the empirical histogram and es_sampler_probs. */
static void test_empirical(void) {
    const int n = 16, draws = 200000;
    es_rng r;
    es_rng_seed(&r, 99);
    float l[16], probs[16];
    struct { float t; int k; float tp, mp, pen; } combos[] = {
        {1.0f, 0, 1.0f, 0.0f, 1.0f},
        {0.7f, 5, 1.0f, 0.0f, 1.0f},
        {1.3f, 0, 0.8f, 0.0f, 1.0f},
        {1.0f, 10, 0.9f, 0.1f, 1.3f},
        {2.0f, 12, 0.97f, 0.02f, 0.8f},
    };
    for (size_t c = 0; c < sizeof combos / sizeof *combos; c++) {
        random_logits(&r, l, n, 1.2);
        es_sampler_params p = plain(combos[c].t, 1000 + c);
        p.top_k = combos[c].k;
        p.top_p = combos[c].tp;
        p.min_p = combos[c].mp;
        p.repeat_penalty = combos[c].pen;
        es_sampler *s = make(&p, n);
        es_sampler_accept(s, 2);
        es_sampler_accept(s, 7);
        es_sampler_probs(s, l, probs);
        long hist[16] = {0};
        for (int i = 0; i < draws; i++) {
            int32_t t = es_sampler_sample(s, l);
            if (t >= 0 && t < n) hist[t]++;
        }
        double tv = 0.0;
        int outside = 0;
        for (int i = 0; i < n; i++) {
            tv += fabs((double)hist[i] / draws - probs[i]);
            outside += probs[i] == 0.0f && hist[i] > 0;
        }
        tv *= 0.5;
        CHECK_MSG(tv < 0.01, "combo %zu: total variation %g", c, tv);
        CHECK_MSG(outside == 0, "combo %zu: %d tokens drawn outside the support", c, outside);
        printf("empirical combo %zu: TV %.4f\n", c, tv);
        es_sampler_free(s);
    }
}

static void test_invalid(void) {
    es_err err;
    es_sampler *s = (es_sampler *)&err;  /* must be overwritten with NULL */
    es_sampler_params good = es_sampler_default_params();
    es_err *errp = &err;
    CHECK_OK(es_sampler_init(&good, 10, &s, errp), errp);
    es_sampler_free(s);

    struct { const char *what; es_sampler_params p; int n_vocab; } bad[16];
    int nb = 0;
#define BAD(field, value)                                                      \
    do {                                                                       \
        bad[nb].what = #field "=" #value;                                      \
        bad[nb].p = good;                                                      \
        bad[nb].p.field = value;                                               \
        bad[nb++].n_vocab = 10;                                                \
    } while (0)
    BAD(temperature, -0.1f);
    BAD(temperature, NAN);
    BAD(temperature, INFINITY);
    BAD(top_k, -1);
    BAD(top_p, 0.0f);
    BAD(top_p, 1.01f);
    BAD(top_p, NAN);
    BAD(min_p, -0.01f);
    BAD(min_p, 1.5f);
    BAD(min_p, NAN);
    BAD(repeat_penalty, 0.0f);
    BAD(repeat_penalty, -1.0f);
    BAD(repeat_penalty, INFINITY);
    BAD(repeat_last_n, -1);
#undef BAD
    bad[nb].what = "n_vocab=0";
    bad[nb].p = good;
    bad[nb++].n_vocab = 0;
    for (int i = 0; i < nb; i++) {
        s = (es_sampler *)&err;
        err.msg[0] = 0;
        es_status st = es_sampler_init(&bad[i].p, bad[i].n_vocab, &s, &err);
        CHECK_MSG(st == ES_ERR_INVALID_ARG, "%s accepted", bad[i].what);
        CHECK_MSG(s == NULL, "%s: out not cleared", bad[i].what);
        CHECK_MSG(strncmp(err.msg, "sampler: ", 9) == 0, "%s: message '%s'", bad[i].what, err.msg);
    }
    CHECK(es_sampler_init(NULL, 10, &s, &err) == ES_ERR_INVALID_ARG);
    CHECK(es_sampler_init(&good, 10, NULL, NULL) == ES_ERR_INVALID_ARG);
    /* Edges that are valid. */
    es_sampler_params edge = good;
    edge.top_p = 1.0f;
    edge.min_p = 1.0f;
    edge.temperature = 0.0f;
    edge.repeat_last_n = 0;
    edge.top_k = 1000000;
    CHECK_OK(es_sampler_init(&edge, 1, &s, errp), errp);
    float one = 3.0f;
    CHECK(es_sampler_sample(s, &one) == 0);
    es_sampler_free(s);
}

static void test_nonfinite(void) {
    const int n = 8;
    float probs[8];
    double ref[8];
    const float temps[] = {0.0f, 0.5f, 1.0f};
    for (int t = 0; t < 3; t++) {
        es_sampler_params p = plain(temps[t], 1);
        p.top_p = 0.9f;
        p.min_p = 0.01f;
        es_sampler *s = make(&p, n);

        float some_nan[8] = {NAN, 1.0f, NAN, 2.0f, -INFINITY, 0.5f, NAN, 1.5f};
        es_sampler_probs(s, some_nan, probs);
        ref_probs(some_nan, n, &p, NULL, 0, ref);
        check_against_ref("some NaN", probs, ref, n, 1e-6);
        CHECK(probs[0] == 0.0f && probs[2] == 0.0f && probs[6] == 0.0f && probs[4] == 0.0f);
        for (int i = 0; i < 100; i++) {
            int32_t tok = es_sampler_sample(s, some_nan);
            CHECK(tok == 1 || tok == 3 || tok == 5 || tok == 7);
        }

        float all_nan[8], all_ninf[8];
        for (int i = 0; i < n; i++) all_nan[i] = NAN, all_ninf[i] = -INFINITY;
        es_sampler_probs(s, all_nan, probs);
        CHECK(probs[0] == 1.0f);
        CHECK(es_sampler_sample(s, all_nan) == 0);
        es_sampler_probs(s, all_ninf, probs);
        CHECK(probs[0] == 1.0f);
        CHECK(es_sampler_sample(s, all_ninf) == 0);

        /* +inf dominates: all the mass on the +inf tokens. */
        float pinf[8] = {1.0f, INFINITY, 3.0f, NAN, 0.0f, 1e30f, -1e30f, 2.0f};
        es_sampler_probs(s, pinf, probs);
        CHECK_MSG(probs[1] == 1.0f, "T=%g: p[+inf] = %g", (double)temps[t], (double)probs[1]);
        CHECK(es_sampler_sample(s, pinf) == 1);
        float two_inf[8] = {1.0f, INFINITY, 3.0f, NAN, INFINITY, 1e30f, -1e30f, 2.0f};
        es_sampler_probs(s, two_inf, probs);
        if (temps[t] == 0.0f) CHECK(probs[1] == 1.0f);
        else CHECK(fabsf(probs[1] - 0.5f) < 1e-6f && fabsf(probs[4] - 0.5f) < 1e-6f);
        es_sampler_free(s);
    }
    /* A tiny temperature stays finite (no overflow to NaN). */
    es_sampler_params p = plain(1e-30f, 1);
    es_sampler *s = make(&p, n);
    float l[8] = {-5.0f, -1.0f, -3.0f, -1.0f, -2.0f, -9.0f, -4.0f, -8.0f};
    es_sampler_probs(s, l, probs);
    CHECK(probs[1] == 0.5f && probs[3] == 0.5f);
    es_sampler_free(s);
    /* Dense helper. */
    float d[4] = {0.0f, 0.25f, 0.0f, 0.75f};
    CHECK(es_sample_dense(d, 4, 0.0) == 1);
    CHECK(es_sample_dense(d, 4, 0.2499) == 1);
    CHECK(es_sample_dense(d, 4, 0.25) == 3);
    CHECK(es_sample_dense(d, 4, 0.9999999) == 3);
    float z[3] = {0, 0, 0};
    CHECK(es_sample_dense(z, 3, 0.5) == 0);
}

static int cand_ref_cmp(const void *x, const void *y) {
    const es_sampler_cand *a = x, *b = y;
    if (a->p != b->p) return a->p > b->p ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* es_cand_sort / es_cand_heap_sort / es_cand_select against qsort on inputs that trouble quicksorts:
 * sorted, reversed, all equal (ties broken by id), few distinct values, organ pipe, random. */
static void test_cand_order(void) {
    const size_t n = 5000;
    es_sampler_cand *a = malloc(n * sizeof *a), *ref = malloc(n * sizeof *a), *b = malloc(n * sizeof *a);
    es_rng r;
    es_rng_seed(&r, 3);
    for (int shape = 0; shape < 6; shape++) {
        const size_t sizes[] = {1, 2, 3, 17, 100, n};
        for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
            const size_t m = sizes[z];
            for (size_t i = 0; i < m; i++) {
                float v = shape == 0 ? (float)i
                        : shape == 1 ? -(float)i
                        : shape == 2 ? 0.5f
                        : shape == 3 ? (float)(es_rng_next(&r) % 4)
                        : shape == 4 ? (float)(i < m / 2 ? i : m - i)
                                     : (float)es_rng_uniform(&r);
                /* ids shuffled so that ties are not already in id order */
                a[i] = (es_sampler_cand){v, (int32_t)((i * 7919) % m)};
            }
            memcpy(ref, a, m * sizeof *a);
            qsort(ref, m, sizeof *ref, cand_ref_cmp);
            memcpy(b, a, m * sizeof *a);
            es_cand_sort(b, m);
            CHECK_MSG(memcmp(b, ref, m * sizeof *b) == 0, "es_cand_sort shape %d n %zu", shape, m);
            memcpy(b, a, m * sizeof *a);
            es_cand_heap_sort(b, m);
            CHECK_MSG(memcmp(b, ref, m * sizeof *b) == 0, "es_cand_heap_sort shape %d n %zu", shape, m);
            const size_t ks[] = {0, 1, m / 3, m > 0 ? m - 1 : 0, m};
            for (size_t q = 0; q < 5; q++) {
                const size_t k = ks[q];
                memcpy(b, a, m * sizeof *a);
                es_cand_select(b, m, k);
                if (k > 0 && k < m) es_cand_sort(b, k);  /* the first k as a set, then in order */
                int ok = k == 0 || k >= m ? memcmp(b, a, m * sizeof *a) == 0 : memcmp(b, ref, k * sizeof *b) == 0;
                CHECK_MSG(ok, "es_cand_select shape %d n %zu k %zu", shape, m, k);
            }
        }
    }
    free(a);
    free(ref);
    free(b);
}

/* A 150k vocabulary: correctness against the reference (including degenerate inputs that stress the
 * partial selection) and timing. */
static void test_big_vocab(void) {
    const int n = 150000;
    float *l = malloc((size_t)n * sizeof *l), *probs = malloc((size_t)n * sizeof *probs);
    double *ref = malloc((size_t)n * sizeof *ref);
    es_rng r;
    es_rng_seed(&r, 77);
    struct { const char *name; float t; int k; float tp, mp; } cfg[] = {
        {"greedy", 0.0f, 0, 1.0f, 0.0f},
        {"plain T=1", 1.0f, 0, 1.0f, 0.0f},
        {"defaults", 0.8f, 40, 0.95f, 0.05f},
        {"top_k=1000", 1.0f, 1000, 1.0f, 0.0f},
        {"top_k=20000", 1.0f, 20000, 0.98f, 0.0f},
        {"top_p=0.9", 1.0f, 0, 0.9f, 0.0f},
        {"min_p=0.05", 1.0f, 0, 1.0f, 0.05f},
    };
    for (int shape = 0; shape < 5; shape++) {
        /* 0: peaked normal, 1: flat-ish normal, 2: all equal, 3: ascending ramp (defeats the top-k
         * heap), 4: descending ramp */
        for (int i = 0; i < n; i++)
            l[i] = shape == 0 ? (float)(4.0 * es_rng_normal(&r))
                 : shape == 1 ? (float)(0.3 * es_rng_normal(&r))
                 : shape == 2 ? 0.25f
                 : shape == 3 ? (float)i * 1e-4f
                              : (float)(n - i) * 1e-4f;
        for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
            es_sampler_params p = plain(cfg[c].t, 5);
            p.top_k = cfg[c].k;
            p.top_p = cfg[c].tp;
            p.min_p = cfg[c].mp;
            es_sampler *s = make(&p, n);
            const int reps = shape == 0 ? 10 : 1;  /* timed on the realistic shape only */
            double t0 = now_s();
            for (int i = 0; i < reps; i++) (void)es_sampler_sample(s, l);
            double t1 = now_s();
            es_sampler_probs(s, l, probs);
            ref_probs(l, n, &p, NULL, 0, ref);
            char what[96];
            snprintf(what, sizeof what, "150k shape %d %s", shape, cfg[c].name);
            check_against_ref(what, probs, ref, n, 1e-5);
            if (shape == 0) printf("vocab 150000 %-12s %.3f ms/sample\n", cfg[c].name, 1e3 * (t1 - t0) / reps);
            es_sampler_free(s);
        }
    }
    /* All equal with top_p = 0.5: exactly the lowest half of the ids (ties -> lowest id). */
    for (int i = 0; i < n; i++) l[i] = 1.0f;
    es_sampler_params p = plain(1.0f, 5);
    p.top_p = 0.5f;
    es_sampler *s = make(&p, n);
    es_sampler_probs(s, l, probs);
    int lo = 0, hi = 0;
    for (int i = 0; i < n; i++) {
        if (i < n / 2) lo += probs[i] > 0.0f;
        else hi += probs[i] > 0.0f;
    }
    CHECK_MSG(lo == n / 2 && hi == 0, "all-equal top_p 0.5: %d low, %d high", lo, hi);
    es_sampler_free(s);
    free(l);
    free(probs);
    free(ref);
}

#define TIMED(fn)                                                                  \
    do {                                                                           \
        const double t0_ = now_s();                                                \
        fn();                                                                      \
        printf("%-26s %.2f s\n", #fn, now_s() - t0_);                             \
    } while (0)

/* Logit bias: added before the penalty and temperature; greedy follows it; bad entries are refused. */
static void test_bias(void) {
    float l[5] = {2.0f, -1.0f, 1.0f, 0.5f, -INFINITY};
    es_sampler_params p = plain(0.0f, 0);
    p.n_bias = 2;
    p.bias[0] = (es_logit_bias){0, -100.0f}; /* the argmax all but banned */
    p.bias[1] = (es_logit_bias){4, 100.0f};  /* -inf stays -inf */
    es_sampler *s = make(&p, 5);
    CHECK(es_sampler_sample(s, l) == 2);
    es_sampler_free(s);
    p.bias[1] = (es_logit_bias){3, 1.6f}; /* 0.5 + 1.6 beats 1 */
    s = make(&p, 5);
    CHECK(es_sampler_sample(s, l) == 3);
    /* sampled: the distribution is softmax of the biased logits */
    es_sampler_free(s);
    p.temperature = 1.0f;
    s = make(&p, 5);
    float probs[5];
    es_sampler_probs(s, l, probs);
    const double e[5] = {exp(-98.0), exp(-1.0), exp(1.0), exp(2.1), 0.0};
    const double z = e[0] + e[1] + e[2] + e[3];
    for (int i = 0; i < 5; i++) CHECK_MSG(fabs(probs[i] - e[i] / z) < 1e-6, "biased p[%d] = %g, want %g", i, probs[i], e[i] / z);
    es_sampler_free(s);
    es_err err;
    es_sampler *bad = NULL;
    p.bias[1] = (es_logit_bias){5, 1.0f}; /* outside the vocabulary */
    CHECK(es_sampler_init(&p, 5, &bad, &err) == ES_ERR_INVALID_ARG && !bad);
    p.bias[1] = (es_logit_bias){0, 1.0f}; /* token 0 twice */
    CHECK(es_sampler_init(&p, 5, &bad, &err) == ES_ERR_INVALID_ARG && !bad);
    p.bias[1] = (es_logit_bias){1, NAN};
    CHECK(es_sampler_init(&p, 5, &bad, &err) == ES_ERR_INVALID_ARG && !bad);
    p.n_bias = ES_SAMPLER_MAX_BIAS + 1;
    CHECK(es_sampler_init(&p, 5, &bad, &err) == ES_ERR_INVALID_ARG && !bad);
}

/* Presence and frequency penalties (llama.cpp): after the repetition penalty, minus presence +
 * count x frequency per distinct token of the window. */
static void test_presence_frequency(void) {
    float l[5] = {2.0f, -1.0f, 1.0f, 0.5f, 0.0f};
    es_sampler_params p = plain(1.0f, 4);
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 8;
    es_sampler *s = make(&p, 5);
    es_sampler_accept(s, 0);
    es_sampler_accept(s, 0);
    es_sampler_accept(s, 3);
    float probs[5];
    es_sampler_probs(s, l, probs);
    /* token 0: 2 / 2 - (0.5 + 2 * 0.25) = 0; token 3: 0.5 / 2 - 0.75 = -0.5 */
    const double e[5] = {exp(0.0), exp(-1.0), exp(1.0), exp(-0.5), exp(0.0)};
    double z = 0;
    for (int i = 0; i < 5; i++) z += e[i];
    for (int i = 0; i < 5; i++) CHECK_MSG(fabs(probs[i] - e[i] / z) < 1e-6, "p[%d] = %g, want %g", i, probs[i], e[i] / z);
    /* the counts are per call: a second call gives the same */
    float again[5];
    es_sampler_probs(s, l, again);
    CHECK(memcmp(probs, again, sizeof probs) == 0);
    es_sampler_free(s);
    p.temperature = 0.0f; /* greedy sees them too: token 0 (2 - 0.5 - 2 x 0.3 = 0.9) falls below token 2 (1) */
    p.repeat_penalty = 1.0f;
    p.frequency_penalty = 0.3f;
    s = make(&p, 5);
    es_sampler_accept(s, 0);
    es_sampler_accept(s, 0);
    CHECK(es_sampler_sample(s, l) == 2);
    es_sampler_free(s);
    es_err err;
    es_sampler *bad = NULL;
    p.presence_penalty = NAN;
    CHECK(es_sampler_init(&p, 5, &bad, &err) == ES_ERR_INVALID_ARG && !bad);
}

int main(void) {
    TIMED(test_greedy);
    TIMED(test_presence_frequency);
    TIMED(test_bias);
    TIMED(test_seeds);
    TIMED(test_temperature_softmax);
    TIMED(test_filters);
    TIMED(test_penalty);
    TIMED(test_empirical);
    TIMED(test_invalid);
    TIMED(test_nonfinite);
    TIMED(test_cand_order);
    TIMED(test_big_vocab);
    return es_test_finish("test_sampler");
}
