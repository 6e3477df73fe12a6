#version 450
// rows.comp — moves whole rows of d floats by an index list: gather (mode 0: D[r] = S[I[r]], the rows
// that want logits), scatter (mode 1: D[I[r]] = S[r], new K / V rows into f32 cache rows) or scatter
// into f16 rows (mode 2: D[I[r]] = f16(S[r]), two values per 32-bit word; d even). A scatter skips
// rows whose index is negative. Mode 3: q8_0 rows (q8_row).
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer BS { float S[]; };
layout(std430, binding = 1) writeonly buffer BD { uint D[]; };
layout(std430, binding = 2) readonly buffer BI { int I[]; };
layout(push_constant) uniform PC { uint n, d, mode; } pc;

// Mode 3: scatter into q8_0 rows (GGUF Q8_0 blocks: an fp16 scale d = max|x| / 127, then 32 int8
// values round(x / d), halves away from zero as the CPU's quantiser): one invocation per row writes
// the whole row word by word (d / 32 blocks of 34 bytes; rows start on a word: d a multiple of 64).
void q8_row(uint r) {
    const uint rb = pc.d / 32u * 34u;         // bytes per row
    const uint base = uint(I[r]) * (rb / 4u); // the row's first word
    uint word = 0u, nb = 0u, wi = 0u;
    for (uint b = 0u; b < pc.d / 32u; b++) {
        const uint x0 = r * pc.d + b * 32u;
        float amax = 0.0;
        for (uint i = 0u; i < 32u; i++) amax = max(amax, abs(S[x0 + i]));
        const float dq = amax / 127.0, id = dq != 0.0 ? 1.0 / dq : 0.0;
        const uint dh = packHalf2x16(vec2(dq, 0.0)) & 0xffffu;
        for (uint k = 0u; k < 34u; k++) {
            uint byte;
            if (k < 2u) byte = (dh >> (8u * k)) & 0xffu;
            else {
                const float v = S[x0 + k - 2u] * id;
                byte = uint(int(sign(v) * floor(abs(v) + 0.5))) & 0xffu;
            }
            word |= byte << (8u * nb);
            if (++nb == 4u) {
                D[base + wi++] = word;
                word = 0u;
                nb = 0u;
            }
        }
    }
}

void main() {
    const uint id = gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64u + gl_GlobalInvocationID.x;
    if (pc.mode == 3u) {
        if (id < pc.n && I[id] >= 0) q8_row(id);
        return;
    }
    if (pc.mode == 2u) {
        const uint hd = pc.d / 2u; // words per row
        if (id >= pc.n * hd) return;
        const uint r = id / hd, w = id % hd;
        if (I[r] < 0) return; // a row that is not written here (a host-tier session's, in a hybrid pass)
        D[uint(I[r]) * hd + w] = packHalf2x16(vec2(S[r * pc.d + 2u * w], S[r * pc.d + 2u * w + 1u]));
        return;
    }
    if (id >= pc.n * pc.d) return;
    const uint r = id / pc.d, j = id % pc.d;
    if (pc.mode == 0u) D[r * pc.d + j] = floatBitsToUint(S[uint(I[r]) * pc.d + j]);
    else if (I[r] >= 0) D[uint(I[r]) * pc.d + j] = floatBitsToUint(S[r * pc.d + j]);
}
