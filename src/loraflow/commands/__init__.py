"""The subcommands of `loraflow` (loraflow.cli parses the command line and dispatches to them)."""


class CliError(Exception):
    """A problem the user can fix, told as one line without a traceback."""

    expected_error = True
