"""normkit.lessons.l11_capstone (notebook 11): its results table, its checker and its claims."""
import dataclasses
import functools

import pytest

from normkit import data, overfitting
from normkit.lessons import l11_capstone as lesson
from tests.conftest import assert_checker_verdicts

# The strengths a student might sweep, each technique alone; the notebook's seed (lesson.SEED).
GRID = {"weight_decay": [0.3, 1.0, 3.0, 10.0], "dropout": [0.2, 0.5, 0.8], "input_noise": [0.1, 0.3, 0.5],
        "max_shift": [1, 2]}


def _best(table, techniques):
    """The row with the best validation accuracy among those tried with exactly these techniques."""
    return max((r for r in table.tried.values() if r.techniques == techniques), key=lambda r: r.val_acc)


@functools.lru_cache(maxsize=None)
def _swept():
    """A table with every technique swept alone (GRID), the stack of the best strengths, and a
    re-tuned combination at smaller strengths, nothing chosen yet."""
    table = lesson.ResultsTable()
    for setting, values in GRID.items():
        table.sweep(**{setting: values})
    table.sweep(norm="batch")
    table.sweep(early_stopping=True)
    best = {s: dict(_best(table, (lesson.SETTINGS[s][0],)).settings)[s] for s in GRID}
    table.sweep(**best, norm="batch", early_stopping=True)
    table.sweep(dropout=[0.4, 0.7], input_noise=[0.2, 0.3], weight_decay=[0.0, 0.5])
    return table, best


def _retuned(table):
    """The combination best on validation among the re-tuned ones (every combination but the stack)."""
    return max((r for r in table.tried.values() if 1 < len(r.techniques) < len(lesson.TECHNIQUES)),
               key=lambda r: r.val_acc)


def _right_table():
    table, best = _swept()
    right = lesson.ResultsTable()
    right.tried = dict(table.tried)
    choices = {t: (dict(_best(table, (t,)).settings), f"{t} alone, the strength best on validation")
               for t in lesson.TECHNIQUES}
    choices["all stacked"] = ({**best, "norm": "batch", "early_stopping": True},
                              "every technique at its best strength alone: far too much")
    choices["re-tuned"] = (dict(_retuned(table).settings), "smaller strengths chosen together on validation")
    right.choose(choices)
    return right, table, best


# ----------------------------------------------------------------------------- the table
def test_settings_are_validated():
    for bad, match in ((dict(dropout=1.0), "dropout=1.0"), (dict(max_shift=4), "max_shift=4"),
                       (dict(norm="layer"), "norm='layer'"), (dict(lam=1), "lam=1: expected a setting"),
                       (dict(weight_decay=-1), "weight_decay=-1"), (dict(early_stopping=1), "early_stopping=1")):
        with pytest.raises(ValueError, match=match):
            lesson.evaluate(**bad)


def test_evaluate_reads_the_run_at_the_last_or_the_best_validation_step():
    hist = overfitting.run(seed=lesson.SEED)                # trained again, not from the lesson's cache
    last, early = lesson.evaluate(), lesson.evaluate(early_stopping=True)
    assert (last.val_acc, last.test_acc, last.train_acc, last.step) == (
        hist.val_acc[-1], hist.test_acc[-1], hist.train_acc[-1], overfitting.STEPS)
    assert early.step == hist.best_val_step and early.test_acc == hist.test_acc_at_best_val
    assert early.val_acc == max(hist.val_acc)
    assert last.techniques == () and early.techniques == ("early stopping",)
    # switched-off settings are the same row: weight_decay=0 is the baseline
    assert lesson.evaluate(weight_decay=0, dropout=0.0, norm=None) == last


def test_sweep_prints_validation_only_and_an_empty_sweep_trains_nothing(capsys):
    table = lesson.ResultsTable()
    capsys.readouterr()
    table.sweep(weight_decay=[], dropout=[])
    assert capsys.readouterr().out == "" and table.tried == {}
    table.sweep(weight_decay=[1.0, 3.0], dropout=[])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("validation accuracy" in ln and "test" not in ln for ln in out)
    vals = [float(ln.split("validation accuracy ")[1].split()[0]) for ln in out]
    assert vals == sorted(vals, reverse=True) and len(table.tried) == 2


