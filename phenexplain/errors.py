"""Exceptions shared by the whole package.

Every failure caused by user input or configuration derives from `PhenexplainError`, so the CLI can
print it as one clear line and exit non-zero, while programming errors keep their tracebacks.
"""


class PhenexplainError(Exception):
    """A problem the user can fix: bad input, bad configuration, an unusable output path."""


class ConfigError(PhenexplainError, ValueError):
    """A configuration file or override is invalid; the message names the file and the key."""


class OutputExistsError(PhenexplainError, FileExistsError):
    """The output folder exists and is not empty, and overwriting was not asked for."""
