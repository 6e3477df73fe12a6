#version 450
// attn.comp — tree-masked attention of one (batch row, query head) per workgroup, over the paged KV
// cache of the row's sequence. Row i attends to its sequence's chain of slots [0, prefix_len) and then
// to the slots ANC[anc_off .. + anc_len) (cached tree ancestors, batch ancestors, itself): the mask is
// the parent structure, never a dense matrix. Slot s lives in cache row TAB[tab_off + s / bs] * bs +
// s % bs (the block table of es_kv, shared with the CPU path).
// The slots go by in tiles of 64 with a running maximum and sum (online softmax): thread t scores
// slot t of the tile into shared memory, the tile's maximum rescales what is accumulated so far, and
// each thread adds p · v for its output dimensions (t, t + 64, ...). Nothing is kept per slot beyond
// the tile, so the scratch does not grow with the context and any context fits.
// No subgroup operations: reductions go through shared memory, so any subgroup size works.
// Built three times: f32 cache rows, with -DKV_F16 f16 rows (two values per 32-bit word; kv_dim and
// head_dim even), with -DKV_Q8 q8_0 rows (kv_dim a multiple of 64, head_dim of 32).
layout(local_size_x = 64) in;
layout(push_constant) uniform PC { uint n, n_head, n_head_kv, head_dim, kv_dim, bs; float scale; } pc;
layout(std430, binding = 0) readonly buffer BQ { float Q[]; };
#if defined(KV_F16)
layout(std430, binding = 1) readonly buffer BK { uint K[]; };
layout(std430, binding = 2) readonly buffer BV { uint V[]; };
float kval(uint e) { return unpackHalf2x16(K[e >> 1])[e & 1u]; }
float vval(uint e) { return unpackHalf2x16(V[e >> 1])[e & 1u]; }
#elif defined(KV_Q8)
// q8_0 rows (rows.comp mode 3): element e = row · kv_dim + col lives in block col / 32 of the row,
// an fp16 scale then 32 int8 values; a row is kv_dim / 32 · 34 bytes.
layout(std430, binding = 1) readonly buffer BK { uint K[]; };
layout(std430, binding = 2) readonly buffer BV { uint V[]; };
uint kbyte(uint o) { return (K[o >> 2] >> (8u * (o & 3u))) & 0xffu; }
uint vbyte(uint o) { return (V[o >> 2] >> (8u * (o & 3u))) & 0xffu; }
float q8(uint e, bool isk) {
    const uint row = e / pc.kv_dim, col = e % pc.kv_dim;
    const uint o = row * (pc.kv_dim / 32u * 34u) + (col >> 5) * 34u;
    const uint dh = isk ? kbyte(o) | (kbyte(o + 1u) << 8) : vbyte(o) | (vbyte(o + 1u) << 8);
    const uint qb = isk ? kbyte(o + 2u + (col & 31u)) : vbyte(o + 2u + (col & 31u));
    return unpackHalf2x16(dh).x * float(int(qb << 24) >> 24);
}
float kval(uint e) { return q8(e, true); }
float vval(uint e) { return q8(e, false); }
#else
layout(std430, binding = 1) readonly buffer BK { float K[]; };
layout(std430, binding = 2) readonly buffer BV { float V[]; };
float kval(uint e) { return K[e]; }
float vval(uint e) { return V[e]; }
#endif
layout(std430, binding = 3) writeonly buffer BO { float O[]; };
layout(std430, binding = 4) readonly buffer BM { int META[]; }; // per row: prefix_len, anc_off, anc_len, tab_off
layout(std430, binding = 5) readonly buffer BA { int ANC[]; };
layout(std430, binding = 6) readonly buffer BT { int TAB[]; };

#define TILE 64u
#define MAX_DIMS 4u // output dimensions per thread: head_dim <= 256 (es_vk_attention checks)

shared float red[TILE];
shared float prob[TILE];
shared uint vrow[TILE]; // the tile's slots' V offsets

uint cache_row(int tab_off, uint slot) { return uint(TAB[tab_off + int(slot / pc.bs)]) * pc.bs + slot % pc.bs; }

void main() {
    const uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint t = gl_LocalInvocationID.x;
    if (wg >= pc.n * pc.n_head) return; // uniform per workgroup
    const uint i = wg / pc.n_head, h = wg % pc.n_head;
    const uint kvh = h / (pc.n_head / pc.n_head_kv);
    const int prefix = META[4u * i], anc_off = META[4u * i + 1u], anc_len = META[4u * i + 2u], tab_off = META[4u * i + 3u];
    if (anc_len < 0) return; // the row's attention is computed elsewhere (a host-tier session's, on the CPU)
    const uint total = uint(prefix + anc_len);
    const uint qo = i * pc.n_head * pc.head_dim + h * pc.head_dim;
    float acc[MAX_DIMS];
    for (uint c = 0u; c < MAX_DIMS; c++) acc[c] = 0.0;
    float run_max = -1.0 / 0.0, run_sum = 0.0;
    for (uint k0 = 0u; k0 < total; k0 += TILE) {
        const uint k = k0 + t;
        float s = -1.0 / 0.0;
        if (k < total) {
            const uint slot = k < uint(prefix) ? k : uint(ANC[anc_off + int(k) - prefix]);
            const uint ko = cache_row(tab_off, slot) * pc.kv_dim + kvh * pc.head_dim;
            s = 0.0;
            for (uint j = 0u; j < pc.head_dim; j++) s += Q[qo + j] * kval(ko + j);
            s *= pc.scale;
            vrow[t] = ko;
        }
        red[t] = s;
        barrier();
        for (uint r = TILE / 2u; r > 0u; r >>= 1) {
            if (t < r) red[t] = max(red[t], red[t + r]);
            barrier();
        }
        const float new_max = max(run_max, red[0]); // finite: the tile has at least one slot
        barrier();
        const float p = k < total ? exp(s - new_max) : 0.0;
        prob[t] = p;
        red[t] = p;
        barrier();
        for (uint r = TILE / 2u; r > 0u; r >>= 1) {
            if (t < r) red[t] += red[t + r];
            barrier();
        }
        const float alpha = exp(run_max - new_max); // 0 on the first tile (run_max = -inf)
        run_sum = run_sum * alpha + red[0];
        run_max = new_max;
        const uint nk = min(TILE, total - k0);
        for (uint c = 0u; c < MAX_DIMS; c++) {
            const uint j = t + c * TILE;
            if (j >= pc.head_dim) break;
            float a = acc[c] * alpha;
            for (uint q = 0u; q < nk; q++) a += prob[q] * vval(vrow[q] + j);
            acc[c] = a;
        }
        barrier(); // the tile's shared values are read before the next tile writes them
    }
    const float inv = 1.0 / run_sum;
    for (uint c = 0u; c < MAX_DIMS; c++) {
        const uint j = t + c * TILE;
        if (j < pc.head_dim) O[qo + j] = acc[c] * inv;
    }
}
