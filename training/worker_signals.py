"""Data-loader workers leave Ctrl-C to their parent.

Ctrl-C in a terminal sends SIGINT to every process of the foreground group: the training process and each of its
DataLoader workers. A worker hit in the middle of decoding an image prints a KeyboardInterrupt traceback of its
own, after the parent's one clean `error: interrupted ...` line. Workers that ignore SIGINT stay quiet, and the
parent, which stops on it, ends them as it shuts its loaders down (they also exit when their parent dies).
training/data.py gives every loader with workers this `worker_init_fn`.
"""
import signal


class IgnoreInterrupts:
    """A DataLoader `worker_init_fn` that sets SIGINT to SIG_IGN, then calls the loader's own init function (if
    any). A class rather than a closure, so it pickles for the spawn start method."""

    def __init__(self, previous=None):
        self.previous = previous

    def __call__(self, worker_id):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.previous is not None:
            self.previous(worker_id)
