/* predict.h — the APEX dispatch predictor (issue 17; Fan et al., arXiv 2506.03296).
 *
 * On a server whose device memory cannot hold every session's KV cache, some sessions keep their KV in
 * host memory (the host tier) and their decode attention runs on the CPU. Each decode step then has
 * three ways to run, and this module predicts the time of each from a per-layer cost model fitted to
 * profiled passes, picks one, and refines its predictions from the passes it is told about. Pure C, no
 * dependency on the engine: the engine (the Vulkan backend's two KV tiers) asks, runs, and reports.
 *
 * ---- the cost model (seconds per layer; clamped at 0, and 0 for 0 rows: no kernel is launched) ----
 *   L(r)    = lin_a  + lin_b·r             device: every part of a layer but attention, r rows
 *                                          (lin_a: the weights read once per pass; lin_b: per-row work)
 *   G(r, c) = gatt_a + gatt_b·r + gatt_c·c device attention, r rows attending to c slots in all
 *   C(r, c) = catt_a + catt_b·r + catt_c·c CPU attention over host-tier KV
 *   H(r, c) = C(r, c) + sync_s + xfer_b·r·host_row_bytes
 *             the host path of r rows: their attention plus one device round trip per layer (submit,
 *             wait, q/k/v down, the attention output up), the bytes priced per byte
 *   ov(a, b) = max(a, b) + contend·min(a, b)
 *             device work a and CPU work b started together. contend = 0 for a discrete GPU; 1 where
 *             the "device" runs on the same cores (lavapipe): the two then serialise. In between: the
 *             share of the shorter one lost to shared cores or memory bandwidth.
 * With d / h device / host rows and dc / hc their summed contexts, per layer (a step is n_layer times
 * that; asymmetric adds a pipeline fill once):
 *   device_only   = L(d) + G(d, dc)                 host rows wait this step, served rows = d
 *   async_overlap = L(d + h) + ov(G(d, dc), H(h, hc))
 *                   all rows' linear work in one device batch; at each layer's attention the CPU works
 *                   on the host rows while the device attends the device rows; the host rows' result
 *                   is synchronised just before the output projection needs it
 *   asymmetric    = two sub-batches, A with ceil(d/2) device and floor(h/2) host rows, B the rest
 *                   (contexts split in proportion to rows: the engine balances them). Per layer each
 *                   sub-batch has a device stage g = L(rows) + G(its device rows) and a CPU stage
 *                   c = H(its host rows); its chain alternates g, c, g, c ... over the layers, and
 *                   the device runs A's stage while the CPU runs B's. A two-stage pipeline with two
 *                   jobs in flight has the period
 *                     P0 = max(gA + gB, cA + cB, gA + cA, gB + cB)
 *                   (each resource's load per layer, and each chain's own round), so the step is
 *                     n_layer · P + F,  P = P0 + contend·(gA + gB + cA + cB − P0),
 *                     F = (1 − contend)·min(max(gA, gB), max(cA, cB))
 *                   F is the fill: the first stage of the faster resource runs before the other
 *                   has work (exact for equal halves, within one stage otherwise). The split's price
 *                   is explicit: the weights are read twice per layer (2·lin_a), and each sub-batch
 *                   pays its own round trip.
 *
 * ---- the choice (es_apex_choose) ----
 * With no host row every plan is the same device pass: ES_PLAN_DEVICE_ONLY. Otherwise the plan with
 * the least predicted seconds per *served* row (1 / throughput) among the eligible ones, because
 * device_only serves only the d device rows and the others serve d + h: comparing step times would
 * always pick the plan that does less. device_only is not eligible when d == 0 (it would serve
 * nothing) or when the host rows have already waited ES_APEX_MAX_HOST_WAIT consecutive steps, so a
 * host-tier session never waits more than that many steps in a row. asymmetric needs two rows (with
 * one, a sub-batch is empty and the "pipeline" is the async pass). Exact ties go to the paper rule's
 * pick, then to the other overlap plan, then to device_only.
 *
 * ---- where this departs from the paper, and why ----
 * The paper chooses between its two plans by the rule (es_apex_paper_rule)
 *     asymmetric  iff  N_G / N_C < 2·T_glinear/T_gatt + 3 + T_gatt/T_glinear,
 * read here as N_G = d, N_C = h, T_glinear = L(d + h) (the whole batch's linear work) and
 * T_gatt = G(d, dc). We pick by the predictions instead:
 *   - The rule sees only device times. It assumes the CPU attention hides behind the device, which
 *     does not hold when the host is slow (few cores, low bandwidth) or shares cores with the device
 *     (lavapipe): the predictions include C, the round trip, the bytes moved and the contention.
 *   - The rule treats a sub-batch's linear time as half the batch's. In decode the weights are read
 *     once per pass whatever the rows (lin_a dominates), so two sub-batches read them twice: the
 *     asymmetric prediction charges 2·lin_a, which the rule cannot see.
 *   - A third plan, device_only (the issue's, not the paper's), with a throughput objective and a
 *     starvation bound: when host attention is so slow that leaving host rows out of a step serves
 *     more rows per second, they wait, but never more than ES_APEX_MAX_HOST_WAIT steps in a row.
 *   - The paper profiles once; here the predictions are also corrected online (es_apex_observe).
 * The rule is kept for ties and for comparison (tests, the apex-sim benchmark report how often the
 * predictions agree with it).
 *
 * Threads: the pure functions are reentrant; an es_apex is used by one thread at a time. */
