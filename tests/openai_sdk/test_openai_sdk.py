"""The official OpenAI Python SDK against the gateway, with a recording
upstream behind it (tests/support/recorder.rs): every parameter the SDK sends
must reach the upstream unchanged, and every field the upstream answers must
come back to the SDK.

Run by tests/openai_sdk.rs, which starts the recorder and a gateway serving
model `gpt-rec` from it, and passes their URLs in AGENTROUTER_GATEWAY and
AGENTROUTER_RECORDER.
"""

import copy
import json
import os
import urllib.request

import openai
import pydantic
import pytest
from openai import OpenAI

GATEWAY = os.environ["AGENTROUTER_GATEWAY"]
RECORDER = os.environ["AGENTROUTER_RECORDER"]
MODEL = "gpt-rec"


def control(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        RECORDER + path,
        data=data,
        method="GET" if body is None else "POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
    return json.loads(text) if text else None


def reply(*canned):
    control("/control/replies", list(canned))


def answer(body):
    return {"kind": "json", "status": 200, "body": body}


def stream(chunks):
    return {"kind": "sse", "chunks": chunks}


def received():
    return [r["body"] for r in control("/control/requests")]


@pytest.fixture(autouse=True)
def fresh_recorder():
    control("/control/reset", {})


@pytest.fixture
def client():
    # The SDK's own retries stay on (2), so a 5xx would show as 3 requests.
    return OpenAI(base_url=GATEWAY + "/v1", api_key="unused-without-auth")


USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 8,
    "total_tokens": 28,
    "prompt_tokens_details": {"cached_tokens": 16, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 3,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}


def completion(choices, **extra):
    body = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": choices,
        "usage": USAGE,
        "system_fingerprint": "fp_rec",
        "service_tier": "default",
    }
    body.update(extra)
    return body


def logprob(token, lp):
    return {"token": token, "logprob": lp, "bytes": list(token.encode()), "top_logprobs": []}


def text_choice(index, text, **extra):
    choice = {
        "index": index,
        "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": "stop",
    }
    choice.update(extra)
    return choice


def parsed(response):
    """What the SDK read from the body (fields it was given, as given)."""
    return response.model_dump(mode="json", exclude_unset=True)


def test_every_parameter_reaches_the_upstream_and_every_field_comes_back(client):
    upstream = completion(
        [
            text_choice(
                0,
                "A red square.",
                logprobs={"content": [logprob("A", -0.01), logprob(" red square.", -0.2)], "refusal": None},
            )
        ]
    )
    reply(answer(upstream))
    params = dict(
        model=MODEL,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "name": "ann",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "file-abc"}},
                ],
            },
        ],
        temperature=0.7,
        top_p=0.9,
        stop=["\n\n"],
        seed=7,
        user="end-user-1",
        presence_penalty=0.1,
        frequency_penalty=0.2,
        logit_bias={"50256": -100},
        logprobs=True,
        top_logprobs=2,
        max_completion_tokens=64,
        store=False,
        metadata={"team": "a"},
        reasoning_effort="low",
        verbosity="low",
        service_tier="default",
        prediction={"type": "content", "content": "A red square."},
        parallel_tool_calls=False,
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Look a colour up.",
                    "strict": True,
                    "parameters": {
                        "type": "object",
                        "properties": {"colour": {"type": "string"}},
                        "required": ["colour"],
                        "additionalProperties": False,
                    },
                },
            }
        ],
        tool_choice="auto",
        response_format={"type": "json_object"},
    )
    extra_body = {"a_field_from_next_year": {"nested": [1, 2]}}
    response = client.chat.completions.create(**params, extra_body=extra_body)

    sent = copy.deepcopy(params)
    sent.update(extra_body)
    assert received() == [sent]

    got = parsed(response)
    assert got["id"].startswith("chatcmpl-") and got["id"] != upstream["id"]
    for field in ("id", "created"):
        got.pop(field)
        upstream.pop(field)
    assert got == upstream
    assert response.usage.prompt_tokens_details.cached_tokens == 16
    assert response.usage.completion_tokens_details.reasoning_tokens == 3


def test_max_tokens_is_forwarded_under_its_own_name(client):
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=6
    )
    first, second = received()
    assert first["max_tokens"] == 5 and "max_completion_tokens" not in first
    assert second["max_completion_tokens"] == 6 and "max_tokens" not in second


def test_several_choices_with_logprobs_all_come_back(client):
    reply(
        answer(
            completion(
                [
                    text_choice(0, "Yes", logprobs={"content": [logprob("Yes", -0.1)], "refusal": None}),
                    text_choice(1, "No", logprobs={"content": [logprob("No", -2.3)], "refusal": None}),
                ]
            )
        )
    )
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "yes or no?"}], n=2, logprobs=True, top_logprobs=1
    )
    assert received()[0]["n"] == 2
    assert [c.index for c in response.choices] == [0, 1]
    assert [c.message.content for c in response.choices] == ["Yes", "No"]
    assert [c.logprobs.content[0].logprob for c in response.choices] == [-0.1, -2.3]


