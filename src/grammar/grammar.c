/* grammar.c — the JSON pushdown automaton over bytes, the vocabulary tries and the token mask.
 *
 * The automaton keeps one frame per open JSON value. A frame's kind says what is being read:
 *   VALUE  a value of node `node` is expected (whitespace allowed); its first byte picks the
 *          alternative and replaces the frame by one of the kinds below
 *   OBJ    inside an object; sub-states START (after '{'), KEY (matching a declared key, c = the
 *          candidate properties, b = bytes matched), COLON, AFTER (after a member), NEXT (after ',');
 *          a = index of the next declared property that may come (they come in declaration order)
 *   ARR    inside an array; a = items so far; sub-states START, AFTER, NEXT
 *   STR    inside a free string (after the opening quote); sub-states CHAR, ESC, U1..U4
 *   NUM    inside a number (sub-states of the JSON number grammar); a = length, b = integer only
 *   LIT    matching one of a node's literals; [a, b) = the literals (sorted) that agree so far, c = pos
 * NUM and LIT end when a byte cannot continue them: the frame is popped and the byte goes to the frame
 * below (so "12," is NUM 1, NUM 2, then ',' to the container). */
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"

enum { FK_VALUE = 0, FK_OBJ, FK_ARR, FK_STR, FK_NUM, FK_LIT };
enum { O_START = 0, O_KEY, O_COLON, O_AFTER, O_NEXT };
enum { A_START = 0, A_AFTER, A_NEXT };
enum { S_CHAR = 0, S_ESC, S_U1 };
enum { N_START = 0, N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };

/* Built-in nodes every grammar has (es_grammar_new). */
enum { NODE_ANY = 0, NODE_BOOL_LITS = 1, NODE_NULL_LIT = 2 };

/* ---- tables ------------------------------------------------------------------------------------- */

int es_grammar_add_node(es_grammar *g, gn_type type) {
    if (g->n_nodes >= 60000 || !grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes)) return -1;
    gnode *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->type = (uint8_t)type;
    n->ref = n->addl = n->items = -1;
    n->max_items = UINT32_MAX;
    return g->n_nodes++;
}

int es_grammar_add_bytes(es_grammar *g, const char *s, size_t n) {
    if (g->n_bytes + n > (1u << 30)) return -1;
    if (g->n_bytes + n > g->cap_bytes) {
        size_t nc = g->cap_bytes ? g->cap_bytes * 2 : 256;
        while (nc < g->n_bytes + n) nc *= 2;
        char *q = realloc(g->bytes, nc);
        if (!q) return -1;
        g->bytes = q;
        g->cap_bytes = nc;
    }
    memcpy(g->bytes + g->n_bytes, s, n);
    g->n_bytes += n;
    return (int)(g->n_bytes - n);
}

static int add_lit_node(es_grammar *g, const char *const *lits, int n) {
    const int node = es_grammar_add_node(g, GN_LITERALS);
    if (node < 0 || !grow((void **)&g->lits, &g->cap_lits, g->n_lits + n, sizeof *g->lits)) return -1;
    g->nodes[node].lit_off = g->n_lits;
    g->nodes[node].n_lit = n;
    for (int i = 0; i < n; i++) {
        const int off = es_grammar_add_bytes(g, lits[i], strlen(lits[i]));
        if (off < 0) return -1;
        g->lits[g->n_lits++] = (glit){off, (int32_t)strlen(lits[i])};
    }
    return node;
}

es_grammar *es_grammar_new(void) {
    es_grammar *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    static const char *const bools[] = {"false", "true"}, *const nul[] = {"null"};
    if (es_grammar_add_node(g, GN_ANY) != NODE_ANY || add_lit_node(g, bools, 2) != NODE_BOOL_LITS ||
        add_lit_node(g, nul, 1) != NODE_NULL_LIT) {
        es_grammar_free(g);
        return NULL;
    }
    g->root = NODE_ANY;
    return g;
}

void es_grammar_free(es_grammar *g) {
    if (!g) return;
    free(g->nodes);
    free(g->props);
    free(g->lits);
    free(g->alts);
    free(g->bytes);
    free(g->source);
    free(g);
}

static void *dup_mem(const void *p, size_t n) {
    if (n == 0) return NULL;
    void *q = malloc(n);
    if (q) memcpy(q, p, n);
    return q;
}

es_grammar *es_grammar_clone(const es_grammar *g) {
    es_grammar *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    *c = *g;
    c->nodes = dup_mem(g->nodes, (size_t)g->n_nodes * sizeof *g->nodes);
    c->props = dup_mem(g->props, (size_t)g->n_props * sizeof *g->props);
    c->lits = dup_mem(g->lits, (size_t)g->n_lits * sizeof *g->lits);
    c->alts = dup_mem(g->alts, (size_t)g->n_alts * sizeof *g->alts);
    c->bytes = dup_mem(g->bytes, g->n_bytes);
    c->source = g->source ? dup_mem(g->source, g->source_len + 1) : NULL;
    c->cap_nodes = g->n_nodes;
    c->cap_props = g->n_props;
    c->cap_lits = g->n_lits;
    c->cap_alts = g->n_alts;
    c->cap_bytes = g->n_bytes;
    if ((g->n_nodes && !c->nodes) || (g->n_props && !c->props) || (g->n_lits && !c->lits) || (g->n_alts && !c->alts) ||
        (g->n_bytes && !c->bytes) || (g->source && !c->source)) {
        es_grammar_free(c);
        return NULL;
    }
    return c;
}

