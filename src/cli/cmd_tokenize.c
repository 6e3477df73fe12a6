/* cmd_tokenize.c — `edgespec tokenize -m MODEL.gguf (-p TEXT | -f FILE) [--no-bos] [--special] [--ids]
 * [--json]`: the token ids of a text under a GGUF file's tokenizer. Reads only the tokenizer.* metadata,
 * so vocabulary-only GGUF files (no tensors, as llama.cpp's ggml-vocab-*.gguf) work too. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"

static const char k_usage[] =
    "edgespec tokenize -m MODEL.gguf (-p TEXT | -f FILE) [--no-bos] [--special] [--ids] [--json]";

/* The largest -f file: the text is held in memory with its ids. */
#define TOKENIZE_MAX_FILE (256u << 20)

static void print_help(void) {
    printf("usage: %s\n\n"
           "Prints the token ids of a text under the tokenizer of a GGUF file (a model or a\n"
           "vocabulary-only file). By default one line per token: the id, a tab, and the token's text\n"
           "in quotes (\\n, \\r, \\t, \\\\, \\' and other control bytes escaped).\n\n"
           "options:\n"
           "  -m, --model FILE   the GGUF file\n"
           "  -p, --prompt TEXT  the text\n"
           "  -f, --file FILE    read the text from FILE (its bytes exactly, no newline stripped)\n"
           "  --no-bos           do not prepend BOS (by default it is added when the vocabulary asks)\n"
           "  --special          recognise control-token texts (e.g. <|im_start|>) in the text\n"
           "  --ids              print only the ids, separated by spaces, on one line\n"
           "  --json             print one JSON object {model, n_vocab, tokenizer, pre, count, ids, pieces}\n"
           "  -h, --help         show this help\n",
           k_usage);
}

/* Reads FILE whole into a malloc'd buffer. */
static int read_text(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return cli_error("tokenize", "cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            if (cap >= TOKENIZE_MAX_FILE) {
                free(buf);
                fclose(f);
                return cli_error("tokenize", "%s is larger than %u bytes", path, TOKENIZE_MAX_FILE);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return cli_error("tokenize", "out of memory reading %s", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    bool failed = !buf || ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return cli_error("tokenize", "cannot read %s", path);
    }
    *out = buf;
    *len = n;
    return 0;
}

static void print_quoted(const char *s, int n) {
    putchar('\'');
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\\') fputs("\\\\", stdout);
        else if (c == '\'') fputs("\\'", stdout);
        else if (c < 0x20 || c == 0x7F) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('\'');
}

static int print_json(const char *model, const es_tokenizer *tok, const char *pre, const int32_t *ids, int n,
                      char *piece, int piece_cap) {
    cJSON *j = cJSON_CreateObject();
    cJSON *jids = cJSON_CreateArray(), *jp = cJSON_CreateArray();
    if (!j || !jids || !jp) {
        cJSON_Delete(j);
        cJSON_Delete(jids);
        cJSON_Delete(jp);
        return cli_error("tokenize", "out of memory");
    }
    char *m = cli_utf8_clean(model, strlen(model));
    cJSON_AddStringToObject(j, "model", m ? m : "");
    free(m);
    cJSON_AddNumberToObject(j, "n_vocab", es_tokenizer_n_vocab(tok));
    cJSON_AddStringToObject(j, "tokenizer", es_tokenizer_kind(tok) == ES_TOK_SPM ? "llama" : "gpt2");
    if (pre) cJSON_AddStringToObject(j, "pre", pre);
    else cJSON_AddNullToObject(j, "pre");
    cJSON_AddNumberToObject(j, "count", n);
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(jids, cJSON_CreateNumber(ids[i]));
        int l = es_token_to_piece(tok, i > 0 ? ids[i - 1] : -1, ids[i], piece, piece_cap);
        char *c = cli_utf8_clean(piece, (size_t)l);
        cJSON_AddItemToArray(jp, cJSON_CreateString(c ? c : ""));
        free(c);
    }
    cJSON_AddItemToObject(j, "ids", jids);
    cJSON_AddItemToObject(j, "pieces", jp);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return cli_error("tokenize", "out of memory");
    printf("%s\n", s);
    free(s);
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *file = NULL;
    bool add_bos = true, special = false, json = false, ids_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_next = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_help();
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && has_next) {
            model = argv[++i];
        } else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && has_next) {
            prompt = argv[++i];
        } else if ((!strcmp(a, "-f") || !strcmp(a, "--file")) && has_next) {
            file = argv[++i];
        } else if (!strcmp(a, "--no-bos")) {
            add_bos = false;
        } else if (!strcmp(a, "--special")) {
            special = true;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--ids")) {
            ids_only = true;
        } else {
            return cli_usage_error("tokenize", k_usage, "unknown or incomplete option '%s'", a);
        }
    }
    if (!model) return cli_usage_error("tokenize", k_usage, "-m MODEL.gguf is required");
    if (!prompt == !file) return cli_usage_error("tokenize", k_usage, "give exactly one of -p TEXT and -f FILE");

    char *text = NULL;
    size_t len = 0;
    if (file) {
        int rc = read_text(file, &text, &len);
        if (rc) return rc;
    }
    es_err err = {0};
    es_gguf *g = NULL;
    es_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    char *piece = NULL;
    int rc = 0;
    if (es_gguf_open(model, &g, &err) != ES_OK) { rc = cli_error("tokenize", "%s: %s", model, err.msg); goto done; }
    if (es_tokenizer_from_gguf(g, &tok, &err) != ES_OK) {
        rc = cli_error("tokenize", "%s: %s", model, err.msg);
        goto done;
    }
    const char *src = file ? text : prompt;
    size_t n_src = file ? len : strlen(prompt);
    int n = 0;
    if (es_tokenize(tok, src, n_src, add_bos, special, NULL, 0, &n, &err) != ES_OK) {
        rc = cli_error("tokenize", "%s", err.msg);
        goto done;
    }
    ids = malloc(((size_t)n + 1) * sizeof *ids);
    int piece_cap = es_tokenizer_max_token_len(tok) + 4;
    piece = malloc((size_t)piece_cap);
    if (!ids || !piece) { rc = cli_error("tokenize", "out of memory for %d tokens", n); goto done; }
    if (es_tokenize(tok, src, n_src, add_bos, special, ids, n, &n, &err) != ES_OK) {
        rc = cli_error("tokenize", "%s", err.msg);
        goto done;
    }
    if (json) {
        const char *pre = NULL;
        size_t pl;
        if (es_gguf_find_kv(g, "tokenizer.ggml.pre") >= 0 && !es_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pl)) pre = NULL;
        rc = print_json(model, tok, pre, ids, n, piece, piece_cap);
    } else if (ids_only) {
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
    } else {
        for (int i = 0; i < n; i++) {
            int l = es_token_to_piece(tok, i > 0 ? ids[i - 1] : -1, ids[i], piece, piece_cap);
            printf("%d\t", ids[i]);
            print_quoted(piece, l);
            putchar('\n');
        }
    }
done:
    free(piece);
    free(ids);
    es_tokenizer_free(tok);
    es_gguf_free(g);
    free(text);
    return rc;
}
