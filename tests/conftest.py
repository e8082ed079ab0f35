import pytest

from tests.servers import GunicornServer


@pytest.fixture
def start_server():
    """Start real gunicorn servers; every one is stopped when the test ends."""
    started: list[GunicornServer] = []

    def start(env: dict | None = None, **kwargs) -> GunicornServer:
        server = GunicornServer(env=env, **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def fake_gemini():
    """A loopback Gemini (tests/fake_gemini.py) for this test; point LIROO_GEMINI_BASE_URL at
    ``.url``."""
    from tests.fake_gemini import FakeGemini

    with FakeGemini() as fake:
        yield fake


@pytest.fixture(scope="module")
def module_fake_gemini():
    """One loopback Gemini for a whole test module, so one gunicorn can serve the module; reset it
    per test."""
    from tests.fake_gemini import FakeGemini

    with FakeGemini() as fake:
        yield fake


@pytest.fixture(scope="module")
def offline_server():
    """One real gunicorn on the embedded defaults (offline provider, local storage) for a whole
    module."""
    with GunicornServer() as server:
        yield server


# --- shared by several modules (tests/helpers) ------------------------------------------------


@pytest.fixture(scope="module")
def offline_app(tmp_path_factory):
    """One app built in process on the embedded defaults for a whole module; its tests only
    read it."""
    from tests.helpers.wsgi import build_app

    return build_app(tmp_path_factory.mktemp("media"))
