"""What to search: sweep files (YAML) and the validated `SweepConfig` they become."""

from core.names import METRIC_MODES
from spaces._distributions import Choice, Grid, IntRange, LogUniform, Uniform, is_distribution, representative
from spaces._entry import check_entry_points
from spaces._loader import (
    SPACES_DIR,
    apply_override,
    available_sweeps,
    load_sweep,
    resolve_sweep_path,
    set_value,
    validate_sweep,
)
from spaces._schema import SECRET_URLS, SweepConfig, check_name

__all__ = [
    "METRIC_MODES",
    "SECRET_URLS",
    "SPACES_DIR",
    "Choice",
    "Grid",
    "IntRange",
    "LogUniform",
    "SweepConfig",
    "Uniform",
    "apply_override",
    "available_sweeps",
    "check_entry_points",
    "check_name",
    "is_distribution",
    "load_sweep",
    "representative",
    "resolve_sweep_path",
    "set_value",
    "validate_sweep",
]
