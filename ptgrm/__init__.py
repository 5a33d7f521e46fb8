"""ptg.ptgrm: PTG-RM, the baseline restoration networks, training and evaluation.

Models (`ptg.ptgrm.models`) import only torch. Training reads cached priors through
`ptg.pipeline`'s store reader and never imports a foundation-model library.
"""
