"""ShuffleNetV2 (Ma et al., 2018) whose blocks pass channel-shuffled halves instead of chunking ("wock": without
chunk, "op": the shuffle as its own op, "woct": without contiguous/transpose on the NPU path).

Module names and parameter shapes are torchvision's `shufflenet_v2_*`, so state_dicts load both ways with
strict=True. The only difference is the dataflow: a stride-1 block receives the previous shuffle's two halves
`(x1, x2)` and feeds `x2` to its branch; the last block of a stage returns one tensor for the next stage's stride-2
block (ChannelShuffle with split_shuffle=False).
"""
import os

import torch
from torch import nn

from .channel_shuffle import ChannelShuffle

STAGES_REPEATS = (4, 8, 4)
STAGES_OUT_CHANNELS = {
    "shufflenet_v2_x0_5": (24, 48, 96, 192, 1024),
    "shufflenet_v2_x1_0": (24, 116, 232, 464, 1024),
    "shufflenet_v2_x1_5": (24, 176, 352, 704, 1024),
    "shufflenet_v2_x2_0": (24, 244, 488, 976, 2048),
}
# torchvision's published ImageNet weights (file names as torch.hub stores them; never downloaded here)
WEIGHT_URLS = {
    "shufflenet_v2_x0_5": "https://download.pytorch.org/models/shufflenetv2_x0.5-f707e7126e.pth",
    "shufflenet_v2_x1_0": "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth",
    "shufflenet_v2_x1_5": "https://download.pytorch.org/models/shufflenetv2_x1_5-3c479a10.pth",
    "shufflenet_v2_x2_0": "https://download.pytorch.org/models/shufflenetv2_x2_0-8be3c8ee.pth",
}


def _depthwise_conv(channels, stride):
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False, groups=channels)


class InvertedResidual(nn.Module):
    """One ShuffleNetV2 unit. stride 1: input (x1, x2) halves, x2 goes through branch2; stride 2: input one tensor,
    both branches downsample it. Output: shuffled halves (split_shuffle) or one tensor."""

    def __init__(self, inp, oup, stride, split_shuffle=True, shuffle_impl=None):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError("InvertedResidual: stride must be 1 or 2, got {}".format(stride))
        branch_features = oup // 2
        if stride == 1 and inp != 2 * branch_features:
            raise ValueError("InvertedResidual: stride 1 needs inp == oup (even), got inp {} oup {}".format(inp, oup))
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise_conv(inp, stride),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, 1, 0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            _depthwise_conv(branch_features, stride),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )
        self.shuffle = ChannelShuffle(2 * branch_features, 2, split_shuffle=split_shuffle, impl=shuffle_impl)

    def forward(self, x):
        if self.stride == 1:
            if torch.is_tensor(x):  # called on a whole tensor (not from our previous block): split it here
                x = x.chunk(2, dim=1)
            x1, x2 = x
            return self.shuffle((x1, self.branch2(x2)))
        return self.shuffle((self.branch1(x), self.branch2(x)))


