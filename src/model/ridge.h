/* ridge.h — ridge regression from d_in to d_out features with a bias, in double: the calibrated
 * early-exit adapters (edgespec fit-exit) map the hidden state after layer L to the final one.
 *
 * Rows are added one batch at a time into XᵀX and XᵀY (X with a constant 1 column for the bias), so
 * the training rows need not be kept; es_ridge_solve solves (XᵀX + λI) A = XᵀY by Cholesky, with
 * λ = lambda_rel · mean(diag XᵀX) so that one value suits any scale of the features. */
#ifndef ES_MODEL_RIDGE_H
#define ES_MODEL_RIDGE_H

#include <stdint.h>

#include "edgespec.h"

typedef struct es_ridge es_ridge;

es_status es_ridge_init(int d_in, int d_out, es_ridge **out, es_err *err);
void es_ridge_free(es_ridge *r);
/* Adds n rows: x[n][d_in] → y[n][d_out]. */
void es_ridge_add(es_ridge *r, const float *x, const float *y, int n);
int64_t es_ridge_rows(const es_ridge *r);
/* W[d_out][d_in] (row o: the weights of output o, the es_exit_heads layout) and b[d_out] minimising
 * Σ |W x + b − y|² + λ (|W|² + |b|²). ES_ERR_RANGE when there are no rows or the system is not
 * positive definite (lambda_rel 0 with too few rows). */
es_status es_ridge_solve(es_ridge *r, double lambda_rel, float *W, float *b, es_err *err);

#endif
