#version 450
// matvec.comp — Y[n][rows] = X[n][cols] · Wᵀ for few activation rows (decode): one workgroup per
// weight row, its threads striding over the row 16 elements at a time, each piece of W dequantised
// once and used for up to 4 activation rows; the partial sums meet in shared memory (no subgroup
// operations, so nothing depends on the device's subgroup size). Weight rows beyond 65535 workgroups
// continue in the grid's y dimension.
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer BW { uint W[]; };
layout(std430, binding = 1) readonly buffer BX { float X[]; };
layout(std430, binding = 2) writeonly buffer BY { float Y[]; };
layout(push_constant) uniform PC { uint rows, cols, n, row_bytes, w_off; } pc;
#include "weights.glsl"

#define NR 4
shared float red[64 * NR];

void main() {
    const uint r = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint t = gl_LocalInvocationID.x;
    if (r >= pc.rows) return; // uniform per workgroup: the barriers below are not reached unevenly
    const uint base = pc.w_off + r * pc.row_bytes;
    const uint pieces = (pc.cols + 15u) / 16u;
    for (uint a0 = 0u; a0 < pc.n; a0 += NR) {
        float acc[NR];
        for (uint i = 0u; i < NR; i++) acc[i] = 0.0;
        for (uint p = t; p < pieces; p += 64u) {
            float w[16];
            w_load16(base, p * 16u, pc.cols, w);
            for (uint i = 0u; i < NR; i++) {
                if (a0 + i >= pc.n) break;
                const uint xo = (a0 + i) * pc.cols + p * 16u;
                float s = 0.0;
                for (uint j = 0u; j < 16u; j++)
                    if (p * 16u + j < pc.cols) s += w[j] * X[xo + j];
                acc[i] += s;
            }
        }
        for (uint i = 0u; i < NR; i++) red[i * 64u + t] = acc[i];
        barrier();
        for (uint s = 32u; s > 0u; s >>= 1) {
            if (t < s)
                for (uint i = 0u; i < NR; i++) red[i * 64u + t] += red[i * 64u + t + s];
            barrier();
        }
        if (t < NR && a0 + t < pc.n) Y[(a0 + t) * pc.rows + r] = red[t * 64u];
        barrier();
    }
}
