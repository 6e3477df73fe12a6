/* test_tokenizer_bpe.c — byte-level BPE on small synthetic vocabularies built here: merges apply in
 * rank order (ties leftmost), the three pre-tokenisers split as their regexes do, arbitrary bytes
 * (NULs, invalid UTF-8) round-trip, special and user-defined tokens are matched literally, and
 * tokenizer.json files with ByteLevel pre-tokenizers load as the right variant. */
#include <cjson/cJSON.h>
#include <string.h>

#include "testutil.h"
#include "tokenizer/tok_impl.h"
#include "util/rng.h"

/* ---- a synthetic GPT-2 style vocabulary ---- */

typedef struct synth {
    char *tokens[512];
    int n;
    char *merges[128];
    int n_merges;
    int32_t types[512];
} synth;

/* raw bytes -> GPT-2's printable characters (UTF-8), malloc'd */
static char *mapped(const char *raw, size_t n) {
    char *s = malloc(2 * n + 1), *p = s;
    for (size_t i = 0; i < n; i++) p += tok_utf8_put(tok_byte_to_cp((uint8_t)raw[i]), p);
    *p = 0;
    return s;
}

static void synth_init(synth *s) {
    memset(s, 0, sizeof *s);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        s->tokens[s->n] = mapped(&c, 1);
        s->types[s->n++] = ES_TOKTYPE_NORMAL;
    }
}

/* Adds the merge (left, right) of raw strings and its result token. */
static void synth_merge(synth *s, const char *left, const char *right) {
    char *l = mapped(left, strlen(left)), *r = mapped(right, strlen(right));
    char *m = malloc(strlen(l) + strlen(r) + 2);
    sprintf(m, "%s %s", l, r);
    s->merges[s->n_merges++] = m;
    char *res = malloc(strlen(l) + strlen(r) + 1);
    sprintf(res, "%s%s", l, r);
    s->tokens[s->n] = res;
    s->types[s->n++] = ES_TOKTYPE_NORMAL;
    free(l);
    free(r);
}

static int synth_add(synth *s, const char *text, int32_t type) {
    s->tokens[s->n] = strdup(text);
    s->types[s->n] = type;
    return s->n++;
}

static void synth_free(synth *s) {
    for (int i = 0; i < s->n; i++) free(s->tokens[i]);
    for (int i = 0; i < s->n_merges; i++) free(s->merges[i]);
}

static es_tokenizer *synth_build(synth *s, const char *pre, es_status want) {
    es_vocab_spec spec = {
        .kind = ES_TOK_BPE, .n_vocab = s->n, .tokens = (const char *const *)s->tokens, .types = s->types,
        .merges = (const char *const *)s->merges, .n_merges = s->n_merges, .bos = -1, .eos = -1, .unk = -1, .pad = -1,
        .pre = pre};
    es_tokenizer *t = NULL;
    es_err err_ = {{0}}, *err = &err_;
    es_status st = es_tokenizer_init(&spec, &t, err);
    CHECK_MSG(st == want, "init: %s (%s)", es_status_str(st), err->msg);
    return t;
}

static int enc(const es_tokenizer *t, const char *s, size_t n, bool special, int32_t *ids, int cap) {
    es_err err_ = {{0}}, *err = &err_;
    int cnt = -1;
    CHECK_OK(es_tokenize(t, s, n, true, special, ids, cap, &cnt, err), err);
    return cnt;
}

/* The token texts of an encoding, unmapped, joined by '|'. */
static const char *show(const es_tokenizer *t, const int32_t *ids, int n) {
    static char out[4096];
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (i) out[k++] = '|';
        k += (size_t)es_token_to_piece(t, -1, ids[i], out + k, (int)(sizeof out - k - 2));
    }
    out[k] = 0;
    return out;
}

static const char *encode_show(const es_tokenizer *t, const char *s) {
    int32_t ids[256];
    int n = enc(t, s, strlen(s), true, ids, 256);
    return show(t, ids, n);
}

