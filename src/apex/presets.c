/* presets.c — APEX cost profiles derived from published figures, for simulation and tests. None was
 * measured on its hardware: each is a roofline-style derivation whose inputs and assumptions are
 * listed beside it, so a reader can redo the arithmetic or replace an assumption.
 *
 * Common assumptions:
 *   - decode linear work reads each weight once per pass: lin_a = layer weight bytes / bandwidth
 *     (the output matrix, read once per pass, spread over the layers), and each row adds its
 *     arithmetic: lin_b = 2 · layer params / peak fp16 FLOP/s (dense tensor-core rate);
 *   - attention reads each attended slot's K and V once: gatt_c, catt_c = KV bytes per slot and
 *     layer / bandwidth;
 *   - a GPU reaches 75 % of its datasheet bandwidth in decode kernels (eta_dev); the host figure
 *     below is already an effective one;
 *   - per-launch and per-row constants (gatt_a 5 us: one kernel launch; gatt_b 1 us and catt_b
 *     2 us: a row's q, softmax and output; catt_a 20 us: waking and joining the attention threads)
 *     are assumptions of typical magnitude, small beside the bandwidth terms at useful contexts. */
#include <string.h>

#include "apex/predict.h"

#define ETA_DEV 0.75

/* NVIDIA T4 (datasheet: 65 TFLOP/s fp16 tensor, 320 GB/s, 16 GB, PCIe Gen3 x16) serving
 * LLaMa-2-7B fp16 (the paper's model: 32 layers, d 4096, FFN 11008, 32 heads without GQA, vocab 32000).
 *   layer weights 4·4096² + 3·4096·11008 = 202,375,168 params = 404,750,336 B, + output matrix
 *   32000·4096·2 B / 32 layers = 8,192,000 B  ->  412,942,336 B / (0.75 · 320 GB/s) = 1.7206 ms
 *   lin_b = 2 · (202,375,168 + 4,096,000) / 65e12 = 6.353 us per row
 *   KV per slot and layer: 2 · 4096 · 2 B = 16,384 B -> gatt_c = 16,384 / 240e9 = 68.3 ns
 * Host (assumed): 8 cores, 40 GB/s effective for attention (two DDR4 channels) -> catt_c = 409.6 ns.
 * Round trip 30 us per layer (two small PCIe copies and a stream wait); PCIe Gen3 x16 at ~12 GB/s
 * effective -> xfer_b = 83.3 ps per byte. Host row bytes: q, k, v (3·8192) down, output (8192) up. */
#define T4_BW (ETA_DEV * 320e9)
/* NVIDIA A10 (datasheet: 125 TFLOP/s fp16 tensor dense, 600 GB/s, 24 GB, PCIe Gen4 x16) serving
 * LLaMa-3.1-8B fp16 (32 layers, d 4096, FFN 14336, 32 query heads, 8 KV heads of 128, vocab 128256).
 *   layer weights 2·4096² + 2·4096·1024 + 3·4096·14336 = 218,103,808 params = 436,207,616 B, +
 *   output matrix 128256·4096·2 B / 32 = 32,833,536 B -> 469,041,152 B / (0.75 · 600 GB/s) = 1.0423 ms
 *   lin_b = 2 · (218,103,808 + 16,416,768) / 125e12 = 3.752 us per row
 *   KV per slot and layer: 2 · 1024 · 2 B = 4,096 B -> gatt_c = 4,096 / 450e9 = 9.10 ns
 * Host (assumed): 16 cores, 80 GB/s effective -> catt_c = 51.2 ns. Round trip 25 us; PCIe Gen4 x16
 * at ~24 GB/s effective -> xfer_b = 41.7 ps per byte. Host row bytes: q 8192 + k, v 4096 down,
 * output 8192 up. */
