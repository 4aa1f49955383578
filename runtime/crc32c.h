// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of checkpoint files and
// of TensorBoard's TFRecord framing. Uses the SSE4.2 crc32 instruction when the CPU has it and a
// table-driven (slicing-by-8) software path otherwise; both give identical results.
// Invariant: crc32c_extend(crc32c(a), b) == crc32c(a + b), so files can be checksummed while
// they are written. Pure functions: thread-safe, no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tandem::runtime {

// CRC-32C of the bytes that `crc` covered followed by data[0, size). Start with crc = 0.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size);

inline uint32_t crc32c(const void* data, size_t size) { return crc32c_extend(0, data, size); }
inline uint32_t crc32c(std::string_view bytes) { return crc32c_extend(0, bytes.data(), bytes.size()); }

// The software path alone (tests compare it with the dispatched one).
uint32_t crc32c_extend_portable(uint32_t crc, const void* data, size_t size);

// True when crc32c_extend uses the SSE4.2 instruction on this CPU.
bool crc32c_is_hardware_accelerated();

// TFRecord's masked CRC: rotate right by 15 and add a constant, so that a CRC stored next to
// the data it covers does not checksum to a fixed pattern.
constexpr uint32_t kCrc32cMaskDelta = 0xa282ead8u;
constexpr uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kCrc32cMaskDelta; }
constexpr uint32_t unmask_crc32c(uint32_t masked) {
  const uint32_t rotated = masked - kCrc32cMaskDelta;
  return (rotated >> 17) | (rotated << 15);
}

}  // namespace tandem::runtime
