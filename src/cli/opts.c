/* opts.c — the table-driven option loop of cli/opts.h. */
#include "cli/opts.h"

#include <stdint.h>
#include <string.h>

#include "cli/cli.h"

/* The index of v among the '|'-separated words of list ("-t|--threads", "chain|tree"), or -1. */
static int index_of(const char *list, const char *v) {
    const size_t vl = strlen(v);
    int i = 0;
    for (const char *p = list;; i++) {
        const char *bar = strchr(p, '|');
        const size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == vl && !memcmp(p, v, l)) return i;
        if (!bar) return -1;
        p = bar + 1;
    }
}

/* The spelling errors name the option by: its first "--" one (else its first), into buf. */
static const char *canonical(const char *names, char *buf, size_t cap) {
    const char *p = strstr(names, "--");
    if (!p) p = names;
    const char *bar = strchr(p, '|');
    size_t l = bar ? (size_t)(bar - p) : strlen(p);
    if (l >= cap) l = cap - 1;
    memcpy(buf, p, l);
    buf[l] = 0;
    return buf;
}

/* Takes the value v of row o; false when it is refused. */
static bool take(const cli_opt *o, const cli_arg *arg) {
    const char *v = arg->value;
    long lv;
    double dv;
    uint64_t uv;
    switch (o->kind) {
    case CLI_STR:
        if (o->max && (!*v || strlen(v) > o->max)) return false;
        if (o->choices && index_of(o->choices, v) < 0) return false;
        *(const char **)o->dst = v;
        return true;
    case CLI_CHOICE: {
        const int i = index_of(o->choices, v);
        if (i < 0) return false;
        *(int *)o->dst = o->vals ? o->vals[i] : i;
        return true;
    }
    case CLI_INT:
    case CLI_LONG:
        if (!cli_parse_long(v, (long)o->lo, (long)o->hi, &lv)) return false;
        if (o->kind == CLI_INT) *(int *)o->dst = (int)lv;
        else *(long *)o->dst = lv;
        return true;
    case CLI_U64: return cli_parse_u64(v, o->dst);
    case CLI_DOUBLE:
    case CLI_FLOAT:
        if (!cli_parse_float(v, o->lo, o->hi, &dv) || (o->lo_open && dv <= o->lo)) return false;
        if (o->kind == CLI_DOUBLE) *(double *)o->dst = o->zero_off && dv == 0 ? -1 : dv;
        else *(float *)o->dst = (float)dv;
        return true;
    case CLI_I64:
    case CLI_U32:
    case CLI_ZU:
        if (!cli_parse_size(v, (uint64_t)o->lo, (uint64_t)o->hi, &uv)) return false;
        if (o->kind == CLI_I64) *(int64_t *)o->dst = (int64_t)uv;
        else if (o->kind == CLI_U32) *(uint32_t *)o->dst = (uint32_t)uv;
        else *(size_t *)o->dst = (size_t)uv;
        return true;
    case CLI_FN: return o->fn(arg);
    default: return false;
    }
}

int cli_opts_parse(const char *cmd, const char *usage, const cli_opt *t, size_t n, int argc, char **argv, char **rest,
                   int *n_rest) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const cli_opt *o = NULL;
        for (size_t k = 0; k < n && !o; k++)
            if (index_of(t[k].names, a) >= 0) o = &t[k];
        if (!o) {
            if (!rest) return cli_usage_error(cmd, usage, "unknown option '%s'", a);
            rest[(*n_rest)++] = argv[i];
            continue;
        }
        char nb[64];
        cli_arg arg = {.cmd = cmd, .usage = usage, .name = a, .dst = o->dst};
        switch (o->kind) {
        case CLI_SET: *(bool *)o->dst = true; continue;
        case CLI_CLEAR: *(bool *)o->dst = false; continue;
        case CLI_STOP: return o->stop;
        case CLI_REFUSE: return cli_usage_error(cmd, usage, "%s: %s", a, o->must);
        case CLI_FN0:
            if (!o->fn(&arg)) return o->must ? cli_usage_error(cmd, usage, "%s %s", canonical(o->names, nb, sizeof nb), o->must) : 2;
            continue;
        default: break;
        }
        if (i + 1 >= argc) return cli_usage_error(cmd, usage, "%s needs a value", a);
        arg.value = argv[++i];
        if (take(o, &arg)) continue;
        if (!o->must) return 2; /* a handler that printed its own error */
        return cli_usage_error(cmd, usage, "%s %s, got '%s'", canonical(o->names, nb, sizeof nb), o->must, arg.value);
    }
    return 0;
}

bool cli_opt_kv_type(const cli_arg *a) { return cli_parse_kv_type(a->value, a->dst); }
