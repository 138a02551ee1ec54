"""Bad input raises ValueError naming the argument (and the value received), never a silent wrong
answer or a traceback from deep inside torch (normkit/validate.py)."""
import re

import pytest
import torch
from torch import nn

import normkit as nk
import normkit.functional as F
from normkit import data, manual, models, regularize, train

X2 = torch.randn(4, 3)
X3 = torch.randn(4, 3, 5)
X4 = torch.randn(2, 3, 4, 4)
C3 = torch.ones(3)

CASES = {
    # batch norm in training needs more than one value per channel
    "bn-one-value-NC": (lambda: F.batch_norm(torch.randn(1, 3), None, None, training=True), r"^input: .*1 value"),
    "bn-one-value-NCHW": (lambda: F.batch_norm(torch.randn(1, 3, 1, 1), C3 * 0, C3.clone(), training=True),
                          r"^input: .*\(1, 3, 1, 1\)"),
    "bn1d-module-one-sample": (lambda: nk.BatchNorm1d(3)(torch.randn(1, 3)), r"^input: .*more than 1 value"),
    "in-one-position": (lambda: F.instance_norm(torch.randn(2, 3, 1)), r"^input: .*\(2, 3, 1\)"),
    # groups must divide channels
    "gn-groups": (lambda: F.group_norm(torch.randn(2, 6, 4), 4), r"^num_groups=4: .*num_channels=6"),
    "gn-groups-zero": (lambda: F.group_norm(torch.randn(2, 6, 4), 0), r"^num_groups=0"),
    "gn-module-groups": (lambda: nk.GroupNorm(4, 6), r"^num_groups=4: .*divisor.*num_channels=6"),
    # p outside [0, 1]
    "dropout-p-neg": (lambda: F.dropout(X2, -0.1), r"^p=-0\.1: .*\[0\.0, 1\.0\]"),
    "dropout-p-big": (lambda: F.dropout(X2, 1.5), r"^p=1\.5"),
    "dropout-p-nan": (lambda: F.dropout(X2, float("nan")), r"^p=nan"),
    "dropout-p-eval": (lambda: F.dropout(X2, 2.0, training=False), r"^p=2\.0"),
    "dropout-module-p": (lambda: nk.Dropout(1.01), r"^p=1\.01"),
    # negative lam, sigma, eps
    "l2-lam": (lambda: regularize.l2_penalty([X2], -0.1), r"^lam=-0\.1: .*>= 0"),
    "l1-lam": (lambda: regularize.l1_penalty([X2], -1), r"^lam=-1"),
    "noise-sigma": (lambda: F.gaussian_noise(X2, -0.5), r"^sigma=-0\.5"),
    "noise-module-sigma": (lambda: nk.GaussianNoise(-1.0), r"^sigma=-1\.0"),
    "bn-eps": (lambda: F.batch_norm(X2, None, None, training=True, eps=-1e-5), r"^eps=-1e-05"),
    "ln-eps": (lambda: F.layer_norm(X2, 3, eps=-1.0), r"^eps=-1\.0"),
    "gn-eps": (lambda: F.group_norm(X3, 3, eps=-1.0), r"^eps=-1\.0"),
    "in-eps": (lambda: F.instance_norm(X3, eps=-1.0), r"^eps=-1\.0"),
    "rms-eps": (lambda: F.rms_norm(X2, 3, eps=-1.0), r"^eps=-1\.0"),
    "bn-module-eps": (lambda: nk.BatchNorm1d(3, eps=-1.0), r"^eps=-1\.0"),
    "in-module-eps": (lambda: nk.InstanceNorm2d(3, eps=-1.0), r"^eps=-1\.0"),
    "ln-module-eps": (lambda: nk.LayerNorm(3, eps=-1.0), r"^eps=-1\.0"),
    "gn-module-eps": (lambda: nk.GroupNorm(1, 3, eps=-1.0), r"^eps=-1\.0"),
    "rms-module-eps": (lambda: nk.RMSNorm(3, eps=-1.0), r"^eps=-1\.0"),
    "soft-threshold-t": (lambda: regularize.soft_threshold(X2, -0.1), r"^t=-0\.1"),
    "decay-groups": (lambda: regularize.decay_groups(nn.Linear(2, 2), -1e-4), r"^weight_decay=-0\.0001"),
    # momentum outside [0, 1]
    "bn-momentum": (lambda: F.batch_norm(X2, C3 * 0, C3.clone(), training=True, momentum=1.5),
                    r"^momentum=1\.5: .*\[0\.0, 1\.0\]"),
    "bn-momentum-neg": (lambda: F.batch_norm(X2, C3 * 0, C3.clone(), training=True, momentum=-0.1),
                        r"^momentum=-0\.1"),
    "in-momentum": (lambda: F.instance_norm(X3, momentum=2.0), r"^momentum=2\.0"),
    "bn-module-momentum": (lambda: nk.BatchNorm2d(3, momentum=1.1), r"^momentum=1\.1"),
    "in-module-momentum": (lambda: nk.InstanceNorm2d(3, momentum=-0.5), r"^momentum=-0\.5"),
    # wrong number of dimensions
    "bn-ndim": (lambda: F.batch_norm(torch.randn(5), None, None, training=True), r"^input: .*\(5,\)"),
    "gn-ndim": (lambda: F.group_norm(torch.randn(6), 2), r"^input: .*\(6,\)"),
    "in-ndim": (lambda: F.instance_norm(X2), r"^input: .*\(4, 3\)"),
    "bn1d-module-ndim": (lambda: nk.BatchNorm1d(3)(X4), r"^input: BatchNorm1d expected .*\(2, 3, 4, 4\)"),
    "bn2d-module-ndim": (lambda: nk.BatchNorm2d(3)(X3), r"^input: BatchNorm2d expected .*\(4, 3, 5\)"),
    "in-module-ndim": (lambda: nk.InstanceNorm2d(3)(X2), r"^input: InstanceNorm2d expected .*\(4, 3\)"),
    "in1d-module-ndim": (lambda: nk.InstanceNorm1d(3)(X4), r"^input: InstanceNorm1d expected .*\(2, 3, 4, 4\)"),
    "bn3d-module-ndim": (lambda: nk.BatchNorm3d(3)(X4), r"^input: BatchNorm3d expected .*\(2, 3, 4, 4\)"),
    "in-module-unbatched-channels": (lambda: nk.InstanceNorm2d(3, affine=True)(torch.randn(4, 2, 2)),
                                     r"^input: expected 3 channels .*dim 0"),
    "bn-empty-batch": (lambda: F.batch_norm(torch.randn(0, 3), None, None, training=True), r"^input: .*\(0, 3\)"),
    "in-empty-running": (lambda: F.instance_norm(torch.randn(0, 3, 4), C3 * 0, C3.clone()), r"^input: .*non-empty"),
    "bn-not-a-tensor": (lambda: F.batch_norm([[1.0, 2.0]], None, None), r"^input: .*list"),
    # wrong number of channels
    "bn1d-module-channels": (lambda: nk.BatchNorm1d(3)(torch.randn(4, 5)), r"^input: expected 3 channels.*\(4, 5\)"),
    "bn2d-module-channels": (lambda: nk.BatchNorm2d(3)(torch.randn(2, 4, 3, 3)), r"^input: expected 3 channels"),
    "in-module-channels": (lambda: nk.InstanceNorm2d(3, affine=True)(torch.randn(2, 4, 3, 3)),
                           r"^input: expected 3 channels"),
    "gn-module-channels": (lambda: nk.GroupNorm(2, 4)(torch.randn(2, 6, 3)), r"^input: expected 4 channels"),
    "bn-running-mean": (lambda: F.batch_norm(X2, torch.zeros(4), torch.ones(3)), r"^running_mean: expected 3"),
    "bn-running-var": (lambda: F.batch_norm(X2, torch.zeros(3), torch.ones(2)), r"^running_var: expected 3"),
    "bn-weight": (lambda: F.batch_norm(X2, None, None, torch.ones(5), training=True), r"^weight: expected 3"),
    "bn-bias": (lambda: F.batch_norm(X2, None, None, None, torch.ones(2), training=True), r"^bias: expected 3"),
    "gn-weight": (lambda: F.group_norm(X3, 3, torch.ones(2)), r"^weight: expected 3"),
    "in-weight": (lambda: F.instance_norm(X3, weight=torch.ones(4)), r"^weight: expected 3"),
    "bn-eval-no-stats": (lambda: F.batch_norm(X2, None, None, training=False), r"^running_mean/running_var"),
    # normalized_shape that does not match the trailing dims
    "ln-shape": (lambda: F.layer_norm(X3, (3, 4)), r"^normalized_shape=\(3, 4\): .*\(4, 3, 5\)"),
    "ln-shape-int": (lambda: F.layer_norm(X3, 4), r"^normalized_shape=\(4,\)"),
    "ln-shape-too-long": (lambda: F.layer_norm(torch.randn(5), (2, 5)), r"(normalized_shape|input).*\(5,\)"),
    "ln-weight-shape": (lambda: F.layer_norm(X3, 5, torch.ones(4)), r"^weight: expected shape \(5,\)"),
    "rms-shape": (lambda: F.rms_norm(X3, (4,)), r"^normalized_shape=\(4,\)"),
    "rms-weight-shape": (lambda: F.rms_norm(X3, 5, torch.ones(3)), r"^weight: expected shape \(5,\)"),
    "ln-module-shape": (lambda: nk.LayerNorm(5)(torch.randn(2, 4)), r"^normalized_shape=\(5,\)"),
    "rms-module-shape": (lambda: nk.RMSNorm((2, 3))(torch.randn(2, 3, 2)), r"^normalized_shape=\(2, 3\)"),
    # module constructors
    "bn-module-features": (lambda: nk.BatchNorm1d(0), r"^num_features=0"),
    "in-module-features": (lambda: nk.InstanceNorm2d(-2), r"^num_features=-2"),
    # weight norm
    "wn-name": (lambda: nk.weight_norm(nn.Linear(2, 2), name="gamma"), r"^name='gamma'"),
    "wn-dim": (lambda: nk.weight_norm(nn.Linear(2, 2), dim=2), r"^dim=2"),
    # manual
    "manual-x-ndim": (lambda: manual.batch_norm_forward(X3, C3, C3), r"^x: expected an \(N, D\)"),
    "manual-gamma": (lambda: manual.layer_norm_forward(X2, torch.ones(4), C3), r"^gamma: expected shape \(3,\)"),
    "manual-beta": (lambda: manual.batch_norm_forward(X2, C3, torch.ones(2)), r"^beta: expected shape \(3,\)"),
    "manual-one-row": (lambda: manual.batch_norm_forward(torch.randn(1, 3), C3, C3), r"^x: .*more than 1 row"),
    # data, train, models
    "digits-test-size": (lambda: data.digits(test_size=0), r"^test_size=0"),
    "digits-n-train": (lambda: data.digits(n_train=5000), r"^n_train=5000"),
    "digits-label-noise": (lambda: data.digits(label_noise=1.5), r"^label_noise=1\.5"),
    "seed-loss-lam": (lambda: data.seed_loss_minimum(-0.5), r"^lam=-0\.5"),
    "ridge-lam": (lambda: data.Quadratic2D().ridge(-1.0), r"^lam=-1\.0"),
    "lasso-lam": (lambda: data.Quadratic2D().lasso(-1.0), r"^lam=-1\.0"),
    "covariate-n": (lambda: data.covariate_shift(n=0), r"^n=0"),
    "mlp-activation": (lambda: models.mlp([4, 2], activation="gelu"), r"^activation='gelu'"),
    "mlp-sizes": (lambda: models.mlp([4]), r"^sizes=\[4\]"),
    "mlp-norm": (lambda: models.mlp([4, 3, 2], norm="group"), r"^norm='group'"),
    "cnn-norm": (lambda: models.cnn(norm="rms"), r"^norm='rms'"),
}

