"""Robin model families (registered with timm on import) and the converter for other models."""
from .convert import robinify
from .robin_resnet import RobinResNet
from .robin_wideresnet import RobinWideResNet
from . import robustbench_names  # noqa: F401  (registers the {model}_{dataset}_{threat} aliases)

__all__ = ["RobinResNet", "RobinWideResNet", "robinify"]
