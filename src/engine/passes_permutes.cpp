// move_permutes_across_matmuls: a matmul with a 2-d weight works row by row, so permuting the
// leading dims of its input is the same as permuting those of its output. Models written for
// [L, B, E] attention (torchvision's MultiheadAttention) transpose activations around every
// projection; moving those transposes next to the attention layer lets them merge with its own
// head permutes and be read through views (absorb_attention_views) instead of copied.
#include "engine/builder.h"
#include "engine/network_internal.h"

namespace kiln::engine::detail {

bool merge_permute_pair(Network& net, Layer* l) {
  const auto* outer = pure_permutation(l);
  Layer* below = outer ? l->inputs()[0]->producer() : nullptr;
  const auto* inner = pure_permutation(below);
  if (!inner || inner->size() != outer->size()) return false;
  std::vector<int64_t> composed(outer->size());
  bool identity = true;
  for (size_t d = 0; d < outer->size(); ++d) {
    composed[d] = (*inner)[(*outer)[d]];
    identity = identity && composed[d] == int64_t(d);
  }
  Tensor* source = below->inputs()[0];
  net.replace_all_uses(l->output(), identity ? source : add_permute(net, l->name(), source, composed));
  net.remove_layer(l);
  // the inner one, now unread, would otherwise still count as a consumer of its input
  if (net.consumers(below->output()).empty() && !is_network_output(net, below->output())) net.remove_layer(below);
  return true;
}

}  // namespace kiln::engine::detail

namespace kiln::engine::passes {

using detail::add_permute;
using detail::is_pure_reshape;
using detail::pure_permutation;
using detail::sole_consumer;
using detail::static_dims;

namespace {

// A matmul that maps each row of its first input to one row of its output: no transposed first
// input, one matrix as the second (no batch dims beyond 1s: converters broadcast a linear's
// weight to the input's rank), a bias (if any) along the columns only.
bool is_row_wise(const Layer* m) {
  auto* p = m ? m->as<MatMulParams>() : nullptr;
  if (!p || p->transpose_a || p->has_residual || m->inputs()[0]->rank() < 2) return false;
  const Shape& b = m->inputs()[1]->shape();
  for (size_t d = 0; d + 2 < b.size(); ++d)
    if (b[d].constant() != std::optional<int64_t>(1)) return false;
  if (b.size() > m->inputs()[0]->rank()) return false;  // would add batch dims to the output
  return !p->has_bias || m->inputs()[2]->rank() == 1;
}

bool keeps_last(const std::vector<int64_t>& perm) { return !perm.empty() && perm.back() == int64_t(perm.size()) - 1; }

// permute -> matmul  =>  matmul -> permute
bool push_down(Network& net, Layer* s) {
  const auto* perm = pure_permutation(s);
  if (!perm || !keeps_last(*perm)) return false;
  Layer* m = sole_consumer(net, s->output());
  if (!is_row_wise(m) || m->inputs()[0] != s->output()) return false;
  for (size_t i = 1; i < m->inputs().size(); ++i)
    if (m->inputs()[i] == s->output()) return false;
  const detail::OriginScope origin(net, m->origin());
  std::vector<Tensor*> inputs = m->inputs();
  inputs[0] = s->inputs()[0];
  Layer* nm = net.add_layer(m->name(), inputs, m->params());
  net.replace_all_uses(m->output(), add_permute(net, s->name(), nm->output(), *perm));
  net.remove_layer(m);
  net.remove_layer(s);
  return true;
}

// X -> reshape [rows, K] -> matmul -> reshape [D..., N] -> permute  =>  permute X's leading dims
// D first, then the same reshapes and matmul (the two permutes that then meet can merge).
bool pull_up(Network& net, Layer* s) {
  const auto* perm = pure_permutation(s);
  if (!perm || !keeps_last(*perm)) return false;
  Layer* r2 = s->inputs()[0]->producer();
  if (!is_pure_reshape(r2) || sole_consumer(net, r2->output()) != s) return false;
  Layer* m = r2->inputs()[0]->producer();
  if (!is_row_wise(m) || sole_consumer(net, m->output()) != r2 || m->inputs()[0]->rank() != 2) return false;
  Layer* r1 = m->inputs()[0]->producer();
  if (!is_pure_reshape(r1) || sole_consumer(net, r1->output()) != m) return false;
  for (size_t i = 1; i < m->inputs().size(); ++i)
    if (m->inputs()[i] == r1->output()) return false;
  auto out = static_dims(s->inputs()[0]), x = static_dims(r1->inputs()[0]), a = static_dims(m->inputs()[0]);
  if (!out || !x || !a) return false;
  const size_t lead = out->size() - 1;  // the row dims D
  if (x->size() < lead + 1) return false;
  int64_t row_count = 1;
  for (size_t d = 0; d < lead; ++d) {
    if ((*x)[d] != (*out)[d]) return false;
    row_count *= (*out)[d];
  }
  // D must be exactly the matmul's rows: a reshape that folds some of them into K mixes samples.
  if ((*a)[0] != row_count) return false;
  std::vector<int64_t> x_perm(x->size());
  for (size_t d = 0; d < x->size(); ++d) x_perm[d] = d < lead ? (*perm)[d] : int64_t(d);
  const detail::OriginScope origin(net, m->origin());
  Tensor* moved = add_permute(net, s->name(), r1->inputs()[0], x_perm);
  Tensor* rows = net.add_shuffle(r1->name(), moved, *r1->as<ShuffleParams>())->output();
  std::vector<Tensor*> inputs = m->inputs();
  inputs[0] = rows;
  Layer* nm = net.add_layer(m->name(), inputs, m->params());
  ShuffleParams back;
  back.reshape = s->output()->shape();
  net.replace_all_uses(s->output(), net.add_shuffle(r2->name(), nm->output(), back)->output());
  net.remove_layer(s);
  net.remove_layer(r2);
  net.remove_layer(m);
  net.remove_layer(r1);
  return true;
}

}  // namespace

size_t move_permutes_across_matmuls(Network& net) {
  size_t changes = 0;
  for (bool again = true; again && changes < 100000;) {
    again = false;
    for (Layer* l : net.layers()) {
      if (push_down(net, l) || pull_up(net, l) || detail::merge_permute_pair(net, l)) {
        ++changes;
        again = true;
        break;  // the layer list changed
      }
    }
  }
  net.topological_sort();
  return changes;
}

}  // namespace kiln::engine::passes
