"""The one exception type for bad user input, and the exit codes every entry point uses.

main.py, the tools and the launchers catch it and print its message as one line, then exit non-zero,
so a user sees `error: <what is wrong>` instead of a traceback.
"""
import sys

EXIT_USER_ERROR = 2  # bad flags, paths or files (argparse uses 2 for bad flags too)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class UserError(Exception):
    """Bad input from the user (flags, paths, files). The message must name the problem in one line."""


def run_cli(main, argv=None):
    """Exit code of `main(argv)`: its own, EXIT_USER_ERROR after printing `error: <msg>` to stderr for a UserError,
    EXIT_INTERRUPTED on Ctrl-C. The tools end with `sys.exit(run_cli(main))`."""
    try:
        return main(argv)
    except UserError as exc:
        print("error: {}".format(exc), file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
