"""One exception type per failure family; the CLI turns each into one clear line."""


class BatchloopError(Exception):
    """Base class: a failure with a message a user can act on."""


class ConfigError(BatchloopError):
    """params.yaml or the environment is missing something or holds a bad value."""


class InvalidParameter(BatchloopError):
    """A run parameter (date, identifier, model reference) is malformed."""


class PartitionNotFound(BatchloopError):
    """The requested table partition does not exist or is empty."""


class ModelNotFound(BatchloopError):
    """A model, version or alias is not in the registry."""


class ServiceUnavailable(BatchloopError):
    """A service the step needs (S3, MLflow, Spark) cannot be reached."""


class ContractViolation(BatchloopError):
    """Data breaks its contract (expectations/*.json) beyond what quarantine absorbs."""


class SnapshotMismatch(BatchloopError):
    """A training snapshot does not match the hash DVC recorded for it."""


class GoldenSampleMismatch(BatchloopError):
    """The scoring environment scores the golden sample differently from training."""


class PromotionRefused(BatchloopError):
    """An alias move that the gate or the history does not allow."""


class TrainingFailed(BatchloopError):
    """A trainer raised, or returned something that cannot be logged or scored; nothing was registered."""
