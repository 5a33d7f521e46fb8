"""ptg.pipeline.datasets: making and reading datasets.

`manifest` (JSONL rows of degraded/target paths), `pairing` (manifests from folders and the
benchmark templates), `synth` (synthetic degradations), `samples` (real photos that ship in
packages) and `views` (the dihedral views and tiles whose priors a store caches). Imports only
`ptg.pipeline.core` (and the bundled manifests).
"""
