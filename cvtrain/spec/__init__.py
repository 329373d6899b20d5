"""Job specs: one strict schema, layered once.

- :mod:`~cvtrain.spec.schema`: the sections of a job; ``data`` and ``model`` come from the
  dataset and model registries.
- :mod:`~cvtrain.spec.load`: YAML, ``extends``, ``--set`` overrides, validation.
- :mod:`~cvtrain.spec.checks`: what spans sections (does the model fit the dataset?) and
  which values are local paths.
- :mod:`~cvtrain.spec.sweep`: ``--sweep`` axes as validated variants.
- :mod:`~cvtrain.spec.catalog`: finding job files by path or name.
- :mod:`~cvtrain.spec.messages`: validation errors as one line.
"""

from cvtrain.spec.checks import (
    LocalPath,
    check_fit,
    check_local_paths,
    input_kind,
    local_paths,
    with_values,
)
from cvtrain.spec.load import (
    apply_overrides,
    json_schema,
    load_raw,
    load_spec,
    merge,
    parse_override,
    parse_yaml,
    spec_from_text,
    validate,
)
from cvtrain.spec.schema import JobSpec, SpecError
from cvtrain.spec.sweep import MAX_VARIANTS, Variant, expand_sweep, parse_sweep

__all__ = ["MAX_VARIANTS", "JobSpec", "LocalPath", "SpecError", "Variant", "apply_overrides",
           "check_fit", "check_local_paths", "expand_sweep", "input_kind", "json_schema",
           "load_raw", "load_spec", "local_paths", "merge", "parse_override", "parse_sweep",
           "parse_yaml", "spec_from_text", "validate", "with_values"]
