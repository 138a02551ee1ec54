"""Notebook 01 (generalization and regularization): the generalization gap as an experiment, and
regularization fixing an overfitting network where you can see it.

The generalization error (일반화 오류) of the seeds is the gap between training and test
performance; the papers call that difference the generalization *gap* and keep "generalization
error" for the error on new data itself. This module trains small MLPs on the 8×8 digits:

- `generalization_gap(model, split)`: train accuracy minus test accuracy, now.
- `overfit_run(n_train, width, ...)`: one training on the first `n_train` digits; its History
  holds both accuracy curves (`train_acc`, `test_acc`) and the final gap (`History.gap`).
- `gap_grid(sizes, widths, ...)`: one run per (training-set size, width), cached, for sliders.
- `Members`, `train_members`: several one-hidden-layer MLPs trained as one model (one batched
  product per layer), each exactly as if trained alone; the notebook's sweeps cost a few runs.
- `regularized_runs()`: the overfitting set-up of `normkit.overfitting` (200 digits, 30 % wrong
  labels) with weight decay λ, dropout p, shifted digits, and the ensembles, in one training.
- `brier_split(probs, y)`: an ensemble's squared error = its members' mean error − their spread.
- `ensemble_predict(models, x)`: average the models' probabilities (the fourth family).
- the exercise checkers `check_generalization_gap`, `check_ensemble_predict`.
"""
import contextlib
import functools
import io
import math

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from .. import check, data, functional, layers, models, optim, overfitting, train
from ..data import CLASSES, PIXELS
from ..validate import check_int

__all__ = ["generalization_gap", "overfit_run", "gap_grid", "Members", "train_members", "wrong_labels",
           "LAMBDAS", "DROPOUTS", "SHIFTS", "ENSEMBLE", "ENSEMBLES", "regularized_runs", "brier_split",
           "chosen_on_validation", "ensemble_errors", "ensemble_predict",
           "check_generalization_gap", "check_ensemble_predict"]


# ----------------------------------------------------------------------------- the gap
def generalization_gap(model, split):
    """Train accuracy minus test accuracy of `model` on a `normkit.data.Split` (eval mode)."""
    return (train.accuracy(model, split.x_train, split.y_train)
            - train.accuracy(model, split.x_test, split.y_test))


def overfit_run(n_train, width, steps=150, lr=0.01, batch_size=32, label_noise=0.0, eval_every=10,
                seed=0):
    """Train mlp([PIXELS, width, CLASSES]) (ReLU) with Adam on the first `n_train` training digits.

    The test set is the same 497 digits for every n_train, so runs are comparable. label_noise
    replaces that fraction of the training labels by a wrong class (0.9: uniformly random labels).
    Returns the `normkit.train.History` (accuracies every `eval_every` steps).
    """
    check_int("width", width)
    split = data.digits(n_train=n_train, label_noise=label_noise)
    torch.manual_seed(seed)
    model = models.mlp([PIXELS, width, CLASSES])
    return train.fit(model, split, steps=steps, batch_size=min(batch_size, n_train), lr=lr,
                     optimizer="adam", eval_every=eval_every, seed=seed)


@functools.lru_cache(maxsize=None)
def gap_grid(sizes, widths, steps=150, eval_every=25, seed=0):
    """{(n_train, width): History} for every training-set size and width (tuples; cached).

    The widths of one size train together (`train_members`): the runs of overfit_run(n, width,
    steps, eval_every=eval_every, seed=seed), one training per size instead of one per pair.
    """
    grid = {}
    for n in sizes:
        nets = [_seeded(seed, models.mlp, [PIXELS, w, CLASSES]) for w in widths]
        runs = train_members(nets, data.digits(n_train=n), steps=steps, lr=0.01, batch_size=min(32, n),
                             optimizer="adam", eval_every=eval_every, seed=seed)
        grid.update({(n, w): run for w, run in zip(widths, runs)})
    return grid


