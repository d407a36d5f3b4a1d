"""The errors a user can fix. The CLI turns exactly these into one line and exit status 2;
any other exception is a bug and keeps its traceback."""
import difflib
from collections.abc import Iterable


def did_you_mean(word, allowed: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the allowed name closest to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), list(allowed), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


# every character str.splitlines breaks at, mapped to its escape
_LINE_BREAKS = {ord(c): ascii(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


class AbTuneError(Exception):
    """A user error; the message is one line naming the key, the value and what is allowed."""

    def __str__(self) -> str:  # one line whatever a user's string held: line breaks escaped
        return super().__str__().translate(_LINE_BREAKS)


class ConfigError(AbTuneError, ValueError):
    """A config key or value that is not allowed."""


class SearchSpaceError(ConfigError):
    """A search-space file that cannot be run; the message names the file and the key."""


class UsageError(AbTuneError, ValueError):
    """A command-line argument that is not allowed."""


class DataError(AbTuneError, ValueError):
    """A data file that cannot be used (damaged, not what it claims to be, outside data_root); the
    message names the file."""
