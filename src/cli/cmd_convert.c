/* cmd_convert.c — `edgespec convert llama2c|hf ...`: foreign checkpoints to GGUF. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "convert/convert.h"
#include "gguf/gguf.h"
#include "kernels/types.h"

static const char k_usage[] =
    "edgespec convert llama2c MODEL.bin TOKENIZER.bin -o OUT.gguf [options]\n"
    "       edgespec convert hf DIR -o OUT.gguf [options]";

static void help(void) {
    printf("usage: %s\n\n"
           "Converts a llama2.c checkpoint (legacy fp32, or ak42 version 1 fp32 / version 2 int8) with its\n"
           "tokenizer.bin, or a Hugging Face directory (config.json, model.safetensors, tokenizer.json;\n"
           "model_type llama or qwen2; F32/F16/BF16 weights) to a GGUF file.\n\n"
           "options:\n"
           "  -o, --output PATH  output GGUF file (required)\n"
           "  --type TYPE        weight matrix type: f32 (default), f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k or\n"
           "                     the mix q4_k_m (see edgespec quantize --help); matrices whose rows are not\n"
           "                     whole blocks stay f32 (K-quants: q4_0 / q8_0 when they are whole 32-blocks);\n"
           "                     norms and biases are always f32\n"
           "  --name NAME        general.name (default: the input file or directory name)\n"
           "  --threads N        threads converting big tensors (default: CPUs, at most 8)\n"
           "  --json             print one JSON object {output, arch, n_params, n_tensors, bytes, seconds}\n"
           "  -h, --help         this help\n",
           k_usage);
}

/* Prints the result as JSON (stdout) or a one-line summary (stderr). */
static int report(const char *out, const es_convert_stats *stats, double seconds, bool json) {
    es_gguf *g = NULL;
    es_err err;
    const char *arch = "?";
    size_t alen;
    if (es_gguf_open(out, &g, &err) != ES_OK) return cli_error("convert", "cannot read back %s: %s", out, err.msg);
    es_gguf_get_str(g, "general.architecture", &arch, &alen);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "output", out);
        cJSON_AddStringToObject(o, "arch", arch);
        cJSON_AddNumberToObject(o, "n_params", (double)stats->n_params);
        cJSON_AddNumberToObject(o, "n_tensors", (double)es_gguf_n_tensors(g));
        cJSON_AddNumberToObject(o, "bytes", (double)es_gguf_file_size(g));
        cJSON_AddNumberToObject(o, "seconds", seconds);
        char *s = cJSON_PrintUnformatted(o);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    } else {
        fprintf(stderr, "edgespec convert: wrote %s: %s, %.3f M parameters, %lld tensors, %zu bytes in %.2f s\n", out, arch,
                (double)stats->n_params / 1e6, (long long)es_gguf_n_tensors(g), es_gguf_file_size(g), seconds);
    }
    es_gguf_free(g);
    return 0;
}

int cmd_convert(int argc, char **argv) {
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0;
    const char *out = NULL, *type_name = "f32", *name = NULL;
    bool json = false;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help();
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--type") || !strcmp(a, "--name") ||
                   !strcmp(a, "--threads")) {
            if (i + 1 >= argc) return cli_usage_error("convert", k_usage, "%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--type")) type_name = v;
            else if (!strcmp(a, "--name")) name = v;
            else if (!strcmp(a, "--threads")) {
                if (!cli_parse_long(v, 1, 256, &threads)) return cli_usage_error("convert", k_usage, "bad --threads '%s'", v);
            } else out = v;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error("convert", k_usage, "unknown option '%s'", a);
        } else {
            if (npos == 3) return cli_usage_error("convert", k_usage, "too many arguments");
            pos[npos++] = a;
        }
    }
    if (npos == 0) return cli_usage_error("convert", k_usage, "which format: llama2c or hf?");
    if (!out) return cli_usage_error("convert", k_usage, "no output file (-o OUT.gguf)");
    const int type = es_convert_type_from_name(type_name);
    if (type < 0 || !es_convert_type_ok((uint32_t)type))
        return cli_usage_error("convert", k_usage, "unknown --type '%s' (f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m)", type_name);

    es_convert_stats stats;
    es_convert_opts opts = es_convert_default_opts();
    opts.out_type = (uint32_t)type;
    opts.name = name;
    opts.progress = cli_progress;
    opts.log = cli_log;
    opts.n_threads = (int)threads;
    opts.stats = &stats;
    es_err err;
    es_status st;
    const double t0 = cli_now();
    if (!strcmp(pos[0], "llama2c")) {
        if (npos != 3) return cli_usage_error("convert", k_usage, "llama2c needs MODEL.bin and TOKENIZER.bin");
        st = es_convert_llama2c(pos[1], pos[2], out, &opts, &err);
    } else if (!strcmp(pos[0], "hf")) {
        if (npos != 2) return cli_usage_error("convert", k_usage, "hf needs exactly one directory");
        st = es_convert_hf(pos[1], out, &opts, &err);
    } else {
        return cli_usage_error("convert", k_usage, "unknown format '%s' (llama2c, hf)", pos[0]);
    }
    if (st != ES_OK) return cli_error("convert", "%s", err.msg);
    return report(out, &stats, cli_now() - t0, json);
}
