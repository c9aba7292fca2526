"""What kiln.compile baked into a program from the traced call is checked on every later call:
non-tensor arguments (Python scalars, None, strings) must keep their traced values, the call must
have the traced structure, and tensors their traced dtypes. A mismatch is a kiln.InputError naming
the argument, never a result computed for other values."""
import copy

import pytest
import torch

import kiln


class Scaled(torch.nn.Module):
    def forward(self, x, scale=2.0, *, shift=None):
        y = torch.relu(x) * scale
        return y if shift is None else y + shift


@pytest.fixture(scope="module")
def compiled():
    x = torch.randn(4, 8)
    return kiln.compile(Scaled(), arg_inputs=(x, 3.0), kwarg_inputs={"shift": 0.5}, min_block_size=1), x


def test_the_traced_call_runs_and_agrees(compiled):
    c, x = compiled
    other = torch.randn(4, 8)
    torch.testing.assert_close(c(other, 3.0, shift=0.5), Scaled()(other, 3.0, shift=0.5))


@pytest.mark.parametrize("call, named", [
    (lambda c, x: c(x, 5.0, shift=0.5), r"args\[1\] is 5.0 and was 3.0"),
    (lambda c, x: c(x, 3, shift=0.5), r"args\[1\] is 3 and was 3.0"),          # int for float changes promotion
    (lambda c, x: c(x, 3.0, shift=1.5), r"kwargs\['shift'\] is 1.5 and was 0.5"),
    (lambda c, x: c(x, 3.0, shift=None), r"kwargs\['shift'\] is None and was 0.5"),
    (lambda c, x: c(x.double(), 3.0, shift=0.5), r"args\[0\] is torch.float64 and was torch.float32"),
    (lambda c, x: c(3.0, 3.0, shift=0.5), r"args\[0\] was a tensor .* and is a float now"),
])
def test_a_baked_in_value_that_changed_is_an_error_naming_it(compiled, call, named):
    c, x = compiled
    with pytest.raises(kiln.InputError, match=named):
        call(c, x)


@pytest.mark.parametrize("call", [
    lambda c, x: c(x, shift=0.5),              # the default instead of the traced 3.0
    lambda c, x: c(x, 3.0),                    # a keyword left out
    lambda c, x: c(x, 3.0, 1, shift=0.5),      # an extra argument
])
def test_a_call_of_another_structure_is_an_error(compiled, call):
    c, x = compiled
    with pytest.raises(kiln.InputError, match=r"compiled for arguments shaped like \(args\[0\]: tensor, args\[1\]=3.0, "
                                              r"kwargs\['shift'\]=0.5\)"):
        call(c, x)


def test_copies_keep_the_checks(compiled):
    c, x = compiled
    d = copy.deepcopy(c)
    torch.testing.assert_close(d(x, 3.0, shift=0.5), c(x, 3.0, shift=0.5))
    with pytest.raises(kiln.InputError, match=r"args\[1\] is 4.0"):
        d(x, 4.0, shift=0.5)
