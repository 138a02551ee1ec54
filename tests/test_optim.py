"""normkit.optim: SGD, Adam and AdamW written out, step by step equal to torch.optim's."""
import pytest
import torch
from torch import nn

import normkit as nk
from normkit import optim


# ----------------------------------------------------------------------------- optim vs torch.optim
def _twin_models(seed=0):
    torch.manual_seed(seed)
    a = nk.models.mlp([6, 5, 3], norm="batch").double()
    b = nk.models.mlp([6, 5, 3], norm="batch").double()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("ours,ref,kw", [
    (optim.SGD, torch.optim.SGD, {"lr": 0.1}),
    (optim.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (optim.Adam, torch.optim.Adam, {"lr": 0.01}),
    (optim.AdamW, torch.optim.AdamW, {"lr": 0.01}),
], ids=["SGD", "SGD-momentum", "Adam", "AdamW"])
def test_optimizers_match_torch_step_by_step(ours, ref, kw):
    a, b = _twin_models()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)
    opt_a = ours(nk.regularize.decay_groups(a, 0.05), **kw)
    opt_b = ref(nk.regularize.decay_groups(b, 0.05), **kw)
    for _ in range(5):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-12, rtol=0)


def test_optimizer_bad_input_and_plain_params():
    p = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([p], lr=-1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.Adam([p], weight_decay=-1.0)
    opt = optim.SGD([p], lr=0.5, weight_decay=1.0)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 0.5))      # pure decay: w ← w − lr·λ·w
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and (p.grad == 0).all()