# ----------------------------------------------------------------------------- many runs at once
def _seeded(seed, build, *args, **kwargs):
    """build(*args, **kwargs) with its initial weights drawn after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return build(*args, **kwargs)


class Members(nn.Module):
    """K one-hidden-layer MLPs [PIXELS, width_k, CLASSES] (ReLU, optional dropout) as one model.

    Built from the nets themselves (`models.mlp`, `overfitting.build`) with their initial weights.
    Each layer is one matrix product for all members: a batched product when the widths are equal,
    else the first layers side by side and the second ones as one block-diagonal matrix. The loss
    is the sum of the members' own losses, so the gradient for member k's weights is member k's
    gradient alone: with Adam or AdamW (per-weight updates) each member trains exactly as it would
    alone, in a fraction of the time.

    members(x): x (N, PIXELS), or (K, N, PIXELS) one input per member (equal widths only) ->
        logits (K, N, CLASSES).
    forward(x): the same in training mode; in eval mode the ensemble's log mean probability
        (N, CLASSES), so what train.fit records itself is the ensemble's accuracy.
    net(k): member k as a plain MLP with its current weights, in eval mode.
    """

    def __init__(self, nets):
        super().__init__()
        linears = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        if not nets or any(len(pair) != 2 for pair in linears):
            raise ValueError(f"nets: expected one or more MLPs with two Linear layers, got "
                             f"{[len(pair) for pair in linears]} Linear layers")
        firsts, seconds = zip(*linears)
        self.widths = [f.out_features for f in firsts]
        self.p = [next((m.p for m in net if isinstance(m, (layers.Dropout, nn.Dropout))), 0.0) for net in nets]
        self.same = len(set(self.widths)) == 1
        with torch.no_grad():
            if self.same:                                        # (K, 64, H), (K, 1, H), (K, H, 10), (K, 1, 10)
                self.w1 = nn.Parameter(torch.stack([f.weight.T for f in firsts]))
                self.b1 = nn.Parameter(torch.stack([f.bias for f in firsts])[:, None])
                self.w2 = nn.Parameter(torch.stack([s.weight.T for s in seconds]))
                self.b2 = nn.Parameter(torch.stack([s.bias for s in seconds])[:, None])
            else:                                                # (64, Σw), (Σw,), (Σw, K·10), (K·10,)
                self.w1 = nn.Parameter(torch.cat([f.weight for f in firsts]).T.contiguous())
                self.b1 = nn.Parameter(torch.cat([f.bias for f in firsts]))
                self.w2 = nn.Parameter(torch.block_diag(*[s.weight.T for s in seconds]))
                self.b2 = nn.Parameter(torch.cat([s.bias for s in seconds]))
                self.register_buffer("block", torch.block_diag(*[torch.ones(w, CLASSES) for w in self.widths]))

    def _dropout(self, hs):
        return [functional.dropout(h, p) for h, p in zip(hs, self.p)] if self.training and any(self.p) else hs

    def members(self, x, which=None):
        if not self.same:
            if x.dim() != 2:
                raise ValueError(f"x: one input per member needs members of equal width, got {self.widths}")
            h = torch.addmm(self.b1, x, self.w1).relu()
            if self.training and any(self.p):
                h = torch.cat(self._dropout(h.split(self.widths, 1)), 1)
            out = torch.addmm(self.b2, h, self.w2 * self.block).view(len(x), -1, CLASSES).transpose(0, 1)
            return out if which is None else out[which]
        w1, b1, w2, b2 = (self.w1, self.b1, self.w2, self.b2) if which is None else \
            (self.w1[which], self.b1[which], self.w2[which], self.b2[which])
        h = torch.baddbmm(b1, x.expand(len(w1), *x.shape) if x.dim() == 2 else x, w1).relu()
        return torch.baddbmm(b2, torch.stack(self._dropout(h)) if self.training and any(self.p) else h, w2)

    def forward(self, x):
        logits = self.members(x)
        if self.training:
            return logits
        return logits.log_softmax(-1).logsumexp(0) - math.log(len(logits))

    @torch.no_grad()
    def net(self, k):
        w = self.widths[k]
        with torch.random.fork_rng():
            net = models.mlp([PIXELS, w, CLASSES])
        if self.same:
            weights = self.w1[k].T, self.b1[k, 0], self.w2[k].T, self.b2[k, 0]
        else:
            start = sum(self.widths[:k])
            rows, cols = slice(start, start + w), slice(k * CLASSES, (k + 1) * CLASSES)
            weights = self.w1[:, rows].T, self.b1[rows], self.w2[rows, cols].T, self.b2[cols]
        for param, value in zip((net[0].weight, net[0].bias, net[-1].weight, net[-1].bias), weights):
            param.copy_(value)
        return net.eval()


def _members_loss(out, y):
    """The sum of the members' mean cross-entropies; for the ensemble's (N, CLASSES) output, its own."""
    if out.dim() == 2:
        return cross_entropy(out, y)
    return cross_entropy(out.flatten(0, 1), y.repeat(len(out)), reduction="sum") / len(y)


class _MembersAdamW(optim.AdamW):
    """AdamW with one decoupled weight decay λ_k per member: member k's weights shrink by lr·λ_k
    before each update (biases do not, as with regularize.decay_groups), then Adam's step."""

    def __init__(self, members, lr, weight_decay):
        if not members.same:
            raise ValueError(f"weight_decay: one per member needs members of equal width, got {members.widths}")
        super().__init__(members.parameters(), lr=lr, weight_decay=0.0)
        self.decayed = (members.w1, members.w2)
        self.shrink = (1 - lr * torch.tensor(weight_decay, dtype=members.w1.dtype))[:, None, None]

    @torch.no_grad()
    def step(self):
        for w in self.decayed:
            w.mul_(self.shrink)
        super().step()


