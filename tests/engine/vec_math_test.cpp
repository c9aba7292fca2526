// The vectorized row kernels (engine/cpu/vec_math.h) against the C library: e^x within 2 ulp over
// the whole float range where it is a normal float, the edges (0 below, inf above, NaN), and the
// softmax building blocks on rows of every length around the vector widths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/cpu/ops.h"
#include "engine/cpu/vec_math.h"
#include "engine/half.h"

namespace kiln::engine::cpu {
namespace {

int64_t ulps(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if ((ia < 0) != (ib < 0)) return std::numeric_limits<int32_t>::max();
  return std::abs(int64_t(ia) - int64_t(ib));
}

TEST(VecMath, ExpIsWithinTwoUlpWhereTheResultIsNormal) {
  std::vector<float> x;
  for (float v = -87.3f; v < 88.7f; v += 0.0137f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1.0f, -1.0f, 88.72f, -87.33f, 0.34657359f, -0.34657359f})
    x.push_back(v);
  std::vector<float> y(x.size());
  vec::exp(x.data(), y.data(), int64_t(x.size()));
  int64_t worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float want = std::exp(x[i]);
    ASSERT_TRUE(std::isfinite(y[i])) << "exp(" << x[i] << ")";
    worst = std::max(worst, ulps(y[i], want));
    ASSERT_LE(ulps(y[i], want), 2) << "exp(" << x[i] << ") = " << y[i] << ", want " << want;
  }
  RecordProperty("worst_ulps", int(worst));
}

TEST(VecMath, ExpEdges) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x{-inf, -1000.0f, -88.0f, 89.0f, 1000.0f, inf, nan};
  std::vector<float> y(x.size());
  vec::exp(x.data(), y.data(), int64_t(x.size()));
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 0.0f);  // e^-88 is a denormal float: flushed
  EXPECT_EQ(y[3], inf);
  EXPECT_EQ(y[4], inf);
  EXPECT_EQ(y[5], inf);
  EXPECT_TRUE(std::isnan(y[6]));
}

// Sigmoid and SiLU through vec::exp: within 4 ulp of the same formulas through std::exp wherever
// those are normal floats, and the edges (saturation, overflow of e^-x, NaN) as they give them.
TEST(VecMath, SigmoidAndSiluMatchTheScalarFormulas) {
  std::vector<float> x;
  for (float v = -87.0f; v < 87.0f; v += 0.0173f) x.push_back(v);
  const float inf = std::numeric_limits<float>::infinity();
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-3f, -1e-3f, 100.0f, -100.0f, inf, -inf}) x.push_back(v);
  std::vector<float> sig(x.size()), silu(x.size());
  vec::sigmoid(x.data(), sig.data(), int64_t(x.size()));
  vec::silu(x.data(), silu.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const float want_sig = 1.0f / (1.0f + std::exp(-x[i])), want_silu = x[i] / (1.0f + std::exp(-x[i]));
    if (std::isnormal(want_sig) || want_sig == 0) {
      EXPECT_LE(ulps(sig[i], want_sig), 4) << "sigmoid(" << x[i] << ")";
    }
    if (std::isnormal(want_silu) || want_silu == 0) {
      EXPECT_LE(ulps(silu[i], want_silu), 4) << "silu(" << x[i] << ")";
    }
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  float edge[2] = {nan, -inf}, out[2];
  vec::sigmoid(edge, out, 2);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_EQ(out[1], 0.0f);
  vec::silu(edge, out, 2);
  EXPECT_TRUE(std::isnan(out[0]));
}

