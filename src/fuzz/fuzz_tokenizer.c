/* fuzz_tokenizer.c — libFuzzer target for the tokenizer and its file parsers.
 *
 * The first input byte picks what the rest is fed to:
 *   0: es_tokenize with the SPM vocabulary (tok512 from $EDGESPEC_MODELS, or a small built-in one),
 *      then decoding: the pieces must give back the input exactly (every byte has a <0xXX> token);
 *   1: the same with a byte-level BPE vocabulary under each pre-tokenizer (k_pre_names; bits 2-6 of
 *      the first byte pick it);
 *   2: es_vocab_load_hf_buffer (tokenizer.json), and when it loads, a tokenizer built from it encodes
 *      and decodes a sample;
 *   3: es_vocab_load_llama2c_buffer with a vocabulary size taken from the next byte, likewise.
 * Bit 7 of the first byte turns parse_special on. A mismatch or an unexpected status aborts.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined with the edgespec_core sources; -DES_FUZZ_MAIN adds
 * a main() that runs the target once on each file named on the command line (for reproducing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_impl.h"

/* One of each pre-tokeniser family (tok_pretok.c). */
static const char *const k_pre_names[] = {"gpt2", "llama-bpe", "qwen2", "starcoder", "falcon", "default",
                                          "deepseek-coder", "deepseek-llm", "deepseek-v3", "gpt-4o"};
#define N_PRE (sizeof k_pre_names / sizeof k_pre_names[0])

typedef struct fuzz_state {
    es_tokenizer *spm;
    es_tokenizer *bpe[N_PRE];
} fuzz_state;

/* The built-in SPM vocabulary: <unk> <s> </s>, the 256 byte tokens, a few characters and merges. */
static es_tokenizer *builtin_spm(void) {
    static const char *const extra[] = {" ", "a", "e", "h", "t", "n", "o", "th", "he", "the", " the", "an", " a", "on"};
    static char bytes[256][8];
    const char *toks[3 + 256 + sizeof extra / sizeof extra[0]];
    float scores[sizeof toks / sizeof toks[0]];
    int n = 0;
    toks[n] = "<unk>"; scores[n++] = 0;
    toks[n] = "<s>"; scores[n++] = 0;
    toks[n] = "</s>"; scores[n++] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[n] = bytes[b];
        scores[n++] = 0;
    }
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        toks[n] = extra[i];
        scores[n++] = -(float)i;
    }
    es_vocab_spec spec = {.kind = ES_TOK_SPM, .n_vocab = n, .tokens = toks, .scores = scores, .bos = 1, .eos = 2,
                          .unk = 0, .pad = -1, .add_bos = true, .add_space_prefix = true};
    es_tokenizer *t = NULL;
    es_tokenizer_init(&spec, &t, NULL);
    return t;
}

static es_tokenizer *load_spm(void) {
    const char *dir = getenv("EDGESPEC_MODELS");
    if (dir && *dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tok512.bin", dir);
        es_vocab *v = NULL;
        es_tokenizer *t = NULL;
        if (es_vocab_load_llama2c(path, 512, &v, NULL) == ES_OK) es_tokenizer_init(es_vocab_spec_of(v), &t, NULL);
        es_vocab_free(v);
        if (t) return t;
    }
    return builtin_spm();
}

/* Byte-level BPE: the 256 mapped bytes, "Ġt", "he", "Ġthe", and a control token. */
static es_tokenizer *builtin_bpe(const char *pre) {
    static char bytes[256][8];
    const char *toks[260];
    for (int b = 0; b < 256; b++) {
        int l = tok_utf8_put(tok_byte_to_cp((uint8_t)b), bytes[b]);
        bytes[b][l] = 0;
        toks[b] = bytes[b];
    }
    toks[256] = "\xC4\xA0t";
    toks[257] = "he";
    toks[258] = "\xC4\xA0the";
    toks[259] = "<|eot|>";
    const char *merges[] = {"\xC4\xA0 t", "h e", "\xC4\xA0t he"};
    int32_t types[260];
    for (int i = 0; i < 260; i++) types[i] = ES_TOKTYPE_NORMAL;
    types[259] = ES_TOKTYPE_CONTROL;
    es_vocab_spec spec = {.kind = ES_TOK_BPE, .n_vocab = 260, .tokens = toks, .types = types, .merges = merges,
                          .n_merges = 3, .bos = -1, .eos = 259, .unk = -1, .pad = -1, .pre = pre};
    es_tokenizer *t = NULL;
    es_tokenizer_init(&spec, &t, NULL);
    return t;
}

