"""Channel shuffle of ShuffleNetV2 blocks, in two interchangeable implementations.

A ShuffleNetV2 block ends with `channel_shuffle(cat(x1, x2), groups)`; the next stride-1 block immediately splits
the result into two halves again. `ChannelShuffle` takes the two branch outputs `(x1, x2)` and returns either those
two halves directly (`split_shuffle=True`, so the next block needs no `chunk`) or one tensor (`split_shuffle=False`,
for the next stage's stride-2 block, which reads all channels).

Implementations (identical results, forward and backward):

- "index_select": `cat` then `index_select` by precomputed channel indices, with a hand-written backward that also
  uses `index_select`. No transpose, no chunk, no non-contiguous view: the form Ascend NPUs run fast.
- "transpose": the textbook view/transpose/contiguous. For groups=2 and equal halves it is written as one
  `torch.stack` along a new axis behind the channels (the same memory move as transpose+contiguous, without the
  separate `cat` copy), in NCHW or NHWC order so channels_last tensors stay channels_last.

Choice: argument `impl`, else environment variable `SHUFFLE_IMPL`, else "auto" = by the input's device type at
forward time: npu -> index_select, cpu/cuda -> transpose (measured faster on CPU, see tools/bench_model.py).
"""
import os

import torch
from torch import nn

IMPLS = ("index_select", "transpose", "auto")
ENV_VAR = "SHUFFLE_IMPL"
# Device types that take the index_select path under "auto"; everything else takes transpose.
INDEX_SELECT_DEVICES = ("npu",)


