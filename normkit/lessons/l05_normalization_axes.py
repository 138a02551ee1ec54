"""Notebook 05 (normalization axes): which axes each normalization averages over, and what follows from it.

    stat_sets("group", (N, C, L), num_groups=2)   # which elements share one mean and variance
    figure_path("norm_cubes.png")                 # a picture of the repository's figures/ folder
    GhostBatchNorm2d(16, ghost_size=2)            # batch statistics over B images of a larger batch
    ghost_cnn(ghost_size)                         # normkit.models.cnn("batch") with ghost batch norm
    train_cnn("batch", 2, data)                   # one run through normkit.train.fit -> train.History
    CNNStack(members)                             # several such CNNs trained as one (one forward pass)
    batch_size_sweep(...)                         # Wu & He 2018 in miniature: BN vs GN vs images per batch
    NormRNN(8, 32, norm="layer")                  # a recurrent net with layer norm (Ba et al. 2016)
    batch_dependence(model, sample, others_a, others_b)
    plot_rnn_batch_dependence(sample, rest)      # its figure: layer norm vs batch norm
    photo(), restyle(img, contrast, brightness)   # an image and a change of its "style"
    plot_instance_norm_styles(styles, inorm)      # styled images and their instance norm
    time_forward_backward(fn, x)                  # milliseconds per forward + backward
    autograd_nodes(y)                             # the backward operations autograd recorded for y

and the exercise checkers `check_norm_dims`, `check_group_norm`, `check_rms_norm`.
"""
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from .. import check, functional, layers, models, train
from ..validate import check_groups, check_int, check_range

__all__ = ["METHODS", "stat_sets", "figure_path", "GhostBatchNorm2d", "ghost_cnn", "train_cnn", "CNNStack",
           "batch_size_sweep", "NormRNN", "batch_dependence", "photo", "restyle",
           "time_forward_backward", "autograd_nodes", "check_norm_dims", "check_group_norm", "check_rms_norm",
           "plot_rnn_batch_dependence", "plot_instance_norm_styles"]

METHODS = ("batch", "layer", "instance", "group")


# ----------------------------------------------------------------------------- the axes
def figure_path(name):
    """The file `name` of the repository's figures/ folder, seen from the notebook's folder (notebooks/,
    where the series runs) or from this package's checkout (an editable install), so that a copy of the
    notebook elsewhere (the instructor edition, a graded release) still finds it."""
    candidates = (Path("..") / "figures" / name, Path(__file__).resolve().parents[2] / "figures" / name)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{name}: not in {', '.join(str(p.parent) for p in candidates)}")


