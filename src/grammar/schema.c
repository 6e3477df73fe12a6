/* schema.c — compiles a JSON Schema into the grammar's node table.
 *
 * The subset (anything else is refused with a message naming the keyword and where it is, never
 * ignored, so a client is not handed output its schema does not describe):
 *   type            "object" | "array" | "string" | "number" | "integer" | "boolean" | "null", or a list
 *                   of them (alternatives)
 *   object          properties, required, additionalProperties (false, true or a schema). With
 *                   properties, output has only the declared keys, in declaration order (valid under any
 *                   additionalProperties); without, additionalProperties gives the members' schema.
 *   array           items (a schema), minItems, maxItems, uniqueItems false
 *   enum, const     any JSON values (matched as their compact JSON text)
 *   anyOf, oneOf    alternatives that start differently (object / array / string / number / true /
 *                   false / null): the first byte picks one, so oneOf's exclusivity holds too
 *   allOf           of one schema
 *   $ref            "#", "#/$defs/NAME", "#/definitions/NAME" ($defs / definitions at the root);
 *                   recursion allowed (nesting is capped at ES_GRAMMAR_MAX_DEPTH values)
 *   annotations     title, description, default, examples, $schema, $id, $comment, deprecated,
 *                   readOnly, writeOnly (no effect on output)
 *   {} and true     any JSON value
 * Refused: string length / pattern / format, numeric bounds, patternProperties, prefixItems and the
 * other keywords. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar_impl.h"
#include "util/err.h"

#define MAX_SCHEMA_DEPTH 64
#define MAX_DEFS 256

typedef struct cctx {
    es_grammar *g;
    const cJSON *defs[MAX_DEFS];
    const char *def_names[MAX_DEFS];
    int def_node[MAX_DEFS];
    int n_defs;
    es_err *err;
} cctx;

static es_status bad(cctx *c, const char *path, const char *what) {
    return es_fail(c->err, ES_ERR_INVALID_ARG, "schema at %s: %s", path[0] ? path : "#", what);
}

static es_status nomem(cctx *c) { return es_fail(c->err, ES_ERR_NOMEM, "out of memory"); }


static void sub_path(char *out, size_t cap, const char *path, const char *a, const char *b) {
    snprintf(out, cap, "%s/%s%s%s", path[0] ? path : "#", a, b ? "/" : "", b ? b : "");
}

static es_status compile(cctx *c, const cJSON *s, const char *path, int depth, int *out);

/* Appends JSON value j's compact text as a literal of node n. */
static es_status add_literal(cctx *c, int n, const cJSON *j) {
    char *txt = cJSON_PrintUnformatted(j);
    if (!txt) return nomem(c);
    es_grammar *g = c->g;
    const size_t len = strlen(txt);
    const int off = es_grammar_add_bytes(g, txt, len);
    free(txt);
    if (off < 0 || !grow((void **)&g->lits, &g->cap_lits, g->n_lits + 1, sizeof *g->lits)) return nomem(c);
    g->lits[g->n_lits++] = (glit){off, (int32_t)len};
    g->nodes[n].n_lit++;
    return ES_OK;
}

static bool number_value(const cJSON *j, double lo, double hi, uint32_t *out) {
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= lo && j->valuedouble <= hi) || j->valuedouble != (double)(uint32_t)j->valuedouble)
        return false;
    *out = (uint32_t)j->valuedouble;
    return true;
}

static const char *const k_annotations[] = {"title", "description", "default", "examples", "$schema", "$id", "$comment",
                                            "deprecated", "readOnly", "writeOnly", "$defs", "definitions", NULL};
static const char *const k_handled[] = {"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "required",
                                        "additionalProperties", "items", "minItems", "maxItems", "uniqueItems", NULL};

static bool in_list(const char *k, const char *const *l) {
    for (int i = 0; l[i]; i++)
        if (!strcmp(k, l[i])) return true;
    return false;
}