// erf within 3 ulp of the exact value (double erf) over the whole float range, on both sides of
// the switch between its two forms, with the edges; GELU through it within the rounding of its own
// float formula (1 + erf cancels for negative x, as PyTorch's float computation does).
TEST(VecMath, ErfAndGeluMatchTheExactValues) {
  std::vector<float> x;
  for (float v = -6.0f; v < 6.0f; v += 0.000731f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-6f, 0.921875f, -0.921875f, 0.9218751f, 3.999f, 4.0f, 50.0f})
    x.push_back(v);
  std::vector<float> got(x.size()), gelu(x.size());
  vec::erf(x.data(), got.data(), int64_t(x.size()));
  vec::gelu_erf(x.data(), gelu.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const float want = float(std::erf(double(x[i])));
    if (want != 0) {
      EXPECT_LE(ulps(got[i], want), 3) << "erf(" << x[i] << ") = " << got[i] << ", want " << want;
    } else {
      EXPECT_EQ(got[i], 0.0f) << x[i];
    }
    const double exact = 0.5 * double(x[i]) * (1.0 + std::erf(double(x[i]) / std::sqrt(2.0)));
    EXPECT_NEAR(gelu[i], exact, 4e-7 * std::max(1.0, std::abs(double(x[i])))) << "gelu(" << x[i] << ")";
  }
  const float inf = std::numeric_limits<float>::infinity();
  float edge[3] = {std::numeric_limits<float>::quiet_NaN(), inf, -inf}, out[3];
  vec::erf(edge, out, 3);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_EQ(out[2], -1.0f);
}

// tanh within 4 ulp of the exact value over the range, on both sides of its switch, with the
// edges; tanh-GELU within the rounding of its float formula.
TEST(VecMath, TanhAndTanhGeluMatchTheExactValues) {
  std::vector<float> x;
  for (float v = -12.0f; v < 12.0f; v += 0.000917f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-6f, 0.625f, -0.625f, 0.6250001f, 44.0f, 100.0f}) x.push_back(v);
  std::vector<float> got(x.size()), gelu(x.size());
  vec::tanh(x.data(), got.data(), int64_t(x.size()));
  vec::gelu_tanh(x.data(), gelu.data(), int64_t(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const float want = float(std::tanh(v));
    if (want != 0) {
      EXPECT_LE(ulps(got[i], want), 4) << "tanh(" << x[i] << ") = " << got[i] << ", want " << want;
    } else {
      EXPECT_EQ(got[i], 0.0f) << x[i];
    }
    const double exact = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    EXPECT_NEAR(gelu[i], exact, 4e-7 * std::max(1.0, std::abs(v))) << "gelu_tanh(" << x[i] << ")";
  }
  const float inf = std::numeric_limits<float>::infinity();
  float edge[3] = {std::numeric_limits<float>::quiet_NaN(), inf, -inf}, out[3];
  vec::tanh(edge, out, 3);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_EQ(out[2], -1.0f);
}

TEST(VecMath, SoftmaxPiecesOnEveryRowLength) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 4.0f);
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t n = 0; n <= 70; ++n) {
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (float& v : x) v = dist(rng);
    if (n > 3) x[2] = ninf;  // a masked entry
    float want_max = ninf;
    for (float v : x) want_max = std::max(want_max, v);
    ASSERT_EQ(vec::max(x.data(), n), want_max) << n;
    const float shift = n ? want_max : 0.0f;
    const float sum = vec::exp_shifted_sum(x.data(), y.data(), n, shift);
    double want_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double e = std::exp(double(x[size_t(i)] - shift));  // the argument rounded to float, as computed
      want_sum += e;
      ASSERT_NEAR(y[size_t(i)], e, 3e-7 * e + 1e-38) << n << " " << i;
    }
    ASSERT_NEAR(sum, want_sum, 1e-6 * want_sum) << n;
    vec::scale(y.data(), n, 0.5f);
    vec::subtract(x.data(), y.data(), n, 1.0f);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[size_t(i)], x[size_t(i)] - 1.0f);
  }
}

