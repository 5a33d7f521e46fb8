"""An explicit model registry: names -> (class, config dataclass, kind).

Filled by the `register_model` decorator in each architecture file; `ptg.ptgrm.models` imports
those files explicitly (no folder scanning). Duplicate names are refused, unknown names raise a
`PtgError` listing the registered ones, and override keys that are not fields of the model's
config are rejected (a typo must not silently build the default network).

A name of the form ``"package.module:ClassName"`` builds a user network instead: the module is
imported with importlib and the class is called with the overrides as keyword arguments.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from torch import nn

from ptg.pipeline.core.errors import PtgError

# What a model's forward takes, so a trainer can call every registered model uniformly:
#   "restorer":         forward(x[B,3,H,W]) -> [B,3,H,W]                     (a baseline F)
#   "refiner":          forward(ihat, x, priors) -> RefineOutput              (PTG-RM, R)
#   "feature-refiner":  forward(x, priors) -> [B,3,H,W]                      (F with R on its features, "-f")
ModelKind = Literal["restorer", "refiner", "feature-refiner"]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one name."""

    name: str  # the registry name, e.g. "ptgrm"
    cls: type[nn.Module]  # the architecture; called as cls(config)
    config_cls: type  # its config dataclass
    kind: ModelKind  # how forward is called (see ModelKind)
    defaults: dict[str, Any] = field(default_factory=dict)  # config overrides that define this name
    description: str = ""  # one line for `ptg models`
    external: bool = False  # built from a weights file or another package (spandrel, oidn, zero-dce): no random-init build
    black_box: bool = False  # F with no gradient through it: usable only frozen (--mode refine)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    config: type,
    kind: ModelKind = "restorer",
    defaults: dict[str, Any] | None = None,
    description: str = "",
    external: bool = False,
    black_box: bool = False,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding an architecture under ``name``.

    Args:
        name: registry name; must be new.
        config: the config dataclass the class takes as its first argument.
        kind: how forward is called.
        defaults: config values that distinguish this name from the dataclass defaults
            (e.g. "restormer-paper" is Restormer with the paper's widths).
        description: one line shown by `ptg models`.
        external: the model needs a weights file or another package to be built at all, so
            `ptg models` and the random-init model tests do not build it.
        black_box: F cannot be trained or back-propagated through (refine mode only).
    """
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"register_model({name!r}): config must be a dataclass, got {config!r}")
    defaults = dict(defaults or {})
    _check_fields(name, config, defaults)

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered (by {_REGISTRY[name].cls.__qualname__})")
        _REGISTRY[name] = ModelSpec(name, cls, config, kind, defaults, description, external, black_box)
        return cls

    return wrap


def list_models() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The `ModelSpec` of a registered name; PtgError listing the names if unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PtgError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())} "
            "(or give a user network as 'package.module:ClassName')"
        ) from None


def get_model_config_class(name: str) -> type:
    """The config dataclass of a registered name."""
    return get_model_spec(name).config_cls


def get_model_config(name: str, **overrides: Any) -> Any:
    """The config instance ``create_model(name, **overrides)`` would build the model from."""
    spec = get_model_spec(name)
    _check_fields(name, spec.config_cls, overrides)
    values = {**spec.defaults, **overrides}
    try:
        return spec.config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise PtgError(f"invalid configuration for model {name!r}: {exc}") from exc


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model, or a user network given as ``"package.module:ClassName"``.

    Args:
        name: a registry name (see `list_models`) or ``"package.module:ClassName"``.
        **overrides: config fields to change (for a user network: its constructor's kwargs).

    Returns:
        The model, freshly initialised (deterministic under ``torch.manual_seed``); never loads
        weights unless the config asks for them (e.g. ``ffdnet`` with ``pretrained=True``).
    """
    if ":" in name:
        return _create_user_model(name, overrides)
    spec = get_model_spec(name)
    config = get_model_config(name, **overrides)
    return spec.cls(config)


def model_kind(name: str) -> ModelKind:
    """How ``name``'s forward is called; a user network (``module:Class``) is a restorer F."""
    return "restorer" if ":" in name else get_model_spec(name).kind


def uses_priors(name: str, **overrides: Any) -> bool:
    """Whether the model ``name`` built with ``overrides`` takes priors: asked of its config.

    Restorers never do, "-f" networks always do, a refiner answers through its config's
    ``uses_priors`` (PTG-RM: not for ``large`` or ``prior_mode="none"``).
    """
    if ":" in name:
        return False  # a user network is a restorer F; its options are its constructor's, not a config
    kind = model_kind(name)
    if kind != "refiner":
        return kind == "feature-refiner"
    overrides = {"prior_dims": (1,), **overrides}  # the question does not depend on the dims
    return bool(getattr(get_model_config(name, **overrides), "uses_priors", True))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def _check_fields(name: str, config_cls: type, values: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PtgError(
            f"model {name!r} has no option(s) {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(sorted(known))}"
        )


def _create_user_model(target: str, overrides: dict[str, Any]) -> nn.Module:
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise PtgError(f"user network {target!r} must be written 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PtgError(
            f"cannot import module {module_name!r} for user network {target!r}: {exc}; "
            "check the spelling and that the module is on PYTHONPATH"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise PtgError(f"module {module_name!r} has no attribute {class_name!r} (from user network {target!r})")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise PtgError(f"user network {target!r} is not a torch.nn.Module subclass (got {cls!r})")
    try:
        return cls(**overrides)
    except TypeError as exc:
        raise PtgError(f"cannot build user network {target!r} with options {overrides}: {exc}") from exc
