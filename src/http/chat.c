/* chat.c — chat template families (see chat.h). */
#include "http/chat.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "util/err.h"

static const char *const k_names[ES_CHAT_FAMILY_COUNT] = {"fallback", "chatml", "llama2", "llama3", "zephyr", "qwen2"};

/* Qwen2 / Qwen2.5 templates open every conversation that has no system message with this one. */
static const char k_qwen_system[] = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

es_chat_family es_chat_detect(const char *t) {
    if (!t || !*t) return ES_CHAT_FALLBACK;
    /* the most specific markers first: Llama-3 and ChatML templates may mention [INST] in comments */
    if (strstr(t, "<|start_header_id|>")) return ES_CHAT_LLAMA3;
    if (strstr(t, "<|im_start|>")) return strstr(t, k_qwen_system) ? ES_CHAT_QWEN2 : ES_CHAT_CHATML;
    if (strstr(t, "[INST]")) return ES_CHAT_LLAMA2;
    if (strstr(t, "<|user|>")) return ES_CHAT_ZEPHYR;
    return ES_CHAT_FALLBACK;
}

const char *es_chat_family_name(es_chat_family f) {
    return f >= 0 && f < ES_CHAT_FAMILY_COUNT ? k_names[f] : "fallback";
}

int es_chat_family_parse(const char *name) {
    for (int i = 0; i < ES_CHAT_FAMILY_COUNT; i++)
        if (name && !strcmp(name, k_names[i])) return i;
    return -1;
}

const char *es_chat_end_of_turn(es_chat_family f) {
    switch (f) {
    case ES_CHAT_CHATML: case ES_CHAT_QWEN2: return "<|im_end|>";
    case ES_CHAT_LLAMA3: return "<|eot_id|>";
    default: return NULL;
    }
}

static bool render_llama2(const es_oai_message *m, int n, es_str *o) {
    bool ok = true, open = false; /* open: an [INST] block has begun and awaits [/INST] */
    const char *sys = NULL;
    for (int i = 0; i < n && ok; i++) {
        const char *r = m[i].role;
        if (!strcmp(r, "system")) {
            sys = m[i].content; /* folded into the next user turn */
        } else if (!strcmp(r, "assistant")) {
            if (open) ok = es_str_puts(o, " [/INST]");
            open = false;
            ok = ok && es_str_printf(o, " %s </s><s>", m[i].content);
        } else { /* user, tool */
            if (!open) ok = es_str_puts(o, "[INST] ");
            else ok = es_str_puts(o, "\n\n");
            if (ok && sys) ok = es_str_printf(o, "<<SYS>>\n%s\n<</SYS>>\n\n", sys);
            sys = NULL;
            ok = ok && es_str_puts(o, m[i].content);
            open = true;
        }
    }
    if (ok && sys) { /* a system message with no user turn after it */
        ok = es_str_printf(o, "[INST] <<SYS>>\n%s\n<</SYS>>\n\n", sys);
        open = true;
    }
    if (ok && open) ok = es_str_puts(o, " [/INST]");
    return ok;
}

/* Qwen2's template without tools (the assistant messages carry no tool_calls here). */
static bool render_qwen2(const es_oai_message *m, int n, es_str *o) {
    bool ok = true;
    if (n == 0 || strcmp(m[0].role, "system")) ok = es_str_printf(o, "<|im_start|>system\n%s<|im_end|>\n", k_qwen_system);
    for (int i = 0; i < n && ok; i++) {
        if (!strcmp(m[i].role, "tool")) {
            const bool first = i == 0 || strcmp(m[i - 1].role, "tool"), last = i == n - 1 || strcmp(m[i + 1].role, "tool");
            if (first) ok = es_str_puts(o, "<|im_start|>user");
            ok = ok && es_str_printf(o, "\n<tool_response>\n%s\n</tool_response>", m[i].content);
            if (ok && last) ok = es_str_puts(o, "<|im_end|>\n");
        } else if (!strcmp(m[i].role, "user") || !strcmp(m[i].role, "system") || !strcmp(m[i].role, "assistant")) {
            ok = es_str_printf(o, "<|im_start|>%s\n%s<|im_end|>\n", m[i].role, m[i].content);
        } /* the template writes no other role */
    }
    return ok && es_str_puts(o, "<|im_start|>assistant\n");
}

