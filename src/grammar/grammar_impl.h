/* grammar_impl.h — the compiled grammar's tables, shared by the automaton (grammar.c) and the schema
 * compiler (schema.c). */
#ifndef ES_GRAMMAR_IMPL_H
#define ES_GRAMMAR_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include "grammar/grammar.h"

typedef enum gn_type {
    GN_ANY = 0,   /* any JSON value (json_object's members) */
    GN_OBJECT,    /* props[prop_off .. +n_props) in order; addl: value node of other keys (-1: none) */
    GN_ARRAY,     /* items node, min_items .. max_items */
    GN_STRING,
    GN_NUMBER,
    GN_INTEGER,
    GN_BOOLEAN,
    GN_NULL,
    GN_LITERALS,  /* lits[lit_off .. +n_lit): JSON texts, sorted by bytes */
    GN_ALT,       /* alts[alt_off .. +n_alt): alternatives whose first bytes differ */
    GN_REF,       /* stands for node `ref` */
} gn_type;

typedef struct gnode {
    uint8_t type;
    int32_t ref;
    int32_t prop_off, n_props, addl;
    int32_t items;
    uint32_t min_items, max_items;
    int32_t lit_off, n_lit;
    int32_t alt_off, n_alt;
    uint64_t req; /* GN_OBJECT: bit i = property i is required */
} gnode;

typedef struct gprop {
    int32_t name_off, name_len; /* the key as JSON text, quotes included, in bytes[] */
    int32_t node;
} gprop;

typedef struct glit {
    int32_t off, len; /* in bytes[] */
} glit;

struct es_grammar {
    int root;
    gnode *nodes;
    int n_nodes, cap_nodes;
    gprop *props;
    int n_props, cap_props;
    glit *lits;
    int n_lits, cap_lits;
    int32_t *alts;
    int n_alts, cap_alts;
    char *bytes;
    size_t n_bytes, cap_bytes;
    char *source;            /* the schema text it was compiled from (NUL-terminated); NULL: any object */
    size_t source_len;
};

/* Table growth for the compiler (false: out of memory). */
int es_grammar_add_node(es_grammar *g, gn_type type);         /* index, or -1 */
int es_grammar_add_bytes(es_grammar *g, const char *s, size_t n); /* offset, or -1 */
es_grammar *es_grammar_new(void);
/* The node behind a chain of GN_REF (a chain longer than the node count is a cycle: -1). */
int es_grammar_resolve(const es_grammar *g, int n);
/* Checks the finished grammar: refs resolve, alternatives start with distinct bytes (else a message
 * naming the clash), literal tables sorted. */
es_status es_grammar_finish(es_grammar *g, es_err *err);

/* Grows the array *p of *cap elements of `elem` bytes to hold `need` (doubling); false when out of
 * memory (*p is then unchanged). */
static inline bool grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return true;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return false;
    *p = q;
    *cap = nc;
    return true;
}

#endif
