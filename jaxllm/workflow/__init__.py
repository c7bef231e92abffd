"""The whole pipeline (stage by stage under one work directory), its report, and sweeps."""
