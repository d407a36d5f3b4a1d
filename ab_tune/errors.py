"""The errors a user can fix. The CLI turns exactly these into one line and exit status 2;
any other exception is a bug and keeps its traceback."""
import difflib
from collections.abc import Iterable


def did_you_mean(word, allowed: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the allowed name closest to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), list(allowed), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


class AbTuneError(Exception):
    """A user error; the message is one line naming the key, the value and what is allowed."""


class ConfigError(AbTuneError, ValueError):
    """A config key or value that is not allowed."""


class SearchSpaceError(ConfigError):
    """A search-space file that cannot be run; the message names the file and the key."""


class UsageError(AbTuneError, ValueError):
    """A command-line argument that is not allowed."""


class DataError(AbTuneError, ValueError):
    """A data file that cannot be used (damaged, not what it claims to be, outside data_root); the
    message names the file."""
