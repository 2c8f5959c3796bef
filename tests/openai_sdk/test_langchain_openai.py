"""langchain-openai against the gateway, with the recording upstream behind
it: `with_structured_output(method="json_schema")`, which failed while the
gateway dropped `response_format` (the model then answered plain text that
langchain could not parse), sends the schema and gets the parsed object.
"""

import pydantic
from langchain_openai import ChatOpenAI

from recording import GATEWAY, MODEL, answer, completion, received, reply, text_choice


class Weather(pydantic.BaseModel):
    """The weather in a city."""

    city: str
    celsius: int


def chat_model():
    # Chat Completions, which the gateway serves (not the Responses API);
    # no retries, so one request shows as one.
    return ChatOpenAI(
        model=MODEL,
        base_url=GATEWAY + "/v1",
        api_key="unused-without-auth",
        use_responses_api=False,
        max_retries=0,
        temperature=0.3,
    )


def test_structured_output_with_a_json_schema_is_parsed():
    reply(answer(completion([text_choice(0, '{"city":"Oslo","celsius":-3}')])))
    structured = chat_model().with_structured_output(Weather, method="json_schema", include_raw=True)
    out = structured.invoke("Weather in Oslo?")
    assert out["parsing_error"] is None
    assert out["parsed"] == Weather(city="Oslo", celsius=-3)
    raw = out["raw"]
    assert raw.response_metadata["system_fingerprint"] == "fp_rec"
    assert raw.usage_metadata["input_token_details"]["cache_read"] == 16
    assert raw.usage_metadata["output_token_details"]["reasoning"] == 3

    (sent,) = received()
    assert sent["temperature"] == 0.3
    assert sent["messages"] == [{"role": "user", "content": "Weather in Oslo?"}]
    fmt = sent["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Weather" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["city", "celsius"] and schema["additionalProperties"] is False


def test_a_refusal_to_answer_in_the_schema_reaches_langchain():
    refused = text_choice(0, None)
    refused["message"]["refusal"] = "I can't help with that."
    reply(answer(completion([refused])))
    structured = chat_model().with_structured_output(Weather, method="json_schema", include_raw=True)
    out = structured.invoke("Weather in Oslo?")
    assert out["parsed"] is None
    assert "I can't help with that." in str(out["parsing_error"])
