/* vocab_hf.c — loading a Hugging Face tokenizer.json (model.type "BPE") and the optional
 * tokenizer_config.json beside it into an es_vocab.
 *
 * Two families are recognised:
 *  - byte-level BPE (GPT-2, Llama 3, Qwen 2): a ByteLevel pre-tokenizer, alone (GPT-2 regex) or after
 *    a Split whose regex is one of the known ones (llama-bpe, qwen2) -> ES_TOK_BPE;
 *  - SentencePiece-style BPE (Llama 1/2, TinyStories): normalizer Prepend("▁") / Replace(" " -> "▁"),
 *    or a Metaspace pre-tokenizer, or byte_fallback -> ES_TOK_SPM. The merges are kept (so edgespec
 *    merges by rank exactly as Hugging Face does) and the scores are set for score-based consumers:
 *    the token made by merge rank r scores -r (the lowest rank when several merges make it), so
 *    "highest score first" is "lowest rank first"; a normal multi-character token no merge makes
 *    scores -1e10, below which llama2.c-style merging never goes; the rest score 0 (they are never
 *    the result of a merge, so their score is never consulted).
 * Anything else (WordPiece, Unigram, other pre-tokenizers or normalizers) is ES_ERR_UNSUPPORTED.
 *
 * Known approximations: NFC/NFKC normalizers are accepted and not applied (the input is assumed
 * normalised); a Metaspace pre-tokenizer's word splitting is not applied (merges across "▁" are
 * rare in such vocabularies); added tokens are matched on the raw text (Hugging Face matches
 * "normalized" added tokens after normalisation, which differs only around the prefix space). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"
#include "util/err.h"

#define HF_MAX_JSON ((size_t)1 << 30)

static const char k_lb[] = "\xE2\x96\x81"; /* U+2581 */

static const char k_re_gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char k_re_llama3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}"
                                  "\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_re_qwen2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}"
                                 "\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL; }

static const char *get_str(const cJSON *o, const char *k) {
    const cJSON *j = get(o, k);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static bool has_type(const cJSON *o, const char *type) {
    const char *t = get_str(o, "type");
    return t && !strcmp(t, type);
}

/* A bool member: *out unchanged when absent; false when present but not a bool. */
static bool get_bool(const cJSON *o, const char *k, bool *out) {
    const cJSON *j = get(o, k);
    if (!j) return true;
    if (!cJSON_IsBool(j)) return false;
    *out = cJSON_IsTrue(j);
    return true;
}

/* A token id: an integral JSON number in [0, 2^31). */
static bool json_id(const cJSON *j, int64_t *id) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= 0 && d < 2147483648.0) || d != (double)(int64_t)d) return false;
    *id = (int64_t)d;
    return true;
}

/* The components of a (possibly Sequence) normalizer / pre-tokenizer / decoder: calls fn on each. */
typedef void (*component_fn)(const cJSON *c, void *ctx);
static void each_component(const cJSON *c, const char *seq_key, component_fn fn, void *ctx) {
    if (!cJSON_IsObject(c)) return;
    if (has_type(c, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, get(c, seq_key)) each_component(it, seq_key, fn, ctx);
        return;
    }
    fn(c, ctx);
}

typedef struct shape {
    /* normalizer */
    bool prepend_lb, replace_space, norm_other;
    char norm_other_name[64];
    /* pre-tokenizer */
    int n_pre;
    bool pre_bytelevel, pre_bl_use_regex, pre_bl_prefix_space, pre_metaspace, meta_prefix, pre_other;
    const char *split_regex;
    char pre_other_name[64];
    /* decoder */
    bool dec_bytelevel;
} shape;

static void note_name(char *dst, const cJSON *c) {
    const char *t = get_str(c, "type");
    snprintf(dst, 64, "%s", t ? t : "?");
}

static void on_normalizer(const cJSON *c, void *ctx) {
    shape *s = ctx;
    const char *pre = get_str(c, "prepend");
    if (has_type(c, "Prepend") && pre && !strcmp(pre, k_lb)) { s->prepend_lb = true; return; }
    if (has_type(c, "Replace")) {
        const char *from = get_str(get(c, "pattern"), "String"), *to = get_str(c, "content");
        if (from && to && !strcmp(from, " ") && !strcmp(to, k_lb)) { s->replace_space = true; return; }
    }
    if (has_type(c, "NFC") || has_type(c, "NFKC")) return; /* not applied: input assumed normalised */
    if (!s->norm_other) note_name(s->norm_other_name, c);
    s->norm_other = true;
}

