"""The networks of dataset distillation (ConvNet, MLP, LeNet, AlexNet, VGG11, ResNet18) and flat parameters.

    model = build_model("convnet", in_shape=(3, 32, 32), num_classes=10)
    flat = flat_params(model)                       # 320,010 parameters, a copy
    logits = functional_forward(model, flat, x)     # differentiable with respect to flat

Importing this package registers every model (each model module registers itself on import).
"""

from .classic import MLP, VGG11, AlexNet, LeNet
from .convnet import ConvNet, default_convnet_depth
from .params import (
    ParamEntry,
    ParamLayout,
    Span,
    flat_params,
    functional_features,
    functional_forward,
    load_flat_,
)
from .registry import (
    DistillModel,
    ModelError,
    build_model,
    build_model_from_spec,
    list_models,
    register_model,
)
from .resnet import BasicBlock, ResNet18

__all__ = [
    "AlexNet",
    "BasicBlock",
    "ConvNet",
    "DistillModel",
    "LeNet",
    "MLP",
    "ModelError",
    "ParamEntry",
    "ParamLayout",
    "ResNet18",
    "Span",
    "VGG11",
    "build_model",
    "build_model_from_spec",
    "default_convnet_depth",
    "flat_params",
    "functional_features",
    "functional_forward",
    "list_models",
    "load_flat_",
    "register_model",
]
