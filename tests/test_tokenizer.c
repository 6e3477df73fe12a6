/* test_tokenizer.c — the SentencePiece-style tokenizer against llama2.c's encode (golden prompt ids
 * of stories260K/tok512, and a plain re-implementation of llama2.c's O(n^2) merge loop on random
 * texts for tok512 and the 32000-token Llama 2 vocabulary), against Hugging Face's tokenizer for
 * TinyStories-656K (reference ids made by scripts/gen-hf-tokenizer-ref.mjs), decoding round trips,
 * byte fallback, fingerprints, and the rejection of malformed llama2.c / tokenizer.json files. */
#include <cjson/cJSON.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "tokenizer/tok_impl.h"
#include "util/rng.h"

#define MAXTOK 8192

static es_tokenizer *load_llama2c(const char *file, int n_vocab, es_vocab **vocab_out) {
    es_err err_ = {{0}}, *err = &err_;
    es_vocab *v = NULL;
    es_tokenizer *t = NULL;
    CHECK_OK(es_vocab_load_llama2c(es_test_shared_model(file), n_vocab, &v,  err),  err);
    if (!v) return NULL;
    CHECK_OK(es_tokenizer_init(es_vocab_spec_of(v), &t,  err),  err);
    if (vocab_out) *vocab_out = v;
    else es_vocab_free(v);
    return t;
}

static int encode(const es_tokenizer *t, const char *text, size_t len, bool bos, bool special, int32_t *ids, int cap) {
    es_err err_ = {{0}}, *err = &err_;
    int n = -1;
    es_status st = es_tokenize(t, text, len, bos, special, ids, cap, &n,  err);
    CHECK_MSG(st == ES_OK, "es_tokenize: %s", err->msg);
    return st == ES_OK ? n : -1;
}

/* Decodes ids[0..n) piece by piece (prev = the previous id, -1 first) into a malloc'd string. */
static char *decode(const es_tokenizer *t, const int32_t *ids, int n, size_t *len) {
    size_t cap = 64 + (size_t)n * (size_t)(es_tokenizer_max_token_len(t) + 4), k = 0;
    char *s = malloc(cap + 1);
    for (int i = 0; i < n; i++) k += (size_t)es_token_to_piece(t, i ? ids[i - 1] : -1, ids[i], s + k, (int)(cap - k));
    s[k] = 0;
    if (len) *len = k;
    return s;
}

static bool same_ids(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

static int json_ids(const cJSON *arr, int32_t *out, int cap) {
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) if (n < cap) out[n++] = (int32_t)it->valuedouble;
    return n;
}

/* llama2.c's encode as it is written there: BOS, the dummy-prefix token " ", each UTF-8 character
 * (a byte plus up to 3 continuation bytes) or its bytes as id byte+3, then rescan all adjacent pairs
 * for the highest-scoring concatenation (strictly above -1e10; ties to the leftmost) until none. */
static int ref_llama2c_encode(const es_tokenizer *t, const char *text, int32_t *tok) {
    int n = 0;
    tok[n++] = 1;
    if (text[0]) tok[n++] = tok_lookup(t, " ", 1);
    char buf[64];
    size_t bl = 0;
    for (const char *c = text; *c; c++) {
        if ((*c & 0xC0) != 0x80) bl = 0;
        buf[bl++] = *c;
        if ((c[1] & 0xC0) == 0x80 && bl < 4) continue;
        int32_t id = tok_lookup(t, buf, bl);
        if (id >= 0) tok[n++] = id;
        else
            for (size_t i = 0; i < bl; i++) tok[n++] = (unsigned char)buf[i] + 3;
        bl = 0;
    }
    static char cat[4096];
    for (;;) {
        float best = -1e10f;
        int best_i = -1;
        int32_t best_id = -1;
        for (int i = 0; i + 1 < n; i++) {
            size_t la, lb;
            const char *a = es_tokenizer_token_text(t, tok[i], &la), *b = es_tokenizer_token_text(t, tok[i + 1], &lb);
            memcpy(cat, a, la);
            memcpy(cat + la, b, lb);
            int32_t id = tok_lookup(t, cat, la + lb);
            if (id >= 0 && es_tokenizer_token_score(t, id) > best) {
                best = es_tokenizer_token_score(t, id);
                best_i = i;
                best_id = id;
            }
        }
        if (best_i < 0) break;
        tok[best_i] = best_id;
        memmove(tok + best_i + 1, tok + best_i + 2, (size_t)(n - best_i - 2) * sizeof *tok);
        n--;
    }
    return n;
}

