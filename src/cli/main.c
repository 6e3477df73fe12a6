/* main.c — `edgespec <subcommand> ...`: dispatches to cmd_*.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "kernels/matmul.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static const command k_commands[] = {
    {"run", cmd_run, "generate text with a model (optionally speculative with --draft)"},
    {"convert", cmd_convert, "convert llama2.c or Hugging Face models to GGUF"},
    {"quantize", cmd_quantize, "re-quantise a GGUF model (q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m, f16, bf16, f32)"},
    {"tokenize", cmd_tokenize, "print the token ids of a text under a GGUF file's tokenizer"},
    {"info", cmd_info, "print a GGUF file's metadata and tensor table"},
    {"synth", cmd_synth, "write a synthetic GGUF at a real model's shape (random or padded)"},
    {"serve", cmd_serve, "run the verification server (target model) for edge clients"},
    {"edge", cmd_edge, "generate on an edge device: draft locally, verify on a server"},
    {"fit-exit", cmd_fit_exit, "fit calibrated early-exit heads of a target model (for serve --exit-file)"},
    {"bench", cmd_bench, "measure decode / prefill / verify / serving speed"},
    {"devices", cmd_devices, "list the devices a forward pass can run on (cpu, vulkan:N)"},
};

static void usage(FILE *f) {
    fprintf(f, "edgespec %s — speculative LLM serving with edge drafters\n\nusage: edgespec <command> [options]\n\ncommands:\n",
            ES_VERSION_STRING);
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        fprintf(f, "  %-10s %s\n", k_commands[i].name, k_commands[i].help);
    fprintf(f, "\nRun 'edgespec <command> --help' for a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("edgespec %s\n", ES_VERSION_STRING);
        return 0;
    }
    /* $EDGESPEC_CPU lowers the SIMD level the kernels use (for comparisons; README "CPU levels") */
    es_err err = {0};
    if (es_cpu_limit(getenv("EDGESPEC_CPU"), &err) != ES_OK) {
        fprintf(stderr, "edgespec: EDGESPEC_CPU: %s\n", err.msg);
        return 2;
    }
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (!strcmp(argv[1], k_commands[i].name)) return k_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "edgespec: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