def stat_sets(method, shape, num_groups=None):
    """For an (N, C, L) activation, the id of the statistics set each element belongs to.

    Elements with the same id are standardized with one mean and one variance:
    batch: one set per channel (over N and L); layer: one per sample (over C and L);
    instance: one per sample and channel (over L); group: one per sample and group of C/G channels.
    Returns an int64 tensor of `shape`.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"shape={shape!r}: expected three positive ints (N, C, L)")
    n, c, length = shape
    sample = torch.arange(n).view(n, 1, 1)
    channel = torch.arange(c).view(1, c, 1)
    if method == "batch":
        ids = channel.expand(n, c, length)
    elif method == "layer":
        ids = sample.expand(n, c, length)
    elif method == "instance":
        ids = (sample * c + channel).expand(n, c, length)
    else:
        check_groups(num_groups, c)
        ids = (sample * num_groups + channel // (c // num_groups)).expand(n, c, length)
    return ids.contiguous()


# ----------------------------------------------------------------------------- small batches
class GhostBatchNorm2d(layers.BatchNorm2d):
    """Batch norm whose training statistics come from `ghost_size` images at a time.

    A batch of N = k·ghost_size images is normalized as k separate batches, exactly as k GPUs with
    ghost_size images each compute their own batch statistics (Wu & He 2018's "images per GPU";
    Hoffer et al. 2017 call it ghost batch norm). The running statistics are updated with the
    average of the k batch means and unbiased variances. Evaluation is plain batch norm.
    Same parameters, buffers and state_dict keys as BatchNorm2d.
    """

    def __init__(self, num_features, ghost_size, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        check_int("ghost_size", ghost_size, what="images per statistics batch")
        self.ghost_size = ghost_size

    def forward(self, input):
        self._check_input(input)
        n, c = input.shape[:2]
        if not self.training or n == self.ghost_size:
            return super().forward(input)
        if n % self.ghost_size:
            raise ValueError(f"input: batch of {n} images is not a multiple of ghost_size={self.ghost_size}")
        k = n // self.ghost_size
        momentum = self._momentum()
        # (k·B, C, HW) -> (B, k·C, HW): every (ghost batch, channel) pair becomes its own channel.
        x = input.reshape(k, self.ghost_size, c, -1).transpose(0, 1).reshape(self.ghost_size, k * c, -1)
        rm, rv = ((None, None) if self.running_mean is None
                  else (self.running_mean.repeat(k), self.running_var.repeat(k)))
        w = None if self.weight is None else self.weight.repeat(k)
        b = None if self.bias is None else self.bias.repeat(k)
        y = functional.batch_norm(x, rm, rv, w, b, True, momentum, self.eps)
        if rm is not None:                  # each copy moved towards its own batch: average them
            with torch.no_grad():
                self.running_mean.copy_(rm.view(k, c).mean(0))
                self.running_var.copy_(rv.view(k, c).mean(0))
        return y.reshape(self.ghost_size, k, c, -1).transpose(0, 1).reshape(input.shape)

    def extra_repr(self):
        return super().extra_repr() + f", ghost_size={self.ghost_size}"


def ghost_cnn(ghost_size, channels=16):
    """normkit.models.cnn("batch") with every BatchNorm2d computing statistics over ghost_size images."""
    model = models.cnn("batch", channels=channels)
    for i, m in enumerate(model):
        if isinstance(m, layers.BatchNorm2d):
            model[i] = GhostBatchNorm2d(m.num_features, ghost_size)
    return model


def train_cnn(norm, images_per_batch, data, steps=200, batch_size=32, lr=0.01, groups=4,
              channels=16, eval_every=25, seed=0):
    """Train a small CNN with Adam (cosine learning-rate decay to 0) through `normkit.train.fit`.

    Returns its `train.History`: `test_error` (%, eval mode) at `eval_steps` (every `eval_every`
    steps and at the end), `model`. norm="batch": batch norm whose statistics come from
    `images_per_batch` images (GhostBatchNorm2d); norm="group": group norm with `groups` groups
    (never looks across images, so images_per_batch does not change its computation). Every run
    sees the same `batch_size` images per step in the same order (fit's epoch sampler, seeded by
    `seed`), so the statistics are the only thing that changes.
    """
    if norm not in ("batch", "group"):
        raise ValueError(f"norm={norm!r}: expected 'batch' or 'group'")
    if not isinstance(images_per_batch, int) or images_per_batch < 1 or batch_size % images_per_batch:
        raise ValueError(f"images_per_batch={images_per_batch!r}: expected a positive divisor of "
                         f"batch_size={batch_size}")
    torch.manual_seed(seed)                     # the initial weights
    model = (ghost_cnn(images_per_batch, channels) if norm == "batch"
             else models.cnn("group", channels=channels, groups=groups))
    return train.fit(model, data, steps=steps, batch_size=batch_size, lr=lr, optimizer="adam",
                     schedule="cosine", eval_every=eval_every, eval_train=False, seed=seed)


class CNNStack(nn.Module):
    """Several `models.cnn` networks trained as one: one forward pass, the members stay independent.

    members: networks shaped like models.cnn(norm, channels) with a norm (batch, ghost batch or
    group norm: any module per channel block). Every member sees the same images, so the members'
    first convolutions are one convolution with K·c output channels and their second convolutions
    one grouped convolution (groups=K); each member's norm layers see only its own channels; the
    classifiers are one batched product. forward returns (N, classes, K) logits;
    `train.stacked_cross_entropy` sums the members' mean cross-entropies, so each member's gradient,
    and its Adam update (elementwise), is the one it would get trained alone on the same batches, up
    to rounding. `member(k)` gives member k back as a plain models.cnn network.
    """

    def __init__(self, members):
        super().__init__()
        self.k = len(members)
        self.conv1 = nn.Parameter(torch.cat([m[0].weight.detach() for m in members]))
        self.conv2 = nn.Parameter(torch.cat([m[3].weight.detach() for m in members]))
        self.norm1 = nn.ModuleList(m[1] for m in members)
        self.norm2 = nn.ModuleList(m[4] for m in members)
        self.fc_weight = nn.Parameter(torch.stack([m[-1].weight.detach() for m in members]))
        self.fc_bias = nn.Parameter(torch.stack([m[-1].bias.detach() for m in members]))

    def forward(self, x):
        h = nn.functional.conv2d(x, self.conv1, padding=1)
        h = torch.cat([norm(part) for norm, part in zip(self.norm1, h.chunk(self.k, 1))], 1).relu()
        h = nn.functional.conv2d(h, self.conv2, stride=2, padding=1, groups=self.k)
        h = torch.cat([norm(part) for norm, part in zip(self.norm2, h.chunk(self.k, 1))], 1).relu()
        h = h.mean((2, 3)).view(len(x), self.k, -1)                        # (N, K, 2c): pooled
        return torch.einsum("nkc,koc->nok", h, self.fc_weight) + self.fc_bias.t()

    def member(self, k):
        """Member k as a standalone models.cnn-shaped network (weights copied, norm layers shared)."""
        c = self.conv1.shape[0] // self.k
        conv1 = nn.Conv2d(1, c, 3, padding=1, bias=False)
        conv2 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False)
        fc = nn.Linear(2 * c, self.fc_weight.shape[1])
        with torch.no_grad():
            conv1.weight.copy_(self.conv1[k * c:(k + 1) * c])
            conv2.weight.copy_(self.conv2[2 * k * c:2 * (k + 1) * c])
            fc.weight.copy_(self.fc_weight[k])
            fc.bias.copy_(self.fc_bias[k])
        return nn.Sequential(conv1, self.norm1[k], nn.ReLU(), conv2, self.norm2[k], nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)

    @torch.no_grad()
    def test_error(self, data):
        """Each member's test error in % (eval mode), as a list."""
        was_training = self.training
        self.eval()
        right = self(data.x_test).argmax(1) == data.y_test[:, None]
        self.train(was_training)
        return (100.0 * (1.0 - right.double().mean(0))).tolist()