static void test_rank_order(void) {
    synth a, b;
    synth_init(&a);
    synth_merge(&a, "b", "c"); /* rank 0 */
    synth_merge(&a, "a", "b"); /* rank 1 */
    synth_init(&b);
    synth_merge(&b, "a", "b");
    synth_merge(&b, "b", "c");
    es_tokenizer *ta = synth_build(&a, "gpt2", ES_OK), *tb = synth_build(&b, "gpt2", ES_OK);
    if (ta && tb) {
        CHECK(strcmp(encode_show(ta, "abc"), "a|bc") == 0);
        CHECK(strcmp(encode_show(tb, "abc"), "ab|c") == 0);
        CHECK(strcmp(encode_show(ta, "abcabc ab"), "a|bc|a|bc| |ab") == 0);
    }
    es_tokenizer_free(ta);
    es_tokenizer_free(tb);
    synth_free(&a);
    synth_free(&b);

    /* equal ranks go leftmost first; a later merge builds on an earlier one */
    synth c;
    synth_init(&c);
    synth_merge(&c, "a", "a");
    synth_merge(&c, "aa", "a");
    es_tokenizer *tc = synth_build(&c, "gpt2", ES_OK);
    if (tc) {
        CHECK(strcmp(encode_show(tc, "aaa"), "aaa") == 0);
        CHECK(strcmp(encode_show(tc, "aaaa"), "aa|aa") == 0); /* both (a,a) pairs merge before (aa,a) */
    }
    es_tokenizer_free(tc);
    synth_free(&c);
}

