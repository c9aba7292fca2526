#!/usr/bin/env bash
# Reduced precision end to end through the CLI (issue 6 item 3, on the CPU backend): every fixture
# in tests/data compiled with --precision fp16 and with bf16, run from the .kiln, and each output
# within cosine similarity 0.999 of PyTorch's fp32 output_<i>.npy. Usage: precision.sh KILN DATA_DIR
#
# Skipped: outputs whose reference is all zeros (cosine is undefined).
#
# One fixture cannot reach 0.999 in fp16, for a reason outside the engine: mobilenet_v2. Its random
# torchvision init (kaiming fan_out on the depthwise convolutions, identity batch-norm statistics)
# shrinks the activations block after block to ~1e-6, and the ten logits are ~1e-7, below fp16's
# smallest normal number (6.1e-5) and only 1 to 4 steps of its smallest subnormal (6e-8). The
# reference output rounded to fp16 by itself has cosine 0.99416 to the reference; kiln's fp16
# output is exactly that rounding, element for element. PyTorch 1.13 has no fp16 convolution on the
# CPU; emulating fp16 storage with fp32 arithmetic (weights and every layer's output rounded to
# fp16) also gives 0.99416, and 0.99812 even with the last layer's output kept fp32. bf16 keeps
# fp32's exponent range, so there it reaches 0.99994 (PyTorch's own bf16 CPU run: 0.99994).
# npy_cosine.py lowers the bound to that representability limit (less 1e-2) only where the
# reference rounded to the target format already falls short of 0.999, so this exception is
# computed from the data, not listed by name.
set -u
kiln=$1
data=$2
source "$(dirname "$0")/common.bash"
fail=0

for dir in "$data"/*/; do
  [ -f "$dir/input_0.npy" ] || continue
  model="$dir/core_aten.pt2"
  [ -f "$model" ] || model="$dir/export.pt2"
  [ -f "$model" ] || continue
  for precision in fp16 bf16; do
    check_fixture "$kiln" "$dir" "$model" $precision cpu || fail=1
  done
done
exit $fail
