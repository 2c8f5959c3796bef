"""The openai-agents SDK in its default mode — the Responses API — against
the gateway, with the recording upstream behind it: a triage agent hands
the question off to a colours agent, which calls its function tool and
answers, streamed and not. Each model call the SDK makes is one
`/v1/responses` request the gateway translates to a chat completion.
"""

import asyncio
import json

import pytest
from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled
from openai import AsyncOpenAI

from recording import GATEWAY, MODEL, USAGE, answer, chunk, completion, received, reply, stream, text_choice

set_tracing_disabled(True)

looked_up = []


@function_tool
def lookup(colour: str) -> str:
    """Whether a colour is warm or cold."""
    looked_up.append(colour)
    return "warm" if colour == "red" else "cold"


def agents():
    # The default client and the default API (Responses): no model class named.
    set_default_openai_client(
        AsyncOpenAI(base_url=GATEWAY + "/v1", api_key="unused-without-auth", max_retries=0),
        use_for_tracing=False,
    )
    colours = Agent(name="colours", instructions="Answer with the lookup tool.", model=MODEL, tools=[lookup])
    triage = Agent(name="triage", instructions="Hand colour questions over.", model=MODEL, handoffs=[colours])
    return triage


def call(name, arguments, call_id):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def calls(*tool_calls):
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": list(tool_calls)}
    return answer(completion([{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}]))


def streamed_call(name, arguments, call_id):
    return stream(
        [
            chunk([{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]),
            chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                                            "function": {"name": name, "arguments": arguments}}]},
                    "finish_reason": None}]),
            chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
            chunk([], usage=USAGE),
        ]
    )


def streamed_text(*pieces):
    return stream(
        [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
        + [chunk([{"index": 0, "delta": {"content": p}, "finish_reason": None}]) for p in pieces]
        + [chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]), chunk([], usage=USAGE)]
    )


def assert_the_handoff_and_the_tool(sent):
    triage, colours, final = sent
    assert triage["messages"][0] == {"role": "system", "content": "Hand colour questions over."}
    assert [t["function"]["name"] for t in triage["tools"]] == ["transfer_to_colours"]
    # After the handoff: the colours agent's instructions and tool, and the
    # conversation so far, the handoff's call and output included.
    assert colours["messages"][0] == {"role": "system", "content": "Answer with the lookup tool."}
    assert [t["function"]["name"] for t in colours["tools"]] == ["lookup"]
    assert {"role": "user", "content": "Is red warm?"} in colours["messages"]
    handed = [m for m in colours["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in handed] == ["call_h"]
    assert final["messages"][-1] == {"role": "tool", "tool_call_id": "call_l", "content": "warm"}
    assert json.loads(final["messages"][-2]["tool_calls"][0]["function"]["arguments"]) == {"colour": "red"}
    assert looked_up == ["red"]


@pytest.fixture(autouse=True)
def forget_lookups():
    looked_up.clear()


def test_an_agent_hands_off_and_the_other_calls_its_tool():
    reply(
        calls(call("transfer_to_colours", "{}", "call_h")),
        calls(call("lookup", '{"colour":"red"}', "call_l")),
        answer(completion([text_choice(0, "Red is warm.")])),
    )
    result = Runner.run_sync(agents(), "Is red warm?")
    assert result.final_output == "Red is warm."
    assert result.last_agent.name == "colours"
    # Responses-API ids: the SDK went through /v1/responses, not chat.
    assert [r.response_id[:5] for r in result.raw_responses] == ["resp_"] * 3
    assert_the_handoff_and_the_tool(received())
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (3, 60, 24)


def test_a_streamed_agent_hands_off_and_the_other_calls_its_tool():
    reply(
        streamed_call("transfer_to_colours", "{}", "call_h"),
        streamed_call("lookup", '{"colour":"red"}', "call_l"),
        streamed_text("Red is ", "warm."),
    )

    async def run():
        result = Runner.run_streamed(agents(), "Is red warm?")
        deltas = []
        async for event in result.stream_events():
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                deltas.append(event.data.delta)
        return result, deltas

    result, deltas = asyncio.run(run())
    assert result.final_output == "Red is warm."
    assert "".join(deltas) == "Red is warm."
    assert result.last_agent.name == "colours"
    assert [r.response_id[:5] for r in result.raw_responses] == ["resp_"] * 3
    sent = received()
    assert all(s["stream"] is True for s in sent)
    assert_the_handoff_and_the_tool(sent)
