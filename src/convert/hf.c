/* hf.c — Hugging Face checkpoints (config.json + model.safetensors + tokenizer.json) to GGUF.
 *
 * model_type "llama": q_proj / k_proj rows are permuted from HF's rotate-half RoPE layout (per head:
 * first half of the dims paired with the second half) to the consecutive-pair layout GGUF "llama"
 * uses: new row h·hd + 2i + j = old row h·hd + j·hd/2 + i (i < hd/2, j ∈ {0,1}).
 * model_type "qwen2": GGUF "qwen2" uses NEOX RoPE (rotate-half), so nothing is permuted; q/k/v have
 * biases. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert/convert_impl.h"
#include "convert/safetensors.h"
#include "kernels/types.h"
#include "model/hparams.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"

/* ---- config.json ---- */

static es_status cfg_int(const cJSON *cfg, const char *key, bool required, int dflt, int lo, int hi, int *out, es_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return es_fail(err, ES_ERR_FORMAT, "missing \"%s\"", key);
        *out = dflt;
        return ES_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return es_fail(err, ES_ERR_FORMAT, "\"%s\" must be an integer in [%d, %d]", key, lo, hi);
    *out = (int)v->valuedouble;
    return ES_OK;
}

static es_status cfg_float(const cJSON *cfg, const char *key, double dflt, double lo, double hi, float *out, es_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) {
        *out = (float)dflt;
        return ES_OK;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble > lo && v->valuedouble < hi))
        return es_fail(err, ES_ERR_FORMAT, "\"%s\" must be a number in (%g, %g)", key, lo, hi);
    *out = (float)v->valuedouble;
    return ES_OK;
}

static bool cfg_true(const cJSON *cfg, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) return dflt;
    return cJSON_IsTrue(v);
}


/* Reads config.json into hyper-parameters; *tie: tie_word_embeddings. */
static es_status parse_config(const char *path, es_hparams *hp, bool *tie, es_err *err) {
    char *text;
    size_t len;
    es_status st = es_read_small_file(path, 16u << 20, &text, &len, err);
    if (st != ES_OK) return st; /* the message names the file */
    st = es_hf_parse_config(text, len, hp, tie, err);
    free(text);
    if (st != ES_OK) es_err_prefix(err, path);
    return st;
}

