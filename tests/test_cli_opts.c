/* test_cli_opts.c — the option table loop of src/cli/opts.c (every subcommand's parser): each kind
 * stores what it should where it should, ranges and lengths are enforced at both ends, a missing value
 * or an unknown option is a usage error (2), unknown options go to `rest` when asked, a stop row ends
 * parsing with its code. Error messages go to stderr. */
#include <stdint.h>
#include <string.h>

#include "cli/opts.h"
#include "testutil.h"

typedef struct vals {
    bool flag, on;
    const char *str, *name, *mode;
    int i, choice;
    long l;
    double d, timeout;
    float f;
    int64_t size;
    uint64_t seed;
    uint32_t small;
    size_t body;
    int fn_calls, fn0_calls;
} vals;

static bool fn_even(const cli_arg *a) {
    vals *v = a->dst;
    v->fn_calls++;
    return strlen(a->value) % 2 == 0;
}
static bool fn0(const cli_arg *a) {
    ((vals *)a->dst)->fn0_calls++;
    return true;
}

static const int k_choice_vals[] = {10, 20, 30};

/* Parses the NULL-terminated args (argv[0] "test" added) into a fresh v; returns the code. */
static int parse(vals *v, char **rest, int *n_rest, const char *const *args) {
    memset(v, 0, sizeof *v);
    v->on = true;
    const cli_opt t[] = {
        {.names = "-h|--help", .kind = CLI_STOP, .stop = 7},
        {.names = "-f|--flag", .kind = CLI_SET, .dst = &v->flag},
        {.names = "--no-on", .kind = CLI_CLEAR, .dst = &v->on},
        {.names = "-s|--str", .kind = CLI_STR, .dst = &v->str},
        {.names = "--name", .kind = CLI_STR, .dst = &v->name, .max = 4, .must = "must be 1..4 bytes"},
        {.names = "--mode", .kind = CLI_STR, .dst = &v->mode, .choices = "a|bb|c", .must = "must be a, bb or c"},
        {.names = "--choice", .kind = CLI_CHOICE, .dst = &v->choice, .choices = "x|y|z", .vals = k_choice_vals,
         .must = "must be x, y or z"},
        {.names = "-i|--int", .kind = CLI_INT, .dst = &v->i, .lo = -3, .hi = 5, .must = "must be in -3..5"},
        {.names = "--long", .kind = CLI_LONG, .dst = &v->l, .lo = 0, .hi = 1L << 40, .must = "must be >= 0"},
        {.names = "--dbl", .kind = CLI_DOUBLE, .dst = &v->d, .lo = 0, .hi = 1, .lo_open = true, .must = "must be in (0, 1]"},
        {.names = "--timeout", .kind = CLI_DOUBLE, .dst = &v->timeout, .lo = 0, .hi = 100, .zero_off = true,
         .must = "must be 0..100 (0: off)"},
        {.names = "--flt", .kind = CLI_FLOAT, .dst = &v->f, .lo = -2, .hi = 2, .must = "must be in -2..2"},
        {.names = "--seed", .kind = CLI_U64, .dst = &v->seed, .must = "must be a non-negative integer"},
        {.names = "--size", .kind = CLI_I64, .dst = &v->size, .lo = 1, .hi = (double)(1ull << 40), .must = "must be a size"},
        {.names = "--small", .kind = CLI_U32, .dst = &v->small, .lo = 4096, .hi = 1 << 20, .must = "must be 4K..1M"},
        {.names = "--body", .kind = CLI_ZU, .dst = &v->body, .lo = 256, .hi = 1 << 30, .must = "must be 256..1G"},
        {.names = "--even", .kind = CLI_FN, .dst = v, .fn = fn_even, .must = "must have an even length"},
        {.names = "--fn0", .kind = CLI_FN0, .dst = v, .fn = fn0},
        {.names = "-b|--batch", .kind = CLI_REFUSE, .must = "not here"},
    };
    char *argv[32] = {"test"};
    int argc = 1;
    for (; args[argc - 1] && argc < 32; argc++) argv[argc] = (char *)args[argc - 1];
    return cli_opts_parse("test", "test [options]", t, sizeof t / sizeof t[0], argc, argv, rest, n_rest);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

int main(void) {
    vals v;
    /* every kind, long and short spellings */
    CHECK(parse(&v, NULL, NULL,
                ARGS("-f", "--no-on", "-s", "hello", "--name", "abcd", "--mode", "bb", "--choice", "z", "-i", "-3", "--long",
                     "1099511627776", "--dbl", "1", "--timeout", "2.5", "--flt", "-1.5", "--size", "2G", "--small", "4K",
                     "--body", "1M", "--even", "ab", "--fn0")) == 0);
    CHECK(v.flag && !v.on && !strcmp(v.str, "hello") && !strcmp(v.name, "abcd") && !strcmp(v.mode, "bb"));
    CHECK(v.choice == 30 && v.i == -3 && v.l == 1L << 40 && v.d == 1.0 && v.timeout == 2.5 && v.f == -1.5f);
    CHECK(v.size == (int64_t)2 << 30 && v.small == 4096 && v.body == (size_t)1 << 20);
    CHECK(v.fn_calls == 1 && v.fn0_calls == 1);
    CHECK(parse(&v, NULL, NULL, ARGS("--seed", "18446744073709551615")) == 0 && v.seed == UINT64_MAX);
    /* the last of a repeated option wins; 0 stored as -1 where 0 means off */
    CHECK(parse(&v, NULL, NULL, ARGS("-i", "1", "--int", "5", "--timeout", "0")) == 0 && v.i == 5 && v.timeout == -1);
    /* nothing given: the table's destinations untouched */
    CHECK(parse(&v, NULL, NULL, ARGS("-s", "x")) == 0 && !v.flag && v.on && v.i == 0 && v.choice == 0);

    /* bad values: each a usage error (2), at both ends of every range */
    static const char *const bad[][2] = {
        {"--name", ""},      {"--name", "abcde"}, {"--mode", "d"},     {"--mode", "b"},      {"--choice", "w"},
        {"-i", "-4"},        {"--int", "6"},      {"-i", "1.5"},       {"-i", "3x"},         {"--long", "-1"},
        {"--dbl", "0"},      {"--dbl", "1.01"},   {"--dbl", "nan"},    {"--timeout", "-1"},  {"--flt", "2.5"},
        {"--size", "0"},     {"--size", "2T"},    {"--small", "4095"}, {"--small", "2M"},    {"--body", "255"},
        {"--even", "abc"},   {"--seed", "-1"},    {"--seed", "1e3"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        const int rc = parse(&v, NULL, NULL, ARGS(bad[k][0], bad[k][1]));
        CHECK_MSG(rc == 2, "%s '%s': %d, want 2", bad[k][0], bad[k][1], rc);
    }
    /* a missing value, an unknown option, a refused one */
    CHECK(parse(&v, NULL, NULL, ARGS("-s")) == 2);
    CHECK(parse(&v, NULL, NULL, ARGS("--nope")) == 2);
    CHECK(parse(&v, NULL, NULL, ARGS("-b")) == 2);
    /* a stop row ends parsing at once: what follows is not read */
    CHECK(parse(&v, NULL, NULL, ARGS("-f", "--help", "--nope", "-i", "99")) == 7 && v.flag && v.i == 0);

    /* with rest: unknown arguments (and their values) are handed on in order, known ones taken */
    char *rest[32];
    int nr = 0;
    CHECK(parse(&v, rest, &nr, ARGS("-n", "3", "-f", "--other", "-i", "2", "tail")) == 0);
    CHECK_MSG(nr == 4 && !strcmp(rest[0], "-n") && !strcmp(rest[1], "3") && !strcmp(rest[2], "--other") &&
                  !strcmp(rest[3], "tail"),
              "rest: %d entries", nr);
    CHECK(v.flag && v.i == 2);
    return es_test_finish("test_cli_opts");
}