/* An object schema (properties / required / additionalProperties) into a new node. */
static es_status compile_object(cctx *c, const cJSON *s, const char *path, int depth, int *out) {
    es_grammar *g = c->g;
    char sp[512];
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    if (props && !cJSON_IsObject(props)) return bad(c, path, "'properties' must be an object");
    if (req && !cJSON_IsArray(req)) return bad(c, path, "'required' must be an array of names");
    if (addl && !cJSON_IsBool(addl) && !cJSON_IsObject(addl)) return bad(c, path, "'additionalProperties' must be a boolean or a schema");
    const int np = props ? cJSON_GetArraySize(props) : 0;
    if (np > ES_GRAMMAR_MAX_PROPS) return bad(c, path, "more than 64 properties in one object");
    const int n = es_grammar_add_node(g, GN_OBJECT);
    if (n < 0) return nomem(c);
    if (np == 0) {
        int an = 0; /* NODE_ANY */
        if (cJSON_IsFalse(addl)) an = -1;
        else if (cJSON_IsObject(addl)) {
            sub_path(sp, sizeof sp, path, "additionalProperties", NULL);
            es_status st = compile(c, addl, sp, depth + 1, &an);
            if (st != ES_OK) return st;
        }
        g->nodes[n].addl = an;
        if (req && cJSON_GetArraySize(req) > 0 && an < 0) return bad(c, path, "'required' names a property the object cannot have");
        if (req && cJSON_GetArraySize(req) > 0)
            return bad(c, path, "'required' without 'properties' is not supported (declare the required properties)");
        *out = n;
        return ES_OK;
    }
    if (!grow((void **)&g->props, &g->cap_props, g->n_props + np, sizeof *g->props)) return nomem(c);
    const int off = g->n_props;
    g->n_props += np;
    g->nodes[n].prop_off = off;
    g->nodes[n].n_props = np;
    int i = 0;
    for (const cJSON *p = props->child; p; p = p->next, i++) {
        for (const cJSON *q = props->child; q != p; q = q->next)
            if (!strcmp(q->string, p->string)) return bad(c, path, "a property is declared twice");
        cJSON *name = cJSON_CreateString(p->string);
        char *txt = name ? cJSON_PrintUnformatted(name) : NULL;
        cJSON_Delete(name);
        if (!txt) return nomem(c);
        const int boff = es_grammar_add_bytes(g, txt, strlen(txt));
        const int32_t blen = (int32_t)strlen(txt);
        free(txt);
        if (boff < 0) return nomem(c);
        sub_path(sp, sizeof sp, path, "properties", p->string);
        int vn;
        es_status st = compile(c, p, sp, depth + 1, &vn);
        if (st != ES_OK) return st;
        g->props[off + i] = (gprop){boff, blen, vn};
    }
    uint64_t rq = 0;
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next) {
        if (!cJSON_IsString(r)) return bad(c, path, "'required' must list property names (strings)");
        int k = 0;
        const cJSON *p = props->child;
        for (; p && strcmp(p->string, r->valuestring); p = p->next) k++;
        if (!p) return bad(c, path, "'required' names a property that 'properties' does not declare");
        rq |= 1ull << k;
    }
    g->nodes[n].req = rq;
    *out = n;
    return ES_OK;
}

static es_status compile_array(cctx *c, const cJSON *s, const char *path, int depth, int *out) {
    char sp[512];
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(s, "minItems"), *mx = cJSON_GetObjectItemCaseSensitive(s, "maxItems");
    const cJSON *uq = cJSON_GetObjectItemCaseSensitive(s, "uniqueItems");
    if (uq && !cJSON_IsFalse(uq)) return bad(c, path, "'uniqueItems' true is not supported");
    uint32_t lo = 0, hi = UINT32_MAX;
    if (mn && !number_value(mn, 0, 1e6, &lo)) return bad(c, path, "'minItems' must be an integer in 0..1000000");
    if (mx && !number_value(mx, 0, 1e6, &hi)) return bad(c, path, "'maxItems' must be an integer in 0..1000000");
    if (lo > hi) return bad(c, path, "'minItems' is above 'maxItems'");
    int it = 0; /* NODE_ANY */
    if (items) {
        if (cJSON_IsArray(items)) return bad(c, path, "'items' as a list (tuples) is not supported");
        sub_path(sp, sizeof sp, path, "items", NULL);
        es_status st = compile(c, items, sp, depth + 1, &it);
        if (st != ES_OK) return st;
    }
    const int n = es_grammar_add_node(c->g, GN_ARRAY);
    if (n < 0) return nomem(c);
    c->g->nodes[n].items = it;
    c->g->nodes[n].min_items = lo;
    c->g->nodes[n].max_items = hi;
    *out = n;
    return ES_OK;
}

static es_status compile_type(cctx *c, const cJSON *s, const char *t, const char *path, int depth, int *out) {
    if (!strcmp(t, "object")) return compile_object(c, s, path, depth, out);
    if (!strcmp(t, "array")) return compile_array(c, s, path, depth, out);
    gn_type ty;
    if (!strcmp(t, "string")) ty = GN_STRING;
    else if (!strcmp(t, "number")) ty = GN_NUMBER;
    else if (!strcmp(t, "integer")) ty = GN_INTEGER;
    else if (!strcmp(t, "boolean")) ty = GN_BOOLEAN;
    else if (!strcmp(t, "null")) ty = GN_NULL;
    else return bad(c, path, "'type' must be object, array, string, number, integer, boolean or null");
    if ((*out = es_grammar_add_node(c->g, ty)) < 0) return nomem(c);
    return ES_OK;
}

