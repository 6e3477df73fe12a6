/* predict.c — the APEX dispatch predictor: the per-layer cost model, the three plans' step times, the
 * choice, the least-squares fit of a profile and the online corrections (contracts in predict.h). */
#include "apex/predict.h"

#include <math.h>
#include <stdlib.h>

#include "util/err.h"

const char *es_plan_name(es_plan p) {
    switch (p) {
    case ES_PLAN_DEVICE_ONLY: return "device_only";
    case ES_PLAN_ASYMMETRIC: return "asymmetric";
    case ES_PLAN_ASYNC_OVERLAP: return "async_overlap";
    default: return "unknown";
    }
}

/* ---- the cost model ---- */

static double clamp0(double x) { return x > 0 ? x : 0; }

/* Per layer; rows and contexts in double because the asymmetric split shares contexts in proportion. */
static double t_lin(const es_apex_profile *p, double rows) {
    return rows > 0 ? clamp0(p->lin_a + p->lin_b * rows) : 0;
}

static double t_gatt(const es_apex_profile *p, double rows, double ctx) {
    return rows > 0 ? clamp0(p->gatt_a + p->gatt_b * rows + p->gatt_c * ctx) : 0;
}

/* H(r, c): the host rows' attention plus their round trip and the bytes crossing the tiers. */
static double t_host(const es_apex_profile *p, double rows, double ctx, double row_bytes) {
    if (rows <= 0) return 0;
    return clamp0(p->catt_a + p->catt_b * rows + p->catt_c * ctx) + p->sync_s + p->xfer_b * rows * row_bytes;
}

/* Device work a and CPU work b started together: the longer, plus the share of the shorter that
 * shared cores or bandwidth serialise. */
static double overlap(const es_apex_profile *p, double a, double b) {
    return fmax(a, b) + p->contend * fmin(a, b);
}

typedef struct {
    double d, h, dc, hc, row_bytes;
} step_f;

static step_f step_read(const es_apex_step *st) {
    step_f s;
    s.d = st->dev_rows > 0 ? st->dev_rows : 0;
    s.h = st->host_rows > 0 ? st->host_rows : 0;
    s.dc = st->dev_ctx > 0 ? (double)st->dev_ctx : 0;
    s.hc = st->host_ctx > 0 ? (double)st->host_ctx : 0;
    s.row_bytes = st->host_row_bytes > 0 ? (double)st->host_row_bytes : 0;
    return s;
}

/* The two-stage pipeline of predict.h: per-layer period and the one-off fill. */
static double t_asymmetric(const es_apex_profile *p, const es_apex_step *st, const step_f *s) {
    const double dA = (double)((int64_t)s->d - (int64_t)s->d / 2), dB = s->d - dA; /* A: ceil(d/2) */
    const double hA = (double)((int64_t)s->h / 2), hB = s->h - hA;                  /* A: floor(h/2) */
    const double dcA = s->d > 0 ? s->dc * dA / s->d : 0, hcA = s->h > 0 ? s->hc * hA / s->h : 0;
    const double gA = t_lin(p, dA + hA) + t_gatt(p, dA, dcA), gB = t_lin(p, dB + hB) + t_gatt(p, dB, s->dc - dcA);
    const double cA = t_host(p, hA, hcA, s->row_bytes), cB = t_host(p, hB, s->hc - hcA, s->row_bytes);
    const double p0 = fmax(fmax(gA + gB, cA + cB), fmax(gA + cA, gB + cB));
    const double period = p0 + p->contend * (gA + gB + cA + cB - p0);
    const double fill = (1 - p->contend) * fmin(fmax(gA, gB), fmax(cA, cB));
    return st->n_layer * period + fill;
}

double es_apex_predict(const es_apex_profile *p, es_plan plan, const es_apex_step *st) {
    if (!p || !st || st->n_layer < 1) return 0;
    const step_f s = step_read(st);
    switch (plan) {
    case ES_PLAN_DEVICE_ONLY: return st->n_layer * (t_lin(p, s.d) + t_gatt(p, s.d, s.dc));
    case ES_PLAN_ASYNC_OVERLAP:
        return st->n_layer * (t_lin(p, s.d + s.h) + overlap(p, t_gatt(p, s.d, s.dc), t_host(p, s.h, s.hc, s.row_bytes)));
    case ES_PLAN_ASYMMETRIC: return t_asymmetric(p, st, &s);
    default: return 0;
    }
}

