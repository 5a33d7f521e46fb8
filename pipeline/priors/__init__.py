"""ptg.pipeline.priors: running encoders into stores and reading what the priors carry.

`extract` (the extraction engine behind `ptg extract-priors`, local or on dask.distributed),
`normalize` (prior normalisation and the ridge probe's algebra, numpy only) and `probe`
(`ptg priors probe`). The one room that joins encoders, datasets and storage.
"""