es_status es_grammar_json_object(es_grammar **out, es_err *err) {
    *out = NULL;
    es_grammar *g = es_grammar_new();
    if (!g) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    /* an object with free keys whose values are any JSON value */
    const int n = es_grammar_add_node(g, GN_OBJECT);
    if (n < 0) { es_grammar_free(g); return es_fail(err, ES_ERR_NOMEM, "out of memory"); }
    g->nodes[n].addl = NODE_ANY;
    g->root = n;
    *out = g;
    return ES_OK;
}

const char *es_grammar_source(const es_grammar *g, size_t *len) {
    if (len) *len = g->source_len;
    return g->source;
}

int es_grammar_resolve(const es_grammar *g, int n) {
    for (int k = 0; k <= g->n_nodes; k++) {
        if (n < 0 || n >= g->n_nodes) return -1;
        if (g->nodes[n].type != GN_REF) return n;
        n = g->nodes[n].ref;
    }
    return -1;
}

/* ---- first bytes: which value shapes a node can start with -------------------------------------- */

enum { CL_OBJ = 1, CL_ARR = 2, CL_STR = 4, CL_NUM = 8, CL_T = 16, CL_F = 32, CL_N = 64 };

static unsigned byte_class(uint8_t c) {
    switch (c) {
    case '{': return CL_OBJ;
    case '[': return CL_ARR;
    case '"': return CL_STR;
    case 't': return CL_T;
    case 'f': return CL_F;
    case 'n': return CL_N;
    default: return (c == '-' || (c >= '0' && c <= '9')) ? CL_NUM : 0;
    }
}

/* The classes node n can start with; 0 on a cycle of alternatives (or depth exhausted). */
static unsigned node_classes(const es_grammar *g, int n, int depth) {
    n = es_grammar_resolve(g, n);
    if (n < 0 || depth > 64) return 0;
    const gnode *x = &g->nodes[n];
    switch (x->type) {
    case GN_ANY: return CL_OBJ | CL_ARR | CL_STR | CL_NUM | CL_T | CL_F | CL_N;
    case GN_OBJECT: return CL_OBJ;
    case GN_ARRAY: return CL_ARR;
    case GN_STRING: return CL_STR;
    case GN_NUMBER: case GN_INTEGER: return CL_NUM;
    case GN_BOOLEAN: return CL_T | CL_F;
    case GN_NULL: return CL_N;
    case GN_LITERALS: {
        unsigned m = 0;
        for (int i = 0; i < x->n_lit; i++) {
            const glit *l = &g->lits[x->lit_off + i];
            if (l->len > 0) m |= byte_class((uint8_t)g->bytes[l->off]);
        }
        return m;
    }
    case GN_ALT: {
        unsigned m = 0;
        for (int i = 0; i < x->n_alt; i++) {
            const unsigned c = node_classes(g, g->alts[x->alt_off + i], depth + 1);
            if (!c) return 0;
            m |= c;
        }
        return m;
    }
    default: return 0;
    }
}

static const char *class_name(unsigned c) {
    switch (c & -c) {
    case CL_OBJ: return "an object";
    case CL_ARR: return "an array";
    case CL_STR: return "a string";
    case CL_NUM: return "a number";
    case CL_T: return "true";
    case CL_F: return "false";
    default: return "null";
    }
}

