// CRC-32C for the data plane's per-chunk checksums. Written for Stratolab: a byte-wise table for
// any CPU, and on x86-64 the SSE4.2 crc32 instruction over three interleaved streams (the
// instruction has a latency of 3 cycles and a throughput of 1, so three independent streams keep
// it busy). The streams' CRCs are combined with the GF(2) operator that appends STREAM zero bytes
// to a CRC register (CRC is linear: crc(A|B) = zeros_|B|(crc(A)) ^ crc_from_zero(B)).
// Tables are built once when the library loads, before any thread can call in.
#include "cchecksum.h"
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[256];

static void build_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[i] = c;
    }
}

static uint32_t crc_software(uint32_t crc, const uint8_t *p, size_t n) {
    while (n--) crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

// GF(2) operators for combining: multiply a 32x32 matrix (as 32 column words) by a vector.
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    for (int i = 0; vec; i++, vec >>= 1) if (vec & 1) sum ^= mat[i];
    return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) square[n] = gf2_times(mat, mat[n]);
}

// The operator that appends `len` zero bytes to a (raw, unconditioned) CRC register.
static void zeros_operator(uint32_t *op, size_t len) {
    uint32_t odd[32], even[32];
    // operator for one zero bit
    odd[0] = POLY;
    uint32_t row = 1;
    for (int n = 1; n < 32; n++) { odd[n] = row; row <<= 1; }
    gf2_square(even, odd);   // two zero bits
    gf2_square(odd, even);   // four zero bits
    // identity
    for (int n = 0; n < 32; n++) op[n] = 1u << n;
    // apply len * 8 zero bits by squaring: start from one byte (8 bits)
    int first = 1;
    size_t bytes = len;
    uint32_t cur[32];
    gf2_square(cur, odd);    // eight zero bits = one byte
    while (bytes) {
        if (bytes & 1) {
            uint32_t next[32];
            if (first) { memcpy(op, cur, sizeof(cur)); first = 0; }
            else { for (int n = 0; n < 32; n++) next[n] = gf2_times(cur, op[n]); memcpy(op, next, sizeof(next)); }
        }
        bytes >>= 1;
        if (bytes) { uint32_t sq[32]; gf2_square(sq, cur); memcpy(cur, sq, sizeof(sq)); }
    }
}

#if defined(__x86_64__)
#include <cpuid.h>

static int hw_ok = 0;
static int have_sse42(void) { return hw_ok; }

#define STREAM 8192
static uint32_t shift_op[32];

__attribute__((target("sse4.2")))
static uint32_t crc_hw_1(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) { uint64_t v; memcpy(&v, p, 8); c = __builtin_ia32_crc32di(c, v); p += 8; n -= 8; }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}

__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n) {
    // Three streams of STREAM bytes each: the CRC of A|B|C = shift(shift(crcA) ^ crcB) ^ crcC,
    // where B and C start from a zero register.
    while (n >= 3 * STREAM) {
        uint64_t a = crc, b = 0, c = 0;
        const uint8_t *pa = p, *pb = p + STREAM, *pc = p + 2 * STREAM;
        for (size_t i = 0; i < STREAM; i += 8) {
            uint64_t va, vb, vc;
            memcpy(&va, pa + i, 8); memcpy(&vb, pb + i, 8); memcpy(&vc, pc + i, 8);
            a = __builtin_ia32_crc32di(a, va);
            b = __builtin_ia32_crc32di(b, vb);
            c = __builtin_ia32_crc32di(c, vc);
        }
        uint32_t r = gf2_times(shift_op, (uint32_t)a) ^ (uint32_t)b;
        r = gf2_times(shift_op, r) ^ (uint32_t)c;
        crc = r;
        p += 3 * STREAM; n -= 3 * STREAM;
    }
    return crc_hw_1(crc, p, n);
}
#endif

__attribute__((constructor))
static void strato_crc32c_init(void) {
    build_table();
#if defined(__x86_64__)
    unsigned a, b, c, d;
    hw_ok = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2);
    zeros_operator(shift_op, STREAM);
#endif
}

uint32_t strato_crc32c(uint32_t crc, const void *data, size_t length) {
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (have_sse42()) return ~crc_hw(c, (const uint8_t *)data, length);
#endif
    return ~crc_software(c, (const uint8_t *)data, length);
}

uint32_t strato_crc32c_software(uint32_t crc, const void *data, size_t length) {
    return ~crc_software(~crc, (const uint8_t *)data, length);
}

int strato_crc32c_hardware(void) {
#if defined(__x86_64__)
    return have_sse42();
#else
    return 0;
#endif
}
