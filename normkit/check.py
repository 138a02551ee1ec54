"""One-line comparisons and the exercise checkers the notebooks point to.

Checkers may use torch's own layers: here they are the reference answer, not the implementation.
"""
import torch

__all__ = ["compare", "Comparison"]


class Comparison:
    """The result of `compare`: truthy if close; `.max_abs_diff`. Silent as a cell's last value."""

    def __init__(self, ok, max_abs_diff):
        self.ok, self.max_abs_diff = ok, max_abs_diff

    def __bool__(self):
        return self.ok

    def _ipython_display_(self):
        """compare() already printed its line."""


def compare(name, ours, reference, atol=None):
    """Print one line, `name: exact | close (max abs diff …) | DIFFERENT (…)`.

    atol defaults to 1e-6 for float32 and 1e-10 for float64, the tolerances the tests use.
    Returns a `Comparison` (truthy when within atol) that shows nothing as a cell's last value.
    """
    ours, reference = torch.as_tensor(ours).detach(), torch.as_tensor(reference).detach()
    if ours.shape != reference.shape:
        print(f"{name}: DIFFERENT shapes {tuple(ours.shape)} vs {tuple(reference.shape)}")
        return Comparison(False, float("inf"))
    if atol is None:
        atol = 1e-10 if torch.float64 in (ours.dtype, reference.dtype) else 1e-6
    diff = (ours.double() - reference.double()).abs().max().item() if ours.numel() else 0.0
    if diff == 0:
        verdict = "exact"
    elif diff <= atol:
        verdict = f"close (max abs diff {diff:.0e})"
    else:
        verdict = f"DIFFERENT (max abs diff {diff:.2e} > {atol:.0e})"
    print(f"{name}: {verdict}")
    return Comparison(diff <= atol, diff)
