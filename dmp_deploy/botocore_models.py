"""botocore's data (service models, endpoint rule sets, paginators, endpoints), parsed once per botocore version.

Creating a client parses its service's JSON model (EC2's alone is megabytes) and lists botocore's data directory
(hundreds of services) for each kind of file: about 0.2 s of CPU for the 14 services of a plan, in every process.
`CachingLoader` is botocore's own loader that also keeps what it parsed in the tool's cache directory
(dmp_deploy/cache.py, `botocore/`), as plain dicts in `marshal` form, in a folder named after botocore's and
Python's versions: a botocore upgrade reads its own files, never another version's. Only botocore's bundled data
is kept: a service or file that another search path ($AWS_DATA_PATH, ~/.aws/models) also holds goes to botocore's
loader every time, as does anything when the cache directory is not writable. A cache file that cannot be read,
is truncated or is not what its name says is ignored (and written again): the answer is then botocore's own.
"""

from __future__ import annotations

import functools
import marshal
import os
import sys
import tempfile
import threading
from pathlib import Path

import botocore
import botocore.loaders
import botocore.model

from dmp_deploy.cache import cache_directory

ROOT = Path(__file__).resolve().parent.parent
# Written into each file and checked when it is read: a file of an older layout is never taken for this one.
FORMAT = 1


def version_key() -> str:
    """The folder of this botocore's (and this Python's: `marshal` is version-specific) files."""
    return f"botocore-{botocore.__version__}-py{sys.version_info[0]}.{sys.version_info[1]}"


def _plain(value):
    """JSON data as plain dicts and lists (botocore parses into OrderedDicts, which `marshal` does not take; every
    dict keeps its order)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class CachingLoader(botocore.loaders.Loader):
    """botocore's Loader, with what it parses from its bundled data also kept in `directory` (None: no cache)."""

    def __init__(self, directory: Path | None, **kwargs):
        super().__init__(**kwargs)
        self.cache_directory = directory
        self._memo: dict = {}
        self._memo_lock = threading.Lock()

    def load_service_model(self, service_name, type_name, api_version=None):
        key = ("service", service_name, type_name, api_version)
        if key in self._memo:
            return self._memo[key]
        model = None
        cacheable = self.cache_directory is not None and self._only_bundled(service_name, directory=True)
        name = f"{service_name}.{type_name}.{api_version or 'latest'}"
        if cacheable:
            model = self._read(name, key)
        if model is None:
            model = super().load_service_model(service_name, type_name, api_version)
            if cacheable:
                self._write(name, key, model)
        return self._remember(key, model)

    def load_data_with_path(self, name):
        key = ("data", name)
        if key in self._memo:
            return self._memo[key]
        found = None
        # Only top-level files (endpoints, partitions, _retry, ...): a service's files come through
        # load_service_model, which has already decided whether they are cacheable.
        cacheable = self.cache_directory is not None and "/" not in name and self._only_bundled(name, directory=False)
        if cacheable:
            data = self._read(f"data.{name}", key)
            if data is not None:
                found = (data, os.path.join(self.BUILTIN_DATA_PATH, name))
        if found is None:
            found = super().load_data_with_path(name)
            if cacheable and self.is_builtin_path(found[1]):
                self._write(f"data.{name}", key, found[0])
        return self._remember(key, found)

    def _remember(self, key, value):
        # One object per key and process, as botocore's own per-instance cache: clients share their models.
        with self._memo_lock:
            return self._memo.setdefault(key, value)

    def _only_bundled(self, relative: str, directory: bool) -> bool:
        """True when no search path but botocore's bundled data holds `relative` (a service's folder or a file)."""
        for path in self.search_paths:
            if path == self.BUILTIN_DATA_PATH:
                continue
            candidate = os.path.join(path, relative)
            if os.path.isdir(candidate) if directory else self.file_loader.exists(candidate):
                return False
        return True

    def _path(self, name: str) -> Path:
        return self.cache_directory / version_key() / f"{name}.marshal"

    def _read(self, name: str, key: tuple):
        try:
            stored = marshal.loads(self._path(name).read_bytes())
        except FileNotFoundError:
            return None
        except Exception:  # unreadable, truncated or not marshal data: botocore's loader answers instead
            return None
        if not (isinstance(stored, tuple) and len(stored) == 3 and stored[0] == FORMAT and stored[1] == key):
            return None
        return stored[2]

    def _write(self, name: str, key: tuple, data) -> None:
        """Write atomically (a temporary file renamed over the cache file): a reader in another process sees the
        old file, no file, or the whole new one. Failing to write only costs the next process the parsing."""
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            blob = marshal.dumps((FORMAT, key, _plain(data)))
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(blob)
                os.replace(temporary, path)
            except BaseException:
                os.unlink(temporary)
                raise
        except (OSError, ValueError):
            pass


_loader_lock = threading.Lock()
_shared_loader: CachingLoader | None = None


def shared_loader(data_path: str | None = None) -> CachingLoader:
    """One loader per process: its models are parsed (or read from the cache) once, not again by every seam a
    process opens (the tests and benchmarks open hundreds). `data_path`: botocore's `data_path` setting
    ($AWS_DATA_PATH) of the first session that asks; the loader then searches it first, as botocore's does."""
    global _shared_loader
    with _loader_lock:
        if _shared_loader is None:
            extra = None
            if data_path is None:
                data_path = os.environ.get("AWS_DATA_PATH")
            if data_path:
                extra = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)]
            _shared_loader = CachingLoader(cache_directory("botocore", ROOT), extra_search_paths=extra)
        return _shared_loader


@functools.lru_cache(maxsize=None)
def service_model(service: str) -> botocore.model.ServiceModel:
    """A service's model (its operations' input and output shapes), from the shared loader; one per process."""
    return botocore.model.ServiceModel(shared_loader().load_service_model(service, "service-2"),
                                       service_name=service)
