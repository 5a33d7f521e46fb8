"""ptg.pipeline: data, manifests, priors extraction, the priors store and metrics.

Nothing here imports a foundation-model library at import time; encoders import theirs inside
their factories (see `ptg.pipeline.encoders`).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ptg")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
