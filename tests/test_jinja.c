/* test_jinja.c — the Jinja subset (src/jinja/) against Python's jinja2: every rendering in
 * tests/data/chat-templates/ref.jsonl (written by scripts/chat-template-ref.py: five models' chat
 * templates over a set of conversations, with and without the generation prompt, and feature
 * snippets) must match byte for byte, and fail where jinja2 failed (with raise_exception's message).
 * Then the limits: runaway loops, output, recursion and syntax errors end with a clear error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jinja/jinja.h"
#include "testutil.h"

/* scripts/chat-template-ref.py's NOW and special tokens */
static const int64_t k_now = 1767225600 + 13 * 3600 + 5 * 60;

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    if (b) b[n] = 0;
    fclose(f);
    return b;
}

static const char *data_dir(void) {
    const char *s = getenv("ES_SRC");
    static char d[1024];
    snprintf(d, sizeof d, "%s/tests/data/chat-templates", s && *s ? s : "..");
    return d;
}

/* Renders src with vars; the status, and the output or the error in *out (malloc'd). */
static es_status render(const char *src, const cJSON *vars, char **out, es_jinja_params *pp) {
    es_jinja *t = NULL;
    es_err err = {{0}};
    es_status st = es_jinja_parse(src, strlen(src), &t, &err);
    es_str o = {0};
    if (st == ES_OK) {
        es_jinja_params p = pp ? *pp : (es_jinja_params){0};
        p.vars = vars;
        p.now = k_now;
        st = es_jinja_render(t, &p, &o, &err);
    }
    es_jinja_free(t);
    *out = strdup(st == ES_OK ? es_str_cstr(&o) : err.msg);
    es_str_free(&o);
    return st;
}

static void check_reference(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/conversations.json", data_dir());
    char *ct = slurp(path);
    snprintf(path, sizeof path, "%s/snippets.json", data_dir());
    char *st = slurp(path);
    snprintf(path, sizeof path, "%s/ref.jsonl", data_dir());
    FILE *f = fopen(path, "rb");
    CHECK_MSG(ct && st && f, "cannot read the reference data in %s", data_dir());
    if (!ct || !st || !f) {
        free(ct);
        free(st);
        if (f) fclose(f);
        return;
    }
    cJSON *convs = cJSON_Parse(ct), *snips = cJSON_Parse(st);
    CHECK(cJSON_IsArray(convs) && cJSON_IsArray(snips));
    static char line[1 << 20];
    int n = 0, templates = 0;
    while (fgets(line, sizeof line, f)) {
        cJSON *ref = cJSON_Parse(line);
        CHECK(ref != NULL);
        if (!ref) continue;
        const cJSON *tn = cJSON_GetObjectItem(ref, "template"), *exp = cJSON_GetObjectItem(ref, "output"),
                    *experr = cJSON_GetObjectItem(ref, "error");
        char *src = NULL;
        cJSON *vars = NULL;
        char what[256];
        if (cJSON_IsString(tn)) {
            snprintf(path, sizeof path, "%s/%s", data_dir(), tn->valuestring);
            src = slurp(path);
            const int ci = cJSON_GetObjectItem(ref, "conversation")->valueint;
            vars = cJSON_Duplicate(cJSON_GetArrayItem(convs, ci), true);
            cJSON_AddBoolToObject(vars, "add_generation_prompt", cJSON_IsTrue(cJSON_GetObjectItem(ref, "add_generation_prompt")));
            cJSON_AddStringToObject(vars, "bos_token", "<s>");
            cJSON_AddStringToObject(vars, "eos_token", "</s>");
            snprintf(what, sizeof what, "%s conversation %d agp %d", tn->valuestring, ci, cJSON_IsTrue(cJSON_GetObjectItem(ref, "add_generation_prompt")));
            templates++;
        } else {
            const int si = cJSON_GetObjectItem(ref, "snippet")->valueint;
            const cJSON *s = cJSON_GetArrayItem(snips, si);
            src = strdup(cJSON_GetObjectItem(s, "t")->valuestring);
            vars = cJSON_Duplicate(cJSON_GetObjectItem(s, "v"), true);
            snprintf(what, sizeof what, "snippet %d", si);
        }
        CHECK_MSG(src != NULL, "%s: no template", what);
        if (src) {
            char *out = NULL;
            const es_status rs = render(src, vars, &out, NULL);
            if (cJSON_IsString(exp)) {
                CHECK_MSG(rs == ES_OK && !strcmp(out, exp->valuestring), "%s: got [%s] (%s), jinja2 wrote [%s]", what, out,
                          es_status_str(rs), exp->valuestring);
            } else {
                CHECK_MSG(rs != ES_OK, "%s: rendered [%s] where jinja2 failed", what, out);
                if (cJSON_IsString(experr) && *experr->valuestring)
                    CHECK_MSG(!strcmp(out, experr->valuestring), "%s: error [%s], jinja2's [%s]", what, out, experr->valuestring);
            }
            free(out);
        }
        free(src);
        cJSON_Delete(vars);
        cJSON_Delete(ref);
        n++;
    }
    fclose(f);
    CHECK_MSG(n >= 90 && templates >= 70, "only %d reference renderings (%d of templates)", n, templates);
    cJSON_Delete(convs);
    cJSON_Delete(snips);
    free(ct);
    free(st);
}

