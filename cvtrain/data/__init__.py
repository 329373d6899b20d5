"""Datasets, registered by name like models (:mod:`cvtrain.data.registry`).

- :mod:`~cvtrain.data.cifar`: CIFAR-100, both official editions, download and cache;
- :mod:`~cvtrain.data.birds`: Caltech-UCSD Birds, 2010 and 2011 layouts, and the frozen
  backbone features its heads train on;
- :mod:`~cvtrain.data.synthetic`: learnable synthetic images both write in the official
  on-disk formats, for tests and offline demos;
- :mod:`~cvtrain.data.pipeline`: ``tf.data`` streams for in-memory datasets.

Importing the package, the registry or a dataset's registration module does not import
TensorFlow: ``cvtrain jobs validate`` checks specs against the registry without it.
"""

from cvtrain.data.registry import (
    Dataset,
    DatasetOptions,
    dataset_option_classes,
    get_dataset,
    list_datasets,
    register_dataset,
)

__all__ = ["Dataset", "DatasetOptions", "dataset_option_classes", "get_dataset", "list_datasets",
           "register_dataset"]