bool es_chat_render(es_chat_family f, const es_oai_message *m, int n, es_str *o) {
    bool ok = true;
    switch (f) {
    case ES_CHAT_CHATML:
        for (int i = 0; i < n && ok; i++) ok = es_str_printf(o, "<|im_start|>%s\n%s<|im_end|>\n", m[i].role, m[i].content);
        return ok && es_str_puts(o, "<|im_start|>assistant\n");
    case ES_CHAT_LLAMA3:
        for (int i = 0; i < n && ok; i++)
            ok = es_str_printf(o, "<|start_header_id|>%s<|end_header_id|>\n\n%s<|eot_id|>", m[i].role, m[i].content);
        return ok && es_str_puts(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    case ES_CHAT_LLAMA2:
        return render_llama2(m, n, o);
    case ES_CHAT_QWEN2:
        return render_qwen2(m, n, o);
    case ES_CHAT_ZEPHYR:
        for (int i = 0; i < n && ok; i++) {
            const char *r = !strcmp(m[i].role, "tool") ? "user" : m[i].role;
            ok = es_str_printf(o, "<|%s|>\n%s</s>\n", r, m[i].content);
        }
        return ok && es_str_puts(o, "<|assistant|>\n");
    default:
        for (int i = 0; i < n && ok; i++) ok = es_str_printf(o, "%s: %s\n", m[i].role, m[i].content);
        return ok && es_str_puts(o, "assistant:");
    }
}

/* ---- the model's Jinja template ---- */

const char *es_chat_jinja_end_of_turn(const char *src) {
    static const char *const marks[] = {"<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"};
    for (size_t i = 0; src && i < sizeof marks / sizeof *marks; i++)
        if (strstr(src, marks[i])) return marks[i];
    return NULL;
}

bool es_chat_jinja_takes_tools(const char *src) {
    /* a word match: "tools" as a name, not inside another identifier */
    for (const char *p = src; p && (p = strstr(p, "tools")); p += 5) {
        const bool before = p > src && (isalnum((unsigned char)p[-1]) || p[-1] == '_');
        const bool after = isalnum((unsigned char)p[5]) || p[5] == '_';
        if (!before && !after) return true;
    }
    return false;
}

/* A tool call from a client, as templates expect it: function.arguments an object when it is JSON text
 * of one (OpenAI sends a string; transformers' templates and the models' training use the object). */
static cJSON *template_calls(const char *json) {
    cJSON *calls = cJSON_Parse(json);
    for (cJSON *c = calls ? calls->child : NULL; c; c = c->next) {
        cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(f, "arguments");
        if (!cJSON_IsString(a)) continue;
        cJSON *obj = cJSON_Parse(a->valuestring);
        if (cJSON_IsObject(obj)) cJSON_ReplaceItemInObjectCaseSensitive(f, "arguments", obj);
        else cJSON_Delete(obj);
    }
    return calls;
}

es_status es_chat_render_jinja(const es_jinja *t, const es_oai_message *m, int n, const char *tools_json, const char *bos,
                               const char *eos, int64_t now, es_str *out, es_err *err) {
    cJSON *vars = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(vars, "messages");
    bool ok = msgs != NULL;
    for (int i = 0; ok && i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(msgs, o) && cJSON_AddStringToObject(o, "role", m[i].role);
        if (ok) ok = m[i].null_content && !m[i].content[0] ? cJSON_AddNullToObject(o, "content") != NULL
                                                           : cJSON_AddStringToObject(o, "content", m[i].content) != NULL;
        if (ok && m[i].tool_calls) {
            cJSON *c = template_calls(m[i].tool_calls);
            ok = c && cJSON_AddItemToObject(o, "tool_calls", c);
        }
        if (ok && m[i].tool_call_id) ok = cJSON_AddStringToObject(o, "tool_call_id", m[i].tool_call_id) != NULL;
        if (ok && m[i].name) ok = cJSON_AddStringToObject(o, "name", m[i].name) != NULL;
    }
    if (ok && tools_json) {
        cJSON *tools = cJSON_Parse(tools_json);
        ok = tools && cJSON_AddItemToObject(vars, "tools", tools);
    }
    ok = ok && cJSON_AddBoolToObject(vars, "add_generation_prompt", true) && cJSON_AddStringToObject(vars, "bos_token", bos ? bos : "") &&
         cJSON_AddStringToObject(vars, "eos_token", eos ? eos : "");
    es_status st;
    if (!ok) st = es_fail(err, ES_ERR_NOMEM, "out of memory");
    else {
        const es_jinja_params p = {.vars = vars, .now = now};
        st = es_jinja_render(t, &p, out, err);
    }
    cJSON_Delete(vars);
    return st;
}

/* ---- tool calls in a reply ---- */

static const char k_call_open[] = "<tool_call>", k_call_close[] = "</tool_call>";
/* Where a reply's calls may begin: Qwen2.5 / Hermes blocks, Mistral's [TOOL_CALLS] before a JSON
 * array of calls, Llama 3.1's <|python_tag|> before a call's JSON (several separated by ';'). */
static const char *const k_openers[] = {k_call_open, "[TOOL_CALLS]", "<|python_tag|>"};
#define N_OPENERS (sizeof k_openers / sizeof k_openers[0])

/* The first opener at s[i] (*which), whole (true) or cut by the end of the text (false); -1: none. */
static int opener_at(const char *s, size_t n, size_t i, int *which) {
    for (size_t o = 0; o < N_OPENERS; o++) {
        const size_t ol = strlen(k_openers[o]), k = n - i < ol ? n - i : ol;
        if (k > 0 && !memcmp(s + i, k_openers[o], k)) {
            *which = (int)o;
            return k == ol;
        }
    }
    return -1;
}

size_t es_chat_tool_content_len(const char *s, size_t n, bool start, bool *call) {
    *call = false;
    if (start) {
        size_t i = 0;
        while (i < n && isspace((unsigned char)s[i])) i++;
        if (i == n) return 0;
        if (s[i] == '{' || s[i] == '`' || (s[i] == '[' && (n - i < 2 || s[i + 1] != 'T'))) { /* may be a bare call (or array) */
            *call = true;
            return 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        int which;
        const int r = opener_at(s, n, i, &which);
        if (r >= 0) { /* a whole opener, or the start of one at the end */
            *call = r == 1;
            return i;
        }
    }
    return n;
}

static bool is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i])) return false;
    return true;
}

