"""
.. _converter_overloading:

Overloading kiln Converters with Custom Converters
===================================================================

The seed tutorial (Torch-TensorRT's converter_overloading.py) ported to kiln: only the imports and
module names change (torch_tensorrt -> kiln, torch_tensorrt.dynamo.conversion -> kiln.conversion,
dynamo_tensorrt_converter -> converter, tensorrt.ITensor -> kiln.ITensor), and the device is CUDA
where there is one, else the CPU.

If for some reason you want to change the conversion behavior of a specific PyTorch operation, you
can do so by writing a custom converter and overloading kiln's.

In this tutorial, we will demonstrate how to overload kiln's conversion of the
`torch.nn.functional.gelu` operation with a custom converter that uses a different implementation
of the GeLU layer.
"""

import logging
import sys

import torch
import kiln

device = "cuda" if torch.cuda.is_available() else "cpu"

# %%
# GeLU has 2 modes in PyTorch, one using the ``erf`` function and the other using the ``tanh`` approximation.
# kiln natively supports both implementations as an activation layer, but suppose we want to use a custom
# implementation of GeLU only for ``tanh`` mode.


class GeLU(torch.nn.Module):
    def __init__(self, mode="tanh"):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return torch.nn.functional.gelu(x, approximate=self.mode)


my_mod = GeLU(mode="tanh").to(device).eval()
ex_input = torch.randn(2, 5).to(device)


# %%
# As a baseline, we can use the standard kiln GeLU converter (in tanh approximation mode) with our module.
my_standard_gelu = kiln.compile(
    my_mod, arg_inputs=(ex_input,), min_block_size=1
)
print(my_standard_gelu.graph)
print(my_standard_gelu(ex_input))

# %%
# Writing a Custom Converter
# --------------------------
#
# Converters are functions that take a specific instance of a PyTorch operation in a PyTorch graph and
# convert it to an equivalent set of kiln layers in an under-construction kiln network.
# They are registered with kiln using the ``@kiln.conversion.converter`` decorator.
# At a code level, converter takes the current conversion state (``ConversionContext``), the next operator
# in the graph to convert, and the arguments to that node and returns the placeholder outputs for that
# operation, while as side-effect inserting the necessary layers into the kiln network.

from typing import Dict, Sequence, Tuple, Union

from torch.fx.node import Argument, Node, Target
from kiln import CompilationSettings
from kiln.conversion import ConversionContext

# %%
# Converter Metadata
# ^^^^^^^^^^^^^^^^^^^^^^^^^^^


@kiln.conversion.converter(
    # The PyTorch operation to convert, when this operation is encountered, this converter will be called
    torch.ops.aten.gelu.default,
    # Validators are functions that determine that given a specific node, if it can be converted by the converter
    capability_validator=lambda node, settings: (
        "approximate" in node.kwargs and node.kwargs["approximate"] == "tanh"
    ),
    # Can this converter be used in cases where the input shapes are dynamic
    supports_dynamic_shapes=True,
    # Set the priority of the converter to supersede the default one
    priority=kiln.conversion.ConverterPriority.HIGH,
    # Whether the converter requires a dynamic output allocator to run (e.g. data dependent ops)
    requires_output_allocator=True,
)
# %%
# Converter Implementation
# ^^^^^^^^^^^^^^^^^^^^^^^^^^^
# The converter takes the conversion context, the target operator, its arguments and keyword arguments
# and the name of the node, and returns kiln ``ITensor`` objects. kiln's ``impl`` helpers (``mul``,
# ``add``, ``tanh``...) build up the network.


def aten_ops_gelu(
    ctx: ConversionContext,
    target: Target,
    args: Tuple[Argument, ...],
    kwargs: Dict[str, Argument],
    name: str,
) -> Union[kiln.ITensor, Sequence[kiln.ITensor]]:
    # The schema for torch.ops.aten.gelu.default is gelu(Tensor self, *, str approximate='none') -> Tensor

    from kiln import SourceIR
    from kiln.conversion import impl

    # Cheap way to allow layer names to be unqiue
    op_count = 0

    def get_op_count():
        nonlocal op_count
        op_count += 1
        return op_count

    mul = lambda x, y: impl.elementwise.mul(
        ctx,
        target,
        name=f"mul_{get_op_count()}",
        source_ir=SourceIR.ATEN,
        lhs_val=x,
        rhs_val=y,
    )
    add = lambda x, y: impl.elementwise.add(
        ctx,
        target,
        name=f"add_{get_op_count()}",
        source_ir=SourceIR.ATEN,
        lhs_val=x,
        rhs_val=y,
    )
    tanh = lambda x: impl.activation.tanh(
        ctx, target, name=f"tanh_{get_op_count()}", source_ir=SourceIR.ATEN, input_val=x
    )

    # So we know that our custom converter is being run instead of the standard one
    print("\n\n---------------------------")
    print("Using custom GeLU converter")
    print("---------------------------\n\n")

    x_7 = mul(args[0], 0.5)
    x_8 = mul(args[0], 0.79788456080000003)
    x_9 = mul(args[0], 0.044714999999999998)
    x_10 = mul(x_9, args[0])
    x_11 = add(x_10, 1.0)
    x_12 = mul(x_8, x_11)
    x_13 = tanh(x_12)
    x_14 = add(x_13, 1.0)
    x_15 = mul(x_7, x_14)

    return x_15


# %%
# Using our Custom Converter
# ^^^^^^^^^^^^^^^^^^^^^^^^^^^
#
# We can now recompile and see that our custom converter is being called to convert GeLU.
my_custom_gelu = kiln.compile(
    my_mod, arg_inputs=(ex_input,), min_block_size=1
)
with torch.no_grad():
    print(my_custom_gelu.graph)
    print(my_custom_gelu(ex_input))

# %%
# We can verify that our implementation matches kiln's implementation for the ``tanh`` approximation.
print(
    f"tanh approximations are close: {torch.allclose(my_standard_gelu(ex_input), my_custom_gelu(ex_input))}"
)

# %%
# Finally, we want to verify that in the case that the ``approximate`` argument is not set to ``tanh``,
# our custom converter is not used.
my_mod_erf = GeLU(mode="none").to(device).eval()
my_gelu_erf = kiln.compile(
    my_mod_erf, arg_inputs=(ex_input,), min_block_size=1
)

# %%
# Notice that we don't see the print statement from our custom converter, indicating that it was not used.
# However, looking at the graph, we can still see that a kiln engine was created to run the GeLU operation.
# In this case, the validator for our custom converter returned ``False``, so the conversion system moved
# on to the next converter in the list, the standard GeLU converter and used that one to convert the operation.
with torch.no_grad():
    print(my_gelu_erf.graph)
    print(my_gelu_erf(ex_input))
