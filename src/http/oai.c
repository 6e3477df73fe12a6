/* oai.c — OpenAI request parsing, stop strings and response JSON (see oai.h). */
#include "http/oai.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "tokenizer/detok.h"

void es_oai_error_set(es_oai_error *e, int status, const char *type, const char *code, const char *param, const char *fmt, ...) {
    if (!e) return;
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

#define BAD(e, code, param, ...) (es_oai_error_set((e), 400, "invalid_request_error", (code), (param), __VA_ARGS__), false)

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static bool oom(es_oai_error *e) {
    es_oai_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return false;
}

/* A JSON number that is an integer in [lo, hi]. */
static bool get_int(const cJSON *v, double lo, double hi, int64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    const double d = v->valuedouble;
    if (!isfinite(d) || floor(d) != d || d < lo || d > hi) return false;
    *out = (int64_t)d;
    return true;
}

static bool is_null(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* Optional number field in [lo, hi] (lo_open: lo itself excluded). */
static bool opt_number(const cJSON *root, const char *name, double lo, bool lo_open, double hi, double *out, es_oai_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (is_null(v)) return true;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return BAD(e, "invalid_type", name, "'%s' must be a number", name);
    const double d = v->valuedouble;
    if (d < lo || (lo_open && d == lo) || d > hi)
        return BAD(e, "invalid_value", name, "'%s' must be %s %g and <= %g, got %g", name, lo_open ? ">" : ">=", lo, hi, d);
    *out = d;
    return true;
}

static bool opt_bool(const cJSON *root, const char *name, bool *out, es_oai_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (is_null(v)) return true;
    if (!cJSON_IsBool(v)) return BAD(e, "invalid_type", name, "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(v);
    return true;
}

/* Refuses a field that is present and not one of its "off" values. */
static bool refuse_if_set(const cJSON *root, const char *name, es_oai_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (is_null(v) || cJSON_IsFalse(v)) return true;
    return BAD(e, "unsupported_parameter", name, "'%s' is not supported by this server", name);
}

static bool parse_stop(const cJSON *root, es_oai_request *r, es_oai_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (is_null(v)) return true;
    const cJSON *one[1] = {v};
    int n = 1;
    if (cJSON_IsArray(v)) {
        n = cJSON_GetArraySize(v);
        if (n > ES_OAI_MAX_STOP) return BAD(e, "invalid_value", "stop", "'stop' holds at most %d strings, got %d", ES_OAI_MAX_STOP, n);
    } else if (!cJSON_IsString(v)) {
        return BAD(e, "invalid_type", "stop", "'stop' must be a string or an array of strings");
    }
    for (int i = 0; i < n; i++) {
        const cJSON *s = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, i) : one[0];
        if (!cJSON_IsString(s)) return BAD(e, "invalid_type", "stop", "'stop' must be a string or an array of strings");
        const size_t len = strlen(s->valuestring);
        if (len == 0) return BAD(e, "invalid_value", "stop", "stop strings must not be empty");
        if (len > ES_OAI_MAX_STOP_LEN) return BAD(e, "invalid_value", "stop", "stop strings are limited to %d bytes", ES_OAI_MAX_STOP_LEN);
        if (!es_utf8_valid(s->valuestring, len)) return BAD(e, "invalid_value", "stop", "stop strings must be valid UTF-8");
        if (!(r->stop[r->n_stop] = dup_str(s->valuestring))) return oom(e);
        r->n_stop++;
    }
    return true;
}

/* Token ids of a prompt given as an array of integers. */
static bool parse_ids(const cJSON *a, es_oai_request *r, es_oai_error *e) {
    const int n = cJSON_GetArraySize(a);
    if (n < 1) return BAD(e, "invalid_value", "prompt", "'prompt' must not be empty");
    if (n > ES_OAI_MAX_PROMPT_IDS) return BAD(e, "invalid_value", "prompt", "'prompt' holds more than %d tokens", ES_OAI_MAX_PROMPT_IDS);
    if (!(r->prompt_ids = malloc((size_t)n * sizeof(int32_t)))) return oom(e);
    int i = 0;
    for (const cJSON *t = a->child; t; t = t->next, i++) {
        int64_t id;
        if (!get_int(t, 0, INT32_MAX, &id))
            return BAD(e, "invalid_type", "prompt", "'prompt' token %d must be a non-negative integer token id", i);
        r->prompt_ids[i] = (int32_t)id;
    }
    r->n_prompt_ids = n;
    return true;
}

static bool parse_prompt(const cJSON *root, es_oai_request *r, es_oai_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (is_null(v)) return BAD(e, "missing_required_parameter", "prompt", "'prompt' is required");
    if (cJSON_IsString(v)) return (r->prompt = dup_str(v->valuestring)) ? true : oom(e);
    if (!cJSON_IsArray(v)) return BAD(e, "invalid_type", "prompt", "'prompt' must be a string, an array of strings or an array of token ids");
    const int n = cJSON_GetArraySize(v);
    if (n == 0) return BAD(e, "invalid_value", "prompt", "'prompt' must not be empty");
    const cJSON *first = v->child;
    if (cJSON_IsString(first) || cJSON_IsArray(first)) {
        /* a batch of prompts would mean several choices: only one is served per request */
        if (n != 1) return BAD(e, "invalid_value", "prompt", "only one prompt per request is supported, got %d", n);
        if (cJSON_IsString(first)) return (r->prompt = dup_str(first->valuestring)) ? true : oom(e);
        return parse_ids(first, r, e);
    }
    if (cJSON_IsNumber(first)) return parse_ids(v, r, e);
    return BAD(e, "invalid_type", "prompt", "'prompt' must be a string, an array of strings or an array of token ids");
}

/* A JSON value as compact text, or NULL when memory runs out. */
static char *json_text(const cJSON *v) { return cJSON_PrintUnformatted(v); }

/* An object {"type":"function","function":{"name":STRING,...}}: a tool, a call or a named tool_choice. */
static bool is_function(const cJSON *v) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type"), *f = cJSON_GetObjectItemCaseSensitive(v, "function");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(f, "name");
    return cJSON_IsObject(v) && (is_null(t) || (cJSON_IsString(t) && !strcmp(t->valuestring, "function"))) && cJSON_IsObject(f) &&
           cJSON_IsString(n) && n->valuestring[0];
}

/* An assistant's tool_calls, a tool message's tool_call_id, a message's name. */
static bool parse_message_tools(const cJSON *m, int i, es_oai_message *out, es_oai_error *e) {
    char param[64];
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    if (!is_null(tc) && !(cJSON_IsArray(tc) && cJSON_GetArraySize(tc) == 0)) {
        snprintf(param, sizeof param, "messages[%d].tool_calls", i);
        if (!cJSON_IsArray(tc)) return BAD(e, "invalid_type", param, "'%s' must be an array", param);
        for (const cJSON *c = tc->child; c; c = c->next) {
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(c, "function"), "arguments");
            if (!is_function(c) || !(is_null(a) || cJSON_IsString(a) || cJSON_IsObject(a)))
                return BAD(e, "invalid_value", param,
                           "'%s' must hold objects {\"type\":\"function\",\"function\":{\"name\":...,\"arguments\":\"JSON text\"}}", param);
        }
        if (!(out->tool_calls = json_text(tc))) return oom(e);
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id"), *name = cJSON_GetObjectItemCaseSensitive(m, "name");
    snprintf(param, sizeof param, "messages[%d].tool_call_id", i);
    if (!is_null(id) && !cJSON_IsString(id)) return BAD(e, "invalid_type", param, "'%s' must be a string", param);
    if (cJSON_IsString(id) && !(out->tool_call_id = dup_str(id->valuestring))) return oom(e);
    snprintf(param, sizeof param, "messages[%d].name", i);
    if (!is_null(name) && !cJSON_IsString(name)) return BAD(e, "invalid_type", param, "'%s' must be a string", param);
    if (cJSON_IsString(name) && !(out->name = dup_str(name->valuestring))) return oom(e);
    return true;
}

/* tools and tool_choice */
static bool parse_tools(const cJSON *root, es_oai_request *r, es_oai_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (!is_null(v) && !(cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0)) {
        if (!cJSON_IsArray(v)) return BAD(e, "invalid_type", "tools", "'tools' must be an array");
        if (cJSON_GetArraySize(v) > ES_OAI_MAX_TOOLS) return BAD(e, "invalid_value", "tools", "'tools' holds more than %d tools", ES_OAI_MAX_TOOLS);
        int i = 0;
        for (const cJSON *t = v->child; t; t = t->next, i++)
            if (!is_function(t))
                return BAD(e, "invalid_value", "tools", "tools[%d] must be {\"type\":\"function\",\"function\":{\"name\":...}}", i);
        if (!(r->tools = json_text(v))) return oom(e);
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    if (is_null(v)) return true;
    if (cJSON_IsString(v)) {
        static const char *const names[] = {"auto", "none", "required"};
        for (int k = 0; k < 3; k++)
            if (!strcmp(v->valuestring, names[k])) {
                r->tool_choice = k;
                return true;
            }
        return BAD(e, "invalid_value", "tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or a function, got '%.32s'",
                   v->valuestring);
    }
    if (!is_function(v)) return BAD(e, "invalid_type", "tool_choice", "'tool_choice' must be a string or {\"type\":\"function\",\"function\":{\"name\":...}}");
    r->tool_choice = ES_OAI_TOOLS_NAMED;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(v, "function"), "name");
    return (r->tool_choice_name = dup_str(n->valuestring)) ? true : oom(e);
}

static bool parse_messages(const cJSON *root, es_oai_request *r, es_oai_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (is_null(v)) return BAD(e, "missing_required_parameter", "messages", "'messages' is required");
    if (!cJSON_IsArray(v)) return BAD(e, "invalid_type", "messages", "'messages' must be an array");
    const int n = cJSON_GetArraySize(v);
    if (n < 1) return BAD(e, "invalid_value", "messages", "'messages' must hold at least one message");
    if (n > ES_OAI_MAX_MESSAGES) return BAD(e, "invalid_value", "messages", "'messages' holds more than %d messages", ES_OAI_MAX_MESSAGES);
    if (!(r->messages = calloc((size_t)n, sizeof *r->messages))) return oom(e);
    int i = 0;
    for (const cJSON *m = v->child; m; m = m->next, i++) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(m)) return BAD(e, "invalid_type", param, "'%s' must be an object", param);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsString(role)) return BAD(e, is_null(role) ? "missing_required_parameter" : "invalid_type", param, "'%s' must be a string", param);
        const char *rs = role->valuestring;
        if (!strcmp(rs, "developer")) rs = "system";
        else if (!strcmp(rs, "function")) rs = "tool";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            return BAD(e, "invalid_value", param, "'%s' must be one of system, developer, user, assistant, tool; got '%.64s'", param,
                       role->valuestring);
        r->n_messages = i + 1;
        if (!(r->messages[i].role = dup_str(rs))) return oom(e);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        snprintf(param, sizeof param, "messages[%d].content", i);
        es_str text = {0};
        if (cJSON_IsString(c)) {
            if (!es_str_puts(&text, c->valuestring)) return oom(e);
        } else if (cJSON_IsArray(c)) {
            for (const cJSON *p = c->child; p; p = p->next) {
                const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type"), *tx = cJSON_GetObjectItemCaseSensitive(p, "text");
                if (!cJSON_IsObject(p) || !cJSON_IsString(ty)) {
                    es_str_free(&text);
                    return BAD(e, "invalid_type", param, "'%s' parts must be objects with a 'type'", param);
                }
                if (strcmp(ty->valuestring, "text") != 0) {
                    es_str_free(&text);
                    return BAD(e, "unsupported_content", param, "'%s': content parts of type '%.32s' are not supported (text only)", param,
                               ty->valuestring);
                }
                if (!cJSON_IsString(tx)) {
                    es_str_free(&text);
                    return BAD(e, "invalid_type", param, "'%s': a text part needs a string 'text'", param);
                }
                if (!es_str_puts(&text, tx->valuestring)) {
                    es_str_free(&text);
                    return oom(e);
                }
            }
        } else if (!is_null(c)) {
            return BAD(e, "invalid_type", param, "'%s' must be a string, an array of content parts or null", param);
        }
        r->messages[i].content = text.s ? text.s : dup_str("");
        if (!r->messages[i].content) return oom(e);
        r->messages[i].null_content = is_null(c);
        if (!parse_message_tools(m, i, &r->messages[i], e)) return false;
    }
    return true;
}

