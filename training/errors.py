"""The one exception type for bad user input.

main.py, the tools and the launchers catch it and print its message as one line, then exit non-zero,
so a user sees `error: <what is wrong>` instead of a traceback.
"""


class UserError(Exception):
    """Bad input from the user (flags, paths, files). The message must name the problem in one line."""
