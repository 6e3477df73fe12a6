/* oai.h — the OpenAI-compatible API as pure functions: request parsing and validation (cJSON) into
 * a plain struct with OpenAI-style errors, stop-string matching on streamed text, and the JSON of
 * responses, stream chunks, model lists and errors. No sockets and no model here, so all of it is
 * testable on its own (tests/test_oai.c); http/http.c puts it on the wire.
 *
 * Supported request fields (everything else is ignored, except the unsupported ones listed below,
 * which are refused with 400 rather than silently changing what the client asked for):
 *   model (string; echoed back), prompt (completions: a string, an array of one string, an array of
 *   token ids, or an array of one array of token ids), messages (chat: system / developer / user /
 *   assistant / tool roles; content a string, null, or an array of {"type":"text","text"} parts),
 *   max_tokens / max_completion_tokens (>= 1), temperature [0, 2], top_p (0, 1], top_k >= 0 and
 *   min_p [0, 1] (llama.cpp extensions), seed (integer), stop (string or array of up to 4
 *   non-empty strings), n (1..ES_OAI_MAX_N choices), stream, stream_options.include_usage (and
 *   include_speculation, an edgespec extension), presence_penalty and
 *   frequency_penalty (0 only), repeat_penalty / repetition_penalty (> 0, <= 100; llama.cpp / vLLM:
 *   1 = off) with repeat_last_n (-1: the whole context), logit_bias (token id -> bias in [-100, 100],
 *   at most ES_OAI_MAX_LOGIT_BIAS entries), tools (up to ES_OAI_MAX_TOOLS objects
 *   {"type":"function","function":{"name",...}}), tool_choice ("none", "auto", "required" or a named
 *   function: the parse accepts them, the server decides what it can serve), assistant messages'
 *   tool_calls and tool messages' tool_call_id,
 *   user (ignored). top_k -1 means off (vLLM), as 0 does.
 *   logprobs (completions: 0..20 alternatives; chat: a boolean, with top_logprobs 0..20).
 *   response_format: {"type":"text"}, {"type":"json_object"} (any JSON object) or {"type":"json_schema",
 *   "json_schema":{"name","schema","strict"}}: the schema is compiled (grammar/schema.c) here, so a
 *   schema outside the supported subset is a 400 naming the keyword.
 * Refused: n outside 1..16, best_of > 1, echo, suffix, functions (the legacy form of tools), tool_choice
 *   asking for a call, non-zero presence / frequency penalties,
 *   non-text content parts, and any string holding NUL (\u0000), which would cut it short. */
#ifndef ES_SERVER_OAI_H
#define ES_SERVER_OAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"
#include "tokenizer/detok.h"
#include "util/str.h"

#define ES_OAI_MAX_STOP 4         /* OpenAI's limit on stop strings */
#define ES_OAI_MAX_STOP_LEN 256   /* bytes per stop string */
#define ES_OAI_MAX_MESSAGES 4096
#define ES_OAI_MAX_PROMPT_IDS (1 << 20)
#define ES_OAI_MAX_LOGIT_BIAS 128   /* = ES_SAMPLER_MAX_BIAS (the sampler keeps them by value) */
#define ES_OAI_MAX_N 16              /* choices per request (n) */
#define ES_OAI_MAX_TOP_LOGPROBS 20  /* = ES_SPEC_MAX_TOP_LOGPROBS (OpenAI's chat limit) */

typedef enum es_oai_kind { ES_OAI_COMPLETION = 0, ES_OAI_CHAT = 1 } es_oai_kind;

typedef struct es_oai_error {
    int status;           /* HTTP status */
    const char *type;     /* "invalid_request_error", "authentication_error", ... */
    const char *code;     /* NULL or a short machine-readable code ("context_length_exceeded") */
    char param[64];       /* the offending field, "" if none */
    char message[512];
} es_oai_error;

typedef struct es_oai_message {
    char *role;           /* "system", "user", "assistant", "tool" ("developer" is read as "system") */
    char *content;        /* text parts joined; "" for null content */
    bool null_content;    /* content was null or absent (an assistant turn that only calls tools) */
    char *tool_calls;     /* assistant: its "tool_calls" array as JSON text, NULL when none */
    char *tool_call_id;   /* tool: the call it answers, NULL when not given */
    char *name;           /* the optional "name", NULL when not given */
} es_oai_message;

#define ES_OAI_MAX_TOOLS 128