def batch_size_sweep(data, sizes=(32, 16, 8, 4, 2), steps=150, batch_size=32, lr=0.01, groups=4,
                     channels=16, eval_every=25, seed=0):
    """Wu & He 2018 in miniature: {("batch" | "group", images per batch): train.History}.

    One `CNNStack` holds a CNN with ghost batch norm for every size in `sizes` and one with group
    norm (which never looks across images, so one run serves every size), all from the same
    initial weights as `train_cnn` would make; it trains once through `train.fit` (Adam, cosine
    decay, the same batches as `train_cnn`). Each History has the member's test_acc at eval_steps
    and the member as `model`.
    """
    if any(not isinstance(b, int) or b < 1 or batch_size % b for b in sizes):
        raise ValueError(f"sizes={sizes!r}: expected positive divisors of batch_size={batch_size}")
    members = []
    for b in sizes:
        torch.manual_seed(seed)                 # the initial weights of train_cnn("batch", b)
        members.append(ghost_cnn(b, channels))
    torch.manual_seed(seed)
    members.append(models.cnn("group", channels=channels, groups=groups))
    stack = CNNStack(members)
    errors = []
    # fit's own test accuracy is the members' mean; each member's error is recorded here.
    train.fit(stack, data, steps=steps, batch_size=batch_size, lr=lr, optimizer="adam", schedule="cosine",
              eval_every=None, eval_train=False, callback=lambda model, xb, yb: errors.append(stack.test_error(data)),
              callback_every=eval_every, seed=seed, loss_fn=train.stacked_cross_entropy)
    errors.append(stack.test_error(data))
    eval_steps = list(range(0, steps, eval_every)) + [steps]
    names = [("batch", b) for b in sizes] + ["group"]
    runs = {name: train.History(eval_steps=eval_steps, test_acc=[1.0 - e[k] / 100.0 for e in errors],
                                model=stack.member(k)) for k, name in enumerate(names)}
    gn = runs.pop("group")
    runs.update({("group", b): gn for b in sizes})
    return runs


