"""Fixtures: tiny models (see tiny_models.py), prompt files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from servers import S3, Postgres
from tiny_models import build_gpt2, build_llama

# No hub here: make a hub lookup fail at once instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    return build_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return build_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(params=["gpt2", "llama"])
def model_dir(request, gpt2_dir, llama_dir) -> Path:
    return {"gpt2": gpt2_dir, "llama": llama_dir}[request.param]


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    texts = ["The history of", "You are such a piece of", "Holy", "Water boils at a temperature"]
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    return path


@pytest.fixture(scope="module")
def postgres_server():
    """A PostgreSQL server for a module's tests, or a skip saying why."""
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres(postgres_server) -> str:
    """The URL of an empty database on it."""
    return postgres_server.database("catalog")


@pytest.fixture(scope="module")
def s3():
    """An S3-compatible server (moto) for a module's tests, its AWS variables set meanwhile."""
    server = S3()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.env.items():
            patch.setenv(key, value)
        yield server
    server.stop()
