/* run_output.h — prompt tokenisation and result printing shared by the plain and speculative paths
 * of `edgespec run`: streamed text on stdout, or one JSON object with --json. */
#ifndef ES_CLI_RUN_OUTPUT_H
#define ES_CLI_RUN_OUTPUT_H

#include <cjson/cJSON.h>

#include "cli/run_opts.h"
#include "tokenizer/detok.h"
#include "util/str.h"

typedef struct es_run_prompt {
    int32_t *ids; /* malloc'd */
    int n;
} es_run_prompt;

/* Tokenises o->prompt (BOS per o->add_bos). Returns 0, or 1 after printing an error. */
int es_run_tokenize(const es_tokenizer *tok, const es_run_opts *o, es_run_prompt *out);

typedef struct es_run_output {
    const es_run_opts *o;
    const es_tokenizer *tok;
    const int32_t *prompt;
    int n_prompt;
    int32_t prev;
    es_textbuf text;
    es_detok dt;       /* the same text as valid UTF-8, for JSON (an unfinished character at the end: U+FFFD) */
    es_str utf8;
    bool utf8_oom;
    double prefill_s, decode_s;
} es_run_output;

void es_run_output_init(es_run_output *out, const es_run_opts *o, const es_tokenizer *tok, const int32_t *prompt, int n_prompt);
/* A confirmed generated token: streamed to stdout unless --json. */
void es_run_output_token(es_run_output *out, int32_t t);
/* Prints the JSON object (taking ownership of `extra`, added as "spec" when non-NULL) or the
 * timing line on stderr. */
void es_run_output_finish(es_run_output *out, const int32_t *gen, int n_gen, const char *stop, const es_model *model,
                          cJSON *extra);
/* The generated text as valid UTF-8 (what --json prints): held bytes of a character the generation
 * ended inside become U+FFFD. Call once, at the end; "" when memory ran out. */
const char *es_run_output_utf8(es_run_output *out);
void es_run_output_free(es_run_output *out);

#endif
