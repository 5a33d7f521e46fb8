"""ptg.pipeline.core: the primitives every other part of ptg shares.

`errors` (PtgError, the one error users see as a line), `fsio` (atomic writes, locks, safe paths),
`limits` (bounds on what a shared file may make ptg allocate), `imageio` (image decoding and
writing) and `metrics` (PSNR/SSIM in the field's conventions). Imports nothing else of ptg.
"""