// Row sums over every length around the vector widths, against sums in double: equal up to the
// order of the additions; squares of floats near the ends of the range neither overflow nor vanish
// (the elements are widened first); inf and NaN carried as a plain sum carries them.
TEST(VecMath, RowSumsAreDoubleSums) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> d(-2.f, 3.f);
  for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 255, 256, 257, 1000, 4096, 100003}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = d(rng);
    double want = 0, want_sq = 0, want_dev = 0, magnitude = 0;
    for (float v : x) want += v, want_sq += double(v) * v, want_dev += (v - 0.5) * (v - 0.5), magnitude += std::abs(v);
    const double rel = 1e-11;  // n ulps of double for the longest row: another order of additions
    EXPECT_NEAR(vec::sum(x.data(), n), want, rel * (magnitude + 1)) << n;
    EXPECT_NEAR(vec::sum_squares(x.data(), n), want_sq, rel * (want_sq + 1)) << n;
    EXPECT_NEAR(vec::sum_squared_deviations(x.data(), n, 0.5), want_dev, rel * (want_dev + 1)) << n;
  }
  std::vector<float> big(128, 3e38f), tiny(100, 1e-23f);
  EXPECT_DOUBLE_EQ(vec::sum(big.data(), 128), 128 * double(3e38f));
  EXPECT_DOUBLE_EQ(vec::sum_squares(big.data(), 128), 128 * double(3e38f) * double(3e38f));
  EXPECT_DOUBLE_EQ(vec::sum_squares(tiny.data(), 100), 100 * double(1e-23f) * double(1e-23f));
  std::vector<float> x(300, 1.f);
  x[200] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(vec::sum(x.data(), 300), std::numeric_limits<double>::infinity());
  x[10] = std::nanf("");
  EXPECT_TRUE(std::isnan(vec::sum(x.data(), 300)));
}

TEST(VecMath, MaxIgnoresNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x(40, 1.0f);
  x[17] = nan;
  x[30] = 5.0f;
  EXPECT_EQ(vec::max(x.data(), int64_t(x.size())), 5.0f);
}

}  // namespace
// The four IEEE operations, vectorized, give bit for bit what a scalar loop gives, for every
// operand shape (both arrays, either a broadcast scalar, both scalars), across lengths around the
// vector widths and with infinities, NaNs, signed zeros and denormals among the values.
TEST(VecMath, ArithMatchesScalarBitForBit) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-100.f, 100.f);
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), 1e-40f, -3e-39f, 1.0f};
  for (int64_t n : {0, 1, 7, 15, 16, 17, 33, 64, 257, 1000}) {
    std::vector<float> a(size_t(n) + 1), b(size_t(n) + 1);
    for (int64_t i = 0; i <= n; ++i) {
      a[size_t(i)] = i % 5 == 0 ? specials[size_t(i / 5) % 8] : u(rng);
      b[size_t(i)] = i % 7 == 3 ? specials[size_t(i / 7) % 8] : u(rng);
    }
    for (vec::Arith op : {vec::Arith::kAdd, vec::Arith::kSub, vec::Arith::kMul, vec::Arith::kDiv})
      for (bool as : {false, true})
        for (bool bs : {false, true}) {
          std::vector<float> z(size_t(n) + 1, 12345.f);
          vec::arith(op, a.data(), as, b.data(), bs, z.data(), n);
          for (int64_t i = 0; i < n; ++i) {
            const float x = a[size_t(as ? 0 : i)], y = b[size_t(bs ? 0 : i)];
            const float want = op == vec::Arith::kAdd ? x + y : op == vec::Arith::kSub ? x - y
                             : op == vec::Arith::kMul ? x * y : x / y;
            const float got = z[size_t(i)];
            uint32_t wb, gb;
            std::memcpy(&wb, &want, 4);
            std::memcpy(&gb, &got, 4);
            if (std::isnan(want)) EXPECT_TRUE(std::isnan(got)) << "n " << n << " op " << int(op) << " i " << i;
            else EXPECT_EQ(wb, gb) << "n " << n << " op " << int(op) << " scalars " << as << bs << " i " << i;
          }
          EXPECT_EQ(z[size_t(n)], 12345.f) << "wrote past n";
        }
  }
}