/* repeat_penalty (llama.cpp) / repetition_penalty (vLLM), repeat_last_n, logit_bias. */
static bool parse_penalty_bias(const cJSON *root, es_oai_request *r, es_oai_error *e) {
    const char *names[] = {"repeat_penalty", "repetition_penalty"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, names[i]);
        if (is_null(v)) continue;
        double p = 1;
        if (!opt_number(root, names[i], 0, true, 100, &p, e)) return false;
        r->repeat_penalty = p;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "repeat_last_n");
    if (!is_null(v)) {
        int64_t n;
        if (!get_int(v, -1, 1 << 20, &n)) return BAD(e, "invalid_value", "repeat_last_n", "'repeat_last_n' must be an integer in 0..1048576 (or -1: the whole context)");
        r->repeat_last_n = (int)n;
        r->has_repeat_last_n = true;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "logit_bias");
    if (is_null(v)) return true;
    if (!cJSON_IsObject(v)) return BAD(e, "invalid_type", "logit_bias", "'logit_bias' must be an object of token id -> bias");
    const int n = cJSON_GetArraySize(v);
    if (n > ES_OAI_MAX_LOGIT_BIAS) return BAD(e, "invalid_value", "logit_bias", "'logit_bias' holds at most %d entries, got %d", ES_OAI_MAX_LOGIT_BIAS, n);
    if (n == 0) return true;
    if (!(r->bias = calloc((size_t)n, sizeof *r->bias))) return oom(e);
    for (const cJSON *b = v->child; b; b = b->next) {
        const char *k = b->string ? b->string : "";
        char *endp = NULL;
        const long id = strtol(k, &endp, 10);
        if (!*k || *endp || id < 0 || id > INT32_MAX || (k[0] == '0' && k[1]))
            return BAD(e, "invalid_value", "logit_bias", "'logit_bias' keys must be token ids (decimal integers), got '%.32s'", k);
        if (!cJSON_IsNumber(b) || !isfinite(b->valuedouble) || b->valuedouble < -100 || b->valuedouble > 100)
            return BAD(e, "invalid_value", "logit_bias", "'logit_bias' values must be numbers in -100..100 (token %ld)", id);
        for (int i = 0; i < r->n_bias; i++)
            if (r->bias[i].id == (int32_t)id) return BAD(e, "invalid_value", "logit_bias", "'logit_bias' names token %ld twice", id);
        r->bias[r->n_bias].id = (int32_t)id;
        r->bias[r->n_bias].bias = (float)b->valuedouble;
        r->n_bias++;
    }
    return true;
}