def train_members(nets, split, steps, lr, optimizer="adam", weight_decay=0.0, max_shift=0, batch_size=32,
                  eval_every=10, curves=None, wrong=None, seed=0):
    """Train `nets` (one-hidden-layer MLPs) together with train.fit, each as if alone: the same
    batches (seeded by `seed`), its own initial weights and dropout, its own decoupled weight decay
    (optimizer "adamw"; weight_decay one value or one per net) and shifted digits (max_shift: one
    value or one per net; normkit.data.random_shift).

    Returns one train.History per net, with `model` the trained net: train (and validation, if the
    split has one) and test accuracy every `eval_every` steps for the nets in `curves` (indices;
    None: all), at the end only for the others. With `wrong` (a mask of training images whose
    label is wrong), `extra` holds the fraction of them the net gives their wrong label.
    """
    k = len(nets)
    decays = weight_decay if isinstance(weight_decay, (list, tuple)) else [weight_decay] * k
    shifts = max_shift if isinstance(max_shift, (list, tuple)) else [max_shift] * k
    if len(decays) != k or len(shifts) != k:
        raise ValueError(f"weight_decay, max_shift: expected one value or {k} (one per net), got "
                         f"{len(decays)} and {len(shifts)}")
    model = Members(nets)
    if optimizer == "adamw":
        optimizer = _MembersAdamW(model, lr, decays)
    elif any(decays):
        raise ValueError(f"weight_decay={weight_decay!r}: per-net decay needs optimizer='adamw'")
    augment = None
    if any(shifts):
        def augment(xb):
            return torch.stack([data.random_shift(xb, s) if s else xb for s in shifts])
    curves = list(range(k)) if curves is None else list(curves)
    # one forward pass over train, test (and validation) images; accuracies per part (and on `wrong`)
    parts = [split.x_train, split.x_test] + ([split.x_val] if split.x_val is not None else [])
    x_all, y_all = torch.cat(parts), torch.cat([split.y_train, split.y_test, split.y_val][:len(parts)])
    ends = torch.tensor([len(x) for x in parts]).cumsum(0).tolist()
    records = []

    @torch.no_grad()
    def evaluate(model, *_, which=curves):
        model.eval()
        right = (model.members(x_all, which).argmax(-1) == y_all).float()          # (members, images)
        model.train()
        accs = [part.mean(1).tolist() for part in right.tensor_split(ends[:-1], dim=1)]
        if wrong is not None:
            accs.append(right[:, :ends[0]][:, wrong].mean(1).tolist())
        records.append(accs)

    train.fit(model, split, steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, augment=augment,
              eval_every=None, eval_train=False, callback=evaluate if curves else None,
              callback_every=eval_every, seed=seed, loss_fn=_members_loss)
    evaluate(model, which=list(range(k)))
    finals = records.pop()
    steps_seen = list(range(0, steps, eval_every)) + [steps]
    runs = []
    for i in range(k):
        during = [[r[s][curves.index(i)] for r in records] if i in curves else [] for s in range(len(finals))]
        series = [acc + [final[i]] for acc, final in zip(during, finals)]
        run = train.History(eval_steps=steps_seen if i in curves else [steps], train_acc=series[0],
                            test_acc=series[1], model=model.net(i))
        if split.x_val is not None:
            run.val_acc = series[2]
        if wrong is not None:
            run.extra = series[-1]
        runs.append(run)
    return runs


# ----------------------------------------------------------------------------- fixing the overfitting
LAMBDAS = (0.0, 1.0, 3.0, 10.0, 30.0)            # AdamW's decoupled weight decay λ
DROPOUTS = (0.5, 0.75)                            # drop probability p after the hidden layer
SHIFTS = (1, 2)                                   # training digits moved by up to this many pixels
ENSEMBLE = 5                                      # members per ensemble: seeds seed, …, seed + 4
ENSEMBLES = {"width 4, λ = 0": (4, 0.0), "width 4, λ = 3": (4, 3.0)}   # (width, weight decay λ)


