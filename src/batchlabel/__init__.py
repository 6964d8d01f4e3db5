"""batchlabel: a distributed batch labeling job runner on Ray."""

__version__ = "0.1.0"

__all__ = ["label_dataset"]


def __getattr__(name: str):
    """``batchlabel.label_dataset`` (imported on first use: ``import batchlabel`` stays light)."""
    if name == "label_dataset":
        from batchlabel.run.label_dataset import label_dataset

        return label_dataset
    raise AttributeError(f"module 'batchlabel' has no attribute {name!r}")
