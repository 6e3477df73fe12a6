/* detok.h — incremental detokenisation for streaming replies: token ids in, valid UTF-8 out.
 *
 * A token's piece may end in the middle of a multi-byte character (byte-fallback tokens carry one
 * byte each, byte-level BPE tokens may split a character), so the bytes of an incomplete character
 * are held until the next token completes it. Bytes that can never form a valid character (a stray
 * continuation byte, an overlong or surrogate form, a character cut short by the next one) become
 * U+FFFD, so every chunk handed out is valid UTF-8 on its own — what JSON strings need. */
#ifndef ES_TOKENIZER_DETOK_H
#define ES_TOKENIZER_DETOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"
#include "util/str.h"

typedef struct es_detok {
    const es_tokenizer *tok;
    int32_t prev;            /* the previous token (SentencePiece strips the first space after BOS) */
    unsigned char pend[4];   /* bytes of an incomplete character */
    int n_pend;
} es_detok;

/* prev: the last prompt token (or -1). */
void es_detok_init(es_detok *d, const es_tokenizer *tok, int32_t prev);
/* Appends the complete text of token `id` to out. False only when memory runs out. */
bool es_detok_push(es_detok *d, int32_t id, es_str *out);
/* Appends held bytes of an unfinished character as U+FFFD (end of the generation). */
bool es_detok_flush(es_detok *d, es_str *out);

/* Feeds raw bytes (not a token) through the same UTF-8 repair: used by es_detok_push and tests. */
bool es_detok_bytes(es_detok *d, const char *bytes, size_t n, es_str *out);

/* True when s[0..n) is valid UTF-8 (no overlongs, surrogates or code points above U+10FFFF). */
bool es_utf8_valid(const char *s, size_t n);

#endif
