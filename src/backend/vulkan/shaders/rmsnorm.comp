#version 450
// rmsnorm.comp — Y[i] = w ⊙ X[i] / sqrt(mean(X[i]²) + eps) for n rows of d: one workgroup per row,
// the sum of squares met in shared memory. With `add` set, X[i] += R[i] first (the residual of the
// previous projection) and the sum written back to X.
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer BX { float X[]; };
layout(std430, binding = 1) readonly buffer BW { float Wn[]; };
layout(std430, binding = 2) writeonly buffer BY { float Y[]; };
layout(std430, binding = 3) readonly buffer BR { float R[]; };
layout(push_constant) uniform PC { uint n, d, add; float eps; } pc;

shared float red[64];

void main() {
    const uint row = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint t = gl_LocalInvocationID.x;
    if (row >= pc.n) return; // uniform per workgroup
    const uint o = row * pc.d;
    float s = 0.0;
    for (uint j = t; j < pc.d; j += 64u) {
        float v = X[o + j];
        if (pc.add != 0u) { v += R[o + j]; X[o + j] = v; }
        s += v * v;
    }
    red[t] = s;
    barrier();
    for (uint k = 32u; k > 0u; k >>= 1) {
        if (t < k) red[t] += red[t + k];
        barrier();
    }
    const float scale = 1.0 / sqrt(red[0] / float(pc.d) + pc.eps);
    for (uint j = t; j < pc.d; j += 64u) Y[o + j] = Wn[j] * (scale * X[o + j]);
}
