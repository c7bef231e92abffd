"""The whole pipeline: stage composition, run reports and sweeps."""
