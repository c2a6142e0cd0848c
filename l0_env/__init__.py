"""L0 Gym environment package (no torch import anywhere in it)."""
