"""Normalization, dropout and noise as pure functions with the torch.nn.functional signatures.

Every normalization here is one idea: standardize over some axes, then scale and shift,

    x̂ = (x − mean) / √(var + eps),     y = γ·x̂ + β,

and the methods differ only in *which axes* the statistics are taken over (notebook 05):
batch norm over (N, H, W) per channel, layer norm over the trailing dims of each sample,
group norm over (C/G, H, W) per sample and group, instance norm over (H, W) per sample and
channel, RMS norm like layer norm without the mean. `_Normalize` does the work for all of them
with the closed-form backward derived in `normkit.manual` (no autograd graph of primitives: that
measured 6–9× slower than torch's fused kernels).
"""
import functools
from typing import NamedTuple

import torch

from .validate import check_groups, check_ndim, check_numel, check_range

__all__ = ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
           "dropout", "gaussian_noise"]


# ----------------------------------------------------------------------------- the engine
class _Normalize(torch.autograd.Function):
    """y = x̂·weight + bias, with x̂ standardized over `dims` (centered=False: RMS, no mean).

    `weight` and `bias` broadcast against x from the right, as in torch (same shape when both
    given): (1, C, 1) for batch norm, layer norm's (m,) as it is (no view, no backward node).
    Returns (y, x̂, rstd), and with stats=True also (mean, var): the biased statistics (keepdim)
    for the running averages (each extra output costs ~5 µs per call, so only batch and instance
    norm ask for them). x̂ and 1/std are there for backward; all but y are non-differentiable. Saves x̂ and 1/std (and x,
    which the caller holds anyway) as torch does: one new full-size tensor for backward.

    First order, backward (vector-Jacobian product) — the closed form derived in normkit.manual.
    With g = ∂L/∂x̂ = dy·γ and means over each statistics group,

        ∂L/∂x = (1/std)·P(g),   P(g) = g − mean(g) − x̂·mean(g·x̂)     (RMS norm: no mean(g) term)
        ∂L/∂γ = Σ dy·x̂,         ∂L/∂β = Σ dy                          (sums over γ's broadcast dims)

    Forward mode (Jacobian-vector product, `jvp`). The Jacobian of x ↦ x̂ is (1/std)·P with P
    symmetric (P = I − 11ᵀ/m − x̂x̂ᵀ/m on a group of m values), so the tangent of x̂ is the same
    projection applied to the tangent of x:

        ẏ = γ·(1/std)·P(ẋ) + γ̇·x̂ + β̇

    Second order (double backward: gradient penalties, Hessian-vector products, MAML). The first-
    order backward above is a smooth function of (dy, x, γ); under create_graph it is evaluated
    from x again with differentiable primitives (x̂ and 1/std recomputed, out-of-place ops), so
    autograd differentiates the closed form itself. No second formula to keep in sync, and the
    fast in-place first-order path is untouched when no graph is wanted. `jvp` likewise recomputes
    x̂ and 1/std from x, so reverse-over-forward (jacrev∘jacfwd) differentiates it, and the same
    holds for forward-over-reverse (torch.func.hessian = jacfwd∘jacrev, through backward).
    Forward-over-forward is the one order autograd.Function cannot give: torch evaluates a
    Function's jvp with forward AD switched off, so an outer jvp level would see the inner tangent
    as a constant (a silently zero second derivative). Under two nested jvp levels `apply` therefore
    bypasses the Function and runs the same forward as differentiable primitives (`_composite`).

    Checked in tests/test_double_backward.py against torch and finite differences: note that
    torch 2.13's own torch.func.hessian and jacfwd∘jacfwd of F.batch_norm, F.layer_norm and
    F.instance_norm are wrong in the blocks ∂²/∂γ∂x (functorch's batching rule for their
    backward, pytorch/functorch#534; nested jvp, pytorch/pytorch#196700); torch's double backward
    (torch.autograd.functional.hessian) is right, and is the reference there.
    """

    generate_vmap_rule = True          # torch.func.vmap / jacrev / hessian over normkit

    @classmethod
    def apply(cls, *args):
        # With setup_context defined, Function.apply binds default arguments through
        # inspect.signature on every call: measured ~80 µs, a quarter of a small layer's forward.
        # forward has no defaults and always gets all seven arguments, so outside torch.func
        # transforms go straight to the C++ apply (what Function.apply does after binding).
        if torch._C._are_functorch_transforms_active():
            if _nested_jvp():
                return _composite(*args)
            return super().apply(*args)
        return super(torch.autograd.Function, cls).apply(*torch._functorch.utils.unwrap_dead_wrappers(args))

    @staticmethod
    def forward(x, weight, bias, dims, eps, centered, stats):
        mean, var, rstd, xhat = _standardize(x, dims, eps, centered, inplace=True)
        return _outputs(_scale_shift(xhat, weight, bias), xhat, rstd, mean, var, stats)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, dims, eps, centered, stats = inputs
        _, xhat, rstd, *statistics = output
        param = weight if weight is not None else bias
        ctx.layout = _layout(x.dim(), None if param is None else param.shape, weight is not None, dims)
        ctx.dims, ctx.eps, ctx.centered, ctx.outputs = dims, eps, centered, len(output)
        ctx.save_for_backward(x, xhat, rstd, weight)
        ctx.save_for_forward(x, xhat, rstd, weight)
        ctx.mark_non_differentiable(xhat, rstd, *statistics)
        ctx.set_materialize_grads(False)    # no full-size zeros for the gradient of x̂ nobody uses

    @staticmethod
    def backward(ctx, dy, *_):          # no gradient flows into x̂, 1/std or the statistics
        x, xhat, rstd, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if dy is None:                  # y itself unused (only the statistics were)
            return None, None, None, None, None, None, None
        lay = ctx.layout
        if torch.is_grad_enabled():     # create_graph: the same formula, differentiable in (dy, x, γ)
            _, _, rstd, xhat = _standardize(x, ctx.dims, ctx.eps, ctx.centered, inplace=False)
            g = dy if weight is None else dy * weight
            dx = rstd * _project(g, xhat, ctx.dims, ctx.centered) if need_x else None
            dweight = _param_sum(dy * xhat, lay) if need_w else None
            dbias = _param_sum(dy, lay) if need_b else None
        else:
            dx, dweight, dbias = _fast_backward(ctx, dy, xhat, rstd, weight, need_x, need_w, need_b)
        return dx, dweight, dbias, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, dweight, dbias, *_):
        x, _, _, weight = ctx.saved_tensors
        _, _, rstd, xhat = _standardize(x, ctx.dims, ctx.eps, ctx.centered, inplace=False)
        dy = torch.zeros_like(xhat) if dx is None else rstd * _project(dx, xhat, ctx.dims, ctx.centered)
        if weight is not None:
            dy = dy * weight
        if dweight is not None:
            dy = dy + xhat * dweight
        if dbias is not None:
            dy = dy + dbias
        return (dy,) + (None,) * (ctx.outputs - 1)


