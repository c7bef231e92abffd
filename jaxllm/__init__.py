"""jaxllm: a JAX functional codebase for training language models end to end."""

__version__ = "0.1.0"


def __getattr__(name: str):
  """`jaxllm.load_run(RUN)`: a trained run, ready to `.generate([...])` (jaxllm/runs.py); imported
  on first use, so `import jaxllm` stays light."""
  if name == "load_run":
    from jaxllm.runs import load_run  # pylint: disable=import-outside-toplevel
    return load_run
  raise AttributeError(f"module 'jaxllm' has no attribute {name!r}")
