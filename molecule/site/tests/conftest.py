"""Shared helpers for the site scenario's testinfra files."""

import pytest

KEY = "sk-llmhost-test-key"


@pytest.fixture(scope="module")
def base_url(host):
    addr = host.ansible.get_variables()["ansible_host"]
    return f"http://{addr}:8082"


@pytest.fixture(scope="module")
def client(base_url):
    from openai import OpenAI

    return OpenAI(base_url=base_url + "/v1", api_key=KEY, max_retries=0, timeout=300)
