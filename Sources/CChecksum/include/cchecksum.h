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

#endif
