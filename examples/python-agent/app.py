"""A triage agent for AgentRouter, written in Python.

It classifies each request (billing, technical or general), remembers per
client what it has seen in the agent's key/value store, answers billing and
general requests itself with one `llm.complete`, and delegates technical
ones to a worker agent with `agents.call`.

The answer starts with a tag that shows what the agent decided, e.g.
``[triage 1.0.0: technical, visit 2, via researcher]``.

Build (from this folder, with componentize-py installed)::

    componentize-py -d ../../wit/0.1.0 -w agent componentize app -o triage.wasm
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import agents, kv, llm, log, settings
from wit_world.imports.types import (
    CompletionRequest,
    Failure_Internal,
    Message,
    Role,
    Task,
    TaskResult,
    Usage,
)

VERSION = "1.0.0"

# Words that mark a category; the first category with a match wins.
DEFAULT_KEYWORDS = {
    "billing": "invoice,refund,charge,billing,payment,price",
    "technical": "error,crash,bug,install,timeout,api,exception",
}
# How long a client's context is kept, in seconds (a week).
CONTEXT_TTL_S = 7 * 24 * 3600
# Topics remembered per client.
MAX_TOPICS = 5


def setting(key: str, default: str) -> str:
    value = settings.get(key)
    return default if value is None or value == "" else value


def metadata(task: Task, key: str, default: str) -> str:
    for k, v in task.metadata:
        if k == key and v:
            return v
    return default


def last_user_text(messages) -> str:
    for message in reversed(messages):
        if message.role == Role.USER:
            return message.content
    return ""


def classify(text: str) -> str:
    lowered = text.lower()
    for category in ("billing", "technical"):
        words = setting(f"{category}_keywords", DEFAULT_KEYWORDS[category])
        if any(w.strip() and w.strip() in lowered for w in words.split(",")):
            return category
    return "general"


def load_context(client: str) -> dict:
    raw = kv.get(f"client/{client}")
    if raw is None:
        return {"visits": 0, "topics": []}
    try:
        context = json.loads(raw.decode("utf-8"))
        if isinstance(context, dict):
            return context
    except (ValueError, UnicodeDecodeError):
        pass
    # A corrupt entry is not worth failing a request over: start afresh.
    log.log(log.Level.WARN, "discarding unreadable client context", [("client", client)])
    return {"visits": 0, "topics": []}


def save_context(client: str, context: dict) -> None:
    try:
        kv.set(f"client/{client}", json.dumps(context).encode("utf-8"), CONTEXT_TTL_S)
    except Err as e:
        # The answer is still right without the memory; say so in the logs.
        log.log(log.Level.WARN, "could not store client context", [("client", client), ("error", str(e.value))])


def message(role: Role, content: str) -> Message:
    return Message(role=role, content=content, name=None, tool_calls=[], tool_call_id=None)


class WitWorld(wit_world.WitWorld):
    def handle(self, task: Task) -> TaskResult:
        text = last_user_text(task.input)
        if not text:
            raise Err(Failure_Internal("triage: the task has no user message"))
        client = metadata(task, "client", "anonymous")
        category = classify(text)
        context = load_context(client)
        visits = int(context.get("visits", 0)) + 1
        topics = [t for t in context.get("topics", []) if isinstance(t, str)]

        worker = setting("worker", "")
        if category == "technical" and worker:
            # Delegation: the worker gets the client's words; its usage is
            # counted by the host and returned in its result.
            result = agents.call(worker, Task(id=f"{task.id}/{worker}", input=[message(Role.USER, text)], metadata=task.metadata))
            answer, usage, via = result.output.content, result.usage, worker
        else:
            history = ", ".join(topics) if topics else "none"
            system = (
                f"You are the {category} desk of a support team. "
                f"This client has written {visits} time(s); earlier topics: {history}. "
                "Answer briefly."
            )
            req = CompletionRequest(
                model=setting("model", ""),
                messages=[message(Role.SYSTEM, system), message(Role.USER, text)],
                tools=[],
                temperature=None,
                max_tokens=None,
                metadata=[("complexity", "low")],
            )
            completion = llm.complete(req)
            answer, usage, via = completion.message.content, completion.usage, "llm"

        topics = (topics + [category])[-MAX_TOPICS:]
        save_context(client, {"visits": visits, "topics": topics})
        log.log(
            log.Level.INFO,
            "triaged",
            [("category", category), ("client", client), ("visits", str(visits)), ("via", via)],
        )
        tag = f"[triage {VERSION}: {category}, visit {visits}, via {via}]"
        return TaskResult(
            output=message(Role.ASSISTANT, f"{tag} {answer}"),
            usage=Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens),
        )
