/* cmd_run.c — `edgespec run`: generate text from a prompt with one model (or speculatively with a
 * draft model, see cmd_run_spec.c). Generated text streams to stdout; timing goes to stderr; with
 * --json one object is printed on stdout at the end instead. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/run_opts.h"

static const char *k_usage =
    "edgespec run -m MODEL.gguf (-p PROMPT | -f FILE) [-n N] [--temp T] [--top-k K] [--top-p P]\n"
    "             [--min-p P] [--repeat-penalty R] [--repeat-last-n N] [--presence-penalty P]\n"
    "             [--frequency-penalty F] [--logit-bias TOKEN=BIAS] [--seed S] [--threads N]\n"
    "             [--ctx N] [--batch N] [--kv-type f32|f16|q8_0] [--device cpu|vulkan[:N]] [--no-bos] [--json]\n"
    "             [--draft DRAFT.gguf [--spec chain|tree] [--accept greedy|match|rejection] [--draft-max K] ...]";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Generates text from PROMPT and prints it (not the prompt) on stdout; timing on stderr.\n\n"
           "  -m, --model FILE       GGUF model (llama, qwen2, qwen3 or phi3 architecture)\n"
           "  -p, --prompt TEXT      prompt text\n"
           "  -f, --file FILE        read the prompt from a file\n"
           "  -n, --n-predict N      tokens to generate at most (default 256; stops earlier at EOS, or at BOS\n"
           "                         for llama2.c story models, or when the context is full)\n"
           "  --temp T               temperature; 0 = greedy (default 0)\n"
           "  --top-k K              keep the K most likely tokens (0 = off, default 40 when sampling)\n"
           "  --top-p P              nucleus sampling (default 1 = off)\n"
           "  --min-p P              drop tokens below P x the top probability (default 0 = off)\n"
           "  --repeat-penalty R     llama.cpp-style repetition penalty (default 1 = off)\n"
           "  --repeat-last-n N      tokens the penalty looks back over (default 64)\n"
           "  --presence-penalty P   subtract P from tokens in the window (llama.cpp; default 0 = off)\n"
           "  --frequency-penalty F  subtract F x occurrences in the window (default 0 = off)\n"
           "  --logit-bias ID=B      add B (-100..100) to token ID's logit before sampling; repeatable\n"
           "  --seed S               sampling seed (default 42)\n"
           "  -t, --threads N        compute threads (default: number of cores)\n"
           "  -c, --ctx N            context length (default: the model's)\n"
           "  -b, --batch N          prefill chunk size (default 512)\n"
           "  --kv-type TYPE         KV cache element type: f32, f16 (default) or q8_0 (per 32 values an\n"
           "                         int8 each and an fp16 scale); memory per token is\n"
           "                         2 x layers x n_head_kv x head_dim x 4, 2 or 34/32 bytes\n"
           "  --device DEV           where the (target's) forward pass runs: cpu (default) or vulkan[:N]\n"
           "                         (`edgespec devices` lists them; f32, f16, q8_0, q4_0, q4_k, q6_k; the\n"
           "                         device keeps f32 KV rows); a draft model stays on the CPU\n"
           "  --no-bos               do not prepend BOS\n"
           "  --json                 print one JSON object with tokens, text and timings\n"
           "  --draft FILE           speculative decoding with this draft model (see `edgespec run --help-spec`)\n",
           k_usage);
}

int cmd_run(int argc, char **argv) {
    es_run_opts o;
    int rc = es_run_opts_parse(argc, argv, &o, k_usage);
    if (rc == -1) {
        print_help();
        return 0;
    }
    if (rc == -2) {
        es_run_opts_print_spec_help();
        return 0;
    }
    if (rc != 0) return rc;
    if (o.draft_path) return es_run_speculative(&o);
    return es_run_plain(&o);
}
