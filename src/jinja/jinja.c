/* jinja.c — the Jinja2 subset of jinja.h: a lexer (whitespace control as jinja2 with trim_blocks and
 * lstrip_blocks), a recursive-descent parser to a tree of nodes, and a tree-walking evaluator whose
 * values mimic Python's (None, bool, int, float, str, list, dict) so that the output is Python's.
 *
 * Memory: the parsed tree lives in the template's arena, every value built while rendering in a
 * render arena freed at the end. Errors unwind with longjmp: nothing is malloc'd outside the arenas,
 * so a failure deep inside an expression leaks nothing and needs no cleanup path at every call. */
#include "jinja/jinja.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/err.h"

enum { MAX_SRC = 1 << 20, MAX_PARSE_DEPTH = 128, MAX_EVAL_DEPTH = 200 };

/* ---- arena ------------------------------------------------------------------------------------ */

typedef struct ablk {
    struct ablk *next;
    size_t used, cap;
    alignas(max_align_t) unsigned char data[];
} ablk;

typedef struct arena {
    ablk *head;
    size_t total, limit;
} arena;

static void arena_free(arena *a) {
    for (ablk *b = a->head, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    a->head = NULL;
    a->total = 0;
}

/* NULL when the limit is reached or malloc fails (the caller raises the error). */
static void *arena_alloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!n) n = 16;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->total + cap > a->limit) return NULL;
        ablk *b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

/* ---- values ----------------------------------------------------------------------------------- */

typedef struct str {
    const char *p;
    size_t n;
} str;

typedef enum vtype { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_LOOP, V_MACRO, V_FUNC } vtype;
typedef enum fn_id { FN_RANGE, FN_NAMESPACE, FN_DICT, FN_RAISE, FN_STRFTIME } fn_id;

typedef struct list list;
typedef struct dict dict;
typedef struct loopst loopst;
typedef struct node node;
typedef struct scope scope;

typedef struct val {
    vtype t;
    union {
        bool b;
        int64_t i;
        double f;
        str s; /* V_STR; V_UNDEF: the name that was not found (for error messages) */
        list *l;
        dict *d;
        loopst *loop;
        struct { const node *n; scope *sc; } m;
        fn_id fn;
    };
} val;

struct list {
    val *v;
    size_t n, cap;
    bool tuple; /* a (a, b) literal: a list that prints as Python prints a tuple */
};
struct dict {
    str *k;
    val *v;
    size_t n, cap;
    bool ns; /* a namespace(): attributes may be assigned */
};
struct loopst {
    const list *items;
    size_t i;
};

/* ---- nodes ------------------------------------------------------------------------------------ */

typedef enum nkind {
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_NOT, N_NEG, N_POS, N_BIN, N_AND, N_OR,
    N_COND, N_LIST, N_DICT,
    S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_BREAK, S_CONTINUE
} nkind;

typedef enum binop { B_ADD, B_SUB, B_MUL, B_DIV, B_FDIV, B_MOD, B_POW, B_CAT, B_EQ, B_NE, B_LT, B_LE, B_GT, B_GE, B_IN, B_NOTIN } binop;

typedef struct nlist {
    node **v;
    int n;
} nlist;

struct node {
    nkind k;
    int line;
    int op;      /* binop; N_TEST: 1 when negated */
    str s;       /* name, attribute, filter/test name, text */
    val lit;     /* N_LIT */
    node *a, *b, *c;
    nlist args;  /* call / filter / test arguments; list items; dict keys and values interleaved */
    str *kwn;    /* keyword argument names, parallel to kwargs */
    nlist kwargs;
    nlist body, els;
    str *tn;     /* for / set targets; macro parameters */
    int ntn;
    node *cond;  /* for ... if cond */
};

struct es_jinja {
    arena a;
    nlist body;
};

/* ---- lexer ------------------------------------------------------------------------------------ */

typedef enum ttype { T_EOF, T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP } ttype;

typedef struct tok {
    ttype t;
    int line;
    str s; /* text, name, operator; T_STR: the decoded string */
    int64_t i;
    double f;
} tok;

typedef struct pctx {
    arena *a;
    const char *src;
    size_t len;
    tok *toks;
    size_t ntok, cap, pos;
    int depth;
    size_t line_off;  /* line_at's cache: offsets come in increasing order, so counting resumes here */
    int line_no;
    jmp_buf jb;
    es_err *err;
    es_status st;
} pctx;