_SPLIT = data.Split(torch.randn(100, 4), torch.zeros(100, dtype=torch.long), torch.randn(5, 4),
                    torch.zeros(5, dtype=torch.long))
FIT_CASES = {
    "fit-steps": (dict(steps=0), r"^steps=0"),
    "fit-batch": (dict(batch_size=101), r"^batch_size=101: .*\[1, 100\]"),
    "fit-lr": (dict(lr=-0.1), r"^lr=-0\.1"),
    "fit-optimizer": (dict(optimizer="rmsprop"), r"^optimizer='rmsprop'"),
    "fit-watch": (dict(watch=["nope"]), r"^watch: .*'nope'"),
    "fit-schedule": (dict(schedule="step"), r"^schedule='step': expected None or 'cosine'"),
    "fit-eval-every": (dict(eval_every=0), r"^eval_every=0: expected a positive int"),
    "fit-callback-every": (dict(callback_every=1.5), r"^callback_every=1.5: expected a positive int"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_raises_value_error(name):
    fn, pattern = CASES[name]
    with pytest.raises(ValueError, match=pattern):
        fn()


@pytest.mark.parametrize("name", list(FIT_CASES))
def test_fit_bad_arguments(name):
    kwargs, pattern = FIT_CASES[name]
    with pytest.raises(ValueError, match=pattern):
        train.fit(nn.Linear(4, 2), _SPLIT, **{"steps": 2, **kwargs})


def test_messages_say_what_was_expected():
    """Not just the name: the value received and the expectation, in one readable sentence."""
    with pytest.raises(ValueError) as info:
        F.group_norm(torch.randn(2, 6, 4), 4)
    assert "expected" in str(info.value)
    with pytest.raises(ValueError) as info:
        nk.BatchNorm2d(3)(torch.randn(2, 4, 3, 3))
    msg = str(info.value)
    assert "expected 3 channels" in msg and "(2, 4, 3, 3)" in msg


def test_batch_norm_training_with_one_value_does_not_touch_running_stats():
    rm, rv = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError):
        F.batch_norm(torch.randn(1, 3), rm, rv, training=True)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))