#ifndef ES_APEX_PREDICT_H
#define ES_APEX_PREDICT_H

#include <stdbool.h>
#include <stdint.h>

#include "edgespec.h"

typedef enum {
    ES_PLAN_DEVICE_ONLY = 0,   /* device rows only; host-tier rows wait */
    ES_PLAN_ASYMMETRIC = 1,    /* APEX's asymmetric pipelining: two sub-batches alternate */
    ES_PLAN_ASYNC_OVERLAP = 2, /* APEX's asynchronous overlap: one batch, CPU attention beside it */
    ES_PLAN_COUNT = 3
} es_plan;

/* "device_only", "asymmetric", "async_overlap"; "unknown" for anything else. */
const char *es_plan_name(es_plan p);

/* The most consecutive steps host-tier rows may be left out (device_only) before a plan that serves
 * them is forced: bounds a host session's inter-token gap at 5 steps. */
#define ES_APEX_MAX_HOST_WAIT 4

/* One step's work as the predictor sees it. Contexts are summed attended slots over the rows. */
typedef struct es_apex_step {
    int n_layer;
    int dev_rows, host_rows;   /* batch rows whose sessions' KV is in device / host memory */
    int64_t dev_ctx, host_ctx; /* sum over those rows of the slots each attends to */
    int host_waited;           /* consecutive steps the longest-waiting host row has been left out */
    int64_t host_row_bytes;    /* bytes per host row and layer crossing the tiers (q, k, v down, the
                                  attention output up); 0 when sync_s already covers them */
} es_apex_step;

/* Per-layer cost model, seconds: linear in its arguments (fit from profiles). */
typedef struct es_apex_profile {
    double lin_a, lin_b;           /* T_dev_linear(rows) = lin_a + lin_b * rows   (all of a layer but attention) */
    double gatt_a, gatt_b, gatt_c; /* T_dev_attn(rows, ctx) = gatt_a + gatt_b * rows + gatt_c * ctx */
    double catt_a, catt_b, catt_c; /* T_cpu_attn(rows, ctx) = catt_a + catt_b * rows + catt_c * ctx */
    double sync_s;                 /* one device round trip (submit + wait + q/k/v readback + result upload) */
    double xfer_b;                 /* seconds per byte moved between tiers */
    double contend;                /* 0..1: the share of overlapped device and CPU work that serialises
                                      (0 discrete GPU, 1 a device on the CPU's own cores); not fitted,
                                      set from the device kind */
} es_apex_profile;

/* ES_OK when every field is finite, sync_s and xfer_b are >= 0 and contend is in [0, 1]; else
 * ES_ERR_INVALID_ARG naming the field. Coefficients may be negative (a least-squares intercept can
 * be): the model clamps each component at 0. */
es_status es_apex_profile_check(const es_apex_profile *p, es_err *err);

/* What a profiling sample timed. */
typedef enum es_apex_kind {
    ES_APEX_SAMPLE_LINEAR = 0, /* one layer's non-attention work for `rows` rows, on the device */
    ES_APEX_SAMPLE_DEV_ATTN,   /* one layer's attention on the device: `rows` rows, `ctx` summed slots */
    ES_APEX_SAMPLE_CPU_ATTN,   /* the same on the CPU over host-tier KV */
    ES_APEX_SAMPLE_SYNC,       /* one device round trip (rows, ctx ignored) */
    ES_APEX_SAMPLE_XFER,       /* moving `bytes` between the tiers */
    ES_APEX_SAMPLE_KINDS
} es_apex_kind;

typedef struct es_apex_sample {
    es_apex_kind kind;
    int rows;
    int64_t ctx;    /* attention: summed attended slots over the rows */
    int64_t bytes;  /* xfer: bytes moved */
    double seconds; /* per layer (linear, attention) or per event (sync, xfer) */
} es_apex_sample;

/* Fits a profile from timed samples, least squares per component: L on (1, rows), each attention on
 * (1, rows, ctx), sync_s the mean of the SYNC samples, xfer_b the slope through the origin of the
 * XFER samples (both 0 without samples: a device that shares host memory has neither). LINEAR needs
 * two distinct row counts; each attention kind three samples whose rows and ctx vary independently
 * (ctx = k·rows for every sample cannot separate gatt_b from gatt_c). *out->contend = 0.
 * ES_ERR_INVALID_ARG (err names the component) for too few or degenerate samples, a negative or
 * non-finite time, negative rows / ctx / bytes, or an unknown kind. No allocation. */
