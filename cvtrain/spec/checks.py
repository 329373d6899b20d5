"""What can be decided from a spec alone, decided before any data, folder or container.

- :func:`check_fit`: does the model fit the dataset? The dataset says which kinds of input
  it provides, the model which it accepts; the dataset then says the input's shape (from
  its options alone) and the model whether it can take it. Run by every spec load, so
  ``cvtrain jobs validate`` refuses a CIFAR model on the birds (and the reverse) or a conv
  head whose dropout list does not match its layers.
- :func:`local_paths`: the spec values that name files or folders on this machine (the
  dataset's and the model's ``path_fields``); a container needs them mounted, a cloud
  job cannot see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cvtrain.data.registry import get_dataset, list_datasets
from cvtrain.models.registry import list_models

if TYPE_CHECKING:
    from cvtrain.spec.schema import JobSpec


def input_kind(spec: JobSpec) -> str | None:
    """The kind of input the dataset will give the model: the first kind the model
    accepts that the dataset provides (None: they do not fit)."""
    provides = get_dataset(spec.data.dataset).provides
    return next((kind for kind in spec.model.accepts if kind in provides), None)


def models_for(dataset: str) -> list[str]:
    """Names of the registered models that fit ``dataset``."""
    provides = list_datasets()[dataset].provides
    return [name for name, entry in list_models().items()
            if any(kind in provides for kind in entry.options.accepts)]


def check_fit(spec: JobSpec) -> tuple[str, str] | None:
    """(key path, problem) when the model cannot train on the dataset as specified."""
    dataset = get_dataset(spec.data.dataset)
    kind = input_kind(spec)
    if kind is None:
        return ("model.name",
                f"{spec.model.name} takes {' or '.join(spec.model.accepts)}, but dataset "
                f"{dataset.name} provides {' or '.join(dataset.provides)}; expected one of: "
                f"{', '.join(models_for(dataset.name))}")
    shape = dataset.input_shape(spec.data, kind, spec.model)
    for key, problem in spec.model.check(shape):
        return (f"model.{key}", problem)
    return None


@dataclass(frozen=True)
class LocalPath:
    """A spec value naming a local file or folder: ``key`` is its dotted path."""

    key: str
    value: str


def is_uri(value: str) -> bool:
    return "://" in value


def local_paths(spec: JobSpec) -> list[LocalPath]:
    """Every local file or folder the spec names (URIs and keywords such as ``imagenet``
    are not local), in section order."""
    found = []
    for section in ("data", "model"):
        opts = getattr(spec, section)
        for name in opts.path_fields:
            value = getattr(opts, name)
            if (isinstance(value, str) and value and not is_uri(value)
                    and value.lower() not in opts.path_keywords):
                found.append(LocalPath(f"{section}.{name}", value))
    return found


def with_values(spec: JobSpec, values: dict[str, str]) -> JobSpec:
    """A copy of ``spec`` with dotted keys (``data.path``) set to new values; used to point
    local paths at where a container sees them."""
    doc = spec.model_dump(mode="json")
    for key, value in values.items():
        node = doc
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return type(spec).model_validate(doc)


def check_local_paths(spec: JobSpec) -> None:
    """Refuse, in one line, a local path the spec names that does not exist, with what the
    option expects (its schema description)."""
    from pathlib import Path

    from cvtrain.errors import DataError, typed_set

    for lp in local_paths(spec):
        if not Path(lp.value).expanduser().exists():
            section, name = lp.key.split(".", 1)
            field = type(getattr(spec, section)).model_fields.get(name)
            expected = f"; expected {field.description}" if field and field.description else ""
            fix = typed_set(f"{lp.key}=PATH", spec.data.dataset)
            raise DataError(f"{lp.key}: {lp.value}: no such file or folder{expected}; "
                            f"give the right one with {fix}")
