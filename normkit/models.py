"""The small models the notebooks train: an MLP and a CNN for 8×8 digits, with a norm slot."""
from torch import nn

from . import layers

__all__ = ["mlp", "cnn"]

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _norm_1d(norm, width):
    if norm is None:
        return None
    if norm == "batch":
        return layers.BatchNorm1d(width)
    if norm == "layer":
        return layers.LayerNorm(width)
    if callable(norm):
        return norm(width)
    raise ValueError(f"norm={norm!r}: expected None, 'batch', 'layer' or a callable width -> module")


def mlp(sizes, activation="relu", norm=None, dropout=0.0, norm_after_activation=False):
    """Linear layers of the given sizes, e.g. mlp([64, 100, 10]).

    Hidden layers are Linear → [norm] → activation → [dropout] (Ioffe & Szegedy's placement);
    norm_after_activation=True puts the norm after the activation instead (notebook 04).
    With a norm layer the Linear has no bias: the norm's β replaces it (notebook 03).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation={activation!r}: expected one of {sorted(_ACTIVATIONS)}")
    if len(sizes) < 2:
        raise ValueError(f"sizes={sizes!r}: expected at least [inputs, outputs]")
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        norm_layer = None if last else _norm_1d(norm, b)
        mods.append(nn.Linear(a, b, bias=norm_layer is None or norm_after_activation))
        if last:
            break
        block = [norm_layer, _ACTIVATIONS[activation]()]
        mods += [m for m in (block[::-1] if norm_after_activation else block) if m is not None]
        if dropout:
            mods.append(layers.Dropout(dropout))
    return nn.Sequential(*mods)


def cnn(norm="batch", channels=16, groups=4, classes=10):
    """Conv(1→c) → norm → ReLU → Conv(c→2c, stride 2) → norm → ReLU → pool → Linear, for 1×8×8 input.

    norm: None, 'batch', 'group' (with `groups`), 'layer' (group norm with one group) or 'instance'.
    """
    def make(c):
        return {None: None,
                "batch": lambda: layers.BatchNorm2d(c),
                "group": lambda: layers.GroupNorm(groups, c),
                "layer": lambda: layers.GroupNorm(1, c),
                "instance": lambda: layers.GroupNorm(c, c, eps=1e-5)}[norm]
    if norm not in (None, "batch", "group", "layer", "instance"):
        raise ValueError(f"norm={norm!r}: expected None, 'batch', 'group', 'layer' or 'instance'")
    mods = []
    for c_in, c_out, stride in ((1, channels, 1), (channels, 2 * channels, 2)):
        mods.append(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm is None))
        if norm is not None:
            mods.append(make(c_out)())
        mods.append(nn.ReLU())
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * channels, classes)]
    return nn.Sequential(*mods)
