"""Property-based fuzz of the OpenAPI document (schemathesis) against a live server: no request,
however malformed, gets a server error, and every answer conforms to the documented schema
(status code, content type, body, headers).

Left out: schemathesis's check that every schema-valid request is accepted. The document can say
that `originations` is a file, not that the file holds valid loans, so a schema-valid upload of
random bytes is rightly answered 422 with the row or key that is wrong.

One test per operation of the document; Hypothesis draws the requests from schemathesis's
strategies (the document is taken from the app itself, so a new route is fuzzed automatically).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from live import LiveServer, new_key
from schemathesis.checks import positive_data_acceptance

from fundalloc.service import create_app

SCHEMA = schemathesis.openapi.from_dict(create_app().openapi())
OPERATIONS = {op.ok().label: op.ok() for op in SCHEMA.get_all_operations()}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'fuzz.db'}"
    server = LiveServer(url, tmp / "server.log").start()
    key = new_key(url, "admin")
    yield server, key
    server.stop()


def test_every_route_is_fuzzed():
    assert len(OPERATIONS) >= 14
    assert "POST /v1/plans" in OPERATIONS and "POST /v1/plans/{plan_id}/what-if" in OPERATIONS


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_server_errors(label, fuzz_server):
    server, key = fuzz_server
    op = OPERATIONS[label]

    @given(case=op.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        case.call_and_validate(base_url=server.base, headers={"Authorization": f"Bearer {key}"},
                               excluded_checks=[positive_data_acceptance])

    run()