def _nested_jvp():
    """Two or more torch.func jvp levels active (jacfwd∘jacfwd, jvp of jvp): see _Normalize."""
    levels = torch._C._functorch.get_interpreter_stack() or []
    return sum(level.key() == torch._C._functorch.TransformType.Jvp for level in levels) >= 2


def _composite(x, weight, bias, dims, eps, centered, stats):
    """_Normalize's forward as differentiable primitives (every derivative order, any mode)."""
    mean, var, rstd, xhat = _standardize(x, dims, eps, centered, inplace=False)
    y = xhat if weight is None else xhat * weight
    y = y if bias is None else y + bias
    detached = (None if t is None else t.detach() for t in (xhat, rstd, mean, var))
    return _outputs(y, *detached, stats)


def _outputs(y, xhat, rstd, mean, var, stats):
    if not stats:
        return y, xhat, rstd
    return y, xhat, rstd, torch.zeros_like(var) if mean is None else mean, var


def _standardize(x, dims, eps, centered, inplace):
    """(mean, var, 1/√(var + eps), x̂) over `dims` (keepdim); mean is None for RMS (centered=False).

    inplace=True (forward): in place on its own temporary, not twice differentiable. False
    (create_graph backward, jvp, _composite): out-of-place primitives only.
    """
    mean = x.mean(dims, keepdim=True) if centered else None
    xc = x - mean if centered else x
    trailing = dims == tuple(range(x.dim() - len(dims), x.dim()))
    if trailing and inplace:
        # One contiguous read and no temporary: measured 1.5–1.9× faster than mean(xc·xc) over
        # trailing dims, but 4–8× slower over batch norm's strided (0, 2). Not under create_graph:
        # ‖·‖ has no second derivative at 0 (a constant group).
        var = torch.linalg.vector_norm(xc, 2, dims, keepdim=True).pow_(2).div_(_prod(x.shape[d] for d in dims))
    else:
        var = (xc * xc).mean(dims, keepdim=True)
    rstd = (var + eps).rsqrt_() if inplace else (var + eps).rsqrt()
    xhat = xc.mul_(rstd) if centered and inplace else xc * rstd
    return mean, var, rstd, xhat


