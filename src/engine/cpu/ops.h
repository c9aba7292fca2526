// Scalar semantics of the binary, unary and activation ops, shared by the one-op kernels and the
// fused pointwise interpreter so both compute exactly the same thing. C is the compute type
// (float for every float storage type; the integer type itself otherwise). PyTorch's meaning:
// remainder takes the divisor's sign, floor division rounds toward -inf, min/max propagate NaN,
// round is half-to-even.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "engine/cpu/vec_math.h"
#include "engine/network.h"

namespace kiln::engine::cpu {

inline bool is_predicate(BinaryOp op) {
  switch (op) {
    case BinaryOp::kEqual: case BinaryOp::kNotEqual: case BinaryOp::kLess: case BinaryOp::kLessEqual:
    case BinaryOp::kGreater: case BinaryOp::kGreaterEqual: case BinaryOp::kAnd: case BinaryOp::kOr:
    case BinaryOp::kXor:
      return true;
    default:
      return false;
  }
}
// The vectorized fp32 loop of a binary op, where it has one (vec::arith).
inline std::optional<vec::Arith> vector_arith(BinaryOp op) {
  switch (op) {
    case BinaryOp::kAdd: return vec::Arith::kAdd;
    case BinaryOp::kSub: return vec::Arith::kSub;
    case BinaryOp::kMul: return vec::Arith::kMul;
    case BinaryOp::kDiv: return vec::Arith::kDiv;
    default: return std::nullopt;
  }
}
inline bool is_predicate(UnaryOp op) {
  return op == UnaryOp::kNot || op == UnaryOp::kIsNan || op == UnaryOp::kIsInf;
}

template <class C>
inline C floor_div(C a, C b) {
  if constexpr (std::is_floating_point_v<C>) {
    // PyTorch's div_floor: exact for a multiple of b, and -0.0 where the quotient is zero.
    if (b == 0) return a / b;
    C m = std::fmod(a, b);
    C d = (a - m) / b;
    if (m != 0 && ((b < 0) != (m < 0))) d -= 1;
    if (d == 0) return std::copysign(C(0), a / b);
    C f = std::floor(d);
    if (d - f > C(0.5)) f += 1;
    return f;
  } else if constexpr (std::is_same_v<C, bool>) {
    return b ? a : false;
  } else {
    if (b == 0) return 0;  // PyTorch raises; a kernel cannot, so it yields 0
    C q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
  }
}

template <class C>
inline C remainder(C a, C b) {
  if constexpr (std::is_floating_point_v<C>) {
    C m = std::fmod(a, b);
    if (m != 0 && ((b < 0) != (m < 0))) m += b;
    return m;
  } else if constexpr (std::is_same_v<C, bool>) {
    return b ? false : a;
  } else {
    if (b == 0) return 0;
    C m = a % b;
    if (m != 0 && ((b < 0) != (m < 0))) m += b;
    return m;
  }
}

template <class C>
inline C int_pow(C base, C exp) {
  if (exp < 0) return base == 1 ? 1 : (base == C(-1) ? ((exp & 1) ? C(-1) : C(1)) : 0);
  C r = 1;
  while (exp) {
    if (exp & 1) r = C(r * base);
    base = C(base * base);
    exp >>= 1;
  }
  return r;
}

// Arithmetic ops: result in C. Predicates (comparisons, logical) are in binary_pred.
template <class C>
inline C binary_arith(BinaryOp op, C a, C b) {
  if constexpr (std::is_same_v<C, bool>) {
    switch (op) {
      case BinaryOp::kAdd: case BinaryOp::kMax: case BinaryOp::kBitOr: return a || b;
      case BinaryOp::kMul: case BinaryOp::kMin: case BinaryOp::kBitAnd: return a && b;
      case BinaryOp::kSub: case BinaryOp::kBitXor: return a != b;
      case BinaryOp::kPow: return a || !b;
      default: return floor_div(a, b);
    }
  } else {
    switch (op) {
      case BinaryOp::kAdd: return C(a + b);
      case BinaryOp::kSub: return C(a - b);
      case BinaryOp::kMul: return C(a * b);
      case BinaryOp::kDiv:
        if constexpr (std::is_floating_point_v<C>) return a / b;
        else return b == 0 ? C(0) : C(a / b);
      case BinaryOp::kFloorDiv: return floor_div(a, b);
      case BinaryOp::kTruncDiv:
        if constexpr (std::is_floating_point_v<C>) return std::trunc(a / b);
        else return b == 0 ? C(0) : C(a / b);
      case BinaryOp::kRemainder: return remainder(a, b);
      case BinaryOp::kFmod:
        if constexpr (std::is_floating_point_v<C>) return std::fmod(a, b);
        else return b == 0 ? C(0) : C(a % b);
      case BinaryOp::kPow:
        if constexpr (std::is_floating_point_v<C>) return std::pow(a, b);
        else return int_pow(a, b);
      case BinaryOp::kMin:
        if constexpr (std::is_floating_point_v<C>) if (std::isnan(a) || std::isnan(b)) return a + b;
        return a < b ? a : b;
      case BinaryOp::kMax:
        if constexpr (std::is_floating_point_v<C>) if (std::isnan(a) || std::isnan(b)) return a + b;
        return a > b ? a : b;
      case BinaryOp::kBitAnd: case BinaryOp::kBitOr: case BinaryOp::kBitXor:
        if constexpr (std::is_integral_v<C>) {
          if (op == BinaryOp::kBitAnd) return C(a & b);
          if (op == BinaryOp::kBitOr) return C(a | b);
          return C(a ^ b);
        }
        return C(0);  // refused for floats before any kernel runs
      default:
        return C(0);
    }
  }
}

template <class C>
inline bool binary_pred(BinaryOp op, C a, C b) {
  switch (op) {
    case BinaryOp::kEqual: return a == b;
    case BinaryOp::kNotEqual: return a != b;
    case BinaryOp::kLess: return a < b;
    case BinaryOp::kLessEqual: return a <= b;
    case BinaryOp::kGreater: return a > b;
    case BinaryOp::kGreaterEqual: return a >= b;
    case BinaryOp::kAnd: return (a != C(0)) && (b != C(0));
    case BinaryOp::kOr: return (a != C(0)) || (b != C(0));
    case BinaryOp::kXor: return (a != C(0)) != (b != C(0));
    default: return false;
  }
}

// The special functions the C++ library lacks, in double. digamma: the recurrence
// psi(x) = psi(x + 1) - 1/x up to x >= 6, then the asymptotic series
// ln x - 1/(2x) - sum B_2k / (2k x^2k); negative x by the reflection psi(1 - x) - pi / tan(pi x).
// Poles (0 and the negative integers): -inf at -0 / +0 as PyTorch gives (copysign), NaN below.
inline double digamma(double x) {
  constexpr double kPi = 3.14159265358979323846;
  if (x == 0) return std::copysign(INFINITY, -x);
  if (x < 0) {
    if (x == std::trunc(x)) return NAN;
    return digamma(1 - x) - kPi / std::tan(kPi * x);
  }
  double shift = 0;
  while (x < 6) shift -= 1 / x, x += 1;
  const double z = 1 / (x * x);
  // B_2k / (2k): 1/12, -1/120, 1/252, -1/240, 1/132, -691/32760, 1/12
  const double series = z * (1.0 / 12 - z * (1.0 / 120 - z * (1.0 / 252 - z * (1.0 / 240 - z * (1.0 / 132 - z * (691.0 / 32760 - z / 12))))));
  return shift + std::log(x) - 0.5 / x - series;
}
// erfinv: Winitzki's closed-form estimate, then Newton steps on erf (quadratic convergence: three
// take it to double precision); +-1 give +-inf, |y| > 1 NaN.
inline double erfinv(double y) {
  if (std::isnan(y) || y < -1 || y > 1) return NAN;
  if (y == 1 || y == -1) return std::copysign(INFINITY, y);
  constexpr double kPi = 3.14159265358979323846, a = 0.147;
  const double l = std::log1p(-y * y), t = 2 / (kPi * a) + l / 2;
  double x = std::copysign(std::sqrt(std::sqrt(t * t - l / a) - t), y);
  for (int i = 0; i < 3; ++i) x -= (std::erf(x) - y) / (2 / std::sqrt(kPi) * std::exp(-x * x));
  return x;
}

template <class C>
inline C unary_arith(UnaryOp op, C x) {
  if constexpr (std::is_floating_point_v<C>) {
    switch (op) {
      case UnaryOp::kExp: return std::exp(x);
      case UnaryOp::kLog: return std::log(x);
      case UnaryOp::kLog2: return std::log2(x);
      case UnaryOp::kLog1p: return std::log1p(x);
      case UnaryOp::kExpm1: return std::expm1(x);
      case UnaryOp::kSqrt: return std::sqrt(x);
      case UnaryOp::kRsqrt: return C(1) / std::sqrt(x);
      case UnaryOp::kAbs: return std::fabs(x);
      case UnaryOp::kNeg: return -x;
      case UnaryOp::kSin: return std::sin(x);
      case UnaryOp::kCos: return std::cos(x);
      case UnaryOp::kTan: return std::tan(x);
      case UnaryOp::kAsin: return std::asin(x);
      case UnaryOp::kAcos: return std::acos(x);
      case UnaryOp::kAtan: return std::atan(x);
      case UnaryOp::kSinh: return std::sinh(x);
      case UnaryOp::kCosh: return std::cosh(x);
      case UnaryOp::kTanh: return std::tanh(x);
      case UnaryOp::kErf: return std::erf(x);
      case UnaryOp::kLgamma: {
        int sign = 0;  // lgamma_r: std::lgamma writes the global signgam, a race between threads
        return C(::lgamma_r(double(x), &sign));
      }
      case UnaryOp::kDigamma: return C(digamma(double(x)));
      case UnaryOp::kErfinv: return C(erfinv(double(x)));
      case UnaryOp::kFloor: return std::floor(x);
      case UnaryOp::kCeil: return std::ceil(x);
      case UnaryOp::kRound: return std::nearbyint(x);  // default rounding mode: half to even
      case UnaryOp::kTrunc: return std::trunc(x);
      case UnaryOp::kSign: return C((C(0) < x) - (x < C(0)));
      case UnaryOp::kReciprocal: return C(1) / x;
      default: return x;
    }
  } else if constexpr (std::is_same_v<C, bool>) {
    switch (op) {
      case UnaryOp::kBitNot: return !x;
      case UnaryOp::kNeg: return x;  // refused at network level; keep something defined
      default: return x;
    }
  } else {
    switch (op) {
      case UnaryOp::kAbs: return x < 0 ? C(-x) : x;
      case UnaryOp::kNeg: return C(-x);
      case UnaryOp::kSign: return C((C(0) < x) - (x < C(0)));
      case UnaryOp::kBitNot: return C(~x);
      case UnaryOp::kFloor: case UnaryOp::kCeil: case UnaryOp::kRound: case UnaryOp::kTrunc: return x;
      default:  // transcendental ops on integers: computed in double, truncated back
        return C(unary_arith<double>(op, double(x)));
    }
  }
}

template <class C>
inline bool unary_pred(UnaryOp op, C x) {
  switch (op) {
    case UnaryOp::kNot: return !(x != C(0));
    case UnaryOp::kIsNan:
      if constexpr (std::is_floating_point_v<C>) return std::isnan(x);
      return false;
    case UnaryOp::kIsInf:
      if constexpr (std::is_floating_point_v<C>) return std::isinf(x);
      return false;
    default: return false;
  }
}

// Activations are float-only (computed in float or double).
template <class C>
inline C activation(const ActivationParams& p, C x) {
  static_assert(std::is_floating_point_v<C>);
  const C alpha = C(p.alpha), beta = C(p.beta);
  switch (p.op) {
    case ActivationOp::kRelu: return std::isnan(x) ? x : (x > 0 ? x : C(0));
    case ActivationOp::kSigmoid: return C(1) / (C(1) + std::exp(-x));
    case ActivationOp::kTanh: return std::tanh(x);
    case ActivationOp::kGeluErf: return C(0.5) * x * (C(1) + std::erf(x * C(M_SQRT1_2)));
    case ActivationOp::kGeluTanh: {
      const C k = C(M_2_SQRTPI * M_SQRT1_2);  // sqrt(2/pi)
      return C(0.5) * x * (C(1) + std::tanh(k * (x + C(0.044715) * x * x * x)));
    }
    case ActivationOp::kSilu: return x / (C(1) + std::exp(-x));
    case ActivationOp::kHardSigmoid: return std::min(std::max(x + C(3), C(0)), C(6)) / C(6);
    case ActivationOp::kHardSwish: return x * std::min(std::max(x + C(3), C(0)), C(6)) / C(6);
    case ActivationOp::kLeakyRelu: return x > 0 ? x : x * alpha;
    case ActivationOp::kElu: return x > 0 ? x : alpha * std::expm1(x);
    case ActivationOp::kSoftplus: {  // alpha = beta, beta = threshold (PyTorch's names)
      const C b = alpha == 0 ? C(1) : alpha;
      return x * b > beta ? x : std::log1p(std::exp(x * b)) / b;
    }
    case ActivationOp::kClip:
      if (std::isnan(x)) return x;
      return std::min(std::max(x, alpha), beta);
    case ActivationOp::kMish: {
      C sp = x > C(20) ? x : std::log1p(std::exp(x));
      return x * std::tanh(sp);
    }
  }
  return x;
}

// y = act(x) over n floats: vectorized for the piecewise-linear activations (vec::piecewise, the
// same bits), for sigmoid and SiLU (vec::exp's e^x, within a few ulp of std::exp's), tanh and both
// GELUs (vec::erf within 3 ulp, vec::tanh within 4), the scalar definition above for the others.
inline void activation_rows(const ActivationParams& p, const float* x, float* y, int64_t n) {
  using vec::Piecewise;
  const float alpha = float(p.alpha), beta = float(p.beta);
  switch (p.op) {
    case ActivationOp::kSigmoid: return vec::sigmoid(x, y, n);
    case ActivationOp::kGeluErf: return vec::gelu_erf(x, y, n);
    case ActivationOp::kTanh: return vec::tanh(x, y, n);
    case ActivationOp::kGeluTanh: return vec::gelu_tanh(x, y, n);
    case ActivationOp::kSilu: return vec::silu(x, y, n);
    case ActivationOp::kRelu: return vec::piecewise(Piecewise::kRelu, x, y, n, alpha, beta);
    case ActivationOp::kLeakyRelu: return vec::piecewise(Piecewise::kLeakyRelu, x, y, n, alpha, beta);
    case ActivationOp::kClip: return vec::piecewise(Piecewise::kClip, x, y, n, alpha, beta);
    case ActivationOp::kHardSigmoid: return vec::piecewise(Piecewise::kHardSigmoid, x, y, n, alpha, beta);
    case ActivationOp::kHardSwish: return vec::piecewise(Piecewise::kHardSwish, x, y, n, alpha, beta);
    default:
      for (int64_t i = 0; i < n; ++i) y[i] = activation<float>(p, x[i]);
  }
}

}  // namespace kiln::engine::cpu
