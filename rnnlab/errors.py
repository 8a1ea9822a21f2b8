"""The one exception type the CLI turns into a one-line message (no traceback)."""


class RnnlabError(Exception):
    """A problem the user can fix. ``str(err)`` names the problem and the fix.

    ``exit_code`` is 2 for usage errors (bad flags, bad values, unknown names) and 1 for
    everything else (missing data, corrupt checkpoints, diverged training).
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(RnnlabError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=2)
