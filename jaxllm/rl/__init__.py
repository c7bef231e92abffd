"""Learning from the policy's own samples: on-policy preference pairs (and the RL loop)."""
