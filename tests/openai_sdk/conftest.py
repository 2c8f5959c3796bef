"""Fixtures shared by every suite here: a recorder forgotten before each
test, and an official OpenAI client pointed at the gateway."""

import pytest
from openai import OpenAI

from recording import GATEWAY, control


@pytest.fixture(autouse=True)
def fresh_recorder():
    control("/control/reset", {})


@pytest.fixture
def client():
    # The SDK's own retries stay on (2), so a 5xx would show as 3 requests.
    return OpenAI(base_url=GATEWAY + "/v1", api_key="unused-without-auth")
