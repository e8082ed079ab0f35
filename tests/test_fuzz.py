"""The server keeps to its own /openapi.json under schema-valid fuzzing (tests/helpers/fuzz.py:
what is generated and checked). The schema-breaking half is tests/test_fuzz_negative.py, a file
of its own so that the suite's processes run the two halves side by side."""

from schemathesis import GenerationMode

from tests.helpers.fuzz import keeps_to_its_document


def test_the_server_keeps_to_its_document_under_schema_valid_fuzzing(fuzz_server):
    keeps_to_its_document(fuzz_server, GenerationMode.POSITIVE)
