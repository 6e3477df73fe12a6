#version 450
// rows.comp — moves whole rows of d floats by an index list: gather (mode 0: D[r] = S[I[r]], the rows
// that want logits) or scatter (mode 1: D[I[r]] = S[r], new K / V rows into their cache rows).
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer BS { float S[]; };
layout(std430, binding = 1) writeonly buffer BD { float D[]; };
layout(std430, binding = 2) readonly buffer BI { int I[]; };
layout(push_constant) uniform PC { uint n, d, mode; } pc;

void main() {
    const uint id = gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64u + gl_GlobalInvocationID.x;
    if (id >= pc.n * pc.d) return;
    const uint r = id / pc.d, j = id % pc.d;
    if (pc.mode == 0u) D[r * pc.d + j] = S[uint(I[r]) * pc.d + j];
    else D[uint(I[r]) * pc.d + j] = S[r * pc.d + j];
}