es_status es_apex_fit(const es_apex_sample *s, int n, es_apex_profile *out, es_err *err);

/* Predicted seconds of the step under `plan` (formulas above); negative counts read as 0, and a step
 * with n_layer < 1 costs 0. Pure. */
double es_apex_predict(const es_apex_profile *p, es_plan plan, const es_apex_step *st);

/* The plan for this step and (pred_s, when non-NULL) its predicted seconds, by the rule above. Pure. */
es_plan es_apex_choose(const es_apex_profile *p, const es_apex_step *st, double *pred_s);

/* The paper's rule alone, asymmetric vs async overlap (ES_PLAN_DEVICE_ONLY only when host_rows == 0),
 * evaluated without division: d·Tl·Tg < h·(2·Tl + Tg)·(Tl + Tg), which is the rule multiplied by
 * h·Tl·Tg (Tg = 0: asymmetric, the right side being infinite). Pure. */
es_plan es_apex_paper_rule(const es_apex_profile *p, const es_apex_step *st);

/* ---- online state: the profile, per-plan corrections, the starvation count, statistics ---- */

typedef struct es_apex es_apex;

/* Copies `initial` (es_apex_profile_check'ed: ES_ERR_INVALID_ARG) into a new state with no
 * correction; ES_ERR_NOMEM. The only allocation: choose / observe / stats never allocate. */
es_status es_apex_new(const es_apex_profile *initial, es_apex **out, es_err *err);
void es_apex_free(es_apex *a);
/* The profile in use, and a new one (a start-up measurement replacing a preset's part; checked as
 * es_apex_new does, the corrections kept). */
void es_apex_get_profile(const es_apex *a, es_apex_profile *out);
es_status es_apex_set_profile(es_apex *a, const es_apex_profile *p, es_err *err);

/* es_apex_choose with each plan's prediction multiplied by its correction, and the starvation bound
 * applied to the larger of st->host_waited and the state's own count of consecutive steps it chose
 * device_only with host rows present (all host rows wait together under device_only, so the count is
 * the longest wait of a host row that was there throughout). Counts the choice in the stats. */
es_plan es_apex_step_choose(es_apex *a, const es_apex_step *st, double *pred_s);

/* After the step ran under `plan`: its measured seconds. Refines that plan's correction and records
 * |pred_s − measured| / measured for the stats (pred_s: what es_apex_step_choose returned).
 * The correction is an exponentially weighted mean, weight ES_APEX_EWMA_ALPHA, of
 * log(measured / model prediction), the ratio clamped to [1/8, 8] so one stalled step cannot
 * swing it: multiplicative because an error in one component (a slower host, a slower kernel)
 * scales the plans' times roughly by a factor, in the log domain so 2× slow and 2× fast weigh the
 * same. Per plan because the plans use the components in different proportions; a plan that is
 * never run keeps its correction (it is predicted by the profile as fitted). A measured time that
 * is not finite or not positive, or an unknown plan, is ignored. */
void es_apex_observe(es_apex *a, es_plan plan, const es_apex_step *st, double pred_s, double measured_s);
#define ES_APEX_EWMA_ALPHA 0.125

/* The factor es_apex_step_choose currently applies to `plan`'s predictions (1 before any observation;
 * 1 for an unknown plan). */
double es_apex_correction(const es_apex *a, es_plan plan);

/* The ring of recent prediction errors the percentiles are taken over. */
#define ES_APEX_ERR_RING 256

typedef struct es_apex_stats {
    int64_t steps[ES_PLAN_COUNT]; /* choices made by es_apex_step_choose, per plan */
    double prediction_error_p50, prediction_error_p90; /* over the last ES_APEX_ERR_RING observations; 0 before any */
    int64_t observed;             /* observations recorded in all */
} es_apex_stats;

/* p50 over a bounded ring of recent errors (no allocation per step). */
void es_apex_get_stats(const es_apex *a, es_apex_stats *out);

/* ---- profiles derived from published figures (presets.c gives each derivation) ----
 * For simulation (bench/apex-sim) and tests, and as a starting point before start-up profiling:
 * derived from datasheets and this project's recorded figures, not measured on the hardware. */
typedef struct es_apex_preset {
    const char *name;       /* "t4", "a10", "lavapipe" */
    const char *what;       /* the device, host and model it was derived for */
    int n_layer;
    int64_t host_row_bytes; /* per host row and layer: q, k, v down, the attention output up */
    int64_t kv_token_bytes; /* KV cache bytes of one token over all layers (for sizing budgets) */
    es_apex_profile profile;
} es_apex_preset;

/* The i-th preset, NULL past the last. */
const es_apex_preset *es_apex_preset_at(int i);
/* The preset of that name, NULL when none. */
const es_apex_preset *es_apex_preset_find(const char *name);

#endif
