"""Launch modes and the process group.

Every mode ends in the same `Context` (world size, global rank, local rank, device index) for each process:
- single process (no flags);
- `--multiprocessing-distributed`: this program spawns one process per device of `--device-list` / `--device_num`
  (on CPU: that many gloo processes); `--world-size` is then the number of nodes and `--rank` this node's index;
- the ModelZoo shell loop: each process is started with `--local_rank i` (world size from WORLD_SIZE / RANK_SIZE,
  else devices per node x nodes);
- torchrun: RANK, WORLD_SIZE, LOCAL_RANK (and MASTER_ADDR / MASTER_PORT) in the environment;
- several nodes: `--world-size` nodes, `--rank` node index, `--addr` / `--port` or `--dist-url` of node 0.
"""
import collections
import datetime
import os
import socket

import torch
import torch.distributed as dist

from training.errors import UserError

DEFAULT_PORT = 29688

Context = collections.namedtuple("Context", "world_size rank local_rank device_index nprocs_per_node")


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


def device_index_for(args, local_rank, single=False):
    """Accelerator index of a local process: the local_rank-th entry of --device-list, else local_rank
    (--gpu pins the device of a single-process run)."""
    device_list = parse_device_list(args.device_list)
    if device_list:
        if local_rank >= len(device_list):
            raise UserError("local rank {} has no entry in --device-list {}".format(local_rank, args.device_list))
        return device_list[local_rank]
    if single and args.gpu is not None:
        return args.gpu
    return local_rank


def _env_int(*names):
    for name in names:
        value = os.environ.get(name)
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
    """(mode, nprocs to spawn or 1, world_size). Checks that the global batch divides by the world size."""
    mode = launch_mode(args)
    nodes = max(1, args.world_size or 1)
    if mode == "torchrun":
        world = _env_int("WORLD_SIZE")
        nprocs = 1
    elif mode == "spawn":
        nprocs = devices_per_node(args, available_devices)
        world = nprocs * nodes
    elif mode == "local_rank":
        nprocs = 1
        world = _env_int("WORLD_SIZE", "RANK_SIZE") or devices_per_node(args, available_devices) * nodes
    else:
        nprocs = 1
        world = nodes
        if nodes > 1 and (args.rank is None or args.rank < 0):
            raise UserError("--world-size {} without --multiprocessing-distributed needs --rank".format(nodes))
    if world < 1:
        raise UserError("world size must be at least 1, got {}".format(world))
    if args.batch_size % world != 0:
        raise UserError("--batch-size {} (global) is not divisible by the world size {}".format(args.batch_size,
                                                                                              world))
    return mode, nprocs, world


def context_for(args, mode, world, local_index=0, available_devices=1):
    """The Context of one process: `local_index` is the spawn index in 'spawn' mode."""
    node = max(0, args.rank or 0)
    if mode == "torchrun":
        rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
        per_node = _env_int("LOCAL_WORLD_SIZE") or world
    elif mode == "spawn":
        per_node = devices_per_node(args, available_devices)
        local = local_index
        rank = node * per_node + local
    elif mode == "local_rank":
        per_node = devices_per_node(args, available_devices)
        local = args.local_rank
        env_rank = _env_int("RANK", "RANK_ID")
        rank = env_rank if env_rank is not None and _env_int("WORLD_SIZE", "RANK_SIZE") else node * per_node + local
    else:
        per_node, local, rank = 1, 0, node if world > 1 else 0
    if not 0 <= rank < world:
        raise UserError("rank {} is outside the world size {}".format(rank, world))
    return Context(world, rank, local, device_index_for(args, local, single=mode == "single"), per_node)


def free_port():
    """A TCP port nobody listens on now (tests and single-node spawns; never a hard-coded number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_method(args, mode=None):
    """--dist-url if given; 'env://' under torchrun (its agent may already host the store on MASTER_PORT);
    else tcp://--addr:--port with MASTER_ADDR / MASTER_PORT as defaults."""
    if args.dist_url:
        return args.dist_url
    if mode == "torchrun" and not args.addr and not args.port:
        return "env://"
    addr = args.addr or os.environ.get("MASTER_ADDR") or "127.0.0.1"
    port = args.port or _env_int("MASTER_PORT") or DEFAULT_PORT
    return "tcp://{}:{}".format(addr, port)


def init_process_group(ctx, backend, method, timeout_minutes=30):
    """Join the group (nothing to do for one process)."""
    if ctx.world_size <= 1:
        return
    dist.init_process_group(backend=backend, init_method=method, world_size=ctx.world_size, rank=ctx.rank,
                            timeout=datetime.timedelta(minutes=timeout_minutes))


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


def barrier():
    if is_initialized():
        dist.barrier()


def cleanup():
    if is_initialized():
        dist.destroy_process_group()
