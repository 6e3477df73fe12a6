/* chat.c — chat template families (see chat.h). */
#include "http/chat.h"

#include <string.h>

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
