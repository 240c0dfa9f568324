"""Sub-commands that live outside the Ray-free core (index build, serve, train) register here."""
from __future__ import annotations

import importlib


def register(sub) -> None:
    for module in ("deployments.cli", "training.cli"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        mod.register(sub)
