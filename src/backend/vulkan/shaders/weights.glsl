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

uint w_byte(uint o) { return (W[o >> 2] >> ((o & 3u) * 8u)) & 0xffu; }
// an fp16 at an even byte offset (it never straddles two words)
float w_half(uint o) { return unpackHalf2x16((W[o >> 2] >> ((o & 2u) * 8u)) & 0xffffu).x; }

void w_load16(uint row_base, uint k0, uint cols, out float v[16]) {
#if WTYPE == WT_F32
    for (uint j = 0u; j < 16u; j++) v[j] = k0 + j < cols ? uintBitsToFloat(W[(row_base >> 2) + k0 + j]) : 0.0;
#elif WTYPE == WT_F16
    for (uint j = 0u; j < 16u; j++) v[j] = k0 + j < cols ? w_half(row_base + 2u * (k0 + j)) : 0.0;
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
#else
#error "unsupported WTYPE"
#endif
}