/* s[0..n) as one JSON value and nothing else but white space; NULL otherwise. */
static cJSON *json_exact(const char *s, size_t n) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, false);
    if (j && end && !is_blank(end, n - (size_t)(end - s))) {
        cJSON_Delete(j);
        j = NULL;
    }
    return j;
}

/* Appends {"id","type":"function","function":{"name","arguments": JSON text}} for a parsed call body
 * ({"name": ..., "arguments" (or "parameters"): object or JSON text}); false when it is not one. */
static bool add_call(cJSON *calls, const cJSON *body, const char *id_prefix, int k) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(body, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(body, "arguments");
    if (!args) args = cJSON_GetObjectItemCaseSensitive(body, "parameters");
    if (!cJSON_IsObject(body) || !cJSON_IsString(name) || !name->valuestring[0] || (args && !cJSON_IsObject(args) && !cJSON_IsString(args)))
        return false;
    char id[96];
    snprintf(id, sizeof id, "call_%.64s_%d", id_prefix ? id_prefix : "", k);
    char *atext = !args ? strdup("{}") : cJSON_IsString(args) ? strdup(args->valuestring) : cJSON_PrintUnformatted(args);
    cJSON *c = cJSON_CreateObject(), *f = NULL;
    const bool ok = atext && c && cJSON_AddStringToObject(c, "id", id) && cJSON_AddStringToObject(c, "type", "function") &&
                    (f = cJSON_AddObjectToObject(c, "function")) && cJSON_AddStringToObject(f, "name", name->valuestring) &&
                    cJSON_AddStringToObject(f, "arguments", atext) && cJSON_AddItemToArray(calls, c);
    if (!ok) cJSON_Delete(c);
    free(atext);
    return ok;
}

/* The whole reply as one bare call: a JSON object (optionally in a ```json fence) naming a tool of
 * the request. */
