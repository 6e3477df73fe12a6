#version 450
// rope.comp — rotates the first rope_dim dims of each of n_heads heads of n rows in place: pairs
// (2i, 2i+1) (llama) or (i, i + rope_dim/2) (NEOX, qwen2), by the angles whose cos / sin the host
// computed for each row's position (CS, SN: n × rope_dim/2), so every device rotates by exactly the
// CPU's values. One invocation per (row, head, pair).
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer BV { float V[]; };
layout(std430, binding = 1) readonly buffer BC { float CS[]; };
layout(std430, binding = 2) readonly buffer BS { float SN[]; };
layout(push_constant) uniform PC { uint n, n_heads, head_dim, rope_dim, neox, row_stride; } pc;

void main() {
    const uint id = gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64u + gl_GlobalInvocationID.x;
    const uint half_dim = pc.rope_dim / 2u;
    if (id >= pc.n * pc.n_heads * half_dim) return;
    const uint i = id % half_dim, h = (id / half_dim) % pc.n_heads, row = id / (half_dim * pc.n_heads);
    const uint base = row * pc.row_stride + h * pc.head_dim;
    const uint a = base + (pc.neox != 0u ? i : 2u * i), b = base + (pc.neox != 0u ? i + half_dim : 2u * i + 1u);
    const float c = CS[row * half_dim + i], s = SN[row * half_dim + i];
    const float v0 = V[a], v1 = V[b];
    V[a] = v0 * c - v1 * s;
    V[b] = v0 * s + v1 * c;
}
