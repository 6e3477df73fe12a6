/* test_grammar.c — the JSON grammar engine: schemas compile (or are refused with a message naming the
 * keyword), the byte automaton accepts exactly the documents of its schema, the trie mask equals the
 * token-by-token brute force on real vocabularies, and random walks through the mask always end in a
 * document that parses (cJSON) and validates against its schema. With the real Qwen vocabulary
 * (make models-real) it also prints how long a mask takes over 151K tokens (printed, never asserted). */
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "grammar/grammar.h"
#include "gguf/gguf.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"
#include "util/rng.h"

static es_grammar *compile(const char *schema) {
    es_err err = {0};
    es_grammar *g = NULL;
    CHECK_OK(es_grammar_from_schema(schema, strlen(schema), &g, &err), &err);
    return g;
}

/* Whether the automaton accepts all of s and may end after it. */
static bool accepts(const es_grammar *g, const char *s) {
    es_gstate st;
    es_gstate_init(g, &st);
    for (const char *p = s; *p; p++)
        if (!es_gstate_feed(g, &st, (uint8_t)*p)) return false;
    return es_gstate_can_end(g, &st);
}

static const char k_person[] =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\"},"
    "\"age\":{\"type\":\"integer\"},"
    "\"role\":{\"enum\":[\"admin\",\"user\",\"guest\"]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":1,\"maxItems\":3},"
    "\"address\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"zip\":{\"type\":[\"string\",\"null\"]}},"
    "\"required\":[\"city\"],\"additionalProperties\":false},"
    "\"score\":{\"type\":\"number\"},\"ok\":{\"type\":\"boolean\"}},"
    "\"required\":[\"name\",\"age\",\"role\"],\"additionalProperties\":false}";

static void test_automaton(void) {
    es_grammar *g = compile(k_person);
    if (!g) return;
    CHECK(accepts(g, "{\"name\":\"Ann\",\"age\":31,\"role\":\"admin\"}"));
    CHECK(accepts(g, "{ \"name\" : \"A\\\"n\\u00e9\", \"age\": -7, \"role\": \"guest\", \"tags\": [\"x\", \"y\"],\n"
                     "  \"address\": {\"city\": \"Oslo\", \"zip\": null}, \"score\": 1.5e-3, \"ok\": true }"));
    CHECK(!accepts(g, "{\"name\":\"Ann\",\"age\":31}"));                         /* role required */
    CHECK(!accepts(g, "{\"age\":31,\"name\":\"Ann\",\"role\":\"admin\"}"));      /* declaration order */
    CHECK(!accepts(g, "{\"name\":\"Ann\",\"age\":3.5,\"role\":\"admin\"}"));     /* integer */
    CHECK(!accepts(g, "{\"name\":\"Ann\",\"age\":01,\"role\":\"admin\"}"));      /* leading zero */
    CHECK(!accepts(g, "{\"name\":\"Ann\",\"age\":1,\"role\":\"root\"}"));        /* enum */
    CHECK(!accepts(g, "{\"name\":\"Ann\",\"age\":1,\"role\":\"user\",\"tags\":[]}")); /* minItems */
    CHECK(!accepts(g, "{\"name\":\"Ann\",\"age\":1,\"role\":\"user\",\"tags\":[\"a\",\"b\",\"c\",\"d\"]}"));
    CHECK(!accepts(g, "{\"name\":\"Ann\",\"age\":1,\"role\":\"user\",\"extra\":1}"));
    CHECK(!accepts(g, "{\"name\":\"Ann\",\"age\":1,\"role\":\"user\"} x"));     /* nothing after the value */
    CHECK(!accepts(g, "{\"name\":\"a\nb\",\"age\":1,\"role\":\"user\"}"));       /* raw control byte */
    CHECK(!accepts(g, "{\"name\":\"Ann\",\"age\":1,\"role\":\"user\""));         /* unfinished */
    CHECK(!accepts(g, "{                          \"name\":\"Ann\",\"age\":1,\"role\":\"user\"}")); /* > MAX_WS */
    CHECK(!accepts(g, "{\n\n\"name\":\"Ann\",\"age\":1,\"role\":\"user\"}"));   /* two line breaks in a gap */
    CHECK(!accepts(g, "{        \"name\":\"Ann\",\"age\":1,\"role\":\"user\"}"));   /* 8 > 1 + 4 at depth 1 */
    CHECK(accepts(g, "{\n    \"name\":\"Ann\",\"age\":1,\"role\":\"user\"\n}"));
    CHECK(!accepts(g, " {\"name\":\"Ann\",\"age\":1,\"role\":\"user\"}"));        /* nothing before the value */
    es_grammar_free(g);

    /* json_object: any object, nothing else */
    es_err err = {0};
    CHECK_OK(es_grammar_json_object(&g, &err), &err);
    CHECK(accepts(g, "{}"));
    CHECK(accepts(g, "{\"a\":[1,{\"b\":null},\"c\",true,false,-0.5E+3],\"d\":{}}"));
    CHECK(!accepts(g, "[1]"));
    CHECK(!accepts(g, "{\"a\":tru}"));
    CHECK(!accepts(g, "{\"a\":1,}"));
    es_grammar_free(g);

    /* $defs with recursion, anyOf with distinct starts, a top-level number */
    g = compile("{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
                "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\"]}},"
                "\"$ref\":\"#/$defs/node\"}");
    if (g) {
        CHECK(accepts(g, "{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[]}]}"));
        CHECK(!accepts(g, "{\"v\":1,\"kids\":[{\"w\":2}]}"));
        es_grammar_free(g);
    }
    g = compile("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\"},{\"type\":\"null\"}]}");
    if (g) {
        CHECK(accepts(g, "\"x\"") && accepts(g, "12") && accepts(g, "null"));
        CHECK(!accepts(g, "true") && !accepts(g, "1.5"));
        es_grammar_free(g);
    }
    g = compile("{\"enum\":[1,12,\"a\",null,{\"k\":[true]}]}");
    if (g) {
        CHECK(accepts(g, "1") && accepts(g, "12") && accepts(g, "\"a\"") && accepts(g, "null") && accepts(g, "{\"k\":[true]}"));
        CHECK(!accepts(g, "2") && !accepts(g, "123") && !accepts(g, "{ \"k\":[true]}"));
        es_grammar_free(g);
    }
}

