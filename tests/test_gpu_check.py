"""benchmarks/gpu_check.py in its CPU smoke mode: every epoch row runs, bilevel rows take hyper
steps, and the two-trials-at-once line comes back (the GPU run itself is done on a GPU machine)."""
import re
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_the_gpu_check_runs_every_row_in_smoke_mode_on_cpu(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("gpu_check", None)
    import gpu_check

    assert gpu_check.main(["--smoke", "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (fp32|bf16) \| (\w+) \| [\d.]+ \| [\d.]+ \| (\d+) / (\d+) \|", out, re.M)
    assert {(p, v) for p, v, _, _ in rows} == {(p, v) for p in ("fp32", "bf16") for v in gpu_check.VARIANTS}
    steps = {(p, v): int(applied) + int(skipped) for p, v, applied, skipped in rows}
    assert all(steps[(p, "plain")] == 0 for p in ("fp32", "bf16"))
    assert all(n > 0 for (p, v), n in steps.items() if v != "plain")
    assert re.search(r"Two exact fp32 trials at once on cpu: [\d.]+ s wall for both .* hyper steps 1 and 1", out)
