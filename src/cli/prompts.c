/* prompts.c — reading the prompt files of cli/prompts.h. */
#include "cli/prompts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

/* q->text's tokens into q->tok, allocated at the encoding's exact length (counted first, so no
 * guess at tokens per byte can fall short). Returns ES_OK with q->n_tok 0 when the text does not
 * tokenize or gives no token, ES_ERR_NOMEM. */
static es_status tokenize(const es_tokenizer *tok, cli_prompt *q, es_err *err) {
    es_err terr = {{0}};
    int n = 0;
    q->n_tok = 0;
    if (es_tokenize(tok, q->text, q->len, true, false, NULL, 0, &n, &terr) != ES_OK || n < 1) return ES_OK;
    q->tok = malloc((size_t)n * sizeof *q->tok);
    if (!q->tok) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    if (es_tokenize(tok, q->text, q->len, true, false, q->tok, n, &q->n_tok, &terr) != ES_OK || q->n_tok != n) q->n_tok = 0;
    return ES_OK;
}

/* Room for one more prompt. The array grows with the file, never to max at once: bench serve's max
 * is clients × prompts per client, which may be far more than the file holds. */
static es_status reserve(cli_prompts *p, es_err *err) {
    if (p->count < p->cap) return ES_OK;
    const int cap = p->cap ? 2 * p->cap : 16;
    cli_prompt *at = realloc(p->at, (size_t)cap * sizeof *at);
    if (!at) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    p->at = at;
    p->cap = cap;
    return ES_OK;
}

/* Appends line[0..len) to p, with its tokens when tok is set; a line with no token is passed over. */
static es_status add_prompt(cli_prompts *p, const char *line, size_t len, const es_tokenizer *tok, es_err *err) {
    cli_prompt q = {.text = malloc(len + 1), .len = len};
    if (!q.text) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    memcpy(q.text, line, len);
    q.text[len] = 0;
    es_status st = tok ? tokenize(tok, &q, err) : ES_OK;
    if (st == ES_OK && (!tok || q.n_tok > 0) && (st = reserve(p, err)) == ES_OK) {
        p->at[p->count++] = q;
        return ES_OK;
    }
    free(q.tok);
    free(q.text);
    return st;
}

es_status cli_prompts_read(const char *path, int max, const es_tokenizer *tok, cli_prompts *p, es_err *err) {
    *p = (cli_prompts){0};
    FILE *f = fopen(path, "r");
    if (!f) return es_fail(err, ES_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    char line[CLI_PROMPT_LINE_MAX];
    es_status st = ES_OK;
    while (st == ES_OK && p->count < max && fgets(line, sizeof line, f)) {
        const size_t len = strcspn(line, "\r\n");
        if (len) st = add_prompt(p, line, len, tok, err);
    }
    /* a read error (a folder given as the file: EISDIR) is not an empty file */
    if (st == ES_OK && ferror(f)) st = es_fail(err, ES_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    fclose(f);
    return st;
}

void cli_prompts_free(cli_prompts *p) {
    for (int i = 0; i < p->count; i++) {
        free(p->at[i].tok);
        free(p->at[i].text);
    }
    free(p->at);
    *p = (cli_prompts){0};
}
