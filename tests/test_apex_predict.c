/* test_apex_predict.c — the APEX dispatch predictor (src/apex): the fit recovers known coefficients
 * from noisy samples; the choice equals a brute-force search over the plans on the derived profiles;
 * the paper's rule on both sides of its threshold; the asymmetric pipeline's closed form against an
 * event-by-event schedule; online corrections converge; the starvation bound holds. No timing. */
#include <math.h>
#include <string.h>

#include "apex/predict.h"
#include "testutil.h"
#include "util/rng.h"

/* A T4-like GPU whose host attention is very slow (a 2-core host at 5 GB/s over LLaMa-2-7B's 16 KiB
 * per slot and layer): leaving host rows out wins at long contexts. Test-only, beside the presets. */
static const es_apex_profile slow_cpu = {
    .lin_a = 1.72e-3, .lin_b = 6.35e-6, .gatt_a = 5e-6, .gatt_b = 1e-6, .gatt_c = 6.83e-8,
    .catt_a = 20e-6, .catt_b = 2e-6, .catt_c = 16384.0 / 5e9, .sync_s = 30e-6, .xfer_b = 1.0 / 12e9,
};

/* ---- (a) the fit ---- */

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

static void test_fit(void) {
    const es_apex_profile truth = {
        .lin_a = 1.7e-3, .lin_b = 6.4e-6, .gatt_a = 5e-6, .gatt_b = 1e-6, .gatt_c = 6.8e-8,
        .catt_a = 20e-6, .catt_b = 2e-6, .catt_c = 4.1e-7, .sync_s = 30e-6, .xfer_b = 8.3e-11,
    };
    es_rng r;
    es_rng_seed(&r, 17);
    enum { N = 600 };
    static es_apex_sample s[N];
    int n = 0;
    const double noise = 0.01; /* 1 % multiplicative, normal */
    for (int i = 0; i < 100; i++) {
        const int rows = 1 + (int)(es_rng_next(&r) % 64);
        s[n++] = (es_apex_sample){ES_APEX_SAMPLE_LINEAR, rows, 0, 0,
                                  (truth.lin_a + truth.lin_b * rows) * (1 + noise * es_rng_normal(&r))};
    }
    for (int k = 0; k < 2; k++) {
        const double a = k ? truth.catt_a : truth.gatt_a, b = k ? truth.catt_b : truth.gatt_b,
                     c = k ? truth.catt_c : truth.gatt_c;
        for (int i = 0; i < 200; i++) {
            /* Contexts per row log-uniform over 16..4096, as a profiler should time them: short
             * ones pin the per-row and per-launch terms, long ones the per-slot term. */
            const int rows = 1 + (int)(es_rng_next(&r) % 64);
            const int64_t ctx = rows * (int64_t)(16.0 * pow(2.0, 8.0 * es_rng_uniform(&r)));
            s[n++] = (es_apex_sample){k ? ES_APEX_SAMPLE_CPU_ATTN : ES_APEX_SAMPLE_DEV_ATTN, rows, ctx, 0,
                                      (a + b * rows + c * ctx) * (1 + noise * es_rng_normal(&r))};
        }
    }
    for (int i = 0; i < 50; i++)
        s[n++] = (es_apex_sample){ES_APEX_SAMPLE_SYNC, 0, 0, 0, truth.sync_s * (1 + noise * es_rng_normal(&r))};
    for (int i = 0; i < 50; i++) {
        const int64_t bytes = 4096 * (int64_t)(1 + es_rng_next(&r) % 256);
        s[n++] = (es_apex_sample){ES_APEX_SAMPLE_XFER, 0, 0, bytes, truth.xfer_b * bytes * (1 + noise * es_rng_normal(&r))};
    }
    es_apex_profile p;
    es_err err = {0};
    es_err *errp = &err;
    CHECK_OK(es_apex_fit(s, n, &p, &err), errp);
    /* The terms that carry the time are recovered to ~1 %; the small intercepts (a few us beside
     * ms-scale samples) only to within the noise of the samples they sit under. */
    CHECK_MSG(rel(p.lin_a, truth.lin_a) < 0.01, "lin_a %g", p.lin_a);
    CHECK_MSG(rel(p.lin_b, truth.lin_b) < 0.1, "lin_b %g", p.lin_b);
    CHECK_MSG(rel(p.gatt_c, truth.gatt_c) < 0.02, "gatt_c %g", p.gatt_c);
    CHECK_MSG(rel(p.catt_c, truth.catt_c) < 0.02, "catt_c %g", p.catt_c);
    CHECK_MSG(rel(p.sync_s, truth.sync_s) < 0.01, "sync_s %g", p.sync_s);
    CHECK_MSG(rel(p.xfer_b, truth.xfer_b) < 0.01, "xfer_b %g", p.xfer_b);
    CHECK(p.contend == 0);
    /* What matters is the predicted step: within 2 % over a grid of steps and plans. */
    for (int d = 0; d <= 32; d += 8)
        for (int h = 0; h <= 32; h += 8)
            for (int64_t c = 64; c <= 4096; c *= 4)
                for (int plan = 0; plan < ES_PLAN_COUNT; plan++) {
                    const es_apex_step st = {.n_layer = 32, .dev_rows = d, .host_rows = h, .dev_ctx = d * c,
                                             .host_ctx = h * c, .host_row_bytes = 32768};
                    const double want = es_apex_predict(&truth, (es_plan)plan, &st);
                    const double got = es_apex_predict(&p, (es_plan)plan, &st);
                    if (want > 0) CHECK_MSG(rel(got, want) < 0.02, "d %d h %d ctx %lld %s: %g vs %g", d, h,
                                            (long long)c, es_plan_name((es_plan)plan), got, want);
                }
    /* Exact samples: exact coefficients. */
    es_apex_sample e[12];
    int m = 0;
    e[m++] = (es_apex_sample){ES_APEX_SAMPLE_LINEAR, 1, 0, 0, 3.0};
    e[m++] = (es_apex_sample){ES_APEX_SAMPLE_LINEAR, 5, 0, 0, 11.0};
    const int64_t rc[4][2] = {{1, 10}, {2, 10}, {1, 30}, {4, 100}};
    for (int i = 0; i < 4; i++) {
        e[m++] = (es_apex_sample){ES_APEX_SAMPLE_DEV_ATTN, (int)rc[i][0], rc[i][1], 0, 1 + 2.0 * rc[i][0] + 0.5 * rc[i][1]};
        e[m++] = (es_apex_sample){ES_APEX_SAMPLE_CPU_ATTN, (int)rc[i][0], rc[i][1], 0, 4 + 1.0 * rc[i][0] + 3.0 * rc[i][1]};
    }
    CHECK_OK(es_apex_fit(e, m, &p, &err), errp);
    CHECK(fabs(p.lin_a - 1) < 1e-12 && fabs(p.lin_b - 2) < 1e-12);
    CHECK(fabs(p.gatt_a - 1) < 1e-9 && fabs(p.gatt_b - 2) < 1e-9 && fabs(p.gatt_c - 0.5) < 1e-9);
    CHECK(fabs(p.catt_a - 4) < 1e-9 && fabs(p.catt_b - 1) < 1e-9 && fabs(p.catt_c - 3) < 1e-9);
    CHECK(p.sync_s == 0 && p.xfer_b == 0);

    /* Degenerate inputs are refused, naming the component. */
    CHECK(es_apex_fit(e, 1, &p, &err) == ES_ERR_INVALID_ARG && strstr(err.msg, "linear"));
    es_apex_sample one_row[12];
    memcpy(one_row, e, sizeof e);
    one_row[1].rows = 1;
    CHECK(es_apex_fit(one_row, m, &p, &err) == ES_ERR_INVALID_ARG && strstr(err.msg, "linear"));
    es_apex_sample collinear[12];
    memcpy(collinear, e, sizeof e);
    for (int i = 2; i < m; i++)
        if (collinear[i].kind == ES_APEX_SAMPLE_DEV_ATTN) collinear[i].ctx = 100 * collinear[i].rows;
    CHECK(es_apex_fit(collinear, m, &p, &err) == ES_ERR_INVALID_ARG && strstr(err.msg, "device attention"));
    es_apex_sample bad[12];
    memcpy(bad, e, sizeof e);
    bad[3].seconds = -1;
    CHECK(es_apex_fit(bad, m, &p, &err) == ES_ERR_INVALID_ARG);
    memcpy(bad, e, sizeof e);
    bad[4].seconds = NAN;
    CHECK(es_apex_fit(bad, m, &p, &err) == ES_ERR_INVALID_ARG);
    memcpy(bad, e, sizeof e);
    bad[0].kind = ES_APEX_SAMPLE_KINDS;
    CHECK(es_apex_fit(bad, m, &p, &err) == ES_ERR_INVALID_ARG);
    CHECK(es_apex_fit(NULL, 3, &p, &err) == ES_ERR_INVALID_ARG);
}

