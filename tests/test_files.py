"""Files are written whole or not at all."""
import os

import pytest

from ab_tune.files import atomic_path, write_atomically


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
