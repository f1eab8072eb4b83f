// The contents of an emulated KV block, written and checked at memory speed. Written for
// Stratolab. Word i of block b of a request with seed s is mix(s + b·K1 + i·K2), little-endian,
// where mix(y) = (y ^ (y >> 31)) · M: consecutive words differ by one addition before mixing, so
// a vector of them follows from the previous one by one addition too.
//
// A migration's destination checks every byte it receives against these contents while storing
// it into its block. A scalar loop did that at about 7 GB/s here (a 64-bit multiply a word); with
// AVX2 four words are made at once (the 64-bit multiply built from three 32×32 ones), checked
// and stored with the vector just loaded, at about memcpy's speed, reading the arriving bytes
// once. AVX-512 was tried and stored slower on this host (its units are double-pumped), so AVX2
// is the fast path.
#include "cchecksum.h"
#include <string.h>

#define K1 0x9E3779B97F4A7C15ull
#define K2 0xBF58476D1CE4E5B9ull
#define M 0x94D049BB133111EBull

static inline uint64_t kv_mix(uint64_t x) { x ^= x >> 31; return x * M; }
static inline uint64_t kv_start(uint64_t seed, uint64_t block, uint64_t word) { return seed + block * K1 + word * K2; }
static inline uint8_t kv_byte(uint64_t seed, uint64_t block, uint64_t position) {
    return (uint8_t)(kv_mix(kv_start(seed, block, position / 8)) >> ((position % 8) * 8));
}

// From byte i to n, one word at a time: the index of the first wrong byte, or -1. Stores what
// matched (when dst is not NULL), never a wrong byte or anything after it.
static long check_scalar(const uint8_t *s, uint8_t *d, size_t i, size_t n, uint64_t seed, uint64_t block, uint64_t offset) {
    while (i < n && ((offset + i) & 7)) {
        if (s[i] != kv_byte(seed, block, offset + i)) return (long)i;
        if (d) d[i] = s[i];
        i++;
    }
    uint64_t x = kv_start(seed, block, (offset + i) / 8);
    while (n - i >= 8) {
        uint64_t v, e = kv_mix(x);
        memcpy(&v, s + i, 8);
        uint8_t eb[8];
        for (int k = 0; k < 8; k++) eb[k] = (uint8_t)(e >> (8 * k));   // little-endian, whatever the host
        if (memcmp(&v, eb, 8) != 0) {
            for (int k = 0; k < 8; k++) {
                if (s[i + k] != eb[k]) return (long)(i + k);
                if (d) d[i + k] = s[i + k];
            }
        }
        if (d) memcpy(d + i, &v, 8);
        x += K2;
        i += 8;
    }
    while (i < n) {
        if (s[i] != kv_byte(seed, block, offset + i)) return (long)i;
        if (d) d[i] = s[i];
        i++;
    }
    return -1;
}

static void fill_scalar(uint8_t *d, size_t words, size_t w, uint64_t seed, uint64_t block) {
    uint64_t x = kv_start(seed, block, w);
    for (; w < words; w++, x += K2) {
        uint64_t e = kv_mix(x);
        for (int k = 0; k < 8; k++) d[8 * w + k] = (uint8_t)(e >> (8 * k));
    }
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

// a · c mod 2^64 for each 64-bit lane: AVX2 multiplies 32 × 32 → 64 bits only.
__attribute__((target("avx2")))
static inline __m256i mul64(__m256i a, uint64_t c) {
    const __m256i lo32 = _mm256_set1_epi64x((long long)(c & 0xFFFFFFFFu)), hi32 = _mm256_set1_epi64x((long long)(c >> 32));
    __m256i low = _mm256_mul_epu32(a, lo32);
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), lo32), _mm256_mul_epu32(a, hi32));
    return _mm256_add_epi64(low, _mm256_slli_epi64(cross, 32));
}

__attribute__((target("avx2")))
static inline __m256i mix4(__m256i x) { return mul64(_mm256_xor_si256(x, _mm256_srli_epi64(x, 31)), M); }

// Eight words a round; a round with any wrong byte is left to the scalar loop, which finds it.
__attribute__((target("avx2")))
static long check_avx2(const uint8_t *s, uint8_t *d, size_t n, uint64_t seed, uint64_t block, uint64_t offset) {
    size_t i = 0;
    while (i < n && ((offset + i) & 7)) {
        if (s[i] != kv_byte(seed, block, offset + i)) return (long)i;
        if (d) d[i] = s[i];
        i++;
    }
    uint64_t x0 = kv_start(seed, block, (offset + i) / 8);
    __m256i x = _mm256_setr_epi64x((long long)x0, (long long)(x0 + K2), (long long)(x0 + 2 * K2), (long long)(x0 + 3 * K2));
    const __m256i step = _mm256_set1_epi64x((long long)(4 * K2));
    while (n - i >= 64) {
        __m256i x1 = _mm256_add_epi64(x, step);
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(s + i)), v1 = _mm256_loadu_si256((const __m256i *)(s + i + 32));
        __m256i diff = _mm256_or_si256(_mm256_xor_si256(v0, mix4(x)), _mm256_xor_si256(v1, mix4(x1)));
        if (!_mm256_testz_si256(diff, diff)) break;
        if (d) { _mm256_storeu_si256((__m256i *)(d + i), v0); _mm256_storeu_si256((__m256i *)(d + i + 32), v1); }
        x = _mm256_add_epi64(x1, step);
        i += 64;
    }
    return check_scalar(s, d, i, n, seed, block, offset);
}

__attribute__((target("avx2")))
static void fill_avx2(uint8_t *d, size_t words, uint64_t seed, uint64_t block) {
    uint64_t x0 = kv_start(seed, block, 0);
    __m256i x = _mm256_setr_epi64x((long long)x0, (long long)(x0 + K2), (long long)(x0 + 2 * K2), (long long)(x0 + 3 * K2));
    const __m256i step = _mm256_set1_epi64x((long long)(4 * K2));
    size_t w = 0;
    for (; words - w >= 4; w += 4) {
        _mm256_storeu_si256((__m256i *)(d + 8 * w), mix4(x));
        x = _mm256_add_epi64(x, step);
    }
    fill_scalar(d, words, w, seed, block);
}

static int avx2_ok = 0;

__attribute__((constructor))
static void strato_kv_init(void) {
    unsigned a, b, c, d;
    // AVX2: CPUID leaf 7 EBX bit 5, and the OS saves the YMM registers (OSXSAVE, XCR0 bits 1–2).
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX)) return;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & 6) != 6) return;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX2)) avx2_ok = 1;
}
#endif

int strato_kv_level(void) {
#if defined(__x86_64__)
    return avx2_ok;
#else
    return 0;
#endif
}

long strato_kv_check_at(int level, const void *bytes, size_t length, void *destination, uint64_t seed, uint64_t block, uint64_t offset) {
#if defined(__x86_64__)
    if (level >= 1 && avx2_ok) return check_avx2(bytes, destination, length, seed, block, offset);
#endif
    (void)level;
    return check_scalar(bytes, destination, 0, length, seed, block, offset);
}

void strato_kv_fill_at(int level, void *destination, size_t words, uint64_t seed, uint64_t block) {
#if defined(__x86_64__)
    if (level >= 1 && avx2_ok) { fill_avx2(destination, words, seed, block); return; }
#endif
    (void)level;
    fill_scalar(destination, words, 0, seed, block);
}
