"""Typed errors: each way a run can fail maps to one exit code and one `error_type`."""

from __future__ import annotations

from . import settings


class CvtrainError(Exception):
    exit_code = settings.EXIT_FAILED


class ConfigError(CvtrainError):
    """A run.json key or command-line argument is invalid. Raised before any work."""

    exit_code = settings.EXIT_CONFIG

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"config key '{key}': {problem}")


class DatasetError(CvtrainError):
    """The dataset is missing, malformed, or has more corrupt samples than allowed."""

    exit_code = settings.EXIT_DATASET


class FrameworkUnavailable(CvtrainError):
    """The requested framework's package (or a custom trainer) cannot be imported."""

    exit_code = settings.EXIT_FRAMEWORK


class TrainingDiverged(CvtrainError):
    """The training loss became NaN or infinite."""

    exit_code = settings.EXIT_DIVERGED