/* Completions: logprobs N (the chosen token's and the N most likely). Chat: logprobs true, with
 * top_logprobs N. N in 0..ES_OAI_MAX_TOP_LOGPROBS. */
static bool parse_logprobs(const cJSON *root, es_oai_request *r, es_oai_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "top_logprobs");
    int64_t n = 0;
    if (r->kind == ES_OAI_COMPLETION) {
        if (!is_null(t) && !(cJSON_IsNumber(t) && t->valuedouble == 0))
            return BAD(e, "unsupported_parameter", "top_logprobs",
                       "'top_logprobs' is a chat field: completions take 'logprobs': N (0..%d)", ES_OAI_MAX_TOP_LOGPROBS);
        if (is_null(v) || cJSON_IsFalse(v)) return true;
        if (!get_int(v, -1e9, 1e9, &n)) return BAD(e, "invalid_type", "logprobs", "'logprobs' must be an integer (0..%d)", ES_OAI_MAX_TOP_LOGPROBS);
        if (n < 0 || n > ES_OAI_MAX_TOP_LOGPROBS)
            return BAD(e, "invalid_value", "logprobs", "'logprobs' must be in 0..%d, got %lld", ES_OAI_MAX_TOP_LOGPROBS, (long long)n);
        r->logprobs = true;
        r->top_logprobs = (int)n;
        return true;
    }
    if (!is_null(v) && !cJSON_IsBool(v)) return BAD(e, "invalid_type", "logprobs", "'logprobs' must be a boolean");
    r->logprobs = cJSON_IsTrue(v);
    if (is_null(t)) return true;
    if (!get_int(t, -1e9, 1e9, &n)) return BAD(e, "invalid_type", "top_logprobs", "'top_logprobs' must be an integer (0..%d)", ES_OAI_MAX_TOP_LOGPROBS);
    if (n < 0 || n > ES_OAI_MAX_TOP_LOGPROBS)
        return BAD(e, "invalid_value", "top_logprobs", "'top_logprobs' must be in 0..%d, got %lld", ES_OAI_MAX_TOP_LOGPROBS, (long long)n);
    if (n > 0 && !r->logprobs) return BAD(e, "invalid_value", "top_logprobs", "'top_logprobs' needs 'logprobs': true");
    r->top_logprobs = (int)n;
    return true;
}


