"""``similar-articles serve``: the service on uvicorn, in one process or several
workers. Workers are separate processes that each load the index (its large arrays are
memory-mapped, so the page cache holds them once) and meet through the live-update
journal; a SIGTERM drains requests in flight before they exit."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import ConfigError
from ..snapshot import resolve_snapshot_dir
from .app import BoxFastPath, ServiceSettings, create_app
from .guard import TOKEN_ENV
from .metrics import MULTIPROC_ENV

SETTINGS_ENV = "SIMILAR_ARTICLES_SERVICE"  # how the settings reach worker processes


def read_token(token_file: str | os.PathLike | None) -> str | None:
    """The write token: from ``token_file`` (first line) or ``$SIMILAR_ARTICLES_TOKEN``."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {token_file}: cannot read it ({exc.strerror})") from None
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty: write the token on its first line")
        return token
    return os.environ.get(TOKEN_ENV) or None


def serve(settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info", access_log: bool = False) -> None:
    """Run the service until SIGTERM or Ctrl-C.

    access_log: a line a request on stderr (it costs throughput; a proxy in front
        usually logs requests already).
    """
    import uvicorn

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers {workers!r} is invalid: give at least 1 (one per core is a good start)")
    resolve_snapshot_dir(settings.index)  # no index: fail now with how to build one
    options = dict(host=host, port=port, log_level=log_level, access_log=access_log, timeout_graceful_shutdown=30,
                   proxy_headers=True, server_header=False)
    if workers == 1:
        uvicorn.run(BoxFastPath(create_app(settings)), **options)
        return
    # Workers are spawned processes: they rebuild the app from the environment.
    os.environ[SETTINGS_ENV] = json.dumps({**settings.__dict__, "index": str(settings.index)})
    os.environ.setdefault(MULTIPROC_ENV, tempfile.mkdtemp(prefix="similar-articles-metrics-"))
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)


def app_from_environment():
    """A worker's app, from the settings ``serve`` put in the environment."""
    values = json.loads(os.environ[SETTINGS_ENV])
    return BoxFastPath(create_app(ServiceSettings(**{**values, "index": Path(values["index"])})))
