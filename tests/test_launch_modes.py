"""training/launch/modes.py: the launch plan gives each process of each launch mode (single, spawn, the ModelZoo
shell loop, torchrun, one process per node) its rank and device, always as torchrun's environment variables."""
import argparse
import os

import pytest

from training.errors import UserError
from training.launch import modes


def flags(**kw):
    base = {"world_size": -1, "rank": -1, "local_rank": -1, "multiprocessing_distributed": False,
            "device_list": "", "device_num": -1, "gpu": None, "batch_size": 48, "dist_url": "", "addr": None,
            "port": None}
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "RANK_SIZE", "RANK_ID", "MASTER_ADDR",
                 "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def place(launch, args, index=0):
    """(world size, rank, local rank, device index, processes per node) of process `index` of a launch, read back
    from the torchrun variables it gets (torchrun's own ones stay in os.environ)."""
    ctx = modes.context(dict(os.environ, **launch.ranks[index]))
    return ctx.world_size, ctx.rank, ctx.local_rank, modes.device_index(args, ctx), ctx.local_world_size


def shape(launch):
    return launch.mode, len(launch.ranks), launch.world_size


def test_launch_modes_give_each_process_its_rank_and_device(clean_env):
    # single process, --gpu pins the device
    args = flags(gpu=5)
    launch = modes.plan(args, 8)
    assert shape(launch) == ("single", 1, 1)
    assert place(launch, args) == (1, 0, 0, 5, 1)
    # spawn on node 1 of 2 with a device list: ranks 4..7 on devices 4..7
    args = flags(multiprocessing_distributed=True, device_list="4,5,6,7", world_size=2, rank=1)
    launch = modes.plan(args, 8)
    assert shape(launch) == ("spawn", 4, 8)
    assert [place(launch, args, i) for i in range(4)] == [(8, 4 + i, i, 4 + i, 4) for i in range(4)]
    assert launch.ranks[2]["MASTER_PORT"] == str(modes.DEFAULT_PORT)  # several nodes: a port all can know
    # spawn with --device_num on a CPU node
    args = flags(multiprocessing_distributed=True, device_num=3)
    assert shape(modes.plan(args, 1)) == ("spawn", 3, 3)
    # ModelZoo shell loop: --local_rank with RANK_SIZE from the environment
    clean_env.setenv("RANK_SIZE", "8")
    args = flags(local_rank=3)
    launch = modes.plan(args, 8)
    assert shape(launch) == ("local_rank", 1, 8)
    assert place(launch, args) == (8, 3, 3, 3, 8)
    clean_env.delenv("RANK_SIZE")
    # torchrun
    for name, value in (("RANK", "5"), ("WORLD_SIZE", "6"), ("LOCAL_RANK", "2"), ("LOCAL_WORLD_SIZE", "3"),
                        ("MASTER_ADDR", "10.1.2.3"), ("MASTER_PORT", "23456")):
        clean_env.setenv(name, value)
    args = flags(local_rank=-1)
    launch = modes.plan(args, 3)
    assert shape(launch) == ("torchrun", 1, 6)
    assert launch.ranks == [{}]  # torchrun's variables are used as they are
    assert place(launch, args) == (6, 5, 2, 2, 3)
    # the master address of the other modes: MASTER_ADDR / MASTER_PORT, --dist-url tcp://HOST:PORT
    assert modes.master_address(args) == ("10.1.2.3", 23456)
    assert modes.master_address(flags(dist_url="tcp://h:1")) == ("h", 1)
    with pytest.raises(UserError, match="give tcp://HOST:PORT"):
        modes.master_address(flags(dist_url="file:///tmp/x"))
    with pytest.raises(UserError, match="not divisible by the world size 6"):
        modes.plan(flags(batch_size=50), 3)


def test_every_launch_mode_ends_in_the_torchrun_variables(clean_env):
    """What a process of each mode finds in its environment is what torchrun would have set."""
    names = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    spawn = modes.plan(flags(multiprocessing_distributed=True, device_num=2, port=4567), 1)
    assert spawn.ranks == [{"RANK": str(i), "WORLD_SIZE": "2", "LOCAL_RANK": str(i), "LOCAL_WORLD_SIZE": "2",
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "4567"} for i in range(2)]
    node = modes.plan(flags(world_size=2, rank=1, addr="10.0.0.9", batch_size=4), 1)
    assert node.ranks == [{"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                           "MASTER_ADDR": "10.0.0.9", "MASTER_PORT": str(modes.DEFAULT_PORT)}]
    # one-node spawn without a port: a free one, so two runs on one machine do not collide
    free = modes.plan(flags(multiprocessing_distributed=True, device_num=2), 1)
    assert set(free.ranks[0]) == names and free.ranks[0]["MASTER_PORT"] == free.ranks[1]["MASTER_PORT"]
    with modes.environment(node.ranks[0]):
        assert modes.context() == (2, 1, 0, 1)
    assert not names & set(os.environ)  # restored: main() may run again in this process


def test_free_port_is_bindable():
    import socket
    port = modes.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
