// IR passes run before partitioning. Each is a function over an ExportedProgram, testable alone,
// returning how many nodes it changed; run_passes() runs them in order.
#pragma once

#include <ostream>
#include <cstddef>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln::lowering {

// NumPy-style alias ops (swapaxes, moveaxis, clip, multiply, greater, concat, arctan, ...) renamed
// to the op each one is, arguments unchanged (named ones renamed where the names differ).
size_t canonicalize_aliases(ir::ExportedProgram& program);
// Removes ops that do nothing at inference: eval-mode dropout, clone / contiguous / alias /
// detach / lift_fresh_copy, _to_copy to the same dtype, and the `_assert_*` checks.
size_t remove_noops(ir::ExportedProgram& program);

// `add_`, `relu_`, `hardswish_`, ... -> their functional op, when the mutation is invisible: the
// mutated value is a fresh intermediate (not a user input, weight or view of something else).
// Later readers of the mutated value then read the functional op's result.
size_t inplace_to_functional(ir::ExportedProgram& program);

// Layout ops whose input is a weight (`t`, `permute`, `transpose`, `view`, `reshape`,
// `unsqueeze`, `squeeze`, ...) become new program weights that view the same storage (zero-copy:
// kiln::ir::Weight carries strides).
size_t fold_weight_constants(ir::ExportedProgram& program);

// Symbolic-int nodes whose value is a constant (e.g. `sym_size` of a static dim, `_operator.mul`
// of constants) are replaced by that int in their users.
size_t canonicalize_symbolic(ir::ExportedProgram& program);

// GELU written out with tanh, as GPT-2's `gelu_new` and many Hugging Face models do:
// 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) -> aten.gelu(x, approximate="tanh"), one
// op that converters map to one activation (and the builder then fuses into the matmul before it).
size_t fuse_gelu_tanh(ir::ExportedProgram& program);

// Attention written out, as models exported with eager attention carry it (GPT-2 and BERT with
// attn_implementation="eager", many others): matmul(q, k.transpose(-2, -1)) [* c | / c] [+ mask]
// -> softmax(-1) [-> to(same dtype)] -> matmul(·, v) becomes one
// aten.scaled_dot_product_attention(q, k, v, mask, scale=c | 1/c | 1), which converts to kiln's
// fused attention (scores never stored). Only when every intermediate is used once and the mask
// does not broadcast the scores to a larger shape. Also core ATen's decomposition of sdpa itself
// (q and kᵀ each scaled by sqrt(scale), the safe softmax written out). Rows whose every score is
// -inf differ after a plain softmax: it gives NaN there, the fused attention zeros (as PyTorch's
// own sdpa and its safe softmax do since 2.5).
size_t fuse_eager_attention(ir::ExportedProgram& program);

// A matrix applied to every batch of a bmm, as core ATen writes x @ W when x (rank 3) cannot be
// flattened to rows (a transposed activation, as nn.MultiheadAttention's packed projection has):
// bmm(x, view(expand(W, [n, K, N]))) becomes matmul(x, W). The expanded copy of W (n times its
// size) is never made, and the product is one matrix multiply with a broadcast right operand.
size_t unbroadcast_matmul_weights(ir::ExportedProgram& program);

// float64 programs (the engine has no f64) computed in float32, as Torch-TensorRT's
// truncate_double: f64 weights become f32 copies, f64 values and dtype arguments f32; f64 user
// inputs are cast to f32 where they enter and f64 results cast back where they leave, so callers
// still pass and get float64. Writes one warning line to `warn` (when given) if anything changed.
size_t truncate_double(ir::ExportedProgram& program, std::ostream* warn = nullptr);

// Complex values (complex64 / complex128) as real tensors with a trailing dim of 2, the layout
// view_as_real gives: rotary embeddings written with complex numbers (view_as_complex, polar,
// complex multiplies, view_as_real, the views between them, complex weights) become real ops.
// All or nothing: where any complex value is a user input, an output or an op not covered, the
// program is left as it is (PyTorch then runs those ops).
size_t complex_as_real(ir::ExportedProgram& program);

struct PassReport {
  std::string pass;
  size_t changes = 0;
};
// All of the above, in order, then dead-code elimination; verifies the graph after each.
std::vector<PassReport> run_passes(ir::ExportedProgram& program);

}  // namespace kiln::lowering
