"""Route facts declared once (liroo/routes.py): every route of the app is declared, and the
governor's door finds a route's cost by the rule the request matches, however its path is spelled.
"""

from __future__ import annotations

import pytest
import requests

from liroo import routes
from liroo.governor.middleware import ROUTE_ENVIRON_KEY
from liroo.settings import Settings
from tests import contract
from tests.servers import GunicornServer


@pytest.fixture(scope="module")
def app(offline_app):
    return offline_app


def test_every_route_of_the_app_is_declared_once_with_its_method(app):
    served = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"  # Flask's own, for a static folder the app does not have
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served == {(route.method, route.path) for route in routes.ROUTES}


# (path as sent, method) -> the rule the door names ("": no route's work)
DOOR_RULES = {
    ("/generate_image", "POST"): "/generate_image",
    ("//generate_image", "POST"): "/generate_image",
    ("///generate_comic", "POST"): "/generate_comic",
    ("/progress/abcdefgh12", "GET"): "/progress/<request_id>",
    ("/health", "HEAD"): "/health",
    ("/generate_image", "GET"): "",  # 405
    ("/no/such/thing", "GET"): "",
    ("/generate_image/", "POST"): "",
}


@pytest.mark.parametrize("path, method", list(DOOR_RULES))
def test_the_door_names_the_rule_flask_will_route_to(app, path, method):
    rule = DOOR_RULES[path, method]
    lookup = routes.RouteLookup(app.url_map)
    assert lookup({"PATH_INFO": path, "REQUEST_METHOD": method}) == rule
    # and the route Flask itself matches is that one
    with app.test_request_context("/", method=method) as ctx:
        ctx.request.environ["PATH_INFO"] = path
        adapter = app.url_map.bind_to_environ(ctx.request.environ)
        try:
            matched = adapter.match(return_rule=True)[0].rule
        except Exception:
            matched = ""
    assert matched == rule


def test_the_door_looks_costs_up_by_the_matched_route(app):
    door = app.wsgi_app.door  # behind the replay layer (liroo/api/replay.py)
    assert door.route_costs_mb["/generate_comic"] == Settings().image_reserve_mb
    environ = {"PATH_INFO": "//generate_lecture", "REQUEST_METHOD": "POST"}
    environ[ROUTE_ENVIRON_KEY] = door.route_of(environ)
    assert environ[ROUTE_ENVIRON_KEY] == "/generate_lecture"


@pytest.fixture(scope="module")
def starved():
    """A door that can never fit a picture and does not queue: every costed request is shed at
    once, every other one served."""
    env = {
        "MEMORY_LIMIT_MB": "1000",
        "LIROO_IMAGE_RESERVE_MB": "5000",
        "LIROO_ADMISSION_WAIT_S": "0",
        "LIROO_RESERVATION_WAIT_S": "0",
    }
    with GunicornServer(env) as server:
        yield server


def shed_total(server) -> float:
    """liroo_memory_shed_total: requests the door refused (a step's own refusal is not counted)."""
    text = requests.get(server.url("/metrics"), timeout=10).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("liroo_memory_shed_total")
    )


# Valid bodies: the replay layer reads each first (nothing is stored under it), then the door must
# refuse it before any work: the door's own count grows by one each time.
@pytest.mark.parametrize(
    "path, body",
    [
        ("/generate_image", {"prompt": "A kite over a hill"}),
        ("//generate_image", {"prompt": "A kite over a hill"}),
        ("///generate_comic", {"text": "Kites fly when wind pushes on them."}),
        ("//generate_lecture", {"text": "Kites fly when wind pushes on them."}),
    ],
)
def test_a_doubled_slash_is_costed_at_the_door_like_the_plain_path(starved, path, body):
    before = shed_total(starved)
    response = requests.post(starved.url(path), json=body, timeout=30)
    assert response.status_code == 503, response.text
    shed = contract.decode_error(response.json())
    assert shed["code"] == "memory_pressure" and response.headers["Retry-After"]
    assert ("lecture_id" in shed) == path.endswith("lecture")  # the route's own fields too
    assert shed_total(starved) == before + 1


def test_a_starved_door_still_serves_what_it_exempts_and_what_costs_nothing(starved):
    for path, status in (("/health", 200), ("//health", 200), ("/progress/abcdefgh12", 404)):
        response = requests.get(starved.url(path), timeout=10)
        assert response.status_code == status, (path, response.text)  # 404: an unknown id
    response = requests.post(starved.url("//process"), json={}, timeout=30)
    assert response.status_code == 400 and response.json()["code"] == "missing_field"
