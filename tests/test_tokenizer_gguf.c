/* test_tokenizer_gguf.c — vocabularies survive the trip through GGUF metadata (es_vocab_write_gguf ->
 * es_gguf_write -> es_gguf_open -> es_tokenizer_from_gguf: same fingerprint, same encodings), and
 * malformed tokenizer metadata is rejected. Needs the GGUF reader/writer (src/gguf). */
#include <string.h>

#include "gguf/gguf.h"
#include "testutil.h"
#include "tokenizer/tok_impl.h"

static const char *const k_texts[] = {
    "Once upon a time, there was a little girl named Lily.",
    "  two leading spaces and café, 日本, 😀!\nnew line\ttab 12345",
    "",
    "x",
};

/* Writes spec into a GGUF file named `name` and reads the tokenizer back (NULL on failure). */
static es_tokenizer *round_trip(const es_vocab_spec *spec, const char *name) {
    es_err err_ = {{0}}, *err = &err_;
    es_gguf_writer *w = es_gguf_writer_init();
    CHECK(w != NULL);
    if (!w) return NULL;
    CHECK_OK(es_vocab_write_gguf(spec, w, err), err);
    CHECK_OK(es_gguf_set_str(w, "general.architecture", "llama"), err);
    const char *path = es_test_tmp(name);
    CHECK_OK(es_gguf_write(w, path, NULL, NULL, err), err);
    es_gguf_writer_free(w);
    es_gguf *g = NULL;
    CHECK_OK(es_gguf_open(path, &g, err), err);
    if (!g) return NULL;
    es_tokenizer *t = NULL;
    CHECK_OK(es_tokenizer_from_gguf(g, &t, err), err);
    es_gguf_free(g);
    return t;
}

static void compare(const es_tokenizer *a, const es_tokenizer *b) {
    CHECK(es_tokenizer_fingerprint(a) == es_tokenizer_fingerprint(b));
    CHECK(es_tokenizer_n_vocab(a) == es_tokenizer_n_vocab(b));
    CHECK(es_tokenizer_bos(a) == es_tokenizer_bos(b) && es_tokenizer_eos(a) == es_tokenizer_eos(b));
    CHECK(es_tokenizer_unk(a) == es_tokenizer_unk(b) && es_tokenizer_kind(a) == es_tokenizer_kind(b));
    CHECK(es_tokenizer_add_bos(a) == es_tokenizer_add_bos(b) && es_tokenizer_add_eos(a) == es_tokenizer_add_eos(b));
    for (int32_t id = 0; id < es_tokenizer_n_vocab(a); id++) {
        if (es_tokenizer_token_type(a, id) != es_tokenizer_token_type(b, id) ||
            es_tokenizer_token_score(a, id) != es_tokenizer_token_score(b, id)) {
            CHECK_MSG(false, "token %d differs in type or score", id);
            break;
        }
    }
    for (size_t i = 0; i < sizeof k_texts / sizeof k_texts[0]; i++) {
        int32_t x[512], y[512];
        int nx = -1, ny = -2;
        es_err err_ = {{0}}, *err = &err_;
        CHECK_OK(es_tokenize(a, k_texts[i], strlen(k_texts[i]), true, true, x, 512, &nx, err), err);
        CHECK_OK(es_tokenize(b, k_texts[i], strlen(k_texts[i]), true, true, y, 512, &ny, err), err);
        CHECK_MSG(nx == ny && memcmp(x, y, (size_t)(nx > 0 ? nx : 0) * sizeof *x) == 0, "text %zu encodes differently", i);
    }
}

static void test_vocab(es_vocab *v, const char *name) {
    es_err err_ = {{0}}, *err = &err_;
    es_tokenizer *a = NULL;
    CHECK_OK(es_tokenizer_init(es_vocab_spec_of(v), &a, err), err);
    es_tokenizer *b = round_trip(es_vocab_spec_of(v), name);
    if (a && b) compare(a, b);
    const char *ta = es_tokenizer_chat_template(a), *tb = es_tokenizer_chat_template(b);
    CHECK((ta == NULL) == (tb == NULL) && (!ta || strcmp(ta, tb) == 0));
    es_tokenizer_free(a);
    es_tokenizer_free(b);
}

/* True when some normal token's text contains `needle`. */
static bool normal_has(const es_tokenizer *t, const char *needle) {
    for (int32_t id = 0; id < es_tokenizer_n_vocab(t); id++) {
        size_t len;
        const char *s = es_tokenizer_token_text(t, id, &len);
        if (es_tokenizer_token_type(t, id) == ES_TOKTYPE_NORMAL && s && memmem(s, len, needle, strlen(needle))) return true;
    }
    return false;
}

