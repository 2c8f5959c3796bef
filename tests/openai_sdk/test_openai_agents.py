"""The openai-agents SDK in chat-completions mode (`OpenAIChatCompletionsModel`
over an `AsyncOpenAI` client pointed at the gateway), with the recording
upstream behind it: an agent with one function tool calls it, sends its
result back and reads the final answer, streamed and not; the usage it
accounts is what the upstream reported, when it asked for it.
"""

import asyncio
import json

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from recording import GATEWAY, MODEL, USAGE, answer, chunk, completion, received, reply, stream, text_choice

# The SDK would export traces to OpenAI; nothing here leaves 127.0.0.1.
set_tracing_disabled(True)

CALL = {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"colour":"red"}'}}
looked_up = []


@function_tool
def lookup(colour: str) -> str:
    """Whether a colour is warm or cold."""
    looked_up.append(colour)
    return "warm" if colour == "red" else "cold"


def agent(**settings):
    client = AsyncOpenAI(base_url=GATEWAY + "/v1", api_key="unused-without-auth", max_retries=0)
    return Agent(
        name="colours",
        instructions="Answer with the lookup tool.",
        model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
        model_settings=ModelSettings(**settings),
        tools=[lookup],
    )


def tool_call_answer():
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [CALL]},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    return answer(completion([choice]))


def streamed_tool_call():
    return stream(
        [
            chunk([{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]),
            chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                                            "function": {"name": "lookup", "arguments": '{"col'}}]},
                    "finish_reason": None}]),
            chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'our":"red"}'}}]},
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


def assert_the_tool_round_trip(first, second):
    """The tool went out as the SDK declares it, and its result came back
    to the model under the call's id."""
    (tool,) = first["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "lookup"
    assert tool["function"]["description"] == "Whether a colour is warm or cold."
    assert tool["function"]["strict"] is True
    assert tool["function"]["parameters"]["required"] == ["colour"]
    assert first["messages"][0] == {"role": "system", "content": "Answer with the lookup tool."}
    assert first["messages"][1] == {"role": "user", "content": "Is red warm?"}
    calls = [m for m in second["messages"] if m.get("tool_calls")]
    assert [c["id"] for m in calls for c in m["tool_calls"]] == ["call_a"]
    assert json.loads(calls[0]["tool_calls"][0]["function"]["arguments"]) == {"colour": "red"}
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_a", "content": "warm"}
    assert looked_up == ["red"]


@pytest.fixture(autouse=True)
def forget_lookups():
    looked_up.clear()


def test_an_agent_calls_its_tool_and_answers():
    reply(tool_call_answer(), answer(completion([text_choice(0, "Red is warm.")])))
    result = Runner.run_sync(agent(temperature=0.2), "Is red warm?")
    assert result.final_output == "Red is warm."
    first, second = received()
    assert first["temperature"] == 0.2 and "stream" not in first
    assert_the_tool_round_trip(first, second)
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (2, 40, 16)
    assert usage.input_tokens_details.cached_tokens == 32
    assert usage.output_tokens_details.reasoning_tokens == 6


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_streamed_agent_calls_its_tool_and_answers(include_usage):
    reply(streamed_tool_call(), streamed_text("Red is ", "warm."))

    async def run():
        result = Runner.run_streamed(agent(include_usage=include_usage), "Is red warm?")
        deltas = []
        async for event in result.stream_events():
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                deltas.append(event.data.delta)
        return result, deltas

    result, deltas = asyncio.run(run())
    assert result.final_output == "Red is warm."
    assert "".join(deltas) == "Red is warm."
    first, second = received()
    # Whatever the client asked, the gateway asks the upstream for usage.
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert_the_tool_round_trip(first, second)
    usage = result.context_wrapper.usage
    # The usage chunk reaches the SDK exactly when it asked for it.
    if include_usage:
        assert (usage.input_tokens, usage.output_tokens) == (40, 16)
        assert usage.input_tokens_details.cached_tokens == 32
    else:
        assert (usage.input_tokens, usage.output_tokens) == (0, 0)
