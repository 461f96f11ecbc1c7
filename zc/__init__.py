"""zc: ControlNet on Stable Diffusion, built to be read (see the book in notebooks/)."""
import logging as _logging


class _NoTorchvisionNotice(_logging.Filter):
    """transformers warns, on every kernel, that its image processors fall back to PIL without
    torchvision; zc never uses them (and PyPI's torchvision breaks beside the pinned CPU torch)."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


_logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionNotice())
from .condition_encoder import ConditionEncoder
from .controlled_unet import ControlledUNet, MultiControlNet, lock
from .controlnet import ControlNet, ControlNetConfig
from .sd import load_sd
from .zero_conv import ZeroConv

# Every control registers its design (zc.designs) when its module is imported: ControlNet (above,
# zc.controlled_unet), then the ablation variants and the successors, in the order tables list them;
# then the training extras (zc.train.register_extra) of the reward and the attached IP-Adapter.
# isort: off
from .controls.variants import ControlNetDirect, ControlNetLite  # noqa: E402
from .controls import t2i_adapter, controlnext, controlnet_xs, ip_adapter, reward, mmdit_controlnet  # noqa: E402,F401
# isort: on

__all__ = [
    "ConditionEncoder", "ControlNet", "ControlNetConfig", "ControlNetDirect", "ControlNetLite",
    "ControlledUNet", "MultiControlNet", "ZeroConv", "load_sd", "lock",
]
__version__ = "0.1.0"
