"""Batches through the official OpenAI Python SDK: `client.files.create`
uploads a JSONL file (the SDK's own multipart body), `client.batches`
creates and polls a small batch of chat requests to the recorder's
`gpt-rec`, and `client.files.content` downloads its output file; a bad
file is a `BadRequestError` naming its line.
"""

import json
import time

import openai
import pytest

from recording import MODEL, answer, completion, received, reply, text_choice


def lines(questions):
    return "".join(
        json.dumps({"custom_id": f"q-{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": MODEL, "messages": [{"role": "user", "content": q}]}}) + "\n"
        for i, q in enumerate(questions)
    ).encode()


def test_a_small_batch_runs_its_output_file_downloads_and_a_bad_file_is_refused(client):
    questions = ["one?", "two?", "three?"]
    reply(*[answer(completion([text_choice(0, "an answer")])) for _ in questions])
    uploaded = client.files.create(file=("questions.jsonl", lines(questions)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.filename == "questions.jsonl"
    assert client.files.retrieve(uploaded.id).bytes == len(lines(questions))
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"suite": "sdk"},
    )
    assert batch.status == "in_progress" and batch.request_counts.total == 3
    batch = completed(client, batch)
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 0)
    assert batch.id in [b.id for b in client.batches.list()]
    output = [json.loads(l) for l in client.files.content(batch.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["q-0", "q-1", "q-2"]
    for o in output:
        assert o["response"]["status_code"] == 200
        assert o["response"]["body"]["choices"][0]["message"]["content"] == "an answer"
    sent = sorted(r["messages"][0]["content"] for r in received())
    assert sent == sorted(questions), "each request sent upstream once"

    bad = lines(["fine"]) + b'{"custom_id": "x", "method": "GET"}\n'
    with pytest.raises(openai.BadRequestError) as raised:
        client.files.create(file=("bad.jsonl", bad), purpose="batch")
    assert raised.value.param == "file"
    assert "line 2" in raised.value.message


def test_files_list_is_filtered_by_purpose_and_pages_with_the_sdks_cursor(client):
    reply(answer(completion([text_choice(0, "listed")])))
    uploaded = client.files.create(file=("one.jsonl", lines(["one?"])), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
    )
    batch = completed(client, batch)
    everything = [f.id for f in client.files.list()]
    assert uploaded.id in everything and batch.output_file_id in everything
    inputs = list(client.files.list(purpose="batch"))
    assert uploaded.id in [f.id for f in inputs] and all(f.purpose == "batch" for f in inputs)
    outputs = list(client.files.list(purpose="batch_output"))
    assert [f.id for f in outputs if f.id == batch.output_file_id] == [batch.output_file_id]
    assert all(f.purpose == "batch_output" for f in outputs)
    # One file a page: the SDK follows `has_more` with `after` to the end.
    page = client.files.list(limit=1)
    assert len(page.data) == 1 and page.has_more
    assert [f.id for f in page] == everything


def completed(client, batch):
    """`batch` once it has completed (polled for up to ten seconds)."""
    for _ in range(500):
        batch = client.batches.retrieve(batch.id)
        if batch.status == "completed":
            break
        time.sleep(0.02)
    assert batch.status == "completed", batch
    return batch
