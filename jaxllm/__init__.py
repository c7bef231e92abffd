"""jaxllm: a JAX functional codebase for training language models end to end."""

__version__ = "0.1.0"