/* ---- (b) the choice against brute force ---- */

/* Seconds per served row of each plan, or INFINITY where the plan may not run. Written from the
 * contract, independently of the library's loop. */
static double objective(const es_apex_profile *p, es_plan plan, const es_apex_step *st) {
    if (plan == ES_PLAN_ASYMMETRIC && st->dev_rows + st->host_rows < 2) return INFINITY;
    if (plan == ES_PLAN_DEVICE_ONLY) {
        if (st->host_rows > 0 && (st->dev_rows == 0 || st->host_waited >= ES_APEX_MAX_HOST_WAIT)) return INFINITY;
        return es_apex_predict(p, plan, st) / st->dev_rows;
    }
    return es_apex_predict(p, plan, st) / (st->dev_rows + st->host_rows);
}

static void brute_force(const char *name, const es_apex_profile *p, int n_layer, int64_t row_bytes,
                        int64_t wins[ES_PLAN_COUNT]) {
    const int rows[] = {0, 1, 2, 3, 5, 8, 16, 33, 64};
    const int64_t ctxs[] = {1, 32, 512, 2048, 8192};
    const int waits[] = {0, ES_APEX_MAX_HOST_WAIT - 1, ES_APEX_MAX_HOST_WAIT};
    for (size_t a = 0; a < sizeof rows / sizeof *rows; a++)
        for (size_t b = 0; b < sizeof rows / sizeof *rows; b++)
            for (size_t c = 0; c < sizeof ctxs / sizeof *ctxs; c++)
                for (size_t e = 0; e < sizeof ctxs / sizeof *ctxs; e++)
                    for (size_t w = 0; w < sizeof waits / sizeof *waits; w++) {
                        const int d = rows[a], h = rows[b];
                        if (d + h == 0) continue;
                        const es_apex_step st = {.n_layer = n_layer, .dev_rows = d, .host_rows = h,
                                                 .dev_ctx = d * ctxs[c], .host_ctx = h * ctxs[e],
                                                 .host_waited = waits[w], .host_row_bytes = row_bytes};
                        double pred = -1;
                        const es_plan got = es_apex_choose(p, &st, &pred);
                        CHECK(got >= 0 && got < ES_PLAN_COUNT);
                        if (got < 0 || got >= ES_PLAN_COUNT) return;
                        CHECK(pred == es_apex_predict(p, got, &st));
                        wins[got]++;
                        if (h == 0) {
                            CHECK_MSG(got == ES_PLAN_DEVICE_ONLY, "%s: no host row but %s", name, es_plan_name(got));
                            continue;
                        }
                        double best = INFINITY;
                        for (int k = 0; k < ES_PLAN_COUNT; k++) best = fmin(best, objective(p, (es_plan)k, &st));
                        const double mine = objective(p, got, &st);
                        CHECK_MSG(isfinite(mine) && mine <= best * (1 + 1e-12),
                                  "%s d %d h %d ctx %lld/%lld waited %d: chose %s (%g s/row), best %g s/row", name,
                                  d, h, (long long)ctxs[c], (long long)ctxs[e], waits[w], es_plan_name(got), mine, best);
                    }
}

