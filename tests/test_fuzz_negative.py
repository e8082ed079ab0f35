"""The server keeps to its own /openapi.json under schema-breaking fuzzing: every such request is
refused with a documented 4xx (tests/helpers/fuzz.py). The schema-valid half is
tests/test_fuzz.py."""

from schemathesis import GenerationMode

from tests.helpers.fuzz import keeps_to_its_document


def test_the_server_keeps_to_its_document_under_schema_breaking_fuzzing(fuzz_server):
    keeps_to_its_document(fuzz_server, GenerationMode.NEGATIVE)
