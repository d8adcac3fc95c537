"""Launch modes, turned into the torchrun environment at the entry, and the process group.

`plan(args, available)` turns every launch mode into the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), one set per process this command runs, so a training process knows one
mode only and joins the group with `init_process_group` (env://):
- single process (no flags);
- `--multiprocessing-distributed`: main.py starts one process per device of `--device-list` / `--device_num`
  (on CPU: that many gloo processes); `--world-size` is then the number of nodes and `--rank` this node's index;
- the ModelZoo shell loop: each process is started with `--local_rank i` (world size from WORLD_SIZE / RANK_SIZE,
  else devices per node x nodes; rank from RANK / RANK_ID when the world size came from there);
- torchrun: its variables are already there and are used as they are (--addr / --port / --dist-url are ignored);
- several nodes: `--world-size` nodes, `--rank` node index, `--addr` / `--port` or `--dist-url tcp://HOST:PORT`.
"""
import collections
import contextlib
import datetime
import os
import socket
import time
import urllib.parse

import torch
import torch.distributed as dist

from training.errors import UserError

DEFAULT_PORT = 29688
DEFAULT_TIMEOUT_SECONDS = 1800.0  # --dist-timeout: torch's own default (30 minutes)
POLL_SECONDS = 0.2  # step of every rendezvous wait: how soon Ctrl-C / SIGTERM and the deadline are noticed
NOTE_AFTER_SECONDS = 2.0  # a waiting process says what it waits for after this long
JOINED_KEY = "shufflenet/joined"  # the count of processes that reached the store

# One process's place in the group, read back from the torchrun variables.
Context = collections.namedtuple("Context", "world_size rank local_rank local_world_size")
# What this command runs: `ranks` holds the torchrun variables of each process it starts itself (several with
# --multiprocessing-distributed, else the one process that it is).
Launch = collections.namedtuple("Launch", "mode world_size ranks")


def parse_device_list(text):
    """'0,1,2' -> [0, 1, 2]; '' or None -> []."""
    if text is None or str(text).strip() == "":
        return []
    try:
        return [int(part) for part in str(text).split(",") if part.strip() != ""]
    except ValueError:
        raise UserError("--device-list must be comma-separated device ids like 0,1,2, got {!r}".format(text)) from None


def devices_per_node(args, available):
    """How many processes one node runs: --device-list, else --device_num, else every visible device."""
    device_list = parse_device_list(args.device_list)
    if device_list:
        return len(device_list)
    if args.device_num and args.device_num > 0:
        return args.device_num
    return max(1, available)


def device_index(args, ctx):
    """Accelerator index of a process: the local_rank-th entry of --device-list, else --gpu when it is the only
    process on its node, else its local rank."""
    device_list = parse_device_list(args.device_list)
    if device_list:
        if ctx.local_rank >= len(device_list):
            raise UserError("local rank {} has no entry in --device-list {}".format(ctx.local_rank, args.device_list))
        return device_list[ctx.local_rank]
    if args.gpu is not None and ctx.local_world_size == 1:
        return args.gpu
    return ctx.local_rank


def _env_int(*names, environ=None):
    environ = os.environ if environ is None else environ
    for name in names:
        value = environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise UserError("environment variable {}={!r} is not an integer".format(name, value)) from None
    return None


def launch_mode(args):
    """'torchrun', 'local_rank' (ModelZoo loop), 'spawn' or 'single'."""
    if all(os.environ.get(n) not in (None, "") for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return "torchrun"
    if args.local_rank is not None and args.local_rank >= 0:
        return "local_rank"
    if args.multiprocessing_distributed:
        return "spawn"
    return "single"


def plan(args, available_devices):
    """The Launch for these flags and this environment; checks that the global batch divides by the world size."""
    mode = launch_mode(args)
    nodes, node = max(1, args.world_size or 1), max(0, args.rank or 0)
    if mode == "torchrun":
        world = _env_int("WORLD_SIZE")
        places = [(_env_int("RANK"), _env_int("LOCAL_RANK"), _env_int("LOCAL_WORLD_SIZE") or world)]
    elif mode == "spawn":
        per_node = devices_per_node(args, available_devices)
        world = per_node * nodes
        places = [(node * per_node + local, local, per_node) for local in range(per_node)]
    elif mode == "local_rank":
        per_node = devices_per_node(args, available_devices)
        world = _env_int("WORLD_SIZE", "RANK_SIZE")
        rank = _env_int("RANK", "RANK_ID") if world else None
        world = world or per_node * nodes
        places = [(rank if rank is not None else node * per_node + args.local_rank, args.local_rank, per_node)]
    else:
        if nodes > 1 and (args.rank is None or args.rank < 0):
            raise UserError("--world-size {} without --multiprocessing-distributed needs --rank".format(nodes))
        world = nodes
        places = [(node if world > 1 else 0, 0, 1)]
    if world < 1:
        raise UserError("world size must be at least 1, got {}".format(world))
    if args.batch_size % world != 0:
        raise UserError("--batch-size {} (global) is not divisible by the world size {}".format(args.batch_size,
                                                                                              world))
    for rank, _, _ in places:
        if not 0 <= rank < world:
            raise UserError("rank {} is outside the world size {}".format(rank, world))
    if mode == "torchrun":
        return Launch(mode, world, [{}])  # torchrun's own variables stay as they are
    addr, port = master_address(args, single_node_spawn=mode == "spawn" and nodes == 1)
    ranks = [{"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(local),
              "LOCAL_WORLD_SIZE": str(per_node), "MASTER_ADDR": addr, "MASTER_PORT": str(port)}
             for rank, local, per_node in places]
    return Launch(mode, world, ranks)


def master_address(args, single_node_spawn=False):
    """(MASTER_ADDR, MASTER_PORT): --dist-url tcp://HOST:PORT, else --addr / --port, else MASTER_ADDR /
    MASTER_PORT, else 127.0.0.1 and a free port (one-node spawn) or DEFAULT_PORT."""
    url_addr = url_port = None
    if args.dist_url and args.dist_url != "env://":
        parts = urllib.parse.urlsplit(args.dist_url)
        try:
            url_addr, url_port = parts.hostname, parts.port
        except ValueError:
            url_port = None
        if parts.scheme != "tcp" or not url_addr or not url_port:
            raise UserError("--dist-url {!r}: give tcp://HOST:PORT (or env:// to use MASTER_ADDR / MASTER_PORT)"
                            .format(args.dist_url))
    addr = url_addr or args.addr or os.environ.get("MASTER_ADDR") or "127.0.0.1"
    port = url_port or args.port or _env_int("MASTER_PORT")
    if port is None:
        port = free_port() if single_node_spawn else DEFAULT_PORT
    return addr, port


@contextlib.contextmanager
def environment(variables):
    """os.environ with `variables` set, restored afterwards (main() may run several times in one process)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def context(environ=None):
    """This process's Context from the torchrun variables (a lone process without them: world size 1)."""
    world = _env_int("WORLD_SIZE", environ=environ) or 1
    return Context(world, _env_int("RANK", environ=environ) or 0, _env_int("LOCAL_RANK", environ=environ) or 0,
                   _env_int("LOCAL_WORLD_SIZE", environ=environ) or world)


def free_port():
    """A TCP port nobody listens on now (tests and single-node spawns; never a hard-coded number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
                raise UserError("port {} is in use (another run?), so rank 0 cannot open the process group's store "
                                "at {}: give a free --port or MASTER_PORT".format(self.port, self.where)) from None
            raise UserError("cannot open the process group's store at {}: {}".format(self.where, reason[:200])) \
                from None

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
