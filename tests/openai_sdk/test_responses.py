"""The Responses API through the official OpenAI Python SDK: the gateway
translates each response to a chat completion for the recording upstream
(what it was sent is checked) and its answer back; responses are stored,
retrieved, listed, deleted and continued with `previous_response_id`;
streams are assembled by the SDK's own helper; function tools go out in
their chat shape and their outputs come back as tool messages.
"""

import json

import openai
import pytest

from recording import MODEL, USAGE, answer, chunk, completion, received, reply, stream, text_choice

TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Whether a colour is warm or cold.",
    "parameters": {
        "type": "object",
        "properties": {"colour": {"type": "string"}},
        "required": ["colour"],
        "additionalProperties": False,
    },
    "strict": True,
}
CALL = {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"colour":"red"}'}}


def tool_call():
    return answer(
        completion(
            [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": [CALL]},
                    "logprobs": None,
                    "finish_reason": "tool_calls",
                }
            ]
        )
    )


def test_a_response_is_created_retrieved_listed_continued_and_deleted(client):
    reply(answer(completion([text_choice(0, "Hello!")])), answer(completion([text_choice(0, "Again.")])))
    first = client.responses.create(model=MODEL, instructions="Be kind.", input="Hi", max_output_tokens=30)
    assert (first.object, first.status, first.output_text) == ("response", "completed", "Hello!")
    assert first.id.startswith("resp_")
    assert (first.usage.input_tokens, first.usage.output_tokens, first.usage.total_tokens) == (20, 8, 28)
    assert first.usage.input_tokens_details.cached_tokens == 16
    assert first.usage.output_tokens_details.reasoning_tokens == 3
    assert client.responses.retrieve(first.id).output_text == "Hello!"

    second = client.responses.create(model=MODEL, input="Once more", previous_response_id=first.id)
    assert second.output_text == "Again." and second.previous_response_id == first.id
    sent_first, sent_second = received()
    assert sent_first["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    assert sent_first["max_completion_tokens"] == 30
    # The instructions belong to the first response only.
    assert sent_second["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Once more"},
    ]
    items = client.responses.input_items.list(second.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "Once more")]

    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as raised:
        client.responses.create(model=MODEL, input="x", previous_response_id=first.id)
    assert raised.value.code == "previous_response_not_found"
    assert len(received()) == 2


def test_a_function_tool_goes_out_and_its_output_comes_back(client):
    reply(tool_call(), answer(completion([text_choice(0, "Red is warm.")])))
    first = client.responses.create(model=MODEL, input="Is red warm?", tools=[TOOL])
    (call,) = first.output
    assert (call.type, call.name, call.call_id) == ("function_call", "lookup", "call_a")
    assert json.loads(call.arguments) == {"colour": "red"}
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "warm"}],
        tools=[TOOL],
    )
    assert second.output_text == "Red is warm."
    sent_first, sent_second = received()
    (tool,) = sent_first["tools"]
    assert tool == {"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}
    assert sent_second["messages"][-2]["tool_calls"] == [CALL]
    assert sent_second["messages"][-1] == {"role": "tool", "tool_call_id": "call_a", "content": "warm"}


def test_a_stream_is_assembled_by_the_sdks_helper(client):
    reply(
        stream(
            [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
            + [chunk([{"index": 0, "delta": {"content": p}, "finish_reason": None}]) for p in ["Red is ", "warm."]]
            + [chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]), chunk([], usage=USAGE)]
        )
    )
    with client.responses.stream(model=MODEL, input="Is red warm?") as events:
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        final = events.get_final_response()
    assert deltas == ["Red is ", "warm."]
    assert final.output_text == "Red is warm." and final.status == "completed"
    assert final.usage.input_tokens == 20
    (sent,) = received()
    assert sent["stream"] is True
    # Stored when the stream ended.
    assert client.responses.retrieve(final.id).output_text == "Red is warm."


def test_an_unsupported_tool_is_a_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
    assert raised.value.param == "tools[0].type"
    assert received() == []
