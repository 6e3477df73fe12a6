/* fuzz_jinja.c — libFuzzer target for the Jinja subset (src/jinja/): the input up to the first NUL is a
 * template, the rest (when it parses as a JSON object) its variables, else a fixed conversation with
 * tools. Parsing must succeed or fail with a message; rendering runs under small limits and must end
 * (ok or an error with a message) without crashing, leaking or over-reading. Seeded by scripts/fuzz.sh
 * with the chat templates of tests/data/chat-templates.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined (scripts/fuzz.sh). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jinja/jinja.h"

static const char k_vars[] =
    "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi\"},"
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
    "\"arguments\":{\"a\":1}}}]},{\"role\":\"tool\",\"content\":\"42\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}],"
    "\"add_generation_prompt\":true,\"bos_token\":\"<s>\",\"eos_token\":\"</s>\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    const size_t tlen = nul ? (size_t)(nul - data) : size;
    char *tmpl = malloc(tlen ? tlen : 1); /* exact size: an over-read is caught */
    if (!tmpl) return 0;
    memcpy(tmpl, data, tlen);
    cJSON *vars = NULL;
    if (nul) vars = cJSON_ParseWithLength((const char *)nul + 1, size - tlen - 1);
    if (!cJSON_IsObject(vars)) {
        cJSON_Delete(vars);
        vars = cJSON_Parse(k_vars);
    }
    es_jinja *t = NULL;
    es_err err = {{0}};
    if (es_jinja_parse(tmpl, tlen, &t, &err) == ES_OK) {
        es_jinja_params p = {.vars = vars, .now = 0, .max_output = 1 << 16, .max_steps = 20000, .max_memory = 8 << 20};
        es_str out = {0};
        err.msg[0] = 0;
        if (es_jinja_render(t, &p, &out, &err) != ES_OK && !err.msg[0]) abort();
        es_str_free(&out);
        es_jinja_free(t);
    } else if (!err.msg[0]) {
        abort();
    }
    cJSON_Delete(vars);
    free(tmpl);
    return 0;
}
