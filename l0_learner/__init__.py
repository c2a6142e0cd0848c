"""The reference learner for L0 Gym (agentic policy gradient). Work in progress: see the README."""
