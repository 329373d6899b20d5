"""Datasets: loading CIFAR-100 from local copies or the official archives, and synthetic data.

Nothing in this package imports TensorFlow; the tf.data pipeline lives elsewhere.
"""
