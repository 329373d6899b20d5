"""Model builders registered by name (``register_model`` / ``build_model``).

Each family lives in its own module; importing a family module registers its builders
and their option classes without importing TensorFlow (builders import Keras lazily).
"""

from cvtrain.models.registry import build_model, list_models, model_option_classes, register_model

__all__ = ["build_model", "list_models", "model_option_classes", "register_model"]