# ----------------------------------------------------------------------------- sequences
class NormRNN(nn.Module):
    """An Elman RNN, h_t = tanh(norm(W_x x_t + W_h h_{t-1})), returning every h_t: (N, T, hidden).

    norm="layer": layer norm over the hidden units of each sample at each step (Ba et al. 2016);
    norm="batch": batch norm of each unit over the batch at each step (train-mode statistics);
    norm=None: no normalization.
    """

    def __init__(self, input_size, hidden_size, norm="layer"):
        super().__init__()
        if norm not in ("layer", "batch", None):
            raise ValueError(f"norm={norm!r}: expected 'layer', 'batch' or None")
        self.hidden_size = hidden_size
        self.inp = nn.Linear(input_size, hidden_size, bias=norm is None)
        self.rec = nn.Linear(hidden_size, hidden_size, bias=False)
        self.norm = {"layer": lambda: layers.LayerNorm(hidden_size),
                     "batch": lambda: layers.BatchNorm1d(hidden_size),
                     None: nn.Identity}[norm]()

    def forward(self, x):
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(f"x: expected a (N, T, features) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        h = x.new_zeros(len(x), self.hidden_size)
        out = []
        for t in range(x.shape[1]):
            h = torch.tanh(self.norm(self.inp(x[:, t]) + self.rec(h)))
            out.append(h)
        return torch.stack(out, 1)


@torch.no_grad()
def batch_dependence(model, sample, others_a, others_b):
    """Max |output for `sample`| difference when the rest of its batch is others_a vs others_b.

    0 means the model treats every sample on its own (layer, instance, group norm); batch norm in
    training mode mixes the batch into every output.
    """
    out_a = model(torch.cat([sample[None], others_a]))[0]
    out_b = model(torch.cat([sample[None], others_b]))[0]
    return (out_a - out_b).abs().max().item()


# ----------------------------------------------------------------------------- style
def photo(name="china.jpg", size=96):
    """A colour photo that ships with scikit-learn, centre-cropped and resized: (1, 3, size, size) in [0, 1].

    name: "china.jpg" or "flower.jpg". Read straight from the package's files: importing sklearn
    itself takes seconds.
    """
    from importlib.util import find_spec
    from pathlib import Path

    from PIL import Image
    path = Path(find_spec("sklearn").origin).parent / "datasets" / "images" / name
    if name not in ("china.jpg", "flower.jpg") or not path.exists():
        raise ValueError(f"name={name!r}: expected 'china.jpg' or 'flower.jpg' (scikit-learn's sample images)")
    with Image.open(path) as im:
        img = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
    h, w, _ = img.shape
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s].permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(img, size=(size, size), mode="area")


def plot_rnn_batch_dependence(sample, rest):
    """Hidden unit 0 of `sample` over time, run through a `NormRNN` (seed 1) together with each set of
    other sequences in `rest` (names → sequences): layer norm (left) and batch norm in training mode
    (right), the largest change (`batch_dependence`) in each title; returns the figure."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained", sharey=True)
    for ax, norm in zip(axes, ("layer", "batch")):
        torch.manual_seed(1)
        rnn = NormRNN(4, 16, norm=norm)
        for (label, others), style in zip(rest.items(), ("-", "--")):
            out = rnn(torch.cat([sample[None], others])).detach()
            ax.plot(out[0, :, 0], style, lw=2, label=f"sequence 0 batched with {label}")
        change = batch_dependence(rnn, sample, *rest.values())
        ax.set(title=f"{norm} norm RNN: max change {change:.3f}", xlabel="time step",
               ylabel="hidden unit 0 of sequence 0")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2)
    return fig


def restyle(img, contrast=1.0, brightness=0.0, tint=(1.0, 1.0, 1.0)):
    """Change an image's global "style": per channel, x -> contrast·tint_c·(x − mean) + mean + brightness."""
    check_range("contrast", contrast)
    gain = contrast * torch.tensor(tint, dtype=img.dtype).view(1, -1, 1, 1)
    mean = img.mean((2, 3), keepdim=True)
    return (img - mean) * gain + mean + brightness


# ----------------------------------------------------------------------------- timing
def time_forward_backward(fn, x, repeat=30):
    """Median milliseconds of fn(x).sum().backward() over `repeat` runs (after 3 warm-up runs)."""
    x = x.detach().requires_grad_(True)
    times = []
    for i in range(repeat + 3):
        t0 = time.perf_counter()
        fn(x).sum().backward()
        if i >= 3:
            times.append(1e3 * (time.perf_counter() - t0))
        x.grad = None
    return float(np.median(times))