static void check_status(const char *src, es_status want, const char *needle, es_jinja_params *p) {
    char *out = NULL;
    const es_status st = render(src, NULL, &out, p);
    CHECK_MSG(st == want && (!needle || strstr(out, needle)), "[%s]: %s [%s], want %s with [%s]", src, es_status_str(st), out,
              es_status_str(want), needle ? needle : "");
    free(out);
}

static void check_limits(void) {
    es_jinja_params small = {.max_output = 100, .max_steps = 10000, .max_memory = 1 << 20};
    /* runaway loops stop at the step limit, long output at the output limit */
    check_status("{% for i in range(100) %}{% for j in range(100) %}{% for k in range(100) %}x{% endfor %}{% endfor %}{% endfor %}",
                 ES_ERR_RANGE, "steps", NULL);
    check_status("{% for i in range(1000) %}xxxxxxxxxx{% endfor %}", ES_ERR_RANGE, "output", &small);
    check_status("{% for i in range(100000000) %}{% endfor %}", ES_ERR_RANGE, "steps", &small);
    /* memory: a string doubled until it does not fit */
    check_status("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
                 ES_ERR_RANGE, "memory", &small);
    /* unbounded recursion */
    check_status("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", ES_ERR_RANGE, "nested", NULL);
    /* deep nesting in the source is refused while parsing */
    char deep[2000] = "{{ ";
    for (int i = 0; i < 300; i++) strcat(deep, "(");
    strcat(deep, "1");
    for (int i = 0; i < 300; i++) strcat(deep, ")");
    strcat(deep, " }}");
    check_status(deep, ES_ERR_RANGE, "nested", NULL);
    /* syntax errors name the line */
    check_status("ok\n{% if x %}no end", ES_ERR_FORMAT, "missing 'endif'", NULL);
    check_status("a\nb\n{{ 'unterminated }}", ES_ERR_FORMAT, "line 3", NULL);
    check_status("{% for %}{% endfor %}", ES_ERR_FORMAT, "expected a name", NULL);
    check_status("{% include 'x' %}", ES_ERR_UNSUPPORTED, "include", NULL);
    check_status("{{ 1 }", ES_ERR_FORMAT, NULL, NULL);
    check_status("{% endif %}", ES_ERR_FORMAT, "unexpected 'endif'", NULL);
    /* runtime errors */
    check_status("{{ x.y }}", ES_ERR_INVALID_ARG, "'x' is undefined", NULL);
    check_status("{{ 1 // 0 }}", ES_ERR_INVALID_ARG, "zero", NULL);
    check_status("{{ 9223372036854775807 + 1 }}", ES_ERR_INVALID_ARG, "overflow", NULL);
    check_status("{{ [1] | tojson }}{{ x | unknownfilter }}", ES_ERR_INVALID_ARG, "unknown filter", NULL);
    check_status("{{ raise_exception('stop here') }}", ES_ERR_INVALID_ARG, "stop here", NULL);
    /* work that would not be bounded by steps is bounded otherwise: powers by squaring, repeats by memory */
    char *o2 = NULL;
    CHECK(render("{{ 1 ** 999999999999999 }}|{{ (-1) ** 999999999999999 }}|{{ '' * 999999999999 }}|{{ 'ab'.split('b', 99999999999) }}", NULL, &o2,
                 NULL) == ES_OK && !strcmp(o2, "1|-1||['a', '']"));
    free(o2);
    check_status("{{ 2 ** 999999999999999 }}", ES_ERR_INVALID_ARG, "overflow", NULL);
    check_status("{{ 'ab' * 99999999999 }}", ES_ERR_RANGE, "memory", NULL);
    /* variables from JSON: integral numbers are ints, nesting is bounded */
    cJSON *v = cJSON_Parse("{\"n\": 3, \"f\": 0.5, \"s\": \"é\"}");
    char *out = NULL;
    CHECK(render("{{ n + 1 }} {{ f * 2 }} {{ s | length }}", v, &out, NULL) == ES_OK && !strcmp(out, "4 1.0 1"));
    free(out);
    cJSON_Delete(v);
}

int main(void) {
    check_reference();
    check_limits();
    return es_test_finish("test_jinja");
}
