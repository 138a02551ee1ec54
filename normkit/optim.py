"""SGD and Adam written out, with weight decay coupled (L2 in the gradient) or decoupled (AdamW).

Same updates as torch.optim.SGD, Adam and AdamW (the tests compare them step by step), same
`param_groups` / `state` layout, so `regularize.decay_groups(model, λ)` works with both. Two
reasons to have them: notebook 07 shows, in a few lines, where L2 and weight decay part ways; and
torch.optim's first `step()` imports torch._dynamo, which costs seconds in a notebook that
otherwise trains in one.
"""
import torch

from .validate import check_range

__all__ = ["SGD", "Adam", "AdamW"]


class _Optimizer:
    def __init__(self, params, defaults):
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            group = {**defaults, **group, "params": list(group["params"])}
            for name in ("lr", "weight_decay"):
                check_range(name, group[name])
            self.param_groups.append(group)
        self.state = {}

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()


class SGD(_Optimizer):
    """w ← w − lr·(∇L + λw), λ = weight_decay (for SGD, L2 and decay are the same); with momentum m,
    torch's heavy ball: b ← m·b + (∇L + λw), w ← w − lr·b."""

    def __init__(self, params, lr=0.1, momentum=0.0, weight_decay=0.0):
        check_range("momentum", momentum, 0.0, 1.0)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, lam, m = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad + lam * p if lam else p.grad
                if m:
                    buf = self.state.get(p)
                    g = self.state[p] = g.clone() if buf is None else buf.mul_(m).add_(g)
                p.sub_(g, alpha=lr)


class Adam(_Optimizer):
    """Adam (Kingma & Ba 2015). decoupled=False: L2 as torch.optim.Adam(weight_decay=λ) does it, λw
    added to the gradient; decoupled=True: AdamW, the weight shrinks by lr·λ·w outside Adam's scaling."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.decoupled = decoupled

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, lam, eps = group["lr"], group["weight_decay"], group["eps"]
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if self.decoupled:
                    p.mul_(1 - lr * lam)              # AdamW: decay the weight itself, same rate for all
                elif lam:
                    g = g + lam * p                   # Adam + L2: the penalty's gradient is rescaled below
                if p not in self.state:               # (not setdefault: that builds the zeros every step)
                    self.state[p] = {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                st = self.state[p]
                st["step"] += 1
                t = st["step"]
                st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (st["exp_avg_sq"] / (1 - b2 ** t)).sqrt_().add_(eps)     # √v̂ + ε
                p.addcdiv_(st["exp_avg"], denom, value=-lr / (1 - b1 ** t))      # − lr·m̂/(√v̂ + ε)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), torch.optim.AdamW's update."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay, decoupled=True)