def test_choose_skips_empty_rows_and_the_final_pick_is_best_on_validation():
    table = lesson.ResultsTable()
    table.choose({"weight decay": ({"weight_decay": 3.0}, "x"), "dropout": ({}, ""),
                  "noise": ({"input_noise": 0.5}, "y")})
    assert list(table.chosen) == ["weight decay", "noise"]
    label, pick = table.final
    assert pick.val_acc == max(r.val_acc for r, _ in table.chosen.values())
    assert f"★ {label}" in table._repr_markdown_() and f"★ {label}" in repr(table)
    assert lesson.ResultsTable().final is None
    with pytest.raises(ValueError, match="expected \\(settings dict, explanation\\)"):
        table.choose({"bad": ("weight_decay=1", "why")})


def test_plot_draws_a_bar_per_row():
    right, *_ = _right_table()
    fig = right.plot()
    ax = fig.axes[0]
    assert len(ax.patches) == len(right.chosen) + 1
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "baseline"
    assert sum(p.get_hatch() == "//" for p in ax.patches) == 2         # the two combinations


# ----------------------------------------------------------------------------- the checker
def test_check_table_verdicts(capsys):
    right, *_ = _right_table()

    def variant(edit):
        wrong = lesson.ResultsTable()
        wrong.tried, wrong.chosen = dict(right.tried), dict(right.chosen)
        edit(wrong)
        return wrong

    def fake(t):                                   # numbers that the settings do not give
        r, why = t.chosen["dropout"]
        t.chosen["dropout"] = (dataclasses.replace(r, test_acc=r.test_acc + 0.05), why)

    def test_chosen(t):                            # a strength that is not the best on validation
        rivals = sorted((r for r in t.tried.values() if r.techniques == ("weight decay",)), key=lambda r: r.val_acc)
        t.chosen["weight decay"] = (rivals[0], "it had the best test accuracy")

    def missing(t):
        del t.chosen["augmentation"]

    def one_strength(t):
        kept = t.chosen["input noise"][0]
        t.tried = {k: r for k, r in t.tried.items() if r.techniques != ("input noise",) or r is kept}

    def no_combination(t):
        for label in ("all stacked", "re-tuned"):
            del t.chosen[label]

    def no_reason(t):
        t.chosen["batch norm"] = (t.chosen["batch norm"][0], "TODO")

    for edit, message in ((fake, "(trained again)"), (test_chosen, "choose on validation"),
                          (missing, "none for: augmentation"), (one_strength, "two strengths of input noise"),
                          (no_combination, "at least one chosen combination"), (no_reason, "a sentence explaining")):
        assert_checker_verdicts(lesson.check_table, right, variant(edit), capsys)
        assert not lesson.check_table(variant(edit))
        assert message in capsys.readouterr().out, edit.__name__
    assert not lesson.check_table("my table")
    assert "expected a lesson.ResultsTable, got str" in capsys.readouterr().out


def test_the_template_table_is_rejected_cheaply(capsys):
    """The committed notebook: nothing swept, nothing chosen; ✗ names what is missing."""
    table = lesson.ResultsTable()
    table.choose({t: ({}, "") for t in lesson.TECHNIQUES})
    assert not lesson.check_table(table) and table.tried == {}
    assert "none for: weight decay, dropout, batch norm" in capsys.readouterr().out


# ----------------------------------------------------------------------------- claims of notebook 11
# The notebook's seed, bands that hold on every kernel path we ran.
def test_claim_the_set_up_is_the_one_the_notebook_describes():
    """'An MLP with 256 hidden ReLU units learns from 200 digits of which 30 % carry a wrong label';
    300 validation and 497 test digits; '250 steps of 32 images'; 'the best of 26 validation evaluations'."""
    split = overfitting.split()
    assert (len(split.x_train), len(split.x_val), len(split.x_test)) == (200, 300, 497)
    assert overfitting.LABEL_NOISE == 0.3 and overfitting.WIDTH == 256
    assert (overfitting.STEPS, overfitting.BATCH_SIZE) == (250, 32) and len(lesson.history().val_acc) == 26


def test_claim_sixty_of_the_200_training_labels_are_wrong():
    noisy, clean = overfitting.split(), data.digits(n_train=overfitting.N_TRAIN, val_size=overfitting.VAL_SIZE)
    assert (noisy.x_train == clean.x_train).all()
    assert (noisy.y_train != clean.y_train).sum().item() == 60


