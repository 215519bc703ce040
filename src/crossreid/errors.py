"""User-facing errors: one clear line naming the problem and the fix, non-zero exit."""


class UserError(Exception):
    """Bad input from the user (path, config, file content).

    The CLI prints ``error: <message>`` on one line, without a traceback, and exits
    with code 2. The message should name the offending file or key and the fix.
    """

    exit_code = 2
