/* accept.c — acceptance rules and tree validation, shared by both sides.
 *
 * Recursive rejection sampling (RRS) over siblings drawn without replacement: child j was drawn from
 * q_j, the proposal q with the earlier siblings removed and renormalised. It is accepted with
 * probability min(1, p_j(c)/q_j(c)); on rejection the target becomes p_{j+1} = norm(max(0, p_j - q_j)).
 * Each step is a standard speculative-sampling step with proposal q_j, which emits exactly p_j, so by
 * induction the emitted token has exactly the target distribution p (a single chain child is the
 * classic min(1, p/q) rule of Leviathan et al. / Chen et al.). */
#include <math.h>
#include <string.h>

#include "specdec/spec.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"

static const char *const k_rule_names[] = {"greedy", "match", "rejection", "synthetic"};

const char *es_accept_rule_name(es_accept_rule r) {
    return (unsigned)r < sizeof k_rule_names / sizeof k_rule_names[0] ? k_rule_names[r] : "unknown";
}

int es_accept_rule_parse(const char *s) {
    for (int i = 0; i < (int)(sizeof k_rule_names / sizeof k_rule_names[0]); i++)
        if (s && !strcmp(s, k_rule_names[i])) return i;
    return -1;
}

int32_t es_spec_sample(const float *p, int n, double r) {
    double total = 0;
    for (int i = 0; i < n; i++) total += p[i];
    if (!(total > 0)) { /* degenerate: argmax */
        int b = 0;
        for (int i = 1; i < n; i++)
            if (p[i] > p[b]) b = i;
        return b;
    }
    double target = r * total, acc = 0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0) continue;
        acc += p[i];
        last = i;
        if (target < acc) return i;
    }
    return last;
}

int es_spec_rrs(float *p, int n_vocab, const int32_t *c, int m, const int32_t *qt, const float *qp, int nq,
                double (*u)(void *), void *uctx, int32_t *bonus) {
    /* q_j as a sparse copy: the proposal's mass, with drawn siblings zeroed. */
    float q[ES_SPEC_MAX_Q];
    int nqq = nq < ES_SPEC_MAX_Q ? nq : ES_SPEC_MAX_Q;
    for (int k = 0; k < nqq; k++) q[k] = qp[k];
    for (int j = 0; j < m; j++) {
        double qsum = 0;
        for (int k = 0; k < nqq; k++) qsum += q[k];
        int kc = -1;
        for (int k = 0; k < nqq; k++)
            if (qt[k] == c[j]) { kc = k; break; }
        if (kc < 0 || !(qsum > 0) || q[kc] <= 0) break; /* child outside the proposal: cannot be judged */
        const double qj = q[kc] / qsum;
        /* p is kept normalised: renormalise lazily here */
        double psum = 0;
        for (int i = 0; i < n_vocab; i++) psum += p[i];
        if (!(psum > 0)) break;
        const double pj = p[c[j]] / psum;
        if (u(uctx) < (pj >= qj ? 1.0 : pj / qj)) return j;
        /* rejected: p <- max(0, p/psum - q_j); q <- q without c[j] */
        for (int i = 0; i < n_vocab; i++) p[i] = (float)(p[i] / psum);
        for (int k = 0; k < nqq; k++) {
            const int32_t t = qt[k];
            if (t >= 0 && t < n_vocab) {
                const float v = p[t] - (float)(q[k] / qsum);
                p[t] = v > 0 ? v : 0;
            }
        }
        q[kc] = 0;
    }
    *bonus = es_spec_sample(p, n_vocab, u(uctx));
    return -1;
}

es_status es_spec_tree_validate(const es_spec_tree *t, int n_vocab, es_err *err) {
    if (t->n < 0 || t->n > ES_SPEC_MAX_NODES) return es_fail(err, ES_ERR_RANGE, "tree of %d nodes (at most %d)", t->n, ES_SPEC_MAX_NODES);
    for (int i = 0; i < t->n; i++) {
        if (t->token[i] < 0 || t->token[i] >= n_vocab)
            return es_fail(err, ES_ERR_RANGE, "tree node %d: token %d outside the vocabulary", i, t->token[i]);
        if (t->parent[i] < -1 || t->parent[i] >= i)
            return es_fail(err, ES_ERR_FORMAT, "tree node %d: parent %d must be -1 or an earlier node", i, t->parent[i]);
        const int want = t->parent[i] < 0 ? 1 : t->depth[t->parent[i]] + 1;
        if (t->depth[i] != want) return es_fail(err, ES_ERR_FORMAT, "tree node %d: depth %d, expected %d", i, t->depth[i], want);
    }
    if (!t->has_q) return ES_OK;
    if (t->q_used < 0 || t->q_used > (int)(sizeof t->q_tok / sizeof t->q_tok[0]))
        return es_fail(err, ES_ERR_RANGE, "proposal table of %d entries", t->q_used);
    for (int o = 0; o <= t->n; o++) {
        if (t->q_n[o] < 0 || t->q_n[o] > ES_SPEC_MAX_Q || t->q_off[o] < 0 || t->q_off[o] > t->q_used - t->q_n[o])
            return es_fail(err, ES_ERR_RANGE, "proposal of owner %d out of range", o);
        double s = 0;
        for (int k = 0; k < t->q_n[o]; k++) {
            const float v = t->q_p[t->q_off[o] + k];
            const int32_t tok = t->q_tok[t->q_off[o] + k];
            if (!(v >= 0 && v <= 1) || tok < 0 || tok >= n_vocab)
                return es_fail(err, ES_ERR_RANGE, "proposal of owner %d has a bad entry", o);
            s += v;
        }
        if (t->q_n[o] > 0 && fabs(s - 1.0) > 1e-3) return es_fail(err, ES_ERR_FORMAT, "proposal of owner %d sums to %g, not 1", o, s);
    }
    return ES_OK;
}

es_status es_spec_check_vocab(const es_tokenizer *target, const es_tokenizer *draft, es_err *err) {
    const int nt = es_tokenizer_n_vocab(target), nd = es_tokenizer_n_vocab(draft);
    if (nt != nd) return es_fail(err, ES_ERR_MISMATCH, "draft vocabulary has %d tokens, target has %d", nd, nt);
    for (int i = 0; i < nt; i++) {
        size_t la, lb;
        const char *a = es_tokenizer_token_text(target, i, &la), *b = es_tokenizer_token_text(draft, i, &lb);
        if (!a || !b || la != lb || memcmp(a, b, la) != 0)
            return es_fail(err, ES_ERR_MISMATCH, "draft and target vocabularies differ at token %d ('%.*s' vs '%.*s')", i,
                           (int)(lb > 40 ? 40 : lb), b ? b : "", (int)(la > 40 ? 40 : la), a ? a : "");
    }
    if (es_tokenizer_bos(target) != es_tokenizer_bos(draft) || es_tokenizer_eos(target) != es_tokenizer_eos(draft))
        return es_fail(err, ES_ERR_MISMATCH, "draft BOS/EOS (%d/%d) differ from the target's (%d/%d)", es_tokenizer_bos(draft),
                       es_tokenizer_eos(draft), es_tokenizer_bos(target), es_tokenizer_eos(target));
    return ES_OK;
}
