"""The config reference is generated from OPTIONS: it must be what the generator writes now."""
import runpy
from pathlib import Path

DOCS = Path(__file__).parent.parent / "docs"


def test_docs_config_md_is_up_to_date_with_the_config_options():
    render = runpy.run_path(str(DOCS / "generate_config.py"))["render"]
    assert (DOCS / "config.md").read_text() == render(), "docs/config.md is stale: run python docs/generate_config.py"


def test_every_config_key_is_in_the_reference():
    from ab_tune.config import OPTIONS

    text = (DOCS / "config.md").read_text()
    assert all(f"| `{key}` |" in text for key in OPTIONS)
