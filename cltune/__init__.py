"""cltune: continual tuning of multimodal LLMs, and measurement of what they forget."""

__version__ = "0.1.0"

from cltune.matrix import AccuracyMatrix  # noqa: E402

__all__ = ["AccuracyMatrix", "__version__"]
