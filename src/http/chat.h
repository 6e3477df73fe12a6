/* chat.h — chat templates: turning a list of messages into the prompt text a chat model was trained
 * on. Full Jinja is not interpreted; instead the family is recognised from the model's
 * `tokenizer.chat_template` string (GGUF metadata) by its marker tokens, and rendered natively:
 *
 *   ChatML         (<|im_start|>)        <|im_start|>ROLE\nTEXT<|im_end|>\n ... <|im_start|>assistant\n
 *   Qwen2 / Qwen2.5 (<|im_start|> and its  ChatML, opened by Qwen's default system message when the first
 *                  default system text)    message is not a system one; a run of tool messages is one user
 *                                          turn of <tool_response> blocks (the models' own Jinja template
 *                                          without tools, as Hugging Face renders it)
 *   Llama-3        (<|start_header_id|>) <|start_header_id|>ROLE<|end_header_id|>\n\nTEXT<|eot_id|> ...
 *                                        <|start_header_id|>assistant<|end_header_id|>\n\n
 *   Llama-2 / Mistral ([INST])           [INST] <<SYS>>\nSYSTEM\n<</SYS>>\n\nUSER [/INST] ANSWER</s><s>[INST] ...
 *   Zephyr         (<|user|>)            <|system|>\nTEXT</s>\n<|user|>\nTEXT</s>\n<|assistant|>\n
 *   fallback (no template, or one not recognised): a plain transcript, one "role: text" line per
 *   message and a final "assistant:" to continue from.
 *
 * The model's own Jinja template (src/jinja/) renders instead of these when the GGUF carries one that
 * parses (es_chat_render_jinja); the families remain for --chat-template FAMILY and as the fallback.
 *
 * BOS is not written: the tokenizer adds it as the vocabulary asks. The rendered text holds control
 * tokens, so it is tokenised with parse_special. The family's end-of-turn token (<|im_end|>,
 * <|eot_id|>) is a stop token of the generation. */
#ifndef ES_SERVER_CHAT_H
#define ES_SERVER_CHAT_H

#include <stdbool.h>

#include "http/oai.h"
#include "jinja/jinja.h"
#include "util/str.h"

typedef enum es_chat_family {
    ES_CHAT_FALLBACK = 0,
    ES_CHAT_CHATML,
    ES_CHAT_LLAMA2,
    ES_CHAT_LLAMA3,
    ES_CHAT_ZEPHYR,
    ES_CHAT_QWEN2,
    ES_CHAT_FAMILY_COUNT
} es_chat_family;

/* The family a template belongs to (NULL or unrecognised: ES_CHAT_FALLBACK). */
es_chat_family es_chat_detect(const char *tmpl);
/* "chatml", "llama2", "llama3", "zephyr", "qwen2", "fallback". */
const char *es_chat_family_name(es_chat_family f);
/* Parses a family name (as es_chat_family_name prints it); -1 if unknown. */
int es_chat_family_parse(const char *name);
/* The text of the family's end-of-turn marker, or NULL when the model's EOS ends a turn. */
const char *es_chat_end_of_turn(es_chat_family f);
/* Renders the messages plus the opening of the assistant's turn into out. False when memory runs out. */
bool es_chat_render(es_chat_family f, const es_oai_message *msgs, int n, es_str *out);

/* ---- the model's Jinja template ---- */

/* The end-of-turn marker a Jinja template writes (<|im_end|>, <|eot_id|>, <end_of_turn>, <|end|>), or
 * NULL when none is recognised (the model's EOS ends a turn). */
const char *es_chat_jinja_end_of_turn(const char *src);
/* Whether a template shows the model a `tools` variable (Qwen2.5, Llama 3.1, Mistral's newer ones). */
bool es_chat_jinja_takes_tools(const char *src);
/* Renders the messages with a Jinja template as transformers' apply_chat_template does: variables
 * messages (role, content (null for a null content), tool_calls with each function's arguments as a
 * JSON object when the client sent JSON text, as the templates expect, tool_call_id, name), tools
 * (tools_json, when not NULL), add_generation_prompt = true, bos_token, eos_token; strftime_now reads
 * `now`. ES_ERR_INVALID_ARG (the template refused the conversation, with its message) or
 * ES_ERR_RANGE (a limit) are the client's to fix; ES_ERR_NOMEM. */
es_status es_chat_render_jinja(const es_jinja *t, const es_oai_message *msgs, int n, const char *tools_json, const char *bos,
                               const char *eos, int64_t now, es_str *out, es_err *err);

/* ---- tool calls in a reply ----
 * The Qwen2.5 / Hermes form, <tool_call>{"name":..., "arguments":{...}}</tool_call> (one or more, after
 * optional text); Mistral's [TOOL_CALLS] followed by a JSON array of calls; Llama 3.1's <|python_tag|>
 * followed by a call's JSON ({"name":..., "parameters":{...}}, several separated by ';'); and, as
 * llama.cpp's parser also accepts, a reply that is nothing but one such JSON object (or an array of
 * them), bare or in a ```json fence, naming tools of the request (the small Qwen2.5-Coder models
 * answer so, and Llama 3.1 without its python tag). */

/* How many bytes of a streamed reply's text can go out as content now. `start`: the text is the
 * reply's beginning. Up to an opener ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>": *call set);
 * at the start, nothing while only white space came, and nothing at all (*call set) when the reply
 * opens with '{', '`' or '[' (it may be a bare call: held to the end); else all but a tail that may
 * begin an opener. */
size_t es_chat_tool_content_len(const char *text, size_t len, bool start, bool *call);
/* Splits a complete reply into its content (the first *content_len bytes, trailing white space
 * dropped) and its calls, as OpenAI's tool_calls JSON array (*calls, malloc'd; ids are
 * "call_<id_prefix>_<k>", arguments JSON text). tools_json: the request's tools (the names a bare call
 * may use). False (nothing allocated) when the reply holds no well-formed call: it is plain content. */
bool es_chat_parse_tool_calls(const char *text, size_t len, const char *tools_json, const char *id_prefix, size_t *content_len,
                              char **calls);

#endif
