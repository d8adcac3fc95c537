"""Seeds and random-generator state: one seed for every library's generator, and the state of all of them as
plain types and tensors, so that a checkpoint can carry it and a resumed run draws the same numbers."""
import random

import numpy as np
import torch

from training.errors import UserError


def rng_state():
    """Python, numpy, torch CPU (and CUDA) generator states, as plain types and tensors."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Inverse of rng_state(); missing parts are left alone. UserError for a state of the wrong shape."""
    if not state:
        return
    try:
        _apply_rng_state(state)
    except (TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise UserError("the checkpoint's field 'rng' cannot be restored ({}: {}); add --pretrained to load only "
                        "its weights".format(type(exc).__name__, str(exc).strip().split("\n")[0][:120])) from None


def _apply_rng_state(state):
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed):
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
