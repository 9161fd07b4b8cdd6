"""``switchboard dlq``'s settings: the backends, and the attempt budget a requeued letter gets."""

from __future__ import annotations

from shared.runtime.settings import AttemptBudget


class DlqSettings(AttemptBudget):
    pass
