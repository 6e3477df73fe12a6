/* generate.c — the round loop shared by `edgespec run --draft`, the benchmarks and the tests. */
#include <string.h>
#include <time.h>

#include "specdec/spec.h"
#include "util/clock.h"
#include "util/err.h"

es_status es_spec_generate(es_drafter *d, es_verifier *v, const int32_t *prompt, int n_prompt, int n_predict, int n_ctx,
                           const int32_t *stop_ids, int n_stop, int32_t *out, es_spec_stats *st,
                           void (*on_token)(void *ud, int32_t tok), void *ud, es_err *err) {
    memset(st, 0, sizeof *st);
    st->stop = "length";
    if (n_prompt < 1) return es_fail(err, ES_ERR_INVALID_ARG, "the prompt must hold at least one token");
    if (n_prompt >= n_ctx) return es_fail(err, ES_ERR_RANGE, "the prompt has %d tokens but the context holds %d", n_prompt, n_ctx);
    es_status s;
    if ((s = es_verifier_prefill(v, prompt, n_prompt - 1, err)) != ES_OK) return s;
    es_verifier_add_history(v, prompt, n_prompt - 1);
    if ((s = es_drafter_prefill(d, prompt, n_prompt - 1, err)) != ES_OK) return s;
    es_spec_tree tree;
    es_spec_verdict vd;
    int32_t root = prompt[n_prompt - 1];
    int n = 0;
    while (n < n_predict) {
        const int len = n_prompt + n;
        if (len >= n_ctx) { st->stop = "context"; break; }
        int max_nodes = n_predict - n - 1;
        if (max_nodes > n_ctx - len - 1) max_nodes = n_ctx - len - 1;
        if (max_nodes < 0) max_nodes = 0;
        const double a = es_now_s();
        if ((s = es_drafter_draft(d, root, max_nodes, &tree, err)) != ES_OK) return s;
        const double b = es_now_s();
        if ((s = es_verifier_verify(v, root, &tree, &vd, err)) != ES_OK) return s;
        const double c = es_now_s();
        if ((s = es_drafter_accept(d, &tree, &vd, err)) != ES_OK) return s;
        st->draft_seconds += (b - a) + (es_now_s() - c);
        st->verify_seconds += c - b;
        st->rounds++;
        st->drafted += tree.n;
        st->accepted += vd.n_accepted;
        for (int k = 1; k <= vd.n_accepted; k++) st->accepted_at_depth[k]++;
        bool stop = false;
        for (int k = 0; k < vd.n_tokens && n < n_predict; k++) {
            const int32_t t = vd.tokens[k];
            out[n++] = t;
            for (int j = 0; j < n_stop; j++)
                if (t == stop_ids[j]) stop = true;
            if (stop) { st->stop = "eos"; break; }
            if (on_token) on_token(ud, t);
        }
        if (stop) break;
        root = vd.bonus;
    }
    st->n_generated = n;
    return ES_OK;
}