static void on_pretokenizer(const cJSON *c, void *ctx) {
    shape *s = ctx;
    s->n_pre++;
    if (has_type(c, "ByteLevel")) {
        s->pre_bytelevel = true;
        s->pre_bl_use_regex = true;
        get_bool(c, "use_regex", &s->pre_bl_use_regex);
        get_bool(c, "add_prefix_space", &s->pre_bl_prefix_space);
        return;
    }
    if (has_type(c, "Split") && get_str(get(c, "pattern"), "Regex") && !s->split_regex) {
        s->split_regex = get_str(get(c, "pattern"), "Regex");
        return;
    }
    if (has_type(c, "Metaspace")) {
        const char *rep = get_str(c, "replacement"), *scheme = get_str(c, "prepend_scheme");
        bool aps = true;
        get_bool(c, "add_prefix_space", &aps);
        if (rep && !strcmp(rep, k_lb)) {
            s->pre_metaspace = true;
            s->meta_prefix = scheme ? strcmp(scheme, "never") != 0 : aps;
            return;
        }
    }
    if (!s->pre_other) note_name(s->pre_other_name, c);
    s->pre_other = true;
}

static void on_decoder(const cJSON *c, void *ctx) {
    shape *s = ctx;
    if (has_type(c, "ByteLevel")) s->dec_bytelevel = true;
}

/* The id a special-token description names (a string, or an object with "content"); -2 when the
 * description is absent, -1 when it is null, -3 when it names no token. */
static int32_t special_id(const es_tokenizer *t, const cJSON *j) {
    if (!j) return -2;
    if (cJSON_IsNull(j)) return -1;
    const char *s = cJSON_IsString(j) ? j->valuestring : get_str(j, "content");
    if (!s) return -3;
    int32_t id = tok_lookup(t, s, strlen(s));
    return id >= 0 ? id : -3;
}

/* BOS / EOS a TemplateProcessing post-processor adds around a single sequence (-1 when none). */
static void template_specials(const es_tokenizer *t, const cJSON *pp, int32_t *bos, int32_t *eos) {
    if (has_type(pp, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, get(pp, "processors")) template_specials(t, it, bos, eos);
        return;
    }
    if (!has_type(pp, "TemplateProcessing")) return;
    const cJSON *single = get(pp, "single");
    int n = cJSON_GetArraySize(single);
    if (!cJSON_IsArray(single) || n < 1) return;
    const char *first = get_str(get(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id");
    const char *last = get_str(get(cJSON_GetArrayItem(single, n - 1), "SpecialToken"), "id");
    if (first) *bos = tok_lookup(t, first, strlen(first));
    if (last && n > 1) *eos = tok_lookup(t, last, strlen(last));
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* A merge as "left right": the string form must hold exactly one space (as Hugging Face requires);
 * the array form [left, right] is joined with a space, which needs a left part with no space after
 * its first byte (the split rule of GGUF merges). */
static es_status merge_string(const cJSON *m, int i, char **out, es_err *err) {
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' '))
            return es_fail(err, ES_ERR_FORMAT, "merge %d (\"%.64s\") is not \"left right\"", i, s);
        *out = dup_str(s);
    } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
               cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
        const char *a = cJSON_GetArrayItem(m, 0)->valuestring, *b = cJSON_GetArrayItem(m, 1)->valuestring;
        size_t la = strlen(a), lb = strlen(b);
        if (la == 0 || lb == 0) return es_fail(err, ES_ERR_FORMAT, "merge %d has an empty part", i);
        if (strchr(a + 1, ' '))
            return es_fail(err, ES_ERR_UNSUPPORTED, "merge %d: left part \"%.64s\" holds a space", i, a);
        *out = malloc(la + lb + 2);
        if (*out) {
            memcpy(*out, a, la);
            (*out)[la] = ' ';
            memcpy(*out + la + 1, b, lb + 1);
        }
    } else {
        return es_fail(err, ES_ERR_FORMAT, "merge %d is neither \"left right\" nor [left, right]", i);
    }
    return *out ? ES_OK : es_fail(err, ES_ERR_NOMEM, "out of memory reading merges");
}

