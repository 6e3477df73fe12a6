/* tok_impl.h — the tokenizer's internals shared by its source files (here: the tokenizer's tables and
 * the lookups in them; tokenizer.c: building, es_tokenize, decoding; tok_encode.c: the SPM and
 * byte-level BPE encoders; tok_unicode.c: UTF-8 and the pre-tokeniser's character classes). The
 * lookups live here, below both tokenizer.c and the encoders, so that the encoders do not call back
 * into the file that calls them. Not for use outside src/tokenizer. */
#ifndef ES_TOKENIZER_TOK_IMPL_H
#define ES_TOKENIZER_TOK_IMPL_H

#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/hash.h"

/* Byte-level BPE pre-tokeniser variants (the regexes each one stands for are in tok_pretok.c; the
 * tokenizer.ggml.pre names that select them in tokenizer.c). */
typedef enum tok_pre {
    TOK_PRE_GPT2 = 0, TOK_PRE_LLAMA3, TOK_PRE_QWEN2, TOK_PRE_STARCODER, TOK_PRE_FALCON, TOK_PRE_DEFAULT,
    TOK_PRE_DEEPSEEK_CODER, TOK_PRE_DEEPSEEK_LLM, TOK_PRE_DEEPSEEK3, TOK_PRE_GPT4O,
    TOK_PRE_COUNT
} tok_pre;

/* The score below which llama2.c's encode never merges a pair: it starts its search for the best pair
 * at -1e10 and only takes scores strictly above it. */
#define TOK_SCORE_FLOOR (-1e10f)

struct es_tokenizer {
    es_tok_kind kind;
    int n_vocab;
    /* token i's text is blob[off[i] .. off[i] + len[i]) followed by a NUL */
    char *blob;
    uint64_t *off;
    uint32_t *len;
    float *score;
    int32_t *type;      /* ES_TOKTYPE_* */
    uint32_t max_len;   /* longest token text in bytes */

    /* token text -> id: open addressing, linear probing, -1 empty; hmask = capacity - 1 */
    int32_t *htab;
    uint64_t hmask;

    /* merge pair (left id, right id) -> rank and result id; empty slots have key UINT64_MAX */
    struct tok_merge_slot { uint64_t key; int32_t rank; int32_t result; } *mtab;
    uint64_t mmask;
    int n_merges;       /* > 0: merges drive the merge order (rank mode) */

    /* SPM: byte b's fallback token (<0xXX>); BPE: the token of byte b's printable character. -1: none */
    int32_t byte_tok[256];

    /* tokens matched literally in the input (CONTROL/UNKNOWN when parse_special, USER_DEFINED always),
     * bucketed by first byte and longest first within a bucket: spec_ids[spec_first[c] ..
     * spec_first[c + 1]) */
    int32_t *spec_ids;
    uint32_t spec_first[257];
    bool has_user_defined; /* some literal token is USER_DEFINED (matched even without parse_special) */

    int32_t bos, eos, unk;
    bool add_bos, add_eos, add_space_prefix;
    bool escape_spaces; /* SPM: the vocabulary writes spaces as U+2581 */
    tok_pre pre;
    bool ignore_merges; /* BPE: a pre-token that is itself a token is taken whole (llama-bpe) */
    char *chat_template; /* NULL if none */
    uint64_t fingerprint;
};

/* A vocabulary read from a foreign file: spec points into the arrays it owns. */
struct es_vocab {
    es_vocab_spec spec;
    char **tokens;   /* [n_vocab], each NUL-terminated */
    size_t *lens;    /* [n_vocab] */
    float *scores;   /* [n_vocab] */
    int32_t *types;  /* [n_vocab] */
    char **merges;   /* [n_merges] */
    char *pre;
    char *chat_template;
};

/* A vocabulary with room for n_vocab tokens (texts NULL, scores 0, types NORMAL) and n_merges merges
 * (NULL). NULL when out of memory. */
es_vocab *tok_vocab_alloc(int n_vocab, int n_merges);

/* Reads a whole file (at most max bytes) into a malloc'd, NUL-terminated buffer. */
es_status tok_read_file(const char *path, size_t max, char **data, size_t *size, es_err *err);

#define TOK_MAX_VOCAB (1 << 24)
#define TOK_MAX_TOKEN_LEN (1u << 20)

/* ---- lookups in the tables of struct es_tokenizer (built by tokenizer.c, read by every encoder) ---- */

static inline const char *tok_text(const es_tokenizer *t, int32_t id) { return t->blob + t->off[id]; }

