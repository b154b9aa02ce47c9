"""The one exception type for user mistakes.

Anything a user can cause (a bad file, a bad flag value, a run folder that does
not match) raises :class:`DfcanError` with a message that names the file or the
value and says what is wrong. The command line prints that message and exits
non-zero without a traceback; programming errors keep their traceback.
"""


class DfcanError(Exception):
    """A user-facing error: bad input file, bad option value or inconsistent run folder."""