// bf16 conversions, vectorized, give engine/half.h's bits: every bf16 widened, and floats from
// every exponent with rounding ties (even and odd), NaNs of both signs and infinities narrowed.
TEST(VecMath, Bf16ConversionsMatchTheScalarOnes) {
  std::vector<uint16_t> all(65536);
  for (uint32_t b = 0; b < 65536; ++b) all[b] = uint16_t(b);
  std::vector<float> wide(all.size());
  vec::bf16_to_float(all.data(), wide.data(), int64_t(all.size()));
  for (uint32_t b = 0; b < 65536; ++b) {
    const float want = bf16_bits_to_float(uint16_t(b));
    ASSERT_EQ(std::memcmp(&want, &wide[b], 4), 0) << "bf16 bits " << b;
  }
  std::mt19937 rng(11);
  std::vector<float> x;
  for (uint32_t hi = 0; hi < 65536; hi += 7)
    for (uint32_t lo : {0x0000u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu, uint32_t(rng() & 0xffff)}) {
      const uint32_t bits = (hi << 16) | lo;
      float f;
      std::memcpy(&f, &bits, 4);
      x.push_back(f);
    }
  std::vector<uint16_t> narrow(x.size());
  vec::float_to_bf16(x.data(), narrow.data(), int64_t(x.size()));
  std::vector<float> rounded = x;
  vec::round_to_bf16(rounded.data(), int64_t(rounded.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(narrow[i], float_to_bf16_bits(x[i])) << "float #" << i;
    const float want = bf16_bits_to_float(float_to_bf16_bits(x[i]));
    ASSERT_EQ(std::memcmp(&want, &rounded[i], 4), 0) << "float #" << i;
  }
}

// bf16 arithmetic in one pass gives, bit for bit, what the scalar path gives (widen both operands,
// the float operation, round once), for every operand form (bf16 bits, pre-widened floats, either
// a broadcast) across lengths around the vector widths, with NaNs, infinities and rounding ties.
TEST(VecMath, Bf16ArithMatchesWidenOperateRound) {
  std::mt19937 rng(13);
  auto bits_of = [&](int64_t i) -> uint16_t {
    const uint16_t specials[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x0001, 0x3f80, 0x4049};
    return i % 6 == 0 ? specials[size_t(i / 6) % 8] : uint16_t(rng() & 0xffff);
  };
  for (int64_t n : {0, 1, 7, 16, 17, 31, 33, 96, 1000}) {
    std::vector<uint16_t> a(size_t(n) + 1), b(size_t(n) + 1);
    for (int64_t i = 0; i <= n; ++i) a[size_t(i)] = bits_of(i), b[size_t(i)] = bits_of(i + 3);
    std::vector<float> wa(a.size()), wb(b.size());
    for (size_t i = 0; i < a.size(); ++i) wa[i] = bf16_bits_to_float(a[i]), wb[i] = bf16_bits_to_float(b[i]);
    for (vec::Arith op : {vec::Arith::kAdd, vec::Arith::kSub, vec::Arith::kMul, vec::Arith::kDiv})
      for (int form = 0; form < 16; ++form) {  // per operand: bits or widened, array or broadcast
        const bool a_wide = form & 1, a_scalar = form & 2, b_wide = form & 4, b_scalar = form & 8;
        std::vector<uint16_t> z(size_t(n) + 1, 0x1234);
        vec::arith_bf16(op, {a.data(), a_wide ? wa.data() : nullptr, a_scalar},
                        {b.data(), b_wide ? wb.data() : nullptr, b_scalar}, z.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          const float x = wa[size_t(a_scalar ? 0 : i)], y = wb[size_t(b_scalar ? 0 : i)];
          const float f = op == vec::Arith::kAdd ? x + y : op == vec::Arith::kSub ? x - y
                        : op == vec::Arith::kMul ? x * y : x / y;
          ASSERT_EQ(z[size_t(i)], float_to_bf16_bits(f)) << "n " << n << " op " << int(op) << " form " << form << " i " << i;
        }
        EXPECT_EQ(z[size_t(n)], 0x1234) << "wrote past n";
      }
  }
}

// The largest of a window's channel vectors, vectorized, equals a scalar loop's, with NaN winning
// wherever it sits among the rows, -inf and +inf among the values, and windows of 0 to 9 pixels
// over channel counts around the vector widths.
TEST(VecMath, WindowMaxMatchesScalarWithNaN) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-50.f, 50.f);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t n : {1, 7, 16, 17, 64, 100})
    for (int64_t count : {0, 1, 4, 9}) {
      std::vector<std::vector<float>> rows(size_t(count), std::vector<float>(static_cast<size_t>(n)));
      for (auto& r : rows)
        for (int64_t i = 0; i < n; ++i) r[size_t(i)] = u(rng);
      if (count > 1) {
        rows[size_t(count - 1)][0] = nan;  // last pixel, channel 0
        rows[0][size_t(n - 1)] = nan;      // first pixel, last channel
        if (n > 2) rows[1][1] = -inf, rows[size_t(count - 1)][2] = inf;
      }
      std::vector<const float*> ptrs;
      for (auto& r : rows) ptrs.push_back(r.data());
      std::vector<float> y(size_t(n) + 1, 12345.f);
      vec::window_max(ptrs.data(), count, n, y.data());
      for (int64_t i = 0; i < n; ++i) {
        float want = -inf;
        bool any_nan = false;
        for (auto& r : rows) any_nan = any_nan || std::isnan(r[size_t(i)]), want = std::max(want, r[size_t(i)]);
        if (any_nan) EXPECT_TRUE(std::isnan(y[size_t(i)])) << "n " << n << " count " << count << " channel " << i;
        else EXPECT_EQ(y[size_t(i)], want) << "n " << n << " count " << count << " channel " << i;
      }
      EXPECT_EQ(y[size_t(n)], 12345.f) << "wrote past n";
    }
}

