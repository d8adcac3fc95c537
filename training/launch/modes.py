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
import os
import socket
import urllib.parse


from training.errors import UserError

DEFAULT_PORT = 29688
DEFAULT_TIMEOUT_SECONDS = 1800.0  # --dist-timeout: torch's own default (30 minutes)
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
