#include "base/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace paygate {
namespace {

TEST(Histogram, EveryValueFallsInItsBucket) {
  std::mt19937_64 random(5);
  for (int n = 0; n < 100000; ++n) {
    const u64 value = random() >> (random() % 64);
    const int i = Histogram::index(value);
    ASSERT_LT(i, Histogram::kBuckets);
    ASSERT_LE(value, Histogram::upper_bound(i));
    if (i > 0) {
      ASSERT_GT(value, Histogram::upper_bound(i - 1));
    }
  }
  EXPECT_LT(Histogram::index(~u64{0}), Histogram::kBuckets);
}

TEST(Histogram, PercentilesAreWithinBucketPrecision) {
  Histogram histogram;
  std::vector<u64> values;
  std::mt19937_64 random(8);
  for (int n = 0; n < 20000; ++n) {
    values.push_back(1000 + random() % 1'000'000);
    histogram.record(values.back());
  }
  std::sort(values.begin(), values.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const u64 exact = values[static_cast<std::size_t>(q * (values.size() - 1))];
    const u64 reported = histogram.percentile(q);
    EXPECT_GE(reported, exact) << q;
    EXPECT_LE(reported, exact + exact / 16 + 1) << q;
  }
  EXPECT_EQ(histogram.count(), values.size());
  EXPECT_EQ(histogram.count_at_most(~u64{0}), values.size());
  EXPECT_EQ(Histogram{}.percentile(0.5), 0u);
}

}  // namespace
}  // namespace paygate
