#version 450
// matmul.comp — Y[n][rows] = X[n][cols] · Wᵀ for many activation rows (prefill, tree verification):
// each workgroup computes a tile of 32 weight rows × 32 activation rows. Per step of 16 columns the
// tile's W piece is dequantised once into shared memory (each weight element read once per 32
// activation rows) with the matching X piece beside it; each of the 64 threads then accumulates a
// 4 × 4 block of outputs. Tiles beyond 65535 in x continue in the grid's z dimension.
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer BW { uint W[]; };
layout(std430, binding = 1) readonly buffer BX { float X[]; };
layout(std430, binding = 2) writeonly buffer BY { float Y[]; };
// Y rows are y_stride apart, this matrix's outputs from column y_off (a matrix split across buffers
// writes each part into its columns)
layout(push_constant) uniform PC { uint rows, cols, n, row_bytes, w_off, y_stride, y_off; } pc;
#include "weights.glsl"

#define TM 32
#define TN 32
#define TK 16
shared float ws[TM][TK + 1];
shared float xs[TN][TK + 1];

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint r0 = (gl_WorkGroupID.z * gl_NumWorkGroups.x + gl_WorkGroupID.x) * TM;
    const uint a0 = gl_WorkGroupID.y * TN;
    if (r0 >= pc.rows) return; // uniform per workgroup
    const uint tr = t / 8u, tc = t % 8u; // this thread's outputs: W rows r0 + tr*4 .., X rows a0 + tc*4 ..
    float acc[4][4];
    for (uint i = 0u; i < 4u; i++)
        for (uint j = 0u; j < 4u; j++) acc[i][j] = 0.0;
    for (uint k0 = 0u; k0 < pc.cols; k0 += TK) {
        // threads 0..31 dequantise one W row's 16 elements each; 32..63 copy one X row's
        if (t < 32u) {
            float w[16];
            const uint r = r0 + t;
            if (r < pc.rows) w_load16(pc.w_off + r * pc.row_bytes, k0, pc.cols, w);
            else for (uint j = 0u; j < 16u; j++) w[j] = 0.0;
            for (uint j = 0u; j < 16u; j++) ws[t][j] = w[j];
        } else {
            const uint a = a0 + t - 32u;
            for (uint j = 0u; j < 16u; j++)
                xs[t - 32u][j] = a < pc.n && k0 + j < pc.cols ? X[a * pc.cols + k0 + j] : 0.0;
        }
        barrier();
        for (uint k = 0u; k < TK; k++) {
            float wv[4], xv[4];
            for (uint i = 0u; i < 4u; i++) { wv[i] = ws[tr * 4u + i][k]; xv[i] = xs[tc * 4u + i][k]; }
            for (uint i = 0u; i < 4u; i++)
                for (uint j = 0u; j < 4u; j++) acc[i][j] += wv[i] * xv[j];
        }
        barrier();
    }
    for (uint i = 0u; i < 4u; i++)
        for (uint j = 0u; j < 4u; j++) {
            const uint r = r0 + tr * 4u + i, a = a0 + tc * 4u + j;
            if (r < pc.rows && a < pc.n) Y[a * pc.y_stride + pc.y_off + r] = acc[i][j];
        }
}