class ShuffleNetV2(nn.Module):
    """conv1, maxpool, stage2-4, conv5, global average pool, fc: torchvision's layout and names."""

    def __init__(self, stages_repeats, stages_out_channels, num_classes=1000, shuffle_impl=None):
        super().__init__()
        if len(stages_repeats) != 3 or len(stages_out_channels) != 5:
            raise ValueError("ShuffleNetV2: expected 3 stage repeats and 5 channel counts")
        if int(num_classes) < 1:
            raise ValueError("ShuffleNetV2: num_classes must be positive, got {}".format(num_classes))
        self._stage_out_channels = list(stages_out_channels)
        channels = stages_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for name, repeats, out_channels in zip(("stage2", "stage3", "stage4"), stages_repeats,
                                               stages_out_channels[1:4]):
            blocks = []
            for i in range(repeats):
                last = i == repeats - 1  # the next stage starts with a stride-2 block that wants one tensor
                blocks.append(InvertedResidual(channels if i == 0 else out_channels, out_channels, 2 if i == 0 else 1,
                                               split_shuffle=not last, shuffle_impl=shuffle_impl))
            setattr(self, name, nn.Sequential(*blocks))
            channels = out_channels
        out_channels = stages_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(channels, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(out_channels, num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x)
        return self.fc(x.mean([2, 3]))


def hub_weights_path(arch):
    """Where torch.hub keeps torchvision's weights for `arch` (the file torchvision would download)."""
    from training import compat  # here, as in _torch_load: importing `models` imports nothing of the engine

    file_name = os.path.basename(WEIGHT_URLS[arch])
    return os.path.join(compat.hub_dir(), "checkpoints", file_name)


def _torch_load(path):
    """torch.load on CPU that runs nothing from the file (weights_only on torch >= 1.13, the restricted unpickler
    on older torch), with a main.py checkpoint's digest checked; ValueError with one line when the file cannot be
    read, is unsafe or damaged (training/checkpoints/checkpoint.py; imported here so that `models` alone imports
    no engine)."""
    from training.checkpoints.checkpoint import read_failure, torch_load, verify_digest
    from training.errors import UserError

    try:
        state = torch_load(path)
    except Exception as exc:  # truncated / foreign file: say which one in our words, not a pickle traceback
        raise ValueError("cannot read weights file {}: {}".format(path, read_failure(path, exc))) from None
    if isinstance(state, dict):
        try:
            verify_digest(state, path)
        except UserError as exc:
            raise ValueError("cannot use weights file {}".format(exc)) from None
    return state


def load_pretrained(model, arch, pretrained):
    """Load `pretrained` (True: torch hub cache; str: a file) into model. A 1000-class file into a model with
    another num_classes loads everything but fc (fine-tuning). ValueError with one line on any problem."""
    if pretrained is True:
        path = hub_weights_path(arch)
        if not os.path.isfile(path):
            raise ValueError("pretrained weights for {} not found at {}; download {} to that path "
                             "(nothing is downloaded automatically)".format(arch, path, WEIGHT_URLS[arch]))
    else:
        path = os.path.expanduser(str(pretrained))
        if not os.path.isfile(path):
            raise ValueError("pretrained weights file {} not found (torchvision's {} weights: {})".format(
                path, arch, WEIGHT_URLS[arch]))
    state = _torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a main.py checkpoint
    if not isinstance(state, dict):
        raise ValueError("weights file {} holds no state_dict".format(path))
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    own = model.state_dict()
    fc = state.get("fc.weight")
    keep_fc = fc is None or tuple(fc.shape) == tuple(own["fc.weight"].shape)
    if not keep_fc:  # other num_classes: keep our freshly initialised classifier
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = [k for k in own if k not in state and (keep_fc or not k.startswith("fc."))]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise ValueError("weights file {} does not fit {}: missing {}, unexpected {}, wrong shape {}".format(
            path, arch, missing[:3], unexpected[:3], wrong[:3]))
    model.load_state_dict(state, strict=keep_fc)
    return model


def _build(arch, pretrained=False, num_classes=1000, **kwargs):
    model = ShuffleNetV2(STAGES_REPEATS, STAGES_OUT_CHANNELS[arch], num_classes=num_classes, **kwargs)
    if pretrained:
        load_pretrained(model, arch, pretrained)
    return model


def shufflenet_v2_x0_5(pretrained=False, num_classes=1000, **kwargs):
    """ShuffleNetV2 x0.5 (1,366,792 parameters with 1000 classes)."""
    return _build("shufflenet_v2_x0_5", pretrained, num_classes, **kwargs)


def shufflenet_v2_x1_0(pretrained=False, num_classes=1000, **kwargs):
    """ShuffleNetV2 x1.0 (2,278,604 parameters with 1000 classes)."""
    return _build("shufflenet_v2_x1_0", pretrained, num_classes, **kwargs)


def shufflenet_v2_x1_5(pretrained=False, num_classes=1000, **kwargs):
    """ShuffleNetV2 x1.5 (3,503,624 parameters with 1000 classes)."""
    return _build("shufflenet_v2_x1_5", pretrained, num_classes, **kwargs)


def shufflenet_v2_x2_0(pretrained=False, num_classes=1000, **kwargs):
    """ShuffleNetV2 x2.0 (7,393,996 parameters with 1000 classes)."""
    return _build("shufflenet_v2_x2_0", pretrained, num_classes, **kwargs)