static void test_golden(const es_tokenizer *t) {
    size_t len;
    char *data = es_test_read_file(es_test_shared("golden/stories260K-greedy.jsonl"), &len);
    CHECK(data != NULL);
    if (!data) return;
    int lines = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        CHECK(j != NULL);
        if (!j) continue;
        const char *prompt = cJSON_GetObjectItem(j, "prompt")->valuestring;
        int32_t want[MAXTOK], got[MAXTOK], ref[MAXTOK];
        int nw = json_ids(cJSON_GetObjectItem(j, "prompt_ids"), want, MAXTOK);
        int ng = encode(t, prompt, strlen(prompt), true, false, got, MAXTOK);
        CHECK_MSG(same_ids(want, nw, got, ng), "golden prompt \"%s\": %d ids, want %d", prompt, ng, nw);
        int nr = ref_llama2c_encode(t, prompt, ref);
        CHECK(same_ids(ref, nr, got, ng));
        char *back = decode(t, got, ng, NULL);
        CHECK_MSG(strcmp(back, prompt) == 0, "round trip \"%s\" -> \"%s\"", prompt, back);
        free(back);
        cJSON_Delete(j);
        lines++;
    }
    CHECK(lines == 20);
    free(data);
}

/* Random texts: words from a small list, punctuation, spaces, newlines, multi-byte characters and
 * (when raw) arbitrary non-NUL bytes, so byte fallback and invalid UTF-8 are exercised too. */
static size_t random_text(es_rng *r, char *out, size_t max, bool raw) {
    static const char *const words[] = {"Once", "upon", "a", "time", "there", "was", "little", "girl", "named",
                                        "Lily", "the", "dog", "Tim", "ball", "happy", "café", "日本", "😀",
                                        "naïve", "don't", "1234", "!", "?", ",", ".", "  ", "\n", "\t", "ÿ"};
    size_t n = 0;
    size_t target = 1 + (size_t)(es_rng_uniform(r) * (double)(max - 16));
    while (n < target) {
        double u = es_rng_uniform(r);
        if (raw && u < 0.15) {
            out[n++] = (char)(1 + es_rng_next(r) % 255);
            continue;
        }
        const char *w = words[es_rng_next(r) % (sizeof words / sizeof words[0])];
        size_t l = strlen(w);
        if (n + l + 1 >= max) break;
        memcpy(out + n, w, l);
        n += l;
        if (es_rng_uniform(r) < 0.7) out[n++] = ' ';
    }
    out[n] = 0;
    return n;
}

static void test_against_reference_loop(const es_tokenizer *t, int texts, uint64_t seed) {
    es_rng r;
    es_rng_seed(&r, seed);
    char text[400];
    int32_t got[MAXTOK], ref[MAXTOK];
    int bad = 0;
    for (int k = 0; k < texts; k++) {
        size_t n = random_text(&r, text, sizeof text, k % 2 == 1);
        int ng = encode(t, text, n, true, false, got, MAXTOK);
        int nr = ref_llama2c_encode(t, text, ref);
        if (!same_ids(ref, nr, got, ng)) {
            bad++;
            if (bad < 4) {
                fprintf(stderr, "text [%s]\n got:", text);
                for (int i = 0; i < ng; i++) fprintf(stderr, " %d", got[i]);
                fprintf(stderr, "\n ref:");
                for (int i = 0; i < nr; i++) fprintf(stderr, " %d", ref[i]);
                fprintf(stderr, "\n");
            }
        }
        char *back = decode(t, got, ng, NULL);
        if (strcmp(back, text) != 0) bad++;
        free(back);
    }
    CHECK_MSG(bad == 0, "%d of %d random texts differ from llama2.c's encode or do not round-trip", bad, texts);
}