__attribute__((format(printf, 4, 5), noreturn)) static void perr(pctx *p, es_status st, int line, const char *fmt, ...) {
    char m[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    p->st = es_fail(p->err, st, "chat template line %d: %s", line, m);
    longjmp(p->jb, 1);
}

static void *palloc(pctx *p, size_t n) {
    void *r = arena_alloc(p->a, n);
    if (!r) {
        p->st = es_fail(p->err, ES_ERR_NOMEM, "out of memory parsing the chat template");
        longjmp(p->jb, 1);
    }
    memset(r, 0, n);
    return r;
}

static void push_tok(pctx *p, tok t) {
    if (p->ntok == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 256;
        tok *n = palloc(p, nc * sizeof *n);
        if (p->ntok) memcpy(n, p->toks, p->ntok * sizeof *n);
        p->toks = n;
        p->cap = nc;
    }
    p->toks[p->ntok++] = t;
}

static int line_at(pctx *p, size_t off) {
    if (off < p->line_off) { /* rare (an error message looking back): count from the start */
        p->line_off = 0;
        p->line_no = 1;
    }
    for (; p->line_off < off && p->line_off < p->len; p->line_off++) p->line_no += p->src[p->line_off] == '\n';
    return p->line_no;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static bool is_ident0(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static void put_utf8(char *o, size_t *n, uint32_t c) {
    if (c < 0x80) o[(*n)++] = (char)c;
    else if (c < 0x800) {
        o[(*n)++] = (char)(0xc0 | c >> 6);
        o[(*n)++] = (char)(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
        o[(*n)++] = (char)(0xe0 | c >> 12);
        o[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3f));
        o[(*n)++] = (char)(0x80 | (c & 0x3f));
    } else {
        o[(*n)++] = (char)(0xf0 | c >> 18);
        o[(*n)++] = (char)(0x80 | ((c >> 12) & 0x3f));
        o[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3f));
        o[(*n)++] = (char)(0x80 | (c & 0x3f));
    }
}

static int hexv(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A quoted string at src[*i] (the quote); Python's escapes. Returns the decoded text. */
static str lex_string(pctx *p, size_t *i, size_t end) {
    const char q = p->src[*i];
    const size_t start = *i;
    char *o = palloc(p, end - start + 1);
    size_t n = 0, k = start + 1;
    for (;;) {
        if (k >= end) perr(p, ES_ERR_FORMAT, line_at(p, start), "unterminated string");
        char c = p->src[k++];
        if (c == q) break;
        if (c != '\\') {
            o[n++] = c;
            continue;
        }
        if (k >= end) perr(p, ES_ERR_FORMAT, line_at(p, start), "unterminated string");
        c = p->src[k++];
        int digits = 0;
        switch (c) {
        case 'n': o[n++] = '\n'; break;
        case 't': o[n++] = '\t'; break;
        case 'r': o[n++] = '\r'; break;
        case '0': o[n++] = '\0'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'v': o[n++] = '\v'; break;
        case '\\': case '\'': case '"': o[n++] = c; break;
        case '\n': break; /* a continued line */
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default: o[n++] = '\\'; o[n++] = c; break; /* Python keeps an unknown escape as written */
        }
        if (digits) {
            uint32_t v = 0;
            for (int d = 0; d < digits; d++) {
                const int h = k < end ? hexv(p->src[k]) : -1;
                if (h < 0) perr(p, ES_ERR_FORMAT, line_at(p, start), "a \\%c escape needs %d hex digits", c, digits);
                v = v * 16 + (uint32_t)h;
                k++;
            }
            if (v > 0x10ffff || (v >= 0xd800 && v < 0xe000)) perr(p, ES_ERR_FORMAT, line_at(p, start), "escape \\%c is not a character", c);
            put_utf8(o, &n, v); /* at most 4 bytes for an escape of at least 4 source bytes */
        }
    }
    *i = k;
    return (str){o, n};
}

/* The tokens inside one tag, up to its closer ("}}" or "%}", optionally "-" first); returns the offset
 * just after the closer and whether it had the '-'. */
static size_t lex_tag(pctx *p, size_t i, bool var, bool *strip_after) {
    const char closer = var ? '}' : '%';
    int depth = 0; /* brackets open: "}}" inside a dict literal is not the closer */
    for (;;) {
        while (i < p->len && is_space(p->src[i])) i++;
        if (i >= p->len) perr(p, ES_ERR_FORMAT, line_at(p, i), "a tag is not closed");
        const char c = p->src[i];
        const int line = line_at(p, i);
        if (depth == 0) {
            if (c == '-' && i + 2 < p->len && p->src[i + 1] == closer && p->src[i + 2] == '}') {
                *strip_after = true;
                return i + 3;
            }
            if (c == '+' && i + 2 < p->len && p->src[i + 1] == closer && p->src[i + 2] == '}') {
                *strip_after = false;
                return i + 3;
            }
            if (c == closer && i + 1 < p->len && p->src[i + 1] == '}') {
                *strip_after = false;
                return i + 2;
            }
        }
        tok t = {.line = line};
        if (is_ident0(c)) {
            size_t k = i;
            while (k < p->len && (is_ident0(p->src[k]) || is_digit(p->src[k]))) k++;
            t.t = T_NAME;
            t.s = (str){p->src + i, k - i};
            i = k;
        } else if (is_digit(c)) {
            size_t k = i;
            bool fl = false;
            while (k < p->len && (is_digit(p->src[k]) || p->src[k] == '_')) k++;
            if (k + 1 < p->len && p->src[k] == '.' && is_digit(p->src[k + 1])) {
                fl = true;
                for (k++; k < p->len && is_digit(p->src[k]);) k++;
            }
            if (k < p->len && (p->src[k] == 'e' || p->src[k] == 'E')) {
                size_t e = k + 1;
                if (e < p->len && (p->src[e] == '+' || p->src[e] == '-')) e++;
                if (e < p->len && is_digit(p->src[e])) {
                    fl = true;
                    for (k = e; k < p->len && is_digit(p->src[k]);) k++;
                }
            }
            char buf[64];
            size_t bn = 0;
            for (size_t j = i; j < k && bn < sizeof buf - 1; j++)
                if (p->src[j] != '_') buf[bn++] = p->src[j];
            buf[bn] = 0;
            if (fl) {
                t.t = T_FLOAT;
                t.f = strtod(buf, NULL);
            } else {
                errno = 0;
                char *e;
                const long long v = strtoll(buf, &e, 10);
                if (errno || k - i > 40) perr(p, ES_ERR_FORMAT, line, "integer literal out of range");
                t.t = T_INT;
                t.i = v;
            }
            i = k;
        } else if (c == '"' || c == '\'') {
            t.t = T_STR;
            t.s = lex_string(p, &i, p->len);
        } else {
            static const char *const ops2[] = {"**", "//", "==", "!=", "<=", ">="};
            t.t = T_OP;
            t.s = (str){p->src + i, 1};
            for (size_t k = 0; k < sizeof ops2 / sizeof *ops2; k++)
                if (i + 1 < p->len && p->src[i] == ops2[k][0] && p->src[i + 1] == ops2[k][1]) t.s.n = 2;
            if (t.s.n == 1 && !strchr("+-*/%~<>=()[]{},.:|", c))
                perr(p, ES_ERR_FORMAT, line, "unexpected character '%c' in a tag", c >= 0x20 && c < 0x7f ? c : '?');
            if (c == '(' || c == '[' || c == '{') depth++;
            if ((c == ')' || c == ']' || c == '}') && depth > 0) depth--;
            i += t.s.n;
        }
        push_tok(p, t);
    }
}

/* The template as tokens: text runs (whitespace control applied) and tags with their contents. */
static void lex(pctx *p) {
    size_t i = 0;
    bool strip_next = false; /* the previous tag ended with '-': drop the text's leading whitespace */
    bool trim_nl = false;    /* the previous tag was a block or comment: drop one newline (trim_blocks) */
    while (i <= p->len) {
        /* the next tag opener */
        size_t t = i;
        while (t + 1 < p->len && !(p->src[t] == '{' && (p->src[t + 1] == '{' || p->src[t + 1] == '%' || p->src[t + 1] == '#'))) t++;
        if (t + 1 >= p->len) t = p->len;
        size_t b = i, e = t;
        if (strip_next)
            while (b < e && is_space(p->src[b])) b++;
        else if (trim_nl) {
            if (b < e && p->src[b] == '\n') b++;
            else if (b + 1 < e && p->src[b] == '\r' && p->src[b + 1] == '\n') b += 2;
        }
        if (t < p->len) {
            const char kind = p->src[t + 1];
            const char ctl = t + 2 < p->len ? p->src[t + 2] : 0;
            if (ctl == '-') {
                while (e > b && is_space(p->src[e - 1])) e--;
            } else if (ctl != '+' && kind != '{') { /* lstrip_blocks: a block tag alone at the start of its line */
                size_t k = e;
                while (k > b && (p->src[k - 1] == ' ' || p->src[k - 1] == '\t')) k--;
                if ((k > b && p->src[k - 1] == '\n') || (k == b && (k == 0 || p->src[k - 1] == '\n'))) e = k;
            }
        }
        if (e > b) push_tok(p, (tok){.t = T_TEXT, .line = line_at(p, b), .s = {p->src + b, e - b}});
        if (t >= p->len) break;
        const char kind = p->src[t + 1];
        size_t k = t + 2;
        if (k < p->len && (p->src[k] == '-' || p->src[k] == '+')) k++;
        if (kind == '#') {
            const char *end = NULL;
            for (size_t j = k; j + 1 < p->len; j++)
                if (p->src[j] == '#' && p->src[j + 1] == '}') {
                    end = p->src + j;
                    break;
                }
            if (!end) perr(p, ES_ERR_FORMAT, line_at(p, t), "a comment is not closed");
            strip_next = end > p->src + k && end[-1] == '-';
            trim_nl = true;
            i = (size_t)(end - p->src) + 2;
            continue;
        }
        push_tok(p, (tok){.t = kind == '{' ? T_VBEGIN : T_BBEGIN, .line = line_at(p, t)});
        i = lex_tag(p, k, kind == '{', &strip_next);
        push_tok(p, (tok){.t = kind == '{' ? T_VEND : T_BEND, .line = line_at(p, i - 1)});
        trim_nl = kind == '%';
    }
    push_tok(p, (tok){.t = T_EOF, .line = line_at(p, p->len)});
}

/* ---- parser ----------------------------------------------------------------------------------- */

static tok *peek(pctx *p) { return &p->toks[p->pos]; }
static tok *peek2(pctx *p) { return &p->toks[p->pos + (p->toks[p->pos].t != T_EOF)]; }
static tok *next(pctx *p) {
    tok *t = &p->toks[p->pos];
    if (t->t != T_EOF) p->pos++;
    return t;
}
static bool str_is(str s, const char *c) { return s.n == strlen(c) && !memcmp(s.p, c, s.n); }
static bool is_op(const tok *t, const char *o) { return t->t == T_OP && str_is(t->s, o); }
static bool is_name(const tok *t, const char *n) { return t->t == T_NAME && str_is(t->s, n); }
static bool accept_op(pctx *p, const char *o) {
    if (!is_op(peek(p), o)) return false;
    p->pos++;
    return true;
}
static bool accept_name(pctx *p, const char *n) {
    if (!is_name(peek(p), n)) return false;
    p->pos++;
    return true;
}
static void expect_op(pctx *p, const char *o) {
    if (!accept_op(p, o)) perr(p, ES_ERR_FORMAT, peek(p)->line, "expected '%s'", o);
}
static str expect_ident(pctx *p) {
    tok *t = next(p);
    if (t->t != T_NAME) perr(p, ES_ERR_FORMAT, t->line, "expected a name");
    return t->s;
}

static node *mk(pctx *p, nkind k, int line) {
    node *n = palloc(p, sizeof *n);
    n->k = k;
    n->line = line;
    return n;
}

static void nl_push(pctx *p, nlist *l, node *n) {
    /* grows by powers of two: the capacity is implied by n */
    if ((l->n & (l->n - 1)) == 0) {
        node **v = palloc(p, (size_t)(l->n ? l->n * 2 : 1) * sizeof *v);
        if (l->n) memcpy(v, l->v, (size_t)l->n * sizeof *v);
        l->v = v;
    }
    l->v[l->n++] = n;
}

static node *parse_expr(pctx *p);

static void enter(pctx *p) {
    if (++p->depth > MAX_PARSE_DEPTH) perr(p, ES_ERR_RANGE, peek(p)->line, "nested more than %d deep", MAX_PARSE_DEPTH);
}

/* (args, kw=args) after the '(' */
static void parse_args(pctx *p, node *n) {
    int cap = 0;
    while (!accept_op(p, ")")) {
        if (n->args.n + n->kwargs.n && !accept_op(p, ",")) perr(p, ES_ERR_FORMAT, peek(p)->line, "expected ',' or ')'");
        if (accept_op(p, ")")) break;
        if (peek(p)->t == T_NAME && is_op(peek2(p), "=")) {
            str k = next(p)->s;
            next(p);
            if (n->kwargs.n == cap) {
                cap = cap ? cap * 2 : 4;
                str *nk = palloc(p, (size_t)cap * sizeof *nk);
                if (n->kwargs.n) memcpy(nk, n->kwn, (size_t)n->kwargs.n * sizeof *nk);
                n->kwn = nk;
            }
            n->kwn[n->kwargs.n] = k;
            nl_push(p, &n->kwargs, parse_expr(p));
        } else {
            if (n->kwargs.n) perr(p, ES_ERR_FORMAT, peek(p)->line, "a positional argument after a keyword one");
            nl_push(p, &n->args, parse_expr(p));
        }
    }
}

static node *parse_primary(pctx *p) {
    tok *t = next(p);
    node *n;
    switch (t->t) {
    case T_STR:
        n = mk(p, N_LIT, t->line);
        n->lit = (val){.t = V_STR, .s = t->s};
        while (peek(p)->t == T_STR) { /* adjacent literals join, as in Python */
            str b = next(p)->s;
            char *j = palloc(p, n->lit.s.n + b.n + 1);
            memcpy(j, n->lit.s.p, n->lit.s.n);
            memcpy(j + n->lit.s.n, b.p, b.n);
            n->lit.s = (str){j, n->lit.s.n + b.n};
        }
        return n;
    case T_INT: n = mk(p, N_LIT, t->line); n->lit = (val){.t = V_INT, .i = t->i}; return n;
    case T_FLOAT: n = mk(p, N_LIT, t->line); n->lit = (val){.t = V_FLOAT, .f = t->f}; return n;
    case T_NAME:
        n = mk(p, N_LIT, t->line);
        if (str_is(t->s, "true") || str_is(t->s, "True")) n->lit = (val){.t = V_BOOL, .b = true};
        else if (str_is(t->s, "false") || str_is(t->s, "False")) n->lit = (val){.t = V_BOOL, .b = false};
        else if (str_is(t->s, "none") || str_is(t->s, "None")) n->lit = (val){.t = V_NONE};
        else {
            n->k = N_NAME;
            n->s = t->s;
        }
        return n;
    case T_OP:
        if (str_is(t->s, "(")) {
            n = parse_expr(p);
            if (is_op(peek(p), ",")) { /* a tuple: a list here */
                node *l = mk(p, N_LIST, t->line);
                l->op = 1;
                nl_push(p, &l->args, n);
                while (accept_op(p, ",") && !is_op(peek(p), ")")) nl_push(p, &l->args, parse_expr(p));
                n = l;
            }
            expect_op(p, ")");
            return n;
        }
        if (str_is(t->s, "[")) {
            n = mk(p, N_LIST, t->line);
            while (!accept_op(p, "]")) {
                if (n->args.n) expect_op(p, ",");
                if (accept_op(p, "]")) break;
                nl_push(p, &n->args, parse_expr(p));
            }
            return n;
        }
        if (str_is(t->s, "{")) {
            n = mk(p, N_DICT, t->line);
            while (!accept_op(p, "}")) {
                if (n->args.n) expect_op(p, ",");
                if (accept_op(p, "}")) break;
                nl_push(p, &n->args, parse_expr(p));
                expect_op(p, ":");
                nl_push(p, &n->args, parse_expr(p));
            }
            return n;
        }
        break;
    default: break;
    }
    perr(p, ES_ERR_FORMAT, t->line, "unexpected %s", t->t == T_EOF ? "end of template" : t->t == T_VEND || t->t == T_BEND ? "end of tag" : "token");
}

static node *parse_postfix(pctx *p) {
    node *n = parse_primary(p);
    for (;;) {
        const int line = peek(p)->line;
        if (accept_op(p, ".")) {
            node *a = mk(p, N_ATTR, line);
            a->a = n;
            tok *t = next(p);
            if (t->t == T_NAME) a->s = t->s;
            else if (t->t == T_INT) { /* x.0: an item */
                a->k = N_ITEM;
                a->b = mk(p, N_LIT, line);
                a->b->lit = (val){.t = V_INT, .i = t->i};
            } else perr(p, ES_ERR_FORMAT, line, "expected an attribute name after '.'");
            n = a;
        } else if (accept_op(p, "[")) {
            node *lo = NULL, *hi = NULL, *st = NULL;
            bool slice = false;
            if (!is_op(peek(p), ":")) lo = parse_expr(p);
            if (accept_op(p, ":")) {
                slice = true;
                if (!is_op(peek(p), ":") && !is_op(peek(p), "]")) hi = parse_expr(p);
                if (accept_op(p, ":") && !is_op(peek(p), "]")) st = parse_expr(p);
            }
            expect_op(p, "]");
            node *s = mk(p, slice ? N_SLICE : N_ITEM, line);
            s->a = n;
            s->b = lo;
            if (slice) {
                s->c = hi;
                s->cond = st;
            }
            if (!slice && !lo) perr(p, ES_ERR_FORMAT, line, "empty subscript");
            n = s;
        } else if (accept_op(p, "(")) {
            node *c = mk(p, N_CALL, line);
            c->a = n;
            parse_args(p, c);
            n = c;
        } else return n;
    }
}

/* filters and tests bind to the unary operand: a + b | trim is a + (b | trim) */
static node *parse_filters(pctx *p, node *n) {
    for (;;) {
        const int line = peek(p)->line;
        if (accept_op(p, "|")) {
            node *f = mk(p, N_FILTER, line);
            f->a = n;
            f->s = expect_ident(p);
            if (accept_op(p, "(")) parse_args(p, f);
            n = f;
        } else if (accept_name(p, "is")) {
            node *t = mk(p, N_TEST, line);
            t->a = n;
            t->op = accept_name(p, "not");
            t->s = expect_ident(p);
            if (str_is(t->s, "none") || str_is(t->s, "true") || str_is(t->s, "false")) {
            } else if (accept_op(p, "(")) parse_args(p, t);
            else { /* a test takes one bare argument: x is divisibleby 3, x is sameas y */
                const tok *k = peek(p);
                if (k->t == T_STR || k->t == T_INT || k->t == T_FLOAT || (k->t == T_NAME && !is_name(k, "and") && !is_name(k, "or") &&
                                                                         !is_name(k, "else") && !is_name(k, "if") && !is_name(k, "is") && !is_name(k, "in") && !is_name(k, "not")))
                    nl_push(p, &t->args, parse_postfix(p));
            }
            n = t;
        } else return n;
    }
}

static node *parse_unary(pctx *p) {
    const int line = peek(p)->line;
    enter(p);
    node *n;
    if (accept_op(p, "-")) {
        n = mk(p, N_NEG, line);
        n->a = parse_unary(p);
    } else if (accept_op(p, "+")) {
        n = mk(p, N_POS, line);
        n->a = parse_unary(p);
    } else n = parse_filters(p, parse_postfix(p));
    p->depth--;
    return n;
}

static node *bin(pctx *p, int op, node *a, node *b, int line) {
    node *n = mk(p, N_BIN, line);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static node *parse_pow(pctx *p) {
    node *n = parse_unary(p);
    while (is_op(peek(p), "**")) {
        const int line = next(p)->line;
        n = bin(p, B_POW, n, parse_unary(p), line);
    }
    return n;
}

static node *parse_mul(pctx *p) {
    node *n = parse_pow(p);
    for (;;) {
        const tok *t = peek(p);
        int op = is_op(t, "*") ? B_MUL : is_op(t, "/") ? B_DIV : is_op(t, "//") ? B_FDIV : is_op(t, "%") ? B_MOD : -1;
        if (op < 0) return n;
        next(p);
        n = bin(p, op, n, parse_pow(p), t->line);
    }
}

static node *parse_add(pctx *p) {
    node *n = parse_mul(p);
    for (;;) {
        const tok *t = peek(p);
        int op = is_op(t, "+") ? B_ADD : is_op(t, "-") ? B_SUB : -1;
        if (op < 0) return n;
        next(p);
        n = bin(p, op, n, parse_mul(p), t->line);
    }
}

static node *parse_concat(pctx *p) {
    node *n = parse_add(p);
    while (is_op(peek(p), "~")) {
        const int line = next(p)->line;
        n = bin(p, B_CAT, n, parse_add(p), line);
    }
    return n;
}

static node *parse_compare(pctx *p) {
    node *n = parse_concat(p);
    for (;;) {
        const tok *t = peek(p);
        int op = is_op(t, "==") ? B_EQ : is_op(t, "!=") ? B_NE : is_op(t, "<") ? B_LT : is_op(t, "<=") ? B_LE : is_op(t, ">") ? B_GT
               : is_op(t, ">=") ? B_GE : is_name(t, "in") ? B_IN : -1;
        if (op < 0 && is_name(t, "not") && is_name(peek2(p), "in")) {
            op = B_NOTIN;
            next(p);
        }
        if (op < 0) return n;
        next(p);
        n = bin(p, op, n, parse_concat(p), t->line);
    }
}

static node *parse_not(pctx *p) {
    const int line = peek(p)->line;
    if (accept_name(p, "not")) {
        enter(p);
        node *n = mk(p, N_NOT, line);
        n->a = parse_not(p);
        p->depth--;
        return n;
    }
    return parse_compare(p);
}

static node *parse_and(pctx *p) {
    node *n = parse_not(p);
    while (is_name(peek(p), "and")) {
        node *a = mk(p, N_AND, next(p)->line);
        a->a = n;
        a->b = parse_not(p);
        n = a;
    }
    return n;
}

static node *parse_or(pctx *p) {
    node *n = parse_and(p);
    while (is_name(peek(p), "or")) {
        node *a = mk(p, N_OR, next(p)->line);
        a->a = n;
        a->b = parse_and(p);
        n = a;
    }
    return n;
}

static node *parse_expr(pctx *p) {
    enter(p);
    node *n = parse_or(p);
    if (is_name(peek(p), "if")) { /* a if cond else b; without else: undefined */
        node *c = mk(p, N_COND, next(p)->line);
        c->a = n;
        c->cond = parse_or(p);
        if (accept_name(p, "else")) c->b = parse_expr(p);
        n = c;
    }
    p->depth--;
    return n;
}

static void expect_bend(pctx *p) {
    if (next(p)->t != T_BEND) perr(p, ES_ERR_FORMAT, p->toks[p->pos ? p->pos - 1 : 0].line, "expected the end of the tag");
}

/* Parses statements until a block tag whose keyword is one of stops (NULL-terminated); leaves the
 * position at that keyword. With stops NULL, until the end of the template. */
static nlist parse_body(pctx *p, const char *const *stops);

static int target_list(pctx *p, str **out) {
    str buf[8];
    int n = 0;
    do {
        if (n == 8) perr(p, ES_ERR_FORMAT, peek(p)->line, "more than 8 targets");
        buf[n++] = expect_ident(p);
    } while (accept_op(p, ","));
    *out = palloc(p, (size_t)n * sizeof **out);
    memcpy(*out, buf, (size_t)n * sizeof *buf);
    return n;
}

static void expect_kw(pctx *p, const char *kw) {
    if (!accept_name(p, kw)) perr(p, ES_ERR_FORMAT, peek(p)->line, "expected '%s'", kw);
}

/* {% if %} ... {% elif %} ... {% else %} ... {% endif %}, after the keyword */
static node *parse_if(pctx *p, int line) {
    node *n = mk(p, S_IF, line);
    n->a = parse_expr(p);
    expect_bend(p);
    static const char *const stops[] = {"elif", "else", "endif", NULL};
    n->body = parse_body(p, stops);
    node *cur = n;
    for (;;) {
        tok *k = next(p);
        if (str_is(k->s, "elif")) { /* an elif is an if in the else branch */
            node *e = mk(p, S_IF, k->line);
            e->a = parse_expr(p);
            expect_bend(p);
            e->body = parse_body(p, stops);
            nl_push(p, &cur->els, e);
            cur = e;
        } else if (str_is(k->s, "else")) {
            expect_bend(p);
            static const char *const end[] = {"endif", NULL};
            cur->els = parse_body(p, end);
        } else {
            expect_bend(p);
            break;
        }
    }
    return n;
}

/* {% for targets in expr [if cond] %} ... [{% else %} ...] {% endfor %}, after the keyword */
static node *parse_for(pctx *p, int line) {
    node *n = mk(p, S_FOR, line);
    n->ntn = target_list(p, &n->tn);
    expect_kw(p, "in");
    n->a = parse_or(p); /* not parse_expr: 'if' here filters the loop */
    if (accept_name(p, "if")) n->cond = parse_or(p);
    if (accept_name(p, "recursive")) perr(p, ES_ERR_UNSUPPORTED, line, "recursive loops are not supported");
    expect_bend(p);
    static const char *const stops[] = {"else", "endfor", NULL};
    n->body = parse_body(p, stops);
    if (str_is(next(p)->s, "else")) {
        expect_bend(p);
        static const char *const end[] = {"endfor", NULL};
        n->els = parse_body(p, end);
        next(p);
    }
    expect_bend(p);
    return n;
}

/* {% set targets = expr %}, {% set ns.attr = expr %} or {% set name %} ... {% endset %}, after the keyword */
static node *parse_set(pctx *p, int line) {
    node *n = mk(p, S_SET, line);
    n->ntn = target_list(p, &n->tn);
    if (n->ntn == 1 && accept_op(p, ".")) { /* ns.attr = */
        n->s = n->tn[0];
        n->b = mk(p, N_LIT, line);
        n->b->s = expect_ident(p);
    }
    if (accept_op(p, "=")) {
        n->a = parse_expr(p);
        if (is_op(peek(p), ",")) { /* set a, b = x, y */
            node *l = mk(p, N_LIST, line);
            nl_push(p, &l->args, n->a);
            while (accept_op(p, ",")) nl_push(p, &l->args, parse_expr(p));
            n->a = l;
        }
        expect_bend(p);
    } else {
        if (n->ntn != 1 || n->b) perr(p, ES_ERR_FORMAT, line, "a block set takes one name");
        expect_bend(p);
        n->k = S_SETBLOCK;
        static const char *const stops[] = {"endset", NULL};
        n->body = parse_body(p, stops);
        next(p);
        expect_bend(p);
    }
    return n;
}

/* {% macro name(params [= defaults]) %} ... {% endmacro %}, after the keyword */
static node *parse_macro(pctx *p, int line) {
    node *n = mk(p, S_MACRO, line);
    n->s = expect_ident(p);
    expect_op(p, "(");
    str names[32];
    node *defs[32] = {0};
    int k = 0;
    while (!accept_op(p, ")")) {
        if (k) expect_op(p, ",");
        if (k == 32) perr(p, ES_ERR_FORMAT, line, "more than 32 macro parameters");
        names[k] = expect_ident(p);
        if (accept_op(p, "=")) defs[k] = parse_expr(p);
        k++;
    }
    n->ntn = k;
    n->tn = palloc(p, (size_t)(k ? k : 1) * sizeof *n->tn);
    if (k) memcpy(n->tn, names, (size_t)k * sizeof *names);
    for (int i = 0; i < k; i++) nl_push(p, &n->args, defs[i]); /* NULL: no default */
    expect_bend(p);
    static const char *const stops[] = {"endmacro", NULL};
    n->body = parse_body(p, stops);
    next(p);
    expect_bend(p);
    return n;
}

static node *parse_stmt(pctx *p) {
    tok *t = next(p);
    const int line = t->line;
    if (t->t == T_TEXT) {
        node *n = mk(p, S_TEXT, line);
        n->s = t->s;
        return n;
    }
    if (t->t == T_VBEGIN) {
        node *n = mk(p, S_OUT, line);
        n->a = parse_expr(p);
        if (next(p)->t != T_VEND) perr(p, ES_ERR_FORMAT, line, "expected '}}'");
        return n;
    }
    if (t->t != T_BBEGIN) perr(p, ES_ERR_FORMAT, line, "unexpected token outside a tag");
    tok *kw = next(p);
    if (kw->t != T_NAME) perr(p, ES_ERR_FORMAT, line, "expected a statement keyword");
    enter(p);
    node *n;
    if (str_is(kw->s, "if")) n = parse_if(p, line);
    else if (str_is(kw->s, "for")) n = parse_for(p, line);
    else if (str_is(kw->s, "set")) n = parse_set(p, line);
    else if (str_is(kw->s, "macro")) n = parse_macro(p, line);
    else if (str_is(kw->s, "break") || str_is(kw->s, "continue")) {
        n = mk(p, str_is(kw->s, "break") ? S_BREAK : S_CONTINUE, line);
        expect_bend(p);
    } else {
        perr(p, ES_ERR_UNSUPPORTED, line, "unsupported statement '%.*s'", (int)(kw->s.n < 32 ? kw->s.n : 32), kw->s.p);
    }
    p->depth--;
    return n;
}

static nlist parse_body(pctx *p, const char *const *stops) {
    nlist l = {0};
    for (;;) {
        tok *t = peek(p);
        if (t->t == T_EOF) {
            if (stops) { /* the closer is the last keyword: endif after elif and else */
                int k = 0;
                while (stops[k + 1]) k++;
                perr(p, ES_ERR_FORMAT, t->line, "missing '%s'", stops[k]);
            }
            return l;
        }
        if (t->t == T_BBEGIN && stops && peek2(p)->t == T_NAME)
            for (int i = 0; stops[i]; i++)
                if (str_is(peek2(p)->s, stops[i])) {
                    p->pos++;
                    return l;
                }
        if (t->t == T_BBEGIN && peek2(p)->t == T_NAME) {
            static const char *const closers[] = {"endif", "endfor", "elif", "else", "endset", "endmacro", NULL};
            for (int i = 0; closers[i]; i++)
                if (str_is(peek2(p)->s, closers[i])) perr(p, ES_ERR_FORMAT, t->line, "unexpected '%s'", closers[i]);
        }
        nl_push(p, &l, parse_stmt(p));
    }
}

es_status es_jinja_parse(const char *src, size_t len, es_jinja **out, es_err *err) {
    *out = NULL;
    if (len > MAX_SRC) return es_fail(err, ES_ERR_RANGE, "the chat template is larger than %d bytes", MAX_SRC);
    es_jinja *t = calloc(1, sizeof *t);
    if (!t) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    t->a.limit = (size_t)64 << 20;
    pctx p = {.a = &t->a, .src = src, .len = len, .err = err, .line_no = 1};
    if (setjmp(p.jb)) {
        es_jinja_free(t);
        return p.st;
    }
    lex(&p);
    t->body = parse_body(&p, NULL);
    *out = t;
    return ES_OK;
}

void es_jinja_free(es_jinja *t) {
    if (!t) return;
    arena_free(&t->a);
    free(t);
}

/* ---- evaluator -------------------------------------------------------------------------------- */

struct scope {
    scope *parent;
    str *k;
    val *v;
    size_t n, cap;
};

typedef struct buf {
    char *p;
    size_t n, cap;
} buf;

typedef struct rctx {
    arena a;
    buf *out;
    size_t max_out;
    long steps, max_steps;
    int depth;
    int64_t now;
    int brk; /* 1: break, 2: continue pending */
    jmp_buf jb;
    es_err *err;
    es_status st;
} rctx;

__attribute__((format(printf, 4, 5), noreturn)) static void rerr(rctx *r, es_status st, int line, const char *fmt, ...) {
    char m[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (line > 0) r->st = es_fail(r->err, st, "chat template line %d: %s", line, m);
    else r->st = es_fail(r->err, st, "chat template: %s", m);
    longjmp(r->jb, 1);
}

static void *ralloc(rctx *r, size_t n) {
    void *p = arena_alloc(&r->a, n);
    if (!p) rerr(r, ES_ERR_RANGE, 0, "rendering used more than %zu bytes of memory", r->a.limit);
    return p;
}

static void bput(rctx *r, buf *b, const char *s, size_t n) {
    if (b == r->out && b->n + n > r->max_out) rerr(r, ES_ERR_RANGE, 0, "the output is longer than %zu bytes", r->max_out);
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->n + n) nc *= 2;
        char *np = ralloc(r, nc);
        if (b->n) memcpy(np, b->p, b->n);
        b->p = np;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void bputs(rctx *r, buf *b, const char *s) { bput(r, b, s, strlen(s)); }

static void step(rctx *r, int line) {
    if (++r->steps > r->max_steps) rerr(r, ES_ERR_RANGE, line, "more than %ld steps (loop iterations and statements)", r->max_steps);
}

static val mkstr(const char *p, size_t n) { return (val){.t = V_STR, .s = {p, n}}; }
static val undef(str name) { return (val){.t = V_UNDEF, .s = name}; }
static val vnone(void) { return (val){.t = V_NONE}; }
static val vbool(bool b) { return (val){.t = V_BOOL, .b = b}; }
static val vint(int64_t i) { return (val){.t = V_INT, .i = i}; }

static list *list_new(rctx *r, size_t cap) {
    list *l = ralloc(r, sizeof *l);
    l->n = 0;
    l->tuple = false;
    l->cap = cap ? cap : 4;
    l->v = ralloc(r, l->cap * sizeof *l->v);
    return l;
}
static void list_push(rctx *r, list *l, val v) {
    if (l->n == l->cap) {
        val *nv = ralloc(r, l->cap * 2 * sizeof *nv);
        memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap *= 2;
    }
    l->v[l->n++] = v;
}
static dict *dict_new(rctx *r, size_t cap) {
    dict *d = ralloc(r, sizeof *d);
    d->n = 0;
    d->ns = false;
    d->cap = cap ? cap : 4;
    d->k = ralloc(r, d->cap * sizeof *d->k);
    d->v = ralloc(r, d->cap * sizeof *d->v);
    return d;
}
static val *dict_find(const dict *d, str k) {
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].n == k.n && !memcmp(d->k[i].p, k.p, k.n)) return &d->v[i];
    return NULL;
}
static void dict_set(rctx *r, dict *d, str k, val v) {
    val *e = dict_find(d, k);
    if (e) {
        *e = v;
        return;
    }
    if (d->n == d->cap) {
        str *nk = ralloc(r, d->cap * 2 * sizeof *nk);
        val *nv = ralloc(r, d->cap * 2 * sizeof *nv);
        memcpy(nk, d->k, d->n * sizeof *nk);
        memcpy(nv, d->v, d->n * sizeof *nv);
        d->k = nk;
        d->v = nv;
        d->cap *= 2;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

static val from_json(rctx *r, const cJSON *j, int depth) {
    if (depth > MAX_EVAL_DEPTH) rerr(r, ES_ERR_RANGE, 0, "the variables are nested more than %d deep", MAX_EVAL_DEPTH);
    if (cJSON_IsString(j)) return mkstr(j->valuestring, strlen(j->valuestring));
    if (cJSON_IsBool(j)) return vbool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        const double d = j->valuedouble;
        /* JSON does not tell 1 from 1.0 after cJSON; integral values are ints, as json.loads reads "1" */
        if (d == floor(d) && fabs(d) < 9007199254740992.0) return vint((int64_t)d);
        return (val){.t = V_FLOAT, .f = d};
    }
    if (cJSON_IsArray(j)) {
        list *l = list_new(r, (size_t)cJSON_GetArraySize(j));
        for (const cJSON *c = j->child; c; c = c->next) list_push(r, l, from_json(r, c, depth + 1));
        return (val){.t = V_LIST, .l = l};
    }
    if (cJSON_IsObject(j)) {
        dict *d = dict_new(r, (size_t)cJSON_GetArraySize(j));
        for (const cJSON *c = j->child; c; c = c->next)
            if (c->string) dict_set(r, d, (str){c->string, strlen(c->string)}, from_json(r, c, depth + 1));
        return (val){.t = V_DICT, .d = d};
    }
    return vnone();
}

static const char *type_name(const val *v) {
    static const char *const n[] = {"undefined", "NoneType", "bool", "int", "float", "str", "list", "dict", "LoopContext", "Macro", "function"};
    return n[v->t];
}

static bool truthy(const val *v) {
    switch (v->t) {
    case V_UNDEF: case V_NONE: return false;
    case V_BOOL: return v->b;
    case V_INT: return v->i != 0;
    case V_FLOAT: return v->f != 0;
    case V_STR: return v->s.n > 0;
    case V_LIST: return v->l->n > 0;
    case V_DICT: return v->d->n > 0 || v->d->ns;
    default: return true;
    }
}

/* Python's repr of a float (shortest round-trip digits, ".0" on integral values). */
static void fmt_float(double f, char *o, size_t cap) {
    if (isnan(f)) {
        snprintf(o, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(o, cap, f > 0 ? "inf" : "-inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(o, cap, "%.*g", prec, f);
        if (strtod(o, NULL) == f) break;
    }
    if (!strpbrk(o, ".en")) strncat(o, ".0", cap - strlen(o) - 1);
}

static void to_str(rctx *r, buf *b, const val *v, bool repr, int depth);

static void repr_str(rctx *r, buf *b, str s) {
    const bool dq = memchr(s.p, '\'', s.n) && !memchr(s.p, '"', s.n);
    const char q = dq ? '"' : '\'';
    bput(r, b, &q, 1);
    for (size_t i = 0; i < s.n; i++) {
        const unsigned char c = (unsigned char)s.p[i];
        char e[8];
        if (c == '\\' || c == (unsigned char)q) {
            e[0] = '\\';
            e[1] = (char)c;
            bput(r, b, e, 2);
        } else if (c == '\n') bputs(r, b, "\\n");
        else if (c == '\r') bputs(r, b, "\\r");
        else if (c == '\t') bputs(r, b, "\\t");
        else if (c < 0x20 || c == 0x7f) {
            snprintf(e, sizeof e, "\\x%02x", c);
            bputs(r, b, e);
        } else bput(r, b, (const char *)&s.p[i], 1);
    }
    bput(r, b, &q, 1);
}

/* str(v) as Python prints it (repr: inside a list or dict) */
static void to_str(rctx *r, buf *b, const val *v, bool repr, int depth) {
    char t[64];
    if (depth > MAX_EVAL_DEPTH) rerr(r, ES_ERR_RANGE, 0, "a value nested more than %d deep", MAX_EVAL_DEPTH);
    switch (v->t) {
    case V_UNDEF: break;
    case V_NONE: bputs(r, b, "None"); break;
    case V_BOOL: bputs(r, b, v->b ? "True" : "False"); break;
    case V_INT: snprintf(t, sizeof t, "%lld", (long long)v->i); bputs(r, b, t); break;
    case V_FLOAT: fmt_float(v->f, t, sizeof t); bputs(r, b, t); break;
    case V_STR:
        if (repr) repr_str(r, b, v->s);
        else bput(r, b, v->s.p, v->s.n);
        break;
    case V_LIST:
        bputs(r, b, v->l->tuple ? "(" : "[");
        for (size_t i = 0; i < v->l->n; i++) {
            if (i) bputs(r, b, ", ");
            to_str(r, b, &v->l->v[i], true, depth + 1);
        }
        bputs(r, b, v->l->tuple ? (v->l->n == 1 ? ",)" : ")") : "]");
        break;
    case V_DICT:
        if (v->d->ns) {
            bputs(r, b, "<Namespace>");
            break;
        }
        bputs(r, b, "{");
        for (size_t i = 0; i < v->d->n; i++) {
            if (i) bputs(r, b, ", ");
            repr_str(r, b, v->d->k[i]);
            bputs(r, b, ": ");
            to_str(r, b, &v->d->v[i], true, depth + 1);
        }
        bputs(r, b, "}");
        break;
    default: bputs(r, b, "<object>"); break;
    }
}

static str as_str(rctx *r, const val *v) {
    if (v->t == V_STR) return v->s;
    buf b = {0};
    to_str(r, &b, v, false, 0);
    return (str){b.p ? b.p : "", b.n};
}

static void json_str(rctx *r, buf *b, str s) {
    bputs(r, b, "\"");
    for (size_t i = 0; i < s.n; i++) {
        const unsigned char c = (unsigned char)s.p[i];
        char e[8];
        switch (c) {
        case '"': bputs(r, b, "\\\""); break;
        case '\\': bputs(r, b, "\\\\"); break;
        case '\n': bputs(r, b, "\\n"); break;
        case '\r': bputs(r, b, "\\r"); break;
        case '\t': bputs(r, b, "\\t"); break;
        case '\b': bputs(r, b, "\\b"); break;
        case '\f': bputs(r, b, "\\f"); break;
        default:
            if (c < 0x20) {
                snprintf(e, sizeof e, "\\u%04x", c);
                bputs(r, b, e);
            } else bput(r, b, (const char *)&s.p[i], 1);
        }
    }
    bputs(r, b, "\"");
}

static void json_nl(rctx *r, buf *b, int indent, int level) {
    bputs(r, b, "\n");
    for (int i = 0; i < indent * level; i++) bputs(r, b, " ");
}

/* json.dumps(v, ensure_ascii=False, indent=indent (<0: none)) */
static void to_json(rctx *r, buf *b, const val *v, int indent, int level, int line) {
    char t[64];
    if (level > MAX_EVAL_DEPTH) rerr(r, ES_ERR_RANGE, line, "a value nested more than %d deep", MAX_EVAL_DEPTH);
    switch (v->t) {
    case V_NONE: bputs(r, b, "null"); break;
    case V_BOOL: bputs(r, b, v->b ? "true" : "false"); break;
    case V_INT: snprintf(t, sizeof t, "%lld", (long long)v->i); bputs(r, b, t); break;
    case V_FLOAT:
        if (isnan(v->f)) bputs(r, b, "NaN");
        else if (isinf(v->f)) bputs(r, b, v->f > 0 ? "Infinity" : "-Infinity");
        else {
            fmt_float(v->f, t, sizeof t);
            bputs(r, b, t);
        }
        break;
    case V_STR: json_str(r, b, v->s); break;
    case V_LIST:
        bputs(r, b, "[");
        for (size_t i = 0; i < v->l->n; i++) {
            if (i) bputs(r, b, indent >= 0 ? "," : ", ");
            if (indent >= 0) json_nl(r, b, indent, level + 1);
            to_json(r, b, &v->l->v[i], indent, level + 1, line);
        }
        if (indent >= 0 && v->l->n) json_nl(r, b, indent, level);
        bputs(r, b, "]");
        break;
    case V_DICT:
        bputs(r, b, "{");
        for (size_t i = 0; i < v->d->n; i++) {
            if (i) bputs(r, b, indent >= 0 ? "," : ", ");
            if (indent >= 0) json_nl(r, b, indent, level + 1);
            json_str(r, b, v->d->k[i]);
            bputs(r, b, ": ");
            to_json(r, b, &v->d->v[i], indent, level + 1, line);
        }
        if (indent >= 0 && v->d->n) json_nl(r, b, indent, level);
        bputs(r, b, "}");
        break;
    default: rerr(r, ES_ERR_INVALID_ARG, line, "a %s value is not JSON serializable", type_name(v));
    }
}

static bool is_num(const val *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static double num(const val *v) { return v->t == V_FLOAT ? v->f : v->t == V_INT ? (double)v->i : v->b; }
static int64_t inum(const val *v) { return v->t == V_INT ? v->i : v->b; }

static bool equal(const val *a, const val *b, int depth) {
    if (depth > MAX_EVAL_DEPTH) return false;
    if (is_num(a) && is_num(b)) {
        if (a->t != V_FLOAT && b->t != V_FLOAT) return inum(a) == inum(b);
        return num(a) == num(b);
    }
    if (a->t != b->t) return false;
    switch (a->t) {
    case V_UNDEF: case V_NONE: return true;
    case V_STR: return a->s.n == b->s.n && !memcmp(a->s.p, b->s.p, a->s.n);
    case V_LIST:
        if (a->l->n != b->l->n) return false;
        for (size_t i = 0; i < a->l->n; i++)
            if (!equal(&a->l->v[i], &b->l->v[i], depth + 1)) return false;
        return true;
    case V_DICT:
        if (a->d->n != b->d->n) return false;
        for (size_t i = 0; i < a->d->n; i++) {
            const val *o = dict_find(b->d, a->d->k[i]);
            if (!o || !equal(&a->d->v[i], o, depth + 1)) return false;
        }
        return true;
    default: return a == b;
    }
}

static int compare(rctx *r, const val *a, const val *b, int line) {
    if (is_num(a) && is_num(b)) {
        if (a->t != V_FLOAT && b->t != V_FLOAT) return inum(a) < inum(b) ? -1 : inum(a) > inum(b);
        return num(a) < num(b) ? -1 : num(a) > num(b);
    }
    if (a->t == V_STR && b->t == V_STR) {
        const size_t m = a->s.n < b->s.n ? a->s.n : b->s.n;
        const int c = m ? memcmp(a->s.p, b->s.p, m) : 0;
        return c ? (c < 0 ? -1 : 1) : a->s.n < b->s.n ? -1 : a->s.n > b->s.n;
    }
    rerr(r, ES_ERR_INVALID_ARG, line, "cannot compare %s with %s", type_name(a), type_name(b));
}

static bool contains(rctx *r, const val *hay, const val *x, int line) {
    switch (hay->t) {
    case V_STR:
        if (x->t != V_STR) rerr(r, ES_ERR_INVALID_ARG, line, "'in <string>' needs a string on the left, not %s", type_name(x));
        return !x->s.n || (hay->s.n && memmem(hay->s.p, hay->s.n, x->s.p, x->s.n) != NULL);
    case V_LIST:
        for (size_t i = 0; i < hay->l->n; i++)
            if (equal(&hay->l->v[i], x, 0)) return true;
        return false;
    case V_DICT: return x->t == V_STR && dict_find(hay->d, x->s);
    case V_UNDEF: return false;
    default: rerr(r, ES_ERR_INVALID_ARG, line, "argument of type '%s' is not iterable", type_name(hay));
    }
}

/* ---- scopes ---- */

static val *scope_find(scope *s, str k) {
    for (; s; s = s->parent)
        for (size_t i = s->n; i-- > 0;)
            if (s->k[i].n == k.n && !memcmp(s->k[i].p, k.p, k.n)) return &s->v[i];
    return NULL;
}
static void scope_set(rctx *r, scope *s, str k, val v) {
    for (size_t i = 0; i < s->n; i++)
        if (s->k[i].n == k.n && !memcmp(s->k[i].p, k.p, k.n)) {
            s->v[i] = v;
            return;
        }
    if (s->n == s->cap) {
        const size_t nc = s->cap ? s->cap * 2 : 8;
        str *nk = ralloc(r, nc * sizeof *nk);
        val *nv = ralloc(r, nc * sizeof *nv);
        if (s->n) {
            memcpy(nk, s->k, s->n * sizeof *nk);
            memcpy(nv, s->v, s->n * sizeof *nv);
        }
        s->k = nk;
        s->v = nv;
        s->cap = nc;
    }
    s->k[s->n] = k;
    s->v[s->n++] = v;
}
static scope *scope_new(rctx *r, scope *parent) {
    scope *s = ralloc(r, sizeof *s);
    memset(s, 0, sizeof *s);
    s->parent = parent;
    return s;
}

static val eval(rctx *r, scope *sc, const node *n);
static void exec_body(rctx *r, scope *sc, const nlist *body);

/* The items a for loop or a filter walks: a list as it is; a dict's keys; a string's characters. */
static list *iter_list(rctx *r, const val *v, int line) {
    switch (v->t) {
    case V_LIST: return v->l;
    case V_UNDEF: return list_new(r, 1);
    case V_DICT: {
        list *l = list_new(r, v->d->n);
        for (size_t i = 0; i < v->d->n; i++) list_push(r, l, mkstr(v->d->k[i].p, v->d->k[i].n));
        return l;
    }
    case V_STR: {
        list *l = list_new(r, v->s.n);
        for (size_t i = 0; i < v->s.n;) {
            const unsigned char c = (unsigned char)v->s.p[i];
            size_t k = c < 0x80 ? 1 : c >> 5 == 6 ? 2 : c >> 4 == 14 ? 3 : c >> 3 == 30 ? 4 : 1;
            if (i + k > v->s.n) k = v->s.n - i;
            list_push(r, l, mkstr(v->s.p + i, k));
            i += k;
        }
        return l;
    }
    default: rerr(r, ES_ERR_INVALID_ARG, line, "'%s' object is not iterable", type_name(v));
    }
}

static val getattr_v(rctx *r, const val *o, str name, int line) {
    if (o->t == V_UNDEF) rerr(r, ES_ERR_INVALID_ARG, line, "'%.*s' is undefined", (int)(o->s.n < 64 ? o->s.n : 64), o->s.p);
    if (o->t == V_DICT) {
        const val *v = dict_find(o->d, name);
        return v ? *v : undef(name);
    }
    if (o->t == V_LOOP) {
        const loopst *L = o->loop;
        const int64_t n = (int64_t)L->items->n, i = (int64_t)L->i;
        if (str_is(name, "index")) return vint(i + 1);
        if (str_is(name, "index0")) return vint(i);
        if (str_is(name, "revindex")) return vint(n - i);
        if (str_is(name, "revindex0")) return vint(n - i - 1);
        if (str_is(name, "first")) return vbool(i == 0);
        if (str_is(name, "last")) return vbool(i == n - 1);
        if (str_is(name, "length")) return vint(n);
        if (str_is(name, "previtem")) return i > 0 ? L->items->v[i - 1] : undef(name);
        if (str_is(name, "nextitem")) return i + 1 < n ? L->items->v[i + 1] : undef(name);
    }
    return undef(name);
}

static val getitem_v(rctx *r, const val *o, const val *k, int line) {
    if (o->t == V_UNDEF) rerr(r, ES_ERR_INVALID_ARG, line, "'%.*s' is undefined", (int)(o->s.n < 64 ? o->s.n : 64), o->s.p);
    if (k->t == V_STR) return getattr_v(r, o, k->s, line);
    if ((o->t == V_LIST || o->t == V_STR) && (k->t == V_INT || k->t == V_BOOL)) {
        const int64_t n = o->t == V_LIST ? (int64_t)o->l->n : (int64_t)o->s.n;
        int64_t i = inum(k);
        if (i < 0) i += n;
        if (i < 0 || i >= n) return undef((str){"[index]", 7});
        return o->t == V_LIST ? o->l->v[i] : mkstr(o->s.p + i, 1);
    }
    return undef((str){"[item]", 6});
}

static int64_t slice_bound(rctx *r, const val *v, int64_t n, int64_t dflt, int64_t stepv, int line) {
    if (!v || v->t == V_NONE) return dflt;
    if (v->t != V_INT) rerr(r, ES_ERR_INVALID_ARG, line, "slice indices must be integers");
    int64_t i = v->i;
    if (i < 0) {
        i += n;
        if (i < 0) i = stepv < 0 ? -1 : 0;
    } else if (i >= n) i = stepv < 0 ? n - 1 : n;
    return i;
}

static val do_slice(rctx *r, const val *o, const val *lo, const val *hi, const val *st, int line) {
    if (o->t != V_LIST && o->t != V_STR) rerr(r, ES_ERR_INVALID_ARG, line, "'%s' object cannot be sliced", type_name(o));
    int64_t stepv = 1;
    if (st && st->t != V_NONE) {
        if (st->t != V_INT || st->i == 0) rerr(r, ES_ERR_INVALID_ARG, line, "the slice step must be a non-zero integer");
        stepv = st->i;
    }
    const int64_t n = o->t == V_LIST ? (int64_t)o->l->n : (int64_t)o->s.n;
    const int64_t a = slice_bound(r, lo, n, stepv < 0 ? n - 1 : 0, stepv, line);
    const int64_t b = slice_bound(r, hi, n, stepv < 0 ? -1 : n, stepv, line);
    if (o->t == V_LIST) {
        list *l = list_new(r, 4);
        for (int64_t i = a; stepv > 0 ? i < b : i > b; i += stepv) list_push(r, l, o->l->v[i]);
        return (val){.t = V_LIST, .l = l};
    }
    buf out = {0};
    for (int64_t i = a; stepv > 0 ? i < b : i > b; i += stepv) bput(r, &out, o->s.p + i, 1);
    return mkstr(out.p ? out.p : "", out.n);
}

/* ---- arguments ---- */

typedef struct args {
    val pos[8];
    int npos;
    str kn[8];
    val kv[8];
    int nkw;
} args;

static void eval_args(rctx *r, scope *sc, const node *n, args *a) {
    if (n->args.n > 8 || n->kwargs.n > 8) rerr(r, ES_ERR_INVALID_ARG, n->line, "more than 8 arguments");
    a->npos = n->args.n;
    a->nkw = n->kwargs.n;
    for (int i = 0; i < n->args.n; i++) a->pos[i] = eval(r, sc, n->args.v[i]);
    for (int i = 0; i < n->kwargs.n; i++) {
        a->kn[i] = n->kwn[i];
        a->kv[i] = eval(r, sc, n->kwargs.v[i]);
    }
}

/* The i-th positional argument or the keyword one named kw; NULL when absent. */
static const val *arg(const args *a, int i, const char *kw) {
    if (i >= 0 && i < a->npos) return &a->pos[i];
    for (int k = 0; kw && k < a->nkw; k++)
        if (str_is(a->kn[k], kw)) return &a->kv[k];
    return NULL;
}

static str need_str(rctx *r, const val *v, const char *what, int line) {
    if (!v || v->t != V_STR) rerr(r, ES_ERR_INVALID_ARG, line, "%s must be a string", what);
    return v->s;
}

static bool is_ws(char c) { return is_space(c); }

static val strip_v(rctx *r, str s, const val *chars, bool left, bool right, int line) {
    str set = chars && chars->t != V_NONE ? need_str(r, chars, "the characters to strip", line) : (str){NULL, 0};
    size_t b = 0, e = s.n;
#define STRIPPABLE(c) (set.p ? memchr(set.p, (c), set.n) != NULL : is_ws(c))
    if (left)
        while (b < e && STRIPPABLE(s.p[b])) b++;
    if (right)
        while (e > b && STRIPPABLE(s.p[e - 1])) e--;
#undef STRIPPABLE
    return mkstr(s.p + b, e - b);
}

static val replace_v(rctx *r, str s, str from, str to, int64_t count) {
    buf b = {0};
    size_t i = 0;
    int64_t done = 0;
    if (!from.n) { /* Python inserts `to` between every character */
        for (; i <= s.n; i++) {
            if (count < 0 || done < count) {
                bput(r, &b, to.p, to.n);
                done++;
            }
            if (i < s.n) bput(r, &b, s.p + i, 1);
        }
        return mkstr(b.p ? b.p : "", b.n);
    }
    while (i < s.n) {
        const char *m = count < 0 || done < count ? memmem(s.p + i, s.n - i, from.p, from.n) : NULL;
        const size_t at = m ? (size_t)(m - s.p) : s.n;
        bput(r, &b, s.p + i, at - i);
        if (!m) break;
        bput(r, &b, to.p, to.n);
        i = at + from.n;
        done++;
    }
    return mkstr(b.p ? b.p : "", b.n);
}

static val case_v(rctx *r, str s, int mode) { /* 0 lower, 1 upper, 2 title, 3 capitalize (ASCII letters) */
    char *o = ralloc(r, s.n + 1);
    bool word_start = true;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool up = mode == 1 || (mode == 2 && word_start) || (mode == 3 && i == 0);
        if (alpha) c = up ? (char)(c >= 'a' && c <= 'z' ? c - 32 : c) : (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        o[i] = c;
        word_start = !alpha && !is_digit(c) && !((unsigned char)c >= 0x80);
    }
    return mkstr(o, s.n);
}

static bool prefix_match(str s, str x, bool end) {
    if (x.n > s.n) return false;
    return !memcmp(end ? s.p + s.n - x.n : s.p, x.p, x.n);
}

static val split_v(rctx *r, str s, const val *sepv, const val *maxv, int line) {
    list *l = list_new(r, 4);
    int64_t max = maxv && maxv->t == V_INT ? maxv->i : -1;
    if (!sepv || sepv->t == V_NONE) { /* runs of whitespace, no empty strings */
        size_t i = 0;
        while (i < s.n) {
            while (i < s.n && is_ws(s.p[i])) i++;
            if (i >= s.n) break;
            if (max >= 0 && (int64_t)l->n == max) {
                size_t e = s.n;
                while (e > i && is_ws(s.p[e - 1])) e--;
                list_push(r, l, mkstr(s.p + i, e - i));
                break;
            }
            size_t b = i;
            while (i < s.n && !is_ws(s.p[i])) i++;
            list_push(r, l, mkstr(s.p + b, i - b));
        }
        return (val){.t = V_LIST, .l = l};
    }
    str sep = need_str(r, sepv, "the separator", line);
    if (!sep.n) rerr(r, ES_ERR_INVALID_ARG, line, "empty separator");
    size_t b = 0;
    while (max < 0 || (int64_t)l->n < max) {
        const char *m = b < s.n ? memmem(s.p + b, s.n - b, sep.p, sep.n) : NULL;
        if (!m) break;
        list_push(r, l, mkstr(s.p + b, (size_t)(m - (s.p + b))));
        b = (size_t)(m - s.p) + sep.n;
    }
    list_push(r, l, mkstr(s.p + b, s.n - b));
    return (val){.t = V_LIST, .l = l};
}

/* obj.name(args) for the methods of str and dict; found = false when there is no such method. Nothing
 * mutates a value (no list.append): transformers renders in jinja2's ImmutableSandboxedEnvironment,
 * where a template that mutates fails, so a template that works there never needs it. */
static val call_method(rctx *r, const val *o, str name, const args *a, int line, bool *found) {
    *found = true;
    if (o->t == V_STR) {
        const str s = o->s;
        if (str_is(name, "strip")) return strip_v(r, s, arg(a, 0, NULL), true, true, line);
        if (str_is(name, "lstrip")) return strip_v(r, s, arg(a, 0, NULL), true, false, line);
        if (str_is(name, "rstrip")) return strip_v(r, s, arg(a, 0, NULL), false, true, line);
        if (str_is(name, "lower")) return case_v(r, s, 0);
        if (str_is(name, "upper")) return case_v(r, s, 1);
        if (str_is(name, "title")) return case_v(r, s, 2);
        if (str_is(name, "capitalize")) return case_v(r, s, 3);
        if (str_is(name, "split")) return split_v(r, s, arg(a, 0, "sep"), arg(a, 1, "maxsplit"), line);
        if (str_is(name, "startswith") || str_is(name, "endswith")) {
            const bool end = name.p[0] == 'e';
            const val *x = arg(a, 0, NULL);
            if (x && x->t == V_LIST) {
                for (size_t i = 0; i < x->l->n; i++)
                    if (prefix_match(s, need_str(r, &x->l->v[i], "the prefix", line), end)) return vbool(true);
                return vbool(false);
            }
            return vbool(prefix_match(s, need_str(r, x, "the prefix", line), end));
        }
        if (str_is(name, "replace")) {
            const val *c = arg(a, 2, "count");
            return replace_v(r, s, need_str(r, arg(a, 0, NULL), "replace's first argument", line),
                             need_str(r, arg(a, 1, NULL), "replace's second argument", line), c && c->t == V_INT ? c->i : -1);
        }
    } else if (o->t == V_DICT) {
        const dict *d = o->d;
        if (str_is(name, "items") || str_is(name, "keys") || str_is(name, "values")) {
            list *l = list_new(r, d->n);
            for (size_t i = 0; i < d->n; i++) {
                const val k = mkstr(d->k[i].p, d->k[i].n);
                if (name.p[0] == 'k') list_push(r, l, k);
                else if (name.p[0] == 'v') list_push(r, l, d->v[i]);
                else {
                    list *pair = list_new(r, 2);
                    list_push(r, pair, k);
                    list_push(r, pair, d->v[i]);
                    list_push(r, l, (val){.t = V_LIST, .l = pair});
                }
            }
            return (val){.t = V_LIST, .l = l};
        }
        if (str_is(name, "get")) {
            const val *k = arg(a, 0, NULL), *dv = arg(a, 1, "default");
            const val *v = k && k->t == V_STR ? dict_find(d, k->s) : NULL;
            return v ? *v : dv ? *dv : vnone();
        }
    }
    *found = false;
    return vnone();
}

static bool apply_test(rctx *r, str name, const val *v, const args *a, int line);
static val apply_filter(rctx *r, str name, const val *v, const args *a, int line);

static val call_macro(rctx *r, const val *m, const args *a, int line) {
    const node *mn = m->m.n;
    if (a->npos > mn->ntn) rerr(r, ES_ERR_INVALID_ARG, line, "macro '%.*s' takes %d arguments", (int)mn->s.n, mn->s.p, mn->ntn);
    scope *sc = scope_new(r, m->m.sc);
    for (int i = 0; i < mn->ntn; i++) {
        const val *v = arg(a, i, NULL);
        for (int k = 0; !v && k < a->nkw; k++)
            if (a->kn[k].n == mn->tn[i].n && !memcmp(a->kn[k].p, mn->tn[i].p, a->kn[k].n)) v = &a->kv[k];
        val x = v ? *v : mn->args.v[i] ? eval(r, m->m.sc, mn->args.v[i]) : undef(mn->tn[i]);
        scope_set(r, sc, mn->tn[i], x);
    }
    buf *saved = r->out;
    buf b = {0};
    r->out = &b;
    exec_body(r, sc, &mn->body);
    r->out = saved;
    return mkstr(b.p ? b.p : "", b.n);
}

static val call_fn(rctx *r, fn_id f, const args *a, int line) {
    switch (f) {
    case FN_RANGE: {
        int64_t lo = 0, hi, st = 1;
        for (int i = 0; i < a->npos; i++)
            if (a->pos[i].t != V_INT) rerr(r, ES_ERR_INVALID_ARG, line, "range() takes integers");
        if (a->npos == 1) hi = a->pos[0].i;
        else if (a->npos == 2 || a->npos == 3) {
            lo = a->pos[0].i;
            hi = a->pos[1].i;
            if (a->npos == 3) st = a->pos[2].i;
        } else rerr(r, ES_ERR_INVALID_ARG, line, "range() takes 1 to 3 arguments");
        if (st == 0) rerr(r, ES_ERR_INVALID_ARG, line, "range() step must not be zero");
        list *l = list_new(r, 4);
        for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
            step(r, line);
            list_push(r, l, vint(i));
        }
        return (val){.t = V_LIST, .l = l};
    }
    case FN_NAMESPACE: case FN_DICT: {
        dict *d = dict_new(r, 4);
        d->ns = f == FN_NAMESPACE;
        for (int i = 0; i < a->npos; i++)
            if (a->pos[i].t == V_DICT)
                for (size_t k = 0; k < a->pos[i].d->n; k++) dict_set(r, d, a->pos[i].d->k[k], a->pos[i].d->v[k]);
        for (int i = 0; i < a->nkw; i++) dict_set(r, d, a->kn[i], a->kv[i]);
        return (val){.t = V_DICT, .d = d};
    }
    case FN_RAISE: {
        const str m = a->npos ? as_str(r, &a->pos[0]) : (str){"", 0};
        r->st = es_fail(r->err, ES_ERR_INVALID_ARG, "%.*s", (int)(m.n < 400 ? m.n : 400), m.p);
        longjmp(r->jb, 1);
    }
    case FN_STRFTIME: {
        const str fmt = need_str(r, arg(a, 0, NULL), "strftime_now's format", line);
        if (fmt.n > 64) rerr(r, ES_ERR_INVALID_ARG, line, "strftime_now's format is longer than 64 bytes");
        char f[72], o[256];
        memcpy(f, fmt.p, fmt.n);
        f[fmt.n] = 0;
        const time_t t = (time_t)r->now;
        struct tm tm;
        gmtime_r(&t, &tm);
        const size_t n = strftime(o, sizeof o, f, &tm);
        char *c = ralloc(r, n + 1);
        memcpy(c, o, n);
        return mkstr(c, n);
    }
    }
    return vnone();
}

static val eval_call(rctx *r, scope *sc, const node *n) {
    args a;
    if (n->a->k == N_ATTR) { /* a method call: obj.name(args) */
        const val o = eval(r, sc, n->a->a);
        eval_args(r, sc, n, &a);
        bool found;
        const val v = call_method(r, &o, n->a->s, &a, n->line, &found);
        if (found) return v;
        const val f = getattr_v(r, &o, n->a->s, n->line);
        if (f.t == V_MACRO) return call_macro(r, &f, &a, n->line);
        rerr(r, ES_ERR_INVALID_ARG, n->line, "'%s' object has no method '%.*s'", type_name(&o), (int)(n->a->s.n < 64 ? n->a->s.n : 64), n->a->s.p);
    }
    const val f = eval(r, sc, n->a);
    eval_args(r, sc, n, &a);
    if (f.t == V_MACRO) return call_macro(r, &f, &a, n->line);
    if (f.t == V_FUNC) return call_fn(r, f.fn, &a, n->line);
    if (f.t == V_UNDEF) rerr(r, ES_ERR_INVALID_ARG, n->line, "'%.*s' is undefined", (int)(f.s.n < 64 ? f.s.n : 64), f.s.p);
    rerr(r, ES_ERR_INVALID_ARG, n->line, "a %s is not callable", type_name(&f));
}

static val arith(rctx *r, int op, const val *a, const val *b, int line) {
    if (op == B_ADD && a->t == V_STR && b->t == V_STR) {
        char *o = ralloc(r, a->s.n + b->s.n + 1);
        memcpy(o, a->s.p, a->s.n);
        memcpy(o + a->s.n, b->s.p, b->s.n);
        return mkstr(o, a->s.n + b->s.n);
    }
    if (op == B_ADD && a->t == V_LIST && b->t == V_LIST) {
        list *l = list_new(r, a->l->n + b->l->n);
        for (size_t i = 0; i < a->l->n; i++) list_push(r, l, a->l->v[i]);
        for (size_t i = 0; i < b->l->n; i++) list_push(r, l, b->l->v[i]);
        return (val){.t = V_LIST, .l = l};
    }
    if (op == B_MUL && ((a->t == V_STR && b->t == V_INT) || (a->t == V_INT && b->t == V_STR))) {
        const val *s = a->t == V_STR ? a : b;
        const int64_t k = a->t == V_INT ? a->i : b->i;
        if (k > 0 && s->s.n && (uint64_t)k > r->a.limit / s->s.n) rerr(r, ES_ERR_RANGE, line, "a repeated string longer than the memory limit");
        buf o = {0};
        for (int64_t i = 0; s->s.n && i < k; i++) bput(r, &o, s->s.p, s->s.n);
        return mkstr(o.p ? o.p : "", o.n);
    }
    if (!is_num(a) || !is_num(b)) {
        static const char *const sym[] = {"+", "-", "*", "/", "//", "%", "**"};
        rerr(r, ES_ERR_INVALID_ARG, line, "unsupported operand types for %s: '%s' and '%s'", sym[op], type_name(a), type_name(b));
    }
    if (a->t != V_FLOAT && b->t != V_FLOAT && op != B_DIV) {
        const int64_t x = inum(a), y = inum(b);
        int64_t z;
        switch (op) {
        case B_ADD: if (__builtin_add_overflow(x, y, &z)) break; return vint(z);
        case B_SUB: if (__builtin_sub_overflow(x, y, &z)) break; return vint(z);
        case B_MUL: if (__builtin_mul_overflow(x, y, &z)) break; return vint(z);
        case B_FDIV: case B_MOD: {
            if (y == 0) rerr(r, ES_ERR_INVALID_ARG, line, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) break;
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            return vint(op == B_FDIV ? q : m);
        }
        case B_POW:
            if (y >= 0) { /* by squaring: log2(y) steps, however large y is */
                int64_t acc = 1, base = x, e = y;
                bool ok = true;
                while (e && ok) {
                    if (e & 1) ok = !__builtin_mul_overflow(acc, base, &acc);
                    e >>= 1;
                    if (e && ok) ok = !__builtin_mul_overflow(base, base, &base);
                }
                if (ok) return vint(acc);
            }
            break;
        }
        if (op != B_POW || inum(b) >= 0) rerr(r, ES_ERR_INVALID_ARG, line, "integer overflow");
    }
    const double x = num(a), y = num(b);
    switch (op) {
    case B_ADD: return (val){.t = V_FLOAT, .f = x + y};
    case B_SUB: return (val){.t = V_FLOAT, .f = x - y};
    case B_MUL: return (val){.t = V_FLOAT, .f = x * y};
    case B_POW: return (val){.t = V_FLOAT, .f = pow(x, y)};
    default:
        if (y == 0) rerr(r, ES_ERR_INVALID_ARG, line, "division by zero");
        if (op == B_DIV) return (val){.t = V_FLOAT, .f = x / y};
        if (op == B_FDIV) return (val){.t = V_FLOAT, .f = floor(x / y)};
        {
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            return (val){.t = V_FLOAT, .f = m};
        }
    }
}

static val eval_slice(rctx *r, scope *sc, const node *n) {
    const val o = eval(r, sc, n->a);
    val lo = n->b ? eval(r, sc, n->b) : vnone(), hi = n->c ? eval(r, sc, n->c) : vnone(), st = n->cond ? eval(r, sc, n->cond) : vnone();
    if (o.t == V_UNDEF) rerr(r, ES_ERR_INVALID_ARG, n->line, "'%.*s' is undefined", (int)(o.s.n < 64 ? o.s.n : 64), o.s.p);
    return do_slice(r, &o, &lo, &hi, &st, n->line);
}

static val eval_filter(rctx *r, scope *sc, const node *n) {
    const val o = eval(r, sc, n->a);
    args a;
    eval_args(r, sc, n, &a);
    return apply_filter(r, n->s, &o, &a, n->line);
}

static val eval_test(rctx *r, scope *sc, const node *n) {
    const val o = eval(r, sc, n->a);
    args a;
    eval_args(r, sc, n, &a);
    return vbool(apply_test(r, n->s, &o, &a, n->line) != (n->op != 0));
}

static val eval_sign(rctx *r, scope *sc, const node *n) {
    const val o = eval(r, sc, n->a);
    if (!is_num(&o)) rerr(r, ES_ERR_INVALID_ARG, n->line, "bad operand type for unary %c: '%s'", n->k == N_NEG ? '-' : '+', type_name(&o));
    if (n->k == N_POS) return o.t == V_BOOL ? vint(o.b) : o;
    if (o.t == V_FLOAT) return (val){.t = V_FLOAT, .f = -o.f};
    if (inum(&o) == INT64_MIN) rerr(r, ES_ERR_INVALID_ARG, n->line, "integer overflow");
    return vint(-inum(&o));
}

static val eval_list(rctx *r, scope *sc, const node *n) {
    list *l = list_new(r, (size_t)n->args.n);
    for (int i = 0; i < n->args.n; i++) list_push(r, l, eval(r, sc, n->args.v[i]));
    l->tuple = n->op == 1;
    return (val){.t = V_LIST, .l = l};
}

static val eval_dict(rctx *r, scope *sc, const node *n) {
    dict *d = dict_new(r, (size_t)n->args.n / 2 + 1);
    for (int i = 0; i + 1 < n->args.n; i += 2) {
        const val k = eval(r, sc, n->args.v[i]);
        if (k.t != V_STR) rerr(r, ES_ERR_INVALID_ARG, n->line, "dict keys must be strings here");
        dict_set(r, d, k.s, eval(r, sc, n->args.v[i + 1]));
    }
    return (val){.t = V_DICT, .d = d};
}

/* Comparisons, membership and ~ of two evaluated operands; arithmetic is arith's. */
static val binop_v(rctx *r, int op, const val *a, const val *b, int line) {
    switch (op) {
    case B_EQ: return vbool(equal(a, b, 0));
    case B_NE: return vbool(!equal(a, b, 0));
    case B_LT: return vbool(compare(r, a, b, line) < 0);
    case B_LE: return vbool(compare(r, a, b, line) <= 0);
    case B_GT: return vbool(compare(r, a, b, line) > 0);
    case B_GE: return vbool(compare(r, a, b, line) >= 0);
    case B_IN: return vbool(contains(r, b, a, line));
    case B_NOTIN: return vbool(!contains(r, b, a, line));
    case B_CAT: {
        buf o = {0};
        to_str(r, &o, a, false, 0);
        to_str(r, &o, b, false, 0);
        return mkstr(o.p ? o.p : "", o.n);
    }
    default:
        if (a->t == V_UNDEF || b->t == V_UNDEF) {
            const val *u = a->t == V_UNDEF ? a : b;
            rerr(r, ES_ERR_INVALID_ARG, line, "'%.*s' is undefined", (int)(u->s.n < 64 ? u->s.n : 64), u->s.p);
        }
        return arith(r, op, a, b, line);
    }
}

static val eval(rctx *r, scope *sc, const node *n) {
    if (++r->depth > MAX_EVAL_DEPTH) rerr(r, ES_ERR_RANGE, n->line, "expressions or macro calls nested more than %d deep", MAX_EVAL_DEPTH);
    val v;
    switch (n->k) {
    case N_LIT: v = n->lit; break;
    case N_NAME: {
        const val *x = scope_find(sc, n->s);
        v = x ? *x : undef(n->s);
        break;
    }
    case N_ATTR: {
        const val o = eval(r, sc, n->a);
        v = getattr_v(r, &o, n->s, n->line);
        break;
    }
    case N_ITEM: {
        const val o = eval(r, sc, n->a), k = eval(r, sc, n->b);
        v = getitem_v(r, &o, &k, n->line);
        break;
    }
    case N_SLICE: v = eval_slice(r, sc, n); break;
    case N_CALL: v = eval_call(r, sc, n); break;
    case N_FILTER: v = eval_filter(r, sc, n); break;
    case N_TEST: v = eval_test(r, sc, n); break;
    case N_NOT: {
        const val o = eval(r, sc, n->a);
        v = vbool(!truthy(&o));
        break;
    }
    case N_NEG: case N_POS: v = eval_sign(r, sc, n); break;
    case N_AND: case N_OR: { /* Python's: the deciding operand itself */
        v = eval(r, sc, n->a);
        if (truthy(&v) == (n->k == N_AND)) v = eval(r, sc, n->b);
        break;
    }
    case N_COND: {
        const val c = eval(r, sc, n->cond);
        v = truthy(&c) ? eval(r, sc, n->a) : n->b ? eval(r, sc, n->b) : undef((str){"else", 4});
        break;
    }
    case N_LIST: v = eval_list(r, sc, n); break;
    case N_DICT: v = eval_dict(r, sc, n); break;
    case N_BIN: {
        const val a = eval(r, sc, n->a), b = eval(r, sc, n->b);
        v = binop_v(r, n->op, &a, &b, n->line);
        break;
    }
    default: rerr(r, ES_ERR_INTERNAL, n->line, "a statement where an expression was expected");
    }
    r->depth--;
    return v;
}

/* ---- tests and filters ---- */

static bool apply_test(rctx *r, str name, const val *v, const args *a, int line) {
    const val *x = arg(a, 0, NULL);
    if (str_is(name, "defined")) return v->t != V_UNDEF;
    if (str_is(name, "undefined")) return v->t == V_UNDEF;
    if (str_is(name, "none")) return v->t == V_NONE;
    if (str_is(name, "string")) return v->t == V_STR;
    if (str_is(name, "number")) return is_num(v);
    if (str_is(name, "integer")) return v->t == V_INT;
    if (str_is(name, "float")) return v->t == V_FLOAT;
    if (str_is(name, "boolean")) return v->t == V_BOOL;
    if (str_is(name, "true")) return v->t == V_BOOL && v->b;
    if (str_is(name, "false")) return v->t == V_BOOL && !v->b;
    if (str_is(name, "mapping")) return v->t == V_DICT && !v->d->ns;
    if (str_is(name, "iterable")) return v->t == V_LIST || v->t == V_DICT || v->t == V_STR || v->t == V_UNDEF;
    if (str_is(name, "sequence")) return v->t == V_LIST || v->t == V_DICT || v->t == V_STR;
    if (str_is(name, "callable")) return v->t == V_MACRO || v->t == V_FUNC;
    if (str_is(name, "odd") || str_is(name, "even")) {
        if (v->t != V_INT) rerr(r, ES_ERR_INVALID_ARG, line, "odd/even need an integer");
        return (v->i % 2 != 0) == (name.p[0] == 'o');
    }
    if (str_is(name, "divisibleby")) {
        if (v->t != V_INT || !x || x->t != V_INT || x->i == 0) rerr(r, ES_ERR_INVALID_ARG, line, "divisibleby needs integers (non-zero divisor)");
        return v->i % x->i == 0;
    }
    if (str_is(name, "equalto") || str_is(name, "eq") || str_is(name, "==") || str_is(name, "sameas")) {
        if (!x) rerr(r, ES_ERR_INVALID_ARG, line, "%.*s needs an argument", (int)name.n, name.p);
        return equal(v, x, 0);
    }
    if (str_is(name, "ne") || str_is(name, "!=")) return x && !equal(v, x, 0);
    if (str_is(name, "in")) {
        if (!x) rerr(r, ES_ERR_INVALID_ARG, line, "'in' needs an argument");
        return contains(r, x, v, line);
    }
    if (str_is(name, "lower") && v->t == V_STR) {
        for (size_t i = 0; i < v->s.n; i++)
            if (v->s.p[i] >= 'A' && v->s.p[i] <= 'Z') return false;
        return true;
    }
    if (str_is(name, "upper") && v->t == V_STR) {
        for (size_t i = 0; i < v->s.n; i++)
            if (v->s.p[i] >= 'a' && v->s.p[i] <= 'z') return false;
        return true;
    }
    rerr(r, ES_ERR_INVALID_ARG, line, "unknown test '%.*s'", (int)(name.n < 64 ? name.n : 64), name.p);
}

/* the test name and its argument that selectattr/rejectattr apply, from args[from..] */
static bool select_one(rctx *r, const val *item, const args *a, int from, bool by_attr, int line) {
    val x = *item;
    if (by_attr) {
        const val *an = arg(a, 0, NULL);
        const str attr = need_str(r, an, "the attribute name", line);
        x = item->t == V_DICT ? getattr_v(r, item, attr, line) : undef(attr);
    }
    const val *tn = arg(a, from, NULL);
    if (!tn) return truthy(&x);
    args ta = {.npos = a->npos - from - 1};
    for (int i = 0; i < ta.npos; i++) ta.pos[i] = a->pos[from + 1 + i];
    return apply_test(r, need_str(r, tn, "the test name", line), &x, &ta, line);
}

static val length_v(rctx *r, const val *v, int line) {
    switch (v->t) {
    case V_STR: { /* characters, not bytes */
        int64_t n = 0;
        for (size_t i = 0; i < v->s.n; i++) n += ((unsigned char)v->s.p[i] & 0xc0) != 0x80;
        return vint(n);
    }
    case V_LIST: return vint((int64_t)v->l->n);
    case V_DICT: return vint((int64_t)v->d->n);
    case V_UNDEF: return vint(0);
    default: rerr(r, ES_ERR_INVALID_ARG, line, "object of type '%s' has no len()", type_name(v));
    }
}

static val int_v(const val *v, const val *dflt) {
    if (v->t == V_INT) return *v;
    if (v->t == V_BOOL) return vint(v->b);
    if (v->t == V_FLOAT && isfinite(v->f) && fabs(v->f) < 9.2e18) return vint((int64_t)v->f);
    if (v->t == V_STR) {
        char t[48];
        const size_t k = v->s.n < sizeof t - 1 ? v->s.n : sizeof t - 1;
        memcpy(t, v->s.p, k);
        t[k] = 0;
        char *e;
        const long long x = strtoll(t, &e, 10);
        if (e != t && !*e) return vint(x);
    }
    return dflt && dflt->t == V_INT ? *dflt : vint(0);
}

static val join_v(rctx *r, const val *v, const args *a, int line) {
    const list *l = iter_list(r, v, line);
    const val *a0 = arg(a, 0, NULL);
    const str sep = a0 ? need_str(r, a0, "join's separator", line) : (str){"", 0};
    const val *attr = arg(a, 1, "attribute");
    buf b = {0};
    for (size_t i = 0; i < l->n; i++) {
        if (i) bput(r, &b, sep.p, sep.n);
        val x = attr ? getattr_v(r, &l->v[i], need_str(r, attr, "the attribute", line), line) : l->v[i];
        to_str(r, &b, &x, false, 0);
    }
    return mkstr(b.p ? b.p : "", b.n);
}

/* select, reject, selectattr, rejectattr */
static val select_v(rctx *r, str name, const val *v, const args *a, int line) {
    const bool by_attr = name.n == 10, keep = name.p[0] == 's';
    const list *l = iter_list(r, v, line);
    list *o = list_new(r, l->n);
    for (size_t i = 0; i < l->n; i++) {
        step(r, line);
        if (select_one(r, &l->v[i], a, by_attr ? 1 : 0, by_attr, line) == keep) list_push(r, o, l->v[i]);
    }
    return (val){.t = V_LIST, .l = o};
}

static val map_v(rctx *r, const val *v, const args *a, int line) {
    const list *l = iter_list(r, v, line);
    list *o = list_new(r, l->n);
    const val *attr = arg(a, -1, "attribute"), *dflt = arg(a, -1, "default");
    for (size_t i = 0; i < l->n; i++) {
        step(r, line);
        if (attr) {
            val x = l->v[i].t == V_DICT ? getattr_v(r, &l->v[i], need_str(r, attr, "the attribute", line), line) : undef(attr->s);
            list_push(r, o, x.t == V_UNDEF && dflt ? *dflt : x);
        } else {
            args fa = {.npos = a->npos > 0 ? a->npos - 1 : 0};
            for (int k = 0; k < fa.npos; k++) fa.pos[k] = a->pos[k + 1];
            list_push(r, o, apply_filter(r, need_str(r, arg(a, 0, NULL), "map's filter name", line), &l->v[i], &fa, line));
        }
    }
    return (val){.t = V_LIST, .l = o};
}

static val unique_v(rctx *r, const val *v, int line) {
    const list *l = iter_list(r, v, line);
    list *o = list_new(r, l->n);
    for (size_t i = 0; i < l->n; i++) {
        r->steps += (long)o->n; /* the comparisons with the kept items */
        step(r, line);
        if (!contains(r, &(val){.t = V_LIST, .l = o}, &l->v[i], line)) list_push(r, o, l->v[i]);
    }
    return (val){.t = V_LIST, .l = o};
}

static val sort_v(rctx *r, const val *v, const args *a, int line) {
    const list *l = iter_list(r, v, line);
    list *o = list_new(r, l->n);
    const val *rev = arg(a, 0, "reverse");
    for (size_t i = 0; i < l->n; i++) { /* insertion sort: stable, and chat templates sort a handful */
        step(r, line);
        size_t k = o->n;
        list_push(r, o, l->v[i]);
        while (k > 0) {
            step(r, line); /* a comparison: sorting is quadratic here */
            const int c = compare(r, &o->v[k - 1], &l->v[i], line);
            if (rev && truthy(rev) ? c >= 0 : c <= 0) break;
            o->v[k] = o->v[k - 1];
            k--;
        }
        o->v[k] = l->v[i];
    }
    return (val){.t = V_LIST, .l = o};
}

static val indent_v(rctx *r, const val *v, const args *a) {
    const val *w = arg(a, 0, "width"), *first = arg(a, 1, "first"), *blank = arg(a, 2, "blank");
    const int64_t width = w && w->t == V_INT ? (w->i < 0 ? 0 : w->i > 64 ? 64 : w->i) : 4;
    const str s = as_str(r, v);
    buf b = {0};
    bool line_start = true;
    for (size_t i = 0; i < s.n; i++) {
        if (line_start && (i > 0 || (first && truthy(first))) && (s.p[i] != '\n' || (blank && truthy(blank))))
            for (int64_t k = 0; k < width; k++) bputs(r, &b, " ");
        bput(r, &b, s.p + i, 1);
        line_start = s.p[i] == '\n';
    }
    return mkstr(b.p ? b.p : "", b.n);
}

/* The filters that make text: case, whitespace, escaping, JSON, replace, indent. *found: name is one. */
static val text_filter(rctx *r, str name, const val *v, const args *a, int line, bool *found) {
    const val *a0 = arg(a, 0, NULL);
    *found = true;
    if (str_is(name, "trim") || str_is(name, "strip")) return strip_v(r, as_str(r, v), a0, true, true, line);
    if (str_is(name, "upper")) return case_v(r, as_str(r, v), 1);
    if (str_is(name, "lower")) return case_v(r, as_str(r, v), 0);
    if (str_is(name, "title")) return case_v(r, as_str(r, v), 2);
    if (str_is(name, "capitalize")) return case_v(r, case_v(r, as_str(r, v), 0).s, 3);
    if (str_is(name, "string")) return mkstr(as_str(r, v).p, as_str(r, v).n);
    if (str_is(name, "safe") || str_is(name, "e") || str_is(name, "escape")) return *v;
    if (str_is(name, "tojson")) {
        const val *ind = arg(a, 0, "indent");
        buf b = {0};
        to_json(r, &b, v, ind && ind->t == V_INT ? (int)(ind->i > 16 ? 16 : ind->i < 0 ? 0 : ind->i) : -1, 0, line);
        return mkstr(b.p ? b.p : "", b.n);
    }
    if (str_is(name, "replace")) {
        const val *c = arg(a, 2, "count");
        return replace_v(r, as_str(r, v), need_str(r, a0, "replace's first argument", line),
                         need_str(r, arg(a, 1, NULL), "replace's second argument", line), c && c->t == V_INT ? c->i : -1);
    }
    if (str_is(name, "indent")) return indent_v(r, v, a);
    *found = false;
    return vnone();
}

/* The filters of one value: its length, a default, numbers. *found: name is one. */
static val value_filter(rctx *r, str name, const val *v, const args *a, int line, bool *found) {
    const val *a0 = arg(a, 0, NULL);
    *found = true;
    if (str_is(name, "length") || str_is(name, "count")) return length_v(r, v, line);
    if (str_is(name, "default") || str_is(name, "d")) {
        const val *bo = arg(a, 1, "boolean");
        const bool use = v->t == V_UNDEF || (bo && truthy(bo) && !truthy(v));
        return use ? (a0 ? *a0 : mkstr("", 0)) : *v;
    }
    if (str_is(name, "int")) return int_v(v, a0);
    if (str_is(name, "float")) {
        if (is_num(v)) return (val){.t = V_FLOAT, .f = num(v)};
        return (val){.t = V_FLOAT, .f = 0};
    }
    if (str_is(name, "abs")) {
        if (v->t == V_INT && v->i != INT64_MIN) return vint(v->i < 0 ? -v->i : v->i);
        if (v->t == V_FLOAT) return (val){.t = V_FLOAT, .f = fabs(v->f)};
        rerr(r, ES_ERR_INVALID_ARG, line, "abs needs a number");
    }
    *found = false;
    return vnone();
}

/* The filters over a sequence's items (iter_list's). *found: name is one. */
static val sequence_filter(rctx *r, str name, const val *v, const args *a, int line, bool *found) {
    *found = true;
    if (str_is(name, "first") || str_is(name, "last")) {
        const list *l = iter_list(r, v, line);
        if (!l->n) return undef(name);
        return name.p[0] == 'f' ? l->v[0] : l->v[l->n - 1];
    }
    if (str_is(name, "list")) {
        const list *l = iter_list(r, v, line);
        list *c = list_new(r, l->n);
        for (size_t i = 0; i < l->n; i++) list_push(r, c, l->v[i]);
        return (val){.t = V_LIST, .l = c};
    }
    if (str_is(name, "reverse")) {
        if (v->t == V_STR) return do_slice(r, v, &(val){.t = V_NONE}, &(val){.t = V_NONE}, &(val){.t = V_INT, .i = -1}, line);
        const list *l = iter_list(r, v, line);
        list *c = list_new(r, l->n);
        for (size_t i = l->n; i-- > 0;) list_push(r, c, l->v[i]);
        return (val){.t = V_LIST, .l = c};
    }
    if (str_is(name, "items")) {
        if (v->t == V_UNDEF) return (val){.t = V_LIST, .l = list_new(r, 1)};
        if (v->t != V_DICT) rerr(r, ES_ERR_INVALID_ARG, line, "items needs a mapping");
        bool f;
        return call_method(r, v, name, a, line, &f);
    }
    if (str_is(name, "join")) return join_v(r, v, a, line);
    if (str_is(name, "selectattr") || str_is(name, "rejectattr") || str_is(name, "select") || str_is(name, "reject"))
        return select_v(r, name, v, a, line);
    if (str_is(name, "map")) return map_v(r, v, a, line);
    if (str_is(name, "unique")) return unique_v(r, v, line);
    if (str_is(name, "sort")) return sort_v(r, v, a, line);
    *found = false;
    return vnone();
}

static val apply_filter(rctx *r, str name, const val *v, const args *a, int line) {
    bool found;
    val o = text_filter(r, name, v, a, line, &found);
    if (!found) o = value_filter(r, name, v, a, line, &found);
    if (!found) o = sequence_filter(r, name, v, a, line, &found);
    if (!found) rerr(r, ES_ERR_INVALID_ARG, line, "unknown filter '%.*s'", (int)(name.n < 64 ? name.n : 64), name.p);
    return o;
}

/* ---- statements ---- */

static void assign(rctx *r, scope *sc, const str *names, int n, const val *v, int line) {
    if (n == 1) {
        scope_set(r, sc, names[0], *v);
        return;
    }
    const list *l = v->t == V_LIST ? v->l : NULL;
    if (!l || (int)l->n != n) rerr(r, ES_ERR_INVALID_ARG, line, "cannot unpack a %s into %d names", type_name(v), n);
    for (int i = 0; i < n; i++) scope_set(r, sc, names[i], l->v[i]);
}

static void exec_for(rctx *r, scope *sc, const node *n) {
    const val it = eval(r, sc, n->a);
    const list *src = iter_list(r, &it, n->line);
    scope *ls = scope_new(r, sc); /* the loop's own scope: a set inside does not leak out */
    const list *items = src;
    if (n->cond) { /* for x in y if cond: loop.* counts the kept items only */
        list *kept = list_new(r, src->n);
        for (size_t i = 0; i < src->n; i++) {
            step(r, n->line);
            assign(r, ls, n->tn, n->ntn, &src->v[i], n->line);
            const val c = eval(r, ls, n->cond);
            if (truthy(&c)) list_push(r, kept, src->v[i]);
        }
        items = kept;
    }
    loopst *L = ralloc(r, sizeof *L);
    L->items = items;
    const str loop_name = {"loop", 4};
    for (size_t i = 0; i < items->n; i++) {
        step(r, n->line);
        L->i = i;
        assign(r, ls, n->tn, n->ntn, &items->v[i], n->line);
        scope_set(r, ls, loop_name, (val){.t = V_LOOP, .loop = L});
        exec_body(r, ls, &n->body);
        if (r->brk == 1) {
            r->brk = 0;
            break;
        }
        r->brk = 0;
    }
    if (!items->n && n->els.n) exec_body(r, sc, &n->els);
}

static void exec_stmt(rctx *r, scope *sc, const node *n) {
    step(r, n->line);
    switch (n->k) {
    case S_TEXT: bput(r, r->out, n->s.p, n->s.n); break;
    case S_OUT: {
        const val v = eval(r, sc, n->a);
        to_str(r, r->out, &v, false, 0);
        break;
    }
    case S_IF: {
        const val c = eval(r, sc, n->a);
        exec_body(r, sc, truthy(&c) ? &n->body : &n->els);
        break;
    }
    case S_FOR: exec_for(r, sc, n); break;
    case S_SET: {
        const val v = eval(r, sc, n->a);
        if (n->b) { /* ns.attr = v */
            const val *ns = scope_find(sc, n->s);
            if (!ns || ns->t != V_DICT || !ns->d->ns)
                rerr(r, ES_ERR_INVALID_ARG, n->line, "'%.*s' is not a namespace: cannot set an attribute on it", (int)(n->s.n < 64 ? n->s.n : 64), n->s.p);
            dict_set(r, ns->d, n->b->s, v);
        } else assign(r, sc, n->tn, n->ntn, &v, n->line);
        break;
    }
    case S_SETBLOCK: {
        buf *saved = r->out;
        buf b = {0};
        r->out = &b;
        exec_body(r, sc, &n->body);
        r->out = saved;
        scope_set(r, sc, n->tn[0], mkstr(b.p ? b.p : "", b.n));
        break;
    }
    case S_MACRO: scope_set(r, sc, n->s, (val){.t = V_MACRO, .m = {n, sc}}); break;
    case S_BREAK: r->brk = 1; break;
    case S_CONTINUE: r->brk = 2; break;
    default: rerr(r, ES_ERR_INTERNAL, n->line, "an expression where a statement was expected");
    }
}

static void exec_body(rctx *r, scope *sc, const nlist *body) {
    if (++r->depth > MAX_EVAL_DEPTH) rerr(r, ES_ERR_RANGE, 0, "statements or macro calls nested more than %d deep", MAX_EVAL_DEPTH);
    for (int i = 0; i < body->n && !r->brk; i++) exec_stmt(r, sc, body->v[i]);
    r->depth--;
}

/* The render proper, below es_jinja_render's setjmp: its locals (compound literals included) live in
 * this frame, so nothing the longjmp lands on was changed after the setjmp. */
__attribute__((noinline)) static es_status render_run(rctx *r, const es_jinja *t, const es_jinja_params *p, es_str *out, es_err *err) {
    scope *g = scope_new(r, NULL);
    static const struct { const char *name; fn_id f; } fns[] = {
        {"range", FN_RANGE}, {"namespace", FN_NAMESPACE}, {"dict", FN_DICT}, {"raise_exception", FN_RAISE}, {"strftime_now", FN_STRFTIME}};
    for (size_t i = 0; i < sizeof fns / sizeof *fns; i++)
        scope_set(r, g, (str){fns[i].name, strlen(fns[i].name)}, (val){.t = V_FUNC, .fn = fns[i].f});
    if (p->vars)
        for (const cJSON *c = p->vars->child; c; c = c->next)
            if (c->string) scope_set(r, g, (str){c->string, strlen(c->string)}, from_json(r, c, 0));
    scope *top = scope_new(r, g); /* the template's own sets shadow the variables without changing them */
    buf b = {0};
    r->out = &b;
    exec_body(r, top, &t->body);
    if (b.n && !es_str_append(out, b.p, b.n)) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    return ES_OK;
}

es_status es_jinja_render(const es_jinja *t, const es_jinja_params *p, es_str *out, es_err *err) {
    if (!t || !p || !out) return es_fail(err, ES_ERR_INVALID_ARG, "es_jinja_render: NULL argument");
    rctx *r = calloc(1, sizeof *r); /* on the heap: jmp_buf and the context are large */
    if (!r) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    r->a.limit = p->max_memory ? p->max_memory : (size_t)64 << 20;
    r->max_out = p->max_output ? p->max_output : (size_t)1 << 20;
    r->max_steps = p->max_steps > 0 ? p->max_steps : 1000000;
    r->now = p->now;
    r->err = err;
    es_status st;
    if (setjmp(r->jb)) st = r->st;
    else st = render_run(r, t, p, out, err);
    arena_free(&r->a);
    free(r);
    return st;
}