/* response_format: text (nothing to do), json_object, or json_schema compiled into r->grammar. */
static bool parse_response_format(const cJSON *v, es_oai_request *r, es_oai_error *e) {
    if (is_null(v)) return true;
    const cJSON *t = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "type") : NULL;
    if (!cJSON_IsString(t)) return BAD(e, "invalid_type", "response_format", "'response_format' must be an object with a 'type'");
    es_err err = {{0}};
    es_status st;
    if (!strcmp(t->valuestring, "text")) return true;
    if (!strcmp(t->valuestring, "json_object")) {
        st = es_grammar_json_object(&r->grammar, &err);
    } else if (!strcmp(t->valuestring, "json_schema")) {
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(v, "json_schema");
        if (!cJSON_IsObject(js))
            return BAD(e, "invalid_type", "response_format.json_schema", "'response_format.json_schema' must be an object with a 'schema'");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(js, "name"), *strict = cJSON_GetObjectItemCaseSensitive(js, "strict");
        if (name && !cJSON_IsString(name)) return BAD(e, "invalid_type", "response_format.json_schema.name", "'name' must be a string");
        if (strict && !cJSON_IsBool(strict) && !cJSON_IsNull(strict))
            return BAD(e, "invalid_type", "response_format.json_schema.strict", "'strict' must be a boolean");
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
        if (!cJSON_IsObject(schema) && !cJSON_IsBool(schema))
            return BAD(e, "invalid_type", "response_format.json_schema.schema", "'response_format.json_schema.schema' must be a JSON Schema object");
        char *txt = cJSON_PrintUnformatted(schema);
        if (!txt) return BAD(e, "invalid_value", "response_format", "out of memory");
        st = es_grammar_from_schema(txt, strlen(txt), &r->grammar, &err);
        free(txt);
    } else {
        return BAD(e, "invalid_value", "response_format.type",
                   "response_format type '%.32s' is not supported (text, json_object or json_schema)", t->valuestring);
    }
    /* strict or not, the output follows the schema: constrained decoding has no weaker mode */
    if (st != ES_OK) return BAD(e, "invalid_value", "response_format", "%s", err.msg);
    return true;
}

static bool parse_fields(const cJSON *root, es_oai_request *r, es_oai_error *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!is_null(v)) {
        if (!cJSON_IsString(v)) return BAD(e, "invalid_type", "model", "'model' must be a string");
        if (!(r->model = dup_str(v->valuestring))) return oom(e);
    }
    if (r->kind == ES_OAI_CHAT) {
        if (!parse_messages(root, r, e)) return false;
    } else if (!parse_prompt(root, r, e)) {
        return false;
    }
    const char *mt_name = "max_tokens";
    v = cJSON_GetObjectItemCaseSensitive(root, mt_name);
    if (is_null(v) && r->kind == ES_OAI_CHAT) {
        mt_name = "max_completion_tokens";
        v = cJSON_GetObjectItemCaseSensitive(root, mt_name);
    }
    if (!is_null(v)) {
        int64_t mt;
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || floor(v->valuedouble) != v->valuedouble)
            return BAD(e, "invalid_type", mt_name, "'%s' must be an integer", mt_name);
        if (!get_int(v, 1, INT32_MAX, &mt))
            return BAD(e, "invalid_value", mt_name, "'%s' must be at least 1, got %.0f", mt_name, v->valuedouble);
        r->max_tokens = (int)mt;
    }
    if (!opt_number(root, "temperature", 0, false, 2, &r->temperature, e)) return false;
    if (!opt_number(root, "top_p", 0, true, 1, &r->top_p, e)) return false;
    if (!opt_number(root, "min_p", 0, false, 1, &r->min_p, e)) return false;
    v = cJSON_GetObjectItemCaseSensitive(root, "top_k");
    if (!is_null(v)) {
        int64_t k;
        /* -1 is vLLM's "off", 0 llama.cpp's */
        if (!get_int(v, -1, 1 << 30, &k)) return BAD(e, "invalid_value", "top_k", "'top_k' must be an integer >= 0 (or -1: off)");
        r->top_k = k < 0 ? 0 : (int)k;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "seed");
    if (!is_null(v)) {
        int64_t s;
        /* JSON numbers are doubles here: integers up to 2^53 are exact */
        if (!get_int(v, -9007199254740992.0, 9007199254740992.0, &s)) return BAD(e, "invalid_type", "seed", "'seed' must be an integer");
        r->seed = (uint64_t)s;
        r->has_seed = true;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "n");
    if (!is_null(v)) {
        int64_t n;
        if (!get_int(v, -1e9, 1e9, &n)) return BAD(e, "invalid_type", "n", "'n' must be an integer");
        if (n < 1 || n > ES_OAI_MAX_N) return BAD(e, "invalid_value", "n", "'n' must be in 1..%d, got %lld", ES_OAI_MAX_N, (long long)n);
        r->n = (int)n;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "best_of");
    if (!is_null(v)) {
        int64_t n;
        if (!get_int(v, -1e9, 1e9, &n)) return BAD(e, "invalid_type", "best_of", "'best_of' must be an integer");
        if (n != 1) return BAD(e, "invalid_value", "best_of", "only best_of = 1 is supported, got %lld", (long long)n);
    }
    if (!parse_stop(root, r, e)) return false;
    if (!opt_bool(root, "stream", &r->stream, e)) return false;
    v = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (!is_null(v)) {
        if (!cJSON_IsObject(v)) return BAD(e, "invalid_type", "stream_options", "'stream_options' must be an object");
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(v, "include_usage");
        if (!is_null(u)) {
            if (!cJSON_IsBool(u)) return BAD(e, "invalid_type", "stream_options.include_usage", "'stream_options.include_usage' must be a boolean");
            r->include_usage = cJSON_IsTrue(u);
        }
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(v, "include_speculation"); /* an edgespec extension */
        if (!is_null(sp)) {
            if (!cJSON_IsBool(sp))
                return BAD(e, "invalid_type", "stream_options.include_speculation", "'stream_options.include_speculation' must be a boolean");
            r->include_speculation = cJSON_IsTrue(sp);
        }
    }
    if (!opt_number(root, "presence_penalty", -2, false, 2, &r->presence_penalty, e)) return false;
    if (!opt_number(root, "frequency_penalty", -2, false, 2, &r->frequency_penalty, e)) return false;
    if (!parse_penalty_bias(root, r, e)) return false;
    if (!parse_tools(root, r, e)) return false;
    if (!parse_logprobs(root, r, e)) return false;
    const char *refused[] = {"echo", "functions"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        v = cJSON_GetObjectItemCaseSensitive(root, refused[i]);
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0) continue; /* empty tool lists change nothing */
        if (cJSON_IsNumber(v) && v->valuedouble == 0) continue;
        if (!refuse_if_set(root, refused[i], e)) return false;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "suffix");
    if (!is_null(v) && !(cJSON_IsString(v) && v->valuestring[0] == 0))
        return BAD(e, "unsupported_parameter", "suffix", "'suffix' is not supported by this server");
    return parse_response_format(cJSON_GetObjectItemCaseSensitive(root, "response_format"), r, e);
}

