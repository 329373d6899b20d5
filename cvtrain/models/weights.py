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
                        "or the path/URI of a no-top ResNet50 weights file (.weights.h5/.h5): "
                        f"{weights_fix()}")
    return str(path)


def weights_fix() -> str:
    """The fix for weights that cannot be had, as something to type."""
    from cvtrain.errors import typed_set

    return (f"give a local copy with {typed_set('model.weights=FILE', 'cub200')} (a file or "
            f"an s3:// URI), or train from random weights with "
            f"{typed_set('model.weights=none', 'cub200')}")


def imagenet_failure(exc: BaseException) -> DataError | None:
    """Keras's failure to fetch or check the ImageNet weights (offline: ``Exception: URL
    fetch failure on ...``; a damaged download: ``ValueError: Incomplete or corrupted
    file``) as one line that says what to type; None for anything else."""
    text = " ".join(str(exc).split())
    if text.startswith("URL fetch failure"):
        # "URL fetch failure on ORIGIN: CODE -- REASON"
        head, _, reason = text.partition(" -- ")
        origin = head.removeprefix("URL fetch failure on ").rsplit(": ", 1)[0]
        reason = reason or text
        what = f"downloading the ImageNet weights from {origin} failed ({reason[:160]})"
    elif "corrupted file" in text or "file hash does not match" in text:
        what = f"the downloaded ImageNet weights are damaged ({text[:160]})"
    else:
        return None
    return DataError(f"model.weights: imagenet: {what}; {weights_fix()}")


def weights_identity(weights: str, seed: int) -> str:
    """What makes two backbones compute the same features: the ImageNet set, a file's
    content, or (random init) the seed."""
    if weights == "imagenet":
        return "imagenet"
    if weights.lower() == "none":
        return f"random-init-seed-{seed}"
    from cvtrain.manifest import sha256_file

    return "sha256:" + sha256_file(Path(resolve_weights(weights)))
