/* test_oai.c — the pure parts of the OpenAI API: request parsing and validation (every 400 the API
 * promises), stop strings on streamed text, incremental UTF-8 repair, chat templates and the
 * Prometheus text of /metrics. No model, no sockets. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/chat.h"
#include "http/metrics.h"
#include "http/oai.h"
#include "testutil.h"
#include "tokenizer/detok.h"

/* Parses body as kind; expects failure with status 400 and `param` (NULL: any) named. */
static void expect_400(int kind, const char *body, const char *param, const char *needle) {
    es_oai_request r;
    es_oai_error e;
    memset(&e, 0, sizeof e);
    const bool ok = es_oai_parse_request(kind, body, strlen(body), &r, &e);
    CHECK_MSG(!ok, "accepted: %s", body);
    if (ok) {
        es_oai_request_free(&r);
        return;
    }
    CHECK_MSG(e.status == 400, "status %d for %s", e.status, body);
    CHECK_MSG(e.type && !strcmp(e.type, "invalid_request_error"), "type %s for %s", e.type, body);
    if (param) CHECK_MSG(!strcmp(e.param, param), "param '%s' (want %s) for %s", e.param, param, body);
    if (needle) CHECK_MSG(strstr(e.message, needle) != NULL, "message '%s' lacks '%s'", e.message, needle);
}

static bool parse_ok(int kind, const char *body, es_oai_request *r) {
    es_oai_error e;
    memset(&e, 0, sizeof e);
    const bool ok = es_oai_parse_request(kind, body, strlen(body), r, &e);
    CHECK_MSG(ok, "refused (%d %s): %s", e.status, e.message, body);
    return ok;
}

static void test_parse(void) {
    es_oai_request r;
    /* defaults */
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"Once upon\"}", &r)) {
        CHECK(r.prompt && !strcmp(r.prompt, "Once upon"));
        CHECK(r.max_tokens == 0 && r.temperature == 1.0 && r.top_p == 1.0 && !r.stream && !r.has_seed && r.n_stop == 0);
        CHECK(r.model == NULL);
        es_oai_request_free(&r);
    }
    /* every supported field */
    const char *full = "{\"model\":\"m\",\"prompt\":[\"hi\"],\"max_tokens\":7,\"temperature\":0,\"top_p\":0.5,\"top_k\":3,"
                       "\"min_p\":0.1,\"seed\":-5,\"stop\":[\"a\",\"bc\"],\"n\":1,\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true},\"presence_penalty\":0,\"user\":\"u\",\"logprobs\":null,"
                       "\"echo\":false,\"suffix\":\"\",\"best_of\":1}";
    if (parse_ok(ES_OAI_COMPLETION, full, &r)) {
        CHECK(!strcmp(r.model, "m") && !strcmp(r.prompt, "hi") && r.max_tokens == 7 && r.temperature == 0);
        CHECK(fabs(r.top_p - 0.5) < 1e-12 && r.top_k == 3 && fabs(r.min_p - 0.1) < 1e-12);
        CHECK(r.has_seed && r.seed == (uint64_t)(int64_t)-5);
        CHECK(r.n_stop == 2 && !strcmp(r.stop[0], "a") && !strcmp(r.stop[1], "bc"));
        CHECK(r.stream && r.include_usage);
        es_oai_request_free(&r);
    }
    /* token-id prompts */
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":[1, 403, 9]}", &r)) {
        CHECK(!r.prompt && r.n_prompt_ids == 3 && r.prompt_ids[1] == 403);
        es_oai_request_free(&r);
    }
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":[[1,2]], \"stop\":\"x\"}", &r)) {
        CHECK(r.n_prompt_ids == 2 && r.n_stop == 1 && !strcmp(r.stop[0], "x"));
        es_oai_request_free(&r);
    }
    /* chat: roles, content parts, null content, max_completion_tokens */
    const char *chat = "{\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
                       "{\"role\":\"assistant\",\"content\":null}],\"max_completion_tokens\":5}";
    if (parse_ok(ES_OAI_CHAT, chat, &r)) {
        CHECK(r.n_messages == 3);
        CHECK(!strcmp(r.messages[0].role, "system") && !strcmp(r.messages[0].content, "be brief"));
        CHECK(!strcmp(r.messages[1].content, "ab"));
        CHECK(!strcmp(r.messages[2].role, "assistant") && !strcmp(r.messages[2].content, ""));
        CHECK(r.max_tokens == 5);
        es_oai_request_free(&r);
    }
    /* trailing white space is fine */
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\"}\r\n  ", &r)) es_oai_request_free(&r);

    /* ---- 400s ---- */
    expect_400(ES_OAI_COMPLETION, "", NULL, "empty");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":", NULL, "not valid JSON");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\"} trailing", NULL, "not valid JSON");
    expect_400(ES_OAI_COMPLETION, "[1,2]", NULL, "JSON object");
    expect_400(ES_OAI_COMPLETION, "{}", "prompt", "required");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":5}", "prompt", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":[]}", "prompt", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt", "one prompt");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":[1,-2]}", "prompt", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":[1,2.5]}", "prompt", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":-1}", "max_tokens", "at least 1");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":0}", "max_tokens", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":\"5\"}", "max_tokens", "integer");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":2.5}", "max_tokens", "integer");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"temperature\":-0.1}", "temperature", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"temperature\":2.5}", "temperature", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"temperature\":\"hot\"}", "temperature", "number");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"top_p\":0}", "top_p", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"top_p\":1.01}", "top_p", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"top_k\":-2}", "top_k", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"n\":17}", "n", "1..16");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"n\":0}", "n", "1..16");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"n\":\"1\"}", "n", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"seed\":1.5}", "seed", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"stream\":1}", "stream", "boolean");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":\"yes\"}}", "stream_options.include_usage", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"stop\":3}", "stop", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop", "at most 4");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"\"]}", "stop", "empty");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"a\",7]}", "stop", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"model\":7}", "model", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"echo\":true}", "echo", "not supported");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":21}", "logprobs", "0..20");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":-1}", "logprobs", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":\"3\"}", "logprobs", "integer");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"top_logprobs\":3}", "top_logprobs", "chat field");
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":3}", "logprobs", "boolean");
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", "top_logprobs", "logprobs");
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":21}",
               "top_logprobs", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"best_of\":2}", "best_of", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\"end\"}", "suffix", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"frequency_penalty\":2.5}", "frequency_penalty", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"presence_penalty\":3}", "presence_penalty", NULL);
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}", "tools", NULL);
    expect_400(ES_OAI_CHAT, "{}", "messages", "required");
    expect_400(ES_OAI_CHAT, "{\"messages\":{}}", "messages", NULL);
    expect_400(ES_OAI_CHAT, "{\"messages\":[]}", "messages", NULL);
    expect_400(ES_OAI_CHAT, "{\"messages\":[3]}", "messages[0]", NULL);
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role", NULL);
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", "messages[0].role", "wizard");
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content", NULL);
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "messages[0].content", "image_url");
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
               "messages[1].content", NULL);
    /* a chat body on the completions endpoint lacks a prompt, and the reverse */
    expect_400(ES_OAI_COMPLETION, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "prompt", NULL);

    /* context: both numbers in the message */
    es_oai_error e;
    CHECK(es_oai_check_context(10, 20, 30, &e));
    CHECK(!es_oai_check_context(10, 21, 30, &e));
    CHECK(e.status == 400 && e.code && !strcmp(e.code, "context_length_exceeded"));
    CHECK(strstr(e.message, "10 in the prompt") && strstr(e.message, "21 for the completion") && strstr(e.message, "30 tokens"));
}