static void test_choose(void) {
    int64_t total[ES_PLAN_COUNT] = {0};
    for (int i = 0; es_apex_preset_at(i); i++) {
        const es_apex_preset *ps = es_apex_preset_at(i);
        es_err err;
        CHECK_MSG(es_apex_profile_check(&ps->profile, &err) == ES_OK, "%s: %s", ps->name, err.msg);
        int64_t wins[ES_PLAN_COUNT] = {0};
        brute_force(ps->name, &ps->profile, ps->n_layer, ps->host_row_bytes, wins);
        for (int k = 0; k < ES_PLAN_COUNT; k++) total[k] += wins[k];
        /* Each preset's character: a discrete GPU with a decent host pipelines somewhere; on lavapipe
         * the device shares the CPU's cores, so a split only reads the weights twice: never. */
        if (!strcmp(ps->name, "t4") || !strcmp(ps->name, "a10")) CHECK_MSG(wins[ES_PLAN_ASYMMETRIC] > 0, "%s", ps->name);
        if (!strcmp(ps->name, "lavapipe")) CHECK(wins[ES_PLAN_ASYMMETRIC] == 0 && wins[ES_PLAN_ASYNC_OVERLAP] > 0);
    }
    CHECK(es_apex_preset_find("t4") && es_apex_preset_find("a10") && es_apex_preset_find("lavapipe"));
    CHECK(!es_apex_preset_find("h100") && !es_apex_preset_find(NULL));
    int64_t wins[ES_PLAN_COUNT] = {0};
    brute_force("slow_cpu", &slow_cpu, 32, 32768, wins);
    for (int k = 0; k < ES_PLAN_COUNT; k++) total[k] += wins[k];
    /* With host attention this slow, device-only must win somewhere beyond the steps without host rows. */
    const es_apex_step long_ctx = {.n_layer = 32, .dev_rows = 8, .host_rows = 8, .dev_ctx = 8 * 4096, .host_ctx = 8 * 4096};
    CHECK(es_apex_choose(&slow_cpu, &long_ctx, NULL) == ES_PLAN_DEVICE_ONLY);
    for (int k = 0; k < ES_PLAN_COUNT; k++) CHECK_MSG(total[k] > 0, "%s never chosen on the grid", es_plan_name((es_plan)k));

    /* device_only never with no device row, whatever the cost of the host path. */
    const es_apex_step no_dev = {.n_layer = 32, .host_rows = 4, .host_ctx = 4 * 8192};
    CHECK(es_apex_choose(&slow_cpu, &no_dev, NULL) != ES_PLAN_DEVICE_ONLY);
    /* Names. */
    CHECK(!strcmp(es_plan_name(ES_PLAN_DEVICE_ONLY), "device_only"));
    CHECK(!strcmp(es_plan_name(ES_PLAN_ASYMMETRIC), "asymmetric"));
    CHECK(!strcmp(es_plan_name(ES_PLAN_ASYNC_OVERLAP), "async_overlap"));
    CHECK(!strcmp(es_plan_name(ES_PLAN_COUNT), "unknown"));
}

