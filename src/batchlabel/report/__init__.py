"""The accuracy report: metrics (metrics.py), pictures (pictures.py), files (writers.py)."""