static void test_words(void) {
    synth s;
    synth_init(&s);
    synth_merge(&s, "h", "e");
    synth_merge(&s, " ", "t");
    synth_merge(&s, " t", "he");
    synth_merge(&s, "l", "l");
    synth_merge(&s, "he", "ll");
    synth_merge(&s, "hell", "o");
    synth_merge(&s, " ", "w");
    synth_merge(&s, "o", "r");
    synth_merge(&s, " w", "or");
    int endoftext = synth_add(&s, "<|endoftext|>", ES_TOKTYPE_CONTROL);
    int mark = synth_add(&s, "<mark>", ES_TOKTYPE_USER_DEFINED);
    int xyz = synth_add(&s, "xyz", ES_TOKTYPE_NORMAL); /* a token no merge makes */
    es_tokenizer *g = synth_build(&s, NULL, ES_OK), *l3 = synth_build(&s, "llama-bpe", ES_OK);
    es_tokenizer *q = synth_build(&s, "qwen2", ES_OK);
    synth_build(&s, "bloom", ES_ERR_UNSUPPORTED);
    if (!g || !l3 || !q) return;
    CHECK(strcmp(encode_show(g, "hello the world"), "hello| the| wor|l|d") == 0);
    CHECK(strcmp(encode_show(g, "hello  the"), "hello| | the") == 0);
    /* with llama-bpe a pre-token that is a token is taken whole (ignore_merges) */
    CHECK(strcmp(encode_show(g, "xyz"), "x|y|z") == 0);
    CHECK(strcmp(encode_show(l3, "xyz"), "xyz") == 0);
    CHECK(strcmp(encode_show(q, "xyz"), "x|y|z") == 0);

    int32_t ids[64];
    const char *txt = "hello<|endoftext|>the<mark>";
    int n = enc(g, txt, strlen(txt), true, ids, 64);
    CHECK(n == 5 && ids[1] == endoftext && ids[4] == mark); /* hello <eot> t he <mark> */
    n = enc(g, txt, strlen(txt), false, ids, 64);
    bool has_eot = false, has_mark = false;
    for (int i = 0; i < n; i++) { has_eot |= ids[i] == endoftext; has_mark |= ids[i] == mark; }
    CHECK(!has_eot && has_mark); /* user-defined tokens are matched even without parse_special */
    char buf[32];
    CHECK(es_token_to_piece(g, -1, endoftext, buf, 32) == 0);
    CHECK(es_token_to_piece(g, -1, mark, buf, 32) == 6 && memcmp(buf, "<mark>", 6) == 0);
    CHECK(es_token_to_piece(g, -1, xyz, buf, 32) == 3);

    /* BOS is added only when both the caller and the vocabulary ask for it */
    {
        es_vocab_spec spec = {.kind = ES_TOK_BPE, .n_vocab = s.n, .tokens = (const char *const *)s.tokens,
                              .types = s.types, .merges = (const char *const *)s.merges, .n_merges = s.n_merges,
                              .bos = endoftext, .eos = endoftext, .unk = -1, .pad = -1};
        es_tokenizer *nb = NULL, *wb = NULL;
        es_err err_ = {{0}}, *err = &err_;
        CHECK_OK(es_tokenizer_init(&spec, &nb, err), err);
        spec.add_bos = true;
        CHECK_OK(es_tokenizer_init(&spec, &wb, err), err);
        if (nb && wb) {
            CHECK(enc(nb, "he", 2, false, ids, 64) == 1 && ids[0] != endoftext);
            CHECK(enc(wb, "he", 2, false, ids, 64) == 2 && ids[0] == endoftext);
            int cnt = -1;
            CHECK_OK(es_tokenize(wb, "he", 2, false, false, ids, 64, &cnt, err), err);
            CHECK(cnt == 1 && ids[0] != endoftext);
        }
        es_tokenizer_free(nb);
        es_tokenizer_free(wb);
    }

    /* arbitrary bytes round-trip under every pre-tokeniser */
    es_rng r;
    es_rng_seed(&r, 7);
    es_tokenizer *all[3] = {g, l3, q};
    int bad = 0;
    for (int k = 0; k < 300; k++) {
        char raw[200];
        size_t len = 1 + es_rng_next(&r) % (sizeof raw - 1);
        for (size_t i = 0; i < len; i++) {
            uint64_t u = es_rng_next(&r) % 10;
            raw[i] = u < 4 ? "helo tw\n'"[es_rng_next(&r) % 9] : (char)(es_rng_next(&r) % 256);
        }
        es_tokenizer *t = all[k % 3];
        int32_t out[256];
        int cnt = enc(t, raw, len, false, out, 256);
        char back[512];
        size_t bl = 0;
        for (int i = 0; i < cnt && i < 256; i++) bl += (size_t)es_token_to_piece(t, -1, out[i], back + bl, (int)(sizeof back - bl));
        if (cnt > 256 || bl != len || memcmp(back, raw, len) != 0) bad++;
    }
    CHECK_MSG(bad == 0, "%d of 300 random byte strings did not round-trip", bad);
    es_tokenizer_free(g);
    es_tokenizer_free(l3);
    es_tokenizer_free(q);
    synth_free(&s);

    /* a byte-level vocabulary without a byte's token (Falcon's lacks some controls) loads; with no
     * unknown token the byte is left out of the encoding, as llama.cpp leaves it out */
    synth m;
    synth_init(&m);
    free(m.tokens[0x41]);
    m.tokens[0x41] = strdup("not-A");
    es_tokenizer *tm = synth_build(&m, "gpt2", ES_OK);
    if (tm) {
        int32_t ids[8];
        int cnt = enc(tm, "bAc", 3, false, ids, 8);
        CHECK_MSG(cnt == 2 && ids[0] == 'b' && ids[1] == 'c', "bAc: %d ids", cnt); /* byte b's token is id b */
        es_tokenizer_free(tm);
    }
    synth_free(&m);
}

/* ---- pre-tokenisers ---- */

typedef struct pieces {
    const char *s;
    char out[2048];
    size_t k;
} pieces;