static void test_refusals(void) {
    static const struct { const char *schema, *word; } k[] = {
        {"{\"type\":\"string\",\"pattern\":\"a+\"}", "pattern"},
        {"{\"type\":\"string\",\"maxLength\":3}", "maxLength"},
        {"{\"type\":\"integer\",\"minimum\":0}", "minimum"},
        {"{\"type\":\"object\",\"patternProperties\":{}}", "patternProperties"},
        {"{\"type\":\"date\"}", "type"},
        {"{\"anyOf\":[{\"type\":\"object\"},{\"type\":\"object\",\"properties\":{\"a\":{}}}]}", "anyOf"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "required"},
        {"{\"$ref\":\"#/$defs/missing\"}", "$ref"},
        {"{\"$ref\":\"http://example.com/s.json\"}", "$ref"},
        {"{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", "$ref"},
        {"{\"type\":\"array\",\"items\":[{}]}", "items"},
        {"{\"type\":\"array\",\"minItems\":-1}", "minItems"},
        {"{\"enum\":[]}", "enum"},
        {"{\"type\":\"object\",\"properties\":", "JSON"},
        {"false", "nothing"},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        es_err err = {0};
        es_grammar *g = NULL;
        const es_status st = es_grammar_from_schema(k[i].schema, strlen(k[i].schema), &g, &err);
        CHECK_MSG(st == ES_ERR_INVALID_ARG && !g, "schema %s was accepted", k[i].schema);
        CHECK_MSG(strstr(err.msg, k[i].word) != NULL, "message for %s: '%s' does not name %s", k[i].schema, err.msg, k[i].word);
        es_grammar_free(g);
    }
}

/* ---- a validator for the test schemas (the subset, independent of the automaton) ---- */
static bool validate(const cJSON *v, const cJSON *s, const cJSON *root) {
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (ref) return validate(v, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "$defs"), ref->valuestring + 8), root);
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    if (en) {
        for (const cJSON *e = en->child; e; e = e->next)
            if (cJSON_Compare(e, v, true)) return true;
        return false;
    }
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    if (any) {
        for (const cJSON *a = any->child; a; a = a->next)
            if (validate(v, a, root)) return true;
        return false;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (!t) return true;
    if (cJSON_IsArray(t)) {
        for (const cJSON *x = t->child; x; x = x->next) {
            cJSON *one = cJSON_Duplicate(s, true);
            cJSON_ReplaceItemInObjectCaseSensitive(one, "type", cJSON_CreateString(x->valuestring));
            const bool ok = validate(v, one, root);
            cJSON_Delete(one);
            if (ok) return true;
        }
        return false;
    }
    const char *ty = t->valuestring;
    if (!strcmp(ty, "string")) return cJSON_IsString(v);
    if (!strcmp(ty, "number")) return cJSON_IsNumber(v);
    if (!strcmp(ty, "integer")) return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
    if (!strcmp(ty, "boolean")) return cJSON_IsBool(v);
    if (!strcmp(ty, "null")) return cJSON_IsNull(v);
    if (!strcmp(ty, "array")) {
        if (!cJSON_IsArray(v)) return false;
        const int n = cJSON_GetArraySize(v);
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(s, "minItems"), *mx = cJSON_GetObjectItemCaseSensitive(s, "maxItems");
        if ((mn && n < mn->valueint) || (mx && n > mx->valueint)) return false;
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        for (const cJSON *e = v->child; e && items; e = e->next)
            if (!validate(e, items, root)) return false;
        return true;
    }
    if (!cJSON_IsObject(v)) return false;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties"), *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
        if (!cJSON_GetObjectItemCaseSensitive(v, r->valuestring)) return false;
    for (const cJSON *m = v->child; m; m = m->next) {
        const cJSON *ps = props ? cJSON_GetObjectItemCaseSensitive(props, m->string) : NULL;
        if (props && !ps) return false;
        if (ps && !validate(m, ps, root)) return false;
    }
    return true;
}

