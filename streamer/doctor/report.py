"""One line per check: ✓ or ✗, what was checked, what was found; under a ✗, how to fix it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OK_MARK, FAILED_MARK = "✓", "✗"


@dataclass(frozen=True)
class Check:
    """The outcome of one check. A failed check says how to fix it."""

    name: str  # what was checked, e.g. "camera", "RTSP_PORT"
    ok: bool
    detail: str  # what was found
    fix: str | None = None

    @classmethod
    def passed(cls, name: str, detail: str) -> Check:
        return cls(name, True, detail)

    @classmethod
    def failed(cls, name: str, detail: str, fix: str) -> Check:
        return cls(name, False, detail, fix)


def table(checks: Sequence[Check]) -> str:
    """The checks as aligned rows, each fix on the line below its ✗."""
    width = max((len(check.name) for check in checks), default=0)
    lines = []
    for check in checks:
        lines.append(f"{OK_MARK if check.ok else FAILED_MARK} {check.name:<{width}}  {check.detail}")
        if check.fix:
            lines.append(f"  {'':<{width}}  fix: {check.fix}")
    return "\n".join(lines) + "\n"


def summary(checks: Sequence[Check]) -> str:
    failed = [check.name for check in checks if not check.ok]
    if not failed:
        return f"all {len(checks)} checks passed\n"
    return f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}\n"