/* ---- the plans' formulas ---- */

/* The asymmetric prediction against an event-by-event schedule of the two sub-batches: each chain
 * alternates a device stage and a CPU stage per layer; the device runs A1 B1 A2 B2 ..., the CPU
 * likewise, and a stage starts when its resource is free and its own previous stage is done. */
static double schedule(double gA, double cA, double gB, double cB, int n_layer) {
    double dev = 0, cpu = 0, endA = 0, endB = 0;
    for (int l = 0; l < n_layer; l++) {
        dev = fmax(dev, endA) + gA;
        endA = dev;
        dev = fmax(dev, endB) + gB;
        endB = dev;
        cpu = fmax(cpu, endA) + cA;
        endA = cpu;
        cpu = fmax(cpu, endB) + cB;
        endB = cpu;
    }
    return fmax(endA, endB);
}

static void test_formulas(void) {
    /* A profile where each component is easy to read off: L(r) = 1 + r, G = ctx, H = 2·ctx + 1. */
    const es_apex_profile p = {.lin_a = 1, .lin_b = 1, .gatt_c = 1, .catt_c = 2, .sync_s = 1};
    const es_apex_step st = {.n_layer = 10, .dev_rows = 4, .host_rows = 2, .dev_ctx = 8, .host_ctx = 6};
    CHECK(es_apex_predict(&p, ES_PLAN_DEVICE_ONLY, &st) == 10 * ((1 + 4) + 8));
    CHECK(es_apex_predict(&p, ES_PLAN_ASYNC_OVERLAP, &st) == 10 * ((1 + 6) + fmax(8, 2 * 6 + 1)));
    /* Halves: A = 2 device + 1 host rows, B the same; g = L(3) + G(2, 4) = 8, c = H(1, 3) = 7. */
    CHECK(es_apex_predict(&p, ES_PLAN_ASYMMETRIC, &st) == 10 * 16 + 7);
    CHECK(fabs(es_apex_predict(&p, ES_PLAN_ASYMMETRIC, &st) - schedule(8, 7, 8, 7, 10)) < 1e-9);
    /* Full contention: the overlapped parts add up. */
    es_apex_profile pc = p;
    pc.contend = 1;
    CHECK(es_apex_predict(&pc, ES_PLAN_ASYNC_OVERLAP, &st) == 10 * ((1 + 6) + 8 + 13));
    CHECK(es_apex_predict(&pc, ES_PLAN_ASYMMETRIC, &st) == 10 * 30);
    /* Nothing to do costs nothing; n_layer < 1 too. */
    const es_apex_step none = {.n_layer = 10};
    for (int k = 0; k < ES_PLAN_COUNT; k++) CHECK(es_apex_predict(&p, (es_plan)k, &none) == 0);
    es_apex_step zero_layers = st;
    zero_layers.n_layer = 0;
    CHECK(es_apex_predict(&p, ES_PLAN_ASYNC_OVERLAP, &zero_layers) == 0);

    /* The closed form against the schedule over uneven halves on the presets: within one stage. */
    for (int i = 0; es_apex_preset_at(i); i++) {
        const es_apex_preset *ps = es_apex_preset_at(i);
        if (ps->profile.contend != 0) continue;
        const es_apex_profile *q = &ps->profile;
        const int cases[][2] = {{4, 8}, {5, 7}, {1, 12}, {30, 60}, {0, 9}, {3, 1}};
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            const int d = cases[c][0], h = cases[c][1];
            const es_apex_step s = {.n_layer = ps->n_layer, .dev_rows = d, .host_rows = h, .dev_ctx = d * 700,
                                    .host_ctx = h * 900, .host_row_bytes = ps->host_row_bytes};
            /* The same stages as predict.h describes, computed here from the components. */
            const double dA = d - d / 2, dB = d / 2, hA = h / 2, hB = h - h / 2;
            const double L[2] = {dA + hA > 0 ? q->lin_a + q->lin_b * (dA + hA) : 0,
                                 dB + hB > 0 ? q->lin_a + q->lin_b * (dB + hB) : 0};
            const double G[2] = {dA > 0 ? q->gatt_a + q->gatt_b * dA + q->gatt_c * 700 * dA : 0,
                                 dB > 0 ? q->gatt_a + q->gatt_b * dB + q->gatt_c * 700 * dB : 0};
            double H[2];
            const double hr[2] = {hA, hB};
            for (int k = 0; k < 2; k++)
                H[k] = hr[k] > 0 ? q->catt_a + q->catt_b * hr[k] + q->catt_c * 900 * hr[k] + q->sync_s +
                                       q->xfer_b * hr[k] * ps->host_row_bytes
                                 : 0;
            const double g0 = L[0] + G[0], g1 = L[1] + G[1];
            const double sim = schedule(g0, H[0], g1, H[1], ps->n_layer);
            const double got = es_apex_predict(q, ES_PLAN_ASYMMETRIC, &s);
            const double stage = fmax(fmax(g0, g1), fmax(H[0], H[1]));
            CHECK_MSG(fabs(got - sim) <= stage + 1e-12, "%s d %d h %d: closed form %g, schedule %g", ps->name, d, h,
                      got, sim);
        }
    }
}