/* Token-by-token: the trie mask equals es_gmatcher_allows for every token, at every step of random
 * walks that pick allowed tokens (biased to end tokens once allowed, so walks finish); the finished
 * text parses and validates. */
static void walk_and_check(const es_tokenizer *tok, const es_grammar_vocab *gv, const char *schema_txt, int walks, int full_checks,
                           uint64_t seed) {
    es_err err = {0};
    es_grammar *g = NULL;
    if (schema_txt) CHECK_OK(es_grammar_from_schema(schema_txt, strlen(schema_txt), &g, &err), &err);
    else CHECK_OK(es_grammar_json_object(&g, &err), &err);
    if (!g) return;
    cJSON *schema = schema_txt ? cJSON_Parse(schema_txt) : NULL;
    const int32_t end = es_tokenizer_eos(tok) >= 0 ? es_tokenizer_eos(tok) : 0;
    es_gmatcher *m = NULL;
    CHECK_OK(es_gmatcher_init(g, gv, &end, 1, &m, &err), &err);
    const int n_vocab = es_tokenizer_n_vocab(tok);
    int32_t *allowed = malloc((size_t)n_vocab * sizeof *allowed);
    es_rng rng;
    es_rng_seed(&rng, seed);
    int checks = 0, finished = 0;
    for (int w = 0; w < walks && m && allowed; w++) {
        es_gmatcher_reset(m);
        char text[8192];
        int len = 0;
        for (int step = 0; step < 600; step++) {
            const uint64_t *mask = es_gmatcher_mask(m);
            int n = 0;
            bool mismatch = false;
            for (int t = 0; t < n_vocab; t++) {
                const bool in = es_mask_test(mask, t);
                if (in) allowed[n++] = t;
                if (checks < full_checks && in != es_gmatcher_allows(m, t)) {
                    if (!mismatch) CHECK_MSG(false, "walk %d step %d: token %d mask %d, brute force %d", w, step, t, in, !in);
                    mismatch = true;
                }
            }
            checks++;
            CHECK_MSG(n > 0, "walk %d step %d: the mask allows nothing", w, step);
            if (n == 0) break;
            /* half the time a token that closes something: inside a string nearly every token is
             * allowed, and a uniform pick would almost never close it */
            int n_close = 0;
            if (es_rng_next(&rng) & 1)
                for (int k = 0; k < n; k++) {
                    char pc[256];
                    const int pl = es_token_to_piece(tok, -1, allowed[k], pc, sizeof pc);
                    if (memchr(pc, '"', (size_t)pl) || memchr(pc, '}', (size_t)pl) || memchr(pc, ']', (size_t)pl))
                        allowed[n_close++] = allowed[k];
                }
            int32_t pick = allowed[es_rng_next(&rng) % (uint64_t)(n_close ? n_close : n)];
            /* end once allowed, and lean toward closing: walks would otherwise wander */
            if (es_mask_test(mask, end) && step > 8) pick = end;
            CHECK(es_gmatcher_accept(m, pick));
            if (pick == end) { finished++; break; }
            char piece[256];
            const int pl = es_token_to_piece(tok, -1, pick, piece, sizeof piece);
            if (len + pl < (int)sizeof text) { memcpy(text + len, piece, (size_t)pl); len += pl; }
        }
        text[len] = 0;
        if (!es_gmatcher_ended(m)) continue; /* a long walk: nothing to validate */
        cJSON *doc = cJSON_Parse(text);
        CHECK_MSG(doc != NULL, "walk %d: the output does not parse: %s", w, text);
        if (doc && schema) CHECK_MSG(validate(doc, schema, schema), "walk %d: the output does not validate: %s", w, text);
        if (doc && !schema) CHECK(cJSON_IsObject(doc));
        cJSON_Delete(doc);
    }
    CHECK_MSG(finished > 0, "no walk finished");
    free(allowed);
    cJSON_Delete(schema);
    es_gmatcher_free(m);
    es_grammar_free(g);
}

