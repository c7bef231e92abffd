"""Flax decoder models and their configuration."""

from jaxllm.models.config import SIZES, ModelConfig, get_size
from jaxllm.models.transformer import Transformer

__all__ = ["SIZES", "ModelConfig", "Transformer", "get_size"]
