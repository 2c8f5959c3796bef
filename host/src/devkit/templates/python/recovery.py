"""__NAME__: an AgentRouter recovery strategy.

Retries rate limits after the upstream's hint, falls back on timeouts,
retries server errors while attempts remain, and gives up otherwise.
"""

import wit_world
from wit_world.imports import settings
from wit_world.imports.types import (
    Action,
    Action_Fail,
    Action_Fallback,
    Action_Retry,
    FailureContext,
    Failure_RateLimited,
    Failure_Timeout,
    Failure_UpstreamStatus,
)


class WitWorld(wit_world.WitWorld):
    def recover(self, ctx: FailureContext) -> Action:
        delay_ms = int(settings.get("delay_ms") or "200")
        failure = ctx.failure
        if isinstance(failure, Failure_RateLimited):
            return Action_Retry(failure.value if failure.value is not None else delay_ms)
        if isinstance(failure, Failure_Timeout):
            if ctx.alternatives:
                return Action_Fallback(ctx.alternatives[0])
            return Action_Fail(False)
        if isinstance(failure, Failure_UpstreamStatus) and failure.value >= 500 and ctx.attempt < ctx.max_attempts:
            return Action_Retry(delay_ms)
        return Action_Fail(False)
