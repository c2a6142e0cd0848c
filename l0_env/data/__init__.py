"""Package data (the bundled HotpotQA sample, search corpus, file tasks) and the data CLI.

``python -m l0_env.data build ...`` builds a training task file from QA sets: see
:mod:`l0_env.pipeline` (the code lives there; this package holds data files, and a package
``__main__`` so that the command reads as what it does).
"""
