"""ptg.pipeline: everything before and around training that needs no model of ptgrm, in rooms.

`core` (errors, safe file I/O, limits, image I/O, metrics), `storage` (the storage engine and
its stores), `datasets` (manifests, synthesis, sample photos, views), `encoders` (the frozen
foundation models G), `priors` (extraction into stores, normalisation, probes). Rooms import
`core` and point one way: see docs/architecture.md.

Nothing here imports a foundation-model library at import time; encoders import theirs inside
their factories (see `ptg.pipeline.encoders`).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ptg")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
