/* cmd_synth.c — `edgespec synth`: synthetic GGUF models at real shapes (random, or a small model padded). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "convert/convert.h"
#include "gguf/gguf.h"
#include "kernels/types.h"

static const char k_usage[] =
    "edgespec synth (--random | --pad-from SMALL.gguf) --shape NAME [--type TYPE] [--noise S]\n"
    "                [--seed N] [--tokenizer TOK.bin|VOCAB.gguf] [--threads N] -o OUT.gguf [--json]";

static void help(void) {
    printf("usage: %s\n\n"
           "Writes a GGUF model at a real model's shape, for measuring speed where the real weights are not\n"
           "available.\n\n"
           "  --random             weights ~ N(0, 0.02), norms 1, reproducible from --seed. Vocabulary: the\n"
           "                       llama2.c tokenizer from --tokenizer, or $EDGESPEC_MODELS/tokenizer.bin when the\n"
           "                       shape's vocabulary is 32000 and that file exists; otherwise a synthetic one\n"
           "                       (<unk>, <s>, </s>, byte tokens <0x00>..<0xFF>, then tok_<i> placeholders).\n"
           "  --pad-from SMALL     function-preserving expansion of a small GGUF model to the shape: zero-padded\n"
           "                       width, zero extra heads / FFN units, identity extra layers, rescaled norms and\n"
           "                       RoPE base. It computes the small model's logits at the big model's cost; it\n"
           "                       keeps the small model's vocabulary.\n"
           "  --shape NAME         tinyllama-1.1b, llama-7b, qwen2-0.5b, stories15m, stories42m, stories110m, or\n"
           "                       custom:dim=D,ff=F,layers=L,heads=H,kv=K[,ctx=N][,vocab=V][,arch=llama|qwen2][,tied=0|1]\n"
           "  --type TYPE          weight type: f32 (default), f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, or the\n"
           "                       llama.cpp mix q4_k_m (see edgespec quantize --help)\n"
           "  --noise S            pad mode: N(0, S) in the blocks that are zero by construction (default 0)\n"
           "  --seed N             random seed (default 1234)\n"
           "  --tokenizer FILE     random mode: a llama2.c tokenizer (.bin), or the tokenizer of a GGUF (.gguf: another\n"
           "                       model or a vocabulary-only file), with the shape's vocabulary size\n"
           "  --threads N          threads generating tensors (default: CPUs, at most 8)\n"
           "  -o, --output PATH    output file (required)\n"
           "  --json               print one JSON object {output, mode, shape, arch, type, n_params, n_tensors, bytes, seconds}\n",
           k_usage);
}

int cmd_synth(int argc, char **argv) {
    const char *out = NULL, *shape = NULL, *pad = NULL, *tok = NULL, *type_name = "f32";
    bool random = false, json = false;
    double noise = 0.0;
    uint64_t seed = 1234;
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help();
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--random")) {
            random = true;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--shape") || !strcmp(a, "--pad-from") ||
                   !strcmp(a, "--tokenizer") || !strcmp(a, "--type") || !strcmp(a, "--noise") || !strcmp(a, "--seed") ||
                   !strcmp(a, "--threads")) {
            if (i + 1 >= argc) return cli_usage_error("synth", k_usage, "%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--shape")) shape = v;
            else if (!strcmp(a, "--pad-from")) pad = v;
            else if (!strcmp(a, "--tokenizer")) tok = v;
            else if (!strcmp(a, "--type")) type_name = v;
            else if (!strcmp(a, "--noise")) {
                if (!cli_parse_float(v, 0.0, 99.0, &noise)) return cli_usage_error("synth", k_usage, "bad --noise '%s'", v);
            } else if (!strcmp(a, "--seed")) {
                if (!cli_parse_u64(v, &seed)) return cli_usage_error("synth", k_usage, "bad --seed '%s'", v);
            } else if (!strcmp(a, "--threads")) {
                if (!cli_parse_long(v, 1, 256, &threads)) return cli_usage_error("synth", k_usage, "bad --threads '%s'", v);
            } else out = v;
        } else {
            return cli_usage_error("synth", k_usage, "unexpected argument '%s'", a);
        }
    }
    if (random == (pad != NULL)) return cli_usage_error("synth", k_usage, "give exactly one of --random and --pad-from");
    if (!shape) return cli_usage_error("synth", k_usage, "no --shape");
    if (!out) return cli_usage_error("synth", k_usage, "no output file (-o OUT.gguf)");
    const int type = es_convert_type_from_name(type_name);
    if (type < 0 || !es_convert_type_ok((uint32_t)type))
        return cli_usage_error("synth", k_usage, "unknown --type '%s' (f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m)", type_name);
    int vocab = 0;
    es_err err;
    if (es_synth_check_shape(shape, &vocab, &err) != ES_OK) return cli_usage_error("synth", k_usage, "%s", err.msg);
    char deftok[4096];
    if (random && !tok && vocab == 32000) {
        snprintf(deftok, sizeof deftok, "%s/tokenizer.bin", cli_models_dir());
        if (access(deftok, R_OK) == 0) tok = deftok;
    }
    if (tok && !random) return cli_usage_error("synth", k_usage, "--tokenizer is for --random (padding keeps the small model's vocabulary)");

    es_convert_stats stats;
    es_synth_opts o = {.shape = shape, .pad_from = pad, .tokenizer = tok, .type = (uint32_t)type, .noise = (float)noise,
                       .seed = seed, .out_path = out, .progress = cli_progress, .log = cli_log, .n_threads = (int)threads,
                       .stats = &stats};
    const double t0 = cli_now();
    es_status st = es_synth(&o, &err);
    if (st == ES_ERR_INVALID_ARG) return cli_usage_error("synth", k_usage, "%s", err.msg);
    if (st != ES_OK) return cli_error("synth", "%s", err.msg);
    const double secs = cli_now() - t0;

    es_gguf *g = NULL;
    if (es_gguf_open(out, &g, &err) != ES_OK) return cli_error("synth", "cannot read back %s: %s", out, err.msg);
    const char *arch = "?";
    size_t alen;
    es_gguf_get_str(g, "general.architecture", &arch, &alen);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "output", out);
        cJSON_AddStringToObject(j, "mode", random ? "random" : "pad");
        cJSON_AddStringToObject(j, "shape", shape);
        cJSON_AddStringToObject(j, "arch", arch);
        cJSON_AddStringToObject(j, "type", es_convert_type_name((uint32_t)type));
        cJSON_AddNumberToObject(j, "n_params", (double)stats.n_params);
        cJSON_AddNumberToObject(j, "n_tensors", (double)es_gguf_n_tensors(g));
        cJSON_AddNumberToObject(j, "bytes", (double)es_gguf_file_size(g));
        cJSON_AddNumberToObject(j, "seconds", secs);
        char *s = cJSON_PrintUnformatted(j);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else {
        fprintf(stderr, "edgespec synth: wrote %s: %s %s, %.1f M parameters, %lld tensors, %.1f MB in %.2f s\n", out,
                random ? "random" : "padded", arch, (double)stats.n_params / 1e6, (long long)es_gguf_n_tensors(g),
                (double)es_gguf_file_size(g) / 1e6, secs);
    }
    es_gguf_free(g);
    return 0;
}