typedef struct hf_load {
    cJSON *root, *cfg;
    const cJSON *model, *vocab, *merges, *added; /* parts of root */
    bool byte_fallback;
    int n;              /* tokens: max id + 1 */
    const char **texts; /* [n], borrowed from root */
    uint8_t *flags;     /* [n]: HF_ADDED, HF_SPECIAL */
    es_tok_kind kind;   /* the algorithm, from the components ... */
    const char *pre;    /* ... and its pre-tokenizer (NULL: none named) */
    bool add_space_prefix;
    es_vocab *v;
    es_tokenizer *tmp;
} hf_load;

enum { HF_ADDED = 1, HF_SPECIAL = 2 };

/* The two files parsed, and the parts of tokenizer.json's BPE model that are read, checked for type. */
static es_status parse_docs(hf_load *L, const char *json, size_t json_len, const char *config, size_t config_len, es_err *err) {
    L->root = cJSON_ParseWithLength(json, json_len);
    if (!L->root || !cJSON_IsObject(L->root)) return es_fail(err, ES_ERR_FORMAT, "tokenizer.json is not a JSON object");
    if (config) {
        L->cfg = cJSON_ParseWithLength(config, config_len);
        if (!L->cfg || !cJSON_IsObject(L->cfg))
            return es_fail(err, ES_ERR_FORMAT, "tokenizer_config.json is not a JSON object");
    }
    const cJSON *model = L->model = get(L->root, "model");
    if (!cJSON_IsObject(model)) return es_fail(err, ES_ERR_FORMAT, "tokenizer.json has no model object");
    const char *mtype = get_str(model, "type");
    if (get(model, "type") && (!mtype || strcmp(mtype, "BPE") != 0))
        return es_fail(err, ES_ERR_UNSUPPORTED, "tokenizer model type \"%.32s\" is not supported (only BPE)",
                       mtype ? mtype : "?");
    L->vocab = get(model, "vocab");
    if (!cJSON_IsObject(L->vocab)) return es_fail(err, ES_ERR_FORMAT, "tokenizer.json model has no vocab object");
    L->merges = get(model, "merges");
    if (L->merges && !cJSON_IsArray(L->merges) && !cJSON_IsNull(L->merges))
        return es_fail(err, ES_ERR_FORMAT, "tokenizer.json model.merges is not an array");
    const char *cs = get_str(model, "continuing_subword_prefix"), *ew = get_str(model, "end_of_word_suffix");
    if ((cs && *cs) || (ew && *ew))
        return es_fail(err, ES_ERR_UNSUPPORTED, "BPE with a continuing_subword_prefix / end_of_word_suffix is not supported");
    if (!get_bool(model, "byte_fallback", &L->byte_fallback))
        return es_fail(err, ES_ERR_FORMAT, "tokenizer.json model.byte_fallback is not a bool");
    L->added = get(L->root, "added_tokens");
    if (L->added && !cJSON_IsArray(L->added) && !cJSON_IsNull(L->added))
        return es_fail(err, ES_ERR_FORMAT, "tokenizer.json added_tokens is not an array");
    return ES_OK;
}

/* Every token's text by id (vocab, then added tokens, which may restate a vocab entry), with the added
 * and special flags. The ids must be dense: n = max id + 1 can be no more than the number of entries,
 * checked before anything of that size is allocated. */