/* True when a JSON string in body[0..len) holds the escape \u0000. cJSON would hand the string over cut
 * at the NUL, so a prompt would lose its tail without a word; the edge protocol refuses NUL in text
 * too. Escapes only occur inside strings, and "\\" is skipped as a pair, so "\\u0000" (a backslash
 * then "u0000") is not taken for one. */
static bool has_nul_escape(const char *body, size_t len) {
    for (size_t i = 0; i + 1 < len; i++) {
        if (body[i] != '\\') continue;
        if (body[i + 1] == 'u' && i + 5 < len && !memcmp(body + i + 2, "0000", 4)) return true;
        i++; /* the escaped character */
    }
    return false;
}

bool es_oai_parse_request(int kind, const char *body, size_t len, es_oai_request *out, es_oai_error *e) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->temperature = 1.0;
    out->top_p = 1.0;
    out->repeat_penalty = 1.0;
    out->n = 1;
    if (!body || len == 0)
        return BAD(e, "invalid_json", NULL, "the request body is empty; send a JSON object (Content-Type: application/json)");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (root && end) { /* nothing but white space may follow the value */
        for (const char *p = end; p < body + len; p++)
            if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != 0) {
                cJSON_Delete(root);
                root = NULL;
                break;
            }
    }
    if (!root) {
        const size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return BAD(e, "invalid_json", NULL, "the request body is not valid JSON (near byte %zu)", at);
    }
    if (has_nul_escape(body, len) || (end && end > body && end <= body + len && memchr(body, 0, (size_t)(end - body)))) {
        cJSON_Delete(root);
        return BAD(e, "invalid_value", NULL, "the request holds a NUL character (\\u0000) in a string; text with NUL is not supported");
    }
    bool ok = cJSON_IsObject(root) ? parse_fields(root, out, e) : BAD(e, "invalid_json", NULL, "the request body must be a JSON object");
    cJSON_Delete(root);
    if (!ok) es_oai_request_free(out);
    return ok;
}

bool es_oai_parse_tokenize(bool tokenize, const char *body, size_t len, es_oai_tok *out, es_oai_error *e) {
    memset(out, 0, sizeof *out);
    out->add_special = true;
    if (!body || len == 0) return BAD(e, "invalid_json", NULL, "the request body is empty; send a JSON object");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return BAD(e, "invalid_json", NULL, "the request body must be a JSON object");
    }
    if (has_nul_escape(body, len)) {
        cJSON_Delete(root);
        return BAD(e, "invalid_value", NULL, "the request holds a NUL character (\\u0000) in a string; text with NUL is not supported");
    }
    bool ok = true;
    if (tokenize) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(root, "content");
        if (!cJSON_IsString(c)) ok = BAD(e, is_null(c) ? "missing_required_parameter" : "invalid_type", "content", "'content' must be a string");
        else if (!(out->content = dup_str(c->valuestring))) ok = oom(e);
        ok = ok && opt_bool(root, "add_special", &out->add_special, e) && opt_bool(root, "parse_special", &out->parse_special, e);
    } else {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "tokens");
        const int n = cJSON_IsArray(t) ? cJSON_GetArraySize(t) : -1;
        if (n < 0) ok = BAD(e, is_null(t) ? "missing_required_parameter" : "invalid_type", "tokens", "'tokens' must be an array of token ids");
        else if (n > ES_OAI_MAX_PROMPT_IDS) ok = BAD(e, "invalid_value", "tokens", "'tokens' holds more than %d ids", ES_OAI_MAX_PROMPT_IDS);
        else if (n > 0 && !(out->ids = malloc((size_t)n * sizeof *out->ids))) ok = oom(e);
        int i = 0;
        for (const cJSON *x = ok && n > 0 ? t->child : NULL; x && ok; x = x->next, i++) {
            int64_t id;
            if (!get_int(x, 0, INT32_MAX, &id)) ok = BAD(e, "invalid_type", "tokens", "'tokens' entry %d must be a non-negative integer", i);
            else out->ids[out->n_ids++] = (int32_t)id;
        }
    }
    cJSON_Delete(root);
    if (!ok) es_oai_tok_free(out);
    return ok;
}

