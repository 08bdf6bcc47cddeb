"""The avatar model: canonical Gaussians, expression deformation, screen-space decoder."""
from reflect.model.avatar import GaussianAvatar
from reflect.model.config import DecoderConfig, DeformConfig, GaussiansConfig, ModelConfig

__all__ = ["GaussianAvatar", "ModelConfig", "GaussiansConfig", "DeformConfig", "DecoderConfig"]
