/* cli.h — shared pieces of the command-line front end. Each subcommand lives in its own cmd_*.c and
 * returns the process exit code: 0 success, 1 runtime failure, 2 usage error. */
#ifndef ES_CLI_H
#define ES_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "edgespec.h"

int cmd_run(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_edge(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_fit_exit(int argc, char **argv);
/* `edgespec bench serve` (cmd_bench_serve.c); argv[1] == "serve". */
int bench_serve(int argc, char **argv);

/* Strict number parsing: the whole string must be a number within [lo, hi]. */
bool cli_parse_long(const char *s, long lo, long hi, long *out);
bool cli_parse_u64(const char *s, uint64_t *out);
bool cli_parse_float(const char *s, double lo, double hi, double *out);
/* Sanitized builds (make asan / tsan) only, called before a command first uses Vulkan: keeps Mesa's
 * lavapipe loaded past vkDestroyInstance. The loader unloads the driver there, and LeakSanitizer,
 * which looks at the end of the process, would then report the driver's still-referenced global
 * allocations as leaks (the tests' harness does the same, tests/test_vulkan.c). A no-op elsewhere. */
void cli_keep_vulkan_driver(void);
/* A list of up to ES_EXIT_MAX distinct positive layer numbers "4,8" (stored in increasing order). */
bool cli_parse_layers(const char *s, int *out, int *n);
/* The layers L of the exit.<L>.weight tensors in a GGUF file (increasing; at most ES_EXIT_MAX);
 * *n = 0 when it has none. False when the file cannot be read. */
bool cli_exit_layers_in(const char *path, int *out, int *n);
/* --device: "cpu", "vulkan" (device 0) or "vulkan:N". */
bool cli_parse_device(const char *s, es_backend_kind *kind, int *index);
/* A byte count: digits with an optional K, M, G or T (powers of 1024; "KiB", "MB" read alike), within
 * lo..hi. */
bool cli_parse_size(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);
/* --kv-type: "f32", "f16" or "q8_0". */
bool cli_parse_kv_type(const char *s, es_kv_type *out);

/* Prints "edgespec <cmd>: <message>" on stderr; returns 1 (or 2 for usage errors via cli_usage_error). */
/* es_model_default_params with the environment applied: EDGESPEC_REPACK=0 keeps the file's
 * weight layout (the library itself never reads the environment). */
es_model_params cli_model_params(void);

int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Progress callback: draws a bar on stderr when stderr is a terminal, silent otherwise. */
void cli_progress(void *ud, const char *what, double fraction);
/* Log callback: prints to stderr (levels <= 2 unless EDGESPEC_DEBUG is set). */
void cli_log(void *ud, int level, const char *msg);

/* --chat-template-file FILE: a Jinja chat template that renders requests in place of the model's own.
 * *src = its text when it parses as Jinja (the subset of src/jinja/; the text lives until the process
 * ends), else NULL and *family = the built-in family its markers name. Returns false after printing an
 * error when the file cannot be read, or neither parses nor names a known family. */
bool cli_chat_template_file(const char *cmd, const char *path, const char **src, int *family);

/* $EDGESPEC_MODELS or ../shared/models. */
const char *cli_models_dir(void);

/* A malloc'd copy of s[0..len) that is valid UTF-8 without NULs (anything else becomes U+FFFD), for
 * cJSON; NULL when out of memory. */
char *cli_utf8_clean(const char *s, size_t len);

/* Monotonic seconds. */
double cli_now(void);

#endif
