#version 450
// ew.comp — elementwise steps over `count` floats, chosen by `op`:
//   0 add:    A[i] += B[i]                        (residual)
//   1 bias:   A[i] += B[i % width]                (Qwen2's q/k/v biases, one row of width per row)
//   2 swiglu: A[i] = A[i] / (1 + exp(-A[i])) * B[i] (SiLU(gate) · up)
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer BA { float A[]; };
layout(std430, binding = 1) readonly buffer BB { float B[]; };
layout(push_constant) uniform PC { uint count, op, width; } pc;

void main() {
    const uint i = gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64u + gl_GlobalInvocationID.x;
    if (i >= pc.count) return;
    if (pc.op == 0u) A[i] += B[i];
    else if (pc.op == 1u) A[i] += B[i % pc.width];
    else { const float g = A[i]; A[i] = g * (1.0 / (1.0 + exp(-g))) * B[i]; }
}