/* s: a character that is not a token of t's vocabulary */
static void test_byte_fallback(const es_tokenizer *t, const char *s) {
    int32_t ids[64];
    int n = encode(t, s, strlen(s), false, false, ids, 64);
    /* " " (the dummy prefix) then each UTF-8 byte b as its <0xXX> token, id b + 3 */
    CHECK(n == 1 + (int)strlen(s));
    for (int i = 1; i < n && i <= (int)strlen(s); i++) {
        CHECK(ids[i] == (unsigned char)s[i - 1] + 3);
        CHECK(es_tokenizer_token_type(t, ids[i]) == ES_TOKTYPE_BYTE);
    }
    char piece[8];
    CHECK(es_token_to_piece(t, -1, 0xC3 + 3, piece, 8) == 1 && (unsigned char)piece[0] == 0xC3);
    const char *jp = "日本 and é!";
    int32_t ids2[64];
    n = encode(t, jp, strlen(jp), true, false, ids2, 64);
    size_t bl;
    char *back = decode(t, ids2, n, &bl);
    CHECK(strcmp(back, jp) == 0);
    free(back);
    /* invalid UTF-8 and a NUL byte survive the trip */
    const char raw[] = {'a', (char)0xFF, (char)0x80, 'b', 0, 'c', (char)0xE6};
    n = encode(t, raw, sizeof raw, true, false, ids2, 64);
    back = decode(t, ids2, n, &bl);
    CHECK(bl == sizeof raw && memcmp(back, raw, bl) == 0);
    free(back);
}

static void test_empty_and_cap(const es_tokenizer *t) {
    int32_t ids[16];
    CHECK(encode(t, "", 0, true, false, ids, 16) == 1 && ids[0] == 1);
    CHECK(encode(t, "", 0, false, false, ids, 16) == 0);
    CHECK(encode(t, NULL, 0, false, false, NULL, 0) == 0);
    /* cap smaller than the encoding: the full count comes back, nothing past cap is written */
    const char *s = "Once upon a time there was a little girl";
    int full = encode(t, s, strlen(s), true, false, ids, 16);
    CHECK(full > 4);
    int32_t small[6] = {-7, -7, -7, -7, -7, -7};
    CHECK(encode(t, s, strlen(s), true, false, small, 3) == full);
    CHECK(small[0] == ids[0] && small[2] == ids[2] && small[3] == -7);
    int n = -1;
    es_err err_ = {{0}}, *err = &err_;
    CHECK(es_tokenize(t, s, strlen(s), true, false, NULL, 4, &n,  err) == ES_ERR_INVALID_ARG);
    CHECK(es_tokenize(t, s, strlen(s), true, false, NULL, 0, &n,  err) == ES_OK && n == full);
    /* pieces never overflow the buffer */
    char buf[8] = "xxxxxxx";
    int32_t longest = -1;
    for (int32_t id = 0; id < es_tokenizer_n_vocab(t); id++) {
        size_t l;
        es_tokenizer_token_text(t, id, &l);
        if (es_tokenizer_token_type(t, id) == ES_TOKTYPE_NORMAL && l >= 5) { longest = id; break; }
    }
    CHECK(longest >= 0);
    CHECK(es_token_to_piece(t, -1, longest, buf, 2) == 2 && buf[2] == 'x');
    CHECK(es_token_to_piece(t, -1, 1, buf, 8) == 0);          /* BOS (control) decodes to nothing */
    CHECK(es_token_to_piece(t, -1, 99999, buf, 8) == 0);      /* out of range */
    CHECK(es_token_to_piece(t, -1, -1, buf, 8) == 0);
}

static void test_long_text(const es_tokenizer *t) {
    /* ~1 MB of prose must encode quickly (the merge loop is O(n log n)) and round-trip */
    const char *para = "Once upon a time, there was a little girl named Lily. She loved to play outside. ";
    size_t pl = strlen(para), reps = 12000, n = pl * reps;
    char *text = malloc(n + 1);
    for (size_t i = 0; i < reps; i++) memcpy(text + i * pl, para, pl);
    text[n] = 0;
    int32_t *ids = malloc(n * sizeof *ids);
    clock_t c0 = clock();
    int cnt = encode(t, text, n, true, false, ids, (int)n);
    double secs = (double)(clock() - c0) / CLOCKS_PER_SEC;
    CHECK(cnt > 0 && (size_t)cnt < n / 2);
    CHECK_MSG(secs < 10.0, "1 MB took %.2f s", secs);
    char *back = decode(t, ids, cnt, NULL);
    CHECK(strcmp(back, text) == 0);
    free(back);
    free(ids);
    free(text);
}

