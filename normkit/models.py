"""The small models the notebooks train: an MLP and a CNN for 8×8 digits, with a norm slot, and
`Stack`: K MLPs of one layout trained as one batched network (many seeds or settings at once)."""
import copy

import torch
from torch import nn

from . import layers

__all__ = ["mlp", "cnn", "Stack"]

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


class _StackedLinear(nn.Module):
    """K Linear layers of one shape as one batched product: (N, K, in) -> (N, K, out)."""

    def __init__(self, linears):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))   # (K, out, in)
        self.bias = (nn.Parameter(torch.stack([m.bias.detach() for m in linears]))      # (K, out)
                     if linears[0].bias is not None else None)

    def forward(self, x):
        """x (N, in), the same for every member, or (N, K, in) -> (N, K, out)."""
        k, out, _ = self.weight.shape
        if x.dim() == 2:                                          # one product for all members
            y = (x @ self.weight.reshape(k * out, -1).T).view(len(x), k, out)   # (N, K·out) -> (N, K, out)
        else:
            y = torch.einsum("nki,koi->nko", x, self.weight)      # (N, K, out)
        return y if self.bias is None else y + self.bias          # bias (K, out) broadcasts over N


def _stacked_norm(norms):
    """One batch norm over the K·C features of K BatchNorm1d(C) (a copy of the first, of any
    BatchNorm1d subclass, resized): batch norm treats every feature on its own, so each member keeps
    its own statistics, γ and β; feature k·C + c is member k's feature c."""
    first = norms[0]
    bn = copy.deepcopy(first)
    bn.num_features = len(norms) * first.num_features
    with torch.no_grad():
        for name in ("weight", "bias"):
            if getattr(first, name) is not None:
                setattr(bn, name, nn.Parameter(torch.cat([getattr(m, name).detach() for m in norms])))   # (K·C,)
        for name in ("running_mean", "running_var"):
            if getattr(first, name) is not None:
                setattr(bn, name, torch.cat([getattr(m, name) for m in norms]))                       # (K·C,)
    return bn


_ACTIVATION_TYPES = tuple(_ACTIVATIONS.values())
_ELEMENTWISE = (nn.ReLU, nn.Sigmoid, nn.Tanh, layers.Dropout, nn.Dropout, layers.GaussianNoise)


class Stack(nn.Module):
    """K networks of one `mlp` layout trained as one: one forward pass computes every member.

    nets: K `mlp(...)` Sequentials with the same layers and sizes (Linear, BatchNorm1d or a subclass,
    ReLU/Sigmoid/Tanh, Dropout, GaussianNoise), each with its own weights. The stack copies them:
    each Linear becomes one batched product over the members (weight (K, out, in), bias (K, out));
    each BatchNorm1d(C) one BatchNorm1d over K·C features, so every member keeps its own batch
    statistics, running statistics, γ and β; activations, dropout and noise act elementwise, so
    every member gets its own masks and noise.

    forward(x): x (N, in), the same examples for every member, or (N, K, in), member k's examples in
    [:, k]; returns logits (N, classes, K), member k's in [:, :, k]: the layout of
    `train.stacked_cross_entropy` and of `train.fit`'s evaluation. With that loss each member's
    gradient, and so its optimizer step, is the one it gets trained alone (up to rounding).
    `member(k)` gives member k back as a lone `mlp` with its current weights and running statistics.
    """

    def __init__(self, nets):
        super().__init__()
        nets = list(nets)
        if not nets:
            raise ValueError("nets: expected at least one network, got none")
        layout = [(type(m), m.extra_repr(), tuple(p.shape for p in m.parameters())) for m in nets[0]]
        for i, net in enumerate(nets):
            if [(type(m), m.extra_repr(), tuple(p.shape for p in m.parameters())) for m in net] != layout:
                raise ValueError(f"nets[{i}]: expected the layout of nets[0], {nets[0]}, got {net}")
        self.k = len(nets)
        self._template = [copy.deepcopy(nets[0])]       # in a list: not a submodule, not trained
        self.layers = nn.ModuleList()
        for mods in zip(*nets):
            if isinstance(mods[0], nn.Linear):
                self.layers.append(_StackedLinear(mods))
            elif isinstance(mods[0], (layers.BatchNorm1d, nn.BatchNorm1d)):
                self.layers.append(_stacked_norm(mods))
            elif isinstance(mods[0], _ELEMENTWISE):
                self.layers.append(copy.deepcopy(mods[0]))
            else:
                raise ValueError(f"nets: cannot stack {mods[0]}: expected Linear, BatchNorm1d, an activation, "
                                 "Dropout or GaussianNoise")

    def __len__(self):
        return self.k

    def forward(self, x, activations=None):
        """Logits (N, classes, K); the output (N, K, width) of every activation (ReLU, Sigmoid, Tanh)
        is appended to `activations` (a list) when given."""
        if x.dim() != 2 and (x.dim() != 3 or x.shape[1] != self.k):
            raise ValueError(f"x: expected (N, in) or (N, {self.k}, in), got shape {tuple(x.shape)}")
        if x.dim() == 2 and not isinstance(self.layers[0], _StackedLinear):
            x = x.unsqueeze(1).expand(-1, self.k, -1)       # (N, in) -> (N, K, in): the same for every member
        for layer in self.layers:                           # (N, in) reaches a Linear: one product for all
            if isinstance(layer, _StackedLinear):
                x = layer(x)                                            # (N, K, out)
                continue
            if isinstance(layer, (layers.BatchNorm1d, nn.BatchNorm1d)):
                x = layer(x.reshape(len(x), -1)).view_as(x)             # (N, K·C) normed -> (N, K, C)
            else:
                x = layer(x)                                            # elementwise: (N, K, C)
                if activations is not None and isinstance(layer, _ACTIVATION_TYPES):
                    activations.append(x)
        return x.transpose(1, 2)                                        # (N, K, classes) -> (N, classes, K)

    @torch.no_grad()
    def member(self, k, out=None):
        """Member k as a lone `mlp` (a new Sequential) with its current weights, γ, β and running
        statistics, in the stack's mode (train or eval). out: a network of the members' layout to
        copy them into instead (e.g. the one member k was built from); it keeps its mode."""
        if not -self.k <= k < self.k:
            raise ValueError(f"k={k}: expected a member index in [0, {self.k})")
        k = k % self.k
        net = copy.deepcopy(self._template[0]).train(self.training) if out is None else out
        for m, s in zip(net, self.layers, strict=True):
            if isinstance(s, _StackedLinear):
                m.weight.copy_(s.weight[k])                              # (out, in)
                if m.bias is not None:
                    m.bias.copy_(s.bias[k])                              # (out,)
            elif isinstance(m, (layers.BatchNorm1d, nn.BatchNorm1d)):
                part = slice(k * m.num_features, (k + 1) * m.num_features)   # member k's C features
                for name in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(m, name) is not None:
                        getattr(m, name).copy_(getattr(s, name)[part])
                if m.num_batches_tracked is not None:
                    m.num_batches_tracked.copy_(s.num_batches_tracked)
            else:
                m.load_state_dict(s.state_dict())
        return net