/* Feeds text in the given pieces through a stop-string matcher; returns what came out. */
static char *run_stops(char *const *stops, int n_stops, const char *const *pieces, int n, bool *matched) {
    es_stopstr s;
    es_stopstr_init(&s, stops, n_stops);
    es_str out = {0};
    *matched = false;
    for (int i = 0; i < n && !*matched; i++) *matched = es_stopstr_feed(&s, pieces[i], strlen(pieces[i]), &out, NULL);
    es_stopstr_flush(&s, &out);
    es_stopstr_free(&s);
    char *r = strdup(es_str_cstr(&out));
    es_str_free(&out);
    return r;
}

static void test_stopstr(void) {
    char a[] = "END", b[] = "\n\n", c[] = "xyz";
    char *stops[] = {a, b, c};
    bool m;
    const char *p1[] = {"hello ", "wor", "ld"};
    char *r = run_stops(stops, 3, p1, 3, &m);
    CHECK(!m && !strcmp(r, "hello world"));
    free(r);
    /* a stop string split over pieces, text before it kept, after it dropped */
    const char *p2[] = {"one E", "N", "D two"};
    r = run_stops(stops, 3, p2, 3, &m);
    CHECK(m && !strcmp(r, "one "));
    free(r);
    /* a partial match that turns out not to be one is released */
    const char *p3[] = {"EN", "X", "\n", "!"};
    r = run_stops(stops, 3, p3, 4, &m);
    CHECK(!m && !strcmp(r, "ENX\n!"));
    free(r);
    /* the earliest of several matches wins */
    const char *p4[] = {"a\n\nbEND"};
    r = run_stops(stops, 3, p4, 1, &m);
    CHECK(m && !strcmp(r, "a"));
    free(r);
    /* held-back text of an unfinished match is flushed at the end */
    const char *p5[] = {"tail xy"};
    r = run_stops(stops, 3, p5, 1, &m);
    CHECK(!m && !strcmp(r, "tail xy"));
    free(r);
    /* streaming: a piece that might start a stop string is not released yet */
    es_stopstr s;
    es_stopstr_init(&s, stops, 3);
    es_str out = {0};
    CHECK(!es_stopstr_feed(&s, "abc E", 5, &out, NULL));
    CHECK(!strcmp(es_str_cstr(&out), "abc "));
    CHECK(es_stopstr_feed(&s, "ND", 2, &out, NULL));
    CHECK(!strcmp(es_str_cstr(&out), "abc "));
    es_stopstr_free(&s);
    es_str_free(&out);
    /* a longer stop string that begins earlier wins over a shorter one inside it, once it completes */
    char l1[] = "abcd", l2[] = "c";
    char *ls[] = {l1, l2};
    const char *q1[] = {"xab", "c", "d tail"};
    r = run_stops(ls, 2, q1, 3, &m);
    CHECK(m && !strcmp(r, "x"));
    free(r);
    const char *q2[] = {"xab", "c", "e"};
    r = run_stops(ls, 2, q2, 3, &m);
    CHECK(m && !strcmp(r, "xab"));
    free(r);
    /* still pending at the end of the text: the shorter match stands */
    const char *q3[] = {"xab", "c"};
    es_stopstr_init(&s, ls, 2);
    CHECK(!es_stopstr_feed(&s, q3[0], 3, &out, NULL) && !es_stopstr_feed(&s, q3[1], 1, &out, NULL));
    CHECK(!strcmp(es_str_cstr(&out), "x") && !s.matched);
    CHECK(es_stopstr_flush(&s, &out) && s.matched && !strcmp(es_str_cstr(&out), "xab"));
    es_stopstr_free(&s);
    es_str_free(&out);
}

