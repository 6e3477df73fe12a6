/* testutil.h — a tiny test harness: CHECK macros that count failures and report file:line, and
 * helpers to find the shared models and the converted test models. Each test_*.c is its own
 * executable, registered with CTest; it exits non-zero when any check failed. */
#ifndef ES_TESTUTIL_H
#define ES_TESTUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "edgespec.h"

extern int es_test_failures;
extern int es_test_checks;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        es_test_checks++;                                                             \
        if (!(cond)) {                                                                \
            es_test_failures++;                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                             \
    } while (0)

#define CHECK_MSG(cond, ...)                                                          \
    do {                                                                              \
        es_test_checks++;                                                             \
        if (!(cond)) {                                                                \
            es_test_failures++;                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

/* Asserts an es_status is ES_OK, printing err->msg otherwise. */
#define CHECK_OK(expr, errp)                                                          \
    do {                                                                              \
        es_test_checks++;                                                             \
        es_status st_ = (expr);                                                       \
        if (st_ != ES_OK) {                                                           \
            es_test_failures++;                                                       \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr,       \
                    es_status_str(st_), es_test_errmsg(errp));                          \
        }                                                                             \
    } while (0)

/* err->msg, or "" for NULL (a function, so passing &err does not trip -Waddress). */
const char *es_test_errmsg(const void *err);

/* Prints "N passed, M failed" and returns the process exit code. */
int es_test_finish(const char *name);

/* $EDGESPEC_MODELS/<file> (default: the models folder the build was configured with, ../shared/models
 * unless EDGESPEC_MODELS said otherwise). Returns a static buffer per call slot. */
const char *es_test_shared_model(const char *file);
/* How long a test waits for an event (a connection closing, KV pages returning, a thread starting)
 * before it gives up: a cap against hangs, never a timing expectation. A loaded machine (sanitizers,
 * ctest -j, other jobs) may take far longer than an idle one; a check that something happens *soon*
 * is made by ordering (the event is observed while the thing that would otherwise cause it cannot
 * have happened), not by a clock. */
#define ES_TEST_WAIT_CAP_S 120.0

/* $ES_TEST_MODELS/<file>: the GGUFs converted by scripts/make-test-models.sh (build/models). */
const char *es_test_model(const char *file);
/* $ES_SHARED/<rel> (the shared folder). */
const char *es_test_shared(const char *rel);
/* A fresh path under $ES_BUILD/tmp for a test's output file. */
const char *es_test_tmp(const char *file);

/* max |a − b| / (1 + max |b|) over n logits: how far a's logits are from the reference b's. */
double es_test_rel_diff(const float *a, const float *b, int n);

/* Writes an exit-head GGUF (exit.<layer>.weight / .bias) for a model of n_embd dims whose adapter is
 * deliberately bad: W = 0 and a bias whose final-normed image puts one token on top everywhere, so the
 * exit head is nearly always wrong. Returns the path (es_test_tmp(file)), or NULL after a failed check. */
const char *es_test_write_bad_exit(int n_embd, int layer, const char *file);

/* Reads a whole file into a malloc'd buffer (NUL-terminated); NULL on failure. */
char *es_test_read_file(const char *path, size_t *len);

/* Loads es_test_model(file) with default parameters; on failure a failed check naming the file, and
 * NULL. */
es_model *es_test_load_model(const char *file);

#ifndef ES_CORE_ONLY
/* Copies the numbers of a JSON array (e.g. the golden file's "prompt_ids") into out[0..cap) as int32;
 * returns how many were copied (0 for NULL). Not in core-only builds (no cJSON there). */
struct cJSON;
int es_test_json_ints(const struct cJSON *arr, int32_t *out, int cap);
#endif

/* One line of the golden greedy file (golden/stories260K-greedy.jsonl: an object with "prompt",
 * "max_positions", "prompt_ids", "gen_ids"), read without a JSON library so that core-only builds
 * (cross builds without cJSON) run the golden tests too. */
typedef struct es_test_golden {
    char prompt[1024];      /* UTF-8, NUL-terminated */
    int max_positions;
    int32_t prompt_ids[512];
    int n_prompt;
    int32_t gen_ids[1024];
    int n_gen;
} es_test_golden;

/* Parses one golden line; false (and a failed check) if a field is missing, malformed or too long. */
bool es_test_golden_parse(const char *line, es_test_golden *g);

/* ---- small helpers of the socket-level tests (test_server, test_faults) ---- */

/* Monotonic seconds. */
double es_test_now_s(void);
void es_test_sleep_ms(int ms);
/* A TCP connection to 127.0.0.1:port with TCP_NODELAY and 20 s send/receive timeouts (rcvbuf > 0
 * also sets SO_RCVBUF, for slow-consumer tests); -1 if it cannot connect. */
int es_test_tcp_connect(int port, int rcvbuf);
/* All n bytes, retrying on EINTR (send with MSG_NOSIGNAL); false at EOF, reset, error or timeout. */
bool es_test_send_all(int fd, const void *p, size_t n);
bool es_test_recv_all(int fd, void *p, size_t n);

#endif
