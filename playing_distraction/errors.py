"""The one exception type for problems a user can cause and fix."""


class UserError(Exception):
    """A problem with the user's input (files, flags, data), not a bug.

    Command-line tools print its message as one line and exit non-zero; the message
    must name what is wrong (the flag, file or line) and, where useful, what was
    expected.
    """


def caused_by_ctrl_c(error):
    """The exception ``error`` is a Ctrl-C: a KeyboardInterrupt itself, or an error it
    caused - raised while a compiled module (TensorFlow's, say) initialised, it comes
    back as "ImportError: initialization failed", and a module left half imported can
    fail with another error in the interrupt's context. (Imports nothing: train.py and
    evaluate.py call it when the package's own import was interrupted.)"""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__cause__ or error.__context__
    return False