def resolve_impl(impl=None):
    """The implementation asked for: `impl` unless None/"auto", then $SHUFFLE_IMPL, then "auto"."""
    for source, value in (("impl", impl), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value is None or value == "":
            continue
        value = str(value).strip().lower()
        if value not in IMPLS:
            raise ValueError("{} must be one of {}, got {!r}".format(source, ", ".join(IMPLS), value))
        if value != "auto":
            return value
    return "auto"


def shuffle_indices(channels, groups):
    """Index q of the shuffled tensor reads channel `indices[q]` of the un-shuffled one (a permutation)."""
    per_group = channels // groups
    # shuffled channel k * groups + g comes from group g, position k
    return torch.arange(channels).view(groups, per_group).t().reshape(-1)


def _is_channels_last(x):
    """True when x is laid out NHWC (and not trivially both layouts at once)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _interleave_pair(a, b, nhwc):
    """Channels a0, b0, a1, b1, ... of two equally sized tensors in one copy; `nhwc` keeps channels_last.
    (reshape is a free view here: stack's output is dense.)"""
    n, c, h, w = a.shape
    if nhwc:
        out = torch.stack((a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)), dim=4)
        return out.reshape(n, h, w, 2 * c).permute(0, 3, 1, 2)
    return torch.stack((a, b), dim=2).reshape(n, 2 * c, h, w)


def _shuffle_transpose(x, groups):
    """Textbook channel shuffle of one tensor: view into groups, swap axes, copy (NCHW or NHWC order)."""
    n, c, h, w = x.shape
    if _is_channels_last(x):
        y = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, c // groups).transpose(3, 4)
        return y.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class _IndexShuffle(torch.autograd.Function):
    """cat + index_select forward; backward gathers each input's gradient with index_select (no views)."""

    @staticmethod
    def forward(ctx, x1, x2, out_indices, grad_indices):
        ctx.grad_indices = grad_indices
        ctx.split = len(out_indices) == 2
        joined = torch.cat((x1, x2), dim=1)
        outputs = tuple(joined.index_select(1, idx) for idx in out_indices)
        return outputs if ctx.split else outputs[0]

    @staticmethod
    def backward(ctx, *grads):
        grad = torch.cat(grads, dim=1) if ctx.split else grads[0]
        grad_x1 = grad.index_select(1, ctx.grad_indices[0])
        grad_x2 = grad.index_select(1, ctx.grad_indices[1])
        return grad_x1, grad_x2, None, None


class ChannelShuffle(nn.Module):
    """Shuffle `cat(x1, x2)` (in_channels in all) by `groups`; return two halves when `split_shuffle`."""

    def __init__(self, in_channels, groups=2, split_shuffle=True, impl=None):
        super().__init__()
        if groups < 1 or in_channels % groups != 0:
            raise ValueError("ChannelShuffle: in_channels ({}) must be a multiple of groups ({})".format(
                in_channels, groups))
        if split_shuffle and in_channels % 2 != 0:
            raise ValueError("ChannelShuffle: split_shuffle needs an even in_channels, got {}".format(in_channels))
        self.in_channels = in_channels
        self.groups = groups
        self.split_shuffle = split_shuffle
        self.impl = resolve_impl(impl)
        self._hidden_buffers = []  # index buffers kept out of the state_dict by hand (torch < 1.6)
        order = shuffle_indices(in_channels, groups)
        half = in_channels // 2
        outs = (order[:half], order[half:]) if split_shuffle else (order,)
        for i, idx in enumerate(outs):
            self._add_index("out_index{}".format(i), idx.contiguous())
        self.num_outputs = len(outs)
        # inverse_index[p]: where channel p of cat(x1, x2) ended up; split between x1 and x2 at forward time
        self._add_index("inverse_index", torch.argsort(order))

    def _add_index(self, name, tensor):
        """A non-persistent buffer: follows .to()/.cuda()/.npu(), never enters the state_dict. torch < 1.6 has no
        register_buffer(persistent=False): there _save_to_state_dict and _load_from_state_dict below leave it out."""
        from training import compat  # here: importing `models` imports nothing of the engine

        if compat.has_non_persistent_buffers():
            self.register_buffer(name, tensor, persistent=False)
        else:
            self.register_buffer(name, tensor)
            self._hidden_buffers.append(name)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name in self._hidden_buffers:
            del destination[prefix + name]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._hidden_buffers:  # the module's own constant: never missing, never replaced
            state_dict[prefix + name] = getattr(self, name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self):
        return "in_channels={}, groups={}, split_shuffle={}, impl={}".format(
            self.in_channels, self.groups, self.split_shuffle, self.impl)

    def impl_for(self, device):
        """The implementation used for tensors on `device` (resolves "auto")."""
        if self.impl != "auto":
            return self.impl
        return "index_select" if device.type in INDEX_SELECT_DEVICES else "transpose"

    def forward(self, inputs):
        x1, x2 = inputs
        c1 = x1.shape[1]
        if c1 + x2.shape[1] != self.in_channels:
            raise ValueError("ChannelShuffle: got {} + {} channels, built for {}".format(
                c1, x2.shape[1], self.in_channels))
        if self.impl_for(x1.device) == "index_select":
            out_indices = tuple(getattr(self, "out_index{}".format(i)) for i in range(self.num_outputs))
            inverse = self.inverse_index
            grad_indices = (inverse[:c1], inverse[c1:])
            return _IndexShuffle.apply(x1, x2, out_indices, grad_indices)
        return self._forward_transpose(x1, x2)

    def _forward_transpose(self, x1, x2):
        c1 = x1.shape[1]
        if self.groups == 2 and 2 * c1 == self.in_channels:
            nhwc = _is_channels_last(x2)
            if not self.split_shuffle:
                return _interleave_pair(x1, x2, nhwc)
            # shuffled first half = interleave(first halves of x1, x2); second half likewise: each half is its
            # own dense tensor, so the next block's branch gets a contiguous input. Needs c1 even. (chunk, not
            # two slices: its backward is one cat, where each slice's backward would zero-fill a full tensor.)
            if c1 % 2 == 0:
                a1, a2 = x1.chunk(2, dim=1)
                b1, b2 = x2.chunk(2, dim=1)
                return _interleave_pair(a1, b1, nhwc), _interleave_pair(a2, b2, nhwc)
        out = _shuffle_transpose(torch.cat((x1, x2), dim=1), self.groups)
        if self.split_shuffle:
            return out.chunk(2, dim=1)
        return out
