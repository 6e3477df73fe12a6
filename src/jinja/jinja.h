/* jinja.h — a Jinja2 subset interpreter for chat templates (a model's `tokenizer.chat_template`).
 *
 * It renders the templates of the common chat models (Llama 3, Qwen2.5 with tools, Mistral, Gemma,
 * Phi-3) byte for byte as Hugging Face transformers renders them with Python's jinja2: the environment
 * has trim_blocks and lstrip_blocks on, the loopcontrols extension, `raise_exception(msg)`,
 * `strftime_now(fmt)` and a `tojson` that is Python's json.dumps(ensure_ascii=False).
 *
 * Supported: {{ }}, {% %}, {# #} with the '-' whitespace controls; for (one or two targets, an `if`
 * filter, else, loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem), if / elif /
 * else, set (a name, a tuple of names, ns.attr, a block set), macro (with defaults; called as a
 * function), break / continue; literals (strings, ints, floats, true/false/none, lists, dicts);
 * + - * / // % ** ~, comparisons, in / not in, and / or / not, the conditional expression, indexing,
 * slicing ([a:b:c]); the tests defined, undefined, none, string, number, integer, float, boolean,
 * mapping, iterable, sequence, true, false, odd, even, divisibleby, equalto/eq, in; the filters
 * trim, tojson, length/count, first, last, upper, lower, title, capitalize, items, default/d, join,
 * replace, string, list, int, float, abs, reverse, selectattr, rejectattr, map(attribute=...),
 * indent, unique, sort (no key), safe; the methods str.strip/lstrip/rstrip/split/startswith/endswith/
 * upper/lower/replace/title, dict.items/keys/values/get (values are immutable, as in transformers'
 * ImmutableSandboxedEnvironment: no list.append);
 * the globals range, namespace, dict, raise_exception, strftime_now.
 * Strings index and slice by byte (chat templates slice only ASCII).
 *
 * Limits: rendering stops with ES_ERR_RANGE at the output, step (loop iterations plus statements),
 * memory or depth limit, so a hostile template or request cannot run away. */
#ifndef ES_JINJA_JINJA_H
#define ES_JINJA_JINJA_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "edgespec.h"
#include "util/str.h"

typedef struct es_jinja es_jinja;

/* Parses a template (len bytes, need not be NUL-terminated). ES_ERR_FORMAT with the line and what was
 * wrong for a syntax error or a construct outside the subset; ES_ERR_RANGE when nesting is too deep
 * or the template is over 1 MiB. */
es_status es_jinja_parse(const char *src, size_t len, es_jinja **out, es_err *err);
void es_jinja_free(es_jinja *t);

typedef struct es_jinja_params {
    const cJSON *vars;     /* an object whose members are the template's variables (NULL: none) */
    int64_t now;           /* strftime_now's clock, seconds since the epoch (UTC): fixed for tests */
    size_t max_output;     /* bytes; 0: 1 MiB */
    long max_steps;        /* statements executed plus loop iterations; 0: 1,000,000 */
    size_t max_memory;     /* bytes of values built while rendering; 0: 64 MiB */
} es_jinja_params;

/* Renders into out (appended). ES_ERR_INVALID_ARG when the template raised an exception
 * (raise_exception: err holds its message) or an operation failed on the values given (adding a
 * string to a list, an attribute of an undefined value, ...); ES_ERR_RANGE past a limit;
 * ES_ERR_NOMEM. On failure out may hold part of the output. */
es_status es_jinja_render(const es_jinja *t, const es_jinja_params *p, es_str *out, es_err *err);

#endif
