"""cvtrain: computer-vision training experiments as declarative, reproducible batch jobs."""

__version__ = "0.1.0"
