#version 450
// attn.comp — tree-masked attention of one (batch row, query head) per workgroup, over the paged KV
// cache of the row's sequence. Row i attends to its sequence's chain of slots [0, prefix_len) and then
// to the slots ANC[anc_off .. + anc_len) (cached tree ancestors, batch ancestors, itself): the mask is
// the parent structure, never a dense matrix. Slot s lives in cache row TAB[tab_off + s / bs] * bs +
// s % bs (the block table of es_kv, shared with the CPU path).
//   pass 1: each thread scores slots t, t+64, ... (q · k · scale) into SC, keeping its max;
//   pass 2: the workgroup's max, then exp(score - max) and the sum;
//   pass 3: each thread sums p · v for its output dims.
// No subgroup operations: reductions go through shared memory, so any subgroup size works.
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer BQ { float Q[]; };
layout(std430, binding = 1) readonly buffer BK { float K[]; };
layout(std430, binding = 2) readonly buffer BV { float V[]; };
layout(std430, binding = 3) writeonly buffer BO { float O[]; };
layout(std430, binding = 4) readonly buffer BM { int META[]; }; // per row: prefix_len, anc_off, anc_len, tab_off
layout(std430, binding = 5) readonly buffer BA { int ANC[]; };
layout(std430, binding = 6) readonly buffer BT { int TAB[]; };
layout(std430, binding = 7) buffer BSC { float SC[]; };         // (rows × n_head, sc_stride) scores
layout(push_constant) uniform PC { uint n, n_head, n_head_kv, head_dim, kv_dim, bs, sc_stride; float scale; } pc;

shared float red[64];

uint cache_row(int tab_off, uint slot) { return uint(TAB[tab_off + int(slot / pc.bs)]) * pc.bs + slot % pc.bs; }

void main() {
    const uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint t = gl_LocalInvocationID.x;
    if (wg >= pc.n * pc.n_head) return; // uniform per workgroup
    const uint i = wg / pc.n_head, h = wg % pc.n_head;
    const uint kvh = h / (pc.n_head / pc.n_head_kv);
    const int prefix = META[4u * i], anc_off = META[4u * i + 1u], anc_len = META[4u * i + 2u], tab_off = META[4u * i + 3u];
    const uint total = uint(prefix + anc_len);
    const uint qo = i * pc.n_head * pc.head_dim + h * pc.head_dim, so = wg * pc.sc_stride;
    float m = -1.0 / 0.0;
    for (uint k = t; k < total; k += 64u) {
        const uint slot = k < uint(prefix) ? k : uint(ANC[anc_off + int(k) - prefix]);
        const uint ko = cache_row(tab_off, slot) * pc.kv_dim + kvh * pc.head_dim;
        float s = 0.0;
        for (uint j = 0u; j < pc.head_dim; j++) s += Q[qo + j] * K[ko + j];
        s *= pc.scale;
        SC[so + k] = s;
        m = max(m, s);
    }
    red[t] = m;
    barrier();
    for (uint r = 32u; r > 0u; r >>= 1) {
        if (t < r) red[t] = max(red[t], red[t + r]);
        barrier();
    }
    const float mx = red[0];
    barrier();
    float sum = 0.0;
    for (uint k = t; k < total; k += 64u) {
        const float e = exp(SC[so + k] - mx);
        SC[so + k] = e;
        sum += e;
    }
    red[t] = sum;
    memoryBarrierBuffer(); // the probabilities are read by every thread below
    barrier();
    for (uint r = 32u; r > 0u; r >>= 1) {
        if (t < r) red[t] += red[t + r];
        barrier();
    }
    const float inv = 1.0 / red[0];
    for (uint j = t; j < pc.head_dim; j += 64u) {
        float acc = 0.0;
        for (uint k = 0u; k < total; k++) {
            const uint slot = k < uint(prefix) ? k : uint(ANC[anc_off + int(k) - prefix]);
            acc += SC[so + k] * V[cache_row(tab_off, slot) * pc.kv_dim + kvh * pc.head_dim + j];
        }
        O[qo + j] = acc * inv;
    }
}
