/* fuzz_grammar.c — libFuzzer target for the JSON Schema compiler and the grammar matcher
 * (src/grammar/).
 *
 * Input: byte 0 picks the grammar (bit 0 set: json_object; else the schema is the bytes up to the first
 * NUL, or all of them); the rest after that NUL drives the matcher. A schema must compile or be refused
 * with ES_ERR_INVALID_ARG / ES_ERR_NOMEM and a message. A compiled grammar then runs over a small
 * vocabulary of JSON pieces plus tokens cut from the input (at 0xff bytes): at every step the trie mask
 * must equal the token-by-token answer of es_gmatcher_allows, a token from the mask (chosen by the
 * next input byte) must be accepted, and a refused token must leave the state as it was; the raw
 * driver bytes are also fed to the byte automaton directly. Anything else aborts.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined (scripts/fuzz.sh). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"

static const char *const k_pieces[] = {"<unk>", "<s>", "</s>", "{", "}", "[", "]", "\"", ":", ",", " ", "\n", "  ", "true",
                                       "false", "null", "0", "1", "12", "-", ".", "e", "+", "a", "\"a\"", "\\", "\\u00", "{\"",
                                       "\":", "\",\"", "}]", "\"}", "3.5", "E-"};
#define N_PIECES (int)(sizeof k_pieces / sizeof k_pieces[0])
#define MAX_EXTRA 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    const size_t n = size - 1;
    const uint8_t *nul = memchr(p, 0, n);
    const size_t slen = nul ? (size_t)(nul - p) : n;
    const uint8_t *drv = nul ? nul + 1 : p + n;
    const size_t dlen = (size_t)(p + n - drv);

    es_err err = {{0}};
    es_grammar *g = NULL;
    es_status st;
    if (data[0] & 1) {
        st = es_grammar_json_object(&g, &err);
    } else {
        char *s = malloc(slen ? slen : 1); /* exact size: an over-read is caught */
        if (!s) return 0;
        memcpy(s, p, slen);
        st = es_grammar_from_schema(s, slen, &g, &err);
        free(s);
    }
    if (st != ES_OK) {
        if ((st != ES_ERR_INVALID_ARG && st != ES_ERR_NOMEM) || g || !err.msg[0]) abort();
        return 0;
    }

    /* the byte automaton on the raw driver bytes */
    es_gstate s0;
    es_gstate_init(g, &s0);
    for (size_t i = 0; i < dlen; i++) {
        es_gstate c = s0;
        if (!es_gstate_feed(g, &c, drv[i])) break;
        s0 = c;
        (void)es_gstate_can_end(g, &s0);
    }

    /* a vocabulary: fixed JSON pieces plus pieces cut from the driver bytes */
    const char *toks[N_PIECES + MAX_EXTRA];
    size_t lens[N_PIECES + MAX_EXTRA];
    int nt = 0;
    for (; nt < N_PIECES; nt++) {
        toks[nt] = k_pieces[nt];
        lens[nt] = strlen(k_pieces[nt]);
    }
    for (size_t a = 0; a < dlen && nt < N_PIECES + MAX_EXTRA;) {
        size_t b = a;
        while (b < dlen && drv[b] != 0xff && b - a < 16) b++;
        if (b > a) {
            toks[nt] = (const char *)drv + a;
            lens[nt++] = b - a;
        }
        a = b + 1;
    }
    es_vocab_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.kind = ES_TOK_SPM;
    spec.n_vocab = nt;
    spec.tokens = toks;
    spec.lens = lens;
    spec.unk = 0;
    spec.bos = 1;
    spec.eos = 2;
    spec.pad = -1;
    es_tokenizer *tok = NULL;
    es_grammar_vocab *gv = NULL;
    es_gmatcher *m = NULL;
    const int32_t end = 2;
    if (es_tokenizer_init(&spec, &tok, &err) == ES_OK && es_grammar_vocab_init(tok, &gv, &err) == ES_OK &&
        es_gmatcher_init(g, gv, &end, 1, &m, &err) == ES_OK) {
        for (size_t step = 0; step < dlen && step < 256; step++) {
            const uint64_t *mask = es_gmatcher_mask(m);
            int32_t allowed[N_PIECES + MAX_EXTRA];
            int na = 0;
            for (int t = 0; t < nt; t++) {
                const bool in = es_mask_test(mask, t);
                if (in != es_gmatcher_allows(m, t)) abort();
                if (in) allowed[na++] = t;
            }
            if (na == 0) break;
            const es_gstate before = *es_gmatcher_state(m);
            /* a refused token changes nothing */
            for (int t = 0; t < nt; t++)
                if (!es_mask_test(mask, t)) {
                    if (es_gmatcher_accept(m, t)) abort();
                    if (memcmp(es_gmatcher_state(m), &before, sizeof before)) abort();
                    break;
                }
            if (!es_gmatcher_accept(m, allowed[drv[step] % na])) abort();
            if (es_gmatcher_ended(m)) break;
        }
    }
    es_gmatcher_free(m);
    es_grammar_vocab_free(gv);
    es_tokenizer_free(tok);
    es_grammar_free(g);
    return 0;
}
