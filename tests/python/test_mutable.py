"""kiln.MutableCompiledModule follows its module: new weights are refitted, inputs the compiled
program does not take compile it again, and it is used like the module."""
import pytest
import torch

import kiln


def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()


def test_follows_weight_changes_by_refit():
    model = make()
    mutable = kiln.MutableCompiledModule(model, min_block_size=1)
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.allclose(mutable(x), model(x), atol=1e-5)
        assert (mutable.compiles, mutable.refits) == (1, 0)
        mutable(x)
        assert (mutable.compiles, mutable.refits) == (1, 0)  # nothing changed: nothing done

        model[0].weight.mul_(2)                 # in place, as an optimizer step
        assert torch.allclose(mutable(x), model(x), atol=1e-5)
        assert (mutable.compiles, mutable.refits) == (1, 1)

        other = make()
        for p in other.parameters():
            p.add_(1)
        mutable.load_state_dict(other.state_dict())  # through the wrapper
        assert torch.allclose(mutable(x), other(x), atol=1e-5)
        assert (mutable.compiles, mutable.refits) == (1, 2)

        model[2] = torch.nn.Linear(16, 4)       # a replaced layer of the same shape
        assert torch.allclose(mutable(x), model(x), atol=1e-5)
        assert (mutable.compiles, mutable.refits) == (1, 3)


def test_compiles_again_for_what_the_program_does_not_take():
    model = make()
    mutable = kiln.MutableCompiledModule(model, min_block_size=1)
    with torch.no_grad():
        mutable(torch.randn(3, 8))
        y = mutable(torch.randn(5, 8))          # another batch size
        assert y.shape == (5, 4) and mutable.compiles == 2
        model[2] = torch.nn.Linear(16, 6)       # another output width: refit cannot, so a compile
        x = torch.randn(5, 8)
        assert torch.allclose(mutable(x), model(x), atol=1e-5)
        assert mutable.compiles == 3


def test_dynamic_ranges_are_kept():
    model = make()
    mutable = kiln.MutableCompiledModule(model, min_block_size=1,
                                         arg_inputs=(kiln.Input(min_shape=(1, 8), opt_shape=(4, 8), max_shape=(16, 8)),))
    with torch.no_grad():
        for b in (1, 7, 16):
            x = torch.randn(b, 8)
            assert torch.allclose(mutable(x), model(x), atol=1e-5)
        assert mutable.compiles == 1
        mutable(torch.randn(20, 8))             # beyond the range
        assert mutable.compiles == 2


def test_acts_like_the_module():
    model = make()
    mutable = kiln.MutableCompiledModule(model, min_block_size=1)
    assert mutable.state_dict().keys() == model.state_dict().keys()
    assert getattr(mutable, "0") is model[0]    # attributes and submodules are the module's
    assert mutable.original is model
    with pytest.raises(TypeError, match="not_an_option"):
        kiln.MutableCompiledModule(model, not_an_option=1)
    with pytest.raises(TypeError, match="nn.Module"):
        kiln.MutableCompiledModule(lambda x: x)
