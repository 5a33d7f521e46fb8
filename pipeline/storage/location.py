"""Where a store lives: a local folder or an object-store URL, parsed in one place.

A store location is a local path (``priors.zarr``, ``/data/priors.zarr``, ``file:///data/priors.zarr``)
or a bucket URL (``s3://bucket/prefix``, ``gs://bucket/prefix``, ``az://container/prefix``). Every
command that takes a store path parses it here, so a URL is never taken for a folder named ``s3:``.

Why a lookalike is refused: ``pathlib.Path("s3://b/p")`` is ``s3:/b/p`` (one slash), so a URL that
went through a ``Path`` reaches us as a local-looking path; reading it as a folder silently writes
``./s3:/b/p``. A local path whose first part is a known scheme followed by ``:`` is therefore
refused with the spelling that works.

Credentials and endpoints are never part of a location: they come from the environment of the
object-store library (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_ALLOW_HTTP``), so nothing secret is ever written into a store's metadata.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..core.errors import PtgError

REMOTE_SCHEMES = ("s3", "gs", "az")  # served by obstore through zarr.storage.ObjectStore
_ALIASES = {"s3a": "s3", "gcs": "gs", "azure": "az", "abfs": "az", "abfss": "az"}
_LOOKALIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")  # "s3:" "gs:" ... at the start of a path


@dataclass(frozen=True)
class Location:
    """A parsed store location."""

    scheme: str  # "file" for a local folder, else one of REMOTE_SCHEMES
    bucket: str  # the bucket / container ("" for a local folder)
    prefix: str  # the key prefix inside the bucket, no leading or trailing "/" ("" for a local folder)
    path: Path | None  # the local folder (None for a remote store)

    @property
    def remote(self) -> bool:
        return self.path is None

    @property
    def url(self) -> str:
        """The canonical spelling: ``s3://bucket/prefix`` or the local path."""
        if self.path is not None:
            return str(self.path)
        return f"{self.scheme}://{self.bucket}/{self.prefix}" if self.prefix else f"{self.scheme}://{self.bucket}"

    def __str__(self) -> str:
        return self.url


def _lookalike_error(text: str, flag: str) -> PtgError:
    scheme = _LOOKALIKE.match(text).group(1)  # type: ignore[union-attr]
    rest = text[len(scheme) + 1 :].lstrip("/")
    return PtgError(f"{flag} {text!r} looks like a {scheme}:// URL with a slash missing (a shell or a path type "
                    f"collapses '//'); write {scheme}://{rest} for the bucket, or ./{text} if you really mean a local "
                    "folder of that name. An option that takes local paths only keeps one slash: pull the store "
                    f"first with `ptg priors copy {scheme}://{rest} LOCAL.zarr`")


def parse_location(value: str | Path, flag: str = "store") -> Location:
    """Parse a store location.

    Args:
        value: a local path, ``file://`` URL or an ``s3://`` / ``gs://`` / ``az://`` URL.
        flag: how errors name the value (e.g. "--out").

    Raises:
        PtgError: an unknown scheme, a URL without a bucket, or a local path that looks like a URL.
    """
    text = str(value)
    if "://" in text:
        parts = urlsplit(text)
        scheme = _ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise PtgError(f"{flag} {text!r}: a file:// URL names a local folder (file:///abs/path); "
                               f"host {parts.netloc!r} is not supported")
            return Location("file", "", "", Path(unquote(parts.path)))
        if scheme not in REMOTE_SCHEMES:
            raise PtgError(f"{flag} {text!r}: scheme {parts.scheme!r} is not supported; use a local path, file://, "
                           + ", ".join(f"{s}://" for s in REMOTE_SCHEMES))
        if not parts.netloc or parts.query or parts.fragment:
            raise PtgError(f"{flag} {text!r} is not a bucket URL; write {scheme}://BUCKET/PREFIX (credentials and "
                           "endpoints come from the environment, never from the URL)")
        if "@" in parts.netloc:
            raise PtgError(f"{flag} {text!r} carries credentials in the URL; remove them and set the ecosystem's "
                           "environment variables instead (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
        prefix = parts.path.strip("/")
        if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
            raise PtgError(f"{flag} {text!r}: the prefix {prefix!r} has an empty, '.' or '..' part; name the prefix plainly")
        return Location(scheme, parts.netloc, prefix, None)
    m = _LOOKALIKE.match(text)
    if m and (m.group(1).lower() in REMOTE_SCHEMES + tuple(_ALIASES) + ("file",)):
        raise _lookalike_error(text, flag)
    return Location("file", "", "", Path(text).expanduser())


def local_only(value: str | Path, flag: str, why: str = "", fix: str = "") -> Path:
    """The local folder of ``value``, or a named error for a URL (a command that cannot use a bucket yet).

    Raises:
        PtgError: ``value`` is a bucket URL (says how to pull the store first) or a URL lookalike.
    """
    loc = parse_location(value, flag)
    if loc.remote:
        raise PtgError(f"{flag} {loc.url}: only a local folder works here{why}; " + (fix or (
            f"pull the store first with `ptg priors copy {loc.url} LOCAL.zarr` and pass LOCAL.zarr")))
    assert loc.path is not None
    return loc.path
