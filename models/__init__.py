"""Model registry: `main.py --arch NAME` lists MODEL_NAMES and builds one with build_model.

Importing this package needs only torch (no torch_npu, no apex).
"""
from .channel_shuffle import ChannelShuffle
from .shufflenetv2_wock_op_woct import (
    ShuffleNetV2,
    hub_weights_path,
    shufflenet_v2_x0_5,
    shufflenet_v2_x1_0,
    shufflenet_v2_x1_5,
    shufflenet_v2_x2_0,
)

_CONSTRUCTORS = {
    "shufflenet_v2_x0_5": shufflenet_v2_x0_5,
    "shufflenet_v2_x1_0": shufflenet_v2_x1_0,
    "shufflenet_v2_x1_5": shufflenet_v2_x1_5,
    "shufflenet_v2_x2_0": shufflenet_v2_x2_0,
}
MODEL_NAMES = sorted(_CONSTRUCTORS)

__all__ = ["MODEL_NAMES", "build_model", "ChannelShuffle", "ShuffleNetV2", "hub_weights_path"] + MODEL_NAMES


def build_model(arch, num_classes=1000, pretrained=False, **kwargs):
    """The model named `arch` (one of MODEL_NAMES); ValueError with one line for an unknown name or missing weights.
    Extra keyword arguments (e.g. shuffle_impl) go to ShuffleNetV2."""
    if arch not in _CONSTRUCTORS:
        raise ValueError("unknown --arch {!r}; choose from: {}".format(arch, ", ".join(MODEL_NAMES)))
    return _CONSTRUCTORS[arch](pretrained=pretrained, num_classes=num_classes, **kwargs)