static void test_detok(void) {
    es_detok d;
    es_detok_init(&d, NULL, -1);
    es_str out = {0};
    /* "é" (C3 A9) and "€" (E2 82 AC) split over pushes: nothing until complete */
    CHECK(es_detok_bytes(&d, "a\xC3", 2, &out));
    CHECK(!strcmp(es_str_cstr(&out), "a"));
    CHECK(es_detok_bytes(&d, "\xA9", 1, &out));
    CHECK(!strcmp(es_str_cstr(&out), "a\xC3\xA9"));
    CHECK(es_detok_bytes(&d, "\xE2", 1, &out) && es_detok_bytes(&d, "\x82", 1, &out));
    CHECK(out.len == 3);
    CHECK(es_detok_bytes(&d, "\xAC!", 2, &out));
    CHECK(!strcmp(es_str_cstr(&out), "a\xC3\xA9\xE2\x82\xAC!"));
    es_str_clear(&out);
    /* invalid bytes become U+FFFD; the byte after a broken lead is read again */
    CHECK(es_detok_bytes(&d, "\x80x\xC0\xAFy\xE2(", 7, &out));
    CHECK(!strcmp(es_str_cstr(&out), "\xEF\xBF\xBDx\xEF\xBF\xBD\xEF\xBF\xBDy\xEF\xBF\xBD("));
    es_str_clear(&out);
    CHECK(es_detok_bytes(&d, "\xF0\x9F", 2, &out) && out.len == 0);
    CHECK(es_detok_bytes(&d, "A", 1, &out)); /* cut short */
    CHECK(!strcmp(es_str_cstr(&out), "\xEF\xBF\xBD" "A"));
    es_str_clear(&out);
    CHECK(es_detok_bytes(&d, "\xF0\x9F\x98", 3, &out) && out.len == 0);
    CHECK(es_detok_flush(&d, &out) && !strcmp(es_str_cstr(&out), "\xEF\xBF\xBD"));
    es_str_clear(&out);
    /* surrogates and overlongs are invalid */
    CHECK(es_detok_bytes(&d, "\xED\xA0\x80", 3, &out) && es_utf8_valid(out.s, out.len) && strstr(out.s, "\xEF\xBF\xBD"));
    CHECK(!es_utf8_valid("\xED\xA0\x80", 3) && !es_utf8_valid("\xC0\x80", 2) && !es_utf8_valid("\xF4\x90\x80\x80", 4));
    CHECK(es_utf8_valid("\xF0\x9F\x98\x80 ok", 7));
    /* a byte-by-byte stream of mixed text reassembles exactly */
    es_str_clear(&out);
    es_detok_init(&d, NULL, -1);
    const char *text = "na\xC3\xAFve \xE2\x82\xAC 5 \xF0\x9F\x98\x80!";
    for (size_t i = 0; i < strlen(text); i++) CHECK(es_detok_bytes(&d, text + i, 1, &out));
    CHECK(!strcmp(es_str_cstr(&out), text));
    es_str_free(&out);
}

static char *render(es_chat_family f, const es_oai_message *m, int n) {
    es_str o = {0};
    CHECK(es_chat_render(f, m, n, &o));
    char *r = strdup(es_str_cstr(&o));
    es_str_free(&o);
    return r;
}

