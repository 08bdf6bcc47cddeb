"""Datasets: the GaussianAvatars/VHAP export reader (multi-session, allowlists) and the embedded synthetic head."""
from reflect.data.config import DataConfig, SessionConfig, SyntheticHeadConfig
from reflect.data.errors import DatasetError
from reflect.data.fingerprint import dataset_fingerprint, evaluation_fingerprint
from reflect.data.layout import AvatarDataset, load_splits

__all__ = ["AvatarDataset", "DataConfig", "DatasetError", "SessionConfig", "SyntheticHeadConfig",
           "dataset_fingerprint", "evaluation_fingerprint", "load_splits"]
