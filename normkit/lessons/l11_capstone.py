"""Notebook 11 (capstone): beat notebook 01's overfitting set-up with every technique of the course.

The set-up is `normkit.overfitting` (a wide MLP, 200 training digits of which 30 % carry a wrong
label, 300 validation digits, 497 test digits). This module turns its `run` into the results table
the student fills:

- `SETTINGS` / `TECHNIQUES`: the six techniques and the setting that switches each on
  (`weight_decay`, `dropout`, `norm="batch"`, `input_noise`, `max_shift`, `early_stopping=True`);
- `history(**settings)`: one seeded training run (cached); `plot_run` draws its three accuracy curves;
- `evaluate(**settings)`: that run read out as a `Result` (validation, test and training accuracy,
  the step read); with `early_stopping` at the step of the best validation accuracy;
- `ResultsTable`: `sweep` tries settings and prints their *validation* accuracy only, `choose`
  records the student's choices and explanations, the table renders itself (markdown) and `plot`
  draws test accuracy against the baseline;
- the checker `check_table(table)`.

Every configuration is trained once per kernel (cached, seeded): the checker compares each row with
what its settings really give.
"""
import functools
import itertools
import numbers
from dataclasses import dataclass

import matplotlib.pyplot as plt

from .. import check, overfitting

__all__ = ["SEED", "SETTINGS", "TECHNIQUES", "Result", "history", "evaluate", "plot_run", "describe", "ResultsTable",
           "check_table"]

SEED = 0                    # weights, batch order, masks, noise, shifts: one seed for every row

# setting -> (technique, what its value means); a setting at 0 / None / False is switched off
SETTINGS = {
    "weight_decay": ("weight decay", "AdamW's decoupled decay λ (> 0)"),
    "dropout": ("dropout", "drop probability p after the hidden layer, in (0, 1)"),
    "norm": ("batch norm", '"batch": batch norm before the ReLU'),
    "input_noise": ("input noise", "std σ of Gaussian noise on the pixels (> 0; pixels are in [0, 1])"),
    "max_shift": ("augmentation", "shift each training image by up to this many whole pixels (1, 2 or 3)"),
    "early_stopping": ("early stopping", "True: keep the step with the best validation accuracy"),
}
TECHNIQUES = tuple(technique for technique, _ in SETTINGS.values())
_STRENGTH = ("weight_decay", "dropout", "input_noise", "max_shift")     # the settings with a strength to tune


def _normalize(settings):
    """The switched-on settings as a sorted tuple of (name, value); ValueError on a bad one."""
    out = {}
    for name, value in settings.items():
        if name not in SETTINGS:
            raise ValueError(f"{name}={value!r}: expected a setting among {list(SETTINGS)}")
        if name == "norm":
            if value not in (None, "batch"):
                raise ValueError(f'norm={value!r}: expected "batch" (batch norm) or None')
        elif name == "early_stopping":
            if not isinstance(value, bool):
                raise ValueError(f"early_stopping={value!r}: expected True or False")
        elif name == "max_shift":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 3:
                raise ValueError(f"max_shift={value!r}: expected a whole number of pixels, 0 to 3")
        else:
            hi = 1.0 if name == "dropout" else None
            if (not isinstance(value, numbers.Real) or isinstance(value, bool) or value != value or value < 0
                    or (hi is not None and value >= hi)):
                raise ValueError(f"{name}={value!r}: expected {SETTINGS[name][1]}")
            value = float(value)
        if value:
            out[name] = value
    return tuple(sorted(out.items()))


def describe(settings):
    """A row's settings as text: "weight_decay=3, dropout=0.5" (the baseline: "none")."""
    pairs = settings.items() if isinstance(settings, dict) else settings
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in pairs) or "none"


@dataclass(frozen=True)
class Result:
    """One configuration, read out: accuracies (fractions) at `step`, the step the model is kept at."""
    settings: tuple         # sorted (name, value) pairs of the switched-on settings
    val_acc: float
    test_acc: float
    train_acc: float
    step: int

    @property
    def techniques(self):
        """The techniques switched on, in the order of TECHNIQUES."""
        on = {SETTINGS[name][0] for name, _ in self.settings}
        return tuple(t for t in TECHNIQUES if t in on)

    def __str__(self):
        return describe(self.settings)


@functools.lru_cache(maxsize=None)
def _history(run_settings, seed):
    return overfitting.run(**dict(run_settings), seed=seed)


def history(seed=SEED, **settings):
    """The train.History of the set-up with these settings (`overfitting.run`, seeded, cached);
    early_stopping does not change the run, only the step it is read at."""
    return _history(tuple((k, v) for k, v in _normalize(settings) if k != "early_stopping"), seed)