typedef enum es_oai_tool_choice {
    ES_OAI_TOOLS_AUTO = 0,  /* "auto" (the default): the model may call a tool */
    ES_OAI_TOOLS_NONE,      /* "none": the tools are not shown to the model and no call is parsed */
    ES_OAI_TOOLS_REQUIRED,  /* "required" */
    ES_OAI_TOOLS_NAMED      /* {"type":"function","function":{"name":...}} */
} es_oai_tool_choice;

typedef struct es_oai_request {
    int kind;                         /* es_oai_kind */
    char *model;                      /* NULL when not given */
    char *prompt;                     /* completions with a text prompt */
    int32_t *prompt_ids;              /* completions with token ids */
    int n_prompt_ids;
    es_oai_message *messages;         /* chat */
    int n_messages;
    char *tools;                      /* chat: the "tools" array as JSON text (each a function), NULL when none */
    int tool_choice;                  /* es_oai_tool_choice */
    char *tool_choice_name;           /* ES_OAI_TOOLS_NAMED: the function */
    int max_tokens;                   /* 0: not given (completions default 16, chat: what fits) */
    double temperature, top_p, min_p;
    int top_k;
    uint64_t seed;
    bool has_seed;
    char *stop[ES_OAI_MAX_STOP];
    int n_stop;
    bool stream, include_usage;
    bool include_speculation;         /* stream_options.include_speculation (edgespec): a "speculation"
                                         object on every chunk of generated tokens (README) */
    double repeat_penalty;            /* repeat_penalty / repetition_penalty (1: off) */
    int repeat_last_n;                /* -1: the whole context */
    double presence_penalty, frequency_penalty; /* -2..2 (0: off) */
    bool has_repeat_last_n;
    struct { int32_t id; float bias; } *bias; /* logit_bias (ids not yet checked against the vocabulary) */
    int n_bias;
    int n;                            /* choices: 1..ES_OAI_MAX_N (default 1), each its own generation */
    bool logprobs;                    /* completions: logprobs N given; chat: logprobs true */
    int top_logprobs;                 /* alternatives per token, 0..ES_OAI_MAX_TOP_LOGPROBS */
    struct es_grammar *grammar;       /* response_format json_object / json_schema, compiled (owned); NULL: text */
} es_oai_request;

/* The log-probabilities of emitted tokens, as the response builders take them. Token texts are raw
 * bytes (a token may hold part of a character): "token" gets them as valid UTF-8 (U+FFFD for what is
 * not), chat's "bytes" as they are. */
typedef struct es_oai_lp_alt {
    const char *text;
    size_t len;
    float logprob;
} es_oai_lp_alt;
typedef struct es_oai_lp_token {
    const char *text;
    size_t len;
    float logprob;
    int64_t offset;                   /* completions' text_offset: where the token's text starts */
    int n_top;
    es_oai_lp_alt top[ES_OAI_MAX_TOP_LOGPROBS];
} es_oai_lp_token;
typedef struct es_oai_logprobs {
    const es_oai_lp_token *tok;
    int n;
    bool top;                         /* completions: top_logprobs asked for (logprobs > 0) */
} es_oai_logprobs;

/* /tokenize and /detokenize bodies (llama.cpp's server): content + add_special (default true) +
 * parse_special (default false), or tokens (non-negative ids; the vocabulary is checked by the
 * caller). Failures fill e (400) as es_oai_parse_request does. */
typedef struct es_oai_tok {
    char *content;
    bool add_special, parse_special;
    int32_t *ids;
    int n_ids;
} es_oai_tok;
bool es_oai_parse_tokenize(bool tokenize, const char *body, size_t len, es_oai_tok *out, es_oai_error *e);
void es_oai_tok_free(es_oai_tok *t);
/* {"content": TEXT} (TEXT valid UTF-8). NULL when out of memory. */
char *es_oai_content_json(const char *text);

/* Default max_tokens of a completion request without one (OpenAI's). */
#define ES_OAI_COMPLETION_DEFAULT_MAX_TOKENS 16

/* Parses a request body. On failure fills e (status 400) and returns false; *out is then empty. */
bool es_oai_parse_request(int kind, const char *body, size_t len, es_oai_request *out, es_oai_error *e);
void es_oai_request_free(es_oai_request *r);

