// See vec_math.h. Loops carry `omp simd` (the file is compiled with -fopenmp-simd, which needs no
// OpenMP runtime) so that their float reductions vectorize without -ffast-math, which would also
// let the compiler assume no infinities, and softmax rows hold -inf for masked entries.
#include "engine/cpu/vec_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KILN_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KILN_VECTOR_CLONES
#endif

namespace kiln::engine::cpu::vec {
namespace {

// c[0]·x^(N-1) + ... + c[N-1] by Horner's rule in float (coefficients from the highest power).
template <size_t N>
[[gnu::always_inline]] inline float horner(float x, const float (&c)[N]) {
  float p = c[0];
  for (size_t i = 1; i < N; ++i) p = p * x + c[i];
  return p;
}

// e^x = 2^n e^r with n = round(x log2 e) and |r| <= ln2/2 (Cody-Waite split of ln 2), e^r by its
// Taylor polynomial to r^7 (truncation below 2e-8 relative), 2^n built in the exponent bits.
// Results that would be denormal floats (x below about -87.34) are flushed to 0.
inline float exp_one(float x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kLow = -87.3365447f, kHigh = 88.7228394f;  // e^x is a normal float in between
  constexpr float kRound = 12582912.0f;                       // 1.5 * 2^23: adding it rounds to an integer
  const float xc = x < kLow ? kLow : (x > kHigh ? kHigh : x);  // NaN passes both tests unchanged
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  const float p = horner(r, {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f});
  // 2^n as 2^a 2^b, a + b = n: n reaches 128 near the top of the range, where 2^n alone is no float.
  // (A NaN x gives a NaN n, whose conversion to int is undefined: 0 instead; p carries the NaN.)
  const int32_t ni = int32_t(n == n ? n : 0.0f), a = ni >> 1, b = ni - a;
  const int32_t a_bits = (a + 127) << 23, b_bits = (b + 127) << 23;
  float two_a, two_b;
  std::memcpy(&two_a, &a_bits, sizeof two_a);
  std::memcpy(&two_b, &b_bits, sizeof two_b);
  const float y = p * two_a * two_b;
  return x < kLow ? 0.0f : (x > kHigh ? std::numeric_limits<float>::infinity() : y);
}


// erf(x) within 3 float ulp of the exact value (checked over the whole range, VecMath tests):
// |x| <= 0.921875 as x·P(x²); above, 1 - e^(-x²)·Q(|x|) with the sign of x, and 1 from 4 on (where
// erf rounds to 1 in float). P and Q are least-squares fits of erf(x)/x and erfc(x)·e^(x²), made
// for kiln (degree 5 in x² with its constant term fixed at 2/√π, degree 8 in x), evaluated by
// Horner in float. NaN gives NaN.
inline float erf_one(float x) {
  const float ax = std::fabs(x), t = x * x;
  // The last coefficient of P is 2/√π in float: erf(x) ≈ that·x for tiny x.
  const float small = x * horner(t, {-6.180864293128252e-4f, 5.037300754338503e-3f, -2.6803718879818916e-2f,
                                     1.1283170431852341e-1f, -3.761269152164459e-1f, 1.128379225730896f});
  const float q = horner(ax, {1.226100284839049e-4f, -2.14781379327178e-3f, 1.681358739733696e-2f,
                              -7.816743105649948e-2f, 2.4240313470363617e-1f, -5.350728034973145e-1f,
                              8.763126730918884e-1f, -1.086222529411316f, 9.935421347618103e-1f});
  float large = 1.0f - exp_one(-t) * q;
  large = ax >= 4.0f ? 1.0f : large;
  large = std::copysign(large, x);
  return ax <= 0.921875f ? small : large;
}

// tanh(x) within 4 float ulp: |x| <= 0.625 as x·P(x²) (a least-squares fit made for kiln, degree 5
// in x²), above as 1 - 2/(e^(2|x|) + 1) with the sign of x (1 where e^(2|x|) overflows). NaN gives NaN.
inline float tanh_one(float x) {
  const float ax = std::fabs(x), t = x * x;
  const float small = x * horner(t, {-5.69737097248435e-3f, 2.0630160346627235e-2f, -5.373581498861313e-2f,
                                     1.333136409521103e-1f, -3.3333274722099304e-1f, 1.0f});
  const float large = std::copysign(1.0f - 2.0f / (exp_one(2.0f * ax) + 1.0f), x);
  return ax <= 0.625f ? small : large;
}

}  // namespace

// y[i] = f(x[i]), inlined into each clone below so its loop is vectorized for that clone.
template <class F>
[[gnu::always_inline]] inline void map_rows(const float* x, float* y, int64_t n, F f) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

KILN_VECTOR_CLONES void exp(const float* x, float* y, int64_t n) { map_rows(x, y, n, [](float v) { return exp_one(v); }); }

KILN_VECTOR_CLONES void erf(const float* x, float* y, int64_t n) { map_rows(x, y, n, [](float v) { return erf_one(v); }); }

KILN_VECTOR_CLONES void gelu_erf(const float* x, float* y, int64_t n) {
  map_rows(x, y, n, [](float v) { return 0.5f * v * (1.0f + erf_one(v * 0.70710678118654752f)); });
}

KILN_VECTOR_CLONES void tanh(const float* x, float* y, int64_t n) { map_rows(x, y, n, [](float v) { return tanh_one(v); }); }

KILN_VECTOR_CLONES void gelu_tanh(const float* x, float* y, int64_t n) {
  constexpr float kSqrtTwoOverPi = 0.79788456080286536f;
  map_rows(x, y, n, [](float v) { return 0.5f * v * (1.0f + tanh_one(kSqrtTwoOverPi * (v + 0.044715f * v * v * v))); });
}

KILN_VECTOR_CLONES void sigmoid(const float* x, float* y, int64_t n) {
  map_rows(x, y, n, [](float v) { return 1.0f / (1.0f + exp_one(-v)); });
}

KILN_VECTOR_CLONES void silu(const float* x, float* y, int64_t n) {
  map_rows(x, y, n, [](float v) { return v / (1.0f + exp_one(-v)); });
}

KILN_VECTOR_CLONES float max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// Sums in double vector lanes (8 a vector under AVX-512): each element widened, so squares of any
// float neither overflow nor underflow and the result is a double sum's, in another order. Inlined
// into each clone below, so its loop is vectorized for that clone's instruction set.
template <class Term>
[[gnu::always_inline]] inline double lane_sum(const float* x, int64_t n, Term term) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += term(double(x[i]));
  return s;
}

