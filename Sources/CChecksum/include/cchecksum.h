#ifndef STRATOLAB_CCHECKSUM_H
#define STRATOLAB_CCHECKSUM_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of `length` bytes, continuing from `crc`
/// (pass 0 to start). Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise;
/// both give the same result.
uint32_t strato_crc32c(uint32_t crc, const void *data, size_t length);

/// The table path alone (for tests that compare both paths).
uint32_t strato_crc32c_software(uint32_t crc, const void *data, size_t length);

/// 1 when the hardware path is in use.
int strato_crc32c_hardware(void);


/// Emulated KV blocks' contents (kvcontents.c): word i of block `block` of the request whose seed
/// is `seed` is a fixed mix of seed + block·K1 + i·K2, stored little-endian.
///
/// Checks `length` bytes that should be bytes `offset`… of that block: the index of the first
/// wrong byte, or -1 when all are right. With a `destination` (NULL: check only), the bytes that
/// matched are stored there as they are checked; a wrong byte and what follows it are not.
/// `level`: 1 for the AVX2 path (taken only where the CPU has AVX2), 0 for the scalar loop.
long strato_kv_check_at(int level, const void *bytes, size_t length, void *destination, uint64_t seed, uint64_t block, uint64_t offset);

/// Writes the block's first `words` words to `destination`, at `level` as above.
void strato_kv_fill_at(int level, void *destination, size_t words, uint64_t seed, uint64_t block);

/// The best level this CPU has: 1 with AVX2, 0 otherwise.
int strato_kv_level(void);

#endif