static void test_fingerprint(void) {
    es_vocab *v = NULL;
    es_tokenizer *a = load_llama2c("tok512.bin", 512, &v);
    es_tokenizer *b = load_llama2c("tok512.bin", 512, NULL);
    if (!a || !b || !v) return;
    CHECK(es_tokenizer_fingerprint(a) == es_tokenizer_fingerprint(b));
    CHECK(es_tokenizer_fingerprint(a) != 0);
    es_err err_ = {{0}}, *err = &err_;
    es_vocab_spec spec = *es_vocab_spec_of(v);
    const char **toks = malloc(512 * sizeof *toks);
    size_t *lens = malloc(512 * sizeof *lens);
    for (int i = 0; i < 512; i++) { toks[i] = spec.tokens[i]; lens[i] = spec.lens[i]; }
    toks[300] = "zz";
    lens[300] = 2;
    spec.tokens = toks;
    spec.lens = lens;
    es_tokenizer *c = NULL;
    CHECK_OK(es_tokenizer_init(&spec, &c,  err),  err);
    CHECK(c && es_tokenizer_fingerprint(c) != es_tokenizer_fingerprint(a));
    es_tokenizer_free(c);
    spec = *es_vocab_spec_of(v);
    spec.eos = 5;
    CHECK_OK(es_tokenizer_init(&spec, &c,  err),  err);
    CHECK(c && es_tokenizer_fingerprint(c) != es_tokenizer_fingerprint(a));
    es_tokenizer_free(c);
    es_tokenizer *big = load_llama2c("tokenizer.bin", 32000, NULL);
    CHECK(big && es_tokenizer_fingerprint(big) != es_tokenizer_fingerprint(a));
    es_tokenizer_free(big);
    free(toks);
    free(lens);
    es_tokenizer_free(a);
    es_tokenizer_free(b);
    es_vocab_free(v);
}

static void put_i32(unsigned char *p, int32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)((uint32_t)v >> (8 * i));
}

static void test_malformed_llama2c(void) {
    size_t len;
    char *data = es_test_read_file(es_test_shared_model("tok512.bin"), &len);
    CHECK(data != NULL);
    if (!data) return;
    es_vocab *v = NULL;
    es_err err_ = {{0}}, *err = &err_;
    CHECK_OK(es_vocab_load_llama2c_buffer(data, len, 512, &v,  err),  err);
    CHECK(v && es_vocab_spec_of(v)->n_vocab == 512 && es_vocab_spec_of(v)->bos == 1);
    CHECK(v && es_vocab_spec_of(v)->types[0] == ES_TOKTYPE_UNKNOWN && es_vocab_spec_of(v)->types[2] == ES_TOKTYPE_CONTROL);
    CHECK(v && es_vocab_spec_of(v)->types[3 + 0x41] == ES_TOKTYPE_BYTE && es_vocab_spec_of(v)->types[300] == ES_TOKTYPE_NORMAL);
    es_vocab_free(v);
    v = NULL;
    /* truncated anywhere */
    for (size_t cut = 0; cut < len; cut += 97) {
        CHECK(es_vocab_load_llama2c_buffer(data, cut, 512, &v,  err) == ES_ERR_FORMAT && v == NULL);
    }
    CHECK(es_vocab_load_llama2c_buffer(data, len - 1, 512, &v,  err) == ES_ERR_FORMAT);
    /* more tokens than the file holds */
    CHECK(es_vocab_load_llama2c_buffer(data, len, 513, &v,  err) == ES_ERR_FORMAT);
    CHECK(es_vocab_load_llama2c_buffer(data, len, 1 << 30, &v,  err) == ES_ERR_FORMAT);
    CHECK(es_vocab_load_llama2c_buffer(data, len, 0, &v,  err) == ES_ERR_FORMAT);
    unsigned char *m = malloc(len);
    /* absurd max_token_length */
    memcpy(m, data, len);
    put_i32(m, 0x7fffffff);
    CHECK(es_vocab_load_llama2c_buffer(m, len, 512, &v,  err) == ES_ERR_FORMAT);
    put_i32(m, 0);
    CHECK(es_vocab_load_llama2c_buffer(m, len, 512, &v,  err) == ES_ERR_FORMAT);
    /* token 0's length: absurd, negative, above max_token_length */
    memcpy(m, data, len);
    put_i32(m + 8, 0x40000000);
    CHECK(es_vocab_load_llama2c_buffer(m, len, 512, &v,  err) == ES_ERR_FORMAT);
    put_i32(m + 8, -5);
    CHECK(es_vocab_load_llama2c_buffer(m, len, 512, &v,  err) == ES_ERR_FORMAT);
    put_i32(m + 8, 8);
    CHECK(es_vocab_load_llama2c_buffer(m, len, 512, &v,  err) == ES_ERR_FORMAT);
    CHECK(v == NULL);
    free(m);
    free(data);
    CHECK(es_vocab_load_llama2c("/nonexistent/tok.bin", 512, &v,  err) == ES_ERR_IO);
}

