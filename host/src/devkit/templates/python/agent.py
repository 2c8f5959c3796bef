"""__NAME__: an AgentRouter agent.

Answers a task with one completion, framed by the `instructions` setting.
"""

import wit_world
from wit_world.imports import llm, log, settings
from wit_world.imports.types import CompletionRequest, Message, Role, Task, TaskResult


def setting(key: str, default: str) -> str:
    value = settings.get(key)
    return default if value is None else value


class WitWorld(wit_world.WitWorld):
    def handle(self, task: Task) -> TaskResult:
        system = Message(
            role=Role.SYSTEM,
            content=setting("instructions", "Answer briefly."),
            name=None,
            tool_calls=[],
            tool_call_id=None,
        )
        req = CompletionRequest(
            model=setting("model", ""),
            messages=[system] + list(task.input),
            tools=[],
            temperature=None,
            max_tokens=None,
            metadata=task.metadata,
        )
        # A failure of the completion is raised as Err(failure) and becomes
        # this task's failure.
        answer = llm.complete(req)
        log.log(log.Level.INFO, "answered", [("model", answer.model)])
        return TaskResult(output=answer.message, usage=answer.usage)
