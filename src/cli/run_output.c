#include "cli/run_output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "kernels/attn.h"

int es_run_tokenize(const es_tokenizer *tok, const es_run_opts *o, es_run_prompt *out) {
    es_err err = {{0}};
    size_t len = strlen(o->prompt);
    int cap = (int)(len + 8), n = 0;
    out->ids = malloc((size_t)cap * sizeof(int32_t));
    if (!out->ids) return cli_error(o->cmd ? o->cmd : "run", "out of memory");
    if (es_tokenize(tok, o->prompt, len, o->add_bos, false, out->ids, cap, &n, &err) != ES_OK) {
        free(out->ids);
        out->ids = NULL;
        return cli_error(o->cmd ? o->cmd : "run", "tokenizing the prompt: %s", err.msg);
    }
    if (n > cap) { /* cannot happen for byte-fallback vocabularies, but stay safe */
        free(out->ids);
        out->ids = NULL;
        return cli_error(o->cmd ? o->cmd : "run", "prompt tokenisation overflow");
    }
    if (n == 0) {
        free(out->ids);
        out->ids = NULL;
        return cli_error(o->cmd ? o->cmd : "run", "the prompt is empty and the model has no BOS token to start from");
    }
    out->n = n;
    return 0;
}

void es_run_output_init(es_run_output *out, const es_run_opts *o, const es_tokenizer *tok, const int32_t *prompt, int n_prompt) {
    memset(out, 0, sizeof *out);
    out->o = o;
    out->tok = tok;
    out->prompt = prompt;
    out->n_prompt = n_prompt;
    out->prev = n_prompt ? prompt[n_prompt - 1] : -1;
    es_detok_init(&out->dt, tok, out->prev);
}

void es_run_output_token(es_run_output *out, int32_t t) {
    char piece[256];
    int n = es_token_to_piece(out->tok, out->prev, t, piece, (int)sizeof piece);
    if (n < 0) n = 0;
    if (n > (int)sizeof piece) n = (int)sizeof piece;
    out->prev = t;
    es_textbuf_append(&out->text, piece, (size_t)n);
    /* a token may end inside a character (byte fallback, byte-level BPE): JSON needs whole ones */
    if (out->o->json && !es_detok_push(&out->dt, t, &out->utf8)) out->utf8_oom = true;
    if (!out->o->json) {
        fwrite(piece, 1, (size_t)n, stdout);
        fflush(stdout);
    }
}

static cJSON *int_array(const int32_t *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

void es_run_output_finish(es_run_output *out, const int32_t *gen, int n_gen, const char *stop, const es_model *model,
                          cJSON *extra) {
    /* Tokens counted for speed exclude nothing: every generated token cost a step. */
    const double pf = out->prefill_s > 0 ? out->n_prompt / out->prefill_s : 0;
    const double dc = out->decode_s > 0 ? n_gen / out->decode_s : 0;
    if (out->o->json) {
        cJSON *j = cJSON_CreateObject();
        char desc[256];
        cJSON_AddStringToObject(j, "model", out->o->model_path);
        cJSON_AddStringToObject(j, "model_desc", es_model_desc(model, desc, sizeof desc));
        cJSON_AddItemToObject(j, "prompt_tokens", int_array(out->prompt, out->n_prompt));
        cJSON_AddItemToObject(j, "tokens", int_array(gen, n_gen));
        cJSON_AddStringToObject(j, "text", es_run_output_utf8(out));
        cJSON_AddNumberToObject(j, "n_prompt", out->n_prompt);
        cJSON_AddNumberToObject(j, "n_generated", n_gen);
        cJSON_AddStringToObject(j, "stop_reason", stop);
        cJSON_AddNumberToObject(j, "prefill_seconds", out->prefill_s);
        cJSON_AddNumberToObject(j, "decode_seconds", out->decode_s);
        cJSON_AddNumberToObject(j, "prefill_tokens_per_second", pf);
        cJSON_AddNumberToObject(j, "decode_tokens_per_second", dc);
        cJSON_AddNumberToObject(j, "threads", out->o->n_threads);
        cJSON_AddStringToObject(j, "kv_type", es_kv_type_name(out->o->kv_type));
        cJSON_AddNumberToObject(j, "temperature", out->o->sp.temperature);
        cJSON_AddNumberToObject(j, "seed", (double)out->o->sp.seed);
        if (extra) cJSON_AddItemToObject(j, "spec", extra);
        char *s = cJSON_PrintUnformatted(j);
        if (s) puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        putchar('\n');
        fflush(stdout);
        if (out->prefill_s > 0)
            fprintf(stderr, "edgespec run: prompt %d tokens in %.3f s (%.1f tok/s), ", out->n_prompt, out->prefill_s, pf);
        else /* speculative runs prefill inside their first round */
            fprintf(stderr, "edgespec run: prompt %d tokens (prefilled within the first round), ", out->n_prompt);
        fprintf(stderr, "generated %d tokens in %.3f s (%.1f tok/s), stop: %s\n", n_gen, out->decode_s, dc, stop);
        if (extra) {
            char *s = cJSON_PrintUnformatted(extra);
            if (s) fprintf(stderr, "edgespec run: spec %s\n", s);
            free(s);
            cJSON_Delete(extra);
        }
    }
}

const char *es_run_output_utf8(es_run_output *out) {
    if (!es_detok_flush(&out->dt, &out->utf8)) out->utf8_oom = true;
    return out->utf8_oom ? "" : es_str_cstr(&out->utf8);
}

void es_run_output_free(es_run_output *out) {
    free(out->text.s);
    es_str_free(&out->utf8);
}
