#include "model/hparams.h"

#include <stdio.h>
#include <string.h>

#include "util/err.h"

const char *es_arch_name(es_arch a) {
    return a == ES_ARCH_QWEN2 ? "qwen2" : a == ES_ARCH_PHI3 ? "phi3" : a == ES_ARCH_QWEN3 ? "qwen3" : "llama";
}

const char *es_tensor_name(char *buf, size_t cap, int layer, const char *suffix) {
    if (layer < 0) snprintf(buf, cap, "%s", suffix);
    else snprintf(buf, cap, "blk.%d.%s", layer, suffix);
    return buf;
}

es_status es_hparams_validate(const es_hparams *hp, es_err *err) {
    const int lim = 1 << 20;
    if (hp->n_embd <= 0 || hp->n_embd > lim) return es_fail(err, ES_ERR_FORMAT, "embedding width %d out of range", hp->n_embd);
    if (hp->n_ff <= 0 || hp->n_ff > 4 * lim) return es_fail(err, ES_ERR_FORMAT, "feed-forward width %d out of range", hp->n_ff);
    if (hp->n_layer <= 0 || hp->n_layer > 1024) return es_fail(err, ES_ERR_FORMAT, "layer count %d out of range", hp->n_layer);
    if (hp->n_head <= 0 || hp->n_head > 4096) return es_fail(err, ES_ERR_FORMAT, "head count %d out of range", hp->n_head);
    if (hp->n_head_kv <= 0 || hp->n_head_kv > hp->n_head || hp->n_head % hp->n_head_kv != 0)
        return es_fail(err, ES_ERR_FORMAT, "kv head count %d must divide head count %d", hp->n_head_kv, hp->n_head);
    if (hp->head_dim <= 0 || hp->head_dim > 4096 || hp->head_dim % 2 != 0)
        return es_fail(err, ES_ERR_FORMAT, "head size %d must be even and positive", hp->head_dim);
    if (hp->rope_dim <= 0 || hp->rope_dim > hp->head_dim || hp->rope_dim % 2 != 0)
        return es_fail(err, ES_ERR_FORMAT, "rope dimension %d out of range (head size %d)", hp->rope_dim, hp->head_dim);
    if (hp->n_vocab <= 0 || hp->n_vocab > 16 * lim) return es_fail(err, ES_ERR_FORMAT, "vocabulary size %d out of range", hp->n_vocab);
    if (hp->n_ctx_train <= 0 || hp->n_ctx_train > 16 * lim) return es_fail(err, ES_ERR_FORMAT, "context length %d out of range", hp->n_ctx_train);
    if (!(hp->rms_eps > 0.0f && hp->rms_eps < 1.0f)) return es_fail(err, ES_ERR_FORMAT, "rms epsilon %g out of range", (double)hp->rms_eps);
    if (!(hp->rope_base > 1.0f && hp->rope_base < 1e12f)) return es_fail(err, ES_ERR_FORMAT, "rope base %g out of range", (double)hp->rope_base);
    if (!(hp->rope_freq_scale > 0.0f && hp->rope_freq_scale <= 1e3f))
        return es_fail(err, ES_ERR_FORMAT, "rope frequency scale %g out of range", (double)hp->rope_freq_scale);
    return ES_OK;
}

static bool get_int(const es_gguf *g, const char *arch, const char *suffix, int *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    if (!es_gguf_get_i64(g, key, &v) || v < 0 || v > (1 << 30)) return false;
    *out = (int)v;
    return true;
}