def plot_instance_norm_styles(styles, inorm):
    """Top row: each image of `styles` (names → (1, 3, H, W) images, clipped to [0, 1] for display);
    bottom row: what the instance norm `inorm` makes of it, shown as 0.5 + 0.22·x̂; returns the figure."""
    fig, axes = plt.subplots(2, 4, figsize=(10, 5.6), layout="constrained")
    fig.suptitle("Four styles of one photo (96 × 96 px), and what instance norm makes of them")
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("instance norm\n(shown as 0.5 + 0.22·x̂)")
    for col, (name, im) in enumerate(styles.items()):
        axes[0, col].imshow(im[0].permute(1, 2, 0).clamp(0, 1))
        axes[1, col].imshow((inorm(im)[0].permute(1, 2, 0) * 0.22 + 0.5).clamp(0, 1))
        axes[0, col].set_title(name.replace(", ", ",\n"))
        for ax in axes[:, col]:
            ax.set(xticks=[], yticks=[])
    return fig


def autograd_nodes(output):
    """Names of the backward operations autograd recorded for `output`, from the output back to the inputs.

    One name such as NativeLayerNormBackward0 means one fused kernel; a chain of MulBackward0,
    PowBackward0, … means one pass over the tensor per operation, forward and backward.
    """
    names, seen, todo = [], set(), [output.grad_fn]
    while todo:
        node = todo.pop(0)
        if node is None or node in seen or type(node).__name__ == "AccumulateGrad":
            continue
        seen.add(node)
        names.append(type(node).__name__)
        todo += [nxt for nxt, _ in node.next_functions]
    return names


# ----------------------------------------------------------------------------- exercise checkers
def _x4(seed, shape=(4, 6, 3, 3)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1


def check_norm_dims(fn):
    """Exercise: fn(method) -> the dims of an (N, C, H, W) tensor that one mean averages.

    method is "batch", "layer" or "instance". Each answer standardizes a seeded tensor over those
    dims, which must reproduce torch's batch_norm, layer_norm and instance_norm respectively.
    """
    x = _x4(50)
    tf = torch.nn.functional
    reference = {"batch": tf.batch_norm(x, None, None, training=True),
                 "layer": tf.layer_norm(x, x.shape[1:]), "instance": tf.instance_norm(x)}
    wrong, worst = [], 0.0
    for method, expected in reference.items():
        try:
            answer = fn(method)
            if answer is None:
                return check.failed("norm_dims", f"for {method!r} your function returned None; "
                                                 "expected a tuple of dims")
            dims = tuple(int(d) for d in answer)
            ours = (x - x.mean(dims, keepdim=True)) / (x.var(dims, correction=0, keepdim=True) + 1e-5).sqrt()
            diff = (ours - expected).abs().max().item() if dims else float("inf")
        except Exception as e:  # noqa: BLE001 (a student's error becomes the ✗ line)
            return check.failed("norm_dims", f"for {method!r} your function gave an unusable answer "
                                             f"({type(e).__name__}: {e})")
        worst = max(worst, diff)
        if diff > 1e-8:
            wrong.append(f"{method} {dims}")
    if wrong:
        return check.failed("norm_dims", f"standardizing over these dims does not match torch: {', '.join(wrong)}",
                            worst)
    return check.passed("norm_dims", "batch, layer and instance norm reproduced from your dims "
                                     "(max abs diff ≤ 1e-08)", worst)


def check_group_norm(fn):
    """Exercise: fn(x, num_groups, eps) -> group norm of (N, C, H, W) x, without γ and β."""
    x = _x4(51)
    return check.exercise("group_norm", fn, (x.clone(), 3, 1e-5), torch.nn.functional.group_norm(x, 3, eps=1e-5),
                          "torch.nn.functional.group_norm(x, 3)")


def check_rms_norm(fn):
    """Exercise: fn(x, eps) -> RMS norm of (N, D) x over its last dim, without γ."""
    x = _x4(52, (8, 10))
    return check.exercise("rms_norm", fn, (x.clone(), 1e-6), torch.nn.functional.rms_norm(x, (10,), eps=1e-6),
                          "torch.nn.functional.rms_norm(x, (10,))")