static es_status collect(void *ctx, size_t start, size_t end, es_err *err) {
    pieces *p = ctx;
    if (p->k) p->out[p->k++] = '|';
    memcpy(p->out + p->k, p->s + start, end - start);
    p->k += end - start;
    p->out[p->k] = 0;
    return ES_OK;
}

static void check_split(tok_pre pre, const char *text, const char *want) {
    pieces p = {.s = text};
    es_err err_ = {{0}}, *err = &err_;
    CHECK_OK(tok_pretokenize(pre, text, strlen(text), collect, &p, err), err);
    CHECK_MSG(strcmp(p.out, want) == 0, "pre %d \"%s\": got \"%s\" want \"%s\"", (int)pre, text, p.out, want);
}

static void test_pretokenizers(void) {
    check_split(TOK_PRE_GPT2, "Hello world's  test 123abc!!  \n", "Hello| world|'s| | test| 123|abc|!!|  \n");
    check_split(TOK_PRE_GPT2, "a\n\nb", "a|\n|\n|b");
    check_split(TOK_PRE_GPT2, "I'M OK 'll", "I|'|M| OK| '|ll");
    check_split(TOK_PRE_GPT2, "they're we've ...wow", "they|'re| we|'ve| ...|wow");
    check_split(TOK_PRE_GPT2, "café 日本語 ok", "café| 日本語| ok");
    check_split(TOK_PRE_GPT2, "x\xC2\xA0y", "x|\xC2\xA0|y"); /* no-break space is white space */
    check_split(TOK_PRE_GPT2, "hi 😀😀!", "hi| 😀😀!");   /* emoji are symbols */
    check_split(TOK_PRE_GPT2, "x² ½", "x|²| ½");
    check_split(TOK_PRE_GPT2, "   ", "   ");
    check_split(TOK_PRE_LLAMA3, "Hello world's  test 12345abc!!\n\n x", "Hello| world|'s| | test| |123|45|abc|!!\n\n| x");
    check_split(TOK_PRE_LLAMA3, "I'M OK", "I|'M| OK");
    check_split(TOK_PRE_LLAMA3, "a\n\nb", "a|\n\n|b");
    check_split(TOK_PRE_LLAMA3, "x  \n  y", "x|  \n| | y");
    check_split(TOK_PRE_LLAMA3, "\tfoo,bar", "\tfoo|,bar");
    check_split(TOK_PRE_LLAMA3, "end.  ", "end|.|  ");
    check_split(TOK_PRE_QWEN2, "abc 12345", "abc| |1|2|3|4|5");
    check_split(TOK_PRE_QWEN2, "1\r\n2", "1|\r\n|2");
    /* the multi-regex families: each regex splits what the previous ones left (tok_pretok.c) */
    check_split(TOK_PRE_STARCODER, "abc 123 x1y", "abc| |1|2|3| x|1|y");
    check_split(TOK_PRE_FALCON, "a+=b 12345 c", "a|+=|b| |123|45| c");
    check_split(TOK_PRE_DEFAULT, "x 12345", "x| |123|45");
    check_split(TOK_PRE_DEEPSEEK_CODER, "Hi, 中文 x\n42", "Hi|,| |中文| x|\n|4|2");
    check_split(TOK_PRE_DEEPSEEK_LLM, "Hi, 中文 x\n42  ", "Hi|,| |中文| x|\n|42|  ");
    check_split(TOK_PRE_DEEPSEEK3, "Hello,world 123456", "Hello|,world| |123|456");
    check_split(TOK_PRE_DEEPSEEK3, "ひらがな漢字 café", "ひらがな漢字| café");
    check_split(TOK_PRE_GPT4O, "camelCase HTTPServer 12345", "camel|Case| HTTPServer| |123|45");
    check_split(TOK_PRE_GPT4O, "I'M don't a/b/\n", "I'M| don't| a|/b|/\n");
    check_split(TOK_PRE_GPT4O, "\xC3\x80" "B", "\xC3\x80" "|B"); /* a non-ASCII letter is "upper" and "lower" */
    /* invalid UTF-8 is split, not lost */
    check_split(TOK_PRE_GPT2, "a\xFF\xFE b", "a|\xFF\xFE| b");
}

