"""One-line comparisons, and the runner every exercise checker uses.

The checkers themselves live beside the experiments of their notebook, in `normkit.lessons`
(`check_…`). They may use torch's own layers: there they are the reference answer, not the
implementation.
"""
import torch

__all__ = ["compare", "Comparison", "ROUNDING_BOUND"]

# What "equal up to rounding" allows: float64 rounding of O(1) results is ~1e-16 and float32's
# ~1e-7, on every CPU; these bounds sit orders of magnitude above that and far below any real error.
ROUNDING_BOUND = {torch.float64: 1e-12, torch.float32: 1e-6}


class Comparison:
    """The result of `compare`: truthy if close; `.max_abs_diff`. Silent as a cell's last value."""

    def __init__(self, ok, max_abs_diff):
        self.ok, self.max_abs_diff = ok, max_abs_diff

    def __bool__(self):
        return self.ok

    def _ipython_display_(self):
        """compare() already printed its line."""


def compare(name, ours, reference, atol=None):
    """Print one line, `name: equal up to rounding (≤ 1e-12) | close (≤ …) | DIFFERENT (…)`.

    atol defaults to 1e-6 for float32 and 1e-10 for float64, the tolerances the tests use.
    Agreement is printed as a bound, never as the digits of the difference: rounding differs
    between CPUs and torch's kernels (an "exact" 0 on one machine is 9e-16 on another), while the
    bound holds on all of them. Returns a `Comparison` (truthy when within atol, `.max_abs_diff`)
    that shows nothing as a cell's last value.
    """
    ours, reference = torch.as_tensor(ours).detach(), torch.as_tensor(reference).detach()
    if ours.shape != reference.shape:
        print(f"{name}: DIFFERENT shapes {tuple(ours.shape)} vs {tuple(reference.shape)}")
        return Comparison(False, float("inf"))
    float64 = torch.float64 in (ours.dtype, reference.dtype)
    if atol is None:
        atol = 1e-10 if float64 else 1e-6
    rounding = min(atol, ROUNDING_BOUND[torch.float64 if float64 else torch.float32])
    diff = (ours.double() - reference.double()).abs().max().item() if ours.numel() else 0.0
    if diff <= rounding:
        verdict = f"equal up to rounding (max abs diff ≤ {rounding:.0e})"
    elif diff <= atol:
        verdict = f"close (max abs diff ≤ {atol:.0e})"
    else:
        verdict = f"DIFFERENT (max abs diff {diff:.2e} > {atol:.0e})"
    print(f"{name}: {verdict}")
    return Comparison(diff <= atol, diff)


# ----------------------------------------------------------------------------- the checker runner
# An exercise checker (in the lesson module of its notebook) calls the student's function on seeded
# inputs, compares with the reference answer, prints one line "✓ …" or "✗ … expected …, got …" and
# returns a silent Comparison. A ✗ before the student has written anything is expected.
__all__ += ["passed", "failed", "raised", "head", "exercise", "exercise_number", "each", "joined", "bn_inputs"]


def passed(name, message, diff=0.0):
    """Print "✓ name: message"; return a truthy Comparison."""
    print(f"✓ {name}: {message}")
    return Comparison(True, diff)


def failed(name, message, diff=float("inf")):
    """Print "✗ name: message"; return a falsy Comparison."""
    print(f"✗ {name}: {message}")
    return Comparison(False, diff)


def raised(name, error):
    """The ✗ line for a student's function that raised `error`."""
    return failed(name, f"your function raised {type(error).__name__}: {error}")


def head(t, k=4):
    """The first k values of a tensor, for a ✗ line: "[0.1234, 0.5678, …]"."""
    values = ", ".join(f"{v:.4f}" for v in t.detach().double().flatten()[:k].tolist())
    return f"[{values}{', …' if t.numel() > k else ''}]"


def exercise(name, fn, args, expected, what, atol=1e-8):
    """Run fn(*args) and report it against the tensor `expected` (what: the reference, for the ✓ line)."""
    try:
        got = fn(*args)
    except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
        return raised(name, e)
    got = torch.as_tensor(got).detach().to(expected.dtype) if got is not None else None
    if got is None or got.shape != expected.shape:
        shape = None if got is None else tuple(got.shape)
        return failed(name, f"expected a tensor of shape {tuple(expected.shape)}, got {shape}")
    diff = (got - expected).abs().max().item()
    if diff <= atol:
        return passed(name, f"matches {what} (max abs diff ≤ {atol:.0e})", diff)
    return failed(name, f"expected {head(expected)}, got {head(got)}", diff)


def exercise_number(name, fn, args, expected, what, atol=1e-9):
    """Like `exercise`, for a function that returns one number."""
    try:
        got = fn(*args)
        value = None if got is None else float(got)
    except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
        return raised(name, e)
    if value is None:
        return failed(name, f"expected {expected:.4f}, got None")
    diff = abs(value - expected)
    if diff <= atol:
        return passed(name, f"{value:.4f} matches {what}", diff)
    return failed(name, f"expected {expected:.4f}, got {value:.4f}", diff)


def each(fn):
    """fn(value) -> number, as fn(values) -> float64 tensor (None if fn returns None for any)."""
    def all_of(values):
        out = [fn(v) for v in values]
        return None if any(o is None for o in out) else torch.tensor([float(o) for o in out],
                                                                      dtype=torch.float64)
    return all_of


def joined(fn, dtype=torch.float64):
    """fn(*args) -> several tensors or numbers, as one returning them flattened into one tensor
    (None if fn returns None or any part is None), for `exercise`."""
    def both(*args):
        out = fn(*args)
        if out is None or any(t is None for t in out):
            return None
        return torch.cat([torch.as_tensor(t, dtype=dtype).flatten() for t in out])
    return both


def bn_inputs(seed, n=16, c=5):
    """Seeded float64 (x (n, c) with mean ≈ 2 and std ≈ 3, γ (c,) in [0.5, 1.5), β (c,)) for batch-norm exercises."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * 3 + 2
    gamma = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(c, generator=g, dtype=torch.float64)
    return x, gamma, beta
