"""`/v1/embeddings` through the official OpenAI Python SDK, against the
simulated upstream `sim-embed` that tests/openai_sdk.rs configures beside
the recorder: the SDK's default base64 encoding and explicit floats decode
to the same deterministic vectors, a batch comes back in input order, a
repeat is a cache hit, and errors are the SDK's own exceptions.
"""

import math

import openai
import pytest

EMBED = "sim-embed"


def test_a_text_is_embedded_the_same_way_in_base64_and_in_floats(client):
    # The SDK asks for base64 unless told otherwise, and decodes it.
    default = client.embeddings.create(model=EMBED, input="the same text")
    floats = client.embeddings.create(model=EMBED, input="the same text", encoding_format="float")
    (a,) = default.data
    (b,) = floats.data
    assert len(a.embedding) == 64
    assert all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(a.embedding, b.embedding))
    assert math.isclose(sum(x * x for x in a.embedding), 1.0, rel_tol=1e-3)
    assert default.model == EMBED and default.object == "list"
    assert default.usage.prompt_tokens == default.usage.total_tokens == 4


def test_a_batch_comes_back_in_order_and_a_repeat_is_a_cache_hit(client):
    texts = ["red", "green", "red", "blue"]
    raw = client.embeddings.with_raw_response.create(model=EMBED, input=texts, dimensions=16)
    assert raw.headers["x-agentrouter-cache"] == "miss"
    batch = raw.parse()
    assert [d.index for d in batch.data] == [0, 1, 2, 3]
    vectors = [d.embedding for d in batch.data]
    assert all(len(v) == 16 for v in vectors)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    again = client.embeddings.with_raw_response.create(model=EMBED, input=texts, dimensions=16)
    assert again.headers["x-agentrouter-cache"] == "hit"
    assert [d.embedding for d in again.parse().data] == vectors


def test_errors_are_the_sdks_exceptions(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.embeddings.create(model="gpt-rec", input="chat models do not embed")
    assert raised.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model=EMBED, input=[])
    assert raised.value.param == "input"
    listed = {m.id: m for m in client.models.list()}
    assert listed[EMBED].model_extra["endpoints"] == ["embeddings"]
    assert listed["gpt-rec"].model_extra["endpoints"] == ["chat"]