static es_status read_tokens(hf_load *L, es_err *err) {
    const cJSON *vocab = L->vocab, *added = L->added;
    int64_t entries = (int64_t)cJSON_GetArraySize(vocab) + (cJSON_IsArray(added) ? cJSON_GetArraySize(added) : 0);
    if (entries == 0) return es_fail(err, ES_ERR_FORMAT, "tokenizer.json has an empty vocabulary");
    int64_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int64_t id;
        if (!json_id(it, &id)) return es_fail(err, ES_ERR_FORMAT, "token \"%.64s\" has a bad id", it->string);
        if (id > max_id) max_id = id;
    }
    cJSON_ArrayForEach(it, added) {
        int64_t id;
        if (!json_id(get(it, "id"), &id) || !get_str(it, "content"))
            return es_fail(err, ES_ERR_FORMAT, "an added token lacks a valid id or content");
        if (id > max_id) max_id = id;
    }
    if (max_id + 1 > entries)
        return es_fail(err, ES_ERR_FORMAT, "token ids are not dense: id %lld with %lld entries", (long long)max_id,
                       (long long)entries);
    if (max_id + 1 > TOK_MAX_VOCAB) return es_fail(err, ES_ERR_FORMAT, "vocabulary too large (%lld)", (long long)max_id + 1);
    const int n = L->n = (int)(max_id + 1);
    L->texts = calloc((size_t)n, sizeof *L->texts);
    L->flags = calloc((size_t)n, 1);
    if (!L->texts || !L->flags) return es_fail(err, ES_ERR_NOMEM, "out of memory for %d tokens", n);
    cJSON_ArrayForEach(it, vocab) {
        int64_t id = 0;
        json_id(it, &id); /* validated above */
        if (L->texts[id]) return es_fail(err, ES_ERR_FORMAT, "token id %lld is used twice", (long long)id);
        L->texts[id] = it->string;
    }
    cJSON_ArrayForEach(it, added) {
        int64_t id = 0;
        json_id(get(it, "id"), &id); /* validated above */
        const char *content = get_str(it, "content");
        if (L->texts[id] && (L->flags[id] & HF_ADDED || strcmp(L->texts[id], content) != 0))
            return es_fail(err, ES_ERR_FORMAT, "added token \"%.64s\" reuses id %lld", content, (long long)id);
        L->texts[id] = content;
        L->flags[id] |= HF_ADDED;
        if (cJSON_IsTrue(get(it, "special"))) L->flags[id] |= HF_SPECIAL;
    }
    for (int i = 0; i < n; i++)
        if (!L->texts[i]) return es_fail(err, ES_ERR_FORMAT, "token ids are not dense: id %d is missing", i);
    return ES_OK;
}

/* Which algorithm the normalizer, pre-tokenizer and decoder describe: byte-level BPE with one of the
 * known split regexes, or SentencePiece-style BPE; anything else is refused. */
static es_status which_algorithm(hf_load *L, es_err *err) {
    shape sh = {0};
    each_component(get(L->root, "normalizer"), "normalizers", on_normalizer, &sh);
    each_component(get(L->root, "pre_tokenizer"), "pretokenizers", on_pretokenizer, &sh);
    each_component(get(L->root, "decoder"), "decoders", on_decoder, &sh);
    if (sh.pre_bytelevel || sh.dec_bytelevel) {
        L->kind = ES_TOK_BPE;
        if (!sh.pre_bytelevel) return es_fail(err, ES_ERR_UNSUPPORTED, "ByteLevel decoder without a ByteLevel pre-tokenizer");
        if (sh.pre_bl_prefix_space) return es_fail(err, ES_ERR_UNSUPPORTED, "ByteLevel add_prefix_space is not supported");
        if (sh.pre_other || sh.pre_metaspace)
            return es_fail(err, ES_ERR_UNSUPPORTED, "pre-tokenizer %s is not supported", sh.pre_metaspace ? "Metaspace" : sh.pre_other_name);
        if (sh.norm_other || sh.prepend_lb || sh.replace_space)
            return es_fail(err, ES_ERR_UNSUPPORTED, "normalizer %s is not supported with ByteLevel", sh.norm_other ? sh.norm_other_name : "Prepend/Replace");
        if (sh.split_regex && sh.n_pre == 2 && !sh.pre_bl_use_regex) {
            if (!strcmp(sh.split_regex, k_re_llama3)) L->pre = "llama-bpe";
            else if (!strcmp(sh.split_regex, k_re_qwen2)) L->pre = "qwen2";
            else if (!strcmp(sh.split_regex, k_re_gpt2)) L->pre = "gpt2";
            else return es_fail(err, ES_ERR_UNSUPPORTED, "pre-tokenizer regex \"%.200s\" is not supported", sh.split_regex);
        } else if (!sh.split_regex && sh.n_pre == 1 && sh.pre_bl_use_regex) {
            L->pre = "gpt2";
        } else {
            return es_fail(err, ES_ERR_UNSUPPORTED, "this arrangement of ByteLevel pre-tokenizers is not supported");
        }
    } else if (sh.prepend_lb || sh.replace_space || sh.pre_metaspace || L->byte_fallback) {
        L->kind = ES_TOK_SPM;
        if (sh.norm_other) return es_fail(err, ES_ERR_UNSUPPORTED, "normalizer %s is not supported", sh.norm_other_name);
        if (sh.pre_other || sh.pre_bytelevel || sh.split_regex)
            return es_fail(err, ES_ERR_UNSUPPORTED, "pre-tokenizer %s is not supported with SentencePiece-style BPE",
                           sh.pre_other ? sh.pre_other_name : "Split");
        L->add_space_prefix = sh.prepend_lb || (sh.pre_metaspace && sh.meta_prefix);
    } else {
        return es_fail(err, ES_ERR_UNSUPPORTED, "tokenizer.json is neither byte-level nor SentencePiece-style BPE");
    }
    return ES_OK;
}

