"""The errors a user can fix. The CLI turns exactly these into one line and exit status 2;
any other exception is a bug and keeps its traceback."""


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
