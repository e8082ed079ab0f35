import pytest

from tests.servers import GunicornServer

# The files that take longest (measured with --durations=0) start first, so that with the suite
# spread over processes (make test: pytest-xdist, a file's tests kept in one process, in this
# order) none of them starts last and runs alone at the end. Others keep pytest's order.
LONGEST_FIRST = (
    "test_speech.py",
    "test_fuzz.py",
    "test_fuzz_negative.py",
    "test_comic_gemini.py",
    "test_studio_browser.py",
    "test_security.py",
    "test_faults_redis.py",
    "test_jobs_server.py",
    "test_multi_instance.py",
    "test_replay.py",
    "test_lifecycle.py",
    "test_faults_storage.py",
    "test_slow_clients.py",
    "test_survival.py",
    "test_studio_progress.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))


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


@pytest.fixture(scope="module")
def fuzz_server():
    """A real gunicorn on the embedded defaults for a fuzzing module (tests/helpers/fuzz.py),
    logging warnings only."""
    with GunicornServer({"LIROO_LOG_LEVEL": "WARNING"}) as server:
        yield server


# --- shared by several modules (tests/helpers) ------------------------------------------------


@pytest.fixture(scope="module")
def offline_app(tmp_path_factory):
    """One app built in process on the embedded defaults for a whole module; its tests only
    read it."""
    from tests.helpers.wsgi import build_app

    return build_app(tmp_path_factory.mktemp("media"))
