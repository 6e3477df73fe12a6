/* grammar.h — constrained decoding: a JSON grammar (from a JSON Schema subset, or "any JSON object")
 * run as a pushdown automaton over bytes, and the per-token mask it allows over a vocabulary.
 *
 * Three objects, each with an init/free pair:
 *   es_grammar        the compiled schema: a table of nodes (object, array, string, number, integer,
 *                     boolean, null, literal set, alternatives, any). Immutable; shared by sessions.
 *                     Built by es_grammar_from_schema (schema.c, needs cJSON) or es_grammar_json_object.
 *   es_grammar_vocab  the vocabulary as the automaton sees it: every token's bytes, and two byte tries
 *                     in preorder (all usable tokens; the tokens that are not plain string content).
 *                     Immutable; one per tokenizer, shared by every session.
 *   es_gmatcher       one generation's position in the grammar (es_gstate) + the mask buffer.
 *
 * The automaton's state (es_gstate) is a fixed-size value: a stack of frames (one per open JSON
 * container or scalar), so it copies freely — drafters keep one per tree node.
 *
 * What it accepts: exactly one JSON value of the schema, nothing before it and nothing after it but an
 * end token; whitespace between the tokens of JSON, one line break and an indentation of up to 4 spaces
 * per open value (at most ES_GRAMMAR_MAX_WS bytes) per gap, so a model cannot stall on blank lines. Objects with declared properties emit them in declaration order, each
 * optional one possibly skipped, every required one present; no other keys (additionalProperties is
 * treated as false there, which yields output valid under either setting). Numbers are at most
 * ES_GRAMMAR_MAX_NUM bytes long.
 *
 * Mask (es_gmatcher_mask): bit t set <=> token t may come next: its bytes all feed the automaton, or it
 * is an end token and the value is complete. Cost: one pass over the trie that skips every subtree
 * whose first byte is refused; inside a free string, the precomputed set of plain-content tokens is
 * OR-ed in and only the small trie of the others is walked. Allocates nothing. */
#ifndef ES_GRAMMAR_GRAMMAR_H
#define ES_GRAMMAR_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"

#define ES_GRAMMAR_MAX_DEPTH 32   /* nesting of JSON values (a deeper value is refused) */
#define ES_GRAMMAR_MAX_WS 20      /* whitespace bytes in a row */
#define ES_GRAMMAR_MAX_NUM 24     /* bytes of one number */
#define ES_GRAMMAR_MAX_PROPS 64   /* declared properties of one object schema */
#define ES_GRAMMAR_MAX_END 8      /* end tokens a matcher accepts */

typedef struct es_grammar es_grammar;
typedef struct es_grammar_vocab es_grammar_vocab;
typedef struct es_gmatcher es_gmatcher;

typedef struct es_gframe {
    uint16_t node;  /* grammar node */
    uint8_t kind;   /* frame kind (grammar.c) */
    uint8_t st;     /* sub-state */
    uint32_t a, b;  /* counters: property index, item count, literal range, number length */
    uint64_t c;     /* key candidates (bit per property) or literal position */
} es_gframe;

typedef struct es_gstate {
    int16_t depth;  /* frames in use */
    uint8_t ws;     /* whitespace bytes in this gap (bit 7: it holds a line break) */
    uint8_t done;   /* the root value is complete (depth 0) */
    uint8_t ended;  /* an end token was accepted */
    es_gframe f[ES_GRAMMAR_MAX_DEPTH];
} es_gstate;

/* ---- grammars ---- */

/* Any JSON object (response_format json_object). */
es_status es_grammar_json_object(es_grammar **out, es_err *err);
/* A JSON Schema (text, len bytes). Unsupported keywords and shapes fail with ES_ERR_INVALID_ARG and a
 * message naming them (never ignored): see schema.c for the subset. Not in ES_CORE_ONLY builds. */
es_status es_grammar_from_schema(const char *json, size_t len, es_grammar **out, es_err *err);
/* A deep copy (a session keeps its own, so the request that compiled it may go); NULL: no memory. */
es_grammar *es_grammar_clone(const es_grammar *g);
void es_grammar_free(es_grammar *g);
/* The schema text a grammar was compiled from (es_grammar_from_schema; *len its bytes), so the same
 * grammar can be compiled elsewhere (the edge sends it to the server); NULL for es_grammar_json_object. */
const char *es_grammar_source(const es_grammar *g, size_t *len);

/* ---- vocabularies ---- */

/* Token i takes part when it is a normal or byte token with a non-empty piece; the others (control,
 * user-defined, unused) are never allowed, except as end tokens. */
es_status es_grammar_vocab_init(const es_tokenizer *tok, es_grammar_vocab **out, es_err *err);
void es_grammar_vocab_free(es_grammar_vocab *v);
/* Trie nodes (full, special): for the docs and benchmarks. */
void es_grammar_vocab_stats(const es_grammar_vocab *v, int *n_full, int *n_special, int *n_plain);

/* ---- the automaton on bytes (state only; the grammar is read) ---- */

void es_gstate_init(const es_grammar *g, es_gstate *s);
/* Feeds one byte; false when the grammar refuses it (s is then unspecified: feed a copy). */
bool es_gstate_feed(const es_grammar *g, es_gstate *s, uint8_t c);
/* Whether the input may end here (the value is complete, or a number / literal at the top is). */
bool es_gstate_can_end(const es_grammar *g, const es_gstate *s);

/* ---- matchers ---- */

/* end_ids: the tokens that end generation (EOS, chat end tokens); allowed only once the value is
 * complete. Ids outside the vocabulary are an error. */
es_status es_gmatcher_init(const es_grammar *g, const es_grammar_vocab *v, const int32_t *end_ids, int n_end, es_gmatcher **out,
                           es_err *err);
void es_gmatcher_free(es_gmatcher *m);
void es_gmatcher_reset(es_gmatcher *m);
/* Advances by token t. False (state unchanged) when the grammar does not allow it. */
bool es_gmatcher_accept(es_gmatcher *m, int32_t t);
/* Whether token t is allowed now (no state change). */
bool es_gmatcher_allows(const es_gmatcher *m, int32_t t);
/* The allowed-token bitset for the current state ((n_vocab + 63) / 64 words; bit t of word t / 64):
 * computed on first call after a state change, then cached. Valid until the matcher changes. */
const uint64_t *es_gmatcher_mask(es_gmatcher *m);
bool es_gmatcher_ended(const es_gmatcher *m);
const es_gstate *es_gmatcher_state(const es_gmatcher *m);
void es_gmatcher_set_state(es_gmatcher *m, const es_gstate *s);

static inline bool es_mask_test(const uint64_t *mask, int32_t t) { return (mask[t >> 6] >> (t & 63)) & 1u; }

#endif
