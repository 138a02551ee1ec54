"""models.Stack: K MLPs trained as one equal K lone networks made of torch's own layers, to float32 rounding."""
import copy

import pytest
import torch
from torch import nn

import normkit as nk
from tests.conftest import assert_close, randn

K = 3


def _members(sizes=(6, 5, 4, 3), seed0=0, **kwargs):
    nets = []
    for seed in range(seed0, seed0 + K):
        torch.manual_seed(seed)
        nets.append(nk.models.mlp(list(sizes), **kwargs))
    return nets


def _torch_twin(net):
    """The same network from torch's own layers (nn.Linear, nn.BatchNorm1d, activations), same values."""
    mods = []
    for m in net:
        if isinstance(m, nk.BatchNorm1d):
            bn = nn.BatchNorm1d(m.num_features, m.eps, m.momentum)
            bn.load_state_dict(m.state_dict())
            mods.append(bn)
        else:
            mods.append(copy.deepcopy(m))
    return nn.Sequential(*mods)


# Float32 tolerance factors (× 1e-6 × the size of the reference; 1, 3 and 10 pass on both kernel paths):
# each step's rounding is fed back through the next steps.
FORWARD, GRAD, STEPS = 4, 10, 100


@pytest.mark.parametrize("config", [dict(), dict(norm="batch"), dict(norm="batch", norm_after_activation=True),
                                    dict(activation="tanh", norm="batch"), dict(activation="sigmoid")],
                         ids=["plain", "bn", "bn_after", "tanh_bn", "sigmoid"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared_x", "own_x"])
def test_stack_is_its_members_logits_gradients_steps(config, shared):
    nets = _members(**config)
    twins = [_torch_twin(n) for n in nets]
    stack = nk.models.Stack(nets)
    x = randn(16, 6, dtype=torch.float32, seed=1) if shared else randn(16, K, 6, dtype=torch.float32, seed=1)
    y = torch.randint(0, 3, (16, K), generator=torch.Generator().manual_seed(2))
    xs = [x if shared else x[:, k] for k in range(K)]

    logits = stack(x)
    assert logits.shape == (16, 3, K)
    for k, twin in enumerate(twins):
        assert_close(logits[:, :, k], twin(xs[k]), FORWARD)

    # gradients of stacked_cross_entropy: each member's own
    stack.zero_grad()
    twins = [_torch_twin(n) for n in nets]                      # the running statistics before that pass
    nk.train.stacked_cross_entropy(stack(x), y).backward()
    for k, twin in enumerate(twins):
        nn.functional.cross_entropy(twin(xs[k]), y[:, k]).backward()
        for (name, p), q in zip(twin.named_parameters(), _stacked_params(stack, k)):
            assert_close(q, p.grad, GRAD), name

    # a few optimizer steps (momentum SGD, then Adam): each member's own trajectory
    stack, twins = nk.models.Stack(nets), [_torch_twin(n) for n in nets]
    for make in (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: torch.optim.Adam(ps, lr=0.01)):
        opt = make(stack.parameters())
        opts = [make(t.parameters()) for t in twins]
        for _ in range(3):
            opt.zero_grad()
            nk.train.stacked_cross_entropy(stack(x), y).backward()
            opt.step()
            for k, (twin, o) in enumerate(zip(twins, opts)):
                o.zero_grad()
                nn.functional.cross_entropy(twin(xs[k]), y[:, k]).backward()
                o.step()
    for k, twin in enumerate(twins):
        member = stack.member(k)
        assert isinstance(member, nn.Sequential) and [type(m) for m in member] == [type(m) for m in nets[k]]
        for (name, a), b in zip(member.state_dict().items(), twin.state_dict().values()):
            if b.is_floating_point():
                assert_close(a, b, STEPS), name
            else:
                assert torch.equal(a, b), name                     # num_batches_tracked
        stack.eval(), twin.eval(), member.eval()
        assert_close(stack(x)[:, :, k], twin(xs[k]), STEPS)
        assert_close(member(xs[k]), twin(xs[k]), STEPS)
        stack.train()


def _stacked_params(stack, k):
    """Member k's slice of every gradient of the stack, in the order of the lone net's parameters."""
    out = []
    for s, m in zip(stack.layers, stack.member(k)):
        for name, _ in m.named_parameters(recurse=False):
            g = getattr(s, name).grad
            out.append(g[k] if g.dim() > 1 or isinstance(m, nn.Linear)
                       else g[k * m.num_features:(k + 1) * m.num_features])
    return out


def test_member_is_a_lone_mlp_with_running_statistics_and_mode():
    nets = _members(norm="batch", dropout=0.2)
    stack = nk.models.Stack(nets)
    stack(randn(10, 6, dtype=torch.float32, seed=3))
    m = stack.member(1)
    assert m.training and m[1].num_batches_tracked.item() == 1
    assert_close(m[1].running_mean, stack.layers[1].running_mean[5:10])
    assert m[3].p == 0.2
    assert not stack.eval().member(-1).training
    into = nk.models.mlp([6, 5, 4, 3], norm="batch", dropout=0.2)
    assert stack.member(1, out=into) is into and into.training                 # copied into, mode kept
    for a, b in zip(into.state_dict().values(), m.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="k=3"):
        stack.member(3)


@pytest.mark.parametrize("layer", ["dropout", "noise"])
def test_each_member_draws_its_own_masks_and_noise(layer):
    torch.manual_seed(0)
    net = nk.models.mlp([6, 50, 3], dropout=0.5 if layer == "dropout" else 0.0)
    if layer == "noise":
        net.insert(2, nk.GaussianNoise(0.5))
    stack = nk.models.Stack([net] * K)                             # identical members
    x = randn(8, 6, dtype=torch.float32, seed=4)
    h = x.unsqueeze(1).expand(-1, K, -1)                           # (N, K, 6)
    for layer in stack.layers[:3]:
        h = layer(h)                                               # (N, K, 50) after dropout / noise
    assert not torch.equal(h[:, 0], h[:, 1]) and not torch.equal(h[:, 1], h[:, 2])
    stack.eval()
    out = stack(x)
    assert_close(out[:, :, 0], out[:, :, 1], FORWARD)              # eval: no masks, no noise


def test_stack_rejects_different_layouts_and_layers():
    with pytest.raises(ValueError, match="nets\\[1\\]"):
        nk.models.Stack([nk.models.mlp([6, 5, 3]), nk.models.mlp([6, 4, 3])])
    with pytest.raises(ValueError, match="cannot stack"):
        nk.models.Stack([nk.models.mlp([6, 5, 3], norm="layer")])
    with pytest.raises(ValueError, match="x: expected"):
        nk.models.Stack(_members())(torch.zeros(4, K + 1, 6))
