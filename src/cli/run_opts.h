/* run_opts.h — options of `edgespec run`, shared by the plain and the speculative paths. */
#ifndef ES_CLI_RUN_OPTS_H
#define ES_CLI_RUN_OPTS_H

#include <stdbool.h>

#include "edgespec.h"

typedef struct es_run_opts {
    const char *cmd;         /* the subcommand the options belong to ("run", "edge"), for messages */
    const char *model_path;
    const char *prompt;
    char *prompt_owned;      /* prompt read with -f */
    int n_predict;
    int n_threads;
    int n_ctx;
    int n_batch;
    es_kv_type kv_type;      /* --kv-type (default f16) */
    es_backend_kind backend; /* --device cpu|vulkan[:N] (the target's forward pass; a draft stays on the CPU) */
    int device;
    bool add_bos;
    bool json;
    es_sampler_params sp;
    /* speculative decoding */
    const char *draft_path;
    const char *spec_mode;   /* chain | tree */
    const char *accept;      /* greedy | match | rejection */
    int draft_max;
    int draft_min;
    double draft_p_min;
    int tree_budget, tree_depth, tree_width;
    double synthetic_alpha;  /* < 0: off */
    bool adaptive;
} es_run_opts;

/* Parses argv (argv[0] = "run"). Returns 0 on success, -1 for --help, -2 for --help-spec, 2 for a
 * usage error (message already printed). */
int es_run_opts_parse(int argc, char **argv, es_run_opts *o, const char *usage);
void es_run_opts_free(es_run_opts *o);
void es_run_opts_print_spec_help(void);

int es_run_plain(es_run_opts *o);
int es_run_speculative(es_run_opts *o);

/* Shared by both paths: loads a model with progress and prints errors. NULL on failure. A model for a
 * device backend keeps the file's layout (the CPU's repacked copies are of no use there). */
es_model *es_run_load_model(const char *cmd, const char *path, es_backend_kind backend);
/* Sets the context parameters of --device: backend, index, and with EDGESPEC_VK_VALIDATION=1 in the
 * environment (tests) the Vulkan validation layer, its messages printed on stderr. */
void es_run_device_params(const es_run_opts *o, es_ctx_params *cp);
/* Streams a token's text to stdout (when not --json) and appends it to a growing buffer. */
typedef struct es_textbuf { char *s; size_t len, cap; } es_textbuf;
void es_textbuf_append(es_textbuf *t, const char *s, size_t n);

#endif
