"""Cloud backends for ``cvtrain submit`` / ``status`` / ``logs`` / ``cancel``.

- :mod:`cvtrain.cloud.batch`: the translation of a job (spec, sweep, options) into AWS
  Batch's words (job definition, ``submit_job`` arguments), the in-container entry's
  variant and run-id choice, and the status table's rows. Pure functions, no AWS calls.
- :mod:`cvtrain.cloud.aws`: the AWS calls (boto3, imported inside functions): pre-submit
  checks, job definition reuse, submission, status, logs, cancel, stack outputs, and the
  local record of submitted jobs.
"""