static void test_chat(void) {
    /* detection from real-world template strings (abridged) */
    const char *qwen = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
    const char *llama3 = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}";
    const char *llama2 = "{% if messages[0]['role'] == 'system' %}{{ bos_token + '[INST] <<SYS>>\\n' }}{% endif %}";
    const char *zephyr = "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + eos_token }}";
    CHECK(es_chat_detect(qwen) == ES_CHAT_CHATML);
    const char *qwen25 = "{%- else %}\n        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                         "assistant.<|im_end|>\\n' }}\n    {%- endif %}";
    CHECK(es_chat_detect(qwen25) == ES_CHAT_QWEN2);
    CHECK(!strcmp(es_chat_end_of_turn(ES_CHAT_QWEN2), "<|im_end|>"));
    CHECK(es_chat_detect(llama3) == ES_CHAT_LLAMA3);
    CHECK(es_chat_detect(llama2) == ES_CHAT_LLAMA2);
    CHECK(es_chat_detect(zephyr) == ES_CHAT_ZEPHYR);
    CHECK(es_chat_detect(NULL) == ES_CHAT_FALLBACK);
    CHECK(es_chat_detect("") == ES_CHAT_FALLBACK);
    CHECK(es_chat_detect("{{ messages }}") == ES_CHAT_FALLBACK);
    for (int f = 0; f < ES_CHAT_FAMILY_COUNT; f++) CHECK(es_chat_family_parse(es_chat_family_name((es_chat_family)f)) == f);
    CHECK(es_chat_family_parse("jinja") == -1);
    CHECK(!strcmp(es_chat_end_of_turn(ES_CHAT_CHATML), "<|im_end|>"));
    CHECK(!strcmp(es_chat_end_of_turn(ES_CHAT_LLAMA3), "<|eot_id|>"));
    CHECK(es_chat_end_of_turn(ES_CHAT_FALLBACK) == NULL);

    char sys[] = "system", user[] = "user", asst[] = "assistant", s1[] = "Be brief.", u1[] = "Hi", a1[] = "Hello!", u2[] = "Bye";
    es_oai_message m[] = {{.role = sys, .content = s1}, {.role = user, .content = u1}, {.role = asst, .content = a1}, {.role = user, .content = u2}};
    char *r = render(ES_CHAT_CHATML, m, 4);
    CHECK(!strcmp(r, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                     "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"));
    free(r);
    /* qwen2: the same with a system message first; without one, Qwen's default opens the prompt */
    r = render(ES_CHAT_QWEN2, m, 4);
    CHECK(!strcmp(r, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                     "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"));
    free(r);
    r = render(ES_CHAT_QWEN2, m + 1, 1);
    CHECK(!strcmp(r, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    free(r);
    /* a run of tool messages is one user turn; a system message later on is an ordinary turn */
    char tool[] = "tool", t1[] = "42", t2[] = "{\"ok\": true}";
    es_oai_message mt[] = {{.role = user, .content = u1}, {.role = tool, .content = t1}, {.role = tool, .content = t2}, {.role = sys, .content = s1}, {.role = tool, .content = t1}};
    r = render(ES_CHAT_QWEN2, mt, 5);
    CHECK_MSG(!strcmp(r, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                         "<|im_start|>user\nHi<|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response>\n<tool_response>\n"
                         "{\"ok\": true}\n</tool_response><|im_end|>\n<|im_start|>system\nBe brief.<|im_end|>\n"
                         "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n"),
              "qwen2 tools: %s", r);
    free(r);
    r = render(ES_CHAT_LLAMA3, m + 1, 1);
    CHECK(!strcmp(r, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"));
    free(r);
    r = render(ES_CHAT_LLAMA2, m, 4);
    CHECK_MSG(!strcmp(r, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]"), "llama2: %s", r);
    free(r);
    r = render(ES_CHAT_ZEPHYR, m, 2);
    CHECK(!strcmp(r, "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"));
    free(r);
    r = render(ES_CHAT_FALLBACK, m, 3);
    CHECK(!strcmp(r, "system: Be brief.\nuser: Hi\nassistant: Hello!\nassistant:"));
    free(r);
}

/* Checks Prometheus text exposition rules line by line: every sample belongs to the family of the
 * last # TYPE, every family has HELP and TYPE before its samples, values parse as numbers. */
static int check_prometheus(const char *text, int *n_samples) {
    int bad = 0;
    char family[128] = "";
    bool help = false;
    *n_samples = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl) return bad + 1; /* every line ends with \n */
        char line[512];
        size_t len = (size_t)(nl - p);
        if (len >= sizeof line) return bad + 1;
        memcpy(line, p, len);
        line[len] = 0;
        p = nl + 1;
        char name[128], type[32];
        if (sscanf(line, "# HELP %127s", name) == 1) {
            snprintf(family, sizeof family, "%s", name);
            help = true;
            continue;
        }
        if (sscanf(line, "# TYPE %127s %31s", name, type) == 2) {
            if (strcmp(name, family) != 0 || !help) bad++;
            if (strcmp(type, "counter") && strcmp(type, "gauge") && strcmp(type, "histogram")) bad++;
            continue;
        }
        const char *sp = strrchr(line, ' ');
        if (!sp || strncmp(line, family, strlen(family)) != 0) {
            bad++;
            continue;
        }
        char *end;
        const char *v = sp + 1;
        if (strcmp(v, "+Inf") && strcmp(v, "-Inf") && strcmp(v, "NaN")) {
            strtod(v, &end);
            if (*end) bad++;
        }
        (*n_samples)++;
    }
    return bad;
}

static void test_metrics(void) {
    es_metrics m;
    es_metrics_init(&m);
    es_metrics_count_request(&m, "/v1/completions", 200);
    es_metrics_count_request(&m, "/v1/completions", 200);
    es_metrics_count_request(&m, "/v1/completions", 400);
    es_metrics_count_request(&m, "/health", 200);
    CHECK(m.n_req == 3 && m.req[0].count == 2);
    m.http_prompt_tokens = 12;
    m.http_completion_tokens = 34;
    m.http_active = 2;
    m.tokens_per_second = 12.5;
    es_str o = {0};
    CHECK(es_metrics_render(&m, &o));
    int n = 0;
    CHECK_MSG(check_prometheus(o.s, &n) == 0, "%s", o.s);
    CHECK(strstr(o.s, "edgespec_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 2\n"));
    CHECK(strstr(o.s, "edgespec_requests_total{endpoint=\"/v1/completions\",status=\"400\"} 1\n"));
    CHECK(strstr(o.s, "edgespec_active_sessions{kind=\"http\"} 2\n"));
    CHECK(strstr(o.s, "edgespec_tokens_per_second 12.5\n"));
    /* backend parts absent while not applicable */
    CHECK(!strstr(o.s, "edgespec_kv_blocks_used") && !strstr(o.s, "edgespec_batch_rows") && !strstr(o.s, "kind=\"edge\""));
    es_str_free(&o);

    /* a server backend: KV, batches, drafts, edge sessions */
    m.edge_active = 3;
    m.kv_blocks_used = 5;
    m.kv_blocks_total = 100;
    m.prompt_tokens = 40;
    m.generated_tokens = 90;
    m.refused = 1;
    m.drafts = 10;
    m.draft_tokens = 40;
    m.accepted_tokens = 25;
    m.batch_count = 6;
    m.batch_sum = 1 + 1 + 3 + 8 + 9 + 2000;
    const int64_t rows[] = {1, 1, 3, 8, 9, 2000};
    for (int i = 0; i < 6; i++) m.batch_buckets[es_metrics_batch_bucket(rows[i])]++;
    CHECK(es_metrics_batch_bucket(1) == 0 && es_metrics_batch_bucket(2) == 1 && es_metrics_batch_bucket(3) == 2);
    CHECK(es_metrics_batch_bucket(1024) == 10 && es_metrics_batch_bucket(1025) == 11 && es_metrics_batch_bucket(1 << 20) == 11);
    CHECK(es_metrics_render(&m, &o));
    CHECK_MSG(check_prometheus(o.s, &n) == 0, "%s", o.s);
    CHECK(strstr(o.s, "edgespec_active_sessions{kind=\"edge\"} 3\n"));
    CHECK(strstr(o.s, "edgespec_kv_blocks_used 5\n") && strstr(o.s, "edgespec_kv_blocks_total 100\n"));
    CHECK(strstr(o.s, "edgespec_batch_rows_bucket{le=\"1\"} 2\n"));
    CHECK(strstr(o.s, "edgespec_batch_rows_bucket{le=\"4\"} 3\n"));
    CHECK(strstr(o.s, "edgespec_batch_rows_bucket{le=\"16\"} 5\n"));
    CHECK(strstr(o.s, "edgespec_batch_rows_bucket{le=\"1024\"} 5\n"));
    CHECK(strstr(o.s, "edgespec_batch_rows_bucket{le=\"+Inf\"} 6\n"));
    CHECK(strstr(o.s, "edgespec_batch_rows_count 6\n") && strstr(o.s, "edgespec_batch_rows_sum 2022\n"));
    CHECK(strstr(o.s, "edgespec_acceptance_length 3.5\n"));
    CHECK(strstr(o.s, "edgespec_draft_tokens_total 40\n") && strstr(o.s, "edgespec_accepted_tokens_total 25\n"));
    CHECK(strstr(o.s, "# TYPE edgespec_batch_rows histogram\n"));
    CHECK(strstr(o.s, "# TYPE edgespec_refused_total counter\n"));
    es_str_free(&o);
}

/* The response builders produce what OpenAI clients parse. */
/* logprobs requested (completions: an integer; chat: a boolean with top_logprobs) and built in
 * OpenAI's shapes, token texts made valid UTF-8 (a token holding half a character). */
static void test_logprobs(void) {
    es_oai_request r;
    CHECK(parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":3}", &r) && r.logprobs && r.top_logprobs == 3);
    es_oai_request_free(&r);
    CHECK(parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":0}", &r) && r.logprobs && r.top_logprobs == 0);
    es_oai_request_free(&r);
    CHECK(parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":null}", &r) && !r.logprobs);
    es_oai_request_free(&r);
    CHECK(parse_ok(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":20}", &r) &&
          r.logprobs && r.top_logprobs == 20);
    es_oai_request_free(&r);
    CHECK(parse_ok(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":false,\"top_logprobs\":0}", &r) &&
          !r.logprobs);
    es_oai_request_free(&r);

    CHECK(parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"n\":3}", &r) && r.n == 3);
    es_oai_request_free(&r);
    CHECK(parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\"}", &r) && r.n == 1);
    es_oai_request_free(&r);

    es_oai_lp_token t[2];
    memset(t, 0, sizeof t);
    t[0] = (es_oai_lp_token){" a", 2, -0.5f, 0, 2, {{" a", 2, -0.5f}, {" b", 2, -1.5f}}};
    t[1] = (es_oai_lp_token){"\xe2\x80", 2, -0.25f, 2, 1, {{"\xe2\x80", 2, -0.25f}}};
    es_oai_logprobs lp = {t, 2, true};
    const es_oai_choice ch = {" a\xe2\x80", "length", &lp, NULL};
    const es_oai_usage u = {1, 2};
    char *j = es_oai_response_json_n(ES_OAI_COMPLETION, "cmpl-1", 1, "m", &ch, 1, &u);
    cJSON *o = cJSON_Parse(j);
    const cJSON *l = o ? cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "logprobs") : NULL;
    CHECK(l && cJSON_GetArraySize(cJSON_GetObjectItem(l, "tokens")) == 2);
    if (l) {
        CHECK(!strcmp(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "tokens"), 1)->valuestring, "\xef\xbf\xbd")); /* U+FFFD */
        CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "token_logprobs"), 0)->valuedouble == -0.5);
        CHECK(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "top_logprobs"), 0), " b")->valuedouble == -1.5);
        CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "text_offset"), 1)->valueint == 2);
    }
    cJSON_Delete(o);
    free(j);
    j = es_oai_response_json_n(ES_OAI_CHAT, "c-1", 1, "m", &ch, 1, &u);
    o = cJSON_Parse(j);
    l = o ? cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "logprobs") : NULL;
    const cJSON *e1 = l ? cJSON_GetArrayItem(cJSON_GetObjectItem(l, "content"), 1) : NULL;
    CHECK(e1 && cJSON_IsNull(cJSON_GetObjectItem(l, "refusal")));
    if (e1) { /* the raw bytes beside the repaired text */
        const cJSON *b = cJSON_GetObjectItem(e1, "bytes");
        CHECK(cJSON_GetArraySize(b) == 2 && cJSON_GetArrayItem(b, 0)->valueint == 0xe2 && cJSON_GetArrayItem(b, 1)->valueint == 0x80);
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(e1, "top_logprobs")) == 1);
    }
    cJSON_Delete(o);
    free(j);
    /* a stream chunk of choice 1 */
    j = es_oai_chunk_json_ex(ES_OAI_CHAT, "c-1", 1, "m", 1, NULL, " a", NULL, &lp);
    CHECK(j && strstr(j, "\"index\":1") && strstr(j, "\"logprobs\":{\"content\":[{\"token\":\" a\""));
    free(j);
}

