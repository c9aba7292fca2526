// Row kernels written so the compiler vectorizes them (float math without library calls or
// branches), each compiled for AVX-512, AVX2 and the baseline x86-64 and picked at load time by
// the processor it runs on (GCC/clang target_clones): kiln itself is built for the baseline, so
// without this its loops would use 4-wide SSE2 on a machine with 16-wide AVX-512.
#pragma once

#include <cstdint>

namespace kiln::engine::cpu::vec {

// e^x for each element: within 2 ulp of std::exp where the result is a normal float, exactly 0
// below that range (denormals flushed; exp(-inf) = 0, as masked softmax entries need), +inf above,
// NaN for NaN.
void exp(const float* x, float* y, int64_t n);
// y[i] = 1 / (1 + e^-x[i]) and x[i] / (1 + e^-x[i]) through exp above (x and y may be the same):
// within a few ulp of the same formulas through std::exp; 0 (or -0) where e^-x overflows, NaN for NaN.
void sigmoid(const float* x, float* y, int64_t n);
// erf within 3 float ulp, and GELU's erf form 0.5·x·(1 + erf(x/√2)) through it (x and y may be
// the same); NaN for NaN.
void erf(const float* x, float* y, int64_t n);
void gelu_erf(const float* x, float* y, int64_t n);
// tanh within 4 float ulp, and GELU's tanh form 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))) through
// it (x and y may be the same); NaN for NaN.
void tanh(const float* x, float* y, int64_t n);
void gelu_tanh(const float* x, float* y, int64_t n);
void silu(const float* x, float* y, int64_t n);
// The largest element (NaNs ignored; -inf for an empty or all-NaN row).
float max(const float* x, int64_t n);
// y[i] = e^(x[i] - shift); returns the sum of the y (float accumulation in vector lanes).
float exp_shifted_sum(const float* x, float* y, int64_t n, float shift);
// The sum of the x (and of their squares) in double vector lanes: a double sum's result up to the
// order of its additions.
double sum(const float* x, int64_t n);
double sum_squares(const float* x, int64_t n);
// The sum of (x[i] - mean)² in double lanes (a layer norm's variance).
double sum_squared_deviations(const float* x, int64_t n, double mean);
// y[i] = (x[i] - mean) * inv * scale[i] + bias[i] in float; scale and bias may be null (x and y may
// be the same).
void normalize(const float* x, float* y, int64_t n, float mean, float inv, const float* scale, const float* bias);
// y[i] *= a.
void scale(float* y, int64_t n, float a);
// y[i] = x[i] - shift (log-softmax's last step).
void subtract(const float* x, float* y, int64_t n, float shift);

// y[i] = the largest of rows[k][i] over k < count (-inf when count is 0); a NaN among them wins
// (PyTorch's max pooling propagates NaN). A channels-last max pooling's output pixel: one call
// holds the whole loop over its window's pixels and channels.
void window_max(const float* const* rows, int64_t count, int64_t n, float* y);

// The piecewise-linear activations, y[i] = f(x[i]) (x and y may be the same), bit for bit what
// ops.h's scalar activation<float> gives, NaN included: ReLU, LeakyReLU (alpha), clip to
// [alpha, beta], hard sigmoid, hard swish.
enum class Piecewise { kRelu, kLeakyRelu, kClip, kHardSigmoid, kHardSwish };
void piecewise(Piecewise f, const float* x, float* y, int64_t n, float alpha, float beta);

// z[i] = a[i] op b[i] for the four IEEE operations (exact in every vector width, so the same as a
// scalar loop's); an operand flagged `scalar` is its element 0 throughout (a broadcast).
enum class Arith { kAdd, kSub, kMul, kDiv };
void arith(Arith op, const float* a, bool a_scalar, const float* b, bool b_scalar, float* z, int64_t n);

// bfloat16 (as its bits) to float and back, exactly as engine/half.h converts one value: widening
// is exact; narrowing rounds to nearest even and keeps NaNs quiet NaNs.
void bf16_to_float(const uint16_t* x, float* y, int64_t n);
void float_to_bf16(const float* x, uint16_t* y, int64_t n);
// x[i] = float(bf16(x[i])): a bf16 computation's rounding, kept in float.
void round_to_bf16(float* x, int64_t n);

// z[i] = bf16(a[i] op b[i]) computed in float, each operand bf16 bits or already widened to
// float (a small operand read by many runs: widened once); bit for bit what widening both, arith
// and float_to_bf16 give, in one pass without the float buffers in between.
struct Bf16Operand {
  const uint16_t* bits;  // the bf16 values, read where `wide` is null
  const float* wide;     // or the same values as floats
  bool scalar;           // element 0 throughout (a broadcast)
};
void arith_bf16(Arith op, Bf16Operand a, Bf16Operand b, uint16_t* z, int64_t n);

}  // namespace kiln::engine::cpu::vec
