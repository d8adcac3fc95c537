"""The process group: joining it (a rendezvous that Ctrl-C, SIGTERM and --dist-timeout can stop), the few
collectives the loops use, and leaving it."""
import datetime
import errno
import os
import socket
import time

import torch
import torch.distributed as dist

from training.errors import UserError
from training.launch.modes import DEFAULT_PORT, DEFAULT_TIMEOUT_SECONDS, _env_int


POLL_SECONDS = 0.2  # step of every rendezvous wait: how soon Ctrl-C / SIGTERM and the deadline are noticed


NOTE_AFTER_SECONDS = 2.0  # a waiting process says what it waits for after this long


JOINED_KEY = "shufflenet/joined"  # the count of processes that reached the store


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


def cleanup():
    if is_initialized():
        dist.destroy_process_group()
