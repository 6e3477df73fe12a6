/* tokenizer.h — internal tokenizer API: building a tokenizer from vocabulary arrays, and loading
 * vocabularies from the foreign formats the converters read (llama2.c tokenizer .bin, Hugging Face
 * tokenizer.json) and writing them as GGUF tokenizer.ggml.* metadata.
 *
 * Two algorithms:
 *  - ES_TOK_SPM ("llama" in GGUF): SentencePiece-style BPE. The text gets a leading space (when
 *    add_space_prefix) and spaces become U+2581 "▁" if the vocabulary uses it (llama2.c vocabularies
 *    use a plain ' '); it is split into UTF-8 characters, each mapped to its token or, failing that, to
 *    its byte tokens <0xXX>; then the adjacent pair whose concatenation is a token with the highest
 *    score is merged, repeatedly (exactly llama2.c's encode). A vocabulary that also has merges (one
 *    loaded from an HF tokenizer.json) merges by merge rank instead, exactly as Hugging Face's BPE
 *    does; its scores are set to -merge rank so that score-based consumers agree.
 *  - ES_TOK_BPE ("gpt2" in GGUF): byte-level BPE: a regex-like pre-tokeniser splits the text, bytes
 *    map to printable unicode characters, and merges apply by rank. */
#ifndef ES_TOKENIZER_TOKENIZER_H
#define ES_TOKENIZER_TOKENIZER_H

#include "edgespec.h"
#include "gguf/gguf.h"

typedef enum es_tok_kind { ES_TOK_SPM = 0, ES_TOK_BPE = 1 } es_tok_kind;

/* GGUF token types (tokenizer.ggml.token_type) */
enum {
    ES_TOKTYPE_NORMAL = 1, ES_TOKTYPE_UNKNOWN = 2, ES_TOKTYPE_CONTROL = 3,
    ES_TOKTYPE_USER_DEFINED = 4, ES_TOKTYPE_UNUSED = 5, ES_TOKTYPE_BYTE = 6
};

/* Everything a tokenizer is built from. Arrays are borrowed for the duration of the init call. */
typedef struct es_vocab_spec {
    es_tok_kind kind;
    int n_vocab;
    const char *const *tokens; /* token texts (UTF-8, may contain "▁") */
    const size_t *lens;        /* byte lengths; NULL: strlen */
    const float *scores;       /* NULL: all 0 */
    const int32_t *types;      /* NULL: inferred (<0xXX> -> BYTE, bos/eos/unk -> CONTROL/UNKNOWN) */
    const char *const *merges; /* "left right" pairs in rank order (BPE; optional for SPM) */
    int n_merges;
    int32_t bos, eos, unk, pad; /* -1 if none */
    bool add_bos, add_eos;
    bool add_space_prefix;     /* SPM: prepend a space to the text */
    const char *pre;           /* BPE pre-tokeniser: a tokenizer.ggml.pre name llama.cpp knows (tokenizer.c's
                                  k_pre_names: "gpt-2", "llama-bpe", "qwen2", "deepseek-v3", ...); NULL: "gpt2" */
    const char *chat_template; /* optional, copied to GGUF */
} es_vocab_spec;

es_status es_tokenizer_init(const es_vocab_spec *spec, es_tokenizer **out, es_err *err);
/* Reads tokenizer.ggml.* keys. */
es_status es_tokenizer_from_gguf(const es_gguf *g, es_tokenizer **out, es_err *err);
void es_tokenizer_free(es_tokenizer *tok);
/* The token's raw text as stored in the vocabulary (with "▁"); NULL if out of range. */
const char *es_tokenizer_token_text(const es_tokenizer *tok, int32_t id, size_t *len);
int32_t es_tokenizer_token_type(const es_tokenizer *tok, int32_t id);
float es_tokenizer_token_score(const es_tokenizer *tok, int32_t id);
es_tok_kind es_tokenizer_kind(const es_tokenizer *tok);
int32_t es_tokenizer_unk(const es_tokenizer *tok); /* -1 if none */
/* What the vocabulary asks for: es_tokenize prepends BOS only when both its add_bos argument and
 * this are true; it never appends EOS (callers that want it check es_tokenizer_add_eos). */
bool es_tokenizer_add_bos(const es_tokenizer *tok);
bool es_tokenizer_add_eos(const es_tokenizer *tok);
/* The longest token text in bytes: a buffer of this size (or 4 when larger) always holds a piece. */
int es_tokenizer_max_token_len(const es_tokenizer *tok);
/* The vocabulary's chat template (tokenizer.chat_template), or NULL. */
const char *es_tokenizer_chat_template(const es_tokenizer *tok);
/* The type es_tokenizer_init gives token i when spec->types is NULL. */
int32_t es_tok_infer_type(const es_vocab_spec *spec, int i);

/* A vocabulary loaded from a foreign file: owns its arrays. */
typedef struct es_vocab es_vocab;
const es_vocab_spec *es_vocab_spec_of(const es_vocab *v);
void es_vocab_free(es_vocab *v);
/* llama2.c tokenizer .bin: i32 max_token_length, then n_vocab × (f32 score, i32 len, bytes).
 * n_vocab comes from the model header (the file does not store it). Token 0 <unk>, 1 BOS, 2 EOS. */
es_status es_vocab_load_llama2c(const char *path, int n_vocab, es_vocab **out, es_err *err);
/* The same from a buffer (not retained). */
es_status es_vocab_load_llama2c_buffer(const void *data, size_t size, int n_vocab, es_vocab **out, es_err *err);
/* Hugging Face tokenizer.json (model.type BPE, with or without byte_fallback), plus the optional
 * tokenizer_config.json beside it (bos/eos, add_bos_token, chat_template). */
es_status es_vocab_load_hf(const char *tokenizer_json, const char *tokenizer_config_json /* may be NULL */,
                           es_vocab **out, es_err *err);
/* The same from JSON texts in memory (not retained); config may be NULL. */
es_status es_vocab_load_hf_buffer(const char *json, size_t json_len, const char *config, size_t config_len,
                                  es_vocab **out, es_err *err);
/* Writes tokenizer.ggml.{model,tokens,scores,token_type,merges,bos_token_id,eos_token_id,...}. */
es_status es_vocab_write_gguf(const es_vocab_spec *spec, es_gguf_writer *w, es_err *err);

#endif