static void test_json(void) {
    const es_oai_usage u = {5, 7};
    char *j = es_oai_response_json(ES_OAI_CHAT, "chatcmpl-1", 1700000000, "m", "hi \"there\"", "length", &u);
    cJSON *o = cJSON_Parse(j);
    CHECK(o != NULL);
    if (o) {
        CHECK(!strcmp(cJSON_GetObjectItem(o, "object")->valuestring, "chat.completion"));
        const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
        CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "message"), "content")->valuestring, "hi \"there\""));
        CHECK(!strcmp(cJSON_GetObjectItem(c, "finish_reason")->valuestring, "length"));
        CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "total_tokens")->valueint == 12);
        cJSON_Delete(o);
    }
    free(j);
    j = es_oai_chunk_json(ES_OAI_COMPLETION, "cmpl-1", 1, "m", NULL, "x", NULL);
    o = cJSON_Parse(j);
    CHECK(o && !strcmp(cJSON_GetObjectItem(o, "object")->valuestring, "text_completion"));
    if (o) {
        const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(c, "finish_reason")) && !strcmp(cJSON_GetObjectItem(c, "text")->valuestring, "x"));
    }
    cJSON_Delete(o);
    free(j);
    j = es_oai_chunk_json(ES_OAI_CHAT, "c", 1, "m", "assistant", "", NULL);
    CHECK(j && strstr(j, "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}") && strstr(j, "chat.completion.chunk"));
    free(j);
    j = es_oai_usage_chunk_json(ES_OAI_CHAT, "c", 1, "m", &u);
    CHECK(j && strstr(j, "\"choices\":[]") && strstr(j, "\"completion_tokens\":7"));
    free(j);
    es_oai_error e;
    es_oai_error_set(&e, 401, "invalid_request_error", "invalid_api_key", NULL, "bad key %d", 1);
    j = es_oai_error_json(&e);
    CHECK(j && !strcmp(j, "{\"error\":{\"message\":\"bad key 1\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_api_key\"}}"));
    free(j);
    j = es_oai_models_json("stories", 5, NULL);
    CHECK(j && strstr(j, "\"object\":\"list\"") && strstr(j, "\"id\":\"stories\""));
    free(j);
}

