"""zc: ControlNet on Stable Diffusion, built to be read (see the book in notebooks/)."""
from .condition_encoder import ConditionEncoder
from .controlled_unet import ControlledUNet, MultiControlNet, lock
from .controlnet import ControlNet, ControlNetConfig
from .sd import load_sd
from .variants import ControlNetDirect, ControlNetLite
from .zero_conv import ZeroConv

__all__ = [
    "ConditionEncoder", "ControlNet", "ControlNetConfig", "ControlNetDirect", "ControlNetLite",
    "ControlledUNet", "MultiControlNet", "ZeroConv", "load_sd", "lock",
]
__version__ = "0.1.0"