es_status es_hparams_from_gguf(const es_gguf *g, es_hparams *hp, es_err *err) {
    memset(hp, 0, sizeof *hp);
    const char *arch;
    size_t alen;
    if (!es_gguf_get_str(g, "general.architecture", &arch, &alen))
        return es_fail(err, ES_ERR_FORMAT, "missing general.architecture");
    if (strcmp(arch, "llama") == 0) hp->arch = ES_ARCH_LLAMA;
    else if (strcmp(arch, "qwen2") == 0) hp->arch = ES_ARCH_QWEN2;
    else if (strcmp(arch, "phi3") == 0) hp->arch = ES_ARCH_PHI3;
    else if (strcmp(arch, "qwen3") == 0) hp->arch = ES_ARCH_QWEN3;
    else return es_fail(err, ES_ERR_UNSUPPORTED, "architecture '%.64s' is not supported (llama, qwen2, qwen3, phi3 are)", arch);

    if (!get_int(g, arch, "embedding_length", &hp->n_embd)) return es_fail(err, ES_ERR_FORMAT, "missing or bad %s.embedding_length", arch);
    if (!get_int(g, arch, "feed_forward_length", &hp->n_ff)) return es_fail(err, ES_ERR_FORMAT, "missing or bad %s.feed_forward_length", arch);
    if (!get_int(g, arch, "block_count", &hp->n_layer)) return es_fail(err, ES_ERR_FORMAT, "missing or bad %s.block_count", arch);
    if (!get_int(g, arch, "attention.head_count", &hp->n_head)) return es_fail(err, ES_ERR_FORMAT, "missing or bad %s.attention.head_count", arch);
    if (!get_int(g, arch, "attention.head_count_kv", &hp->n_head_kv)) hp->n_head_kv = hp->n_head;
    if (!get_int(g, arch, "context_length", &hp->n_ctx_train)) hp->n_ctx_train = 2048;
    if (hp->n_head <= 0) return es_fail(err, ES_ERR_FORMAT, "head count must be positive");
    if (!get_int(g, arch, "attention.key_length", &hp->head_dim)) hp->head_dim = hp->n_embd / hp->n_head;
    if (!get_int(g, arch, "rope.dimension_count", &hp->rope_dim)) hp->rope_dim = hp->head_dim;
    char key[128];
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    if (!es_gguf_get_f32(g, key, &hp->rms_eps)) hp->rms_eps = 1e-5f;
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    if (!es_gguf_get_f32(g, key, &hp->rope_base)) hp->rope_base = 10000.0f;
    if (!get_int(g, arch, "vocab_size", &hp->n_vocab)) {
        es_gguf_vtype et;
        uint64_t n;
        if (!es_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) || n > (1u << 30))
            return es_fail(err, ES_ERR_FORMAT, "vocabulary size unknown: no %s.vocab_size and no tokenizer.ggml.tokens", arch);
        hp->n_vocab = (int)n;
    }
    hp->rope_neox = hp->arch == ES_ARCH_QWEN2 || hp->arch == ES_ARCH_PHI3 || hp->arch == ES_ARCH_QWEN3;
    hp->qkv_bias = hp->arch == ES_ARCH_QWEN2;
    hp->qk_norm = hp->arch == ES_ARCH_QWEN3;
    /* RoPE scaling as llama.cpp reads it: none, or linear (angles / factor). Llama 3.x's own scheme
       needs no key: its per-frequency factors come as the rope_freqs tensor (model.c). Position
       interpolation schemes that change the angles by context (yarn, longrope) are not computed here. */
    hp->rope_freq_scale = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const char *stype;
    size_t slen;
    if (es_gguf_get_str(g, key, &stype, &slen) && slen > 0 && strcmp(stype, "none") != 0) {
        if (strcmp(stype, "linear") != 0)
            return es_fail(err, ES_ERR_UNSUPPORTED, "RoPE scaling '%.32s' is not supported (none, linear and Llama 3's rope_freqs are)",
                           stype);
        float factor = 0;
        snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
        if (es_gguf_get_f32(g, key, &factor) && factor != 0.0f) {
            if (!(factor >= 1e-3f && factor <= 1e6f)) return es_fail(err, ES_ERR_FORMAT, "RoPE scaling factor %g out of range", (double)factor);
            hp->rope_freq_scale = 1.0f / factor;
        }
    }
    hp->fused = hp->arch == ES_ARCH_PHI3;
    hp->tied_output = es_gguf_find_tensor(g, "output.weight") == NULL;
    if (hp->arch == ES_ARCH_PHI3) {
        /* the 128k variants scale RoPE per frequency by context (LongRoPE): not computed here */
        if (es_gguf_find_tensor(g, "rope_factors_long.weight") || es_gguf_find_tensor(g, "rope_factors_short.weight"))
            return es_fail(err, ES_ERR_UNSUPPORTED, "phi3 with LongRoPE factors (the 128k-context variants) is not supported");
        /* attention over a sliding window: within it, full attention is the same; beyond it, not, so the
           context stops there */
        int swa = 0;
        if (get_int(g, arch, "attention.sliding_window", &swa) && swa > 0 && swa < hp->n_ctx_train) hp->n_ctx_train = swa;
    }
    return es_hparams_validate(hp, err);
}

es_status es_hparams_to_gguf(const es_hparams *hp, es_gguf_writer *w, es_err *err) {
    es_status st = es_hparams_validate(hp, err);
    if (st != ES_OK) return st;
    const char *arch = es_arch_name(hp->arch);
    char key[128];
#define SETU(suffix, v)                                                       \
    do {                                                                      \
        snprintf(key, sizeof key, "%s.%s", arch, suffix);                     \
        if ((st = es_gguf_set_u32(w, key, (uint32_t)(v))) != ES_OK) goto fail; \
    } while (0)
    if ((st = es_gguf_set_str(w, "general.architecture", arch)) != ES_OK) goto fail;
    SETU("context_length", hp->n_ctx_train);
    SETU("embedding_length", hp->n_embd);
    SETU("block_count", hp->n_layer);
    SETU("feed_forward_length", hp->n_ff);
    SETU("attention.head_count", hp->n_head);
    SETU("attention.head_count_kv", hp->n_head_kv);
    SETU("rope.dimension_count", hp->rope_dim);
    SETU("vocab_size", hp->n_vocab);
    if (hp->head_dim != hp->n_embd / hp->n_head) {
        SETU("attention.key_length", hp->head_dim);
        SETU("attention.value_length", hp->head_dim);
    }
#undef SETU
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    if ((st = es_gguf_set_f32(w, key, hp->rms_eps)) != ES_OK) goto fail;
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    if ((st = es_gguf_set_f32(w, key, hp->rope_base)) != ES_OK) goto fail;
    if (hp->rope_freq_scale != 1.0f) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
        if ((st = es_gguf_set_str(w, key, "linear")) != ES_OK) goto fail;
        snprintf(key, sizeof key, "%s.rope.scaling.factor", arch);
        if ((st = es_gguf_set_f32(w, key, 1.0f / hp->rope_freq_scale)) != ES_OK) goto fail;
    }
    return ES_OK;
fail:
    return es_fail(err, st, "writing model metadata failed");
}