def _project(g, xhat, dims, centered):
    """P(g) = g − mean(g) − x̂·mean(g·x̂) per statistics group (no mean(g) term for RMS): the
    part of g that normalization lets through, out of place (differentiable)."""
    out = g - xhat * (g * xhat).mean(dims, keepdim=True)
    return out - g.mean(dims, keepdim=True) if centered else out


def _fast_backward(ctx, dy, xhat, rstd, weight, need_x, need_w, need_b):
    """First-order (dx, dweight, dbias): the closed form, arranged for few full-size passes."""
    lay = ctx.layout
    # values per group (any n > 0 when empty); a float: an int scalar measured ~4 µs slower per op
    n = float(max(xhat.numel() // max(rstd.numel(), 1), 1))
    if lay.param_const:
        # γ is constant inside every group (batch, instance norm): factor it out of g, and
        # the two group sums double as the parameter gradients (fewer full-size passes).
        dims = ctx.dims
        sum_dy = dy.sum(dims, keepdim=True)
        sum_dy_xhat = (dy * xhat).sum(dims, keepdim=True)
        dweight = _sum(sum_dy_xhat, lay.extra) if need_w else None
        dbias = _sum(sum_dy, lay.extra) if need_b else None
        dx = None
        if need_x:
            dx = _input_grad(dy, xhat, rstd, weight, sum_dy / n if ctx.centered else None, sum_dy_xhat / n)
        return dx, dweight, dbias
    # γ varies inside a group (layer norm's elementwise γ, group norm's per-channel γ). Sum dy and
    # dy·x̂ first over the dims where γ is constant (group norm's positions); the group sums
    # a = Σγ·dy·x̂ and b = Σγ·dy are then small weighted sums (layer norm: a matrix-vector
    # product), and dx = (γ·dy − b/n − x̂·a/n)/std = (x̂·a + b − n·γ·dy)·(−1/(n·std)) takes four
    # passes over one new tensor, the small factors folded together.
    sum_dy_xhat = _sum(dy * xhat, lay.inner)
    sum_dy = _sum(dy, lay.inner) if need_b or (need_x and ctx.centered) else None
    dweight = _param_sum(sum_dy_xhat, lay) if need_w else None
    # β has γ's shape, so it is constant over `inner` too: its gradient sums on from sum_dy (one
    # full-size pass saved for group norm). Without γ, `inner` is every statistics dim: from dy.
    dbias = _param_sum(dy if weight is None else sum_dy, lay) if need_b else None
    dx = None
    if need_x:
        dx = xhat * _weighted_sum(sum_dy_xhat, weight, lay.outer)
        if ctx.centered:        # (addcmul(b, x̂, a) with two broadcast operands measured 1.3× slower)
            dx.add_(_weighted_sum(sum_dy, weight, lay.outer))
        dx = dx.add_(dy, alpha=-n) if weight is None else dx.addcmul_(dy, weight, value=-n)
        dx.mul_(rstd * (-1.0 / n))
    return dx, dweight, dbias


class _Layout(NamedTuple):
    """Where γ and β sit relative to x's statistics dims: derived once per shape (see _layout)."""
    param_const: bool       # γ (or β alone) constant inside every statistics group
    inner: list             # statistics dims where γ is constant
    outer: list             # statistics dims where γ varies
    extra: list             # γ's broadcast dims that are not statistics dims
    sum_dims: list          # what to sum a full-size gradient over for γ, β ...
    keepdim: bool           # ... and whether that leaves γ's shape with keepdim


@functools.lru_cache(maxsize=256)
def _layout(ndim, param_shape, has_weight, dims):
    """γ and β broadcast against x from the right, as in torch: batch norm's (1, C, 1) view has x's
    rank, layer and RMS norm's (m,) is x's trailing shape exactly (summed over the leading dims,
    no keepdim, no reshape). Cached: one dict lookup per call instead of a few list comprehensions."""
    if param_shape is None:
        return _Layout(True, list(dims), [], [], [], True)
    k = ndim - len(param_shape)
    full = (1,) * k + tuple(param_shape)
    param_dims = [d for d in range(len(full)) if full[d] == 1]
    # Decided on the parameter present: a β without γ can vary inside a group too (layer norm
    # with bias only).
    const = all(full[d] == 1 for d in dims)
    inner = [d for d in dims if not has_weight or full[d] == 1]
    return _Layout(const, inner, [d for d in dims if d not in inner], [d for d in param_dims if d not in dims],
                   list(range(k)) if k else param_dims, not k)


def _param_sum(t, lay):
    """A full-size (or partly summed) gradient summed down to γ's (= β's) shape."""
    return t.sum(lay.sum_dims, keepdim=lay.keepdim) if lay.sum_dims else t


def _weighted_sum(t, weight, dims):
    """Σ t·γ over `dims` (keepdim). Layer norm's case, γ along the columns of a 2-D t, is one
    matrix-vector product: measured 2× faster than (t·γ).sum, which writes a temporary."""
    if weight is None:
        return _sum(t, dims)
    if t.dim() == 2 and dims == [1]:
        return torch.mv(t, weight).unsqueeze_(1)
    return (t * weight).sum(dims, keepdim=True)


def _sum(t, dims):
    """t summed over `dims` (keepdim), skipping dims of size 1 (a 'sum' over them measured as slow
    as a copy); t itself when nothing is left (torch's sum(()) would sum everything)."""
    dims = [d for d in dims if t.shape[d] > 1]
    return t.sum(dims, keepdim=True) if dims else t


def _scale_shift(xhat, weight, bias):
    """y = x̂·γ + β as a new tensor (x̂ stays saved for backward)."""
    if weight is not None and bias is not None and weight.shape[-1] == xhat.shape[-1] > 1:
        return torch.addcmul(bias, xhat, weight)    # γ along the innermost dim (layer norm): one pass
    y = xhat * weight if weight is not None else xhat.clone()   # per-channel γ: addcmul measured slower
    return y.add_(bias) if bias is not None else y


def _input_grad(dy, xhat, rstd, weight, mean_dy, mean_dy_xhat):
    """dx = (dy − mean(dy) − x̂·mean(dy·x̂))·γ/std for γ constant per group, given the two group
    means (mean_dy=None for RMS norm). SyncBatchNorm passes means taken across all replicas."""
    dx = xhat * mean_dy_xhat
    if mean_dy is not None:
        dx.add_(mean_dy)
    dx = dy - dx
    return dx.mul_(rstd if weight is None else rstd * weight)


def _normalize(x, weight, bias, dims, eps, centered=True):
    """Standardize x over `dims`, then scale and shift; returns y."""
    return _Normalize.apply(x, weight, bias, dims, eps, centered, False)[0]


def _normalize_stats(x, weight, bias, dims, eps):
    """Standardize x over `dims`, then scale and shift; returns (y, mean, var) for running averages."""
    y, _, _, mean, var = _Normalize.apply(x, weight, bias, dims, eps, True, True)
    return y, mean, var


def _affine_with(x3, mean, var, weight, bias, eps):
    """Inference-mode normalization with given (running) statistics: an affine map per channel.

    y = x·s + t with s = γ/√(var + eps), t = β − mean·s: the form a deployed network folds into
    the preceding layer. Plain autograd is enough here: it is two elementwise ops.
    """
    scale = (var + eps).rsqrt()
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return x3 * scale.view(1, -1, 1) + shift.view(1, -1, 1)


def _update_running(running, value, momentum):
    """running ← (1 − momentum)·running + momentum·value   (PyTorch's convention)."""
    with torch.no_grad():
        running.mul_(1 - momentum).add_(value.to(running.dtype), alpha=momentum)


# ----------------------------------------------------------------------------- public functions
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch norm over (N, C) or (N, C, *): statistics per channel over the batch and all positions.

    Training: normalize with the batch's biased variance; if running buffers are given, update
    them in place with the batch mean and the *unbiased* variance (PyTorch's momentum convention:
    new = (1 − momentum)·old + momentum·batch). Eval: normalize with the running statistics.
    """
    check_ndim(input, 2, "(N, C) or (N, C, *)")
    check_range("eps", eps)
    check_range("momentum", momentum, 0.0, 1.0)
    n, c = input.shape[:2]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        check_numel(name, t, c, f"channel of input with shape {tuple(input.shape)}")
    per_channel = input.numel() // max(c, 1)
    if training and per_channel < 2:
        raise ValueError(f"input: expected more than 1 value per channel when training, got shape "
                         f"{tuple(input.shape)} ({per_channel} value per channel; batch norm needs a batch)")
    x3 = input.reshape(n, c, _prod(input.shape[2:]))      # not -1: an empty batch has 0 elements
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean/running_var: expected tensors when training=False, got None")
        return _affine_with(x3, running_mean, running_var, weight, bias, eps).view_as(input)
    y, mean, var = _normalize_stats(x3, _view(weight, 1, c, 1), _view(bias, 1, c, 1), (0, 2), eps)
    if running_mean is not None:
        _update_running(running_mean, mean.view(c), momentum)
    if running_var is not None:
        _update_running(running_var, var.view(c) * (per_channel / (per_channel - 1)), momentum)
    return y.view_as(input)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer norm: statistics of each sample over its trailing `normalized_shape` dims."""
    shape = _normalized_shape(input, normalized_shape)
    check_range("eps", eps)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape} (normalized_shape), got {tuple(t.shape)}")
    x2 = _rows(input, shape)
    y = _normalize(x2, _flat(weight), _flat(bias), (1,), eps)
    return y if x2 is input else y.view_as(input)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group norm: channels split into `num_groups` groups; statistics per sample and group."""
    check_ndim(input, 2, "(N, C, *)")
    check_range("eps", eps)
    n, c = input.shape[:2]
    check_groups(num_groups, c)
    for name, t in (("weight", weight), ("bias", bias)):
        check_numel(name, t, c, f"channel of input with shape {tuple(input.shape)}")
    g = num_groups
    x4 = input.reshape(n, g, c // g, _prod(input.shape[2:]))        # not -1: (0, C) is a valid input
    y = _normalize(x4, _view(weight, 1, g, c // g, 1), _view(bias, 1, g, c // g, 1), (2, 3), eps)
    return y.view_as(input)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Instance norm: statistics per sample and channel over the spatial positions (N, C, *)."""
    check_ndim(input, 3, "(N, C, L) or (N, C, H, W): instance norm needs spatial dims")
    check_range("eps", eps)
    check_range("momentum", momentum, 0.0, 1.0)
    n, c = input.shape[:2]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        check_numel(name, t, c, f"channel of input with shape {tuple(input.shape)}")
    x3 = input.reshape(n, c, _prod(input.shape[2:]))
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean/running_var: expected tensors when use_input_stats=False, got None")
        return _affine_with(x3, running_mean, running_var, weight, bias, eps).view_as(input)
    length = x3.shape[2]
    if length == 1:     # x̂ would be 0 whatever the input (torch raises too); length 0 is an empty result
        raise ValueError(f"input: expected more than 1 spatial element per channel, got shape {tuple(input.shape)}")
    if input.numel() == 0 and (running_mean is not None or running_var is not None):
        raise ValueError(f"input: expected a non-empty input to update running_mean/running_var, got shape "
                         f"{tuple(input.shape)} (torch would write NaN into them)")
    y, mean, var = _normalize_stats(x3, _view(weight, 1, c, 1), _view(bias, 1, c, 1), (2,), eps)
    # Running statistics average the per-instance statistics over the batch, as torch does.
    if running_mean is not None:
        _update_running(running_mean, mean.view(n, c).mean(0), momentum)
    if running_var is not None:
        _update_running(running_var, var.view(n, c).mean(0) * (length / (length - 1)), momentum)
    return y.view_as(input)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """RMS norm (Zhang & Sennrich 2019): x / √(mean(x²) + eps) · γ, no mean subtracted, no β.

    eps=None uses torch.finfo(input.dtype).eps, as torch does.
    """
    shape = _normalized_shape(input, normalized_shape)
    eps = torch.finfo(input.dtype).eps if eps is None else eps
    check_range("eps", eps)
    if weight is not None and tuple(weight.shape) != shape:
        raise ValueError(f"weight: expected shape {shape} (normalized_shape), got {tuple(weight.shape)}")
    x2 = _rows(input, shape)
    y = _normalize(x2, _flat(weight), None, (1,), eps, centered=False)
    return y if x2 is input else y.view_as(input)


def dropout(input, p=0.5, training=True):
    """Inverted dropout: zero each element with probability p, scale survivors by 1/(1 − p).

    The expected value of every unit is unchanged, so evaluation is the identity.
    """
    check_range("p", p, 0.0, 1.0)
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    mask = torch.empty_like(input).bernoulli_(1 - p).div_(1 - p)
    return input * mask


def gaussian_noise(input, sigma, training=True):
    """Additive noise: input + N(0, sigma²) in training, the identity in evaluation."""
    check_range("sigma", sigma)
    if not training or sigma == 0:
        return input
    return input + sigma * torch.randn_like(input)


# ----------------------------------------------------------------------------- small helpers
def _view(t, *shape):
    return None if t is None else t.view(*shape)


def _flat(t):
    """Layer/RMS norm's γ or β as one dim, broadcasting against (rows, m); (m,) as it is."""
    return t if t is None or t.dim() == 1 else t.reshape(-1)


def _prod(shape):
    out = 1
    for s in shape:
        out *= s
    return out


def _rows(input, shape):
    """input as (rows, prod(shape)) for layer/RMS norm; input itself when it already is one (a
    reshape to the same shape still adds a view and its backward node: ~10 µs per call)."""
    if input.dim() == 2 and len(shape) == 1:
        return input
    return input.reshape(_prod(input.shape[:input.dim() - len(shape)]), _prod(shape))   # not -1: (0, m), (n, 0)


def _normalized_shape(input, normalized_shape):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    check_ndim(input, max(len(shape), 1), f"a tensor whose trailing dims are {shape}")
    if len(shape) == 0 or tuple(input.shape[-len(shape):]) != shape:
        raise ValueError(f"normalized_shape={shape}: expected the trailing dims of input, "
                         f"whose shape is {tuple(input.shape)}")
    return shape