static es_status load_hf_text(const char *json, const char *cfg, es_vocab **v, es_err *err) {
    return es_vocab_load_hf_buffer(json, strlen(json), cfg, cfg ? strlen(cfg) : 0, v, err);
}

static void test_malformed_hf(void) {
    es_vocab *v = NULL;
    es_err err_ = {{0}}, *err = &err_;
    const char *ok = "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,\"a\":1,\"b\":2,\"ab\":3,"
                     "\"\xE2\x96\x81\":4},\"merges\":[\"a b\"],\"unk_token\":\"<unk>\"},"
                     "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
                     "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]}}";
    CHECK_OK(load_hf_text(ok, NULL, &v,  err),  err);
    CHECK(v && es_vocab_spec_of(v)->kind == ES_TOK_SPM && es_vocab_spec_of(v)->n_vocab == 5);
    CHECK(v && es_vocab_spec_of(v)->scores[3] == 0.0f && es_vocab_spec_of(v)->unk == 0);
    es_vocab_free(v);
    v = NULL;
    CHECK(load_hf_text("{not json", NULL, &v,  err) == ES_ERR_FORMAT);
    CHECK(load_hf_text("[1,2]", NULL, &v,  err) == ES_ERR_FORMAT);
    CHECK(load_hf_text("{\"version\":\"1.0\"}", NULL, &v,  err) == ES_ERR_FORMAT);            /* no model */
    CHECK(load_hf_text("{\"model\":{\"type\":\"BPE\"}}", NULL, &v,  err) == ES_ERR_FORMAT);  /* no vocab */
    CHECK(load_hf_text("{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{}}}", NULL, &v,  err) == ES_ERR_FORMAT);
    /* non-dense, duplicated, negative, fractional ids */
    CHECK(load_hf_text("{\"model\":{\"byte_fallback\":true,\"vocab\":{\"a\":0,\"b\":2}}}", NULL, &v,  err) == ES_ERR_FORMAT);
    CHECK(load_hf_text("{\"model\":{\"byte_fallback\":true,\"vocab\":{\"a\":0,\"b\":0}}}", NULL, &v,  err) == ES_ERR_FORMAT);
    CHECK(load_hf_text("{\"model\":{\"byte_fallback\":true,\"vocab\":{\"a\":-1}}}", NULL, &v,  err) == ES_ERR_FORMAT);
    CHECK(load_hf_text("{\"model\":{\"byte_fallback\":true,\"vocab\":{\"a\":0.5}}}", NULL, &v,  err) == ES_ERR_FORMAT);
    CHECK(load_hf_text("{\"model\":{\"byte_fallback\":true,\"vocab\":{\"a\":1e12}}}", NULL, &v,  err) == ES_ERR_FORMAT);
    CHECK(load_hf_text("{\"model\":{\"byte_fallback\":true,\"vocab\":{\"a\":\"0\"}}}", NULL, &v,  err) == ES_ERR_FORMAT);
    /* bad merges: no space, unknown parts, result not a token, not a string */
    const char *bad_merges[] = {"[\"ab\"]", "[\"a c\"]", "[\"b a\"]", "[[1,2]]", "[\"a  b\"]", "[\" a\"]", "7"};
    for (size_t i = 0; i < sizeof bad_merges / sizeof bad_merges[0]; i++) {
        char json[512];
        snprintf(json, sizeof json,
                 "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":%s}}",
                 bad_merges[i]);
        CHECK_MSG(load_hf_text(json, NULL, &v,  err) == ES_ERR_FORMAT, "merges %s accepted", bad_merges[i]);
    }
    /* the array form of merges is accepted */
    CHECK_OK(load_hf_text("{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
                          "\"merges\":[[\"a\",\"b\"]]}}",
                          NULL, &v,  err),
              err);
    CHECK(v && es_vocab_spec_of(v)->n_merges == 1 && strcmp(es_vocab_spec_of(v)->merges[0], "a b") == 0);
    es_vocab_free(v);
    v = NULL;
    /* unsupported model types and pre-tokenizers */
    CHECK(load_hf_text("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", NULL, &v,  err) == ES_ERR_UNSUPPORTED);
    CHECK(load_hf_text("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"pre_tokenizer\":{\"type\":\"Whitespace\"}}", NULL,
                       &v,  err) == ES_ERR_UNSUPPORTED);
    /* config: bos naming an unknown token */
    CHECK(load_hf_text(ok, "{\"bos_token\":\"<s>\"}", &v,  err) == ES_ERR_FORMAT);
    CHECK(load_hf_text(ok, "{\"add_bos_token\":3}", &v,  err) == ES_ERR_FORMAT);
    CHECK(load_hf_text(ok, "nope", &v,  err) == ES_ERR_FORMAT);
    CHECK_OK(load_hf_text(ok, "{\"bos_token\":{\"content\":\"a\"},\"eos_token\":\"b\",\"add_bos_token\":true,"
                              "\"chat_template\":\"{{ x }}\"}",
                          &v,  err),
              err);
    CHECK(v && es_vocab_spec_of(v)->bos == 1 && es_vocab_spec_of(v)->eos == 2 && es_vocab_spec_of(v)->add_bos);
    CHECK(v && es_vocab_spec_of(v)->chat_template && strcmp(es_vocab_spec_of(v)->chat_template, "{{ x }}") == 0);
    es_vocab_free(v);
    v = NULL;
    CHECK(es_vocab_load_hf("/nonexistent/tokenizer.json", NULL, &v,  err) == ES_ERR_IO);
}

