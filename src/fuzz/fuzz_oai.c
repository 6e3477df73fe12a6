/* fuzz_oai.c — libFuzzer target for the OpenAI request parser and the text pipeline behind it
 * (src/http/oai.c, chat.c, tokenizer/detok.c).
 *
 * Byte 0 picks the endpoint (bit 0 clear: completions, set: chat; with bit 1 set /tokenize and
 * /detokenize instead, whose parse must succeed or be refused with 400, or 500 when out of memory);
 * the rest is the body, copied to an exact-size buffer so any over-read is caught. A body must
 * parse or be refused with a 400 that names a message; a parsed chat request must render under
 * every template family. Then the body's bytes go through the incremental UTF-8 repair in chunks
 * whose sizes come from the input, and the result must be valid UTF-8; through the stop-string
 * matcher (stop strings taken from the request, or fixed ones), whose output must equal the text up
 * to the earliest match, found naively; and through the tool-call parser (every format it reads),
 * whose calls must be well-formed OpenAI calls. Anything else aborts.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined (scripts/fuzz.sh, which seeds it with requests). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "http/chat.h"
#include "http/oai.h"
#include "tokenizer/detok.h"

/* The expected stop-string output: text before the earliest match of any stop string. */
static size_t naive_cut(const char *t, size_t n, char *const *stop, int n_stop, bool *matched) {
    *matched = false;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < n_stop; k++) {
            const size_t l = strlen(stop[k]);
            if (l && l <= n - i && memcmp(t + i, stop[k], l) == 0) {
                *matched = true;
                return i;
            }
        }
    return n;
}

/* A /tokenize body (or with detokenize, a /detokenize one) must parse or be refused with a 400 (a 500: out of memory). */
static void check_tokenize_body(bool detokenize, const uint8_t *p, size_t n) {
    char *b = malloc(n ? n : 1);
    if (!b) return;
    memcpy(b, p, n);
    es_oai_tok t;
    es_oai_error te;
    memset(&te, 0, sizeof te);
    if (es_oai_parse_tokenize(!detokenize, b, n, &t, &te)) {
        if (!detokenize && !t.content) abort();
        for (int i = 0; i < t.n_ids; i++)
            if (t.ids[i] < 0) abort();
        es_oai_tok_free(&t);
    } else if (te.status != 400 && te.status != 500) {
        abort();
    }
    free(b);
}

/* Every field of a parsed request lies in the range the parser promises. */
static void check_request_fields(int kind, const es_oai_request *r) {
    if (kind == ES_OAI_CHAT && r->n_messages < 1) abort();
    if (r->n_stop < 0 || r->n_stop > ES_OAI_MAX_STOP) abort();
    if (r->max_tokens < 0 || !(r->temperature >= 0 && r->temperature <= 2) || !(r->top_p > 0 && r->top_p <= 1)) abort();
    if (!(r->repeat_penalty > 0 && r->repeat_penalty <= 100) || r->n_bias < 0 || r->n_bias > ES_OAI_MAX_LOGIT_BIAS) abort();
    for (int i = 0; i < r->n_bias; i++)
        if (r->bias[i].id < 0 || !(r->bias[i].bias >= -100 && r->bias[i].bias <= 100)) abort();
    if (r->top_logprobs < 0 || r->top_logprobs > ES_OAI_MAX_TOP_LOGPROBS || (!r->logprobs && r->top_logprobs > 0)) abort();
    if (r->top_k < 0 || !(r->presence_penalty >= -2 && r->presence_penalty <= 2) || !(r->frequency_penalty >= -2 && r->frequency_penalty <= 2))
        abort();
}

/* The body parses (a chat request then renders under every template family) or is refused with a
 * 400 (or 500) that names a message; refused, *r is zeroed so that the checks after it see no stop
 * strings and es_oai_request_free has nothing to free. */
static void check_request(int kind, const char *body, size_t n, es_oai_request *r) {
    es_oai_error e;
    memset(&e, 0, sizeof e);
    if (es_oai_parse_request(kind, body, n, r, &e)) {
        check_request_fields(kind, r);
        for (int f = 0; f < ES_CHAT_FAMILY_COUNT && kind == ES_OAI_CHAT; f++) {
            es_str out = {0};
            if (!es_chat_render((es_chat_family)f, r->messages, r->n_messages, &out)) abort();
            es_str_free(&out);
        }
    } else {
        if (e.status != 400 && e.status != 500) abort();
        if (!e.message[0] || !e.type) abort();
        char *j = es_oai_error_json(&e);
        free(j);
        memset(r, 0, sizeof *r);
    }
}

