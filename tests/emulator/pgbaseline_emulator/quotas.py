"""RDS account quotas: the maxima the emulator reports and enforces in every account and region.

AWS applies each quota per account and per region. One table of maxima serves them all here;
usage is counted per backend (moto keeps one RDS backend per account and region). The
``/_emulator/quotas`` control endpoint changes the maxima, and a reset restores the baseline:
AWS's defaults unless ``serve --quota NAME=N`` changed them at start-up.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

# Amazon RDS user guide, "Quotas and constraints for Amazon RDS": the defaults per region.
DB_PARAMETER_GROUPS = "DBParameterGroups"  # 50, adjustable
DB_CLUSTER_PARAMETER_GROUPS = "DBClusterParameterGroups"  # 50, not adjustable
DB_INSTANCES = "DBInstances"  # 40, adjustable
DB_CLUSTERS = "DBClusters"  # 40, adjustable

AWS_DEFAULTS: dict[str, int] = {
    DB_INSTANCES: 40,
    DB_PARAMETER_GROUPS: 50,
    DB_CLUSTERS: 40,
    DB_CLUSTER_PARAMETER_GROUPS: 50,
}

# Creating past these fails. DBInstances and DBClusters are only reported: the seeded fleets
# (F1000 has 1,020 instances) and the suite's paging tests go well past AWS's default of 40.
ENFORCED = (DB_PARAMETER_GROUPS, DB_CLUSTER_PARAMETER_GROUPS)


def _validated(values: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in values.items():
        if name not in AWS_DEFAULTS:
            raise ValueError(f"unknown quota {name!r}; known: {', '.join(AWS_DEFAULTS)}")
        # bool is an int subclass; `true` as a quota is a caller's mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"quota {name} must be a non-negative integer")
        out[name] = value
    return out


class Quotas:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._baseline = dict(AWS_DEFAULTS)
        self._active = dict(AWS_DEFAULTS)

    def set_baseline(self, values: Mapping[str, Any]) -> None:
        """What a reset restores (start-up configuration); also makes it active now."""
        clean = _validated(values)
        with self._lock:
            self._baseline = dict(AWS_DEFAULTS, **clean)
            self._active = dict(self._baseline)

    def reset(self) -> None:
        with self._lock:
            self._active = dict(self._baseline)

    def configure(self, values: Mapping[str, Any]) -> None:
        """Changes the named maxima; the others keep their current values."""
        clean = _validated(values)
        with self._lock:
            self._active.update(clean)

    def max(self, name: str) -> int:
        with self._lock:
            return self._active[name]

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._active)


def parse_assignment(text: str) -> tuple[str, int]:
    """``NAME=N`` as given to ``serve --quota``."""
    name, sep, raw = text.partition("=")
    if not sep:
        raise ValueError(f"expected NAME=N, got {text!r}")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"quota {name} must be a non-negative integer, got {raw!r}") from None
    return next(iter(_validated({name: value}).items()))


# One process serves one emulator; the RDS patches and the control endpoint share this table.
QUOTAS = Quotas()