/* A list of schemas (anyOf / oneOf / type list) as one GN_ALT node. */
static es_status compile_alts(cctx *c, const cJSON *list, const cJSON *typed_from, const char *kw, const char *path, int depth, int *out) {
    es_grammar *g = c->g;
    const int m = cJSON_GetArraySize(list);
    if (m < 1 || m > 64) return bad(c, path, typed_from ? "'type' lists 1 to 64 types" : "anyOf / oneOf need 1 to 64 schemas");
    int alt[64];
    char sp[512], ix[16];
    int i = 0;
    for (const cJSON *a = list->child; a; a = a->next, i++) {
        snprintf(ix, sizeof ix, "%d", i);
        sub_path(sp, sizeof sp, path, kw, ix);
        es_status st;
        if (typed_from) {
            if (!cJSON_IsString(a)) return bad(c, path, "'type' lists must hold type names");
            st = compile_type(c, typed_from, a->valuestring, sp, depth + 1, &alt[i]);
        } else {
            st = compile(c, a, sp, depth + 1, &alt[i]);
        }
        if (st != ES_OK) return st;
    }
    if (m == 1) { *out = alt[0]; return ES_OK; }
    const int n = es_grammar_add_node(g, GN_ALT);
    if (n < 0 || !grow((void **)&g->alts, &g->cap_alts, g->n_alts + m, sizeof *g->alts)) return nomem(c);
    g->nodes[n].alt_off = g->n_alts;
    g->nodes[n].n_alt = m;
    for (int k = 0; k < m; k++) g->alts[g->n_alts++] = alt[k];
    *out = n;
    return ES_OK;
}

static es_status compile(cctx *c, const cJSON *s, const char *path, int depth, int *out) {
    es_grammar *g = c->g;
    if (depth > MAX_SCHEMA_DEPTH) return bad(c, path, "schema nested too deeply");
    if (cJSON_IsTrue(s)) { *out = 0; return ES_OK; }
    if (cJSON_IsFalse(s)) return bad(c, path, "the schema false matches nothing");
    if (!cJSON_IsObject(s)) return bad(c, path, "a schema must be an object or a boolean");
    char msg[160];
    for (const cJSON *k = s->child; k; k = k->next) {
        if (in_list(k->string, k_handled) || in_list(k->string, k_annotations)) continue;
        snprintf(msg, sizeof msg, "keyword '%.60s' is not supported in response_format schemas", k->string);
        return bad(c, path, msg);
    }
    if (depth > 0 && (cJSON_GetObjectItemCaseSensitive(s, "$defs") || cJSON_GetObjectItemCaseSensitive(s, "definitions")))
        return bad(c, path, "'$defs' / 'definitions' are supported at the root only");
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (ref) {
        if (!cJSON_IsString(ref)) return bad(c, path, "'$ref' must be a string");
        const char *r = ref->valuestring;
        if (!strcmp(r, "#")) { *out = -2; } /* the root: patched by the caller below */
        else {
            const char *name = !strncmp(r, "#/$defs/", 8) ? r + 8 : !strncmp(r, "#/definitions/", 14) ? r + 14 : NULL;
            if (!name) return bad(c, path, "'$ref' must be \"#\", \"#/$defs/NAME\" or \"#/definitions/NAME\"");
            int k = 0;
            while (k < c->n_defs && strcmp(c->def_names[k], name)) k++;
            if (k == c->n_defs) return bad(c, path, "'$ref' names a definition that does not exist");
            *out = c->def_node[k];
        }
        for (const cJSON *k = s->child; k; k = k->next)
            if (!in_list(k->string, k_annotations) && strcmp(k->string, "$ref")) return bad(c, path, "'$ref' next to other keywords is not supported");
        const int n = es_grammar_add_node(g, GN_REF);
        if (n < 0) return nomem(c);
        g->nodes[n].ref = *out == -2 ? g->root : *out;
        *out = n;
        return ES_OK;
    }
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum"), *cn = cJSON_GetObjectItemCaseSensitive(s, "const");
    if (en || cn) {
        if (en && cn) return bad(c, path, "'enum' and 'const' together are not supported");
        if (en && !cJSON_IsArray(en)) return bad(c, path, "'enum' must be an array");
        const int n = es_grammar_add_node(g, GN_LITERALS);
        if (n < 0) return nomem(c);
        g->nodes[n].lit_off = g->n_lits;
        if (en) {
            if (cJSON_GetArraySize(en) > 4096) return bad(c, path, "'enum' of more than 4096 values");
            for (const cJSON *v = en->child; v; v = v->next) {
                es_status st = add_literal(c, n, v);
                if (st != ES_OK) return st;
            }
        } else {
            es_status st = add_literal(c, n, cn);
            if (st != ES_OK) return st;
        }
        *out = n;
        return ES_OK;
    }
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(s, "allOf");
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf"), *one = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    const int n_comb = (all != NULL) + (any != NULL) + (one != NULL);
    if (n_comb > 1 || (n_comb && type)) return bad(c, path, "allOf / anyOf / oneOf combined with each other or with 'type' is not supported");
    char sp[512];
    if (all) {
        if (!cJSON_IsArray(all) || cJSON_GetArraySize(all) != 1) return bad(c, path, "'allOf' is supported with exactly one schema");
        sub_path(sp, sizeof sp, path, "allOf", "0");
        return compile(c, all->child, sp, depth + 1, out);
    }
    if (any || one) {
        const cJSON *l = any ? any : one;
        if (!cJSON_IsArray(l)) return bad(c, path, "anyOf / oneOf must be arrays of schemas");
        return compile_alts(c, l, NULL, any ? "anyOf" : "oneOf", path, depth, out);
    }
    if (type) {
        if (cJSON_IsString(type)) return compile_type(c, s, type->valuestring, path, depth, out);
        if (cJSON_IsArray(type)) return compile_alts(c, type, s, "type", path, depth, out);
        return bad(c, path, "'type' must be a string or an array of strings");
    }
    /* no type: the shape keywords say which, else any value */
    if (cJSON_GetObjectItemCaseSensitive(s, "properties") || cJSON_GetObjectItemCaseSensitive(s, "additionalProperties") ||
        cJSON_GetObjectItemCaseSensitive(s, "required"))
        return compile_object(c, s, path, depth, out);
    if (cJSON_GetObjectItemCaseSensitive(s, "items") || cJSON_GetObjectItemCaseSensitive(s, "minItems") ||
        cJSON_GetObjectItemCaseSensitive(s, "maxItems"))
        return compile_array(c, s, path, depth, out);
    *out = 0;
    return ES_OK;
}