/* UTF-8 repair in input-driven chunks: always valid output (in *u) */
static void repair_utf8(const uint8_t *data, size_t size, const char *body, size_t n, es_str *u) {
    es_detok d;
    es_detok_init(&d, NULL, -1);
    for (size_t i = 0, c = 0; i < n; c++) {
        size_t k = 1 + (size_t)data[c % size] % 7;
        if (k > n - i) k = n - i;
        if (!es_detok_bytes(&d, body + i, k, u)) abort();
        i += k;
    }
    if (!es_detok_flush(&d, u)) abort();
    if (!es_utf8_valid(es_str_cstr(u), u->len)) abort();
}

/* logprobs JSON over raw token bytes cut from the body (any bytes: the builder repairs them) */
static void check_logprobs_json(const uint8_t *data, size_t size, int kind, const char *body, size_t n, const es_str *u) {
    es_oai_lp_token lt[4];
    memset(lt, 0, sizeof lt);
    for (int i = 0; i < 4; i++) {
        const size_t off = n ? (size_t)data[(size_t)i % size] % n : 0, len = n - off < 6 ? n - off : 6;
        lt[i].text = body + off;
        lt[i].len = len;
        lt[i].logprob = -(float)i;
        lt[i].offset = (int64_t)off;
        lt[i].n_top = i;
        for (int k = 0; k < i; k++) lt[i].top[k] = (es_oai_lp_alt){body + off, len - (len > 0 && k), -(float)k};
    }
    const es_oai_logprobs lp = {lt, 4, (data[0] & 4) != 0};
    const es_oai_choice ch = {es_str_cstr(u), "stop", &lp, NULL};
    char *lj = es_oai_response_json_n(kind, "x", 0, "m", &ch, 1, NULL);
    if (lj && !es_utf8_valid(lj, strlen(lj))) abort();
    free(lj);
}

/* stop strings over the repaired text, fed in chunks */
static void check_stop_strings(const uint8_t *data, size_t size, const es_oai_request *r, const es_str *u) {
    char s0[] = "\n\n", s1[] = "END", s2[] = "a";
    char *fixed[] = {s0, s1, s2};
    char *const *stops = r->n_stop ? r->stop : fixed;
    const int n_stops = r->n_stop ? r->n_stop : 3;
    es_stopstr ss;
    es_stopstr_init(&ss, stops, n_stops);
    es_str out = {0};
    bool hit = false;
    for (size_t i = 0, c = 0; i < u->len && !hit; c++) {
        size_t k = 1 + (size_t)data[(c * 3) % size] % 5;
        if (k > u->len - i) k = u->len - i;
        hit = es_stopstr_feed(&ss, u->s + i, k, &out, NULL);
        i += k;
    }
    es_stopstr_flush(&ss, &out);
    bool want_hit;
    const size_t cut = naive_cut(es_str_cstr(u), u->len, stops, n_stops, &want_hit);
    if (hit != want_hit || out.len != cut || memcmp(es_str_cstr(&out), es_str_cstr(u), cut) != 0) abort();
    es_stopstr_free(&ss);
    es_str_free(&out);
}

/* the repaired text as a model's reply with tools: the calls parsed out of it (any format) are a
   JSON array of OpenAI calls, the content before them a prefix of the text; the streaming hold
   never lets out more than the text, nor anything of a reply that parses as calls from the start */
static void check_tool_calls(const es_str *u) {
    static const char tools[] = "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
                                "{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]";
    size_t cl = 0;
    char *calls = NULL;
    bool call_start = false, call_any = false;
    const size_t shown = es_chat_tool_content_len(es_str_cstr(u), u->len, true, &call_start);
    const size_t shown_mid = es_chat_tool_content_len(es_str_cstr(u), u->len, false, &call_any);
    if (shown > u->len || shown_mid > u->len) abort();
    if (es_chat_parse_tool_calls(es_str_cstr(u), u->len, tools, "fz", &cl, &calls)) {
        cJSON *cj = cJSON_Parse(calls);
        if (!cJSON_IsArray(cj) || cJSON_GetArraySize(cj) < 1 || cl > u->len) abort();
        for (const cJSON *c = cj->child; c; c = c->next) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
            if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(c, "id")) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(f, "name")) ||
                !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(f, "arguments")))
                abort();
        }
        cJSON_Delete(cj);
        free(calls);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (data[0] & 2) {
        check_tokenize_body(data[0] & 1, data + 1, size - 1);
        return 0;
    }
    const int kind = data[0] & 1 ? ES_OAI_CHAT : ES_OAI_COMPLETION;
    const size_t n = size - 1;
    char *body = malloc(n ? n : 1);
    if (!body) return 0;
    memcpy(body, data + 1, n);

    es_oai_request r;
    check_request(kind, body, n, &r);
    es_str u = {0};
    repair_utf8(data, size, body, n, &u);
    check_logprobs_json(data, size, kind, body, n, &u);
    check_stop_strings(data, size, &r, &u);
    check_tool_calls(&u);
    es_str_free(&u);
    es_oai_request_free(&r);
    free(body);
    return 0;
}
