"""ChannelShuffle: both implementations equal a plain reference shuffle, forward and backward."""
import types

import pytest
import torch

from models.channel_shuffle import ENV_VAR, ChannelShuffle, resolve_impl

IMPLS = ("index_select", "transpose")


def reference_shuffle(x1, x2, groups):
    """Shuffled channel k * groups + g = channel g * per_group + k of cat(x1, x2), copied one by one."""
    joined = torch.cat((x1, x2), dim=1)
    per_group = joined.shape[1] // groups
    out = torch.empty_like(joined)
    for g in range(groups):
        for k in range(per_group):
            out[:, k * groups + g] = joined[:, g * per_group + k]
    return out


def run(shuffle, x1, x2):
    """Shuffle output as one tensor whatever split_shuffle is."""
    out = shuffle((x1, x2))
    return torch.cat(out, dim=1) if shuffle.split_shuffle else out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("groups,c1,c2", [(2, 6, 6), (2, 10, 10), (2, 4, 8), (3, 5, 7), (4, 8, 8)])
def test_matches_reference(impl, split, channels_last, groups, c1, c2):
    torch.manual_seed(0)
    x1, x2 = torch.randn(2, c1, 3, 4), torch.randn(2, c2, 3, 4)
    if channels_last:
        x1, x2 = x1.to(memory_format=torch.channels_last), x2.to(memory_format=torch.channels_last)
    shuffle = ChannelShuffle(c1 + c2, groups, split_shuffle=split, impl=impl)
    expected = reference_shuffle(x1, x2, groups)
    assert torch.equal(run(shuffle, x1, x2), expected)
    if split:
        first, second = shuffle((x1, x2))
        assert first.shape[1] == second.shape[1] == (c1 + c2) // 2


def test_groups_two_is_the_torchvision_shuffle():
    x1, x2 = torch.randn(2, 58, 5, 5), torch.randn(2, 58, 5, 5)
    joined = torch.cat((x1, x2), 1)
    torchvision_style = joined.view(2, 2, 58, 5, 5).transpose(1, 2).contiguous().view(2, 116, 5, 5)
    for impl in IMPLS:
        assert torch.equal(run(ChannelShuffle(116, impl=impl), x1, x2), torchvision_style)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("split", [True, False])
def test_gradcheck_float64(impl, split):
    torch.manual_seed(0)
    shuffle = ChannelShuffle(8, 2, split_shuffle=split, impl=impl)
    x1 = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: shuffle((a, b)), (x1, x2))


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_channels_last_and_odd_groups(impl):
    shuffle = ChannelShuffle(12, 3, split_shuffle=True, impl=impl)
    x1 = torch.randn(2, 5, 2, 3, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    x2 = torch.randn(2, 7, 2, 3, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: shuffle((a, b)), (x1, x2))


def test_index_select_path_is_dense_and_uses_its_own_backward():
    """The NPU path: outputs and input gradients are contiguous tensors made by index_select (no views)."""
    shuffle = ChannelShuffle(16, impl="index_select")
    x1 = torch.randn(2, 8, 3, 3, requires_grad=True)
    x2 = torch.randn(2, 8, 3, 3, requires_grad=True)
    first, second = shuffle((x1, x2))
    assert "IndexShuffle" in type(first.grad_fn).__name__
    assert first.is_contiguous() and second.is_contiguous()
    (first.sum() * 2 + second.sum() * 3).backward()
    assert x1.grad.is_contiguous() and x2.grad.is_contiguous()
    # x1's channels k < 4 land in the first half (weight 2), k >= 4 in the second (weight 3)
    assert torch.equal(x1.grad[:, :4], torch.full((2, 4, 3, 3), 2.0))
    assert torch.equal(x2.grad[:, 4:], torch.full((2, 4, 3, 3), 3.0))


def test_transpose_path_gives_dense_halves_and_keeps_channels_last():
    shuffle = ChannelShuffle(16, impl="transpose")
    x1, x2 = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    assert all(h.is_contiguous() for h in shuffle((x1, x2)))
    cl = [t.to(memory_format=torch.channels_last) for t in (x1, x2)]
    assert all(h.is_contiguous(memory_format=torch.channels_last) for h in shuffle(cl))
    joined = ChannelShuffle(16, split_shuffle=False, impl="transpose")(cl)
    assert joined.is_contiguous(memory_format=torch.channels_last)


def test_indices_are_non_persistent_buffers_that_follow_to():
    shuffle = ChannelShuffle(8, impl="index_select")
    assert shuffle.state_dict() == {}
    names = {name for name, _ in shuffle.named_buffers()}
    assert {"out_index0", "out_index1", "inverse_index"} <= names
    shuffle = shuffle.to(torch.float64)  # dtype changes leave integer indices alone
    assert shuffle.out_index0.dtype == torch.int64
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    assert torch.equal(run(shuffle, x, x + 1), reference_shuffle(x, x + 1, 2))
    # Module.to(device) moves what Module._apply reaches: all three index buffers (no other device needed)
    fresh = ChannelShuffle(8, impl="index_select")
    reached = []
    fresh._apply(lambda tensor: reached.append(tensor) or tensor)
    assert all(any(t is getattr(fresh, name) for t in reached) for name in ("out_index0", "out_index1",
                                                                           "inverse_index"))


def test_impl_choice_argument_then_environment_then_device(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    auto = ChannelShuffle(8)
    assert auto.impl == "auto"
    assert auto.impl_for(types.SimpleNamespace(type="npu")) == "index_select"
    assert auto.impl_for(torch.device("cpu")) == "transpose"
    assert auto.impl_for(types.SimpleNamespace(type="cuda")) == "transpose"
    monkeypatch.setenv(ENV_VAR, "index_select")
    assert ChannelShuffle(8).impl_for(torch.device("cpu")) == "index_select"
    assert ChannelShuffle(8, impl="transpose").impl == "transpose"  # the argument wins
    assert ChannelShuffle(8, impl="auto").impl == "index_select"  # "auto" defers to the environment
    monkeypatch.setenv(ENV_VAR, "AUTO")
    assert resolve_impl(None) == "auto"
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(ValueError, match="SHUFFLE_IMPL must be one of index_select, transpose, auto"):
        ChannelShuffle(8)
    with pytest.raises(ValueError, match="impl must be one of"):
        ChannelShuffle(8, impl="gather")


def test_environment_choice_takes_the_index_select_path(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "index_select")
    x1, x2 = torch.randn(1, 4, 2, 2, requires_grad=True), torch.randn(1, 4, 2, 2)
    out = ChannelShuffle(8, split_shuffle=False)((x1, x2))
    assert "IndexShuffle" in type(out.grad_fn).__name__
    assert torch.equal(out, reference_shuffle(x1.detach(), x2, 2))


def test_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="multiple of groups"):
        ChannelShuffle(10, groups=3)
    with pytest.raises(ValueError, match="even in_channels"):
        ChannelShuffle(9, groups=3, split_shuffle=True)
    with pytest.raises(ValueError, match="got 4 \\+ 2 channels, built for 8"):
        ChannelShuffle(8)((torch.randn(1, 4, 2, 2), torch.randn(1, 2, 2, 2)))
