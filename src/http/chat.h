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
 * BOS is not written: the tokenizer adds it as the vocabulary asks. The rendered text holds control
 * tokens, so it is tokenised with parse_special. The family's end-of-turn token (<|im_end|>,
 * <|eot_id|>) is a stop token of the generation. */
#ifndef ES_SERVER_CHAT_H
#define ES_SERVER_CHAT_H

#include <stdbool.h>

#include "http/oai.h"
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

#endif