/* llama2.c vocabularies spell spaces ' '; GGUF's convention (what llama.cpp reads) is U+2581. The
 * writer uses U+2581; a file written the old way (plain spaces, as edgespec wrote them before) still
 * loads, with the same fingerprint and encodings. */
static void test_space_forms(es_vocab *v, const char *name, const char *word, int32_t word_id) {
    es_err err_ = {{0}}, *err = &err_;
    const es_vocab_spec *spec = es_vocab_spec_of(v);
    es_tokenizer *mem = NULL;
    CHECK_OK(es_tokenizer_init(spec, &mem, err), err);
    char path_new[64], path_old[64];
    snprintf(path_new, sizeof path_new, "%s-new.gguf", name);
    snprintf(path_old, sizeof path_old, "%s-old.gguf", name);
    es_tokenizer *now = round_trip(spec, path_new);
    /* the old form: the same metadata with the loader's plain-space texts put back */
    es_gguf_writer *w = es_gguf_writer_init();
    CHECK_OK(es_vocab_write_gguf(spec, w, err), err);
    CHECK_OK(es_gguf_set_arr_str(w, "tokenizer.ggml.tokens", spec->tokens, spec->lens, (uint64_t)spec->n_vocab), err);
    CHECK_OK(es_gguf_set_str(w, "general.architecture", "llama"), err);
    CHECK_OK(es_gguf_write(w, es_test_tmp(path_old), NULL, NULL, err), err);
    es_gguf_writer_free(w);
    es_gguf *g = NULL;
    es_tokenizer *old = NULL;
    CHECK_OK(es_gguf_open(es_test_tmp(path_old), &g, err), err);
    if (g) CHECK_OK(es_tokenizer_from_gguf(g, &old, err), err);
    es_gguf_free(g);
    if (mem && now && old) {
        CHECK_MSG(normal_has(mem, " ") && !normal_has(mem, "\xE2\x96\x81"), "%s: the loader keeps llama2.c's spaces", name);
        CHECK_MSG(normal_has(now, "\xE2\x96\x81") && !normal_has(now, " "), "%s: written with U+2581, no plain space", name);
        CHECK_MSG(normal_has(old, " ") && !normal_has(old, "\xE2\x96\x81"), "%s: the old form has plain spaces", name);
        size_t len;
        const char *txt = es_tokenizer_token_text(now, word_id, &len);
        CHECK_MSG(txt && len == strlen(word) && memcmp(txt, word, len) == 0, "%s: token %d is \"%.*s\"", name, word_id,
                  (int)(txt ? len : 0), txt ? txt : "");
        compare(now, old);
        compare(mem, now);
    }
    es_tokenizer_free(mem);
    es_tokenizer_free(now);
    es_tokenizer_free(old);
}

/* A GGUF whose tokenizer metadata is broken by `breakit`. */
static es_status load_broken(void (*breakit)(es_gguf_writer *w), es_vocab *v) {
    es_err err_ = {{0}}, *err = &err_;
    es_gguf_writer *w = es_gguf_writer_init();
    es_vocab_write_gguf(es_vocab_spec_of(v), w, err);
    breakit(w);
    const char *path = es_test_tmp("tok_broken.gguf");
    es_gguf_write(w, path, NULL, NULL, err);
    es_gguf_writer_free(w);
    es_gguf *g = NULL;
    CHECK_OK(es_gguf_open(path, &g, err), err);
    if (!g) return ES_ERR_INTERNAL;
    es_tokenizer *t = NULL;
    es_status st = es_tokenizer_from_gguf(g, &t, err);
    CHECK((st == ES_OK) == (t != NULL));
    es_tokenizer_free(t);
    es_gguf_free(g);
    return st;
}

static void short_scores(es_gguf_writer *w) {
    float s[3] = {0};
    es_gguf_set_arr(w, "tokenizer.ggml.scores", ES_GGUF_FLOAT32, s, 3);
}
static void bad_bos(es_gguf_writer *w) { es_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 100000); }
static void bad_model(es_gguf_writer *w) { es_gguf_set_str(w, "tokenizer.ggml.model", "bert"); }
static void no_model(es_gguf_writer *w) { es_gguf_set_u32(w, "tokenizer.ggml.model", 3); }
static void bad_type(es_gguf_writer *w) {
    int32_t ty[512];
    for (int i = 0; i < 512; i++) ty[i] = 1;
    ty[7] = 42;
    es_gguf_set_arr(w, "tokenizer.ggml.token_type", ES_GGUF_INT32, ty, 512);
}
static void types_as_floats(es_gguf_writer *w) {
    float ty[512] = {0};
    es_gguf_set_arr(w, "tokenizer.ggml.token_type", ES_GGUF_FLOAT32, ty, 512);
}
static void bad_merges(es_gguf_writer *w) {
    const char *m[1] = {"nosuch token"};
    size_t l[1] = {12};
    es_gguf_set_arr_str(w, "tokenizer.ggml.merges", m, l, 1);
}
static void bool_as_int(es_gguf_writer *w) { es_gguf_set_u32(w, "tokenizer.ggml.add_bos_token", 1); }

