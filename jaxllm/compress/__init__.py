"""Compression of trained models: int8 weight-only quantization, magnitude pruning."""
