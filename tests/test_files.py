"""Files are written whole or not at all."""
import os

import pytest

from ab_tune.files import atomic_path, remove_written, write_atomically


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("old,complete\n")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(str(path)) as temporary, open(temporary, "w") as f:
            assert temporary.endswith(".csv") and temporary != str(path)  # writers that infer the format
            f.write("new,half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old,complete\n" and os.listdir(tmp_path) == ["results.csv"]
    write_atomically(str(path), "new,complete\n")
    assert path.read_text() == "new,complete\n" and os.listdir(tmp_path) == ["results.csv"]


def test_a_writer_killed_midway_leaves_a_temporary_that_remove_written_takes_with_the_file(tmp_path):
    import subprocess
    import sys

    path, other = tmp_path / "trial_2.pt", tmp_path / "trial_20.pt"
    other.write_text("another trial's")
    write_atomically(str(path), "epoch 1")
    killed = ("import os, sys\nfrom ab_tune.files import atomic_path\n"
              "with atomic_path(sys.argv[1]) as t, open(t, 'w') as f:\n    f.write('epoch 2, half'); f.flush(); os._exit(9)\n")
    assert subprocess.run([sys.executable, "-c", killed, str(path)]).returncode == 9  # no finally runs
    leftovers = set(os.listdir(tmp_path)) - {"trial_2.pt", "trial_20.pt"}
    assert len(leftovers) == 1 and leftovers.pop().startswith("trial_2.tmp") and path.read_text() == "epoch 1"
    remove_written(str(path))
    assert os.listdir(tmp_path) == ["trial_20.pt"]
