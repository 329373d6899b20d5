"""Where pretrained weights come from: Keras's download, a local file, or a URI."""

from __future__ import annotations

from pathlib import Path

from cvtrain.errors import DataError


def resolve_weights(weights: str) -> str | None:
    """``imagenet`` -> "imagenet" (Keras downloads it when there is internet); ``none`` ->
    None (random init); a path -> that path, which must exist; ``s3://...`` -> pulled into
    the cache first. A missing file is an error, never a silent random init."""
    if weights == "imagenet":
        return "imagenet"
    if weights.lower() == "none":
        return None
    if "://" in weights:
        from cvtrain.storage import localize

        path = localize(weights)
    else:
        path = Path(weights).expanduser()
    if not path.is_file():
        raise DataError(f"model.weights: no weights file at {weights}; expected imagenet, none, "
                        "or the path/URI of a no-top ResNet50 weights file (.weights.h5/.h5)")
    return str(path)


def weights_identity(weights: str, seed: int) -> str:
    """What makes two backbones compute the same features: the ImageNet set, a file's
    content, or (random init) the seed."""
    if weights == "imagenet":
        return "imagenet"
    if weights.lower() == "none":
        return f"random-init-seed-{seed}"
    from cvtrain.runs import sha256_file

    return "sha256:" + sha256_file(Path(resolve_weights(weights)))
