/* fuzz_proto.c — libFuzzer target for the wire protocol decoders (src/wire/proto.c).
 *
 * The input is read two ways:
 *   1. byte 0 is a frame type, the rest its payload;
 *   2. bytes 0..11 are a frame header; when it parses and its payload is all there, those bytes are
 *      the payload of the type the header names (copied to an exact-size buffer so any over-read is
 *      caught even though the input continues).
 * Each payload must decode or be refused with ES_ERR_FORMAT / ES_ERR_RANGE; a payload that decodes must
 * re-encode to exactly the same bytes (the encoding is canonical). Anything else aborts.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined with the edgespec_core sources (scripts/fuzz.sh,
 * which also writes a seed corpus of one valid frame of every type). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire/proto.h"

static void payload(int type, const uint8_t *p, size_t n) {
    es_err err;
    const es_status st = es_proto_check_payload(type, p, n, &err);
    if (st != ES_OK && st != ES_ERR_FORMAT && st != ES_ERR_RANGE) abort();
    uint8_t *buf = malloc(n + ES_PROTO_HEADER_SIZE);
    if (!buf) return;
    es_wbuf w;
    es_wbuf_init(&w, buf, n + ES_PROTO_HEADER_SIZE);
    const es_status st2 = es_proto_reencode(&w, type, 77, p, n, &err);
    if ((st == ES_OK) != (st2 == ES_OK)) abort(); /* what decodes must encode */
    if (st == ES_OK) {
        es_frame_header h;
        if (w.len != n + ES_PROTO_HEADER_SIZE) abort();
        if (es_proto_get_header(buf, ES_PROTO_MAX_PAYLOAD_DEFAULT, &h, &err) != ES_OK || h.type != type || h.len != n) abort();
        if (n && memcmp(buf + ES_PROTO_HEADER_SIZE, p, n) != 0) abort();
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    payload(data[0], data + 1, size - 1);
    if (size >= ES_PROTO_HEADER_SIZE) {
        es_frame_header h;
        es_err err;
        const es_status st = es_proto_get_header(data, ES_PROTO_MAX_PAYLOAD_DEFAULT, &h, &err);
        if (st != ES_OK && st != ES_ERR_FORMAT && st != ES_ERR_RANGE) abort();
        if (st == ES_OK && h.len <= size - ES_PROTO_HEADER_SIZE) {
            uint8_t *p = malloc(h.len ? h.len : 1);
            if (!p) return 0;
            if (h.len) memcpy(p, data + ES_PROTO_HEADER_SIZE, h.len);
            payload(h.type, p, h.len);
            free(p);
        }
    }
    return 0;
}