/* A byte-level BPE vocabulary: the 256 mapped bytes, then "Ġt" and "Ġth" by two merges. */
static void test_bpe(void) {
    static char store[256][8];
    const char *toks[259];
    for (int b = 0; b < 256; b++) {
        int l = tok_utf8_put(tok_byte_to_cp((uint8_t)b), store[b]);
        store[b][l] = 0;
        toks[b] = store[b];
    }
    toks[256] = "\xC4\xA0t";
    toks[257] = "\xC4\xA0th";
    toks[258] = "<|eot|>";
    const char *merges[2] = {"\xC4\xA0 t", "\xC4\xA0t h"};
    int32_t types[259];
    for (int i = 0; i < 259; i++) types[i] = ES_TOKTYPE_NORMAL;
    types[258] = ES_TOKTYPE_CONTROL;
    es_vocab_spec spec = {.kind = ES_TOK_BPE, .n_vocab = 259, .tokens = toks, .types = types, .merges = merges,
                          .n_merges = 2, .bos = -1, .eos = 258, .unk = -1, .pad = -1, .pre = "llama-bpe",
                          .chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"};
    es_err err_ = {{0}}, *err = &err_;
    es_tokenizer *a = NULL;
    CHECK_OK(es_tokenizer_init(&spec, &a, err), err);
    es_tokenizer *b = round_trip(&spec, "bpe.gguf");
    if (a && b) {
        compare(a, b);
        int32_t ids[8];
        int n = -1;
        CHECK_OK(es_tokenize(b, " the<|eot|>", 11, true, true, ids, 8, &n, err), err);
        CHECK(n == 3 && ids[0] == 257 && ids[1] == 'e' && ids[2] == 258);
        CHECK(es_tokenizer_chat_template(b) && strcmp(es_tokenizer_chat_template(b), spec.chat_template) == 0);
    }
    es_tokenizer_free(a);
    es_tokenizer_free(b);
}

int main(void) {
    test_bpe();
    es_err err_ = {{0}}, *err = &err_;
    es_vocab *v = NULL;
    CHECK_OK(es_vocab_load_llama2c(es_test_shared_model("tok512.bin"), 512, &v, err), err);
    if (v) {
        test_vocab(v, "tok512.gguf");
        test_space_forms(v, "tok512", "\xE2\x96\x81Once", 403);
        CHECK(load_broken(short_scores, v) == ES_ERR_FORMAT);
        CHECK(load_broken(bad_bos, v) == ES_ERR_FORMAT);
        CHECK(load_broken(bad_model, v) == ES_ERR_UNSUPPORTED);
        CHECK(load_broken(no_model, v) == ES_ERR_FORMAT);
        CHECK(load_broken(bad_type, v) == ES_ERR_FORMAT);
        CHECK(load_broken(types_as_floats, v) == ES_ERR_FORMAT);
        CHECK(load_broken(bad_merges, v) == ES_ERR_FORMAT);
        CHECK(load_broken(bool_as_int, v) == ES_ERR_FORMAT);
    }
    es_vocab_free(v);
    v = NULL;
    CHECK_OK(es_vocab_load_llama2c(es_test_shared_model("tokenizer.bin"), 32000, &v, err), err);
    if (v) {
        test_vocab(v, "tok32k.gguf");
        test_space_forms(v, "tok32k", "\xE2\x96\x81Hello", 15043); /* llama.cpp's id for " Hello" (ggml-vocab-llama-spm) */
    }
    es_vocab_free(v);
    v = NULL;
    CHECK_OK(es_vocab_load_hf(es_test_shared_model("TinyStories-656K/tokenizer.json"),
                              es_test_shared_model("TinyStories-656K/tokenizer_config.json"), &v, err),
             err);
    if (v) test_vocab(v, "tinystories656k-tok.gguf");
    es_vocab_free(v);
    return es_test_finish("test_tokenizer_gguf");
}
