"""The recording upstream as the suites script it (tests/support/recorder.rs):
queue its answers, read what it received, and build OpenAI-shaped bodies.

tests/openai_sdk.rs starts the recorder and a gateway serving model
`gpt-rec` from it, and passes their URLs in AGENTROUTER_GATEWAY and
AGENTROUTER_RECORDER.
"""

import json
import os
import urllib.request

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


def chunk(choices, **extra):
    body = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
            "system_fingerprint": "fp_rec", "choices": choices}
    body.update(extra)
    return body