es_plan es_apex_paper_rule(const es_apex_profile *p, const es_apex_step *st) {
    if (!p || !st || st->host_rows <= 0) return ES_PLAN_DEVICE_ONLY;
    const step_f s = step_read(st);
    const double tl = t_lin(p, s.d + s.h), tg = t_gatt(p, s.d, s.dc);
    /* N_G/N_C < 2x + 3 + 1/x with x = Tl/Tg, times N_C·Tl·Tg (both > 0); 2x² + 3x + 1 = (2x + 1)(x + 1). */
    return s.d * tl * tg < s.h * (2 * tl + tg) * (tl + tg) ? ES_PLAN_ASYMMETRIC : ES_PLAN_ASYNC_OVERLAP;
}

/* The choice, each plan's prediction scaled by its correction (all 1 for the pure es_apex_choose). */
static es_plan choose_scaled(const es_apex_profile *p, const double scale[ES_PLAN_COUNT], const es_apex_step *st,
                             int waited, double *pred_s) {
    if (st->host_rows <= 0) {
        if (pred_s) *pred_s = scale[ES_PLAN_DEVICE_ONLY] * es_apex_predict(p, ES_PLAN_DEVICE_ONLY, st);
        return ES_PLAN_DEVICE_ONLY;
    }
    const es_plan first = es_apex_paper_rule(p, st);
    const es_plan order[ES_PLAN_COUNT] = {
        first, first == ES_PLAN_ASYMMETRIC ? ES_PLAN_ASYNC_OVERLAP : ES_PLAN_ASYMMETRIC, ES_PLAN_DEVICE_ONLY};
    const bool device_only_ok = st->dev_rows > 0 && waited < ES_APEX_MAX_HOST_WAIT;
    const bool split_ok = st->dev_rows + st->host_rows >= 2; /* one row leaves a sub-batch empty */
    const es_plan fallback = split_ok ? first : ES_PLAN_ASYNC_OVERLAP;
    es_plan best = fallback;
    double best_t = scale[fallback] * es_apex_predict(p, fallback, st), best_per_row = INFINITY;
    for (int i = 0; i < ES_PLAN_COUNT; i++) {
        const es_plan plan = order[i];
        if (plan == ES_PLAN_DEVICE_ONLY && !device_only_ok) continue;
        if (plan == ES_PLAN_ASYMMETRIC && !split_ok) continue;
        const double t = scale[plan] * es_apex_predict(p, plan, st);
        const double served = plan == ES_PLAN_DEVICE_ONLY ? st->dev_rows : (double)st->dev_rows + st->host_rows;
        const double per_row = t / served;
        if (per_row < best_per_row) {
            best = plan;
            best_t = t;
            best_per_row = per_row;
        }
    }
    if (pred_s) *pred_s = best_t;
    return best;
}

static const double unit_scale[ES_PLAN_COUNT] = {1, 1, 1};

es_plan es_apex_choose(const es_apex_profile *p, const es_apex_step *st, double *pred_s) {
    if (!p || !st) {
        if (pred_s) *pred_s = 0;
        return ES_PLAN_DEVICE_ONLY;
    }
    return choose_scaled(p, unit_scale, st, st->host_waited, pred_s);
}

/* ---- the profile: checking and fitting ---- */

es_status es_apex_profile_check(const es_apex_profile *p, es_err *err) {
    if (!p) return es_fail(err, ES_ERR_INVALID_ARG, "apex profile: NULL");
    const struct { const char *name; double v; } f[] = {
        {"lin_a", p->lin_a},   {"lin_b", p->lin_b},   {"gatt_a", p->gatt_a}, {"gatt_b", p->gatt_b},
        {"gatt_c", p->gatt_c}, {"catt_a", p->catt_a}, {"catt_b", p->catt_b}, {"catt_c", p->catt_c},
        {"sync_s", p->sync_s}, {"xfer_b", p->xfer_b}, {"contend", p->contend},
    };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (!isfinite(f[i].v)) return es_fail(err, ES_ERR_INVALID_ARG, "apex profile: %s is not finite", f[i].name);
    if (p->sync_s < 0) return es_fail(err, ES_ERR_INVALID_ARG, "apex profile: sync_s %g is negative", p->sync_s);
    if (p->xfer_b < 0) return es_fail(err, ES_ERR_INVALID_ARG, "apex profile: xfer_b %g is negative", p->xfer_b);
    if (p->contend < 0 || p->contend > 1)
        return es_fail(err, ES_ERR_INVALID_ARG, "apex profile: contend %g is outside [0, 1]", p->contend);
    return ES_OK;
}

/* Least squares y ≈ X·beta over the samples of one kind, X's columns (1, rows[, ctx]) each scaled
 * by its largest magnitude so that the normal equations of rows ~ 10 and ctx ~ 10^5 stay well
 * conditioned; solved by Gaussian elimination with partial pivoting. False when the columns are
 * (numerically) dependent: too few samples, or rows and ctx moving together. */
#define FIT_MAX_K 3