void es_oai_tok_free(es_oai_tok *t) {
    if (!t) return;
    free(t->content);
    free(t->ids);
    memset(t, 0, sizeof *t);
}

char *es_oai_content_json(const char *text) {
    cJSON *o = cJSON_CreateObject();
    char *j = o && cJSON_AddStringToObject(o, "content", text) ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return j;
}

void es_oai_request_free(es_oai_request *r) {
    if (!r) return;
    es_grammar_free(r->grammar);
    r->grammar = NULL;
    free(r->model);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_messages; i++) {
        free(r->messages[i].role);
        free(r->messages[i].content);
        free(r->messages[i].tool_calls);
        free(r->messages[i].tool_call_id);
        free(r->messages[i].name);
    }
    free(r->messages);
    free(r->tools);
    free(r->tool_choice_name);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->bias);
    const int kind = r->kind;
    memset(r, 0, sizeof *r);
    r->kind = kind;
}

bool es_oai_check_context(int n_prompt, int max_tokens, int n_ctx, es_oai_error *e) {
    if ((int64_t)n_prompt + (int64_t)max_tokens <= (int64_t)n_ctx) return true;
    es_oai_error_set(e, 400, "invalid_request_error", "context_length_exceeded", "max_tokens",
                     "This model's maximum context length is %d tokens. However, you requested %lld tokens (%d in the "
                     "prompt, %d for the completion). Please reduce the prompt or max_tokens.",
                     n_ctx, (long long)n_prompt + max_tokens, n_prompt, max_tokens);
    return false;
}

/* ---- stop strings ---- */

void es_stopstr_init(es_stopstr *s, char *const *stop, int n_stop) {
    memset(s, 0, sizeof *s);
    s->stop = stop;
    s->n_stop = n_stop;
}

/* Releases what is decided. A full match ends the text at its start unless a match of a longer stop
 * string might still begin earlier (its beginning ends the held text): then it waits for more text,
 * so the cut is always at the earliest match in the whole text. `final`: no more text will come. */
static bool resolve(es_stopstr *s, es_str *out, bool final, bool *oomp) {
    const char *h = es_str_cstr(&s->hold);
    const size_t hl = s->hold.len;
    size_t cut = hl; /* the earliest full match */
    for (int i = 0; i < s->n_stop; i++) {
        const char *p = hl ? memmem(h, hl, s->stop[i], strlen(s->stop[i])) : NULL;
        if (p && (size_t)(p - h) < cut) cut = (size_t)(p - h);
    }
    size_t pend = hl; /* the earliest start of an unfinished match running to the end */
    for (size_t q = 0; q < hl && !final && pend == hl; q++)
        for (int i = 0; i < s->n_stop; i++) {
            const size_t sl = strlen(s->stop[i]);
            if (hl - q < sl && memcmp(h + q, s->stop[i], hl - q) == 0) {
                pend = q;
                break;
            }
        }
    if (cut < hl && cut <= pend) {
        if (!es_str_append(out, h, cut) && oomp) *oomp = true;
        s->matched = true;
        es_str_clear(&s->hold);
        return true;
    }
    const size_t rel = pend < cut ? pend : cut;
    if (!es_str_append(out, h, rel) && oomp) *oomp = true;
    es_str_consume(&s->hold, rel);
    return false;
}

bool es_stopstr_feed(es_stopstr *s, const char *text, size_t n, es_str *out, bool *oomp) {
    if (s->matched) return true;
    if (s->n_stop == 0) {
        if (!es_str_append(out, text, n) && oomp) *oomp = true;
        return false;
    }
    if (!es_str_append(&s->hold, text, n)) {
        if (oomp) *oomp = true;
        return false;
    }
    return resolve(s, out, false, oomp);
}

bool es_stopstr_flush(es_stopstr *s, es_str *out) {
    bool oom = false;
    if (!s->matched && s->hold.len) resolve(s, out, true, &oom);
    if (!s->matched && s->hold.len && !es_str_append(out, es_str_cstr(&s->hold), s->hold.len)) oom = true;
    es_str_clear(&s->hold);
    return !oom;
}

void es_stopstr_free(es_stopstr *s) { es_str_free(&s->hold); }

struct es_stopwatch {
    es_detok dt;
    es_stopstr ss;
    char *stop[ES_OAI_MAX_STOP];
    int n_stop;
    int32_t skip[ES_STOPWATCH_MAX_SKIP];
    int n_skip;
    es_str piece, out;     /* scratch: a token's text, the text released (cleared at every feed) */
};

es_stopwatch *es_stopwatch_new(const es_tokenizer *tok, int32_t prev, char *const *stop, int n_stop, const int32_t *skip,
                               int n_skip) {
    if (n_stop <= 0 || n_stop > ES_OAI_MAX_STOP || n_skip < 0 || n_skip > ES_STOPWATCH_MAX_SKIP) return NULL;
    es_stopwatch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    for (int i = 0; i < n_stop; i++) {
        if (!(w->stop[i] = dup_str(stop[i]))) {
            es_stopwatch_free(w);
            return NULL;
        }
        w->n_stop = i + 1;
    }
    memcpy(w->skip, skip, (size_t)n_skip * sizeof *skip);
    w->n_skip = n_skip;
    es_detok_init(&w->dt, tok, prev);
    es_stopstr_init(&w->ss, w->stop, w->n_stop);
    return w;
}

