"""Storage: local paths and ``s3://bucket/prefix`` wherever cvtrain takes a location.

- :mod:`~cvtrain.storage.plan` decides what a copy sends, :mod:`~cvtrain.storage.etag`
  checksums files as S3 does, :mod:`~cvtrain.storage.transfer` runs the copy.
- :func:`push` / :func:`pull` / :func:`sync`: incremental (size + S3 ETag computed locally),
  concurrent, multipart for large files, retried with backoff; return :class:`SyncStats`.
- :func:`localize`: a local path for a dataset location, pulling s3 URIs into the cache once.
- :class:`RunUploader` / :func:`download_run`: a run folder mirrored to a results root while
  it is produced, ``manifest.json`` last.

S3 endpoints and credentials come from boto3's configuration (credential chain, profiles,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``); ``endpoint_url`` overrides the endpoint.
Small objects and folder listings go through obstore (:mod:`~cvtrain.storage.objstore`,
configured from that same boto3 client), everything else through boto3. Both are imported
only when an s3 URI is used.
"""

from cvtrain.storage.etag import etag_matches, local_etag
from cvtrain.storage.runs import RunUploader, download_run
from cvtrain.storage.s3 import PART_SIZE, WORKERS, S3Uri, is_s3, join
from cvtrain.storage.transfer import SyncStats, human_bytes, localize, pull, push, sync

__all__ = ["PART_SIZE", "WORKERS", "RunUploader", "S3Uri", "SyncStats", "download_run",
           "etag_matches", "human_bytes", "is_s3", "join", "local_etag", "localize", "pull",
           "push", "sync"]
