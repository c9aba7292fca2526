"""GPU smoke test with a native backtrace on crashes (faulthandler): one tiny segment on CUDA."""
import faulthandler
import sys

import torch

import kiln

faulthandler.enable()
x = torch.randn(2, 5, device="cuda")
m = torch.nn.GELU(approximate="tanh").cuda().eval()
c = kiln.compile(m, arg_inputs=(x,), min_block_size=1)
print(c.program.segments[0]["summary"], flush=True)
seg = c.module._run_on_acc_0
print("running", flush=True)
out = c(x)
torch.cuda.synchronize()
print("max err", (out - m(x)).abs().max().item(), flush=True)
