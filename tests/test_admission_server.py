"""The door's line and fair turns between requests, in the real app under real gunicorn (two
workers).

The workers read their own RSS (no cgroup limit here) against MEMORY_LIMIT_MB,
and LIROO_IMAGE_RESERVE_MB is set so that only one or two pictures fit at
once; the loopback Gemini answers pictures slowly, so requests overlap.
"""

import requests

from tests.fake_gemini import FakeGemini, gemini_env
from tests.helpers.door import admission, one_picture_at_a_time
from tests.helpers.http import post_in_thread
from tests.servers import wait_for

TEXT = "Water carries sand and stones downhill and slowly cuts a deeper valley. " * 10


def script(name: str) -> dict:
    return {
        "comic_title": f"{name}'s river",
        "theme": "Slow forces shape the land.",
        "characters": [{"name": name, "description": f"{name}, a child in a yellow raincoat"}],
        "panels": [
            {
                "scene": f"Scene {i}",
                "image_prompt": f"comic-{name} panel {i} by the river",
                "dialogue": [{"speaker": name, "line": f"Look at step {i}!"}],
            }
            for i in range(1, 9)
        ],
    }


def test_door_waits_then_serves_sheds_when_the_line_is_full_and_never_holds_monitoring(
    start_server, fake_gemini
):
    fake_gemini.set_latency(2.0, operation="image")
    server = start_server(one_picture_at_a_time(fake_gemini, queue=1))
    first, first_result = post_in_thread(server.url("/generate_image"), {"prompt": "a red kite"})
    wait_for(
        lambda: len(fake_gemini.requests("image")) == 1,
        timeout=30,
        what="the first picture to start",
    )
    second, second_result = post_in_thread(server.url("/generate_image"), {"prompt": "a blue boat"})
    wait_for(
        lambda: admission(server)["queue_length"] == 1,
        timeout=30,
        what="the second request to wait at the door",
    )

    # The line (of one) is full: a third is refused at once, as the app expects.
    third = requests.post(
        server.url("/generate_image"), json={"prompt": "a green hill"}, timeout=30
    )
    assert third.status_code == 503 and third.headers["Retry-After"]
    assert third.json()["code"] == "memory_pressure"
    assert second.is_alive(), "the waiting request should still be waiting"
    # Monitoring never waits nor is refused while requests queue.
    for path in ("/health", "/memory", "/metrics"):
        assert requests.get(server.url(path), timeout=10).status_code == 200

    first.join(60)
    second.join(60)
    assert first_result["response"].status_code == 200, first_result
    assert second_result["response"].status_code == 200, second_result
    assert second_result["response"].json()["url"]
    assert len(fake_gemini.requests("image")) == 2  # the refused one never reached the model

    metrics = requests.get(server.url("/metrics"), timeout=10).text
    admitted = [
        line
        for line in metrics.splitlines()
        if line.startswith('liroo_admission_wait_seconds_count{outcome="admitted"}')
    ]
    assert admitted and float(admitted[0].split()[-1]) == 1
    assert "liroo_admission_queue_length 0.0" in metrics
    full = [
        line
        for line in metrics.splitlines()
        if line.startswith("liroo_admission_queue_full_total ")
    ]
    assert full and float(full[0].split()[-1]) == 1


def test_two_comics_both_progress_when_memory_fits_two_pictures(start_server):
    with FakeGemini(latency={"image": 1.0}) as fake:
        server = start_server(
            gemini_env(
                fake, MEMORY_LIMIT_MB=1000, LIROO_IMAGE_RESERVE_MB=400, LIROO_ADMISSION_WAIT_S=60
            )
        )
        fake.answer(script("A"))
        fake.answer(script("B"))
        body = {"text": TEXT, "level": "moderate", "image_style": "Comic Book"}
        # A's first picture is answered, its next ones wait for the test: B reaches its pictures
        # while A still has most of its own to draw, however busy the machine is.
        fake.hold("image", let_through=1)
        comic_a, result_a = post_in_thread(server.url("/generate_comic"), body)
        # A fresh worker draws a comic's first picture alone (its cost sizes the rest's
        # reservations: generation/images.Lanes): B comes while A draws it.
        wait_for(
            lambda: len(fake.requests("image")) >= 1, timeout=30, what="comic A's pictures to start"
        )
        comic_b, result_b = post_in_thread(
            server.url("/generate_comic"), {**body, "text": TEXT + " Again."}
        )
        wait_for(
            lambda: any("Again." in r.prompt for r in fake.requests("text")),
            timeout=60,
            what="comic B's script to be asked for",
        )
        fake.release("image")
        comic_a.join(120)
        comic_b.join(120)
        for result in (result_a, result_b):
            response = result["response"]
            assert response.status_code == 200, result
            panels = response.json()["comic"]["panel_layout"]
            assert len(panels) == 8 and all(p.get("image_url") for p in panels)
        images = fake.requests("image")
        a_times = [r.received_at for r in images if "comic-A" in r.prompt]
        b_times = [r.received_at for r in images if "comic-B" in r.prompt]
        assert len(a_times) == len(b_times) == 8
        # B was not kept out until A had drawn everything: B's pictures began while A still had some
        # to draw,
        # and at least half of A's pictures were still to come when B's first began.
        assert min(b_times) < max(a_times)
        assert sum(1 for t in a_times if t > min(b_times)) >= 3