bool es_stopwatch_feed(es_stopwatch *w, const int32_t *toks, int n) {
    if (!w) return false;
    bool oom = false;
    for (int i = 0; i < n && !w->ss.matched; i++) {
        bool skip = false;
        for (int k = 0; k < w->n_skip; k++) skip |= toks[i] == w->skip[k];
        if (skip) continue;
        es_str_clear(&w->piece);
        if (!es_detok_push(&w->dt, toks[i], &w->piece)) oom = true;
        if (w->piece.len) es_stopstr_feed(&w->ss, w->piece.s, w->piece.len, &w->out, &oom);
        es_str_clear(&w->out);
    }
    (void)oom; /* out of memory only makes the watch miss a match: the front end still cuts the text */
    return w->ss.matched;
}

void es_stopwatch_free(es_stopwatch *w) {
    if (!w) return;
    es_stopstr_free(&w->ss);
    es_str_free(&w->piece);
    es_str_free(&w->out);
    for (int i = 0; i < w->n_stop; i++) free(w->stop[i]);
    free(w);
}

/* ---- JSON ---- */

static char *print_delete(cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

static cJSON *envelope(int kind, const char *id, int64_t created, const char *model, bool chunk) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", kind == ES_OAI_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)created);
    cJSON_AddStringToObject(o, "model", model ? model : "");
    return o;
}

static void add_usage(cJSON *o, const es_oai_usage *u) {
    cJSON *j = cJSON_AddObjectToObject(o, "usage");
    if (!j) return;
    cJSON_AddNumberToObject(j, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(j, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(j, "total_tokens", (double)u->prompt_tokens + u->completion_tokens);
}

static void add_finish(cJSON *c, const char *finish_reason) {
    if (finish_reason) cJSON_AddStringToObject(c, "finish_reason", finish_reason);
    else cJSON_AddNullToObject(c, "finish_reason");
}

/* The envelope plus its one choice ({"index": 0}) in "choices"; NULL (nothing leaked) on failure. */
static cJSON *envelope_choice(int kind, const char *id, int64_t created, const char *model, bool chunk, cJSON **choice) {
    cJSON *o = envelope(kind, id, created, model, chunk);
    cJSON *choices = o ? cJSON_AddArrayToObject(o, "choices") : NULL;
    cJSON *c = cJSON_CreateObject();
    if (!choices || !c) {
        cJSON_Delete(c);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    *choice = c;
    return o;
}

/* A token's bytes as a JSON string: valid UTF-8, U+FFFD for what is not (a token may hold part of a
 * character). NULL when memory runs out. */
static cJSON *token_string(const char *text, size_t len) {
    es_detok d;
    es_detok_init(&d, NULL, -1);
    es_str s = {0};
    cJSON *j = NULL;
    if (es_detok_bytes(&d, text, len, &s) && es_detok_flush(&d, &s)) j = cJSON_CreateString(es_str_cstr(&s));
    es_str_free(&s);
    return j;
}

static cJSON *token_bytes(const char *text, size_t len) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < len; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((unsigned char)text[i]));
    return a;
}

/* Chat: {"token","logprob","bytes"} (+ "top_logprobs" when `top`). */
static cJSON *chat_lp_entry(const char *text, size_t len, float logprob) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddItemToObject(o, "token", token_string(text, len));
    cJSON_AddNumberToObject(o, "logprob", logprob);
    cJSON_AddItemToObject(o, "bytes", token_bytes(text, len));
    return o;
}

/* The "logprobs" value of a choice: chat {"content":[...],"refusal":null}; completions {"tokens",
 * "token_logprobs","top_logprobs","text_offset"}. */
static cJSON *logprobs_json(int kind, const es_oai_logprobs *lp) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (kind == ES_OAI_CHAT) {
        cJSON *content = cJSON_AddArrayToObject(o, "content");
        for (int i = 0; content && i < lp->n; i++) {
            const es_oai_lp_token *t = &lp->tok[i];
            cJSON *e = chat_lp_entry(t->text, t->len, t->logprob);
            cJSON *top = e ? cJSON_AddArrayToObject(e, "top_logprobs") : NULL;
            for (int k = 0; top && k < t->n_top; k++) cJSON_AddItemToArray(top, chat_lp_entry(t->top[k].text, t->top[k].len, t->top[k].logprob));
            cJSON_AddItemToArray(content, e);
        }
        cJSON_AddNullToObject(o, "refusal");
        return o;
    }
    cJSON *tokens = cJSON_AddArrayToObject(o, "tokens");
    cJSON *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = lp->top ? cJSON_AddArrayToObject(o, "top_logprobs") : cJSON_AddNullToObject(o, "top_logprobs");
    cJSON *offs = cJSON_AddArrayToObject(o, "text_offset");
    for (int i = 0; i < lp->n; i++) {
        const es_oai_lp_token *t = &lp->tok[i];
        if (tokens) cJSON_AddItemToArray(tokens, token_string(t->text, t->len));
        if (lps) cJSON_AddItemToArray(lps, cJSON_CreateNumber(t->logprob));
        if (offs) cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)t->offset));
        if (!lp->top || !tops) continue;
        cJSON *d = cJSON_CreateObject();
        for (int k = 0; d && k < t->n_top; k++) {
            cJSON *s = token_string(t->top[k].text, t->top[k].len);
            if (s && cJSON_IsString(s)) cJSON_AddNumberToObject(d, s->valuestring, t->top[k].logprob);
            cJSON_Delete(s);
        }
        cJSON_AddItemToArray(tops, d);
    }
    return o;
}