KILN_VECTOR_CLONES double sum(const float* x, int64_t n) {
  return lane_sum(x, n, [](double v) { return v; });
}

KILN_VECTOR_CLONES double sum_squares(const float* x, int64_t n) {
  return lane_sum(x, n, [](double v) { return v * v; });
}

KILN_VECTOR_CLONES double sum_squared_deviations(const float* x, int64_t n, double mean) {
  return lane_sum(x, n, [mean](double v) { return (v - mean) * (v - mean); });
}

KILN_VECTOR_CLONES void normalize(const float* x, float* y, int64_t n, float mean, float inv, const float* scale,
                                  const float* bias) {
  if (scale && bias) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * inv * scale[i] + bias[i];
  } else if (scale) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * inv * scale[i];
  } else if (bias) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * inv + bias[i];
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - mean) * inv;
  }
}

KILN_VECTOR_CLONES float exp_shifted_sum(const float* x, float* y, int64_t n, float shift) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const float e = exp_one(x[i] - shift);
    y[i] = e;
    s += e;
  }
  return s;
}

KILN_VECTOR_CLONES void scale(float* y, int64_t n, float a) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

KILN_VECTOR_CLONES void subtract(const float* x, float* y, int64_t n, float shift) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] - shift;
}

KILN_VECTOR_CLONES void window_max(const float* const* rows, int64_t count, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = -std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < count; ++k) {
    const float* v = rows[k];
    // Two selects, not one test with ||: GCC turns these into vector blends (the short-circuit
    // form stayed scalar, with branches).
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float x = v[i], larger = x > y[i] ? x : y[i];
      y[i] = x != x ? x : larger;
    }
  }
}

namespace {
// std::max / std::min as the scalar code evaluates them (the first argument unless the test holds).
__attribute__((always_inline)) inline float max_of(float a, float b) { return a < b ? b : a; }
__attribute__((always_inline)) inline float min_of(float a, float b) { return b < a ? b : a; }
template <class F>
__attribute__((always_inline)) inline void map(F f, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}
}  // namespace