def wrong_labels(data_seed=0):
    """Mask of the training digits of overfitting.split(data_seed) whose label is wrong."""
    clean = data.digits(n_train=overfitting.N_TRAIN, val_size=overfitting.VAL_SIZE, seed=data_seed)
    return overfitting.split(data_seed).y_train != clean.y_train


@functools.lru_cache(maxsize=None)
def regularized_runs(seed=0):
    """The overfitting set-up of normkit.overfitting, fixed four ways (cached):

    {"weight_decay": {λ: History} for λ in LAMBDAS,      (the λ = 0 run is the baseline)
     "dropout": {p: History} for p in DROPOUTS, "max_shift": {s: History} for s in SHIFTS,
     "ensemble": {name: [History, …]} for name in ENSEMBLES: ENSEMBLE nets of that width and λ}.

    Each run is overfitting.run(...) with the same arguments and `seed` (initial weights, batches;
    the dropout masks and shifts are other draws), the ensembles' members have seeds seed, seed + 1,
    …; nets of one width train together (train_members). The weight-decay runs keep their curves
    (accuracies every EVAL_EVERY steps; `extra`: the share of the wrong labels the net reproduces).
    """
    configs = ([(overfitting.WIDTH, lam, 0.0, 0, seed) for lam in LAMBDAS]
               + [(overfitting.WIDTH, 0.0, p, 0, seed) for p in DROPOUTS]
               + [(overfitting.WIDTH, 0.0, 0.0, s, seed) for s in SHIFTS])
    ensembles = {name: [(width, lam, 0.0, 0, seed + i) for i in range(ENSEMBLE)]
                 for name, (width, lam) in ENSEMBLES.items()}
    configs += [c for members in ensembles.values() for c in members if c not in configs]
    runs = {}
    for width in dict.fromkeys(c[0] for c in configs):
        group = [c for c in configs if c[0] == width]
        nets = [_seeded(s, overfitting.build, p) if width == overfitting.WIDTH else
                _seeded(s, models.mlp, [PIXELS, width, CLASSES], dropout=p) for _, _, p, _, s in group]
        curves = [i for i, c in enumerate(group) if c in configs[:len(LAMBDAS)]]
        runs |= zip(group, train_members(
            nets, overfitting.split(), steps=overfitting.STEPS, lr=overfitting.LR, optimizer="adamw",
            weight_decay=[c[1] for c in group], max_shift=[c[3] for c in group],
            batch_size=overfitting.BATCH_SIZE, eval_every=overfitting.EVAL_EVERY, curves=curves,
            wrong=wrong_labels(), seed=seed))
    w = overfitting.WIDTH
    return {"weight_decay": {lam: runs[w, lam, 0.0, 0, seed] for lam in LAMBDAS},
            "dropout": {p: runs[w, 0.0, p, 0, seed] for p in DROPOUTS},
            "max_shift": {s: runs[w, 0.0, 0.0, s, seed] for s in SHIFTS},
            "ensemble": {name: [runs[c] for c in members] for name, members in ensembles.items()}}


def brier_split(probs, y):
    """Squared error of predicted probabilities (Brier score), split the way an ensemble sees it.

    probs: (K, N, CLASSES) the members' probabilities; y: (N,) labels. Returns (member, ensemble,
    spread): the members' mean error, the error of their mean p̄, and the members' mean squared
    distance from p̄ (their variance). member = ensemble + spread, exactly: averaging removes the
    spread and nothing else.
    """
    target = torch.nn.functional.one_hot(y, probs.shape[-1]).to(probs.dtype)
    mean = probs.mean(0)
    member = ((probs - target) ** 2).sum(-1).mean().item()
    ensemble = ((mean - target) ** 2).sum(-1).mean().item()
    spread = ((probs - mean) ** 2).sum(-1).mean().item()
    return member, ensemble, spread


def chosen_on_validation(runs):
    """What each fix of `regularized_runs()` gives, its setting chosen on the validation set:
    {name: (setting, validation accuracy, test accuracy, train accuracy)} for the baseline (λ = 0,
    last step), early stopping (the λ = 0 run at its best validation step), weight decay (λ of
    LAMBDAS), dropout (p of DROPOUTS) and shifted digits (max_shift of SHIFTS)."""
    base = runs["weight_decay"][0.0]
    at = base.eval_steps.index(base.best_val_step)
    out = {"no regularization": ("λ = 0", base.val_acc[-1], base.final_test_acc, base.train_acc[-1]),
           "early stopping": (f"step {base.best_val_step}", base.val_acc[at], base.test_acc[at], base.train_acc[at])}
    for name, kind, fmt in (("weight decay", "weight_decay", "λ = {:g}"), ("dropout", "dropout", "p = {:g}"),
                            ("shifted digits", "max_shift", "≤ {} px")):
        value, run = max(runs[kind].items(), key=lambda item: item[1].val_acc[-1])
        out[name] = (fmt.format(value), run.val_acc[-1], run.final_test_acc, run.train_acc[-1])
    return out


