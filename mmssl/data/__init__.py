"""Streaming data: shard sources, exact epoch plans, fields per modality, and the loader."""
from .audio import AudioField, LogMel
from .av import AVPairField
from .fields import ImageIdField, LabelField, SkipSample
from .image import ImageField, eval_transform, train_transform
from .loader import ShardLoader, ZippedLoaders, build_loader, training_loader
from .shards import DataSpecError, Source, read_manifest, resolve_source, resolve_sources
from .text import TextField
from .video import VideoField
from .views import MultiCrop, TwoViews, ssl_augment, strong_augment, weak_augment, weak_eval_transform

__all__ = [
    "AVPairField", "AudioField", "DataSpecError", "ImageField", "ImageIdField", "LabelField", "LogMel", "MultiCrop", "ShardLoader",
    "SkipSample", "Source", "TextField", "TwoViews", "VideoField", "ZippedLoaders", "build_loader", "training_loader", "eval_transform",
    "read_manifest", "resolve_source", "resolve_sources", "ssl_augment", "strong_augment", "train_transform",
    "weak_augment", "weak_eval_transform",
]
