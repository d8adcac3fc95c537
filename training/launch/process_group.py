"""The process group: joining it (a rendezvous that Ctrl-C, SIGTERM and --dist-timeout can stop), the few
collectives the loops use, and leaving it."""
import datetime
import errno
import faulthandler
import gc
import os
import socket
import sys
import threading
import time

import torch
import torch.distributed as dist

from training.errors import UserError
from training.launch.modes import DEFAULT_PORT, DEFAULT_TIMEOUT_SECONDS, _env_int


POLL_SECONDS = 0.2  # step of every rendezvous wait: how soon Ctrl-C / SIGTERM and the deadline are noticed


NOTE_AFTER_SECONDS = 2.0  # a waiting process says what it waits for after this long


JOINED_KEY = "shufflenet/joined"  # the count of processes that reached the store


LEAVE_SECONDS = 30.0  # the longest a process waits at the end of a run for its process group to close


HARD_STOP_SECONDS = 10.0  # after LEAVE_SECONDS, when even the watchdog thread cannot run (see TeardownWatchdog)


def init_process_group(ctx, backend, timeout_seconds=DEFAULT_TIMEOUT_SECONDS):
    """Join the group through the torchrun variables (nothing to do for one process), waiting at most
    `timeout_seconds` (--dist-timeout) for the others; collectives get the same timeout.

    torch's own env:// rendezvous waits inside C++ (holding the interpreter lock on torch 1.8), where neither the
    timeout message nor Ctrl-C / SIGTERM get through. So the waiting happens here, in short Python steps: rank 0
    opens the store without waiting, the others poll its port, every process counts itself in under JOINED_KEY and
    polls the count; the group is made from that store once all are there. Under torchrun its agent holds the
    store and has already gathered the processes, so torch's env:// path is used as it is.
    """
    if ctx.world_size <= 1:
        return
    timeout = datetime.timedelta(seconds=timeout_seconds)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        dist.init_process_group(backend=backend, init_method="env://", world_size=ctx.world_size, rank=ctx.rank,
                                timeout=timeout)
        return
    meeting = Rendezvous(ctx, os.environ.get("MASTER_ADDR") or "127.0.0.1", _env_int("MASTER_PORT") or DEFAULT_PORT,
                         timeout_seconds)
    store = meeting.open_store()
    meeting.count_in(store)
    dist.init_process_group(backend=backend, store=store, world_size=ctx.world_size, rank=ctx.rank, timeout=timeout)


class RendezvousInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while waiting for the other processes; str() is the error line (without `error: `)."""


class Rendezvous:
    """The processes of one group meeting at MASTER_ADDR:MASTER_PORT within `timeout_seconds`; every wait is a
    Python loop of POLL_SECONDS steps, so signal handlers run and the deadline is kept."""

    def __init__(self, ctx, addr, port, timeout_seconds):
        self.ctx, self.addr, self.port = ctx, addr, port
        self.timeout_seconds = timeout_seconds
        self.started = time.time()
        self.joined = 0  # processes counted in, as last read from the store
        self.noted = False

    @property
    def where(self):
        return "{}:{}".format(self.addr, self.port)

    def open_store(self):
        """Rank 0: a TCPStore server that does not wait in its constructor; the others: a client, once the server's
        port answers."""
        timeout = datetime.timedelta(seconds=self.timeout_seconds)
        if self.ctx.rank == 0:
            if _port_taken(self.port):  # said here, before torch's c10d prints its own socket warnings about it
                raise self._port_in_use()
            return self._call_store(self._server, timeout)
        self.wait_until(lambda: _port_answers(self.addr, self.port),
                        lambda: "process 0 to open {} (rendezvous, rank {} of {})".format(
                            self.where, self.ctx.rank, self.ctx.world_size))
        return self._call_store(lambda t: dist.TCPStore(self.addr, self.port, self.ctx.world_size, False, t), timeout)

    def _server(self, timeout):
        try:
            return dist.TCPStore(self.addr, self.port, self.ctx.world_size, True, timeout, wait_for_workers=False)
        except TypeError:  # torch < 1.9: no wait_for_workers; -1 workers means "do not wait for them"
            return dist.TCPStore(self.addr, self.port, -1, True, timeout)

    def _call_store(self, make, timeout):
        try:
            return make(timeout)
        except (RuntimeError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "address already in use" in reason.lower():
                raise self._port_in_use() from None
            raise UserError("cannot open the process group's store at {}: {}".format(self.where, reason[:200])) \
                from None

    def _port_in_use(self):
        return UserError("port {} is in use (another run?), so rank 0 cannot open the process group's store at {}: "
                         "give a free --port or MASTER_PORT".format(self.port, self.where))

    def count_in(self, store):
        """Add this process to the count under JOINED_KEY and wait until all are there."""
        self.joined = int(store.add(JOINED_KEY, 1))

        def everyone():
            self.joined = int(store.add(JOINED_KEY, 0))
            return self.joined >= self.ctx.world_size

        self.wait_until(everyone, lambda: "{} of {} processes at {} (rendezvous)".format(
            self.ctx.world_size - self.joined, self.ctx.world_size, self.where))

    def wait_until(self, ready, waiting_for):
        """Poll `ready()` until it is true; UserError at the deadline, RendezvousInterrupted on Ctrl-C / SIGTERM.
        `waiting_for()` names what is missing, for the note after NOTE_AFTER_SECONDS and the error lines."""
        try:
            while not ready():
                waited = time.time() - self.started
                if waited >= self.timeout_seconds:
                    raise UserError("timed out after {:.0f} s waiting for {}: check that every process started with "
                                    "the same --world-size and its own --rank, or raise --dist-timeout".format(
                                        waited, waiting_for()))
                if not self.noted and waited >= NOTE_AFTER_SECONDS:
                    self.noted = True
                    print("=> waiting for {} (--dist-timeout {:g} s)".format(waiting_for(), self.timeout_seconds),
                          flush=True)
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            raise RendezvousInterrupted("interrupted while waiting for {}".format(waiting_for())) from None


def _port_taken(port):
    """True when `port` cannot be bound on every address of this host, as TCPStore's server binds it (with
    SO_REUSEADDR, so a closed connection of an earlier run in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _port_answers(addr, port):
    try:
        socket.create_connection((addr, port), timeout=POLL_SECONDS).close()
        return True
    except OSError:
        return False