def test_claim_the_baseline_memorizes_and_its_held_out_accuracy_peaks_early():
    """'The training accuracy climbs to about 1; validation and test accuracy peak within the first
    60 steps, then fall by about 0.1; the gap at the end is about 0.3; early stopping keeps the peak.'"""
    hist, last, early = lesson.history(), lesson.evaluate(), lesson.evaluate(early_stopping=True)
    assert last.train_acc >= 0.98 and 0.62 < last.test_acc < 0.78                  # 0.995, 0.704
    assert early.step <= 60 and 0.06 < max(hist.test_acc) - last.test_acc < 0.16    # step 40, 0.11
    assert 0.22 < last.train_acc - last.test_acc < 0.38                            # 0.29
    assert early.test_acc > last.test_acc + 0.05 and early.val_acc > last.val_acc + 0.08


def test_claim_every_technique_but_batch_norm_beats_the_baseline_alone():
    """'Not every technique manages to beat the baseline'; 'weight decay, dropout, input noise and
    augmentation, each tuned on validation, lift the held-out accuracy above the baseline's last step'.
    Measured (seed 0): test 0.79–0.86 against 0.70; early stopping 0.81; batch norm 0.71."""
    table, _ = _swept()
    base = table.baseline
    for technique in ("weight decay", "dropout", "input noise", "augmentation", "early stopping"):
        r = _best(table, (technique,))
        assert r.test_acc > base.test_acc + 0.05 and r.val_acc > base.val_acc + 0.05, technique
    bn = _best(table, ("batch norm",))
    assert abs(bn.test_acc - base.test_acc) < 0.03 and bn.train_acc > 0.97          # it still memorizes


def test_claim_naive_stacking_over_regularizes_and_re_tuning_repairs_it():
    """'Strengths tuned one at a time over-regularize when stacked: the stacked network cannot even
    fit the right labels. A combination has to be tuned together, usually at smaller strengths.'
    Measured (seed 0): stacked train 0.41 / test 0.53; re-tuned test 0.84, best single 0.86."""
    table, best = _swept()
    stacked = lesson.evaluate(**best, norm="batch", early_stopping=True)
    singles = [_best(table, (t,)) for t in lesson.TECHNIQUES]
    best_single = max(singles, key=lambda r: r.val_acc)
    retuned = _retuned(table)
    assert stacked.train_acc < 0.6                        # below the 0.7 of the right labels
    assert stacked.test_acc < table.baseline.test_acc and stacked.val_acc < table.baseline.val_acc
    assert retuned.test_acc > stacked.test_acc + 0.2 and retuned.test_acc > best_single.test_acc - 0.04


# ----------------------------------------------------------------------------- the answer key
def _model_answer():
    """The table of instructor/answers/11_capstone.md: its code blocks run in order, as in the edition."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "instructor" / "edition.py"
    spec = importlib.util.spec_from_file_location("instructor_edition", path)
    edition = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(edition)
    key = edition.answers_path("11_capstone.ipynb")
    scope = {"lesson": lesson}
    for block in edition.parse(key.read_text(encoding="utf-8"), key.name):
        if block.kind == "cell":
            exec(compile(block.source, key.name, "exec"), scope)
    return scope["table"]


def test_claim_the_model_answer_passes_and_shows_what_its_written_answers_say(capsys):
    """The answer key's table turns the checker ✓, and its written answers hold on every kernel path:
    the stack underfits below the baseline; the re-tuned combination (best of 8) leads on validation
    but not on test; batch norm stays at the baseline; the early-stopping rows lose 0.03–0.05 to test."""
    table = _model_answer()
    capsys.readouterr()
    assert lesson.check_table(table)
    assert capsys.readouterr().out.startswith("✓ ")
    rows = {label: r for label, (r, _) in table.chosen.items()}
    base, stacked, retuned = table.baseline, rows["all stacked"], rows["re-tuned combination"]
    singles = [rows[t] for t in lesson.TECHNIQUES]
    assert table.final[0] == "re-tuned combination"
    assert stacked.train_acc < 0.5 and stacked.test_acc < base.test_acc - 0.1                 # 0.44, 0.53
    assert retuned.val_acc > max(r.val_acc for r in singles) + 0.015                         # 0.877 vs 0.853
    assert retuned.test_acc < max(r.test_acc for r in singles) + 0.01                        # 0.837 vs 0.845–0.863
    assert 0.02 < retuned.val_acc - retuned.test_acc < 0.07 and 0.65 < retuned.train_acc < 0.8
    assert abs(rows["batch norm"].test_acc - base.test_acc) < 0.03 and rows["batch norm"].train_acc > 0.97
    for r in (rows["early stopping"], stacked):
        assert 0.02 < r.val_acc - r.test_acc < 0.07                                         # 0.033, 0.054
    assert all(-0.02 < r.test_acc - r.val_acc < 0.04 for r in singles[:5])                  # −0.01 to +0.03
