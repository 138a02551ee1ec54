"""Property tests (hypothesis) for the normalization modules against torch.nn: random layer,
random sizes (batched and unbatched instance norm, (N, C) and (N, C, L) batch norm, 1-3 trailing
dims for layer/RMS norm), random constructor flags (affine, bias, track_running_stats, momentum,
eps). Two training steps and one eval step compare output, input and parameter gradients, then
running statistics and state_dict both ways."""
import math

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import normkit as nk

from .conftest import randn, rstd_max
from .test_layers import _randomize, _same_names, _same_state, _step, _twins

SIZE = st.integers(1, 4)


@st.composite
def channel_layers(draw):
    """(normkit class, torch class, constructor kwargs, input shape, rows of the statistics groups)."""
    kind = draw(st.sampled_from(["bn1d", "bn2d", "bn3d", "in1d", "in2d", "in3d"]))
    c = draw(SIZE)
    spatial_dims = {"bn1d": draw(st.sampled_from([0, 1])), "bn2d": 2, "bn3d": 3,
                    "in1d": 1, "in2d": 2, "in3d": 3}[kind]
    spatial = [draw(SIZE) for _ in range(spatial_dims)]
    batched = kind.startswith("bn") or draw(st.booleans())
    n = draw(st.integers(2, 4))
    if kind.startswith("in") and math.prod(spatial) < 2:      # torch and normkit both refuse 1 position
        spatial[-1] = 2
    if kind.startswith("bn") and n * math.prod(spatial) < 2:
        n = 2
    affine, track = draw(st.booleans()), draw(st.booleans())
    kw = {"eps": draw(st.sampled_from([1e-5, 1e-3, 0.1])), "affine": affine, "track_running_stats": track,
          "momentum": draw(st.sampled_from([0.1, 0.5, 1.0, 0.0, None])), "bias": draw(st.booleans())}
    classes = {"bn1d": (nk.BatchNorm1d, nn.BatchNorm1d), "bn2d": (nk.BatchNorm2d, nn.BatchNorm2d),
               "bn3d": (nk.BatchNorm3d, nn.BatchNorm3d), "in1d": (nk.InstanceNorm1d, nn.InstanceNorm1d),
               "in2d": (nk.InstanceNorm2d, nn.InstanceNorm2d), "in3d": (nk.InstanceNorm3d, nn.InstanceNorm3d)}
    shape = ((n,) if batched else ()) + (c, *spatial)
    return (*classes[kind], (c,), kw, shape, kind)


def _groups(kind, x):
    """The statistics groups of x as rows (for the conditioning of the comparison)."""
    if kind.startswith("bn"):
        return x.transpose(0, 1).reshape(x.shape[1], -1)
    c_dim = int(x.dim() == {"in1d": 3, "in2d": 4, "in3d": 5}[kind])
    return x.reshape(*x.shape[:c_dim + 1], -1).reshape(-1, x[(0,) * (c_dim + 1)].numel())


@given(channel_layers(), st.sampled_from([torch.float32, torch.float64]), st.integers(0, 2**16))
def test_channel_norm_modules_match_torch(layer, dtype, seed):
    ours_cls, ref_cls, args, kw, shape, kind = layer
    ours, ref = _twins(ours_cls, ref_cls, *args, dtype=dtype, **kw)
    _same_names(ours, ref)
    cond = 1.0
    for step in range(2):
        x = randn(*shape, dtype=dtype, scale=1 + step, offset=step - 0.5, seed=seed + step)
        cond = max(cond, rstd_max(_groups(kind, x), kw["eps"]))
        _step(ours, ref, x, seed=seed + 10 + step, cond=cond)
        _same_state(ours, ref)
    ours.eval()
    ref.eval()
    x = randn(*shape, dtype=dtype, seed=seed + 20)
    if ref.track_running_stats:         # eval normalizes with the running variance
        cond = max(cond, (ref.running_var.double() + kw["eps"]).rsqrt().max().item())
    _step(ours, ref, x, seed=seed + 30, cond=max(cond, rstd_max(_groups(kind, x), kw["eps"])))
    fresh = ref_cls(*args, dtype=dtype, **kw)
    fresh.load_state_dict(ours.state_dict())            # normkit → torch, strict
    _same_state(ours, fresh)


@given(st.sampled_from(["ln", "gn", "rms"]), st.lists(SIZE, min_size=1, max_size=3), st.integers(1, 4),
       st.booleans(), st.booleans(), st.sampled_from([torch.float32, torch.float64]), st.integers(0, 2**16))
def test_layer_group_rms_modules_match_torch(kind, tail, lead, affine, bias, dtype, seed):
    if kind == "gn":
        lead = max(lead, 2)     # torch refuses N·C/G·positions = 1 ("more than 1 value"); normkit: x̂ = 0
    shape = (lead, *tail)
    x = randn(*shape, dtype=dtype, seed=seed)
    if kind == "ln":
        normalized = tuple(tail[-(len(tail) if affine else 1):])     # over the last 1..all dims
        make = lambda m: m.LayerNorm(normalized, 1e-5, affine, bias, dtype=dtype)      # noqa: E731
        rows, eps = x.reshape(-1, math.prod(normalized)), 1e-5
    elif kind == "gn":
        groups = max(g for g in (1, 2, 3, 4) if tail[0] % g == 0)
        make = lambda m: m.GroupNorm(groups, tail[0], 1e-5, affine, dtype=dtype, bias=bias)   # noqa: E731
        rows, eps = x.reshape(lead * groups, -1), 1e-5
    else:
        make = lambda m: m.RMSNorm(tuple(tail), None, affine, dtype=dtype)              # noqa: E731
        rows, eps = x.reshape(lead, -1), torch.finfo(dtype).eps     # RMS ≥ std: rstd_max bounds it
    ref = _randomize(make(nn), seed)
    ours = make(nk)
    ours.load_state_dict(ref.state_dict())                          # torch → normkit, strict
    _same_names(ours, ref)
    cond = rstd_max(rows, eps)          # one value per group: 1/√eps, its roundoff in dx (torch)
    _step(ours, ref, x, seed=seed + 1, cond=cond)
    fresh = make(nn)
    fresh.load_state_dict(ours.state_dict())                        # normkit → torch, strict
    _same_state(ours, fresh)