def is_initialized():
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(values, device):
    """Sum a list of numbers over all ranks (one collective); returns a list of floats."""
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if is_initialized():
        if device.type == "npu":
            tensor = tensor.float()  # hccl lacks float64; counts stay exact below 2**24 per call
        dist.all_reduce(tensor)
    return [float(v) for v in tensor.cpu().tolist()]


def broadcast_buffers(module, src=0):
    """Copy rank 0's BatchNorm running statistics to every rank, so a distributed eval scores exactly the weights
    that rank 0 saves."""
    if not is_initialized():
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src)


def leave(exit_code, timeout_seconds=LEAVE_SECONDS):
    """Close the process group (nothing to do without one) once the run is over and its exit status is known.

    A close that hangs is cut short: after `timeout_seconds` one warning line, and this process ends itself with
    `exit_code` (everything it had to write is written by then) rather than wait for a supervisor's SIGKILL."""
    if not is_initialized():
        return
    watchdog = TeardownWatchdog(timeout_seconds, exit_code, rank=dist.get_rank())
    try:
        destroy()
    finally:
        watchdog.cancel()


def destroy():
    """destroy_process_group, with the last references to the group's backends dropped by their own Python objects,
    whose destructors release the interpreter lock.

    torch 2.x before mid-2025 (2.1 on its CI lane; not 2.14) wraps the backend (ProcessGroupGloo) in a ProcessGroup
    whose Python binding destroys it with the lock held. ProcessGroupGloo's destructor joins its worker threads, and
    a worker that is just freeing a finished collective's tensor needs the lock to drop that tensor's Python object:
    both wait for ever (gdb: the main thread in std::thread::join under ~ProcessGroupGloo under ~ProcessGroup, the
    worker in take_gil under ~AsyncWork). Older torch binds ProcessGroupGloo itself, newer ProcessGroup too, with
    destructors that release the lock."""
    group = dist.group.WORLD
    backends = [group._get_backend(device) for device in getattr(group, "_device_types", [])]
    del group
    dist.destroy_process_group()
    gc.collect()  # a model wrapper (DistributedDataParallel) in a reference cycle still holds the group
    del backends  # here each backend's destructor runs, without the lock


class TeardownWatchdog:
    """Ends this process with `exit_code` and one warning line unless cancelled within `seconds`.

    A daemon thread does it, which works while the stuck call has released the interpreter lock (as torch's
    process-group destructors do, see destroy()). Should a call hold the lock for ever, faulthandler's own thread,
    which needs no lock, ends the process HARD_STOP_SECONDS later with status 1 and the stacks of all threads."""

    def __init__(self, seconds, exit_code, rank):
        self.seconds, self.exit_code, self.rank = seconds, exit_code, rank
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="teardown-watchdog", daemon=True)
        self.thread.start()
        faulthandler.dump_traceback_later(seconds + HARD_STOP_SECONDS, exit=True)

    def _watch(self):
        if self.cancelled.wait(self.seconds):
            return
        line = ("warning: process {} did not close its process group within {:g} s after the run (a hang inside "
                "torch); it ends now without it, and everything it wrote is complete\n".format(self.rank,
                                                                                              self.seconds))
        try:
            sys.stdout.flush()
        finally:
            os.write(sys.stderr.fileno(), line.encode())
            os._exit(self.exit_code)

    def cancel(self):
        faulthandler.cancel_dump_traceback_later()
        self.cancelled.set()
        self.thread.join()
