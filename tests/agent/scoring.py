"""Runs a table of cases through a driver and scores it: pass rate per kind, junk tasks."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.agent.utterances import JUNK, Case, Driver, run_case


@dataclass
class Score:
    total: Counter[str] = field(default_factory=Counter)
    passed: Counter[str] = field(default_factory=Counter)
    junk: Counter[str] = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return sum(self.passed.values()) / max(1, sum(self.total.values()))

    @property
    def junk_cases(self) -> int:
        return sum(self.junk.values())

    def report(self, name: str) -> str:
        lines = [
            f"{name}: {sum(self.passed.values())}/{sum(self.total.values())} passed "
            f"({self.rate:.1%}); junk tasks in {self.junk_cases} cases"
        ]
        for kind in sorted(self.total):
            lines.append(
                f"  {kind or '-':<14} {self.passed[kind]:>3}/{self.total[kind]:<3}"
                f" {self.passed[kind] / self.total[kind]:6.1%}  junk {self.junk[kind]}"
            )
        return "\n".join(lines)

    def details(self) -> str:
        return "\n".join(f"{case_id}:\n  " + "\n  ".join(p) for case_id, p in self.failures.items())


async def score(cases: Sequence[Case], driver: Driver, *, alternate_streaming: bool) -> Score:
    """Each case for a fresh user; one broken case never hides the others' results."""
    result = Score()
    for index, case in enumerate(cases):
        if alternate_streaming:
            driver.streamed = index % 2 == 1  # type: ignore[attr-defined]
        user_id = f"user-{case.id}-{uuid.uuid4().hex[:6]}"
        try:
            problems = await run_case(case, driver, user_id)
        except Exception as exc:
            problems = [f"raised {exc!r}"]
        result.total[case.kind] += 1
        if problems:
            result.failures[case.id] = problems
            result.junk[case.kind] += any(p.startswith(JUNK) for p in problems)
        else:
            result.passed[case.kind] += 1
    return result
