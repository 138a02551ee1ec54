"""Shared helpers for the normkit unit tests: tolerances, seeded inputs, torch twins of modules.

Tolerances: float32 atol 1e-6 and float64 atol 1e-10, both scaled by the size of the reference
(max(1, max|reference|)), so a weight gradient that sums hundreds of products is held to the same
*relative* standard as an output of order 1.
"""
import os

import pytest
import torch
from hypothesis import settings

# Two xdist workers on two cores: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)

# Property tests: modest and deterministic in CI; NORMKIT_HYPOTHESIS=thorough explores at random.
settings.register_profile("normkit", max_examples=30, deadline=None, derandomize=True,
                          print_blob=True)
settings.register_profile("thorough", max_examples=500, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("NORMKIT_HYPOTHESIS", "normkit"))

DTYPES = [torch.float32, torch.float64]
ATOL = {torch.float32: 1e-6, torch.float64: 1e-10}


def assert_close(actual, expected, factor=1.0, scale=0.0):
    """Scale-aware comparison: |actual − expected| ≤ ATOL[dtype]·factor·max(1, max|expected|, scale).

    `scale`: the size of the intermediate quantities whose rounding reaches the result, when it
    exceeds the result's (normalizing a group of nearly equal values: max|x|/std).
    """
    assert actual is not None and expected is not None, "a gradient is missing"
    expected = expected.detach()
    scale = max(1.0, scale, expected.abs().max().item() if expected.numel() else 1.0)
    torch.testing.assert_close(actual.detach(), expected, rtol=0,
                               atol=ATOL[expected.dtype] * factor * scale)


def rstd_max(groups, eps=1e-5):
    """max 1/√(var + eps) over the rows of `groups`: how much normalization amplifies rounding.

    A backward pass multiplies by 1/std, so float32 gradients of both implementations carry
    rounding errors of about eps_float32 · max|dy·γ| / std; tolerances for gradients scale with it.
    """
    g = groups.detach().double()
    return max(1.0, (g.var(1, unbiased=False) + eps).rsqrt().max().item())


def randn(*shape, dtype=torch.float64, scale=1.0, offset=0.0, seed=None):
    """Seeded normal input (its own generator: independent of the global RNG)."""
    g = torch.Generator().manual_seed(seed if seed is not None else hash(shape) % 2**31)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype)


def leaf(t):
    """A fresh leaf copy that requires grad (None stays None)."""
    return None if t is None else t.detach().clone().requires_grad_(True)


def grads_of(out, upstream, *tensors):
    """Backpropagate `upstream` through `out`; the gradients of `tensors` (None entries skipped)."""
    live = [t for t in tensors if t is not None]
    gs = torch.autograd.grad(out, live, upstream, allow_unused=True)
    it = iter(gs)
    return [next(it) if t is not None else None for t in tensors]


def assert_checker_verdicts(checker, right, wrong, capsys):
    """An exercise checker prints ✓ for a right answer and ✗ "expected …, got …" for a wrong one,
    and its result is truthy/falsy accordingly and silent as a notebook cell's last value."""
    assert checker(right)
    assert capsys.readouterr().out.startswith("✓ ")
    result = checker(wrong)
    assert not result
    out = capsys.readouterr().out
    assert out.startswith("✗ ") and "expected" in out and "got" in out
    assert result._ipython_display_() is None



def assert_stub_is_a_cross(checker, capsys):
    """The student's cell is the answer key's with `...  # your code here`: a function that returns
    None gets the checker's ✗ "… got None" line and a falsy result, not a report of an exception."""
    assert not checker(lambda *args: None)
    out = capsys.readouterr().out
    assert out.startswith("✗ ") and "got None" in out and "raised" not in out

@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state (dropout/noise tests reseed anyway)."""
    torch.manual_seed(0)
    yield