/* ---- (c) the paper's rule ---- */

static void test_paper_rule(void) {
    /* L(r) = 1 and G = 1 whatever the rows: x = 1, the threshold 2 + 3 + 1 = 6 rows per host row. */
    const es_apex_profile p = {.lin_a = 1, .gatt_a = 1, .catt_c = 1};
    for (int d = 1; d <= 80; d++) {
        const es_apex_step st = {.n_layer = 1, .dev_rows = d, .host_rows = 10, .dev_ctx = d, .host_ctx = 10};
        const es_plan want = d < 60 ? ES_PLAN_ASYMMETRIC : ES_PLAN_ASYNC_OVERLAP; /* strict: 60/10 is not < 6 */
        CHECK_MSG(es_apex_paper_rule(&p, &st) == want, "d %d", d);
    }
    /* x = 4 (L = 4, G = 1): threshold 8 + 3 + 0.25 = 11.25. */
    const es_apex_profile p4 = {.lin_a = 4, .gatt_a = 1};
    for (int d = 1; d <= 60; d++) {
        const es_apex_step st = {.n_layer = 1, .dev_rows = d, .host_rows = 4};
        CHECK_MSG(es_apex_paper_rule(&p4, &st) == (d < 45 ? ES_PLAN_ASYMMETRIC : ES_PLAN_ASYNC_OVERLAP), "x=4 d %d", d);
    }
    /* The division-free form against the formula as written, on the presets' steps away from the boundary. */
    for (int i = 0; es_apex_preset_at(i); i++) {
        const es_apex_preset *ps = es_apex_preset_at(i);
        for (int d = 1; d <= 64; d *= 2)
            for (int h = 1; h <= 64; h *= 2)
                for (int64_t c = 16; c <= 16384; c *= 4) {
                    const es_apex_step st = {.n_layer = ps->n_layer, .dev_rows = d, .host_rows = h, .dev_ctx = d * c,
                                             .host_ctx = h * c};
                    const es_apex_profile *q = &ps->profile;
                    const double tl = q->lin_a + q->lin_b * (d + h), tg = q->gatt_a + q->gatt_b * d + q->gatt_c * d * c;
                    const double lhs = (double)d / h, rhs = 2 * tl / tg + 3 + tg / tl;
                    if (fabs(lhs - rhs) < 1e-9 * rhs) continue;
                    CHECK_MSG(es_apex_paper_rule(q, &st) == (lhs < rhs ? ES_PLAN_ASYMMETRIC : ES_PLAN_ASYNC_OVERLAP),
                              "%s d %d h %d c %lld", ps->name, d, h, (long long)c);
                }
    }
    /* No host row: device only; no device row: asymmetric (the right side is infinite). */
    const es_apex_step no_host = {.n_layer = 1, .dev_rows = 3, .dev_ctx = 3};
    CHECK(es_apex_paper_rule(&p, &no_host) == ES_PLAN_DEVICE_ONLY);
    const es_apex_step no_dev = {.n_layer = 1, .host_rows = 3, .host_ctx = 3};
    CHECK(es_apex_paper_rule(&p, &no_dev) == ES_PLAN_ASYMMETRIC);
}

