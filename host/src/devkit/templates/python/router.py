"""__NAME__: an AgentRouter router.

Drops upstreams whose circuit is open and tries the fastest first.
"""

import wit_world
from wit_world.imports.types import CircuitState, RouteRequest


class WitWorld(wit_world.WitWorld):
    def route(self, req: RouteRequest, candidates) -> list:
        usable = [c for c in candidates if c.circuit != CircuitState.OPEN]
        usable.sort(key=lambda c: c.ewma_latency_ms)
        return [c.name for c in usable]