@pytest.mark.parametrize("fn", [
    lambda: F.batch_norm(torch.randn(1, 3), None, None, training=False, momentum=0.1),
    lambda: nk.BatchNorm1d(3).eval()(torch.randn(1, 3)),            # eval: a single sample is fine
    lambda: F.dropout(torch.randn(3), 0.0),
    lambda: F.dropout(torch.randn(3), 1.0),
    lambda: F.gaussian_noise(torch.randn(3), 0.0),
    lambda: nk.BatchNorm1d(3, momentum=None),
    lambda: nk.BatchNorm1d(3, momentum=0.0),
    lambda: nk.RMSNorm(3, eps=None),
    lambda: F.layer_norm(torch.randn(2, 3), [3]),
    lambda: F.group_norm(torch.randn(2, 3), 3),
])
def test_boundary_values_are_accepted(fn):
    """The checks are not over-eager: the ends of every range are valid."""
    try:
        fn()
    except ValueError as e:
        if "running_mean/running_var" not in str(e):      # the first case has no running stats
            raise


def test_error_names_match_torch_argument_names():
    """Every argument named in an error is a real parameter name of the function raising it."""
    import inspect
    for name, (_fn, pattern) in CASES.items():
        head = re.match(r"\^?\(?(\w+)", pattern).group(1)
        assert head in {"input", "x", "gamma", "beta", "weight", "bias", "running_mean", "running_var",
                        "normalized_shape", "num_groups", "num_features", "p", "lam", "sigma", "eps",
                        "momentum", "t", "weight_decay", "name", "dim", "test_size", "n_train",
                        "label_noise", "n", "activation", "sizes", "norm"}, name
    assert "num_groups" in inspect.signature(F.group_norm).parameters
    assert "normalized_shape" in inspect.signature(F.layer_norm).parameters