static void test_hf_reference(void) {
    es_vocab *v = NULL;
    es_err err_ = {{0}}, *err = &err_;
    CHECK_OK(es_vocab_load_hf(es_test_shared_model("TinyStories-656K/tokenizer.json"),
                              es_test_shared_model("TinyStories-656K/tokenizer_config.json"), &v,  err),
              err);
    if (!v) return;
    const es_vocab_spec *spec = es_vocab_spec_of(v);
    CHECK(spec->kind == ES_TOK_SPM && spec->n_vocab == 2048 && spec->bos == 1 && spec->eos == 2 && spec->unk == 0);
    CHECK(spec->add_bos && !spec->add_eos && spec->add_space_prefix && spec->n_merges == 1967);
    es_tokenizer *t = NULL;
    CHECK_OK(es_tokenizer_init(spec, &t,  err),  err);
    /* the same vocabulary merged by score only (no merges): the scores stand for the merge ranks */
    es_vocab_spec by_score = *spec;
    by_score.merges = NULL;
    by_score.n_merges = 0;
    es_tokenizer *ts = NULL;
    CHECK_OK(es_tokenizer_init(&by_score, &ts,  err),  err);
    /* and without tokenizer_config.json: BOS and add_bos come from the post-processor */
    es_vocab *v2 = NULL;
    CHECK_OK(es_vocab_load_hf(es_test_shared_model("TinyStories-656K/tokenizer.json"), NULL, &v2,  err),  err);
    CHECK(v2 && es_vocab_spec_of(v2)->bos == 1 && es_vocab_spec_of(v2)->add_bos && es_vocab_spec_of(v2)->eos == -1);
    es_vocab_free(v2);
    if (!t || !ts) return;

    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/tinystories656k-tokenizer-ref.jsonl", getenv("ES_SRC") ? getenv("ES_SRC") : ".");
    size_t len;
    char *data = es_test_read_file(path, &len);
    CHECK_MSG(data != NULL, "cannot read %s (set ES_SRC to the source tree)", path);
    if (!data) return;
    int lines = 0, score_mismatch = 0, round_trips = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        CHECK(j != NULL);
        if (!j) continue;
        const char *text = cJSON_GetObjectItem(j, "text")->valuestring;
        int32_t want[MAXTOK], got[MAXTOK];
        int nw = json_ids(cJSON_GetObjectItem(j, "ids"), want, MAXTOK);
        int ng = encode(t, text, strlen(text), true, true, got, MAXTOK);
        CHECK_MSG(same_ids(want, nw, got, ng), "HF reference \"%s\": %d ids, want %d", text, ng, nw);
        int ns = encode(ts, text, strlen(text), true, true, got, MAXTOK);
        if (!same_ids(want, nw, got, ns)) score_mismatch++;
        bool has_unk = false;
        for (int i = 0; i < nw; i++) has_unk |= want[i] == 0;
        if (!has_unk) { /* <unk> loses the text: only texts the vocabulary covers round-trip */
            char *back = decode(t, want, nw, NULL);
            CHECK_MSG(strcmp(back, text) == 0, "HF round trip \"%s\" -> \"%s\"", text, back);
            free(back);
            round_trips++;
        }
        cJSON_Delete(j);
        lines++;
    }
    CHECK(lines >= 70);
    CHECK(round_trips >= 55);
    CHECK_MSG(score_mismatch == 0, "%d texts differ when merged by score instead of merge rank", score_mismatch);
    free(data);
    es_tokenizer_free(ts);
    es_tokenizer_free(t);
    es_vocab_free(v);
}

