"""Cloud runners for ``cvtrain submit`` / ``status`` / ``logs`` / ``cancel`` and the hidden
``run-batch`` a Batch container runs.

- :mod:`cvtrain.cloud.batch`: :class:`~cvtrain.cloud.batch.BatchRunner`, AWS Batch as a
  runner (our words mapped onto Batch's): resolving the target, refusing local paths,
  planning, submitting, status, logs, cancel and the in-container entry. Its methods
  return dataclasses; the CLI only parses and prints.
- :mod:`cvtrain.cloud.definitions`: the translation into Batch's words (job definition,
  retry strategy, resources, ``submit_job`` arguments, the spec's encoding, run ids).
  Pure, tested against golden files.
- :mod:`cvtrain.cloud.entry`: what a Batch container's environment says to run (spec,
  variant, stable run id). Pure.
- :mod:`cvtrain.cloud.status`: the status table's rows, durations and stuck-job hints. Pure.
- :mod:`cvtrain.cloud.aws`: the AWS calls (boto3, imported inside functions): stack
  outputs, pre-submit checks, job definition reuse, submission, describe, logs, cancel.
- :mod:`cvtrain.cloud.record`: the local record of the jobs submitted from here.

Sweeps are expanded in the spec layer (:func:`cvtrain.spec.expand_sweep`), local paths
found by :func:`cvtrain.spec.local_paths`, run folders named by
:class:`cvtrain.runs.RunFolder`.
"""
