#version 450
// matvec.comp — Y[n][rows] = X[n][cols] · Wᵀ for few activation rows (decode): each workgroup of 64
// threads takes 8 weight rows, 8 threads per row striding over it 16 elements at a time (the 8 read
// neighbouring pieces); each piece of W is dequantised once and used for up to 4 activation rows, and
// a row's 8 partial sums meet in shared memory (no subgroup operations, so nothing depends on the
// device's subgroup size). Workgroups beyond 65535 continue in the grid's y dimension.
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer BW { uint W[]; };
layout(std430, binding = 1) readonly buffer BX { float X[]; };
layout(std430, binding = 2) writeonly buffer BY { float Y[]; };
// Y rows are y_stride apart, this matrix's outputs from column y_off (a matrix split across buffers
// writes each part into its columns)
layout(push_constant) uniform PC { uint rows, cols, n, row_bytes, w_off, y_stride, y_off; } pc;
#include "weights.glsl"

#define NR 4           // activation rows per pass over W
#define ROWS_PER_WG 8  // weight rows per workgroup
#define LANES 8        // threads per weight row
shared float red[64 * NR];

void main() {
    const uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint t = gl_LocalInvocationID.x, lane = t % LANES;
    if (wg * ROWS_PER_WG >= pc.rows) return; // uniform per workgroup: the barriers below are reached by all
    const uint r = wg * ROWS_PER_WG + t / LANES;
    const bool live = r < pc.rows;
    const uint base = pc.w_off + (live ? r : 0u) * pc.row_bytes;
    const uint pieces = (pc.cols + 15u) / 16u;
    for (uint a0 = 0u; a0 < pc.n; a0 += NR) {
        float acc[NR];
        for (uint i = 0u; i < NR; i++) acc[i] = 0.0;
        for (uint p = lane; live && p < pieces; p += LANES) {
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
        for (uint s = LANES / 2u; s > 0u; s >>= 1) {
            if (lane < s)
                for (uint i = 0u; i < NR; i++) red[i * 64u + t] += red[i * 64u + t + s];
            barrier();
        }
        if (live && lane < NR && a0 + lane < pc.n) Y[(a0 + lane) * pc.y_stride + pc.y_off + r] = red[lane * 64u + t - lane];
        barrier();
    }
}