/* The vocabulary: every token's text and type (special: CONTROL, added: USER_DEFINED, else inferred),
 * the merges as "left right", the unknown token. */
static es_status fill_vocab(hf_load *L, es_err *err) {
    const int n = L->n;
    const es_tok_kind kind = L->kind;
    const cJSON *it;
    int n_merges = cJSON_IsArray(L->merges) ? cJSON_GetArraySize(L->merges) : 0;
    L->v = tok_vocab_alloc(n, n_merges);
    if (!L->v) return es_fail(err, ES_ERR_NOMEM, "out of memory for %d tokens", n);
    es_vocab *v = L->v;
    v->spec.kind = kind;
    v->spec.add_space_prefix = L->add_space_prefix;
    if (L->pre && !(v->pre = dup_str(L->pre))) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    v->spec.pre = v->pre;
    for (int i = 0; i < n; i++) {
        if (!(v->tokens[i] = dup_str(L->texts[i]))) return es_fail(err, ES_ERR_NOMEM, "out of memory");
        v->lens[i] = strlen(v->tokens[i]);
        if (L->flags[i] & HF_SPECIAL) v->types[i] = ES_TOKTYPE_CONTROL;
        else if (L->flags[i] & HF_ADDED) v->types[i] = ES_TOKTYPE_USER_DEFINED;
        else {
            es_vocab_spec probe = {.kind = kind, .tokens = v->spec.tokens, .lens = v->lens, .bos = -1, .eos = -1, .unk = -1};
            v->types[i] = es_tok_infer_type(&probe, i); /* <0xXX> -> BYTE for SPM */
        }
    }
    int mi = 0;
    cJSON_ArrayForEach(it, L->merges) {
        es_status st = merge_string(it, mi, &v->merges[mi], err);
        if (st != ES_OK) return st;
        mi++;
    }
    const char *unk = get_str(L->model, "unk_token");
    if (unk) {
        for (int i = 0; i < n && v->spec.unk < 0; i++)
            if (!strcmp(v->tokens[i], unk)) v->spec.unk = i;
        if (v->spec.unk < 0) return es_fail(err, ES_ERR_FORMAT, "unk_token \"%.64s\" is not in the vocabulary", unk);
        v->types[v->spec.unk] = ES_TOKTYPE_UNKNOWN;
    }
    return ES_OK;
}

/* BOS and EOS (tokenizer_config.json's, else the post-processor's template), PAD, whether they are
 * added, and the chat template ("default" of a list, else the first). t: the vocabulary's lookups. */
static es_status read_specials(hf_load *L, const es_tokenizer *t, es_err *err) {
    es_vocab *v = L->v;
    const cJSON *it;
    int32_t pp_bos = -1, pp_eos = -1;
    template_specials(t, get(L->root, "post_processor"), &pp_bos, &pp_eos);
    int32_t bos = special_id(t, get(L->cfg, "bos_token")), eos = special_id(t, get(L->cfg, "eos_token"));
    int32_t pad = special_id(t, get(L->cfg, "pad_token"));
    if (bos == -3 || eos == -3)
        return es_fail(err, ES_ERR_FORMAT, "tokenizer_config.json: %s_token is not in the vocabulary", bos == -3 ? "bos" : "eos");
    v->spec.bos = bos == -2 ? pp_bos : bos;
    v->spec.eos = eos == -2 ? pp_eos : eos;
    v->spec.pad = pad >= 0 ? pad : -1;
    v->spec.add_bos = pp_bos >= 0;
    v->spec.add_eos = pp_eos >= 0;
    if (!get_bool(L->cfg, "add_bos_token", &v->spec.add_bos) || !get_bool(L->cfg, "add_eos_token", &v->spec.add_eos))
        return es_fail(err, ES_ERR_FORMAT, "tokenizer_config.json: add_bos_token / add_eos_token is not a bool");
    const cJSON *tpl = get(L->cfg, "chat_template");
    const char *tpl_s = cJSON_IsString(tpl) ? tpl->valuestring : NULL;
    if (cJSON_IsArray(tpl)) { /* [{name, template}, ...]: the "default" one, else the first */
        cJSON_ArrayForEach(it, tpl) {
            const char *name = get_str(it, "name"), *body = get_str(it, "template");
            if (body && (!tpl_s || (name && !strcmp(name, "default")))) tpl_s = body;
        }
    }
    if (tpl_s && !(v->chat_template = dup_str(tpl_s))) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    v->spec.chat_template = v->chat_template;
    return ES_OK;
}