static bool bare_call(const char *s, size_t n, const char *tools_json, const char *id_prefix, cJSON *calls) {
    size_t b = 0, e = n;
    while (b < e && isspace((unsigned char)s[b])) b++;
    while (e > b && isspace((unsigned char)s[e - 1])) e--;
    if (e - b >= 6 && !memcmp(s + b, "```", 3) && !memcmp(s + e - 3, "```", 3)) {
        b += 3;
        e -= 3;
        while (b < e && s[b] != '\n' && !isspace((unsigned char)s[b])) b++; /* the fence's language tag */
    }
    cJSON *body = json_exact(s + b, e - b);
    cJSON *tools = cJSON_Parse(tools_json ? tools_json : "[]");
    /* one call, or (Mistral's and Llama's bare form) an array of them; each names a tool of the
       request and has its arguments ("parameters" in Llama 3.1's form) */
    bool ok = cJSON_IsObject(body) || (cJSON_IsArray(body) && cJSON_GetArraySize(body) > 0);
    int k = 0;
    for (const cJSON *c = cJSON_IsArray(body) ? body->child : body; ok && c; c = cJSON_IsArray(body) ? c->next : NULL) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        bool known = false;
        for (const cJSON *t = tools && cJSON_IsString(name) ? tools->child : NULL; t && !known; t = t->next) {
            const cJSON *tn = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(t, "function"), "name");
            known = cJSON_IsString(tn) && !strcmp(tn->valuestring, name->valuestring);
        }
        ok = known && (cJSON_GetObjectItemCaseSensitive(c, "arguments") || cJSON_GetObjectItemCaseSensitive(c, "parameters")) &&
             add_call(calls, c, id_prefix, k++);
    }
    cJSON_Delete(tools);
    cJSON_Delete(body);
    return ok;
}

/* After a [TOOL_CALLS] or <|python_tag|> opener: JSON values to the end, separated by white space or
 * ';', each a call object or an array of them. */
static bool json_calls(const char *s, size_t n, const char *id_prefix, cJSON *calls, int *k) {
    size_t i = 0;
    bool any = false;
    for (;;) {
        while (i < n && (isspace((unsigned char)s[i]) || s[i] == ';')) i++;
        if (i == n) return any;
        const char *end = NULL;
        cJSON *v = cJSON_ParseWithLengthOpts(s + i, n - i, &end, false);
        bool ok = v && end && (cJSON_IsObject(v) || (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0));
        for (const cJSON *c = cJSON_IsArray(v) ? v->child : v; ok && c; c = cJSON_IsArray(v) ? c->next : NULL)
            ok = add_call(calls, c, id_prefix, (*k)++);
        cJSON_Delete(v);
        if (!ok) return false;
        any = true;
        i = (size_t)(end - s);
    }
}

bool es_chat_parse_tool_calls(const char *s, size_t n, const char *tools_json, const char *id_prefix, size_t *content_len, char **out) {
    bool call;
    size_t i = es_chat_tool_content_len(s, n, false, &call);
    cJSON *calls = cJSON_CreateArray();
    if (!calls) return false;
    bool ok = true;
    int k = 0;
    if (!call) { /* no <tool_call>: perhaps the whole reply is one bare call */
        ok = bare_call(s, n, tools_json, id_prefix, calls);
        k = ok;
        *content_len = 0;
        i = n;
    } else {
        *content_len = i;
        while (*content_len > 0 && isspace((unsigned char)s[*content_len - 1])) (*content_len)--;
    }
    int which = 0;
    if (ok && call && opener_at(s, n, i, &which) == 1 && which > 0) { /* [TOOL_CALLS] / <|python_tag|>: JSON to the end */
        ok = json_calls(s + i + strlen(k_openers[which]), n - i - strlen(k_openers[which]), id_prefix, calls, &k);
        i = n;
    }
    while (ok && i < n) {
        const size_t ol = sizeof k_call_open - 1, cl = sizeof k_call_close - 1;
        if (n - i < ol || memcmp(s + i, k_call_open, ol)) { /* between and after calls: white space only */
            ok = is_blank(s + i, n - i);
            break;
        }
        i += ol;
        size_t e = i;
        while (e < n && (n - e < cl || memcmp(s + e, k_call_close, cl))) e++;
        /* the body (a missing closer at the very end is forgiven: generation may stop on the
           end-of-turn token right after the JSON) */
        cJSON *body = json_exact(s + i, e - i);
        ok = add_call(calls, body, id_prefix, k++);
        cJSON_Delete(body);
        i = e < n ? e + cl : n;
        while (ok && i < n && isspace((unsigned char)s[i])) i++;
    }
    char *text = ok && k > 0 ? cJSON_PrintUnformatted(calls) : NULL;
    cJSON_Delete(calls);
    if (!text) return false;
    *out = text;
    return true;
}
