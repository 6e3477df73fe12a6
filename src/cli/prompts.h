/* prompts.h — the prompt files of bench spec, bench serve and fit-exit: one prompt per line, read
 * the same way by each. */
#ifndef ES_CLI_PROMPTS_H
#define ES_CLI_PROMPTS_H

#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"

/* Lines are read in pieces of at most this many bytes less one: a longer line counts as several. */
#define CLI_PROMPT_LINE_MAX 4096

typedef struct cli_prompt {
    char *text;   /* without its line end, NUL-terminated */
    size_t len;   /* strlen(text) */
    int32_t *tok; /* its tokens, BOS first where the vocabulary asks; NULL when read without a tokenizer */
    int n_tok;
} cli_prompt;

typedef struct cli_prompts {
    cli_prompt *at; /* [count] in the file's order */
    int count, cap;
} cli_prompts;

/* Reads the first `max` prompts of the file at path into *p: each line that is not empty once cut at
 * its first CR or LF. With tok, each is also tokenized (BOS added, control-token texts read as plain
 * text), and a line that does not tokenize or gives no token is passed over: it does not count
 * toward max. Returns ES_OK, possibly with no prompts; ES_ERR_IO when the file cannot be opened or
 * read ("cannot open PATH: REASON", "cannot read PATH: REASON" in err); ES_ERR_NOMEM. *p is to be released with cli_prompts_free
 * whatever the result. */
es_status cli_prompts_read(const char *path, int max, const es_tokenizer *tok, cli_prompts *p, es_err *err);

void cli_prompts_free(cli_prompts *p);

#endif
