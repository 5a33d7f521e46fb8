"""`ptg train`: F and PTG-RM trained from cached priors, without a foundation model in memory.

Library entry points (`ptg.cli.train_cmd` is the thin command around them):

- `config.resolve(...)` / `config.TrainConfig`: typed configuration, YAML, presets, ``--set``.
- `trainer.train(config, on_progress=None, force=False) -> dict`: one run; returns final.json's content.
- `state.TrainState`: the one definition of the checkpoint schema; `checkpoint.load_checkpoint`
  reads one safely (weights_only; the reader lives in `ptg.ptgrm.artifacts.checkpoint`).

Inference (`ptg eval`, `ptg restore`) loads runs through `ptg.ptgrm.artifacts`, never through here.
Nothing here imports open_clip, transformers or diffusers.
"""
