"""nn.Module wrappers with torch.nn's constructors, parameter/buffer names and state_dict keys.

As in torch, one base class (`_NormBase`) owns the affine parameters and the running statistics;
the subclasses only say which function to call and which input shapes they accept. A state_dict
saved from torch.nn.BatchNorm2d loads into normkit.BatchNorm2d and back.
"""
import warnings

import torch
from torch import nn

from . import functional
from .validate import check_groups, check_int, check_range

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
           "LayerNorm", "GroupNorm", "RMSNorm",
           "Dropout", "GaussianNoise", "weight_norm", "remove_weight_norm"]


class _NormBase(nn.Module):
    """Per-channel affine parameters (weight γ, bias β) and running statistics."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        check_range("eps", eps)
        if momentum is not None:
            check_range("momentum", momentum, 0.0, 1.0)
        check_int("num_features", num_features, what="the channel count")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        kw = {"device": device, "dtype": dtype}
        _affine_parameters(self, num_features, affine, bias, kw)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **kw))
            self.register_buffer("running_var", torch.ones(num_features, **kw))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        _reset_affine(self)

    def _check_input(self, input):
        if not isinstance(input, torch.Tensor) or input.dim() not in self._ndims:
            shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
            raise ValueError(f"input: {type(self).__name__} expected {self._shapes}, got {shape}")
        if input.shape[1] != self.num_features:
            raise ValueError(f"input: expected {self.num_features} channels (num_features) in dim 1, "
                             f"got shape {tuple(input.shape)}")

    def _momentum(self):
        """Count this batch and return the averaging factor: momentum, or 1/n for momentum=None."""
        if not (self.training and self.track_running_stats):
            return 0.0
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def extra_repr(self):       # torch's text: bias= says whether β exists (False without affine)
        return ("{num_features}, eps={eps}, momentum={momentum}, affine={affine}, bias={use_bias}, "
                "track_running_stats={track_running_stats}".format(**self.__dict__, use_bias=self.bias is not None))


class _BatchNorm(_NormBase):
    def forward(self, input):
        self._check_input(input)
        momentum = self._momentum()
        # Batch statistics in training, and also in eval when no running statistics are kept.
        use_batch = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return functional.batch_norm(input, self.running_mean if track else None,
                            self.running_var if track else None, self.weight, self.bias,
                            use_batch, momentum, self.eps)


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L)."""
    _ndims, _shapes = (2, 3), "(N, C) or (N, C, L) input"


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W): one mean and variance per channel."""
    _ndims, _shapes = (4,), "(N, C, H, W) input"


class BatchNorm3d(_BatchNorm):
    """Batch norm over (N, C, D, H, W): one mean and variance per channel."""
    _ndims, _shapes = (5,), "(N, C, D, H, W) input"


class _InstanceNorm(_NormBase):
    """Instance norm; torch's defaults: no affine, no running statistics. Unbatched input (no N)
    is normalized as a batch of one, as torch does."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False,
                 device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def forward(self, input):
        if not isinstance(input, torch.Tensor) or input.dim() not in self._ndims:
            shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
            raise ValueError(f"input: {type(self).__name__} expected {self._shapes}, got {shape}")
        unbatched = input.dim() == self._ndims[0]
        x = input.unsqueeze(0) if unbatched else input
        if x.shape[1] != self.num_features:
            if self.affine:
                raise ValueError(f"input: expected {self.num_features} channels (num_features) in dim "
                                 f"{int(not unbatched)}, got shape {tuple(input.shape)}")
            # torch only warns: without γ, β the channel count is not used (running stats aside)
            warnings.warn(f"input's size at dim={int(not unbatched)} does not match num_features "
                          f"({self.num_features}), got shape {tuple(input.shape)}", stacklevel=2)
        # As torch.nn.InstanceNorm*d: num_batches_tracked is never counted, momentum=None means 0
        # (the running statistics stay put) rather than a cumulative average.
        momentum = (self.momentum or 0.0) if self.training else 0.0
        use_input_stats = self.training or not self.track_running_stats
        y = functional.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                     use_input_stats, momentum, self.eps)
        return y.squeeze(0) if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    """Instance norm over (N, C, L) or unbatched (C, L)."""
    _ndims, _shapes = (2, 3), "(N, C, L) or (C, L) input"


class InstanceNorm2d(_InstanceNorm):
    """Instance norm over (N, C, H, W) or unbatched (C, H, W)."""
    _ndims, _shapes = (3, 4), "(N, C, H, W) or (C, H, W) input"


class InstanceNorm3d(_InstanceNorm):
    """Instance norm over (N, C, D, H, W) or unbatched (C, D, H, W)."""
    _ndims, _shapes = (4, 5), "(N, C, D, H, W) or (C, D, H, W) input"


