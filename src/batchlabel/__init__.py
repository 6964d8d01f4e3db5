"""batchlabel: a distributed batch labeling job runner on Ray."""

__version__ = "0.1.0"