static int lit_cmp(const es_grammar *g, const glit *a, const glit *b) {
    const int n = a->len < b->len ? a->len : b->len;
    const int c = memcmp(g->bytes + a->off, g->bytes + b->off, (size_t)n);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

es_status es_grammar_finish(es_grammar *g, es_err *err) {
    if (es_grammar_resolve(g, g->root) < 0) return es_fail(err, ES_ERR_INVALID_ARG, "schema: the root is a $ref cycle");
    for (int n = 0; n < g->n_nodes; n++) {
        const gnode *x = &g->nodes[n];
        if (x->type == GN_REF && es_grammar_resolve(g, n) < 0)
            return es_fail(err, ES_ERR_INVALID_ARG, "schema: a $ref that never reaches a schema (a cycle of $refs)");
        if (x->type == GN_LITERALS) { /* insertion sort (enum lists are short); duplicates refused */
            glit *l = g->lits + x->lit_off;
            for (int i = 1; i < x->n_lit; i++) {
                glit k = l[i];
                int j = i;
                while (j > 0 && lit_cmp(g, &l[j - 1], &k) > 0) { l[j] = l[j - 1]; j--; }
                l[j] = k;
            }
            for (int i = 1; i < x->n_lit; i++)
                if (lit_cmp(g, &l[i - 1], &l[i]) == 0) return es_fail(err, ES_ERR_INVALID_ARG, "schema: an enum lists the same value twice");
            if (x->n_lit == 0) return es_fail(err, ES_ERR_INVALID_ARG, "schema: an empty enum matches nothing");
        }
        if (x->type == GN_ALT) {
            unsigned seen = 0;
            for (int i = 0; i < x->n_alt; i++) {
                const unsigned c = node_classes(g, g->alts[x->alt_off + i], 0);
                if (!c) return es_fail(err, ES_ERR_INVALID_ARG, "schema: anyOf alternative %d refers to itself without content", i);
                if (c & seen)
                    return es_fail(err, ES_ERR_INVALID_ARG,
                                   "schema: anyOf alternatives must start differently (object, array, string, number, true, false, "
                                   "null); alternative %d can start like an earlier one (%s)", i, class_name(c & seen));
                seen |= c;
            }
        }
    }
    return ES_OK;
}

/* ---- the automaton ------------------------------------------------------------------------------ */

static inline bool is_ws(uint8_t c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
static inline bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
static inline bool is_hex(uint8_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

void es_gstate_init(const es_grammar *g, es_gstate *s) {
    s->depth = 1;
    s->ws = 0;
    s->done = 0;
    s->ended = 0;
    memset(&s->f[0], 0, sizeof s->f[0]);
    s->f[0].kind = FK_VALUE;
    s->f[0].node = (uint16_t)g->root;
}

static bool push(es_gstate *s, uint8_t kind, int node, uint8_t st) {
    if (s->depth >= ES_GRAMMAR_MAX_DEPTH) return false;
    es_gframe *f = &s->f[s->depth++];
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->node = (uint16_t)node;
    f->st = st;
    return true;
}

static void pop(es_gstate *s) {
    if (--s->depth == 0) s->done = 1;
}

/* Whitespace between JSON tokens: one line break per gap (bit 7 of s->ws), no '\r', and at most
 * 1 + 4 bytes per open value (a line break plus a 4-space indentation at that depth; the frames on the
 * stack are the open values), never more than ES_GRAMMAR_MAX_WS. Small models otherwise fill a reply
 * with blank lines: every gap takes as much as the cap allows. */
static bool take_ws(es_gstate *s, uint8_t c) {
    const unsigned n = s->ws & 0x7f, nl = s->ws & 0x80;
    const unsigned cap = 1u + 4u * (unsigned)s->depth < ES_GRAMMAR_MAX_WS ? 1u + 4u * (unsigned)s->depth : ES_GRAMMAR_MAX_WS;
    if (n >= cap || c == '\r' || (c == '\n' && nl)) return false;
    s->ws = (uint8_t)((n + 1) | nl | (c == '\n' ? 0x80 : 0));
    return true;
}

/* Declared properties that may come next: a, then each optional one up to the first required one. */
static uint64_t allowed_keys(const gnode *o, uint32_t a) {
    if (a >= (uint32_t)o->n_props) return 0;
    const uint64_t all = o->n_props >= 64 ? ~0ull : (1ull << o->n_props) - 1;
    const uint64_t from = (~0ull << a) & all;
    const uint64_t req = o->req & from;
    if (!req) return from;
    const uint64_t first = req & -req;
    return from & (first | (first - 1));
}

static bool obj_may_close(const gnode *o, uint32_t a) {
    if (o->n_props == 0) return true;
    return a >= 64 || (o->req >> a) == 0;
}

/* Starts a value of node n with first byte c in the frame f (a VALUE frame being replaced). Returns
 * 1: c consumed, 0: refused, 2: the new frame must see c (numbers and literals). */
static int start_value(const es_grammar *g, es_gframe *f, int n, uint8_t c) {
    const unsigned cl = byte_class(c);
    if (!cl) return 0;
    for (int guard = 0;; guard++) {
        n = es_grammar_resolve(g, n);
        if (n < 0 || guard > 64) return 0;
        const gnode *x = &g->nodes[n];
        if (x->type != GN_ALT) break;
        int pick = -1;
        for (int i = 0; i < x->n_alt && pick < 0; i++)
            if (node_classes(g, g->alts[x->alt_off + i], 0) & cl) pick = g->alts[x->alt_off + i];
        if (pick < 0) return 0;
        n = pick;
    }
    const gnode *x = &g->nodes[n];
    uint8_t t = x->type;
    if (t == GN_ANY) {
        if (cl == CL_OBJ) { f->kind = FK_OBJ; f->st = O_START; f->node = (uint16_t)n; return 1; }
        if (cl == CL_ARR) { f->kind = FK_ARR; f->st = A_START; f->node = (uint16_t)n; return 1; }
        t = cl == CL_STR ? GN_STRING : cl == CL_NUM ? GN_NUMBER : cl == CL_N ? GN_NULL : GN_BOOLEAN;
    }
    memset(f, 0, sizeof *f);
    f->node = (uint16_t)n;
    switch (t) {
    case GN_OBJECT:
        if (cl != CL_OBJ) return 0;
        f->kind = FK_OBJ;
        f->st = O_START;
        return 1;
    case GN_ARRAY:
        if (cl != CL_ARR) return 0;
        f->kind = FK_ARR;
        f->st = A_START;
        return 1;
    case GN_STRING:
        if (cl != CL_STR) return 0;
        f->kind = FK_STR;
        f->st = S_CHAR;
        return 1;
    case GN_NUMBER:
    case GN_INTEGER:
        if (cl != CL_NUM) return 0;
        f->kind = FK_NUM;
        f->st = N_START;
        f->b = t == GN_INTEGER;
        return 2;
    case GN_BOOLEAN:
    case GN_NULL:
    case GN_LITERALS: {
        const int ln = t == GN_BOOLEAN ? NODE_BOOL_LITS : t == GN_NULL ? NODE_NULL_LIT : n;
        f->kind = FK_LIT;
        f->node = (uint16_t)ln;
        f->a = 0;
        f->b = (uint32_t)g->nodes[ln].n_lit;
        f->c = 0;
        return 2;
    }
    default: return 0;
    }
}

/* Number sub-state after byte c, or -1 when c does not continue the number. */
static int num_next(int st, uint8_t c, bool integer) {
    switch (st) {
    case N_START: return c == '-' ? N_MINUS : c == '0' ? N_ZERO : is_digit(c) ? N_INT : -1;
    case N_MINUS: return c == '0' ? N_ZERO : is_digit(c) ? N_INT : -1;
    case N_ZERO: return integer ? -1 : c == '.' ? N_DOT : (c == 'e' || c == 'E') ? N_E : -1;
    case N_INT: return is_digit(c) ? N_INT : integer ? -1 : c == '.' ? N_DOT : (c == 'e' || c == 'E') ? N_E : -1;
    case N_DOT: return is_digit(c) ? N_FRAC : -1;
    case N_FRAC: return is_digit(c) ? N_FRAC : (c == 'e' || c == 'E') ? N_E : -1;
    case N_E: return (c == '+' || c == '-') ? N_ESIGN : is_digit(c) ? N_EXP : -1;
    case N_ESIGN: return is_digit(c) ? N_EXP : -1;
    case N_EXP: return is_digit(c) ? N_EXP : -1;
    default: return -1;
    }
}

static inline bool num_accepting(int st) { return st == N_ZERO || st == N_INT || st == N_FRAC || st == N_EXP; }

/* Whether literal frame f holds a complete literal (sorted: a complete one comes first). */
static bool lit_complete(const es_grammar *g, const es_gframe *f) {
    const gnode *x = &g->nodes[f->node];
    return f->a < f->b && (uint64_t)g->lits[x->lit_off + f->a].len == f->c;
}

/* What a frame did with a byte, counted as start_value counts (a bool reads as refused or taken):
 * refused it, consumed it, or left it to the frame now on top (the number or literal a value became,
 * the value an array item opened, or the parent of a number or literal that ended). */
enum { FEED_REFUSED, FEED_TAKEN, FEED_AGAIN };

static int feed_value(const es_grammar *g, es_gstate *s, es_gframe *f, uint8_t c) {
    if (is_ws(c)) return s->depth > 1 && take_ws(s, c); /* the reply starts with the value itself */
    return start_value(g, f, f->node, c);
}

static int feed_str(es_gstate *s, es_gframe *f, uint8_t c) {
    if (f->st == S_CHAR) {
        if (c == '"') { pop(s); return FEED_TAKEN; }
        if (c == '\\') { f->st = S_ESC; return FEED_TAKEN; }
        return c >= 0x20;
    }
    if (f->st == S_ESC) {
        if (c == 'u') { f->st = S_U1; return FEED_TAKEN; }
        if (!strchr("\"\\/bfnrt", c) || c == 0) return FEED_REFUSED;
        f->st = S_CHAR;
        return FEED_TAKEN;
    }
    if (!is_hex(c)) return FEED_REFUSED;
    f->st = f->st == S_U1 + 3 ? S_CHAR : f->st + 1;
    return FEED_TAKEN;
}

static int feed_num(es_gstate *s, es_gframe *f, uint8_t c) {
    const int nx = f->a < ES_GRAMMAR_MAX_NUM ? num_next(f->st, c, f->b != 0) : -1;
    if (nx >= 0) { f->st = (uint8_t)nx; f->a++; return FEED_TAKEN; }
    if (!num_accepting(f->st)) return FEED_REFUSED;
    pop(s);
    return FEED_AGAIN;
}

/* Narrows the literal frame's range [a, b) to the literals whose next byte is c. */
static int feed_lit(const es_grammar *g, es_gstate *s, es_gframe *f, uint8_t c) {
    const gnode *x = &g->nodes[f->node];
    const glit *l = g->lits + x->lit_off;
    uint32_t lo = f->b, hi = f->a;
    for (uint32_t i = f->a; i < f->b; i++)
        if ((uint64_t)l[i].len > f->c && (uint8_t)g->bytes[l[i].off + f->c] == c) {
            if (lo == f->b) lo = i;
            hi = i + 1;
        }
    if (lo < hi) { f->a = lo; f->b = hi; f->c++; return FEED_TAKEN; }
    if (!lit_complete(g, f)) return FEED_REFUSED;
    pop(s);
    return FEED_AGAIN;
}

static int feed_arr(const es_grammar *g, es_gstate *s, es_gframe *f, uint8_t c) {
    const gnode *x = &g->nodes[f->node];
    const bool any = x->type == GN_ANY;
    const uint32_t mn = any ? 0 : x->min_items, mx = any ? UINT32_MAX : x->max_items;
    const int items = any ? NODE_ANY : x->items;
    if (is_ws(c)) return take_ws(s, c);
    if (f->st == A_AFTER) {
        if (c == ',' && f->a < mx) { f->st = A_NEXT; return FEED_TAKEN; }
        if (c == ']' && f->a >= mn) { pop(s); return FEED_TAKEN; }
        return FEED_REFUSED;
    }
    if (f->st == A_START && c == ']') {
        if (mn > 0) return FEED_REFUSED;
        pop(s);
        return FEED_TAKEN;
    }
    if (f->a >= mx || items < 0) return FEED_REFUSED;
    f->a++;
    f->st = A_AFTER;
    if (!push(s, FK_VALUE, items, 0)) return FEED_REFUSED;
    return FEED_AGAIN; /* the item's value frame takes c */
}

/* A byte of a declared property's name: c narrows the candidates (bit per property) to those whose
 * next name byte it is; a candidate whose whole name has been read is the key. */
static bool feed_key(const es_grammar *g, const gnode *x, es_gframe *f, uint8_t c) {
    const gprop *p = g->props + x->prop_off;
    uint64_t nc = 0;
    for (uint64_t m = f->c; m; m &= m - 1) {
        const int i = __builtin_ctzll(m);
        if ((uint32_t)p[i].name_len > f->b && (uint8_t)g->bytes[p[i].name_off + f->b] == c) nc |= 1ull << i;
    }
    if (!nc) return false;
    f->c = nc;
    f->b++;
    for (uint64_t m = nc; m; m &= m - 1) {
        const int i = __builtin_ctzll(m);
        if ((uint32_t)p[i].name_len == f->b) { f->a = (uint32_t)i + 1; f->st = O_COLON; break; }
    }
    return true;
}

/* An object never leaves c to another frame: a key or value it opens starts after c. */
static int feed_obj(const es_grammar *g, es_gstate *s, es_gframe *f, uint8_t c) {
    const gnode *x = &g->nodes[f->node];
    const bool closed = x->type == GN_OBJECT && x->n_props > 0;
    const int addl = x->type == GN_ANY ? NODE_ANY : x->addl;
    if (f->st == O_KEY) return feed_key(g, x, f, c);
    if (is_ws(c)) return take_ws(s, c);
    switch (f->st) {
    case O_START:
    case O_NEXT:
        if (c == '}' && f->st == O_START) {
            if (!(closed ? obj_may_close(x, f->a) : true)) return FEED_REFUSED;
            pop(s);
            return FEED_TAKEN;
        }
        if (c != '"') return FEED_REFUSED;
        if (closed) {
            const uint64_t k = allowed_keys(x, f->a);
            if (!k) return FEED_REFUSED;
            f->c = k;
            f->b = 1;
            f->st = O_KEY;
            return FEED_TAKEN;
        }
        if (addl < 0) return FEED_REFUSED;
        f->st = O_COLON;
        return push(s, FK_STR, 0, S_CHAR);
    case O_COLON: {
        if (c != ':') return FEED_REFUSED;
        const int vn = closed ? g->props[x->prop_off + f->a - 1].node : addl;
        f->st = O_AFTER;
        return push(s, FK_VALUE, vn, 0);
    }
    case O_AFTER:
        if (c == ',') {
            if (closed && !allowed_keys(x, f->a)) return FEED_REFUSED;
            f->st = O_NEXT;
            return FEED_TAKEN;
        }
        if (c == '}') {
            if (closed && !obj_may_close(x, f->a)) return FEED_REFUSED;
            pop(s);
            return FEED_TAKEN;
        }
        return FEED_REFUSED;
    default: return FEED_REFUSED;
    }
}

bool es_gstate_feed(const es_grammar *g, es_gstate *s, uint8_t c) {
    if (s->ended || s->done) return false;
    if (!is_ws(c)) s->ws = 0;
    for (;;) {
        if (s->depth <= 0) return false;
        es_gframe *f = &s->f[s->depth - 1];
        int r;
        switch (f->kind) {
        case FK_VALUE: r = feed_value(g, s, f, c); break;
        case FK_STR: r = feed_str(s, f, c); break;
        case FK_NUM: r = feed_num(s, f, c); break;
        case FK_LIT: r = feed_lit(g, s, f, c); break;
        case FK_ARR: r = feed_arr(g, s, f, c); break;
        case FK_OBJ: r = feed_obj(g, s, f, c); break;
        default: return false;
        }
        if (r != FEED_AGAIN) return r == FEED_TAKEN;
    }
}

bool es_gstate_can_end(const es_grammar *g, const es_gstate *s) {
    if (s->ended) return true;
    for (int d = s->depth; d > 0; d--) {
        const es_gframe *f = &s->f[d - 1];
        if (f->kind == FK_NUM && num_accepting(f->st)) continue;
        if (f->kind == FK_LIT && lit_complete(g, f)) continue;
        return false;
    }
    return s->depth == 0 ? s->done != 0 : true;
}

/* ---- vocabularies: token bytes and the tries ------------------------------------------------------
 *
 * A trie in preorder: node i has the byte that leads to it, its depth (1 = first byte of a token),
 * skip = the index after its subtree, and the tokens that end at it (tok[tok_off .. +tok_n)). Walking
 * it in order while keeping one automaton state per depth visits each allowed prefix once; a refused
 * byte jumps to skip. Built from the token byte strings sorted bytewise: consecutive strings share
 * their longest common prefix, so the new nodes of a string are those below that prefix. */

typedef struct gtrie {
    int n;
    uint8_t *byte;
    uint16_t *depth;
    int32_t *skip;
    int32_t *tok_off;
    int32_t *tok_n;
    int32_t *tok; /* token ids in trie order */
} gtrie;

struct es_grammar_vocab {
    int n_vocab, n_words, max_len;
    uint32_t *off;    /* [n_vocab + 1] into bytes; a token not usable has length 0 */
    uint8_t *bytes;
    uint64_t *plain;  /* tokens that are plain string content (no '"', '\\', control bytes) */
    gtrie full, special;
};

static void trie_free(gtrie *t) {
    free(t->byte);
    free(t->depth);
    free(t->skip);
    free(t->tok_off);
    free(t->tok_n);
    free(t->tok);
    memset(t, 0, sizeof *t);
}

/* Merge sort of token ids by their bytes, then id (qsort has no context pointer). */
static void sort_ids(const es_grammar_vocab *v, int32_t *a, int32_t *tmp, int n) {
    if (n < 2) return;
    const int h = n / 2;
    sort_ids(v, a, tmp, h);
    sort_ids(v, a + h, tmp, n - h);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) {
        const int32_t x = a[i], y = a[j];
        const uint32_t lx = v->off[x + 1] - v->off[x], ly = v->off[y + 1] - v->off[y];
        int c = memcmp(v->bytes + v->off[x], v->bytes + v->off[y], lx < ly ? lx : ly);
        if (!c) c = lx != ly ? (lx < ly ? -1 : 1) : (x > y) - (x < y);
        tmp[k++] = c <= 0 ? a[i++] : a[j++];
    }
    while (i < h) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    memcpy(a, tmp, (size_t)n * sizeof *a);
}

static bool trie_build(const es_grammar_vocab *v, const int32_t *ids_in, int n_ids, gtrie *t) {
    memset(t, 0, sizeof *t);
    int32_t *ids = malloc(((size_t)n_ids + 1) * sizeof *ids), *tmp = malloc(((size_t)n_ids + 1) * sizeof *tmp);
    size_t cap = 0;
    for (int i = 0; i < n_ids; i++) cap += v->off[ids_in[i] + 1] - v->off[ids_in[i]];
    t->byte = malloc(cap + 1);
    t->depth = malloc((cap + 1) * sizeof *t->depth);
    t->skip = malloc((cap + 1) * sizeof *t->skip);
    t->tok_off = malloc((cap + 1) * sizeof *t->tok_off);
    t->tok_n = malloc((cap + 1) * sizeof *t->tok_n);
    t->tok = malloc(((size_t)n_ids + 1) * sizeof *t->tok);
    int32_t open[256 + 1];
    if (!ids || !tmp || !t->byte || !t->depth || !t->skip || !t->tok_off || !t->tok_n || !t->tok) {
        free(ids);
        free(tmp);
        trie_free(t);
        return false;
    }
    memcpy(ids, ids_in, (size_t)n_ids * sizeof *ids);
    sort_ids(v, ids, tmp, n_ids);
    int n_open = 0; /* open[d - 1]: the node at depth d on the current path */
    const uint8_t *prev = NULL;
    uint32_t prev_len = 0;
    for (int k = 0; k < n_ids; k++) {
        const int32_t id = ids[k];
        const uint8_t *s = v->bytes + v->off[id];
        const uint32_t len = v->off[id + 1] - v->off[id];
        uint32_t lcp = 0;
        while (prev && lcp < len && lcp < prev_len && s[lcp] == prev[lcp]) lcp++;
        if (!(prev && lcp == len && len == prev_len)) {
            /* close the nodes deeper than the shared prefix, open one per new byte */
            while (n_open > (int)lcp) t->skip[open[--n_open]] = t->n;
            for (uint32_t d = lcp; d < len; d++) {
                const int i = t->n++;
                t->byte[i] = s[d];
                t->depth[i] = (uint16_t)(d + 1);
                t->tok_off[i] = k;
                t->tok_n[i] = 0;
                open[n_open++] = i;
            }
            t->tok_off[open[n_open - 1]] = k;
        }
        t->tok[k] = id;
        t->tok_n[open[n_open - 1]]++;
        prev = s;
        prev_len = len;
    }
    while (n_open > 0) t->skip[open[--n_open]] = t->n;
    free(ids);
    free(tmp);
    return true;
}

es_status es_grammar_vocab_init(const es_tokenizer *tok, es_grammar_vocab **out, es_err *err) {
    *out = NULL;
    const int n = es_tokenizer_n_vocab(tok);
    if (n <= 0) return es_fail(err, ES_ERR_INVALID_ARG, "grammar: empty vocabulary");
    es_grammar_vocab *v = calloc(1, sizeof *v);
    if (!v) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    v->n_vocab = n;
    v->n_words = (n + 63) / 64;
    v->off = malloc(((size_t)n + 1) * sizeof *v->off);
    v->plain = calloc((size_t)v->n_words, sizeof *v->plain);
    size_t cap = (size_t)n * 8 + 256, used = 0;
    v->bytes = malloc(cap);
    int32_t *ids = malloc((size_t)n * sizeof *ids), *sp = malloc((size_t)n * sizeof *sp);
    if (!v->off || !v->plain || !v->bytes || !ids || !sp) goto nomem;
    int n_ids = 0, n_sp = 0;
    char buf[256];
    for (int i = 0; i < n; i++) {
        v->off[i] = (uint32_t)used;
        const int32_t ty = es_tokenizer_token_type(tok, i);
        if (ty != ES_TOKTYPE_NORMAL && ty != ES_TOKTYPE_BYTE) continue;
        const int len = es_token_to_piece(tok, -1, i, buf, (int)sizeof buf);
        /* a piece that fills the buffer may have been cut: such a token (none is real) never takes part */
        if (len <= 0 || len >= (int)sizeof buf - 1) continue;
        if (used + (size_t)len > cap) {
            uint8_t *q = realloc(v->bytes, cap * 2);
            if (!q) goto nomem;
            v->bytes = q;
            cap *= 2;
        }
        memcpy(v->bytes + used, buf, (size_t)len);
        used += (size_t)len;
        if (len > v->max_len) v->max_len = len;
        ids[n_ids++] = i;
        bool plain = true;
        for (int k = 0; k < len && plain; k++) {
            const uint8_t c = (uint8_t)buf[k];
            plain = c >= 0x20 && c != '"' && c != '\\';
        }
        if (plain) v->plain[i >> 6] |= 1ull << (i & 63);
        else sp[n_sp++] = i;
    }
    v->off[n] = (uint32_t)used;
    if (!trie_build(v, ids, n_ids, &v->full) || !trie_build(v, sp, n_sp, &v->special)) goto nomem;
    free(ids);
    free(sp);
    *out = v;
    return ES_OK;
nomem:
    free(ids);
    free(sp);
    es_grammar_vocab_free(v);
    return es_fail(err, ES_ERR_NOMEM, "out of memory");
}

void es_grammar_vocab_free(es_grammar_vocab *v) {
    if (!v) return;
    free(v->off);
    free(v->bytes);
    free(v->plain);
    trie_free(&v->full);
    trie_free(&v->special);
    free(v);
}

void es_grammar_vocab_stats(const es_grammar_vocab *v, int *n_full, int *n_special, int *n_plain) {
    *n_full = v->full.n;
    *n_special = v->special.n;
    int p = 0;
    for (int i = 0; i < v->n_words; i++) p += __builtin_popcountll(v->plain[i]);
    *n_plain = p;
}

/* ---- matchers ------------------------------------------------------------------------------------ */

struct es_gmatcher {
    const es_grammar *g;
    const es_grammar_vocab *v;
    int32_t end[ES_GRAMMAR_MAX_END];
    int n_end;
    es_gstate cur;
    uint64_t *mask;
    bool mask_ok;
    es_gstate *dfs; /* [256 + 1] one state per trie depth */
};

es_status es_gmatcher_init(const es_grammar *g, const es_grammar_vocab *v, const int32_t *end_ids, int n_end, es_gmatcher **out,
                           es_err *err) {
    *out = NULL;
    if (n_end < 0 || n_end > ES_GRAMMAR_MAX_END) return es_fail(err, ES_ERR_INVALID_ARG, "grammar: %d end tokens (at most %d)", n_end, ES_GRAMMAR_MAX_END);
    for (int i = 0; i < n_end; i++)
        if (end_ids[i] < 0 || end_ids[i] >= v->n_vocab) return es_fail(err, ES_ERR_RANGE, "grammar: end token %d outside the vocabulary", end_ids[i]);
    es_gmatcher *m = calloc(1, sizeof *m);
    if (!m) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    m->g = g;
    m->v = v;
    m->n_end = n_end;
    if (n_end) memcpy(m->end, end_ids, (size_t)n_end * sizeof *end_ids);
    m->mask = malloc((size_t)v->n_words * sizeof *m->mask);
    m->dfs = malloc(257 * sizeof *m->dfs);
    if (!m->mask || !m->dfs) { es_gmatcher_free(m); return es_fail(err, ES_ERR_NOMEM, "out of memory"); }
    es_gmatcher_reset(m);
    *out = m;
    return ES_OK;
}

void es_gmatcher_free(es_gmatcher *m) {
    if (!m) return;
    free(m->mask);
    free(m->dfs);
    free(m);
}

void es_gmatcher_reset(es_gmatcher *m) {
    es_gstate_init(m->g, &m->cur);
    m->mask_ok = false;
}

static bool is_end(const es_gmatcher *m, int32_t t) {
    for (int i = 0; i < m->n_end; i++)
        if (m->end[i] == t) return true;
    return false;
}

static inline void state_copy(es_gstate *dst, const es_gstate *src) {
    memcpy(dst, src, offsetof(es_gstate, f) + (size_t)src->depth * sizeof src->f[0]);
}

/* Feeds token t's bytes into s (a copy the caller may discard). */
static bool feed_token(const es_gmatcher *m, es_gstate *s, int32_t t) {
    if (t < 0 || t >= m->v->n_vocab) return false;
    if (is_end(m, t)) {
        if (!es_gstate_can_end(m->g, s)) return false;
        s->ended = 1;
        return true;
    }
    const uint32_t a = m->v->off[t], b = m->v->off[t + 1];
    if (a == b) return false;
    for (uint32_t i = a; i < b; i++)
        if (!es_gstate_feed(m->g, s, m->v->bytes[i])) return false;
    return true;
}

bool es_gmatcher_allows(const es_gmatcher *m, int32_t t) {
    es_gstate s;
    state_copy(&s, &m->cur);
    return feed_token(m, &s, t);
}

bool es_gmatcher_accept(es_gmatcher *m, int32_t t) {
    es_gstate s;
    state_copy(&s, &m->cur);
    if (!feed_token(m, &s, t)) return false;
    state_copy(&m->cur, &s);
    m->mask_ok = false;
    return true;
}

/* Marks the tokens of trie t reachable from state s0 in mask. */
static void trie_walk(const es_gmatcher *m, const gtrie *t, const es_gstate *s0, uint64_t *mask) {
    es_gstate *st = m->dfs;
    state_copy(&st[0], s0);
    for (int i = 0; i < t->n;) {
        const int d = t->depth[i];
        state_copy(&st[d], &st[d - 1]);
        if (!es_gstate_feed(m->g, &st[d], t->byte[i])) { i = t->skip[i]; continue; }
        for (int k = 0; k < t->tok_n[i]; k++) {
            const int32_t id = t->tok[t->tok_off[i] + k];
            mask[id >> 6] |= 1ull << (id & 63);
        }
        i++;
    }
}

const uint64_t *es_gmatcher_mask(es_gmatcher *m) {
    if (m->mask_ok) return m->mask;
    const es_grammar_vocab *v = m->v;
    memset(m->mask, 0, (size_t)v->n_words * sizeof *m->mask);
    const es_gstate *s = &m->cur;
    if (!s->ended) {
        const es_gframe *top = s->depth > 0 ? &s->f[s->depth - 1] : NULL;
        if (top && top->kind == FK_STR && top->st == S_CHAR) {
            /* plain content leaves the state as it is: all of it is allowed, only the rest is walked */
            memcpy(m->mask, v->plain, (size_t)v->n_words * sizeof *m->mask);
            trie_walk(m, &v->special, s, m->mask);
        } else {
            trie_walk(m, &v->full, s, m->mask);
        }
    }
    if (es_gstate_can_end(m->g, s))
        for (int i = 0; i < m->n_end; i++) m->mask[m->end[i] >> 6] |= 1ull << (m->end[i] & 63);
    m->mask_ok = true;
    return m->mask;
}

bool es_gmatcher_ended(const es_gmatcher *m) { return m->cur.ended != 0; }
const es_gstate *es_gmatcher_state(const es_gmatcher *m) { return &m->cur; }

void es_gmatcher_set_state(es_gmatcher *m, const es_gstate *s) {
    state_copy(&m->cur, s);
    m->mask_ok = false;
}