es_status es_hf_parse_config(const char *text, size_t len, es_hparams *hp, bool *tie, es_err *err) {
    es_status st = ES_OK;
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    if (!cfg || !cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return es_fail(err, ES_ERR_FORMAT, "not a JSON object");
    }
    memset(hp, 0, sizeof *hp);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(cfg, "hidden_act");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
    if (!cJSON_IsString(mt)) {
        st = es_fail(err, ES_ERR_FORMAT, "missing \"model_type\"");
    } else if (strcmp(mt->valuestring, "llama") == 0) {
        hp->arch = ES_ARCH_LLAMA;
    } else if (strcmp(mt->valuestring, "qwen2") == 0) {
        hp->arch = ES_ARCH_QWEN2;
        hp->rope_neox = true;
        hp->qkv_bias = true;
    } else {
        st = es_fail(err, ES_ERR_UNSUPPORTED, "model_type \"%.64s\" is not supported (llama, qwen2 are)", mt->valuestring);
    }
    if (st == ES_OK && rs && !cJSON_IsNull(rs))
        st = es_fail(err, ES_ERR_UNSUPPORTED, "rope_scaling is not supported (only plain RoPE; it must be null)");
    if (st == ES_OK && act && !(cJSON_IsString(act) && strcmp(act->valuestring, "silu") == 0))
        st = es_fail(err, ES_ERR_UNSUPPORTED, "hidden_act must be \"silu\"");
    if (st == ES_OK && hp->arch == ES_ARCH_LLAMA && (cfg_true(cfg, "attention_bias", false) || cfg_true(cfg, "mlp_bias", false)))
        st = es_fail(err, ES_ERR_UNSUPPORTED, "llama with attention_bias or mlp_bias is not supported");
    const int lim = 1 << 20;
    if (st == ES_OK) st = cfg_int(cfg, "hidden_size", true, 0, 1, lim, &hp->n_embd, err);
    if (st == ES_OK) st = cfg_int(cfg, "intermediate_size", true, 0, 1, 4 * lim, &hp->n_ff, err);
    if (st == ES_OK) st = cfg_int(cfg, "num_hidden_layers", true, 0, 1, 1024, &hp->n_layer, err);
    if (st == ES_OK) st = cfg_int(cfg, "num_attention_heads", true, 0, 1, 4096, &hp->n_head, err);
    if (st == ES_OK) st = cfg_int(cfg, "num_key_value_heads", false, hp->n_head, 1, 4096, &hp->n_head_kv, err);
    if (st == ES_OK) st = cfg_int(cfg, "vocab_size", true, 0, 1, 16 * lim, &hp->n_vocab, err);
    if (st == ES_OK) st = cfg_int(cfg, "max_position_embeddings", false, 2048, 1, 16 * lim, &hp->n_ctx_train, err);
    if (st == ES_OK) st = cfg_int(cfg, "head_dim", false, hp->n_embd / hp->n_head, 1, 4096, &hp->head_dim, err);
    if (st == ES_OK) st = cfg_float(cfg, "rms_norm_eps", 1e-6, 0.0, 1.0, &hp->rms_eps, err);
    if (st == ES_OK) st = cfg_float(cfg, "rope_theta", 10000.0, 1.0, 1e12, &hp->rope_base, err);
    hp->rope_freq_scale = 1.0f;
    if (st == ES_OK && !cJSON_GetObjectItemCaseSensitive(cfg, "head_dim") && hp->n_embd % hp->n_head != 0)
        st = es_fail(err, ES_ERR_FORMAT, "hidden_size %d is not a multiple of num_attention_heads %d", hp->n_embd, hp->n_head);
    *tie = cfg_true(cfg, "tie_word_embeddings", false);
    cJSON_Delete(cfg);
    if (st != ES_OK) return st;
    hp->rope_dim = hp->head_dim;
    return es_hparams_validate(hp, err);
}

/* ---- tensors ---- */

typedef struct hf_src {
    const es_st_tensor *t;
    int64_t ne0;
    int head_dim; /* > 0: permute rows from rotate-half to consecutive pairs within heads of this size */
} hf_src;

static es_status hf_row(void *ud, int64_t row, float *dst, es_err *err) {
    const hf_src *s = ud;
    int64_t src_row = row;
    if (s->head_dim > 0) {
        const int64_t hd = s->head_dim, h = row / hd, i = row % hd;
        src_row = h * hd + (i % 2) * (hd / 2) + i / 2;
    }
    return es_st_read_f32(s->t, (uint64_t)src_row * (uint64_t)s->ne0, s->ne0, dst, err);
}

/* Adds `gguf_name` from safetensors tensor `hf_name`, which must have PyTorch shape [rows, cols]
 * (cols == 0: a vector of `rows`). */
static es_status add_hf(es_plan *plan, const es_safetensors *sf, const char *hf_name, const char *gguf_name, int64_t rows,
                        int64_t cols, int permute_hd, uint32_t want, es_err *err) {
    const es_st_tensor *t = es_st_find(sf, hf_name);
    if (!t) return es_fail(err, ES_ERR_FORMAT, "model.safetensors: missing tensor %s", hf_name);
    const bool vec = cols == 0;
    if (t->n_dims != (vec ? 1 : 2) || t->shape[0] != rows || (!vec && t->shape[1] != cols)) {
        if (vec)
            return es_fail(err, ES_ERR_FORMAT, "model.safetensors: %s should have shape [%lld]", hf_name, (long long)rows);
        return es_fail(err, ES_ERR_FORMAT, "model.safetensors: %s should have shape [%lld, %lld]", hf_name, (long long)rows, (long long)cols);
    }
    if (t->dtype != ES_ST_F32 && t->dtype != ES_ST_F16 && t->dtype != ES_ST_BF16)
        return es_fail(err, ES_ERR_UNSUPPORTED, "model.safetensors: %s has dtype %s (F32, F16, BF16 are supported)", hf_name,
                       es_st_dtype_name(t->dtype));
    hf_src *s = malloc(sizeof *s);
    if (!s) return es_fail(err, ES_ERR_NOMEM, "out of memory");
    *s = (hf_src){.t = t, .ne0 = vec ? rows : cols, .head_dim = permute_hd};
    const int64_t ne[2] = {vec ? rows : cols, vec ? 1 : rows};
    const uint32_t type = vec ? ES_TYPE_F32 : es_matrix_type(plan, want, gguf_name, ne[0]);
    return es_plan_add_rows(plan, gguf_name, type, vec ? 1 : 2, ne, hf_row, s, true, err);
}