#define A10_BW (ETA_DEV * 600e9)
/* lavapipe (Mesa's Vulkan on the CPU) on this project's 2-core build machine, serving
 * Qwen2.5-Coder-1.5B Q4_K_M (28 layers, d 1536, 12 query heads, 2 KV heads of 128, f16 KV).
 * Anchored on this project's recorded figures (README "Device backend"): the 1.5B target takes
 * ~8 s a token on lavapipe (0.286 s per layer), stories260K (weights negligible, 5 layers) decodes
 * at ~40 tokens/s there (~5 ms per layer of dispatch cost), and the CPU backend decodes the 1.5B at
 * 19.4 tokens/s on the same 2 threads (lavapipe is ~150x slower: compute-bound, not
 * bandwidth-bound). Split by assumption: dispatch 3.6 ms linear + 1.4 ms attention per layer; of
 * the remaining 0.281 s, 20 % shared by the rows (dequantisation in the matrix-vector kernel) and
 * 80 % per row; device attention per slot 150x the CPU's (the measured linear ratio). CPU attention
 * (the project's own kernels over f16 KV, 1 KiB per slot and layer) at ~10 GB/s on 2 cores; a
 * fence round trip of 0.2 ms; copies at 10 GB/s (host-visible memory is host memory). The device
 * runs on the CPU's own cores, so overlapped work serialises: contend = 1. Host row bytes: q and
 * output 1536·4 each, k, v 2·256·4 (f32 activations). */

static const es_apex_preset presets[] = {
    {
        .name = "t4",
        .what = "NVIDIA T4 + 8-core host at 40 GB/s, LLaMa-2-7B fp16 (derived, not measured)",
        .n_layer = 32,
        .host_row_bytes = 32768,
        .kv_token_bytes = 16384 * 32,
        .profile = {.lin_a = 412942336.0 / T4_BW, .lin_b = 2.0 * 206471168.0 / 65e12,
                    .gatt_a = 5e-6, .gatt_b = 1e-6, .gatt_c = 16384.0 / T4_BW,
                    .catt_a = 20e-6, .catt_b = 2e-6, .catt_c = 16384.0 / 40e9,
                    .sync_s = 30e-6, .xfer_b = 1.0 / 12e9, .contend = 0},
    },
    {
        .name = "a10",
        .what = "NVIDIA A10 + 16-core host at 80 GB/s, LLaMa-3.1-8B fp16 (derived, not measured)",
        .n_layer = 32,
        .host_row_bytes = 20480,
        .kv_token_bytes = 4096 * 32,
        .profile = {.lin_a = 469041152.0 / A10_BW, .lin_b = 2.0 * 234520576.0 / 125e12,
                    .gatt_a = 5e-6, .gatt_b = 1e-6, .gatt_c = 4096.0 / A10_BW,
                    .catt_a = 20e-6, .catt_b = 2e-6, .catt_c = 4096.0 / 80e9,
                    .sync_s = 25e-6, .xfer_b = 1.0 / 24e9, .contend = 0},
    },
    {
        .name = "lavapipe",
        .what = "lavapipe on a 2-core host, Qwen2.5-Coder-1.5B Q4_K_M (from recorded per-token figures + assumptions)",
        .n_layer = 28,
        .host_row_bytes = 14336,
        .kv_token_bytes = 1024 * 28,
        .profile = {.lin_a = 3.6e-3 + 0.2 * 0.2807, .lin_b = 0.8 * 0.2807,
                    .gatt_a = 1.4e-3, .gatt_b = 1e-4, .gatt_c = 150 * 1024.0 / 10e9,
                    .catt_a = 10e-6, .catt_b = 5e-6, .catt_c = 1024.0 / 10e9,
                    .sync_s = 2e-4, .xfer_b = 1.0 / 10e9, .contend = 1},
    },
};

const es_apex_preset *es_apex_preset_at(int i) {
    return i >= 0 && i < (int)(sizeof presets / sizeof *presets) ? &presets[i] : NULL;
}

const es_apex_preset *es_apex_preset_find(const char *name) {
    for (int i = 0; name && es_apex_preset_at(i); i++)
        if (strcmp(presets[i].name, name) == 0) return &presets[i];
    return NULL;
}
