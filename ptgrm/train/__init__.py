"""`ptg train`: F and PTG-RM trained from cached priors, without a foundation model in memory.

Library entry points (`ptg.cli.train_cmd` is the thin command around them):

- `config.resolve(...)` / `config.TrainConfig`: typed configuration, YAML, presets, ``--set``.
- `trainer.train(config, on_progress=None) -> dict`: one run; returns the content of final.json.
- `checkpoint.load_for_inference(path_or_run_dir)`: F and R for `ptg restore` / `ptg eval`.

Nothing here imports open_clip, transformers or diffusers.
"""