/* Per-layer tensors: HF suffix, GGUF suffix, PyTorch shape [rows, cols] in symbols ('d' n_embd,
 * 'f' n_ff, 'q' n_head·head_dim, 'k' n_head_kv·head_dim, 0: a vector), and whether the rows are
 * permuted for llama's RoPE. The three biases (last) exist for qwen2 only. */
typedef struct hf_layer_tensor {
    const char *hf, *gg;
    char rows, cols;
    bool permute;
} hf_layer_tensor;

static const hf_layer_tensor k_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight", 'd', 0, false},
    {"self_attn.q_proj.weight", "attn_q.weight", 'q', 'd', true},
    {"self_attn.k_proj.weight", "attn_k.weight", 'k', 'd', true},
    {"self_attn.v_proj.weight", "attn_v.weight", 'k', 'd', false},
    {"self_attn.o_proj.weight", "attn_output.weight", 'd', 'q', false},
    {"post_attention_layernorm.weight", "ffn_norm.weight", 'd', 0, false},
    {"mlp.gate_proj.weight", "ffn_gate.weight", 'f', 'd', false},
    {"mlp.down_proj.weight", "ffn_down.weight", 'd', 'f', false},
    {"mlp.up_proj.weight", "ffn_up.weight", 'f', 'd', false},
    {"self_attn.q_proj.bias", "attn_q.bias", 'q', 0, false},
    {"self_attn.k_proj.bias", "attn_k.bias", 'k', 0, false},
    {"self_attn.v_proj.bias", "attn_v.bias", 'k', 0, false},
};

/* True for a safetensors entry the conversion uses, or knows to skip (rotary inv_freq buffers). */
static bool hf_known(const char *name, int n_layer, size_t n_suffix) {
    if (strcmp(name, "model.embed_tokens.weight") == 0 || strcmp(name, "lm_head.weight") == 0 ||
        strcmp(name, "model.norm.weight") == 0 || strstr(name, "rotary_emb.inv_freq"))
        return true;
    if (strncmp(name, "model.layers.", 13) != 0) return false;
    char *end;
    long il = strtol(name + 13, &end, 10);
    if (end == name + 13 || *end != '.' || il < 0 || il >= n_layer) return false;
    for (size_t i = 0; i < n_suffix; i++)
        if (strcmp(end + 1, k_layer[i].hf) == 0) return true;
    return false;
}

/* A vocabulary padded with "[PAD<i>]" tokens up to n_vocab rows of the embedding (HF models often
 * round vocab_size up beyond the tokenizer's tokens). */
typedef struct padded_vocab {
    es_vocab_spec spec;
    const char **tokens;
    size_t *lens;
    float *scores;
    int32_t *types;
    char *text;
} padded_vocab;

static void padded_free(padded_vocab *p) {
    free(p->tokens);
    free(p->lens);
    free(p->scores);
    free(p->types);
    free(p->text);
}