static fuzz_state *state(void) {
    static fuzz_state s;
    static int ready;
    if (!ready) {
        s.spm = load_spm();
        if (!s.spm) abort();
        for (size_t i = 0; i < N_PRE; i++)
            if (!(s.bpe[i] = builtin_bpe(k_pre_names[i]))) abort();
        ready = 1;
    }
    return &s;
}

/* Encodes text, decodes it piece by piece, and (when check) insists on getting the text back. */
static void encode_decode(const es_tokenizer *t, const char *text, size_t n, bool special, bool check) {
    int cnt = -1, cnt2 = -1;
    es_err err;
    es_status st = es_tokenize(t, text, n, true, special, NULL, 0, &cnt, &err); /* count only */
    if (st != ES_OK) {
        if (st != ES_ERR_UNSUPPORTED) abort(); /* a character a loaded vocabulary cannot express */
        return;
    }
    int32_t *ids = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof *ids);
    if (!ids) return;
    if (es_tokenize(t, text, n, true, special, ids, cnt, &cnt2, &err) != ES_OK || cnt2 != cnt) abort();
    int maxp = es_tokenizer_max_token_len(t) + 4;
    char *out = malloc((size_t)cnt * (size_t)maxp + 1);
    size_t k = 0;
    if (out) {
        for (int i = 0; i < cnt; i++) {
            if (ids[i] < 0 || ids[i] >= es_tokenizer_n_vocab(t)) abort();
            k += (size_t)es_token_to_piece(t, i ? ids[i - 1] : -1, ids[i], out + k, maxp);
        }
        if (check && (k != n || memcmp(out, text, n) != 0)) abort();
    }
    free(out);
    free(ids);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 1) return 0;
    fuzz_state *s = state();
    bool special = data[0] & 0x80;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] & 3) {
    case 0:
        encode_decode(s->spm, text, n, special, !special);
        break;
    case 1:
        encode_decode(s->bpe[((data[0] >> 2) & 31) % N_PRE], text, n, special, !special);
        break;
    case 2: {
        es_vocab *v = NULL;
        es_err err;
        if (es_vocab_load_hf_buffer(text, n, NULL, 0, &v, &err) == ES_OK) {
            es_tokenizer *t = NULL;
            if (es_tokenizer_init(es_vocab_spec_of(v), &t, &err) != ES_OK) abort(); /* a loaded vocabulary builds */
            static const char sample[] = "Hello world, caf\xC3\xA9 123 \xF0\x9F\x98\x80\n";
            encode_decode(t, sample, sizeof sample - 1, true, false);
            es_tokenizer_free(t);
        }
        es_vocab_free(v);
        break;
    }
    default: {
        if (n < 1) return 0;
        int n_vocab = 3 + data[1];
        es_vocab *v = NULL;
        es_err err;
        if (es_vocab_load_llama2c_buffer(text + 1, n - 1, n_vocab, &v, &err) == ES_OK) {
            es_tokenizer *t = NULL;
            if (es_tokenizer_init(es_vocab_spec_of(v), &t, &err) != ES_OK) abort();
            static const char sample[] = "Once upon a time \xE6\x97\xA5";
            encode_decode(t, sample, sizeof sample - 1, false, false);
            es_tokenizer_free(t);
        }
        es_vocab_free(v);
        break;
    }
    }
    return 0;
}

#ifdef ES_FUZZ_MAIN
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) continue;
        static unsigned char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
    }
    return 0;
}
#endif