static bool fit_ls(const es_apex_sample *s, int n, es_apex_kind kind, int k, double *beta) {
    double scale[FIT_MAX_K] = {1, 0, 0};
    for (int i = 0; i < n; i++) {
        if (s[i].kind != kind) continue;
        scale[1] = fmax(scale[1], (double)s[i].rows);
        if (k > 2) scale[2] = fmax(scale[2], (double)s[i].ctx);
    }
    for (int j = 1; j < k; j++)
        if (scale[j] <= 0) return false;
    double m[FIT_MAX_K][FIT_MAX_K + 1] = {{0}};
    for (int i = 0; i < n; i++) {
        if (s[i].kind != kind) continue;
        const double x[FIT_MAX_K] = {1, s[i].rows / scale[1], k > 2 ? (double)s[i].ctx / scale[2] : 0};
        for (int r = 0; r < k; r++) {
            for (int c = 0; c < k; c++) m[r][c] += x[r] * x[c];
            m[r][k] += x[r] * s[i].seconds;
        }
    }
    double trace = 0;
    for (int r = 0; r < k; r++) trace += m[r][r];
    for (int col = 0; col < k; col++) {
        int piv = col;
        for (int r = col + 1; r < k; r++)
            if (fabs(m[r][col]) > fabs(m[piv][col])) piv = r;
        if (!(fabs(m[piv][col]) > 1e-10 * trace)) return false;
        for (int c = 0; c <= k; c++) {
            const double t = m[col][c];
            m[col][c] = m[piv][c];
            m[piv][c] = t;
        }
        for (int r = col + 1; r < k; r++) {
            const double f = m[r][col] / m[col][col];
            for (int c = col; c <= k; c++) m[r][c] -= f * m[col][c];
        }
    }
    for (int r = k - 1; r >= 0; r--) {
        double v = m[r][k];
        for (int c = r + 1; c < k; c++) v -= m[r][c] * beta[c];
        beta[r] = v / m[r][r];
    }
    for (int j = 0; j < k; j++) beta[j] /= scale[j];
    return true;
}

es_status es_apex_fit(const es_apex_sample *s, int n, es_apex_profile *out, es_err *err) {
    if (!out || n < 0 || (n > 0 && !s)) return es_fail(err, ES_ERR_INVALID_ARG, "apex fit: no samples or no output");
    int count[ES_APEX_SAMPLE_KINDS] = {0};
    double sync_sum = 0, xfer_bt = 0, xfer_bb = 0;
    for (int i = 0; i < n; i++) {
        if ((int)s[i].kind < 0 || s[i].kind >= ES_APEX_SAMPLE_KINDS)
            return es_fail(err, ES_ERR_INVALID_ARG, "apex fit: sample %d has unknown kind %d", i, (int)s[i].kind);
        if (!isfinite(s[i].seconds) || s[i].seconds < 0)
            return es_fail(err, ES_ERR_INVALID_ARG, "apex fit: sample %d has time %g", i, s[i].seconds);
        if (s[i].rows < 0 || s[i].ctx < 0 || s[i].bytes < 0)
            return es_fail(err, ES_ERR_INVALID_ARG, "apex fit: sample %d has a negative count", i);
        count[s[i].kind]++;
        if (s[i].kind == ES_APEX_SAMPLE_SYNC) sync_sum += s[i].seconds;
        if (s[i].kind == ES_APEX_SAMPLE_XFER) {
            xfer_bt += (double)s[i].bytes * s[i].seconds;
            xfer_bb += (double)s[i].bytes * (double)s[i].bytes;
        }
    }
    es_apex_profile p = {0};
    double b[FIT_MAX_K];
    if (count[ES_APEX_SAMPLE_LINEAR] < 2 || !fit_ls(s, n, ES_APEX_SAMPLE_LINEAR, 2, b))
        return es_fail(err, ES_ERR_INVALID_ARG, "apex fit: linear needs samples at two or more row counts");
    p.lin_a = b[0];
    p.lin_b = b[1];
    if (count[ES_APEX_SAMPLE_DEV_ATTN] < 3 || !fit_ls(s, n, ES_APEX_SAMPLE_DEV_ATTN, 3, b))
        return es_fail(err, ES_ERR_INVALID_ARG,
                       "apex fit: device attention needs three or more samples whose rows and contexts vary independently");
    p.gatt_a = b[0];
    p.gatt_b = b[1];
    p.gatt_c = b[2];
    if (count[ES_APEX_SAMPLE_CPU_ATTN] < 3 || !fit_ls(s, n, ES_APEX_SAMPLE_CPU_ATTN, 3, b))
        return es_fail(err, ES_ERR_INVALID_ARG,
                       "apex fit: CPU attention needs three or more samples whose rows and contexts vary independently");
    p.catt_a = b[0];
    p.catt_b = b[1];
    p.catt_c = b[2];
    if (count[ES_APEX_SAMPLE_SYNC] > 0) p.sync_s = sync_sum / count[ES_APEX_SAMPLE_SYNC];
    if (count[ES_APEX_SAMPLE_XFER] > 0) {
        if (!(xfer_bb > 0)) return es_fail(err, ES_ERR_INVALID_ARG, "apex fit: transfer samples move no bytes");
        p.xfer_b = fmax(0, xfer_bt / xfer_bb);
    }
    *out = p;
    return ES_OK;
}