static void test_special_spm(const es_tokenizer *t) {
    /* llama2.c's BOS text is "\n<s>\n": matched only when parse_special */
    const char *s = "hi\n<s>\nthere";
    int32_t a[64], b[64];
    int na = encode(t, s, strlen(s), false, true, a, 64);
    int nb = encode(t, s, strlen(s), false, false, b, 64);
    bool has_bos_a = false, has_bos_b = false;
    for (int i = 0; i < na; i++) has_bos_a |= a[i] == 1;
    for (int i = 0; i < nb; i++) has_bos_b |= b[i] == 1;
    CHECK(has_bos_a && !has_bos_b);
}

int main(void) {
    CHECK(tok_cc_table_ok());
    es_tokenizer *t512 = load_llama2c("tok512.bin", 512, NULL);
    if (t512) {
        CHECK(es_tokenizer_n_vocab(t512) == 512 && es_tokenizer_bos(t512) == 1 && es_tokenizer_eos(t512) == 2);
        test_golden(t512);
        test_against_reference_loop(t512, 400, 1);
        test_byte_fallback(t512, "ü");
        test_empty_and_cap(t512);
        test_long_text(t512);
        test_special_spm(t512);
    }
    es_tokenizer *t32k = load_llama2c("tokenizer.bin", 32000, NULL);
    if (t32k) {
        test_against_reference_loop(t32k, 300, 2);
        test_byte_fallback(t32k, "\xF0\x9F\xA6\x99"); /* U+1F999 */
        const char *s = "Hello world";
        int32_t ids[16];
        int n = encode(t32k, s, strlen(s), true, false, ids, 16);
        /* Llama 2: <s> ▁Hello ▁world */
        CHECK(n == 3 && ids[0] == 1 && ids[1] == 15043 && ids[2] == 3186);
    }
    test_fingerprint();
    test_malformed_llama2c();
    test_malformed_hf();
    test_hf_reference();
    es_tokenizer_free(t512);
    es_tokenizer_free(t32k);
    return es_test_finish("test_tokenizer");
}