@torch.no_grad()
def ensemble_errors(runs, split):
    """For the trained members of one ensemble (Histories with .model): their test accuracies, the
    ensemble's (argmax of the mean probability) and brier_split's (member, ensemble, spread)."""
    nets = [run.model for run in runs]
    probs = torch.stack([torch.softmax(net(split.x_test), 1) for net in nets])
    accuracy = (ensemble_predict(nets, split.x_test) == split.y_test).float().mean().item()
    return [run.final_test_acc for run in runs], accuracy, brier_split(probs, split.y_test)


# ----------------------------------------------------------------------------- the fourth family
@torch.no_grad()
def ensemble_predict(models, x):
    """Class predictions of an ensemble: the argmax of the models' mean softmax probabilities."""
    if not models:
        raise ValueError("models=[]: expected at least one model")
    probs = []
    for m in models:
        was_training = m.training
        m.eval()
        probs.append(torch.softmax(m(x), dim=1))
        m.train(was_training)
    return torch.stack(probs).mean(0).argmax(1)


# ----------------------------------------------------------------------------- exercise checkers
def check_generalization_gap(fn):
    """Exercise: fn(model, split) -> train accuracy − test accuracy (a number), measured in eval
    mode, with the model's mode restored afterwards.

    Checked on a seeded MLP with dropout (p = 0.5) that overfits 30 digits, so the two accuracies
    differ clearly. It is handed over in training mode, as after training: a function that forgets
    model.eval() predicts with dropout on (another, random number), and one that leaves the model
    in eval mode changes the caller's model; both get a ✗ line that says so.
    """
    name = "generalization_gap"
    split = data.digits(n_train=30, seed=1)
    with torch.random.fork_rng():                # seeded, without touching the notebook's RNG
        torch.manual_seed(20)
        model = models.mlp([PIXELS, 32, CLASSES], dropout=0.5)
        train.fit(model, split, steps=60, batch_size=30, lr=0.01, optimizer="adam", eval_every=60,
                  seed=20)
        model.train()
        expected = generalization_gap(model, split)
        modes = []                               # model.training at each forward pass of fn
        hook = model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
        line = io.StringIO()                     # exercise_number's line, printed unless a mode is wrong
        try:
            with contextlib.redirect_stdout(line):
                result = check.exercise_number(name, fn, (model, split), expected,
                                               "train accuracy − test accuracy (eval mode)", atol=1e-6)
        finally:
            hook.remove()
    if any(modes):
        return check.failed(name, "the model predicted in training mode, with dropout on: call "
                                  "model.eval() before predicting")
    if result and not model.training:
        return check.failed(name, "the gap is right, but the model was left in eval mode: restore the "
                                  "mode it was in (model.train(was_training))", 0.0)
    print(line.getvalue(), end="")
    return result


def check_ensemble_predict(fn):
    """Exercise: fn(models, x) -> predicted classes, argmax of the mean softmax.

    Three seeded MLPs of different confidence (so averaging logits or voting gives other answers).
    """
    x = data.digits(n_train=200, seed=2).x_train.double()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(21)
        nets = [models.mlp([PIXELS, 16, CLASSES]).double() for _ in range(3)]
        for net, scale in zip(nets, (0.5, 3.0, 8.0)):
            net[-1].weight.mul_(scale)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(net(x), 1) for net in nets]).mean(0).argmax(1)
        try:
            got = fn(nets, x.clone())
            got = None if got is None else torch.as_tensor(got).detach().long().flatten()
        except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
            return check.raised("ensemble_predict", e)
    if got is None or got.shape != expected.shape:
        return check.failed("ensemble_predict", f"expected {len(expected)} class indices, "
                            f"got {None if got is None else tuple(got.shape)}")
    wrong = (got != expected).nonzero().flatten()
    if len(wrong) == 0:
        return check.passed("ensemble_predict",
                            f"all {len(expected)} predictions match the argmax of the mean softmax")
    i = wrong[0].item()
    return check.failed("ensemble_predict",
                        f"{len(wrong)} of {len(expected)} predictions differ from the argmax of the mean "
                        f"softmax (image {i}: expected class {expected[i].item()}, got {got[i].item()})",
                        float(len(wrong)))
