"""Loss terms, their weight schedules, and the LossStack that combines them."""
from reflect.losses.config import (
    AdversarialConfig,
    DssimConfig,
    EdgeConfig,
    FflConfig,
    GradientVarianceConfig,
    LaplacianConfig,
    LossConfig,
    LpipsConfig,
    ScheduleConfig,
    TermConfig,
    ThresholdRegConfig,
)
from reflect.losses.lpips_loader import LpipsUnavailable, load_lpips
from reflect.losses.regularizers import knn_graph
from reflect.losses.schedules import weight_at
from reflect.losses.stack import LossStack

__all__ = [
    "AdversarialConfig", "DssimConfig", "EdgeConfig", "FflConfig", "GradientVarianceConfig", "LaplacianConfig",
    "LossConfig", "LossStack", "LpipsConfig", "LpipsUnavailable", "ScheduleConfig", "TermConfig",
    "ThresholdRegConfig", "knn_graph", "load_lpips", "weight_at",
]
