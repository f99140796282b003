#include "base/crc32c.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace paygate {
namespace {

// Check values from RFC 3720 (iSCSI), appendix B.4, and the common "123456789" one.
TEST(Crc32c, KnownValues) {
  const std::string digits = "123456789";
  EXPECT_EQ(crc32c(digits.data(), digits.size()), 0xE3069283u);
  const std::vector<unsigned char> zeros(32, 0x00), ones(32, 0xFF);
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  std::vector<unsigned char> ascending(32), descending(32);
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<unsigned char>(i);
    descending[i] = static_cast<unsigned char>(31 - i);
  }
  EXPECT_EQ(crc32c(ascending.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(crc32c(descending.data(), 32), 0x113FDB5Cu);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
}

TEST(Crc32c, HardwareAndPortableAgreeAndExtendSplits) {
  std::mt19937_64 random(3);
  std::vector<unsigned char> data(4099);
  for (auto& b : data)
    b = static_cast<unsigned char>(random());
  for (std::size_t size : {0u, 1u, 7u, 8u, 9u, 63u, 64u, 1000u, 4099u}) {
    const u32 whole = crc32c(data.data(), size);
    EXPECT_EQ(detail::crc32c_extend_portable(0, data.data(), size), whole) << size;
    for (std::size_t cut = 0; cut <= size; cut += 1 + size / 5) {
      EXPECT_EQ(crc32c_extend(crc32c(data.data(), cut), data.data() + cut, size - cut), whole);
    }
  }
  if (!detail::crc32c_hardware_available()) GTEST_SKIP() << "no SSE4.2: only the table ran";
}

}  // namespace
}  // namespace paygate