static es_status pad_vocab(const es_vocab_spec *in, int n_vocab, padded_vocab *p, es_err *err) {
    memset(p, 0, sizeof *p);
    p->spec = *in;
    const int n0 = in->n_vocab, extra = n_vocab - n0;
    p->tokens = malloc((size_t)n_vocab * sizeof *p->tokens);
    p->lens = malloc((size_t)n_vocab * sizeof *p->lens);
    p->scores = malloc((size_t)n_vocab * sizeof *p->scores);
    p->types = malloc((size_t)n_vocab * sizeof *p->types);
    p->text = malloc((size_t)extra * 24 + 1);
    if (!p->tokens || !p->lens || !p->scores || !p->types || !p->text) {
        padded_free(p);
        return es_fail(err, ES_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n0; i++) {
        p->tokens[i] = in->tokens[i];
        p->lens[i] = in->lens ? in->lens[i] : strlen(in->tokens[i]);
        p->scores[i] = in->scores ? in->scores[i] : 0.0f;
        p->types[i] = in->types ? in->types[i] : ES_TOKTYPE_NORMAL;
    }
    if (!in->types) {
        /* the spec's inference would have marked these; keep that behaviour for the real tokens */
        free(p->types);
        p->types = NULL;
    }
    char *q = p->text;
    for (int i = n0; i < n_vocab; i++) {
        int k = snprintf(q, 24, "[PAD%d]", i);
        p->tokens[i] = q;
        p->lens[i] = (size_t)k;
        p->scores[i] = -1e9f;
        if (p->types) p->types[i] = ES_TOKTYPE_UNUSED;
        q += k + 1;
    }
    p->spec.n_vocab = n_vocab;
    p->spec.tokens = p->tokens;
    p->spec.lens = p->lens;
    p->spec.scores = p->scores;
    p->spec.types = p->types;
    return ES_OK;
}

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Plans every tensor of the checkpoint in the GGUF's order (embedding, layers, norm, classifier) and
 * logs the tensors it does not know. */
static es_status plan_tensors(es_plan *plan, const es_safetensors *sf, const es_hparams *hp, const char *embed_name, uint32_t t,
                              es_log_fn log, void *ud, es_err *err) {
    const bool tie = hp->tied_output;
    es_status st;
    const int64_t d = hp->n_embd, f = hp->n_ff, qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    const int perm = hp->arch == ES_ARCH_LLAMA ? hp->head_dim : 0;
    if ((st = add_hf(plan, sf, embed_name, "token_embd.weight", hp->n_vocab, d, 0, t, err)) != ES_OK) return st;
    const size_t n_suffix = hp->qkv_bias ? 12 : 9;
    for (int il = 0; il < hp->n_layer; il++) {
        for (size_t i = 0; i < n_suffix; i++) {
            const hf_layer_tensor *k = &k_layer[i];
            const int64_t rows = k->rows == 'd' ? d : k->rows == 'f' ? f : k->rows == 'q' ? qd : kvd;
            const int64_t cols = k->cols == 'd' ? d : k->cols == 'f' ? f : k->cols == 'q' ? qd : 0;
            char hn[160], gn[96];
            snprintf(hn, sizeof hn, "model.layers.%d.%s", il, k->hf);
            es_tensor_name(gn, sizeof gn, il, k->gg);
            if ((st = add_hf(plan, sf, hn, gn, rows, cols, k->permute ? perm : 0, t, err)) != ES_OK) return st;
        }
    }
    if ((st = add_hf(plan, sf, "model.norm.weight", "output_norm.weight", d, 0, 0, t, err)) != ES_OK) return st;
    if (!tie && (st = add_hf(plan, sf, "lm_head.weight", "output.weight", hp->n_vocab, d, 0, t, err)) != ES_OK) return st;
    /* Anything else in the checkpoint is not part of a llama / qwen2 model we understand: say so. */
    for (int i = 0; i < es_st_n_tensors(sf); i++) {
        const char *name = es_st_tensor_at(sf, i)->name;
        if (!hf_known(name, hp->n_layer, n_suffix)) es_convert_logf(log, ud, 1, "ignoring tensor %s", name);
    }
    return ES_OK;
}

es_status es_convert_hf(const char *dir, const char *out_path, const es_convert_opts *opts_in, es_err *err) {
    const es_convert_opts opts = opts_in ? *opts_in : es_convert_default_opts();
    if (!dir || !out_path) return es_fail(err, ES_ERR_INVALID_ARG, "missing path");
    if (!es_convert_type_ok(opts.out_type))
        return es_fail(err, ES_ERR_INVALID_ARG, "cannot write weights as %s (f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m)",
                       es_convert_type_name(opts.out_type));

    char path[4096], path2[4096];
    es_hparams hp;
    bool tie = false;
    es_status st;
    es_safetensors *sf = NULL;
    es_vocab *vocab = NULL;
    es_gguf_writer *w = NULL;
    padded_vocab pv;
    memset(&pv, 0, sizeof pv);
    es_plan plan;
    es_plan_init(&plan, opts.n_threads, opts.log, opts.ud);

    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((st = parse_config(path, &hp, &tie, err)) != ES_OK) goto done;
    plan.n_layers = hp.n_layer;
    plan.tied_output = tie;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(path2, sizeof path2, "%s/model.safetensors.index.json", dir);
    if (!file_exists(path) && file_exists(path2)) {
        st = es_fail(err, ES_ERR_UNSUPPORTED, "%s: sharded checkpoints (model.safetensors.index.json) are not supported", dir);
        goto done;
    }
    if ((st = es_st_open(path, &sf, err)) != ES_OK) goto done;

    if (opts.progress) opts.progress(opts.ud, "reading tokenizer", 0.0);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(path2, sizeof path2, "%s/tokenizer_config.json", dir);
    if ((st = es_vocab_load_hf(path, file_exists(path2) ? path2 : NULL, &vocab, err)) != ES_OK) {
        es_err_prefix(err, path);
        goto done;
    }
    const es_vocab_spec *spec = es_vocab_spec_of(vocab);
    if (spec->n_vocab > hp.n_vocab) {
        st = es_fail(err, ES_ERR_MISMATCH, "%s: tokenizer has %d tokens but the model's vocab_size is %d", dir, spec->n_vocab, hp.n_vocab);
        goto done;
    }
    if (spec->n_vocab < hp.n_vocab) {
        es_convert_logf(opts.log, opts.ud, 2, "tokenizer has %d tokens, vocab_size %d: padding with [PAD<i>] tokens", spec->n_vocab, hp.n_vocab);
        if ((st = pad_vocab(spec, hp.n_vocab, &pv, err)) != ES_OK) goto done;
        spec = &pv.spec;
    }

    /* Embedding / classifier. A tied checkpoint may store only one of the two names. */
    const bool has_embed = es_st_find(sf, "model.embed_tokens.weight") != NULL;
    const bool has_head = es_st_find(sf, "lm_head.weight") != NULL;
    if (!has_head && !tie) {
        es_convert_logf(opts.log, opts.ud, 2, "no lm_head.weight: using the embedding as the classifier");
        tie = true;
    }
    hp.tied_output = tie;
    const char *embed_name = has_embed ? "model.embed_tokens.weight" : tie && has_head ? "lm_head.weight" : "model.embed_tokens.weight";

    if ((st = es_convert_writer_begin(&hp, opts.name, dir, opts.out_type, spec, &w, err)) != ES_OK) goto done;

    if ((st = plan_tensors(&plan, sf, &hp, embed_name, opts.out_type, opts.log, opts.ud, err)) != ES_OK) goto done;

    st = es_plan_write(&plan, w, out_path, opts.progress, opts.ud, err);
    if (st != ES_OK) goto done;
    if (opts.stats) {
        memset(opts.stats, 0, sizeof *opts.stats);
        opts.stats->n_tensors = plan.n;
        opts.stats->n_converted = plan.n;
        opts.stats->n_kept_f32 = plan.n_kept_f32;
        opts.stats->n_params = es_plan_n_params(&plan);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        opts.stats->bytes_in = es_file_size_of(path);
        opts.stats->bytes_out = es_file_size_of(out_path);
    }
done:
    es_plan_free(&plan);
    if (w) es_gguf_writer_free(w);
    padded_free(&pv);
    if (vocab) es_vocab_free(vocab);
    es_st_free(sf);
    return st;
}