/* Fields users send from vLLM / llama.cpp clients: honoured, or refused with a reason, never ignored. */
static void test_parse_extensions(void) {
    es_oai_request r;
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"top_k\":-1}", &r)) { /* vLLM's "off" */
        CHECK(r.top_k == 0);
        es_oai_request_free(&r);
    }
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\"}", &r)) {
        CHECK(r.repeat_penalty == 1.0 && r.n_bias == 0 && !r.has_repeat_last_n);
        es_oai_request_free(&r);
    }
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"presence_penalty\":0.5,\"frequency_penalty\":-1.5}", &r)) {
        CHECK(r.presence_penalty == 0.5 && r.frequency_penalty == -1.5);
        es_oai_request_free(&r);
    }
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"repetition_penalty\":1.3,\"repeat_last_n\":-1}", &r)) {
        CHECK(fabs(r.repeat_penalty - 1.3) < 1e-12 && r.has_repeat_last_n && r.repeat_last_n == -1);
        es_oai_request_free(&r);
    }
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"repeat_penalty\":0.8,\"logit_bias\":{\"7\":-100,\"12\":2.5}}", &r)) {
        CHECK(fabs(r.repeat_penalty - 0.8) < 1e-12 && r.n_bias == 2);
        if (r.n_bias == 2) CHECK(r.bias[0].id == 7 && r.bias[0].bias == -100.0f && r.bias[1].id == 12 && r.bias[1].bias == 2.5f);
        es_oai_request_free(&r);
    }
    if (parse_ok(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"none\"}", &r))
        es_oai_request_free(&r);
    if (parse_ok(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"auto\",\"tools\":[]}", &r))
        es_oai_request_free(&r);
    /* a literal backslash followed by u0000 is text, not a NUL */
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"a\\\\u0000b\"}", &r)) {
        CHECK(r.prompt && !strcmp(r.prompt, "a\\u0000b"));
        es_oai_request_free(&r);
    }
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"repeat_penalty\":0}", "repeat_penalty", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"repetition_penalty\":-1}", "repetition_penalty", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"repeat_penalty\":\"high\"}", "repeat_penalty", "number");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"repeat_last_n\":-2}", "repeat_last_n", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":[1]}", "logit_bias", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"a\":1}}", "logit_bias", "token ids");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"-3\":1}}", "logit_bias", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"3\":101}}", "logit_bias", "-100..100");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"3\":\"1\"}}", "logit_bias", NULL);
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"3\":1,\"3\":2}}", "logit_bias", "twice");
    es_str many = {0};
    es_str_puts(&many, "{\"prompt\":\"x\",\"logit_bias\":{");
    for (int i = 0; i <= ES_OAI_MAX_LOGIT_BIAS; i++) es_str_printf(&many, "%s\"%d\":1", i ? "," : "", i);
    es_str_puts(&many, "}}");
    expect_400(ES_OAI_COMPLETION, es_str_cstr(&many), "logit_bias", "at most");
    es_str_free(&many);
    /* tool_choice parses (the server decides what it can serve: tests/test_http_tools.sh) */
    if (parse_ok(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"required\"}", &r)) {
        CHECK(r.tool_choice == ES_OAI_TOOLS_REQUIRED && !r.tools);
        es_oai_request_free(&r);
    }
    if (parse_ok(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}", &r)) {
        CHECK(r.tool_choice == ES_OAI_TOOLS_NAMED && r.tool_choice_name && !strcmp(r.tool_choice_name, "f"));
        es_oai_request_free(&r);
    }
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":{\"type\":\"function\"}}",
               "tool_choice", "function");
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"always\"}", "tool_choice", NULL);
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":3}", "tool_choice", NULL);
    /* NUL would cut the text short: refused wherever it is */
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"a\\u0000b\"}", NULL, "NUL");
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\\u0000\"}]}", NULL, "NUL");
    expect_400(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"\\u0000\"]}", NULL, "NUL");
    const char raw[] = "{\"prompt\":\"a\0b\"}";
    es_oai_error e;
    CHECK(!es_oai_parse_request(ES_OAI_COMPLETION, raw, sizeof raw - 1, &r, &e) && e.status == 400);
}

/* response_format: text is plain; json_object and json_schema compile a grammar; anything the
 * grammar cannot honour is a 400 naming response_format and the reason. */
