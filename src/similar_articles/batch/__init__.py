"""The nightly build: read the archive, encode only what changed, check quality,
publish atomically. ``run_build`` is what ``similar-articles build`` runs."""

from .build import (CACHE_FILE, CHUNK_ROWS, DRY_RUN_REPORT_FILE, ERRORS_FILE, REPORT_FILE, build_articles,
                    run_build)
from .gate import GATE_FILE, GateLimits, GateReport
from .report import EXIT_FAILED, EXIT_PUBLISHED, EXIT_REFUSED, EXIT_USAGE, STAGES, BuildReport

__all__ = ["CACHE_FILE", "CHUNK_ROWS", "DRY_RUN_REPORT_FILE", "ERRORS_FILE", "REPORT_FILE", "GATE_FILE", "STAGES", "EXIT_FAILED",
           "EXIT_PUBLISHED", "EXIT_REFUSED", "EXIT_USAGE", "BuildReport", "GateLimits", "GateReport",
           "build_articles", "run_build"]
