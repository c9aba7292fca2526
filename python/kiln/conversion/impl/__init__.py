"""kiln.conversion.impl: the C++ impl helpers with the seed's keyword names.

    impl.elementwise.mul(ctx, target, name=..., source_ir=SourceIR.ATEN, lhs_val=x, rhs_val=0.5)
    impl.activation.tanh(ctx, target, name=..., source_ir=SourceIR.ATEN, input_val=x)

Submodules: elementwise, unary, activation, matmul, conv, pool, normalization, reduce, shuffle,
slice, select, cat, cast, embedding, attention, shape.
"""
import sys

from ... import _kiln

_NAMES = ["elementwise", "unary", "activation", "matmul", "conv", "pool", "normalization", "reduce", "shuffle",
          "slice", "select", "cat", "cast", "embedding", "attention", "shape"]
for _n in _NAMES:
    _mod = getattr(_kiln.impl, _n)
    globals()[_n] = _mod
    sys.modules[f"{__name__}.{_n}"] = _mod  # `from kiln.conversion.impl import elementwise` works too
__all__ = list(_NAMES)
