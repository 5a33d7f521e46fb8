"""ptg's Python API: every stage as a function with a typed request and a typed result.

The `ptg` command only parses options, calls these and prints; a notebook or a service calls them
directly (docs/api.md has a runnable example)::

    from ptg.ptgrm import api

    cfg = api.config(overrides={"out": "runs/r", "mode": "refine", "steps": 20, ...})
    api.train(cfg)
    result = api.evaluate(api.EvalRequest("runs/r", out="runs/r/eval"))
    restored = api.restore_arrays(api.load_model("runs/r"), [image])
    api.export_onnx("runs/r", "shipped")  # one model.onnx: F, R and the prior's source

Long calls take a `Reporter` (quiet by default) for news lines and progress counts.
"""
from ptg.pipeline.priors.extract import extract_priors

from ..artifacts import export_run
from ..evaluate import MetricSettings
from ..onnx_export import export_onnx
from .evaluation import EvalRequest, EvalResult, evaluate, score_outputs
from .extraction import extract_outputs
from .reporter import QUIET, Reporter
from .restoration import Model, RestoreRequest, RestoreResult, load_model, restore, restore_arrays, restore_onnx
from .training import TrainResult, config, train

__all__ = ["EvalRequest", "EvalResult", "MetricSettings", "Model", "QUIET", "Reporter", "RestoreRequest", "RestoreResult",
           "TrainResult", "config", "evaluate", "export_onnx", "export_run", "extract_outputs", "extract_priors", "load_model", "restore",
           "restore_arrays", "restore_onnx", "score_outputs", "train"]
