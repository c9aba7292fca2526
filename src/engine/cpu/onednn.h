// oneDNN's kernels for the CPU backend (onednn.cpp); without oneDNN at build time every entry
// declines and kiln's own kernels run.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/backend.h"
#include "engine/network.h"

namespace kiln::engine::cpu {

// Runs a fp32 or bf16 2-d forward convolution (NCHW or channels last, any groups, bias / residual /
// activation epilogue) through oneDNN; false when it does not apply (the caller runs its own
// kernel). KILN_CPU_ONEDNN=0 turns it off. A fp32 3x3 stride-1 one runs oneDNN's direct or
// Winograd kernels, whichever timed faster on its first call (KILN_CPU_CONV_TACTIC=direct or
// winograd forces one; choices are kept in the timing cache, timing_cache.h).
bool onednn_convolution(const ConvolutionParams& p, LayerCall& call);
// Whether onednn_convolution will take a convolution of these inputs (so kiln's im2col workspace
// is not needed; should oneDNN still decline, kiln's kernel allocates its own).
bool onednn_takes(const ConvolutionParams& p, const std::vector<TensorView>& inputs);

// A linear layer, y = act(A @ op(B) + bias + residual) with A's rows contiguous and B 2-d, on
// oneDNN's matmul primitive: bf16 always (oneDNN runs it on AMX or AVX-512-BF16 where the processor
// has them, accumulating in fp32; kiln's own path converts to fp32 around OpenBLAS), fp32 when B
// is constant: its weights are packed once into oneDNN's layout, where OpenBLAS's sgemm packs all
// of B on every call (measured on 2 AVX-512 cores: BERT-sized encoder 1.6x at 128 rows, 1.3x at
// 1024; ViT-S/16 1.2x; docs/PERFORMANCE.md). Products of two computed tensors (attention's) stay on
// OpenBLAS. False (nothing run) where it does not apply.
bool onednn_matmul(const MatMulParams& p, LayerCall& call);

// A layer norm (fp32 or bf16, in place of kiln's loop) on oneDNN's layer_normalization while the
// calling thread's oneDNN team is running (a matmul or convolution just ran on it): kiln's own
// workers would wait for the cores the team's OpenMP workers spin on (the norms of a bf16
// transformer, whose linear layers run on oneDNN). False (nothing run) otherwise.
bool onednn_layer_norm(const NormalizationParams& p, LayerCall& call);

// An activation over n contiguous fp32 values in place through oneDNN's vectorised eltwise
// kernels (the epilogues of matmuls and convolutions); false when oneDNN lacks it, n is small, or
// the calling thread's oneDNN team is not running (see onednn_sgemm).
bool onednn_activation_inplace(float* data, int64_t n, const ActivationParams& act);

// C[M,N] = op(A) @ op(B), row-major fp32, on oneDNN's GEMM while the calling thread's oneDNN team
// is running (a convolution started it, oneDNN work within the last 20 ms kept it): GEMMs on
// OpenBLAS's own threads then lose the cores to OpenMP workers still spinning (2x slower on
// ConvNeXt); on oneDNN's they are the same threads.
// False otherwise (OpenBLAS is faster for the transformers' GEMMs with nothing spinning).
bool onednn_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C);

// fn(i) for every i in [0, n) on oneDNN's OpenMP team while it is running (see onednn_sgemm),
// each call on one thread; false (nothing run) otherwise. fn must not throw. For many small
// independent products (attention's per-head GEMMs): on OpenBLAS's threads they would wait for
// the spinning OpenMP workers.
bool onednn_parallel_for(int64_t n, const std::function<void(int64_t)>& fn);
// C[M,N] = alpha op(A) @ op(B), row-major fp32 with leading dimensions, on the calling thread
// (inside onednn_parallel_for: oneDNN's GEMM runs sequentially within a parallel region).
void onednn_sgemm_here(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                       const float* B, int64_t ldb, float* C, int64_t ldc);

// Whether this build has oneDNN and KILN_CPU_ONEDNN does not turn it off (the builder lays CPU
// networks out channels last only then).
bool have_onednn();
// The oneDNN this build links ("2.6.3"), whatever KILN_CPU_ONEDNN says; empty without oneDNN.
std::string onednn_version();
// How many convolutions oneDNN has run in this process (tests: the path ran); of them, how many
// with its Winograd kernels (the tactic timed faster, or KILN_CPU_CONV_TACTIC=winograd).
uint64_t onednn_executions();
uint64_t onednn_winograd_executions();
// Whether oneDNN has Winograd convolution kernels for this processor (AVX-512 and later).
bool onednn_winograd_available();
// How many onednn_parallel_for loops have run in this process (tests: the path ran).
uint64_t onednn_parallel_loops();

}  // namespace kiln::engine::cpu