class LayerNorm(nn.Module):
    """Layer norm over the trailing `normalized_shape` dims of each sample."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        check_range("eps", eps)
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        _affine_parameters(self, shape, elementwise_affine, bias, {"device": device, "dtype": dtype})

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return functional.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(nn.Module):
    """RMS norm: layer norm without the mean and without β (Zhang & Sennrich 2019)."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        if eps is not None:
            check_range("eps", eps)
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        _affine_parameters(self, shape, elementwise_affine, False, {"device": device, "dtype": dtype})

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        return functional.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(nn.Module):
    """Group norm: channels in `num_groups` groups, statistics per sample and group (Wu & He 2018)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        check_groups(num_groups, num_channels)
        check_range("eps", eps)
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        _affine_parameters(self, num_channels, affine, bias, {"device": device, "dtype": dtype})

    def reset_parameters(self):
        _reset_affine(self)

    def forward(self, input):
        if isinstance(input, torch.Tensor) and input.dim() >= 2 and input.shape[1] != self.num_channels:
            raise ValueError(f"input: expected {self.num_channels} channels (num_channels) in dim 1, "
                             f"got shape {tuple(input.shape)}")
        return functional.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


def _affine_parameters(module, shape, affine, bias, kw):
    """γ = 1 (and β = 0 unless bias=False, torch 2.13's γ-without-β) as module.weight/.bias."""
    module.register_parameter("weight", nn.Parameter(torch.ones(shape, **kw)) if affine else None)
    module.register_parameter("bias", nn.Parameter(torch.zeros(shape, **kw)) if affine and bias else None)


def _reset_affine(module):
    with torch.no_grad():
        if module.weight is not None:
            module.weight.fill_(1)
        if module.bias is not None:
            module.bias.zero_()


class Dropout(nn.Module):
    """Inverted dropout: p is the probability of *dropping* a unit (Keras' rate, too)."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        check_range("p", p, 0.0, 1.0)
        self.p, self.inplace = p, inplace

    def forward(self, input):
        out = functional.dropout(input, self.p, self.training)
        return input.copy_(out) if self.inplace and out is not input else out

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class GaussianNoise(nn.Module):
    """Adds N(0, sigma²) noise in training; the identity in eval."""

    def __init__(self, sigma):
        super().__init__()
        check_range("sigma", sigma)
        self.sigma = sigma

    def forward(self, input):
        return functional.gaussian_noise(input, self.sigma, self.training)

    def extra_repr(self):
        return f"sigma={self.sigma}"


# ----------------------------------------------------------------------------- weight norm
def _norm_except(v, dim):
    """‖v‖ over every dim except `dim` (over all of v when dim is None), kept for broadcasting."""
    if dim is None:
        return v.pow(2).sum().sqrt()
    dims = [d for d in range(v.dim()) if d != dim % v.dim()]
    return v.pow(2).sum(dims, keepdim=True).sqrt()


def weight_norm(module, name="weight", dim=0):
    """Reparametrize module.<name> as g · v/‖v‖ (Salimans & Kingma 2016), in place.

    Parameters `<name>_g` (the length, one per output unit for dim=0) and `<name>_v` (the
    direction) replace `<name>`, which is recomputed before every forward call.
    Returns the module, like torch.nn.utils.parametrizations.weight_norm.
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, nn.Parameter):
        raise ValueError(f"name={name!r}: expected the name of a parameter of {type(module).__name__}")
    if dim is not None and not -weight.dim() <= dim < weight.dim():
        raise ValueError(f"dim={dim!r}: expected None or a dim of the {weight.dim()}-D {name}")
    if dim == -1:       # torch's convention: dim=-1 (like None) is the norm over the whole tensor
        dim = None
    del module._parameters[name]
    module.register_parameter(name + "_g", nn.Parameter(_norm_except(weight.detach(), dim).clone()))
    module.register_parameter(name + "_v", nn.Parameter(weight.detach().clone()))

    def compute(mod, _inputs=None):
        v, g = getattr(mod, name + "_v"), getattr(mod, name + "_g")
        setattr(mod, name, v * (g / _norm_except(v, dim)))

    compute(module)
    module._weight_norm_hook = (name, dim, module.register_forward_pre_hook(compute))
    return module


def remove_weight_norm(module):
    """Fold g · v/‖v‖ back into a plain parameter and remove the hook."""
    name, dim, hook = module._weight_norm_hook
    hook.remove()
    v, g = getattr(module, name + "_v"), getattr(module, name + "_g")
    weight = (v * (g / _norm_except(v, dim))).detach()   # fresh: g, v may have changed since forward
    delattr(module, name)
    del module._parameters[name + "_g"], module._parameters[name + "_v"]
    module.register_parameter(name, nn.Parameter(weight))
    del module._weight_norm_hook
    return module
