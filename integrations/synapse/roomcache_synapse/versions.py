# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The Synapse versions the module has been proven against.

The module replaces part of a private method of Synapse's sliding-sync
handler, so each supported version is listed explicitly: on any other
version the module logs an error and leaves Synapse untouched.
"""

from __future__ import annotations

import importlib.metadata

SUPPORTED_SYNAPSE_VERSIONS = frozenset({"1.163.2"})


def installed_synapse_version() -> str | None:
    """The version of the installed `matrix-synapse` distribution, else
    Synapse's own `__version__` (a checkout run in place); None when neither
    can be found."""
    try:
        return importlib.metadata.version("matrix-synapse")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import synapse
    except ImportError:
        return None
    version = getattr(synapse, "__version__", None)
    return version if isinstance(version, str) else None


def is_supported(version: str | None) -> bool:
    """True when `version` (as installed; a local suffix after a space or a
    `+` is ignored) is one the module supports."""
    if version is None:
        return False
    release = version.split(" ", 1)[0].split("+", 1)[0]
    return release in SUPPORTED_SYNAPSE_VERSIONS