/* tests/data/pretok-ref.jsonl: the original regexes run by JavaScript's RegExp engine
 * (scripts/gen-pretok-ref.mjs) on random strings of characters whose class is known exactly. */
static void test_pretok_reference(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/pretok-ref.jsonl", getenv("ES_SRC") ? getenv("ES_SRC") : ".");
    size_t len;
    char *data = es_test_read_file(path, &len);
    CHECK_MSG(data != NULL, "cannot read %s (set ES_SRC to the source tree)", path);
    if (!data) return;
    int lines = 0, bad = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        if (!j) { bad++; continue; }
        const char *pre = cJSON_GetObjectItem(j, "pre")->valuestring, *text = cJSON_GetObjectItem(j, "text")->valuestring;
        tok_pre p;
        bool im;
        if (tok_pre_from_name(pre, &p, &im, NULL) != ES_OK) {
            if (bad++ < 5) fprintf(stderr, "unknown pre-tokenizer %s\n", pre);
            cJSON_Delete(j);
            continue;
        }
        char want[2048];
        size_t k = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "pieces")) {
            size_t l = strlen(it->valuestring);
            if (k) want[k++] = '|';
            if (k + l + 2 > sizeof want) break;
            memcpy(want + k, it->valuestring, l);
            k += l;
        }
        want[k] = 0;
        pieces got = {.s = text};
        es_err err_ = {{0}}, *err = &err_;
        tok_pretokenize(p, text, strlen(text), collect, &got, err);
        if (strcmp(got.out, want) != 0) {
            if (bad++ < 5) fprintf(stderr, "pre %s \"%s\":\n  got  \"%s\"\n  want \"%s\"\n", pre, text, got.out, want);
        }
        cJSON_Delete(j);
        lines++;
    }
    CHECK(lines >= 4000);
    CHECK_MSG(bad == 0, "%d of %d pre-tokenizer splits differ from the regex", bad, lines);
    free(data);
}

static void test_unicode(void) {
    CHECK(tok_cc_table_ok());
    for (int b = 0; b < 256; b++) CHECK(tok_cp_to_byte(tok_byte_to_cp((uint8_t)b)) == b);
    CHECK(tok_byte_to_cp(' ') == 0x120 && tok_byte_to_cp('\n') == 0x10A && tok_byte_to_cp('A') == 'A');
    CHECK(tok_cp_to_byte(0x2581) == -1);
    CHECK(tok_cp_class('a') == TOK_CC_LETTER && tok_cp_class('7') == TOK_CC_NUMBER && tok_cp_class('\t') == TOK_CC_SPACE);
    CHECK(tok_cp_class(0xE9) == TOK_CC_LETTER && tok_cp_class(0x3000) == TOK_CC_SPACE && tok_cp_class(0x4E2D) == TOK_CC_LETTER);
    CHECK(tok_cp_class(0x1F600) == TOK_CC_SYMBOL && tok_cp_class(0xFF11) == TOK_CC_NUMBER && tok_cp_class(0x2014) == TOK_CC_PUNCT);
    CHECK(tok_cp_class(0x0301) == TOK_CC_MARK && tok_cp_class(0x200D) == TOK_CC_OTHER && tok_cp_class(0xE000) == TOK_CC_OTHER);
    CHECK(tok_cp_class('~') == TOK_CC_SYMBOL && tok_cp_class('$') == TOK_CC_SYMBOL && tok_cp_class('_') == TOK_CC_PUNCT && tok_cp_class(0x7F) == TOK_CC_OTHER);
    uint32_t cp;
    CHECK(tok_utf8_next("\xE2\x96\x81", 3, &cp) == 3 && cp == 0x2581);
    CHECK(tok_utf8_next("\xE2\x96", 2, &cp) == 1 && cp > 0x10FFFF);
    CHECK(tok_utf8_next("\xC0\x80", 2, &cp) == 1);         /* overlong */
    CHECK(tok_utf8_next("\xED\xA0\x80", 3, &cp) == 1);     /* surrogate */
}