/* ---- (d) online refinement ---- */

static void test_refine(void) {
    const es_apex_preset *ps = es_apex_preset_find("t4");
    if (!ps) return;
    es_apex *a = NULL;
    es_err err;
    es_err *errp = &err;
    CHECK_OK(es_apex_new(&ps->profile, &a, &err), errp);
    if (!a) return;
    es_apex_stats stats;
    es_apex_get_stats(a, &stats);
    CHECK(stats.observed == 0 && stats.prediction_error_p50 == 0);
    es_rng r;
    es_rng_seed(&r, 5);
    /* The hardware is 1.3x slower than the profile says, on steps of changing shape. */
    double last_err = 1;
    for (int i = 0; i < 400; i++) {
        const int d = 1 + (int)(es_rng_next(&r) % 16), h = (int)(es_rng_next(&r) % 32);
        const es_apex_step st = {.n_layer = ps->n_layer, .dev_rows = d, .host_rows = h,
                                 .dev_ctx = d * (int64_t)(64 + es_rng_next(&r) % 2048),
                                 .host_ctx = h * (int64_t)(64 + es_rng_next(&r) % 2048), .host_row_bytes = ps->host_row_bytes};
        double pred = 0;
        const es_plan plan = es_apex_step_choose(a, &st, &pred);
        const double measured = 1.3 * es_apex_predict(&ps->profile, plan, &st);
        last_err = fabs(pred - measured) / measured;
        es_apex_observe(a, plan, &st, pred, measured);
    }
    CHECK_MSG(last_err < 0.05, "last error %g", last_err);
    es_apex_get_stats(a, &stats);
    CHECK(stats.observed == 400);
    CHECK(stats.steps[0] + stats.steps[1] + stats.steps[2] == 400);
    CHECK_MSG(stats.prediction_error_p50 < 0.05 && stats.prediction_error_p90 < 0.05, "p50 %g p90 %g",
              stats.prediction_error_p50, stats.prediction_error_p90);
    for (int k = 0; k < ES_PLAN_COUNT; k++)
        if (stats.steps[k] > 30) CHECK_MSG(fabs(es_apex_correction(a, (es_plan)k) - 1.3) < 0.05, "%s correction %g",
                                           es_plan_name((es_plan)k), es_apex_correction(a, (es_plan)k));
    /* Garbage measurements are ignored. */
    const es_apex_step st = {.n_layer = 32, .dev_rows = 2, .host_rows = 2, .dev_ctx = 200, .host_ctx = 200};
    const double before = es_apex_correction(a, ES_PLAN_ASYNC_OVERLAP);
    es_apex_observe(a, ES_PLAN_ASYNC_OVERLAP, &st, 1, NAN);
    es_apex_observe(a, ES_PLAN_ASYNC_OVERLAP, &st, 1, -1);
    es_apex_observe(a, ES_PLAN_COUNT, &st, 1, 1);
    CHECK(es_apex_correction(a, ES_PLAN_ASYNC_OVERLAP) == before);
    es_apex_get_stats(a, &stats);
    CHECK(stats.observed == 400);
    /* A single 100x outlier moves the correction by at most the clamp's share. */
    es_apex_observe(a, ES_PLAN_ASYNC_OVERLAP, &st, 1, 100 * es_apex_predict(&ps->profile, ES_PLAN_ASYNC_OVERLAP, &st));
    CHECK(es_apex_correction(a, ES_PLAN_ASYNC_OVERLAP) <= before * exp(ES_APEX_EWMA_ALPHA * log(8.0 / before)) * (1 + 1e-9));
    es_apex_free(a);

    /* Invalid profiles are refused. */
    es_apex_profile bad = ps->profile;
    bad.contend = 2;
    CHECK(es_apex_new(&bad, &a, &err) == ES_ERR_INVALID_ARG && !a);
    bad = ps->profile;
    bad.catt_c = INFINITY;
    CHECK(es_apex_new(&bad, &a, &err) == ES_ERR_INVALID_ARG && strstr(err.msg, "catt_c"));
    bad = ps->profile;
    bad.sync_s = -1;
    CHECK(es_apex_new(&bad, &a, &err) == ES_ERR_INVALID_ARG);
    CHECK(es_apex_new(NULL, &a, &err) == ES_ERR_INVALID_ARG);
}

