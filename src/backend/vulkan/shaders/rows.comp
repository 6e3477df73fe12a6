#version 450
// rows.comp — moves whole rows of d floats by an index list: gather (mode 0: D[r] = S[I[r]], the rows
// that want logits), scatter (mode 1: D[I[r]] = S[r], new K / V rows into f32 cache rows) or scatter
// into f16 rows (mode 2: D[I[r]] = f16(S[r]), two values per 32-bit word; d even). A scatter skips
// rows whose index is negative.
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer BS { float S[]; };
layout(std430, binding = 1) writeonly buffer BD { uint D[]; };
layout(std430, binding = 2) readonly buffer BI { int I[]; };
layout(push_constant) uniform PC { uint n, d, mode; } pc;

void main() {
    const uint id = gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64u + gl_GlobalInvocationID.x;
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