KILN_VECTOR_CLONES void piecewise(Piecewise f, const float* x, float* y, int64_t n, float alpha, float beta) {
  switch (f) {
    case Piecewise::kRelu:
      return map([](float v) { const float r = v > 0.f ? v : 0.f; return v != v ? v : r; }, x, y, n);
    case Piecewise::kLeakyRelu:
      return map([alpha](float v) { return v > 0.f ? v : v * alpha; }, x, y, n);
    case Piecewise::kClip:
      return map([alpha, beta](float v) { const float r = min_of(max_of(v, alpha), beta); return v != v ? v : r; }, x, y, n);
    case Piecewise::kHardSigmoid:
      return map([](float v) { return min_of(max_of(v + 3.f, 0.f), 6.f) / 6.f; }, x, y, n);
    case Piecewise::kHardSwish:
      return map([](float v) { return v * min_of(max_of(v + 3.f, 0.f), 6.f) / 6.f; }, x, y, n);
  }
}

namespace {
// One loop per operation and operand shape, each with its arithmetic known at compile time.
template <class Op>
__attribute__((always_inline)) inline void arith_loops(Op op, const float* a, bool a_scalar, const float* b, bool b_scalar, float* z, int64_t n) {
  if (a_scalar && b_scalar) {
    const float v = op(a[0], b[0]);
    for (int64_t i = 0; i < n; ++i) z[i] = v;
  } else if (a_scalar) {
    const float x = a[0];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) z[i] = op(x, b[i]);
  } else if (b_scalar) {
    const float y = b[0];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) z[i] = op(a[i], y);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) z[i] = op(a[i], b[i]);
  }
}

// Calls f with the operation as a function object known at compile time (arith, arith_bf16).
template <class F>
__attribute__((always_inline)) inline void with_arith(Arith op, F f) {
  switch (op) {
    case Arith::kAdd: return f([](float x, float y) { return x + y; });
    case Arith::kSub: return f([](float x, float y) { return x - y; });
    case Arith::kMul: return f([](float x, float y) { return x * y; });
    case Arith::kDiv: return f([](float x, float y) { return x / y; });
  }
}
}  // namespace

KILN_VECTOR_CLONES void arith(Arith op, const float* a, bool a_scalar, const float* b, bool b_scalar, float* z,
                              int64_t n) {
  with_arith(op, [&](auto f) { arith_loops(f, a, a_scalar, b, b_scalar, z, n); });
}

namespace {
// One value each way, branch-free so the loops vectorize (engine/half.h's rules).
__attribute__((always_inline)) inline uint32_t bf16_bits_of(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (x >> 16) | 0x40u;
  return (x & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded;
}
__attribute__((always_inline)) inline float float_of_bf16_bits(uint32_t b) {
  const uint32_t x = b << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
}  // namespace

KILN_VECTOR_CLONES void bf16_to_float(const uint16_t* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = float_of_bf16_bits(x[i]);
}

KILN_VECTOR_CLONES void float_to_bf16(const float* x, uint16_t* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = uint16_t(bf16_bits_of(x[i]));
}

KILN_VECTOR_CLONES void round_to_bf16(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = float_of_bf16_bits(bf16_bits_of(x[i]));
}

namespace {
// arith_bf16's loop for loaders known at compile time (a broadcast value, bf16 bits, floats).
template <class Op, class LoadA, class LoadB>
__attribute__((always_inline)) inline void arith_bf16_loop(Op op, LoadA la, LoadB lb, uint16_t* z, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) z[i] = uint16_t(bf16_bits_of(op(la(i), lb(i))));
}
// Calls f with a loader for the operand: element i as a float.
template <class F>
__attribute__((always_inline)) inline void with_loader(const Bf16Operand& v, F f) {
  if (v.scalar) {
    const float x = v.wide ? v.wide[0] : float_of_bf16_bits(v.bits[0]);
    f([x](int64_t) { return x; });
  } else if (v.wide) {
    const float* w = v.wide;
    f([w](int64_t i) { return w[i]; });
  } else {
    const uint16_t* b = v.bits;
    f([b](int64_t i) { return float_of_bf16_bits(b[i]); });
  }
}
template <class Op>
__attribute__((always_inline)) inline void arith_bf16_of(Op op, const Bf16Operand& a, const Bf16Operand& b, uint16_t* z,
                                                         int64_t n) {
  with_loader(a, [&](auto la) { with_loader(b, [&](auto lb) { arith_bf16_loop(op, la, lb, z, n); }); });
}
}  // namespace

KILN_VECTOR_CLONES void arith_bf16(Arith op, Bf16Operand a, Bf16Operand b, uint16_t* z, int64_t n) {
  with_arith(op, [&](auto f) { arith_bf16_of(f, a, b, z, n); });
}

}  // namespace kiln::engine::cpu::vec
