"""batchloop: batch scoring and continuous retraining for tabular models."""

__version__ = "0.1.0"