static const char k_nested[] =
    "{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
    "\"id\":{\"type\":\"integer\"},\"kind\":{\"enum\":[\"a\",\"b\"]},\"w\":{\"type\":[\"number\",\"null\"]}},"
    "\"required\":[\"id\",\"kind\"]},\"maxItems\":2},\"flag\":{\"type\":\"boolean\"}},\"required\":[\"items\",\"flag\"]}";

static void test_vocab(const es_tokenizer *tok, const char *name, int walks, int full_checks) {
    es_err err = {0};
    es_grammar_vocab *gv = NULL;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CHECK_OK(es_grammar_vocab_init(tok, &gv, &err), &err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (!gv) return;
    int nf, ns, np;
    es_grammar_vocab_stats(gv, &nf, &ns, &np);
    printf("%s: %d tokens, trie %d nodes, special trie %d nodes, %d plain-string tokens, built in %.1f ms\n", name,
           es_tokenizer_n_vocab(tok), nf, ns, np, (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6);
    walk_and_check(tok, gv, k_person, walks, full_checks, 1);
    walk_and_check(tok, gv, k_nested, walks, full_checks, 2);
    walk_and_check(tok, gv, NULL, walks, full_checks, 3);
    es_grammar_vocab_free(gv);
}

/* The cost of one mask over the real 151K vocabulary in the states a generation meets most: before a
 * value, inside a string, after a member, inside a number. Printed only. */
static void time_masks(const es_tokenizer *tok) {
    es_err err = {0};
    es_grammar_vocab *gv = NULL;
    es_grammar *g = compile(k_person);
    CHECK_OK(es_grammar_vocab_init(tok, &gv, &err), &err);
    if (!gv || !g) { es_grammar_free(g); es_grammar_vocab_free(gv); return; }
    static const char *const prefixes[] = {"", "{\"name\":\"Al", "{\"name\":\"Al\"", "{\"name\":\"Al\",\"age\":4", "{\"name\":\"Al\",\"age\":4,"};
    const int32_t end = es_tokenizer_eos(tok);
    es_gmatcher *m = NULL;
    CHECK_OK(es_gmatcher_init(g, gv, &end, 1, &m, &err), &err);
    for (size_t i = 0; m && i < sizeof prefixes / sizeof prefixes[0]; i++) {
        es_gstate s;
        es_gstate_init(g, &s);
        bool ok = true;
        for (const char *p = prefixes[i]; *p; p++) ok = ok && es_gstate_feed(g, &s, (uint8_t)*p);
        CHECK(ok);
        const int reps = 20;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int n = 0;
        for (int r = 0; r < reps; r++) {
            es_gmatcher_set_state(m, &s);
            const uint64_t *mask = es_gmatcher_mask(m);
            n = 0;
            for (int w = 0; w < (es_tokenizer_n_vocab(tok) + 63) / 64; w++) n += __builtin_popcountll(mask[w]);
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        const double ms = ((double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6) / reps;
        printf("real vocabulary: mask after '%s': %d tokens allowed, %.3f ms\n", prefixes[i], n, ms);
    }
    es_gmatcher_free(m);
    es_grammar_free(g);
    es_grammar_vocab_free(gv);
}

int main(void) {
    test_automaton();
    test_refusals();
    es_err err = {0};
    es_vocab *v = NULL;
    es_tokenizer *t = NULL;
    CHECK_OK(es_vocab_load_llama2c(es_test_shared_model("tok512.bin"), 512, &v, &err), &err);
    if (v) CHECK_OK(es_tokenizer_init(es_vocab_spec_of(v), &t, &err), &err);
    if (t) test_vocab(t, "tok512", 20, 200);
    es_tokenizer_free(t);
    es_vocab_free(v);
    /* the real Qwen2.5 vocabulary (byte-level BPE, 151K tokens), when it is in the cache */
    const char *cache = getenv("EDGESPEC_CACHE"), *home = getenv("HOME");
    char path[4096];
    if (cache && *cache) snprintf(path, sizeof path, "%s/qwen2.5-coder-0.5b-instruct-awq-mixed.gguf", cache);
    else snprintf(path, sizeof path, "%s/.cache/edgespec/models/qwen2.5-coder-0.5b-instruct-awq-mixed.gguf", home ? home : "");
    es_gguf *gg = NULL;
    if (access(path, R_OK) == 0 && es_gguf_open(path, &gg, &err) == ES_OK) {
        es_tokenizer *q = NULL;
        CHECK_OK(es_tokenizer_from_gguf(gg, &q, &err), &err);
        if (q) {
            test_vocab(q, "qwen2.5", 6, 12);
            time_masks(q);
        }
        es_tokenizer_free(q);
        es_gguf_free(gg);
    } else {
        printf("test_grammar: the real Qwen vocabulary is not in the cache: its part skipped\n");
    }
    return es_test_finish("test_grammar");
}