def test_tool_calls_come_back_and_their_results_go_out_unchanged(client):
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"colour":"red"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": '{"colour":"blue"}'}},
    ]
    reply(
        answer(
            completion(
                [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls},
                        "logprobs": None,
                        "finish_reason": "tool_calls",
                    }
                ]
            )
        )
    )
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    first = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "red and blue?"}], tools=tools
    )
    assert [c.model_dump(exclude_unset=True) for c in first.choices[0].message.tool_calls] == calls
    assert first.choices[0].finish_reason == "tool_calls"

    history = [
        {"role": "user", "content": "red and blue?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_a", "content": "warm"},
        {"role": "tool", "tool_call_id": "call_b", "content": "cold"},
    ]
    client.chat.completions.create(model=MODEL, messages=history, tools=tools)
    assert received()[1]["messages"] == history


class Weather(pydantic.BaseModel):
    city: str
    celsius: int


def test_structured_output_with_a_json_schema(client):
    reply(answer(completion([text_choice(0, '{"city":"Oslo","celsius":-3}')])))
    response = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Oslo?"}], response_format=Weather
    )
    assert response.choices[0].message.parsed == Weather(city="Oslo", celsius=-3)
    fmt = received()[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Weather" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["city", "celsius"]


def chunk(choices, **extra):
    body = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
            "system_fingerprint": "fp_rec", "choices": choices}
    body.update(extra)
    return body


def streamed_answer():
    """A stream with text and logprobs, a refusal in choice 1, tool-call
    fragments, and the usage chunk OpenAI sends when asked."""
    return stream(
        [
            chunk([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}, "finish_reason": None}]),
            chunk([{"index": 0, "delta": {"content": "Hel"}, "logprobs": {"content": [logprob("Hel", -0.1)], "refusal": None}, "finish_reason": None}]),
            chunk([{"index": 0, "delta": {"content": "lo"}, "logprobs": {"content": [logprob("lo", -0.2)], "refusal": None}, "finish_reason": None}]),
            chunk([{"index": 1, "delta": {"role": "assistant", "refusal": "I can't "}, "finish_reason": None}]),
            chunk([{"index": 1, "delta": {"refusal": "help."}, "finish_reason": "stop"}]),
            chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                                            "function": {"name": "lookup", "arguments": '{"col'}}]}, "finish_reason": None}]),
            chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'our":"red"}'}}]}, "finish_reason": None}]),
            chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
            chunk([], usage=USAGE),
        ]
    )


def collect(chunks):
    text, refusal, arguments, usage_chunks, logprobs = "", "", "", [], []
    for c in chunks:
        if c.usage is not None:
            usage_chunks.append(c)
        for choice in c.choices:
            d = choice.delta
            if choice.index == 0:
                text += d.content or ""
                for call in d.tool_calls or []:
                    arguments += call.function.arguments or ""
                if choice.logprobs and choice.logprobs.content:
                    logprobs += [t.token for t in choice.logprobs.content]
            else:
                refusal += d.refusal or ""
    return text, refusal, arguments, usage_chunks, logprobs


def test_a_stream_without_include_usage_has_no_usage_chunk(client):
    reply(streamed_answer())
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True, n=2, logprobs=True)
    )
    text, refusal, arguments, usage_chunks, logprobs = collect(chunks)
    assert (text, refusal, arguments) == ("Hello", "I can't help.", '{"colour":"red"}')
    assert logprobs == ["Hel", "lo"]
    assert usage_chunks == []
    assert all(c.system_fingerprint == "fp_rec" for c in chunks)
    sent = received()[0]
    # The gateway asks the upstream for usage whatever the client asked: it
    # accounts for every token.
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["n"] == 2 and sent["logprobs"] is True


def test_a_stream_with_include_usage_ends_with_the_usage_chunk(client):
    reply(streamed_answer())
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        )
    )
    *_, usage_chunks, _ = collect(chunks)
    assert usage_chunks == [chunks[-1]]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump(exclude_unset=True) == USAGE
    assert all(c.usage is None for c in chunks[:-1])


def test_the_stream_helper_assembles_tool_calls(client):
    reply(streamed_answer())
    with client.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "hi"}]) as s:
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("call_a", "lookup", '{"colour":"red"}')
    assert final.choices[0].message.content == "Hello"


UNSUPPORTED = {
    "error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
}


@pytest.mark.parametrize("streamed", [False, True])
def test_an_upstream_400_is_a_bad_request_error_with_its_message_and_no_retry(client, streamed):
    reply({"kind": "json", "status": 400, "body": UNSUPPORTED})
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=streamed
        )
    error = raised.value
    assert error.status_code == 400
    assert UNSUPPORTED["error"]["message"] in error.message
    assert (error.code, error.param, error.type) == ("unsupported_parameter", "max_tokens", "invalid_request_error")
    assert error.response.headers["x-agentrouter-upstream"] == "rec"
    assert len(received()) == 1, "neither the SDK nor the gateway may send it again"


def test_models_can_be_listed_and_retrieved(client):
    assert MODEL in [m.id for m in client.models.list()]
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object) == (MODEL, "model")
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("no-such-model")
    assert raised.value.code == "model_not_found"