char *es_oai_response_json_n(int kind, const char *id, int64_t created, const char *model, const es_oai_choice *ch, int n,
                             const es_oai_usage *u) {
    cJSON *o = envelope(kind, id, created, model, false);
    cJSON *choices = o ? cJSON_AddArrayToObject(o, "choices") : NULL;
    if (!choices) {
        cJSON_Delete(o);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        cJSON *c = cJSON_CreateObject();
        if (!c) {
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddItemToArray(choices, c);
        cJSON_AddNumberToObject(c, "index", i);
        const char *text = ch[i].text ? ch[i].text : "";
        if (kind == ES_OAI_CHAT) {
            cJSON *m = cJSON_AddObjectToObject(c, "message");
            if (m) {
                cJSON_AddStringToObject(m, "role", "assistant");
                cJSON *calls = ch[i].tool_calls ? cJSON_Parse(ch[i].tool_calls) : NULL;
                if (calls && !*text) cJSON_AddNullToObject(m, "content");
                else cJSON_AddStringToObject(m, "content", text);
                if (calls) cJSON_AddItemToObject(m, "tool_calls", calls);
            }
            if (ch[i].lp) cJSON_AddItemToObject(c, "logprobs", logprobs_json(kind, ch[i].lp));
        } else {
            cJSON_AddStringToObject(c, "text", text);
            if (ch[i].lp) cJSON_AddItemToObject(c, "logprobs", logprobs_json(kind, ch[i].lp));
            else cJSON_AddNullToObject(c, "logprobs");
        }
        add_finish(c, ch[i].finish_reason);
    }
    if (u) add_usage(o, u);
    return print_delete(o);
}

char *es_oai_response_json(int kind, const char *id, int64_t created, const char *model, const char *text, const char *finish_reason,
                           const es_oai_usage *u) {
    const es_oai_choice c = {text, finish_reason, NULL, NULL};
    return es_oai_response_json_n(kind, id, created, model, &c, 1, u);
}

char *es_oai_chunk_json_ex(int kind, const char *id, int64_t created, const char *model, int index, const char *role,
                           const char *text, const char *finish_reason, const es_oai_logprobs *lp) {
    cJSON *c = NULL;
    cJSON *o = envelope_choice(kind, id, created, model, true, &c);
    if (!o) return NULL;
    cJSON_ReplaceItemInObject(c, "index", cJSON_CreateNumber(index));
    if (kind == ES_OAI_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (d && role) cJSON_AddStringToObject(d, "role", role);
        if (d && text) cJSON_AddStringToObject(d, "content", text);
        if (lp) cJSON_AddItemToObject(c, "logprobs", logprobs_json(kind, lp));
    } else {
        cJSON_AddStringToObject(c, "text", text ? text : "");
        if (lp) cJSON_AddItemToObject(c, "logprobs", logprobs_json(kind, lp));
        else cJSON_AddNullToObject(c, "logprobs");
    }
    add_finish(c, finish_reason);
    return print_delete(o);
}

char *es_oai_chunk_json(int kind, const char *id, int64_t created, const char *model, const char *role, const char *text,
                        const char *finish_reason) {
    return es_oai_chunk_json_ex(kind, id, created, model, 0, role, text, finish_reason, NULL);
}

char *es_oai_tool_calls_chunk_json(const char *id, int64_t created, const char *model, int index, const char *tool_calls) {
    cJSON *c = NULL;
    cJSON *o = envelope_choice(ES_OAI_CHAT, id, created, model, true, &c);
    cJSON *calls = cJSON_Parse(tool_calls);
    cJSON *d = o ? cJSON_AddObjectToObject(c, "delta") : NULL;
    if (!d || !cJSON_IsArray(calls)) {
        cJSON_Delete(calls);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_ReplaceItemInObject(c, "index", cJSON_CreateNumber(index));
    int k = 0;
    for (cJSON *t = calls->child; t; t = t->next) cJSON_AddNumberToObject(t, "index", k++);
    cJSON_AddItemToObject(d, "tool_calls", calls);
    add_finish(c, NULL);
    return print_delete(o);
}

char *es_oai_usage_chunk_json(int kind, const char *id, int64_t created, const char *model, const es_oai_usage *u) {
    cJSON *o = envelope(kind, id, created, model, true);
    if (!o) return NULL;
    cJSON_AddArrayToObject(o, "choices");
    add_usage(o, u);
    return print_delete(o);
}

char *es_oai_error_json(const es_oai_error *e) {
    cJSON *o = cJSON_CreateObject();
    cJSON *j = o ? cJSON_AddObjectToObject(o, "error") : NULL;
    if (!j) {
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddStringToObject(j, "message", e->message);
    cJSON_AddStringToObject(j, "type", e->type ? e->type : "server_error");
    if (e->param[0]) cJSON_AddStringToObject(j, "param", e->param);
    else cJSON_AddNullToObject(j, "param");
    if (e->code) cJSON_AddStringToObject(j, "code", e->code);
    else cJSON_AddNullToObject(j, "code");
    return print_delete(o);
}

char *es_oai_models_json(const char *model, int64_t created, const char *owned_by) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    if (!data || !m) {
        cJSON_Delete(m);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToArray(data, m);
    cJSON_AddStringToObject(m, "id", model);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", owned_by ? owned_by : "edgespec");
    return print_delete(o);
}
