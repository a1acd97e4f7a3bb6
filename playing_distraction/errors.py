"""The one exception type for problems a user can cause and fix."""


class UserError(Exception):
    """A problem with the user's input (files, flags, data), not a bug.

    Command-line tools print its message as one line and exit non-zero; the message
    must name what is wrong (the flag, file or line) and, where useful, what was
    expected.
    """
