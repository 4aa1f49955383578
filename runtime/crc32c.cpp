// CRC-32C: compile-time slicing-by-8 tables for the portable path, the SSE4.2 crc32 instruction
// (8 bytes per step) on x86-64 CPUs that have it, chosen once per call by a cheap CPU check.
#include "runtime/crc32c.h"

#include <array>
#include <cstring>

namespace tandem::runtime {
namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // CRC-32C, bit-reflected

using Tables = std::array<std::array<uint32_t, 256>, 8>;

// tables[0] is the classic byte-at-a-time table; tables[k][b] is the CRC of byte b followed by
// k zero bytes, which lets the inner loop fold 8 input bytes with 8 independent lookups.
constexpr Tables make_tables() {
  Tables tables{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) ? (crc >> 1) ^ kPolynomial : crc >> 1;
    tables[0][byte] = crc;
  }
  for (uint32_t byte = 0; byte < 256; ++byte) {
    for (size_t k = 1; k < 8; ++k) {
      const uint32_t previous = tables[k - 1][byte];
      tables[k][byte] = (previous >> 8) ^ tables[0][previous & 0xffu];
    }
  }
  return tables;
}

constexpr Tables kTables = make_tables();

uint32_t load_le32(const uint8_t* bytes) {
  return static_cast<uint32_t>(bytes[0]) | (static_cast<uint32_t>(bytes[1]) << 8) |
         (static_cast<uint32_t>(bytes[2]) << 16) | (static_cast<uint32_t>(bytes[3]) << 24);
}

// Works on the inverted register (the "raw" CRC state).
uint32_t portable_raw(uint32_t state, const uint8_t* bytes, size_t size) {
  while (size >= 8) {
    const uint32_t low = load_le32(bytes) ^ state;
    const uint32_t high = load_le32(bytes + 4);
    state = kTables[7][low & 0xff] ^ kTables[6][(low >> 8) & 0xff] ^ kTables[5][(low >> 16) & 0xff] ^
            kTables[4][low >> 24] ^ kTables[3][high & 0xff] ^ kTables[2][(high >> 8) & 0xff] ^
            kTables[1][(high >> 16) & 0xff] ^ kTables[0][high >> 24];
    bytes += 8;
    size -= 8;
  }
  while (size-- > 0) state = (state >> 8) ^ kTables[0][(state ^ *bytes++) & 0xffu];
  return state;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TANDEM_CRC32C_HAVE_SSE42 1
__attribute__((target("sse4.2"))) uint32_t hardware_raw(uint32_t state, const uint8_t* bytes, size_t size) {
  uint64_t wide = state;
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, bytes, 8);
    wide = __builtin_ia32_crc32di(wide, word);
    bytes += 8;
    size -= 8;
  }
  uint32_t narrow = static_cast<uint32_t>(wide);
  while (size-- > 0) narrow = __builtin_ia32_crc32qi(narrow, *bytes++);
  return narrow;
}
#else
#define TANDEM_CRC32C_HAVE_SSE42 0
#endif

}  // namespace

uint32_t crc32c_extend_portable(uint32_t crc, const void* data, size_t size) {
  return ~portable_raw(~crc, static_cast<const uint8_t*>(data), size);
}

bool crc32c_is_hardware_accelerated() {
#if TANDEM_CRC32C_HAVE_SSE42
  return __builtin_cpu_supports("sse4.2");
#else
  return false;
#endif
}

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size) {
#if TANDEM_CRC32C_HAVE_SSE42
  if (crc32c_is_hardware_accelerated()) return ~hardware_raw(~crc, static_cast<const uint8_t*>(data), size);
#endif
  return crc32c_extend_portable(crc, data, size);
}

}  // namespace tandem::runtime
