/* opts.h — the subcommands' options as tables: one row per option (its names, what it writes where,
 * its range and the words of its error), read by one loop. A command's parser is then its table, the
 * few options that need code of their own (cli_arg handlers), and the rules between options. */
#ifndef ES_CLI_OPTS_H
#define ES_CLI_OPTS_H

#include <stdbool.h>
#include <stddef.h>

typedef enum cli_kind {
    CLI_SET,    /* a flag: *(bool *)dst = true */
    CLI_CLEAR,  /* a flag: *(bool *)dst = false */
    CLI_STOP,   /* a flag that ends parsing at once: cli_opts_parse returns the row's stop code */
    CLI_REFUSE, /* refused with "NAME: must" (an option of another command) */
    CLI_STR,    /* *(const char **)dst = the value; max > 0: 1..max bytes; choices: "a|b|c" */
    CLI_CHOICE, /* *(int *)dst = vals[i] for the value that is the i-th of choices "a|b|c" */
    CLI_INT,    /* *(int *)dst: an integer in lo..hi */
    CLI_LONG,   /* *(long *)dst: an integer in lo..hi */
    CLI_U64,    /* *(uint64_t *)dst: any non-negative integer (a seed) */
    CLI_DOUBLE, /* *(double *)dst: a number in lo..hi (above lo when lo_open; 0 stored as -1 when
                 * zero_off: "0: off" where 0 is taken to mean "the default") */
    CLI_FLOAT,  /* *(float *)dst: the same, stored as float */
    CLI_I64,    /* *(int64_t *)dst: a byte count (digits with K, M, G or T) in lo..hi */
    CLI_U32,    /* *(uint32_t *)dst: the same */
    CLI_ZU,     /* *(size_t *)dst: the same */
    CLI_FN,     /* fn(&arg) with the value; false: refused */
    CLI_FN0,    /* fn(&arg) for a flag (arg.value NULL) */
} cli_kind;

/* What a handler gets: where the option was given and what to write to. */
typedef struct cli_arg {
    const char *cmd, *usage; /* for cli_usage_error */
    const char *name;        /* the option as typed */
    const char *value;       /* its value (NULL for CLI_FN0) */
    void *dst;               /* the row's dst */
} cli_arg;

typedef struct cli_opt {
    const char *names; /* "-t|--threads": every spelling; the first "--" one names it in errors */
    cli_kind kind;
    void *dst;
    double lo, hi;     /* CLI_INT .. CLI_ZU: the range, both ends included */
    const char *must;  /* the error after the name: "must be in 1..512" ("got '...'" is added). A
                        * CLI_FN row with must NULL prints its own errors */
    bool (*fn)(const cli_arg *a);
    size_t max;        /* CLI_STR: the most bytes (then at least 1); 0: any */
    const char *choices; /* CLI_STR, CLI_CHOICE: the values allowed, "a|b" */
    const int *vals;   /* CLI_CHOICE: what each choice stores */
    bool lo_open;      /* CLI_DOUBLE / CLI_FLOAT: lo itself is refused */
    bool zero_off;     /* CLI_DOUBLE: 0 is stored as -1 */
    int stop;          /* CLI_STOP: what cli_opts_parse returns */
} cli_opt;

/* Reads argv[1..argc) against the n rows of t. An argument no row names is a usage error, or, when
 * rest is not NULL, appended to rest (which has room for argc entries; *n_rest counts them) for
 * another parser. Returns 0 when every argument was taken, a CLI_STOP row's stop, or 2 after
 * printing a usage error (cli_usage_error: "edgespec CMD: ..." and the usage). */
int cli_opts_parse(const char *cmd, const char *usage, const cli_opt *t, size_t n, int argc, char **argv, char **rest,
                   int *n_rest);

/* A handler several commands share: --kv-type f32|f16|q8_0 into *(es_kv_type *)dst. */
bool cli_opt_kv_type(const cli_arg *a);

#endif
