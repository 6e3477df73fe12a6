/* cmd_quantize.c — `edgespec quantize IN.gguf OUT.gguf TYPE`: rewrite the weight matrices of a GGUF. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "convert/convert.h"
#include "kernels/types.h"

static const char k_usage[] = "edgespec quantize IN.gguf OUT.gguf q8_0|q4_0|q4_k|q5_k|q6_k|q4_k_m|f16|bf16|f32 [--json] [--threads N]";

static void help(void) {
    printf("usage: %s\n\n"
           "Rewrites every 2-D weight matrix (a tensor named *.weight that is not a norm) in the given type,\n"
           "dequantising quantised sources first. q4_k_m is llama.cpp's mix: q4_k, with q6_k for output.weight\n"
           "(token_embd when tied) and for attn_v / ffn_down in the first and last eighth of the layers and\n"
           "every third layer between. K-quant matrices whose rows are not whole 256-element super-blocks\n"
           "are written q4_0 (for q4_k) or q8_0 (q5_k, q6_k); rows that are not whole 32-element blocks stay\n"
           "f32. Metadata and all other tensors are copied unchanged (general.file_type is updated).\n\n"
           "options:\n"
           "  --json       print one JSON object {input, output, type, n_tensors, n_converted, bytes_in, bytes_out}\n"
           "  --threads N  threads converting big tensors (default: CPUs, at most 8)\n"
           "  -h, --help   this help\n",
           k_usage);
}

int cmd_quantize(int argc, char **argv) {
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0;
    bool json = false;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help();
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--threads")) {
            if (i + 1 >= argc || !cli_parse_long(argv[i + 1], 1, 256, &threads))
                return cli_usage_error("quantize", k_usage, "--threads needs a number in [1, 256]");
            i++;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("quantize", k_usage, "unknown option '%s'", a);
        } else {
            if (npos == 3) return cli_usage_error("quantize", k_usage, "too many arguments");
            pos[npos++] = a;
        }
    }
    if (npos != 3) return cli_usage_error("quantize", k_usage, "need IN.gguf, OUT.gguf and a type");
    const int type = es_convert_type_from_name(pos[2]);
    if (type < 0 || !es_convert_type_ok((uint32_t)type))
        return cli_usage_error("quantize", k_usage, "unknown type '%s' (q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m, f16, bf16, f32)", pos[2]);

    es_convert_stats stats;
    es_convert_opts opts = es_convert_default_opts();
    opts.progress = cli_progress;
    opts.log = cli_log;
    opts.n_threads = (int)threads;
    opts.stats = &stats;
    es_err err;
    const double t0 = cli_now();
    es_status st = es_quantize(pos[0], pos[1], (uint32_t)type, &opts, &err);
    if (st != ES_OK) return cli_error("quantize", "%s", err.msg);
    const double secs = cli_now() - t0;
    fprintf(stderr, "edgespec quantize: %s -> %s (%s): %lld tensors, %lld converted, %lld matrices kept f32 (or a 32-block stand-in of a K-quant); %.2f MB -> %.2f MB in %.2f s\n",
            pos[0], pos[1], es_convert_type_name((uint32_t)type), (long long)stats.n_tensors, (long long)stats.n_converted,
            (long long)stats.n_kept_f32, (double)stats.bytes_in / 1e6, (double)stats.bytes_out / 1e6, secs);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "input", pos[0]);
        cJSON_AddStringToObject(o, "output", pos[1]);
        cJSON_AddStringToObject(o, "type", es_convert_type_name((uint32_t)type));
        cJSON_AddNumberToObject(o, "n_tensors", (double)stats.n_tensors);
        cJSON_AddNumberToObject(o, "n_converted", (double)stats.n_converted);
        cJSON_AddNumberToObject(o, "bytes_in", (double)stats.bytes_in);
        cJSON_AddNumberToObject(o, "bytes_out", (double)stats.bytes_out);
        char *s = cJSON_PrintUnformatted(o);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    }
    return 0;
}