/* Fills e as one of the OpenAI error kinds. */
void es_oai_error_set(es_oai_error *e, int status, const char *type, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* 400 context_length_exceeded when prompt + max_tokens exceed the context (naming both numbers);
 * true when it fits. */
bool es_oai_check_context(int n_prompt, int max_tokens, int n_ctx, es_oai_error *e);

/* ---- stop strings on streamed text ----
 * Text that could be the beginning of a stop string is held back until it is known not to be; a
 * match ends the text just before the stop string (which is not returned). The cut is at the
 * earliest match in the whole text, whatever the chunking: a match is not taken while a longer stop
 * string that would begin earlier may still complete. */
typedef struct es_stopstr {
    char *const *stop;     /* borrowed: the request's strings */
    int n_stop;
    es_str hold;
    bool matched;
} es_stopstr;

void es_stopstr_init(es_stopstr *s, char *const *stop, int n_stop);
/* Appends to out the text that is safe to send. Returns true once a stop string has matched (out
 * then ends before it; later calls add nothing). Sets *oom on allocation failure. */
bool es_stopstr_feed(es_stopstr *s, const char *text, size_t n, es_str *out, bool *oom);
/* End of the generation: resolves a match still pending and releases what was held back (check
 * `matched` afterwards). */
bool es_stopstr_flush(es_stopstr *s, es_str *out);
void es_stopstr_free(es_stopstr *s);

/* ---- stop strings on token ids, where the tokens are made ----
 * The front end cuts the text at a stop string on its own thread, but by the time it has seen the
 * match the generator may be tokens ahead. A backend runs this watch on the thread that produces the
 * tokens (the scheduler's event callback, an edge worker) with the same stop strings, never-shown ids
 * and detokeniser start as the front end, so it sees the match at the same token and stops there. It
 * owns copies of everything it is given. */
typedef struct es_stopwatch es_stopwatch;
#define ES_STOPWATCH_MAX_SKIP 16

/* NULL when out of memory or when there is nothing to watch (n_stop == 0). */
es_stopwatch *es_stopwatch_new(const es_tokenizer *tok, int32_t prev, char *const *stop, int n_stop, const int32_t *skip,
                               int n_skip);
/* Feeds generated tokens (in order); true once a stop string has completed (stays true). */
bool es_stopwatch_feed(es_stopwatch *w, const int32_t *toks, int n);
void es_stopwatch_free(es_stopwatch *w);

/* ---- response JSON (malloc'd strings, NULL when memory runs out) ---- */

typedef struct es_oai_usage {
    int prompt_tokens, completion_tokens;
} es_oai_usage;

/* The whole non-streamed response: a text_completion or a chat.completion object. */
char *es_oai_response_json(int kind, const char *id, int64_t created, const char *model, const char *text,
                           const char *finish_reason, const es_oai_usage *u);
/* One stream chunk. Chat: delta {role?, content?}; completions: text. finish_reason NULL while
 * streaming. role NULL except on the first chat chunk; text NULL for an empty delta. */
char *es_oai_chunk_json(int kind, const char *id, int64_t created, const char *model, const char *role, const char *text,
                        const char *finish_reason);
/* One choice of a response (n > 1: several, index = position). lp NULL: logprobs not asked for
 * (completions: "logprobs": null; chat: no field). */
typedef struct es_oai_choice {
    const char *text;
    const char *finish_reason;
    const es_oai_logprobs *lp;
    const char *tool_calls;  /* chat: the message's tool_calls as a JSON array text (NULL: none); with
                                them an empty text is "content": null */
} es_oai_choice;
/* The non-streamed response with n choices (es_oai_response_json is the n = 1 case without logprobs). */
char *es_oai_response_json_n(int kind, const char *id, int64_t created, const char *model, const es_oai_choice *c, int n,
                             const es_oai_usage *u);
/* A stream chunk of choice `index`, with the logprobs of its tokens (lp NULL: none). */
char *es_oai_chunk_json_ex(int kind, const char *id, int64_t created, const char *model, int index, const char *role,
                           const char *text, const char *finish_reason, const es_oai_logprobs *lp);
/* A chat stream chunk of choice `index` whose delta carries tool calls (tool_calls: a JSON array of
 * {"id","type","function":{"name","arguments"}}); each gets its "index" in the array, as OpenAI sends. */
char *es_oai_tool_calls_chunk_json(const char *id, int64_t created, const char *model, int index, const char *tool_calls);
/* The final usage chunk (stream_options.include_usage): choices [] and usage. */
char *es_oai_usage_chunk_json(int kind, const char *id, int64_t created, const char *model, const es_oai_usage *u);
/* {"error":{"message","type","param","code"}} */
char *es_oai_error_json(const es_oai_error *e);
/* GET /v1/models */
char *es_oai_models_json(const char *model, int64_t created, const char *owned_by);

#endif
