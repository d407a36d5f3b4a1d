"""benchmarks/paired.py on hand-written comparison folders: per seed it selects AutoBalance's trial
as `ab-tune compare` does (validation metric, ties by validation balanced loss), among the first K
trials with --first, and prints the test errors, their paired difference and its verdict."""
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _trial(root: Path, seed: int, number: int, val: float, val_loss: float, test: float) -> None:
    folder = root / f"seed{seed}" / "autobalance" / f"AutoBalanceTrainable_{number:08x}_{number}_lr=0.1"
    folder.mkdir(parents=True)
    rows = [{"val_balanced_error": 0.9, "val_balanced_loss": 9.0, "test_balanced_error": 0.9, "time_total_s": 1.0},
            {"val_balanced_error": val, "val_balanced_loss": val_loss, "test_balanced_error": test,
             "time_total_s": 2.0 + number}]  # the last epoch's: the trial's
    (folder / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_paired_differences_follow_compares_selection_and_the_first_k_trials(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("paired", None)
    import paired

    before, after = tmp_path / "before", tmp_path / "after"
    for seed in (3, 10):  # seed 10 after seed 3: numeric order
        _trial(before, seed, 1, 0.10, 0.5, 0.30)
        _trial(before, seed, 2, 0.05, 0.4, 0.20)
    _trial(after, 3, 1, 0.05, 0.3, 0.25)   # tied with trial 2 on the metric, lower loss: selected
    _trial(after, 3, 2, 0.05, 0.6, 0.10)
    _trial(after, 10, 1, 0.20, 0.1, 0.40)
    _trial(after, 10, 2, 0.01, 0.9, 0.15)  # the best, but not among the first 1
    _trial(after, 7, 1, 0.01, 0.1, 0.01)   # a seed only one run has: left out

    assert paired.main([str(before), str(after)]) == 0
    out = capsys.readouterr().out
    assert "| 3 | 20.00 | 25.00 | +5.00 |" in out and "| 10 | 20.00 | 15.00 | -5.00 |" in out
    assert "| mean | 20.00 | 20.00 | +0.00 |" in out and "| 7 |" not in out
    assert out.index("| 3 |") < out.index("| 10 |")
    assert "| trial-seconds | 14.0 | 14.0 | |" in out  # seeds both runs have: 2 x (3 + 4)
    # before's minus after's, -5 and +5: t(0.95, 1 df) 6.31 x std 7.07 / sqrt(2) = 31.57 either side of 0
    assert ("after against before: tie (before's minus after's, paired mean +0.00 over 2 seeds, 90% interval -31.57 to "
            "+31.57; better on 1 of 2 seeds, worse on 1, equal on 0)") in out

    assert paired.main([str(before), str(after), "--first", "1"]) == 0
    out = capsys.readouterr().out
    assert "| 3 | 30.00 | 25.00 | -5.00 |" in out and "| 10 | 30.00 | 40.00 | +10.00 |" in out
    assert "| mean | 30.00 | 32.50 | +2.50 |" in out
    assert "| trial-seconds | 6.0 | 6.0 | |" in out
