"""The stage entry points: `python -m stages.<name> ...` from the repo root, as dvc.yaml runs them.

Run as modules, never as `python stages/<name>.py`: `-m` puts the working directory (the checkout DVC
hashed) first on sys.path, so `galaxy_finetune` is this checkout's package, not whatever an editable
install from another clone points at.
"""
