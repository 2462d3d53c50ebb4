"""mmmask: open-vocabulary segmentation and causal-masked multimodal generation."""

__version__ = "0.1.0"