static inline uint64_t tok_text_hash(const char *s, size_t n) { return es_fnv1a(ES_FNV_OFFSET, s, n); }

/* The id of the token whose text is s[0..n), or -1. */
static inline int32_t tok_lookup(const es_tokenizer *t, const char *s, size_t n) {
    for (uint64_t i = tok_text_hash(s, n) & t->hmask;; i = (i + 1) & t->hmask) {
        int32_t id = t->htab[i];
        if (id < 0) return -1;
        if (t->len[id] == n && memcmp(tok_text(t, id), s, n) == 0) return id;
    }
}

static inline uint64_t tok_pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static inline uint64_t tok_pair_hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return key;
}

/* The merge of (a, b): true and its rank and result when the pair is a merge. */
static inline bool tok_merge_find(const es_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *result) {
    if (!t->mtab) return false;
    uint64_t key = tok_pair_key(a, b);
    for (uint64_t i = tok_pair_hash(key) & t->mmask;; i = (i + 1) & t->mmask) {
        const struct tok_merge_slot *sl = &t->mtab[i];
        if (sl->key == UINT64_MAX) return false;
        if (sl->key == key) { *rank = sl->rank; *result = sl->result; return true; }
    }
}

/* ---- tokenizer.c ---- */

/* The pre-tokenizer a GGUF tokenizer.ggml.pre names, and whether its family takes a pre-token that is
 * a token whole (ignore_merges). NULL: GPT-2's (es_vocab_spec's convention; a GGUF without the key is
 * read as "default", llama.cpp's fallback, by tok_gguf.c). ES_ERR_UNSUPPORTED for a name it does not
 * know. */
es_status tok_pre_from_name(const char *name, tok_pre *pre, bool *ignore_merges, es_err *err);

/* ---- tok_encode.c ---- */

/* An output cursor: ids past cap are counted, not written. */
typedef struct tok_out {
    int32_t *ids;
    int cap;
    int64_t n;
} tok_out;

static inline void tok_emit(tok_out *o, int32_t id) {
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* Scratch space reused across the fragments of one es_tokenize call. */
typedef struct tok_work {
    struct tok_sym *sym;
    size_t sym_cap;
    struct tok_cand *heap;
    size_t heap_cap;
    char *buf;          /* normalised text (SPM) */
    size_t buf_cap;
} tok_work;

void tok_work_free(tok_work *w);
/* Encodes one fragment of text that holds no special token. */
es_status tok_encode_spm(const es_tokenizer *t, tok_work *w, const char *s, size_t n, tok_out *o, es_err *err);
es_status tok_encode_bpe(const es_tokenizer *t, tok_work *w, const char *s, size_t n, tok_out *o, es_err *err);

/* ---- tok_unicode.c ---- */

/* Character classes of the pre-tokeniser regexes: \p{L}, \p{N}, \s (white space wins over the general
 * category), \p{P}, \p{S}, \p{M}, and everything else. [^\s\p{L}\p{N}] is every class from PUNCT on. */
typedef enum tok_cc {
    TOK_CC_LETTER = 0, TOK_CC_NUMBER, TOK_CC_SPACE, TOK_CC_PUNCT, TOK_CC_SYMBOL, TOK_CC_MARK, TOK_CC_OTHER
} tok_cc;

/* Decodes one UTF-8 character at s[0..n) (n >= 1). Invalid or truncated sequences decode as the
 * single byte (cp = the byte value | 0x80000000, so it matches no class table entry). Returns its
 * length in bytes (1..4). */
int tok_utf8_next(const char *s, size_t n, uint32_t *cp);
/* Writes cp as UTF-8 into out[4], returns the length. */
int tok_utf8_put(uint32_t cp, char *out);
tok_cc tok_cp_class(uint32_t cp);
/* Checks that the class table is sorted and non-overlapping (for the tests). */
bool tok_cc_table_ok(void);
/* GPT-2's byte <-> printable character mapping: bytes 0x21-0x7E, 0xA1-0xAC and 0xAE-0xFF map to the
 * same code point, the other 68 to U+0100 onwards in byte order. */
uint32_t tok_byte_to_cp(uint8_t b);
/* The byte a code point stands for, or -1 when it is not in the mapping. */
int tok_cp_to_byte(uint32_t cp);

/* Splits a fragment into pre-tokens; calls fn for each [start, end) (byte offsets into s). */
typedef es_status (*tok_piece_fn)(void *ctx, size_t start, size_t end, es_err *err);
es_status tok_pretokenize(tok_pre pre, const char *s, size_t n, tok_piece_fn fn, void *ctx, es_err *err);

#endif