static void test_response_format(void) {
    static const char msg[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":";
    char body[1024];
    es_oai_request r;
    snprintf(body, sizeof body, "%s{\"type\":\"text\"}}", msg);
    if (parse_ok(ES_OAI_CHAT, body, &r)) { CHECK(r.grammar == NULL); es_oai_request_free(&r); }
    snprintf(body, sizeof body, "%s{\"type\":\"json_object\"}}", msg);
    if (parse_ok(ES_OAI_CHAT, body, &r)) { CHECK(r.grammar != NULL); es_oai_request_free(&r); }
    snprintf(body, sizeof body, "%s{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\",\"strict\":true,\"schema\":"
             "{\"type\":\"object\",\"properties\":{\"a\":{\"enum\":[1,2]},\"b\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},"
             "\"required\":[\"a\"],\"additionalProperties\":false}}}}", msg);
    if (parse_ok(ES_OAI_CHAT, body, &r)) { CHECK(r.grammar != NULL); es_oai_request_free(&r); }
    /* completions take it too (an extension: OpenAI's completions have no response_format) */
    if (parse_ok(ES_OAI_COMPLETION, "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_object\"}}", &r)) {
        CHECK(r.grammar != NULL);
        es_oai_request_free(&r);
    }
    snprintf(body, sizeof body, "%s{\"type\":\"xml\"}}", msg);
    expect_400(ES_OAI_CHAT, body, "response_format.type", "xml");
    snprintf(body, sizeof body, "%s{\"type\":\"json_schema\"}}", msg);
    expect_400(ES_OAI_CHAT, body, "response_format.json_schema", NULL);
    snprintf(body, sizeof body, "%s{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\"}}}", msg);
    expect_400(ES_OAI_CHAT, body, "response_format.json_schema.schema", NULL);
    snprintf(body, sizeof body, "%s{\"type\":\"json_schema\",\"json_schema\":{\"name\":3,\"schema\":{}}}}", msg);
    expect_400(ES_OAI_CHAT, body, "response_format.json_schema.name", NULL);
    snprintf(body, sizeof body, "%s{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{\"type\":\"string\",\"format\":\"date\"}}}}", msg);
    expect_400(ES_OAI_CHAT, body, "response_format", "'format'");
    snprintf(body, sizeof body, "%s{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{\"type\":\"object\",\"properties\":"
             "{\"a\":{\"type\":\"integer\",\"minimum\":1}}}}}}", msg);
    expect_400(ES_OAI_CHAT, body, "response_format", "#/properties/a");
    snprintf(body, sizeof body, "%s\"json\"}", msg);
    expect_400(ES_OAI_CHAT, body, "response_format", NULL);
}

/* tools and tool_calls: parsed into the request, rendered by the model's Jinja template as transformers
 * renders them, and the model's <tool_call> blocks parsed into OpenAI tool_calls */
static void test_tools(void) {
    es_oai_request r;
    const char *body =
        "{\"messages\":[{\"role\":\"system\",\"content\":\"You can look up weather.\"},"
        "{\"role\":\"user\",\"content\":\"Weather in Paris and Tokyo?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
        "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}},"
        "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Tokyo\\\",\\\"unit\\\":\\\"celsius\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"{\\\"temp\\\": 18}\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":\"{\\\"temp\\\": 24}\"},"
        "{\"role\":\"assistant\",\"content\":\"Paris 18°C, Tokyo 24°C.\"},{\"role\":\"user\",\"content\":\"Thanks\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Current weather <in a city> & more\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"unit\":{\"type\":\"string\","
        "\"enum\":[\"celsius\",\"fahrenheit\"]}},\"required\":[\"city\"]}}}]}";
    if (parse_ok(ES_OAI_CHAT, body, &r)) {
        CHECK(r.tools && r.tool_choice == ES_OAI_TOOLS_AUTO && r.n_messages == 7);
        CHECK(r.messages[2].null_content && r.messages[2].tool_calls && !r.messages[1].tool_calls);
        CHECK(r.messages[3].tool_call_id && !strcmp(r.messages[3].tool_call_id, "call_1"));
        /* the Qwen2.5 template renders it as jinja2 does conversation 5 of tests/data/chat-templates (whose
           arguments are objects: OpenAI's JSON-text arguments become objects for the template) */
        char path[1200];
        const char *src = getenv("ES_SRC");
        snprintf(path, sizeof path, "%s/tests/data/chat-templates/qwen2.5.jinja", src && *src ? src : "..");
        FILE *f = fopen(path, "rb");
        static char tmpl[65536], line[1 << 16];
        const size_t n = f ? fread(tmpl, 1, sizeof tmpl - 1, f) : 0;
        if (f) fclose(f);
        tmpl[n] = 0;
        es_jinja *t = NULL;
        es_err err = {{0}};
        CHECK_OK(es_jinja_parse(tmpl, n, &t, &err), &err);
        es_str out = {0};
        if (t) CHECK_OK(es_chat_render_jinja(t, r.messages, r.n_messages, r.tools, "", "", 0, &out, &err), &err);
        snprintf(path, sizeof path, "%s/tests/data/chat-templates/ref.jsonl", src && *src ? src : "..");
        f = fopen(path, "rb");
        bool found = false;
        while (f && fgets(line, sizeof line, f)) {
            if (!strstr(line, "\"qwen2.5.jinja\", \"conversation\": 5, \"add_generation_prompt\": true")) continue;
            cJSON *ref = cJSON_Parse(line);
            const cJSON *o = cJSON_GetObjectItem(ref, "output");
            found = cJSON_IsString(o);
            CHECK_MSG(found && !strcmp(o->valuestring, es_str_cstr(&out)), "rendered [%s]", es_str_cstr(&out));
            cJSON_Delete(ref);
        }
        if (f) fclose(f);
        CHECK(found);
        CHECK(es_chat_jinja_takes_tools(tmpl) && !es_chat_jinja_takes_tools("{{ mytools }}{{ tools_x }}"));
        CHECK(es_chat_jinja_end_of_turn(tmpl) && !strcmp(es_chat_jinja_end_of_turn(tmpl), "<|im_end|>"));
        es_str_free(&out);
        es_jinja_free(t);
        es_oai_request_free(&r);
    }
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"type\":\"function\"}]}]}",
               "messages[0].tool_calls", NULL);
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"1\",\"tool_call_id\":5}]}", "messages[0].tool_call_id", NULL);
    expect_400(ES_OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}", "tools", NULL);

    /* streaming: content up to a tool call, or all but what may begin one */
    bool call;
    CHECK(es_chat_tool_content_len("Hello", 5, false, &call) == 5 && !call);
    CHECK(es_chat_tool_content_len("Hi <tool", 8, false, &call) == 3 && !call);
    CHECK(es_chat_tool_content_len("Hi <tool_call>{", 15, false, &call) == 3 && call);
    CHECK(es_chat_tool_content_len("a<b", 3, false, &call) == 3 && !call);
    CHECK(es_chat_tool_content_len("a<", 2, false, &call) == 1 && !call);
    /* a complete reply */
    size_t cl = 99;
    char *calls = NULL;
    const char *reply = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
                        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    CHECK(es_chat_parse_tool_calls(reply, strlen(reply), NULL, "x_0", &cl, &calls));
    CHECK(cl == strlen("Let me check."));
    cJSON *j = cJSON_Parse(calls);
    CHECK(cJSON_GetArraySize(j) == 2);
    const cJSON *c0 = cJSON_GetArrayItem(j, 0), *f0 = cJSON_GetObjectItem(c0, "function");
    CHECK(!strcmp(cJSON_GetObjectItem(c0, "id")->valuestring, "call_x_0_0") && !strcmp(cJSON_GetObjectItem(c0, "type")->valuestring, "function"));
    CHECK(!strcmp(cJSON_GetObjectItem(f0, "name")->valuestring, "get_weather"));
    CHECK(!strcmp(cJSON_GetObjectItem(f0, "arguments")->valuestring, "{\"city\":\"Paris\"}")); /* JSON text, as OpenAI sends */
    cJSON_Delete(j);
    free(calls);
    /* the closer may be missing at the very end (generation stopped on the end-of-turn token) */
    const char *open_end = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}\n";
    CHECK(es_chat_parse_tool_calls(open_end, strlen(open_end), NULL, "y", &cl, &calls) && cl == 0);
    free(calls);
    /* a reply that is only a call, bare or fenced, naming one of the request's tools (Qwen2.5-Coder's form) */
    const char *tools = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]";
    const char *bare[] = {"```json\n{\n  \"name\": \"get_weather\",\n  \"arguments\": {\"city\": \"Paris\"}\n}\n```",
                          " {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"};
    for (int i = 0; i < 2; i++) {
        calls = NULL;
        CHECK_MSG(es_chat_parse_tool_calls(bare[i], strlen(bare[i]), tools, "b", &cl, &calls) && cl == 0 && calls &&
                      strstr(calls, "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\""),
                  "bare call %d: %s", i, calls ? calls : "(none)");
        free(calls);
    }
    /* Mistral's [TOOL_CALLS] array, Llama 3.1's <|python_tag|> calls (with "parameters"; two separated
       by ';'), and Llama's bare form without the tag (an object or an array naming request tools) */
    const char *tools2 = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
                         "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}]";
    static const struct { const char *text; size_t content; int n; } forms[] = {
        {"[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {}}]", 0, 2},
        {"Sure. [TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]", 5, 1},
        {"<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", 0, 1},
        {"<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"get_time\", \"parameters\": {}}", 0, 2},
        {"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", 0, 1},
        {"[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {}}]", 0, 2},
    };
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        calls = NULL;
        cl = 99;
        const bool got = es_chat_parse_tool_calls(forms[i].text, strlen(forms[i].text), tools2, "m", &cl, &calls);
        cJSON *fj = got ? cJSON_Parse(calls) : NULL;
        const cJSON *ff = cJSON_GetObjectItem(cJSON_GetArrayItem(fj, 0), "function");
        CHECK_MSG(got && cl == forms[i].content && cJSON_GetArraySize(fj) == forms[i].n && ff &&
                      !strcmp(cJSON_GetObjectItem(ff, "name")->valuestring, "get_weather") &&
                      !strcmp(cJSON_GetObjectItem(ff, "arguments")->valuestring, "{\"city\":\"Paris\"}"),
                  "tool-call form %zu: %s (content %zu)", i, calls ? calls : "(none)", cl);
        cJSON_Delete(fj);
        free(calls);
    }
    CHECK(es_chat_tool_content_len("Hi [TOOL", 8, false, &call) == 3 && !call);
    CHECK(es_chat_tool_content_len("Hi [TOOL_CALLS][", 16, false, &call) == 3 && call);
    CHECK(es_chat_tool_content_len("Hi <|python_tag|>{", 18, false, &call) == 3 && call);
    CHECK(es_chat_tool_content_len("Hi [1, 2]", 9, false, &call) == 9 && !call);
    CHECK(es_chat_tool_content_len(" [{", 3, true, &call) == 0 && call);
    CHECK(es_chat_tool_content_len("  ", 2, true, &call) == 0 && !call);
    CHECK(es_chat_tool_content_len(" ```js", 6, true, &call) == 0 && call);
    CHECK(es_chat_tool_content_len(" Sure", 5, true, &call) == 5 && !call);
    /* not a call: plain text stays content */
    const char *bad[] = {"no call here", "{\"name\": \"other_tool\", \"arguments\": {}}", "```json\n{\"name\": \"get_weather\"}\n```",
                         "{\"name\": \"get_weather\", \"arguments\": {}} and text", "<tool_call>not json</tool_call>", "<tool_call>{\"arguments\": {}}</tool_call>",
                         "<tool_call>{\"name\": \"f\"}</tool_call> and then more text", "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\":",
                         "[TOOL_CALLS] not json", "[TOOL_CALLS] [{\"arguments\": {}}]", "[TOOL_CALLS] []", "<|python_tag|>{\"name\": \"f\"} trailing",
                         "[{\"name\": \"get_weather\", \"arguments\": {}}, {\"name\": \"unknown\", \"arguments\": {}}]", "[1, 2]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        calls = NULL;
        CHECK_MSG(!es_chat_parse_tool_calls(bad[i], strlen(bad[i]), tools, "z", &cl, &calls) && !calls, "parsed a call in [%s]", bad[i]);
    }
    /* the response JSON: content null with calls, tool_calls in the message; the stream chunk indexes them */
    const es_oai_choice ch = {"", "tool_calls", NULL, "[{\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]"};
    char *resp = es_oai_response_json_n(ES_OAI_CHAT, "chatcmpl-1", 1, "m", &ch, 1, NULL);
    j = cJSON_Parse(resp);
    const cJSON *msg = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(msg, "content")) && cJSON_GetArraySize(cJSON_GetObjectItem(msg, "tool_calls")) == 1);
    CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "finish_reason")->valuestring, "tool_calls"));
    cJSON_Delete(j);
    free(resp);
    char *chunk = es_oai_tool_calls_chunk_json("chatcmpl-1", 1, "m", 0, ch.tool_calls);
    j = cJSON_Parse(chunk);
    const cJSON *d = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "delta");
    const cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "tool_calls"), 0);
    CHECK(tc && cJSON_GetObjectItem(tc, "index")->valueint == 0 && !strcmp(cJSON_GetObjectItem(tc, "id")->valuestring, "call_a"));
    cJSON_Delete(j);
    free(chunk);
}

int main(void) {
    test_tools();
    test_parse();
    test_response_format();
    test_parse_extensions();
    test_stopstr();
    test_detok();
    test_chat();
    test_metrics();
    test_json();
    test_logprobs();
    return es_test_finish("test_oai");
}
