"""normkit: every regularization and normalization technique of the course, from tensor primitives.

    import normkit as nk
    nk.BatchNorm2d(16)            # modules with torch.nn's constructors and state_dict keys
    nk.functional.layer_norm(...) # torch.nn.functional's signatures
    nk.manual.batch_norm_backward # the hand-derived backward, no autograd

The lessons (one module per notebook) are imported on their own, not with the package:
    from normkit.lessons import l05_normalization_axes as lesson
"""
import torch

# Tiny CPU trainings hit denormal floats and run 50–200× slower without this.
torch.set_flush_denormal(True)
# The course's tensors are tiny: one thread is faster than two that wait on each other, and
# several notebooks or test workers on a 2-core laptop do not oversubscribe it. (Measured: a
# small training step took 1.6 ms on one thread and up to 115 ms on two under load.)
torch.set_num_threads(1)

from . import check, data, distributed, functional, manual, models, optim, regularize, train, validate  # noqa: E402
from .distributed import SyncBatchNorm, convert_sync_batchnorm  # noqa: E402
from .layers import (BatchNorm1d, BatchNorm2d, BatchNorm3d, Dropout, GaussianNoise, GroupNorm,  # noqa: E402
                     InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LayerNorm, RMSNorm, remove_weight_norm,
                     weight_norm)


def show(obj):
    """Display the source of a normkit function or class (in a notebook)."""
    from .explore import show as _show
    return _show(obj)


__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
           "LayerNorm", "GroupNorm", "RMSNorm",
           "Dropout", "GaussianNoise", "SyncBatchNorm", "weight_norm", "remove_weight_norm",
           "convert_sync_batchnorm", "functional", "manual", "regularize", "optim", "check", "data",
           "train", "models", "distributed", "validate", "show"]
__version__ = "0.1.0"