def evaluate(seed=SEED, **settings):
    """Train the set-up with these settings and read it out as a Result: at the last step, or with
    early_stopping=True at the step of the best validation accuracy (the first of ties).
    Cached: each configuration is trained once per kernel (~0.2–0.7 s)."""
    key = _normalize(settings)
    hist = history(seed, **settings)
    early = dict(key).get("early_stopping", False)
    i = hist.eval_steps.index(hist.best_val_step) if early else len(hist.eval_steps) - 1
    return Result(key, hist.val_acc[i], hist.test_acc[i], hist.train_acc[i], hist.eval_steps[i])


def plot_run(**settings):
    """Training, validation and test accuracy of one run against the step, the early-stopping
    step marked; returns the figure."""
    hist = history(**settings)
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    ax.plot(hist.eval_steps, hist.train_acc, "-", color="C3", lw=2, label="training (30 % wrong labels)")
    ax.plot(hist.eval_steps, hist.val_acc, "--", color="C0", lw=2, label="validation")
    ax.plot(hist.eval_steps, hist.test_acc, ":", color="k", lw=2, label="test")
    best = hist.best_val_step
    ax.axvline(best, color="0.4", lw=1)
    ax.plot([best], [max(hist.val_acc)], "o", ms=9, mfc="none", mec="C0", mew=2,
            label=f"best validation: step {best} (early stopping)")
    ax.axhline(1 - overfitting.LABEL_NOISE, color="C3", ls="-.", lw=1, label="share of right training labels")
    ax.set(xlabel="training step", ylabel="accuracy (fraction)", ylim=(0, 1.03),
           title=f"{describe(_normalize(settings)) if settings else 'The baseline'}: "
                 "it memorizes the wrong labels")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


# ----------------------------------------------------------------------------- the results table
class ResultsTable:
    """The student's results table on the overfitting set-up.

        table = ResultsTable()                           # row 0: the baseline
        table.sweep(weight_decay=[0.1, 1, 10])           # tries each, prints the validation accuracy only
        table.sweep(dropout=[0.2, 0.5], input_noise=[0.1, 0.3])   # every combination of the lists
        table.choose({"weight decay": ({"weight_decay": 1.0}, "why it is chosen, what it did")})
        table                                            # the table: validation, test, training accuracy
        table.plot()                                     # test accuracy of each row against the baseline

    Every configuration tried (by `sweep` or `choose`) is kept in `tried`; `chosen` maps a row's
    label to (Result, explanation). The final pick is the chosen row with the highest validation
    accuracy: its test accuracy is the number to report.
    """

    def __init__(self):
        self.baseline = evaluate()
        self.tried = {}             # settings -> Result
        self.chosen = {}            # label -> (Result, why)

    def _try(self, settings):
        result = evaluate(**settings)
        self.tried[result.settings] = result
        return result

    def sweep(self, **values):
        """Train every combination of the given values (each a list, or one value; an empty list
        leaves that setting off) and print the validation accuracy of each, best first. The test
        accuracy is not shown: choose on validation."""
        lists = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in values.items()}
        lists = {k: v for k, v in lists.items() if v}          # an empty list: that setting stays off
        if lists:
            results = [self._try(dict(zip(lists, combo))) for combo in itertools.product(*lists.values())]
            width = max(len(str(r)) for r in results)
            for r in sorted(results, key=lambda r: -r.val_acc):
                print(f"{str(r):<{width}}  validation accuracy {r.val_acc:.3f}  (step {r.step})")

    def choose(self, choices):
        """Record the chosen rows: {label: (settings dict, explanation)}. A row with empty settings
        is not chosen yet and is left out."""
        for label, (settings, why) in choices.items():
            if not isinstance(settings, dict):
                raise ValueError(f"{label!r}: expected (settings dict, explanation), got {settings!r}")
            if settings:
                self.chosen[label] = (self._try(settings), why)

    @property
    def final(self):
        """(label, Result) of the chosen row with the highest validation accuracy (None if none)."""
        if not self.chosen:
            return None
        label = max(self.chosen, key=lambda k: self.chosen[k][0].val_acc)
        return label, self.chosen[label][0]

    def rows(self):
        """(label, Result, why, tried in its group) of the baseline and every chosen row."""
        group = {}
        for r in self.tried.values():
            group[r.techniques] = group.get(r.techniques, 0) + 1
        out = [("baseline", self.baseline, "no regularization: what we set out to beat", 1)]
        return out + [(label, r, why, group.get(r.techniques, 0)) for label, (r, why) in self.chosen.items()]

    def _lines(self):
        final = self.final[0] if self.final else None
        base = self.baseline.test_acc
        head = ["row", "settings", "tried", "train acc", "val acc", "test acc", "test − baseline", "step", "why"]
        body = [[("★ " if label == final else "") + label, describe(r.settings), str(n), f"{r.train_acc:.3f}",
                 f"{r.val_acc:.3f}", f"{r.test_acc:.3f}", f"{r.test_acc - base:+.3f}", str(r.step), why or "—"]
                for label, r, why, n in self.rows()]
        return head, body

    def _repr_markdown_(self):
        head, body = self._lines()
        cells = [head, ["---"] * len(head)] + [[c.replace("|", "\\|") for c in row] for row in body]
        note = "\n\n★ final pick: the chosen row with the highest validation accuracy." if self.final else ""
        return "\n".join("| " + " | ".join(row) + " |" for row in cells) + note

    def __repr__(self):
        head, body = self._lines()
        widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head) - 1)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1]
                         for row in [head] + body)

    def plot(self):
        """Bar chart: test accuracy of the baseline and of every chosen row (validation as a dot)."""
        rows = self.rows()
        fig, ax = plt.subplots(figsize=(9, 2.2 + 0.45 * len(rows)), layout="constrained")
        y = range(len(rows))
        final = self.final[0] if self.final else None
        for i, (label, r, _, _) in enumerate(rows):
            combined = len(r.techniques) > 1
            ax.barh(i, r.test_acc, color="C1" if combined else "C0", hatch="//" if combined else None,
                    edgecolor="white" if combined else None, alpha=0.5 if label == "baseline" else 0.9)
            ax.text(max(r.test_acc, r.val_acc) + 0.02, i, f"{r.test_acc:.3f}", va="center")
        ax.plot([r.val_acc for _, r, _, _ in rows], list(y), "kD", ms=6, label="validation accuracy")
        ax.axvline(self.baseline.test_acc, color="k", ls="--", lw=1.2, label="baseline test accuracy")
        ax.set_yticks(list(y), [("★ " if label == final else "") + label for label, *_ in rows])
        ax.invert_yaxis()
        ax.set(xlim=(0, 1.1), xlabel="test accuracy (fraction of the 497 test digits)",
               title="Test accuracy of each chosen row (hatched: a combination)")
        fig.legend(loc="outside lower center", ncols=2, frameon=False)
        return fig


