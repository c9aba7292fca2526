// Plugin layers: the user's CPU kernel, looked up by name in the plugin registry.
#include "engine/cpu/common.h"
#include "engine/cpu/kernels.h"

namespace kiln::engine::cpu {

void run(const PluginParams& p, LayerCall& call) {
  const PluginKernel* k = find_plugin(p.plugin);
  if (!k) fail(call.layer, "plugin '" + p.plugin + "' is not registered");
  if (!k->cpu) fail(call.layer, "plugin '" + p.plugin + "' has no CPU kernel");
  for (const TensorView& o : call.outputs)
    if (!o.data && o.numel() > 0) fail(call.layer, "plugin outputs must be allocated before the CPU kernel runs");
  k->cpu(call.inputs, call.outputs, p.attributes);
}

}  // namespace kiln::engine::cpu
