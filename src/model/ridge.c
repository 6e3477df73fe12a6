/* ridge.c — see ridge.h. Only the upper triangle of XᵀX is accumulated (it is symmetric). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/ridge.h"
#include "util/err.h"

struct es_ridge {
    int d_in, d_out, p; /* p = d_in + 1: the bias column last */
    double *xtx;        /* p × p, upper triangle */
    double *xty;        /* p × d_out */
    double *xr;         /* p: one row with its 1 */
    int64_t rows;
};

es_status es_ridge_init(int d_in, int d_out, es_ridge **out, es_err *err) {
    *out = NULL;
    if (d_in <= 0 || d_out <= 0 || d_in > 65536 || d_out > 65536)
        return es_fail(err, ES_ERR_INVALID_ARG, "ridge: dimensions %d -> %d (1..65536)", d_in, d_out);
    es_ridge *r = calloc(1, sizeof *r);
    if (!r) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    r->d_in = d_in;
    r->d_out = d_out;
    r->p = d_in + 1;
    r->xtx = calloc((size_t)r->p * r->p, sizeof(double));
    r->xty = calloc((size_t)r->p * d_out, sizeof(double));
    r->xr = calloc((size_t)r->p, sizeof(double));
    if (!r->xtx || !r->xty || !r->xr) {
        es_ridge_free(r);
        return es_fail(err, ES_ERR_NOMEM, "ridge: out of memory for a %d x %d system", d_in + 1, d_in + 1);
    }
    *out = r;
    return ES_OK;
}

void es_ridge_free(es_ridge *r) {
    if (!r) return;
    free(r->xtx);
    free(r->xty);
    free(r->xr);
    free(r);
}

int64_t es_ridge_rows(const es_ridge *r) { return r->rows; }

void es_ridge_add(es_ridge *r, const float *x, const float *y, int n) {
    const int p = r->p, dout = r->d_out;
    for (int k = 0; k < n; k++) {
        const float *xk = x + (size_t)k * r->d_in, *yk = y + (size_t)k * dout;
        for (int i = 0; i < r->d_in; i++) r->xr[i] = xk[i];
        r->xr[p - 1] = 1.0;
        for (int i = 0; i < p; i++) {
            const double xi = r->xr[i];
            double *row = r->xtx + (size_t)i * p;
            for (int j = i; j < p; j++) row[j] += xi * r->xr[j];
            double *ty = r->xty + (size_t)i * dout;
            for (int o = 0; o < dout; o++) ty[o] += xi * yk[o];
        }
        r->rows++;
    }
}

es_status es_ridge_solve(es_ridge *r, double lambda_rel, float *W, float *b, es_err *err) {
    if (r->rows == 0) return es_fail(err, ES_ERR_RANGE, "ridge: no rows to fit");
    if (!(lambda_rel >= 0) || !isfinite(lambda_rel)) return es_fail(err, ES_ERR_INVALID_ARG, "ridge: lambda must be >= 0");
    const int p = r->p, dout = r->d_out;
    double *L = malloc((size_t)p * p * sizeof(double));
    if (!L) {
        return es_fail(err, ES_ERR_NOMEM, "ridge: out of memory");
    }
    double tr = 0;
    for (int i = 0; i < p; i++) tr += r->xtx[(size_t)i * p + i];
    const double lambda = lambda_rel * tr / p;
    /* Cholesky A = L Lᵀ (L lower, row-major), A from the upper triangle */
    es_status st = ES_OK;
    for (int j = 0; j < p && st == ES_OK; j++) {
        double s = r->xtx[(size_t)j * p + j] + lambda;
        for (int k = 0; k < j; k++) s -= L[(size_t)j * p + k] * L[(size_t)j * p + k];
        if (!(s > 0)) {
            st = es_fail(err, ES_ERR_RANGE, "ridge: the system is not positive definite (%lld rows; raise lambda)",
                         (long long)r->rows);
            break;
        }
        const double ljj = sqrt(s);
        L[(size_t)j * p + j] = ljj;
        for (int i = j + 1; i < p; i++) {
            double t = r->xtx[(size_t)j * p + i]; /* A[i][j] = upper[j][i] */
            for (int k = 0; k < j; k++) t -= L[(size_t)i * p + k] * L[(size_t)j * p + k];
            L[(size_t)i * p + j] = t / ljj;
        }
    }
    /* all right-hand sides at once, row by row (rows of Z are contiguous, so the inner loops run
       along memory): L Z = XᵀY, then Lᵀ A = Z, in place in Z */
    double *Z = st == ES_OK ? malloc((size_t)p * dout * sizeof(double)) : NULL;
    if (st == ES_OK && !Z) st = es_fail(err, ES_ERR_NOMEM, "ridge: out of memory");
    if (st == ES_OK) {
        memcpy(Z, r->xty, (size_t)p * dout * sizeof(double));
        for (int i = 0; i < p; i++) {
            double *zi = Z + (size_t)i * dout;
            for (int k = 0; k < i; k++) {
                const double l = L[(size_t)i * p + k], *zk = Z + (size_t)k * dout;
                for (int o = 0; o < dout; o++) zi[o] -= l * zk[o];
            }
            const double inv = 1.0 / L[(size_t)i * p + i];
            for (int o = 0; o < dout; o++) zi[o] *= inv;
        }
        for (int i = p - 1; i >= 0; i--) {
            double *zi = Z + (size_t)i * dout;
            for (int k = i + 1; k < p; k++) {
                const double l = L[(size_t)k * p + i], *zk = Z + (size_t)k * dout;
                for (int o = 0; o < dout; o++) zi[o] -= l * zk[o];
            }
            const double inv = 1.0 / L[(size_t)i * p + i];
            for (int o = 0; o < dout; o++) zi[o] *= inv;
        }
        for (int o = 0; o < dout; o++) {
            for (int i = 0; i < r->d_in; i++) W[(size_t)o * r->d_in + i] = (float)Z[(size_t)i * dout + o];
            b[o] = (float)Z[(size_t)(p - 1) * dout + o];
        }
    }
    free(Z);
    free(L);
    return st;
}