/* ---- (e) the starvation bound ---- */

static void test_starvation(void) {
    /* Long host contexts on the slow host: device_only is the better throughput every step. */
    const es_apex_step base = {.n_layer = 32, .dev_rows = 8, .host_rows = 8, .dev_ctx = 8 * 4096,
                               .host_ctx = 8 * 4096, .host_row_bytes = 32768};
    /* The pure choice with the caller counting. */
    int waited = 0, longest = 0, served = 0;
    for (int i = 0; i < 100; i++) {
        es_apex_step st = base;
        st.host_waited = waited;
        const es_plan plan = es_apex_choose(&slow_cpu, &st, NULL);
        if (plan == ES_PLAN_DEVICE_ONLY) waited++;
        else {
            waited = 0;
            served++;
        }
        if (waited > longest) longest = waited;
    }
    CHECK_MSG(longest == ES_APEX_MAX_HOST_WAIT, "longest wait %d", longest);
    CHECK(served == 100 / (ES_APEX_MAX_HOST_WAIT + 1));
    /* The state counts by itself: the caller passes host_waited = 0 every step. */
    es_apex *a = NULL;
    es_err err;
    es_err *errp = &err;
    CHECK_OK(es_apex_new(&slow_cpu, &a, &err), errp);
    if (!a) return;
    int run = 0;
    longest = 0;
    for (int i = 0; i < 100; i++) {
        const es_plan plan = es_apex_step_choose(a, &base, NULL);
        run = plan == ES_PLAN_DEVICE_ONLY ? run + 1 : 0;
        if (run > longest) longest = run;
    }
    CHECK_MSG(longest == ES_APEX_MAX_HOST_WAIT, "stateful longest wait %d", longest);
    /* 100 steps are 20 whole cycles, so the count is 0 here. A step without host rows resets it: host
     * rows that arrive later start from zero. */
    for (int i = 0; i < ES_APEX_MAX_HOST_WAIT - 1; i++) CHECK(es_apex_step_choose(a, &base, NULL) == ES_PLAN_DEVICE_ONLY);
    const es_apex_step dev_only = {.n_layer = 32, .dev_rows = 8, .dev_ctx = 8 * 4096};
    CHECK(es_apex_step_choose(a, &dev_only, NULL) == ES_PLAN_DEVICE_ONLY);
    CHECK(es_apex_step_choose(a, &base, NULL) == ES_PLAN_DEVICE_ONLY);
    /* The caller's count is honoured too. */
    es_apex_step told = base;
    told.host_waited = ES_APEX_MAX_HOST_WAIT;
    CHECK(es_apex_step_choose(a, &told, NULL) != ES_PLAN_DEVICE_ONLY);
    es_apex_stats stats;
    es_apex_get_stats(a, &stats);
    CHECK(stats.steps[ES_PLAN_DEVICE_ONLY] > 0 && stats.observed == 0);
    es_apex_free(a);
}

int main(void) {
    test_fit();
    test_choose();
    test_formulas();
    test_paper_rule();
    test_refine();
    test_starvation();
    return es_test_finish("test_apex_predict");
}
