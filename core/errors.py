"""The one exception type for mistakes a user can fix (bad files, bad flags, bad data)."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, printed as one line by the CLI.

    `exit_code` is what the CLI exits with; 2 is a usage or input error.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