// The piecewise-linear activations, vectorized, give the scalar activation<float>'s bits for
// every value class: NaN, infinities, signed zeros, denormals, the kinks (0, -3, 3, the clip
// bounds) and random values, in place and out of place.
TEST(VecMath, PiecewiseActivationsMatchScalarBitForBit) {
  std::mt19937 rng(19);
  std::uniform_real_distribution<float> u(-8.f, 8.f);
  std::vector<float> x = {0.f, -0.f, 3.f, -3.f, 6.f, -6.f, 1e-40f, -1e-40f, std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(), 0.25f, -1.5f};
  for (int i = 0; i < 200; ++i) x.push_back(u(rng));
  const std::pair<ActivationOp, vec::Piecewise> ops[] = {
      {ActivationOp::kRelu, vec::Piecewise::kRelu}, {ActivationOp::kLeakyRelu, vec::Piecewise::kLeakyRelu},
      {ActivationOp::kClip, vec::Piecewise::kClip}, {ActivationOp::kHardSigmoid, vec::Piecewise::kHardSigmoid},
      {ActivationOp::kHardSwish, vec::Piecewise::kHardSwish}};
  for (const auto& [op, f] : ops) {
    const ActivationParams p{op, op == ActivationOp::kClip ? -1.5 : 0.01, 0.25};
    std::vector<float> y(x.size()), z = x;
    vec::piecewise(f, x.data(), y.data(), int64_t(x.size()), float(p.alpha), float(p.beta));
    vec::piecewise(f, z.data(), z.data(), int64_t(z.size()), float(p.alpha), float(p.beta));
    for (size_t i = 0; i < x.size(); ++i) {
      const float want = activation<float>(p, x[i]);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(y[i]) && std::isnan(z[i])) << int(op) << " at " << x[i];
      } else {
        EXPECT_EQ(std::memcmp(&want, &y[i], 4), 0) << int(op) << " at " << x[i] << ": " << y[i] << " vs " << want;
        EXPECT_EQ(std::memcmp(&want, &z[i], 4), 0) << int(op) << " in place at " << x[i];
      }
    }
  }
}

}  // namespace kiln::engine::cpu
