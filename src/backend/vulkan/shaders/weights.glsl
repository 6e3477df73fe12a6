// weights.glsl — reading a weight matrix of any supported GGUF type from a buffer of 32-bit words.
//
// Included by the matrix shaders, compiled once per type with -DWTYPE=<ggml type id>. Rows are
// `row_bytes` apart starting at byte `w_off`; quantised blocks are not 4-byte aligned (Q8_0 is 34
// bytes, Q4_0 18), so bytes are picked out of words here and no 8- or 16-bit storage feature is
// needed. Every function yields 16 consecutive elements of a row starting at k0 (a multiple of 16),
// dequantised to f32; for F32 / F16 the elements at or beyond `cols` read as 0.
#define WT_F32 0
#define WT_F16 1
#define WT_Q4_0 2
#define WT_Q8_0 8
#define WT_Q4_K 12
#define WT_Q5_K 13
#define WT_Q6_K 14
#define WT_BF16 30

uint w_byte(uint o) { return (W[o >> 2] >> ((o & 3u) * 8u)) & 0xffu; }
// an fp16 at an even byte offset (it never straddles two words)
float w_half(uint o) { return unpackHalf2x16((W[o >> 2] >> ((o & 2u) * 8u)) & 0xffffu).x; }

// Q4_K / Q5_K: sub-block s's scale and min (6 bits each, packed in the 12 bytes after d and dmin,
// kernels/types.h es_kq_scale_min), times the super-block's d and dmin
void kq_scale_min(uint blk, uint s, out float D, out float M) {
    uint sc, m;
    if (s < 4u) {
        sc = w_byte(blk + 4u + s) & 63u;
        m = w_byte(blk + 8u + s) & 63u;
    } else {
        sc = (w_byte(blk + 8u + s) & 15u) | ((w_byte(blk + s) >> 6) << 4);
        m = (w_byte(blk + 8u + s) >> 4) | ((w_byte(blk + 4u + s) >> 6) << 4);
    }
    D = w_half(blk) * float(sc);
    M = w_half(blk + 2u) * float(m);
}

void w_load16(uint row_base, uint k0, uint cols, out float v[16]) {
#if WTYPE == WT_F32
    for (uint j = 0u; j < 16u; j++) v[j] = k0 + j < cols ? uintBitsToFloat(W[(row_base >> 2) + k0 + j]) : 0.0;
#elif WTYPE == WT_F16
    for (uint j = 0u; j < 16u; j++) v[j] = k0 + j < cols ? w_half(row_base + 2u * (k0 + j)) : 0.0;
#elif WTYPE == WT_BF16
    // the high half of an f32
    for (uint j = 0u; j < 16u; j++) {
        const uint o = row_base + 2u * (k0 + j);
        v[j] = k0 + j < cols ? uintBitsToFloat(((W[o >> 2] >> ((o & 2u) * 8u)) & 0xffffu) << 16) : 0.0;
    }
#elif WTYPE == WT_Q8_0
    // block of 32: fp16 scale d, then 32 int8 codes; value = d * q
    const uint blk = row_base + (k0 >> 5) * 34u;
    const float d = w_half(blk);
    const uint q0 = blk + 2u + (k0 & 16u);
    for (uint j = 0u; j < 16u; j++) v[j] = d * float(int(w_byte(q0 + j) << 24) >> 24);
#elif WTYPE == WT_Q4_0
    // block of 32: fp16 scale d, then 16 bytes; element j < 16 is byte j's low nibble, j >= 16 byte
    // (j - 16)'s high nibble; value = d * (code - 8)
    const uint blk = row_base + (k0 >> 5) * 18u;
    const float d = w_half(blk);
    const uint sh = (k0 & 16u) != 0u ? 4u : 0u;
    for (uint j = 0u; j < 16u; j++) v[j] = d * (float((w_byte(blk + 2u + j) >> sh) & 15u) - 8.0);
#elif WTYPE == WT_Q4_K
    // super-block of 256 (144 bytes): fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins, 128
    // bytes of nibbles; byte 32c + l holds element 64c + l (low nibble, sub-block 2c) and 64c + 32 + l
    // (high, sub-block 2c + 1); value = d * sc * q - dmin * m (kernels/types.h)
    const uint blk = row_base + (k0 >> 8) * 144u;
    const uint e = k0 & 255u, s = e >> 5, c = s >> 1, l0 = e & 31u;
    float D, M;
    kq_scale_min(blk, s, D, M);
    const uint sh = (s & 1u) * 4u;
    for (uint j = 0u; j < 16u; j++) v[j] = D * float((w_byte(blk + 16u + 32u * c + l0 + j) >> sh) & 15u) - M;
#elif WTYPE == WT_Q5_K
    // super-block of 256 (176 bytes): Q4_K's d, dmin and 12 bytes of scales and mins, then qh[32],
    // then the 128 bytes of nibbles; bit s of qh[l] is the fifth bit of element 32s + l
    const uint blk = row_base + (k0 >> 8) * 176u;
    const uint e = k0 & 255u, s = e >> 5, c = s >> 1, l0 = e & 31u;
    float D, M;
    kq_scale_min(blk, s, D, M);
    const uint sh = (s & 1u) * 4u;
    for (uint j = 0u; j < 16u; j++) {
        const uint q = ((w_byte(blk + 48u + 32u * c + l0 + j) >> sh) & 15u) | (((w_byte(blk + 16u + l0 + j) >> s) & 1u) << 4);
        v[j] = D * float(q) - M;
    }
#elif WTYPE == WT_Q6_K
    // super-block of 256 (210 bytes): ql[128], qh[64], int8 scales[16], fp16 d; in each half h with
    // l < 32, element 128h + 32t + l takes nibble t >> 1 of ql[64h + 32(t & 1) + l] and bits 2t, 2t+1
    // of qh[32h + l]; value = d * scales[8h + 2t + l / 16] * (q - 32) (kernels/types.h)
    const uint blk = row_base + (k0 >> 8) * 210u;
    const uint e = k0 & 255u, h = e >> 7, t = (e >> 5) & 3u, l0 = e & 31u;
    const float D = w_half(blk + 208u) * float(int(w_byte(blk + 192u + 8u * h + 2u * t + l0 / 16u) << 24) >> 24);
    const uint qlo = blk + 64u * h + 32u * (t & 1u) + l0, qho = blk + 128u + 32u * h + l0, sh = 4u * (t >> 1);
    for (uint j = 0u; j < 16u; j++) {
        const uint q = ((w_byte(qlo + j) >> sh) & 15u) | (((w_byte(qho + j) >> (2u * t)) & 3u) << 4);
        v[j] = D * float(int(q) - 32);
    }
#else
#error "unsupported WTYPE"
#endif
}