/* SentencePiece-style BPE ranks by score: a token's score is -(the lowest rank of a merge making it;
 * see the file comment); a token no merge makes scores 0 when it is one character or not NORMAL, else
 * TOK_SCORE_FLOOR (no merge produces it). */
static es_status spm_scores(hf_load *L, const es_tokenizer *t, es_err *err) {
    es_vocab *v = L->v;
    const int n = L->n;
    bool *made = calloc((size_t)n, sizeof *made);
    if (!made) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; t->mtab && i <= t->mmask; i++) {
        const struct tok_merge_slot *sl = &t->mtab[i];
        if (sl->key == UINT64_MAX) continue;
        float s = -(float)sl->rank;
        if (!made[sl->result] || s > v->scores[sl->result]) v->scores[sl->result] = s;
        made[sl->result] = true;
    }
    for (int i = 0; i < n; i++) {
        if (made[i]) continue;
        uint32_t cp;
        bool one_char = v->lens[i] > 0 && (size_t)tok_utf8_next(v->tokens[i], v->lens[i], &cp) == v->lens[i];
        v->scores[i] = (v->types[i] == ES_TOKTYPE_NORMAL && !one_char) ? TOK_SCORE_FLOOR : 0.0f;
    }
    free(made);
    return ES_OK;
}

static es_status load_body(hf_load *L, const char *json, size_t json_len, const char *config, size_t config_len,
                           es_err *err) {
    es_status st;
    if ((st = parse_docs(L, json, json_len, config, config_len, err)) != ES_OK || (st = read_tokens(L, err)) != ES_OK ||
        (st = which_algorithm(L, err)) != ES_OK || (st = fill_vocab(L, err)) != ES_OK)
        return st;
    /* validates the merges and gives the lookups the rest needs */
    if ((st = es_tokenizer_init(&L->v->spec, &L->tmp, err)) != ES_OK || (st = read_specials(L, L->tmp, err)) != ES_OK) return st;
    return L->kind == ES_TOK_SPM ? spm_scores(L, L->tmp, err) : ES_OK;
}

es_status es_vocab_load_hf_buffer(const char *json, size_t json_len, const char *config, size_t config_len,
                                  es_vocab **out, es_err *err) {
    if (!out || !json) return es_fail(err, ES_ERR_INVALID_ARG, "es_vocab_load_hf: NULL argument");
    *out = NULL;
    hf_load L = {0};
    es_status st = load_body(&L, json, json_len, config, config_len, err);
    cJSON_Delete(L.root);
    cJSON_Delete(L.cfg);
    free(L.texts);
    free(L.flags);
    es_tokenizer_free(L.tmp);
    if (st != ES_OK) {
        es_vocab_free(L.v);
        return st;
    }
    *out = L.v;
    return ES_OK;
}

es_status es_vocab_load_hf(const char *tokenizer_json, const char *tokenizer_config_json, es_vocab **out, es_err *err) {
    if (!tokenizer_json || !out) return es_fail(err, ES_ERR_INVALID_ARG, "es_vocab_load_hf: NULL argument");
    *out = NULL;
    char *json = NULL, *cfg = NULL;
    size_t json_len = 0, cfg_len = 0;
    es_status st = tok_read_file(tokenizer_json, HF_MAX_JSON, &json, &json_len, err);
    if (st != ES_OK) return st;
    if (tokenizer_config_json) {
        st = tok_read_file(tokenizer_config_json, HF_MAX_JSON, &cfg, &cfg_len, err);
        if (st != ES_OK) { free(json); return st; }
    }
    st = es_vocab_load_hf_buffer(json, json_len, cfg, cfg_len, out, err);
    free(json);
    free(cfg);
    if (st != ES_OK) es_err_prefix(err, tokenizer_json);
    return st;
}