# ----------------------------------------------------------------------------- the checker
def _words(text):
    return len(str(text).split()) if isinstance(text, str) and text.strip().upper() != "TODO" else 0


def check_table(table):
    """Exercise: the results table. ✓ when every technique was chosen alone and at least one
    combination too; each technique with a strength was tried at two strengths or more; every row's
    numbers are what its settings give (trained again, seeded, cached); each chosen row is the best
    on validation among the settings tried with the same techniques; the final pick beats the
    baseline on validation; and every chosen row says why in a sentence."""
    name = "results_table"
    if not isinstance(table, ResultsTable):
        return check.failed(name, f"expected a lesson.ResultsTable, got {type(table).__name__}")
    chosen = {label: r for label, (r, _) in table.chosen.items()}
    alone = {r.techniques[0] for r in chosen.values() if len(r.techniques) == 1}
    missing = [t for t in TECHNIQUES if t not in alone]
    if missing:
        return check.failed(name, f"expected a chosen row for each technique alone, got none for: "
                                  f"{', '.join(missing)}")
    combos = [label for label, r in chosen.items() if len(r.techniques) > 1]
    if not combos:
        return check.failed(name, "expected at least one chosen combination of two or more techniques, got none")
    for setting in _STRENGTH:
        technique = SETTINGS[setting][0]
        n = sum(1 for r in table.tried.values() if r.techniques == (technique,))
        if n < 2:
            return check.failed(name, f"expected at least two strengths of {technique} tried alone "
                                      f"(table.sweep({setting}=[...])), got {n}")
    for r in [table.baseline, *table.tried.values(), *chosen.values()]:
        true = evaluate(**dict(r.settings))
        if (r.val_acc, r.test_acc, r.train_acc, r.step) != (true.val_acc, true.test_acc, true.train_acc, true.step):
            return check.failed(name, f"expected val {true.val_acc:.3f}, test {true.test_acc:.3f} at step "
                                      f"{true.step} for {r} (trained again), got val {r.val_acc:.3f}, "
                                      f"test {r.test_acc:.3f} at step {r.step}")
    for label, r in chosen.items():
        rivals = [t for t in table.tried.values() if t.techniques == r.techniques]
        best = max(rivals, key=lambda t: t.val_acc)
        if best.val_acc > r.val_acc:
            return check.failed(name, f"expected {label!r} to be the setting with the best validation accuracy "
                                      f"among those tried with the same techniques ({best}: {best.val_acc:.3f}), "
                                      f"got {r} ({r.val_acc:.3f}): choose on validation, never on test")
    label, pick = table.final
    if pick.val_acc <= table.baseline.val_acc:
        return check.failed(name, f"expected the final pick to beat the baseline's validation accuracy "
                                  f"{table.baseline.val_acc:.3f}, got {label!r}: {pick.val_acc:.3f}")
    for row, (_, why) in table.chosen.items():
        if _words(why) < 4:
            return check.failed(name, f"expected a sentence explaining each chosen row, got {why!r} for {row!r}")
    return check.passed(name, f"{len(alone)} techniques alone and {len(combos)} combination(s), chosen on "
                              f"validation; final pick {label!r}: test {pick.test_acc:.3f} "
                              f"(baseline {table.baseline.test_acc:.3f})")
