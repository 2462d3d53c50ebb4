"""Evaluation: semantic (mIoU), panoptic (PQ), instance (AP via pycocotools), generation metrics.

Importing this package registers the evaluators ``sem_seg``, ``panoptic`` and ``instance`` in
``EVALUATOR_REGISTRY`` (``fn(dataset_name, cfg=None, *, metadata=None, **overrides)``) and the
``GroundTruthEcho`` model in ``META_ARCH_REGISTRY``.
"""

from .echo import GroundTruthEcho, echo_outputs
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from .generation import attribute_accuracy, caption_mentions, codebook_usage, psnr
from .instance import InstanceEvaluator, coco_instance_metrics, encode_masks
from .panoptic import PanopticEvaluator, panoptic_ground_truth, panoptic_metrics, pq_stats
from .runner import evaluate_dataset, format_metrics
from .semantic import SemSegEvaluator, confusion_matrix, harmonic_mean, semantic_metrics

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_on_dataset",
    "SemSegEvaluator",
    "semantic_metrics",
    "confusion_matrix",
    "harmonic_mean",
    "PanopticEvaluator",
    "pq_stats",
    "panoptic_metrics",
    "panoptic_ground_truth",
    "InstanceEvaluator",
    "coco_instance_metrics",
    "encode_masks",
    "psnr",
    "codebook_usage",
    "attribute_accuracy",
    "caption_mentions",
    "GroundTruthEcho",
    "echo_outputs",
    "evaluate_dataset",
    "format_metrics",
]