/* ---- tokenizer.json with ByteLevel ---- */

static void test_hf_bytelevel(void) {
    /* the vocabulary: the 256 mapped bytes, "Ġt" made by the merge "Ġ t", and two added tokens */
    size_t cap = 64 * 1024;
    char *json = malloc(cap);
    size_t k = (size_t)snprintf(json, cap, "{\"added_tokens\":[{\"id\":258,\"content\":\"<|eot|>\",\"special\":true},"
                                           "{\"id\":0,\"content\":\"!\",\"special\":false}],"
                                           "\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (int b = 0; b < 256; b++) {
        char c = (char)b, *m = mapped(&c, 1);
        const char *esc = !strcmp(m, "\"") ? "\\\"" : !strcmp(m, "\\") ? "\\\\" : m;
        k += (size_t)snprintf(json + k, cap - k, "\"%s\":%d,", esc, b == '!' ? 0 : b == 0 ? '!' : b);
        free(m);
    }
    k += (size_t)snprintf(json + k, cap - k, "\"\xC4\xA0t\":256,\"xx\":257},\"merges\":[\"\xC4\xA0 t\"]},");
    const char *tail_gpt2 = "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false},\"decoder\":{\"type\":\"ByteLevel\"}}";
    const char *tail_l3 =
        "\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
        "\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| "
        "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\"},"
        "{\"type\":\"ByteLevel\",\"use_regex\":false}]}}";
    const char *tail_bad = "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                           "\"pattern\":{\"Regex\":\"\\\\w+\"}},{\"type\":\"ByteLevel\",\"use_regex\":false}]}}";
    const char *tails[3] = {tail_gpt2, tail_l3, tail_bad};
    const char *want_pre[3] = {"gpt2", "llama-bpe", NULL};
    for (int i = 0; i < 3; i++) {
        char *doc = malloc(cap);
        snprintf(doc, cap, "%.*s%s", (int)k, json, tails[i]);
        es_vocab *v = NULL;
        es_err err_ = {{0}}, *err = &err_;
        const char *cfg = "{\"eos_token\":\"<|eot|>\"}";
        es_status st = es_vocab_load_hf_buffer(doc, strlen(doc), cfg, strlen(cfg), &v, err);
        if (!want_pre[i]) {
            CHECK(st == ES_ERR_UNSUPPORTED);
        } else {
            CHECK_OK(st, err);
            const es_vocab_spec *sp = es_vocab_spec_of(v);
            CHECK(sp && sp->kind == ES_TOK_BPE && sp->n_vocab == 259 && sp->pre && !strcmp(sp->pre, want_pre[i]));
            CHECK(sp && sp->eos == 258 && sp->bos == -1 && !sp->add_bos && sp->types[258] == ES_TOKTYPE_CONTROL);
            CHECK(sp && sp->types[0] == ES_TOKTYPE_USER_DEFINED && sp->types[257] == ES_TOKTYPE_NORMAL);
            es_tokenizer *t = NULL;
            CHECK_OK(es_tokenizer_init(sp, &t, err), err);
            if (t) {
                int32_t ids[16];
                int n = enc(t, " t<|eot|>", 9, true, ids, 16);
                CHECK(n == 2 && ids[0] == 256 && ids[1] == 258);
            }
            es_tokenizer_free(t);
        }
        es_vocab_free(v);
        free(doc);
    }
    free(json);
}

int main(void) {
    test_unicode();
    test_pretokenizers();
    test_pretok_reference();
    test_rank_order();
    test_words();
    test_hf_bytelevel();
    return es_test_finish("test_tokenizer_bpe");
}