/* ---- the online state ---- */

struct es_apex {
    es_apex_profile prof;
    double log_corr[ES_PLAN_COUNT]; /* EWMA of log(measured / model), per plan */
    int waited;                     /* consecutive device_only choices with host rows present */
    int64_t steps[ES_PLAN_COUNT];
    int64_t observed;
    double err_ring[ES_APEX_ERR_RING]; /* |pred − meas| / meas, the last ES_APEX_ERR_RING */
    int err_n, err_next;
};

es_status es_apex_new(const es_apex_profile *initial, es_apex **out, es_err *err) {
    if (!out) return es_fail(err, ES_ERR_INVALID_ARG, "apex: no output handle");
    *out = NULL;
    es_status st = es_apex_profile_check(initial, err);
    if (st != ES_OK) return st;
    es_apex *a = calloc(1, sizeof *a);
    if (!a) return es_fail(err, ES_ERR_NOMEM, "apex: out of memory");
    a->prof = *initial;
    *out = a;
    return ES_OK;
}

void es_apex_free(es_apex *a) { free(a); }

void es_apex_get_profile(const es_apex *a, es_apex_profile *out) { *out = a->prof; }

es_status es_apex_set_profile(es_apex *a, const es_apex_profile *p, es_err *err) {
    es_status st = es_apex_profile_check(p, err);
    if (st == ES_OK) a->prof = *p;
    return st;
}

double es_apex_correction(const es_apex *a, es_plan plan) {
    if (!a || (int)plan < 0 || plan >= ES_PLAN_COUNT) return 1;
    return exp(a->log_corr[plan]);
}

es_plan es_apex_step_choose(es_apex *a, const es_apex_step *st, double *pred_s) {
    if (!a || !st) {
        if (pred_s) *pred_s = 0;
        return ES_PLAN_DEVICE_ONLY;
    }
    double scale[ES_PLAN_COUNT];
    for (int i = 0; i < ES_PLAN_COUNT; i++) scale[i] = exp(a->log_corr[i]);
    const int waited = st->host_waited > a->waited ? st->host_waited : a->waited;
    const es_plan plan = choose_scaled(&a->prof, scale, st, waited, pred_s);
    a->waited = st->host_rows > 0 && plan == ES_PLAN_DEVICE_ONLY ? a->waited + 1 : 0;
    a->steps[plan]++;
    return plan;
}

void es_apex_observe(es_apex *a, es_plan plan, const es_apex_step *st, double pred_s, double measured_s) {
    if (!a || !st || (int)plan < 0 || plan >= ES_PLAN_COUNT || !isfinite(measured_s) || !(measured_s > 0)) return;
    const double model = es_apex_predict(&a->prof, plan, st);
    if (model > 0) {
        const double r = fmin(fmax(measured_s / model, 0.125), 8.0);
        a->log_corr[plan] += ES_APEX_EWMA_ALPHA * (log(r) - a->log_corr[plan]);
    }
    if (isfinite(pred_s)) {
        a->err_ring[a->err_next] = fabs(pred_s - measured_s) / measured_s;
        a->err_next = (a->err_next + 1) % ES_APEX_ERR_RING;
        if (a->err_n < ES_APEX_ERR_RING) a->err_n++;
    }
    a->observed++;
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, int n, double q) {
    int i = (int)ceil(q * n) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return v[i];
}

void es_apex_get_stats(const es_apex *a, es_apex_stats *out) {
    if (!out) return;
    *out = (es_apex_stats){0};
    if (!a) return;
    for (int i = 0; i < ES_PLAN_COUNT; i++) out->steps[i] = a->steps[i];
    out->observed = a->observed;
    if (a->err_n == 0) return;
    /* An insertion sort of at most ES_APEX_ERR_RING values on the stack: stats are read rarely. */
    double v[ES_APEX_ERR_RING];
    for (int i = 0; i < a->err_n; i++) {
        const double x = a->err_ring[i];
        int j = i;
        for (; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
        v[j] = x;
    }
    out->prediction_error_p50 = pct(v, a->err_n, 0.5);
    out->prediction_error_p90 = pct(v, a->err_n, 0.9);
}
