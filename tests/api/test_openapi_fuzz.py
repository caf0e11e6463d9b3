"""Schemathesis against the OpenAPI schema, with a bounded number of examples: never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from api.app import create_app
from api.web import install_assets
from geodata.settings import Settings
from tests.api.conftest import Record, bearer


@pytest.fixture(scope="module")
def fuzz_client(settings: Settings) -> Iterator[TestClient]:
    # as `rutas serve` leaves it: the web map's files installed (else their path answers 503)
    install_assets(settings)
    with TestClient(create_app(settings.model_copy(update={"api_rate_per_minute": 1_000_000}))) as c:
        yield c


def test_no_server_errors(
    fuzz_client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record]
) -> None:
    api_schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_client.app)
    headers = bearer(keys[("admin", None)])
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @hsettings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            response = fuzz_client.request(
                case.method,
                case.formatted_path,
                params=case.query,
                headers={**(case.headers or {}), **headers},
                json=case.body if isinstance(case.body, dict | list) else None,
            )
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query}: {response.text[:200]}")

        call()
    assert failures == []