static es_status collect_defs(cctx *c, const cJSON *root) {
    static const char *const kws[] = {"$defs", "definitions"};
    for (int w = 0; w < 2; w++) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, kws[w]);
        if (!d) continue;
        if (!cJSON_IsObject(d)) return bad(c, "#", "'$defs' / 'definitions' must be an object");
        for (const cJSON *e = d->child; e; e = e->next) {
            if (c->n_defs >= MAX_DEFS) return bad(c, "#", "more than 256 definitions");
            /* reserved now so that definitions can refer to each other (and themselves) */
            const int n = es_grammar_add_node(c->g, GN_REF);
            if (n < 0) return nomem(c);
            c->defs[c->n_defs] = e;
            c->def_names[c->n_defs] = e->string;
            c->def_node[c->n_defs++] = n;
        }
    }
    return ES_OK;
}

es_status es_grammar_from_schema(const char *json, size_t len, es_grammar **out, es_err *err) {
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return es_fail(err, ES_ERR_INVALID_ARG, "schema: not valid JSON");
    es_grammar *g = es_grammar_new();
    cctx c = {.g = g, .err = err};
    es_status st = g ? ES_OK : es_fail(err, ES_ERR_NOMEM, "out of memory");
    int top = -1;
    if (st == ES_OK) {
        /* the root's node is reserved first so that "$ref": "#" can point at it */
        top = es_grammar_add_node(g, GN_REF);
        if (top < 0) st = nomem(&c);
        else g->root = top;
    }
    if (st == ES_OK && cJSON_IsObject(root)) st = collect_defs(&c, root);
    for (int i = 0; st == ES_OK && i < c.n_defs; i++) {
        char sp[512];
        snprintf(sp, sizeof sp, "#/$defs/%.400s", c.def_names[i]);
        int n;
        st = compile(&c, c.defs[i], sp, 1, &n);
        if (st == ES_OK) g->nodes[c.def_node[i]].ref = n;
    }
    int body = -1;
    if (st == ES_OK) st = compile(&c, root, "", 0, &body);
    if (st == ES_OK) {
        g->nodes[top].ref = body;
        st = es_grammar_finish(g, err);
    }
    cJSON_Delete(root);
    if (st == ES_OK) { /* kept, so the grammar can be sent to a peer that compiles its own */
        g->source = malloc(len + 1);
        if (!g->source) st = es_fail(err, ES_ERR_NOMEM, "out of memory");
        else {
            memcpy(g->source, json, len);
            g->source[len] = 0;
            g->source_len = len;
        }
    }
    if (st != ES_OK) { es_grammar_free(g); return st; }
    *out = g;
    return ES_OK;
}
