"""__NAME__: an AgentRouter validator.

Rejects input longer than the `max_chars` setting (default 10000).
"""

import wit_world
from wit_world.imports import settings
from wit_world.imports.types import Stage, Verdict, Verdict_Allow, Verdict_Reject


class WitWorld(wit_world.WitWorld):
    def validate(self, stage: Stage, messages) -> Verdict:
        limit = int(settings.get("max_chars") or "10000")
        total = sum(len(m.content) for m in messages)
        if stage == Stage.INPUT and total > limit:
            return Verdict_Reject(f"__NAME__: input has {total} characters, limit is {limit}")
        return Verdict_Allow()
