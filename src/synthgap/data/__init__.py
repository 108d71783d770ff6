"""Dataset layer: one `Sample` type, readers for every supported format, writers, a torch adapter."""

from synthgap.data.dataset import READERS, DetectionDataset, detect_format, open_dataset, reader_class
from synthgap.data.errors import DatasetError, SkipReport
from synthgap.data.sample import Sample, validate_sample, xywh_to_xyxy, xyxy_to_xywh

__all__ = [
    "READERS", "DetectionDataset", "detect_format", "open_dataset", "reader_class",
    "DatasetError", "SkipReport", "Sample", "validate_sample", "xywh_to_xyxy", "xyxy_to_xywh",
]
