"""Schemathesis fuzzing of a running server from its own /openapi.json (tests/test_fuzz*.py).

Every operation of the document gets a bounded number of generated requests,
schema-valid (positive) and schema-breaking (negative), derandomized so the
suite is repeatable. Checks: no 5xx; every status, content type, header and
JSON body as the document says; negative data refused with a 4xx. Not checked:
that every schema-valid request is accepted, because the document leaves some
refusals to the server on purpose (blank text, style names accepted in any
letter case, the /process field each mode needs) and documents them as 4xx.
For a longer hunt raise FUZZ_EXAMPLES (and drop ``derandomize``).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

FUZZ_EXAMPLES = 75
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CHECKS = {
    GenerationMode.POSITIVE: CONFORMANCE,
    GenerationMode.NEGATIVE: CONFORMANCE + [negative_data_rejection],
}


def fuzz(server, operation, mode) -> tuple[list[str], int]:
    """Run the generated cases of one operation; return the failures' reports and the number of
    calls."""
    failures, calls = [], []

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        calls.append(case)
        try:
            case.call_and_validate(base_url=server.base_url, timeout=120, checks=CHECKS[mode])
        except Exception as exc:  # collected, so that one run reports every operation's failures
            failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}):\n{exc}")

    try:
        run()
    except Unsatisfiable:
        # No parameters and no body: there is nothing to break (negative mode of GET /health...).
        pass
    return failures, len(calls)


def keeps_to_its_document(server, mode) -> None:
    """Fuzz every operation of the server's own /openapi.json in ``mode``; fail with every
    failure's report, or if the server logged a traceback."""
    schema = schemathesis.openapi.from_url(server.url("/openapi.json"))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    failures, calls = [], 0
    for operation in operations:
        found, made = fuzz(server, operation, mode)
        failures += found
        calls += made
    assert calls >= FUZZ_EXAMPLES * 6  # the generation endpoints alone
    assert not failures, f"{len(failures)} failures:\n\n" + "\n\n".join(failures[:10])
    assert "Traceback (most recent call last)" not in server.log()
