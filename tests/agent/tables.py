"""The tables of phrasings the offline model is measured on (specs/offline-model.md).

`MAIN_TABLE` is the model's own: every case must pass. The held-out tables were written
apart from the model by authors who saw neither it nor the other tables; `HELDOUT` and
`HELDOUT_FRESH` were each measured once and then worked against, `HELDOUT_FINAL` was measured
once at the end and never worked against.
"""

from __future__ import annotations

from tests.agent.heldout import HELDOUT
from tests.agent.heldout_final import HELDOUT_FINAL
from tests.agent.heldout_fresh import HELDOUT_FRESH
from tests.agent.utterances import CASES, Case
from tests.agent.utterances_by_kind import CASES_BY_KIND

MAIN_TABLE: tuple[Case, ...] = (*CASES, *CASES_BY_KIND)
HELDOUT_TABLES: dict[str, tuple[list[Case], float]] = {
    # name: (cases, the pass rate required)
    "held-out": (HELDOUT, 0.95),
    "fresh held-out": (HELDOUT_FRESH, 0.95),
    "final held-out": (HELDOUT_FINAL, 0.95),
}
