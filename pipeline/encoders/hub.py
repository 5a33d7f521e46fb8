"""Fast offline detection for the hub-backed encoders (clip, blip2, sd).

huggingface_hub retries an unreachable hub for about a minute before it gives up. So before an
encoder downloads, one short probe (`PROBE_TIMEOUT_S`) asks whether the weights' host answers. If
it does not, the load runs in the hub's offline mode: weights already in the local cache still
load, and anything else fails at once with an error that says "offline" first and then how to pass
a local copy. Machines with a network take the real download path unchanged.
"""
from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from ..core.errors import PtgError

PROBE_TIMEOUT_S = 3.0  # one HEAD request; a hub that answers slower than this is treated as offline
_TRUE = ("1", "on", "true", "yes")
_probed: dict[str, str | None] = {}  # host -> reason it is unreachable (None: reachable), once per process


def hf_endpoint() -> str:
    """The Hugging Face hub the libraries download from (``HF_ENDPOINT``, else huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline_env() -> bool:
    """The user asked for offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why `url`'s host cannot be reached (a short sentence), or None when it answers.

    Any HTTP answer, even an error status, means the host is reachable. Proxies set in the
    environment are honoured (urllib reads ``HTTPS_PROXY``). The result is kept per host.
    """
    if offline_env():
        return "HF_HUB_OFFLINE is set"
    parts = urlparse(url)
    host = f"{parts.scheme}://{parts.netloc}"
    if host not in _probed:
        try:
            urllib.request.urlopen(urllib.request.Request(host, method="HEAD"), timeout=timeout).close()
            _probed[host] = None
        except urllib.error.HTTPError:
            _probed[host] = None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = getattr(exc, "reason", exc)
            _probed[host] = f"{parts.netloc} did not answer within {timeout:g} s: {why}"
    return _probed[host]


@contextmanager
def offline_mode() -> Iterator[None]:
    """The hub libraries' offline mode (cache only, no retries) and short socket timeouts, restored after."""
    old_env = os.environ.get("HF_HUB_OFFLINE")
    old_timeout = socket.getdefaulttimeout()
    os.environ["HF_HUB_OFFLINE"] = "1"
    socket.setdefaulttimeout(PROBE_TIMEOUT_S)  # plain-URL downloads (open_clip) fail fast too
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - every hub-backed encoder depends on it
        constants = None
    old_const = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # read once at import; the env var alone is too late
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_const
        socket.setdefaulttimeout(old_timeout)
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def offline_error(what: str, ident: str, how: str, reason: str, exc: BaseException | None = None) -> PtgError:
    """The error for weights that are not cached locally while the hub cannot be reached."""
    detail = f" (cache lookup: {type(exc).__name__})" if exc is not None else ""
    return PtgError(
        f"offline: the {what} weights {ident!r} are not on this machine and the hub cannot be reached ({reason}). "
        f"Pass a local copy: {how}. Download it on a machine with a network first (or set HF_ENDPOINT / HTTPS_PROXY "
        f"if this machine reaches the hub through them){detail}"
    )


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ~/.cache)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def nothing_cached(*extra_dirs: str | Path) -> bool:
    """No model at all in the hub cache (nor any file in `extra_dirs`): an offline load cannot succeed.

    Checked before the heavy libraries are imported, so an offline machine with an empty cache hears
    "offline" within a second or two instead of after importing torch and open_clip.
    """
    cache = hf_cache_dir()
    if cache.is_dir() and any(d.name.startswith("models--") for d in cache.iterdir()):
        return False
    return not any(Path(d).expanduser().is_dir() and any(Path(d).expanduser().iterdir()) for d in extra_dirs)


def snapshot(repo_id: str, what: str, how: str, allow: list[str] | None = None) -> Path:
    """`snapshot_dir` (a local directory, or a hub download) that says "offline" within seconds."""
    p = Path(repo_id).expanduser()
    if p.exists() or repo_id.startswith((".", "/", "~")):
        return snapshot_dir(repo_id, what, how, allow)  # local: no network involved
    reason = unreachable(hf_endpoint())
    if reason is None:
        return snapshot_dir(repo_id, what, how, allow)
    with offline_mode():
        try:
            return snapshot_dir(repo_id, what, how, allow)  # the local cache only
        except PtgError as exc:
            raise offline_error(what, repo_id, how, reason, exc.__cause__) from exc


def cannot_fetch(what: str, ident: str, how: str, exc: BaseException) -> PtgError:
    """The error for weights that are neither local nor downloadable (offline machines)."""
    return PtgError(
        f"cannot fetch the weights of {what} {ident!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
        f"This machine may be offline. Download them elsewhere and pass a local copy: {how}"
    )


def snapshot_dir(repo_id: str, what: str, how: str, allow: list[str] | None = None) -> Path:
    """A local directory holding a hub repo: the path itself if it is a directory, else a download."""
    p = Path(repo_id).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists() or repo_id.startswith((".", "/", "~")):
        raise PtgError(f"{what} weights {repo_id!r}: not a directory. {how}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=allow))
    except Exception as exc:  # HfHubHTTPError, LocalEntryNotFoundError, OSError, connection errors
        raise cannot_fetch(what, repo_id, how, exc) from exc
