/* chat.c — chat template families (see chat.h). */
#include "server/chat.h"

#include <string.h>

static const char *const k_names[ES_CHAT_FAMILY_COUNT] = {"fallback", "chatml", "llama2", "llama3", "zephyr"};

es_chat_family es_chat_detect(const char *t) {
    if (!t || !*t) return ES_CHAT_FALLBACK;
    /* the most specific markers first: Llama-3 and ChatML templates may mention [INST] in comments */
    if (strstr(t, "<|start_header_id|>")) return ES_CHAT_LLAMA3;
    if (strstr(t, "<|im_start|>")) return ES_CHAT_CHATML;
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
    case ES_CHAT_CHATML: return "<|im_end|>";
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
