"""Google Cloud Storage: the real google-cloud-storage client against gcp-storage-emulator on
loopback.

Between the client and the emulator sits a small loopback proxy (FaultProxy, tests/helpers)
that records every request and can answer with an error, so transient
failures and their retries are real HTTP exchanges. It also enforces
``ifGenerationMatch=0`` (create-only), which real GCS honours and the emulator
ignores. Two things cannot run here and are replaced, each said where it is
done: Cloud Run's metadata-server credentials and IAM's signBlob service.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, quote, urlsplit

import google.auth.credentials
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from gcp_storage_emulator.server import create_server
from google.api_core.exceptions import RetryError
from google.cloud import storage as gcs
from google.cloud.storage import _signing
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from liroo.settings import Settings, SettingsError
from liroo.storage import make_storage
from liroo.storage.base import IMMUTABLE_CACHE, StorageError, media_key
from liroo.storage.cache import cached_url, image_cache_key, image_cache_object
from liroo.storage.gcs import GcsStorage
from tests.helpers.gcs_proxy import FaultProxy
from tests.servers import free_port

BUCKET = "liroo-test"
JPEG = b"\xff\xd8\xff\xe0" + b"picture bytes " * 50 + b"\xff\xd9"
# The library's retry policy with short delays, so that retries do not slow the suite.
FAST_RETRY = DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.05)


# --- servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator():
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def proxy(emulator, monkeypatch):
    fault_proxy = FaultProxy(emulator)
    # The real client finds the emulator the documented way.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fault_proxy.url)
    yield fault_proxy
    fault_proxy.close()


# --- signing keys and a V4 verifier ------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key():
    """A throwaway service-account key made for this test run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_credentials(private_key, email="liroo-signer@liroo-test.iam.gserviceaccount.com"):
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": "liroo-test",
            "private_key_id": "throwaway",
            "private_key": pem,
            "client_email": email,
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def verify_v4_signature(url: str, public_key) -> dict:
    """Check a V4 signed URL as GCS would, from the URL alone (canonical request rebuilt per the
    spec).

    The emulator serves signed URLs without checking signatures, so this is
    where the signature is actually verified. Raises InvalidSignature if wrong.
    """
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = bytes.fromhex(params.pop("X-Goog-Signature"))
    canonical_query = "&".join(
        f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(params.items())
    )
    canonical_request = "\n".join(
        ["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = params["X-Goog-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            params["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    return params


# --- upload, exists, public URLs ----------------------------------------------------------


def test_upload_exists_and_fetch_by_public_url(proxy):
    storage = GcsStorage(BUCKET, url_mode="public", retry=FAST_RETRY)
    key = media_key("images", "jpg")
    assert not storage.exists(key)

    url = storage.put(key, JPEG, "image/jpeg", IMMUTABLE_CACHE)
    # in production: https://storage.googleapis.com/<bucket>/<key>
    assert url == f"{proxy.url}/{BUCKET}/{key}"
    assert storage.exists(key)
    assert storage.url(key) == url

    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == JPEG
    assert response.headers["Content-Type"] == "image/jpeg"

    blob = gcs.Client().bucket(BUCKET).get_blob(key)
    assert blob.content_type == "image/jpeg"
    assert blob.cache_control == IMMUTABLE_CACHE
    # Every upload is create-only, which is what makes retrying it safe.
    uploads = proxy.calls("POST", r"/upload/storage/v1/b/liroo-test/o")
    assert len(uploads) == 1 and "ifGenerationMatch=0" in uploads[0][0]


def test_keys_are_checked_before_any_request(proxy):
    storage = GcsStorage(BUCKET, url_mode="public", retry=FAST_RETRY)
    for key in ("../x.jpg", "/abs.jpg", "images/../../x.jpg"):
        with pytest.raises(StorageError):
            storage.put(key, JPEG, "image/jpeg")
    assert proxy.requests == []


# --- signed URLs -----------------------------------------------------------------------------


def test_signed_url_with_a_service_account_key(proxy, signing_key):
    ttl = 1800
    storage = GcsStorage(
        BUCKET,
        signed_url_ttl_s=ttl,
        retry=FAST_RETRY,
        signing_credentials=key_credentials(signing_key),
    )
    key = media_key("images", "webp")
    # The answer names the object by the service's stable address (redirect mode, the default);
    # without BASE_URL a path that each answer makes absolute.
    assert storage.put(key, b"RIFF....WEBPVP8 " + b"x" * 100, "image/webp") == f"/media/{key}"
    url, fresh_s = storage.signed_url(key)
    assert fresh_s == ttl / 2  # handed out for half its life, so at least half is left
    assert storage.signed_url(key)[0] == url  # reused meanwhile: no new signature per fetch

    assert urlsplit(url).path == f"/{BUCKET}/{key}"
    params = verify_v4_signature(url, signing_key.public_key())
    assert params["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert params["X-Goog-Credential"].startswith(
        "liroo-signer@liroo-test.iam.gserviceaccount.com/"
    )
    assert params["X-Goog-Credential"].endswith("/auto/storage/goog4_request")
    assert params["X-Goog-Expires"] == str(ttl)
    assert params["X-Goog-SignedHeaders"] == "host"
    signed_at = datetime.strptime(params["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=timezone.utc
    )
    assert abs(datetime.now(timezone.utc) - signed_at) < timedelta(minutes=5)

    # The verifier is not a rubber stamp: another object's path, or another key, fails it.
    from cryptography.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):
        verify_v4_signature(url.replace(key, media_key("images", "webp")), signing_key.public_key())
    with pytest.raises(InvalidSignature):
        verify_v4_signature(
            url, rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        )

    # The emulator serves the signed URL (without checking the signature, see above).
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and response.content.startswith(b"RIFF")
    assert response.headers["Content-Type"] == "image/webp"


class MetadataServerCredentials(google.auth.credentials.Credentials):
    """Stands in for Cloud Run's default credentials (no private key, tokens from the
    metadata server, which cannot run here). Like the real ones, the e-mail address
    is the placeholder "default" until the first refresh."""

    def __init__(self) -> None:
        super().__init__()
        self.service_account_email = "default"
        self.refreshes = 0

    def refresh(self, request) -> None:
        self.refreshes += 1
        self.service_account_email = "liroo-run@liroo-test.iam.gserviceaccount.com"
        self.token = f"token-{self.refreshes}"
        self.expiry = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=1)


def test_signed_url_through_iam_sign_blob_without_a_key(proxy, signing_key, monkeypatch):
    signed = []

    def sign_blob(message, access_token, service_account_email, universe_domain="googleapis.com"):
        # IAM's signBlob (https://iamcredentials.googleapis.com) cannot be reached from here; this
        # answers as it would, signing with the throwaway key that plays the service account's.
        signed.append((access_token, service_account_email))
        raw = signing_key.sign(
            message.encode() if isinstance(message, str) else message,
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        return base64.b64encode(raw).decode()

    monkeypatch.setattr(_signing, "_sign_message", sign_blob)
    credentials = MetadataServerCredentials()
    storage = GcsStorage(BUCKET, retry=FAST_RETRY, signing_credentials=credentials)
    key = media_key("images", "jpg")
    storage.put(key, JPEG, "image/jpeg")
    url, _ = storage.signed_url(key)

    params = verify_v4_signature(url, signing_key.public_key())
    assert params["X-Goog-Credential"].startswith("liroo-run@liroo-test.iam.gserviceaccount.com/")
    assert params["X-Goog-Expires"] == "3600"  # the default: an hour, handed out for half of it
    assert signed == [("token-1", "liroo-run@liroo-test.iam.gserviceaccount.com")]

    storage.signed_url(media_key("images", "jpg"))  # another object: a valid token is reused
    assert credentials.refreshes == 1 and len(signed) == 2
    credentials.expiry = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=1)
    # an expired one is refreshed first
    verify_v4_signature(storage.signed_url(media_key("images", "jpg"))[0], signing_key.public_key())
    assert credentials.refreshes == 2 and signed[-1][0] == "token-2"
    assert requests.get(url, timeout=10).content == JPEG


# --- retries and idempotency -----------------------------------------------------------------


def test_transient_errors_are_retried(proxy):
    storage = GcsStorage(BUCKET, url_mode="public", retry=FAST_RETRY)
    key = media_key("images", "jpg")
    proxy.fail("POST", r"/upload/storage/v1/b/liroo-test/o", status=503)
    url = storage.put(key, JPEG, "image/jpeg")
    assert [status for _, status in proxy.calls("POST", r"/upload/")] == [503, 200]
    assert requests.get(url, timeout=10).content == JPEG

    proxy.fail("GET", r"/storage/v1/b/liroo-test/o/", status=500, times=2)
    assert storage.exists(key)
    assert [status for _, status in proxy.calls("GET", r"/storage/v1/b/liroo-test/o/")][-3:] == [
        500,
        500,
        200,
    ]


def test_a_lost_response_is_retried_without_a_duplicate(proxy):
    """The upload succeeds but its answer is lost: the retry meets 412 (create-only) and that is
    success."""
    storage = GcsStorage(BUCKET, url_mode="public", retry=FAST_RETRY)
    key = media_key("images", "jpg")
    proxy.fail("POST", r"/upload/storage/v1/b/liroo-test/o", status=503, after_forwarding=True)
    url = storage.put(key, JPEG, "image/jpeg")
    assert [status for _, status in proxy.calls("POST", r"/upload/")] == [503, 412]
    assert requests.get(url, timeout=10).content == JPEG


def test_putting_an_existing_key_keeps_the_first_object(proxy):
    storage = GcsStorage(BUCKET, url_mode="public", retry=FAST_RETRY)
    key = media_key("images", "jpg", digest="ab" * 32)  # a content-addressed (cache) key
    first = storage.put(key, JPEG, "image/jpeg")
    second = storage.put(key, b"other bytes for the same name", "image/jpeg")
    assert first == second
    assert [status for _, status in proxy.calls("POST", r"/upload/")] == [200, 412]
    assert requests.get(first, timeout=10).content == JPEG


def test_a_lasting_failure_is_raised(proxy):
    storage = GcsStorage(BUCKET, url_mode="public", retry=FAST_RETRY.with_timeout(0.5))
    proxy.fail("POST", r"/upload/storage/v1/b/liroo-test/o", status=503, times=1000)
    with pytest.raises(StorageError) as err:
        storage.put(media_key("images", "jpg"), JPEG, "image/jpeg")
    assert isinstance(err.value.__cause__, RetryError)  # the library gave up after retrying
    assert "503" in str(err.value.__cause__.cause)
    assert len(proxy.calls("POST", r"/upload/")) >= 2


def test_image_cache_works_with_cloud_storage(proxy):
    storage = GcsStorage(BUCKET, url_mode="public", retry=FAST_RETRY)
    key = image_cache_object(
        image_cache_key("A fox in the snow", "Studio Ghibli", "beginner", "1:1", "m"), "jpg"
    )
    assert cached_url(storage, key) is None
    url = storage.put(key, JPEG, "image/jpeg")
    assert cached_url(storage, key) == url
    assert requests.get(cached_url(storage, key), timeout=10).content == JPEG


# --- settings --------------------------------------------------------------------------------


def test_make_storage_picks_gcs_from_the_settings():
    storage = make_storage(Settings(gcs_bucket_name="liroo-media", gcs_url_mode="public"))
    assert isinstance(storage, GcsStorage)
    assert (storage.bucket_name, storage.url_mode) == ("liroo-media", "public")
    assert not storage.serves_media
    stable = make_storage(Settings(gcs_bucket_name="liroo-media", base_url="https://liroo.example"))
    assert (stable.url_mode, stable.serves_media) == ("redirect", True)  # the default
    assert (
        stable.url("audio/2026/12/03/ab.mp3")
        == "https://liroo.example/media/audio/2026/12/03/ab.mp3"
    )
    with pytest.raises(SettingsError):
        GcsStorage(BUCKET, url_mode="signed")  # links that die after a week are not offered
    with pytest.raises(SettingsError):
        make_storage(Settings(storage="gcs"))


@pytest.mark.parametrize("ttl", [0, 7 * 24 * 3600 + 1])
def test_signed_url_lifetime_is_within_the_v4_limit(ttl):
    with pytest.raises(SettingsError):
        GcsStorage(BUCKET, signed_url_ttl_s=ttl)


# --- links that last: the service's /media address redirects to a fresh signed URL ------------


def test_answers_carry_a_stable_service_url_that_redirects_to_a_fresh_signed_url(
    start_server, emulator, signing_key, tmp_path
):
    """The app keeps lecture audio URLs in its history and plays them weeks later: an answer's URL
    must outlive any signed URL (7 days at most). Real gunicorn, the real client, the emulator;
    the credentials are a throwaway service-account key file, found by google.auth.default()."""
    credentials = tmp_path / "service-account.json"
    pem = signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    credentials.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "liroo-test",
                "private_key_id": "throwaway",
                "private_key": pem,
                "client_email": "liroo-run@liroo-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    server = start_server(
        {
            "STORAGE_EMULATOR_HOST": emulator,
            "GCS_BUCKET_NAME": BUCKET,
            "LIROO_STORAGE": "gcs",
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "LIROO_IMAGE_CACHE": "off",
        }
    )
    answer = requests.post(
        server.url("/generate_image"), json={"prompt": "A lighthouse at dusk"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    url = answer.json()["image_url"]
    # the service's own address, made from the request's host: nothing in it expires
    assert url.startswith(server.url("/media/images/")), url
    assert "X-Goog" not in url

    redirect = requests.get(url, allow_redirects=False, timeout=10)
    assert redirect.status_code == 302
    assert redirect.headers["Cache-Control"] in ("private, max-age=1800", "max-age=1800, private")
    signed = redirect.headers["Location"]
    params = verify_v4_signature(signed, signing_key.public_key())
    assert params["X-Goog-Expires"] == "3600"
    assert urlsplit(signed).path == f"/{BUCKET}/{urlsplit(url).path.removeprefix('/media/')}"
    picture = requests.get(url, timeout=10)  # followed, as the app's URLSession and AVPlayer do
    assert picture.status_code == 200 and picture.content[:3] in (b"\xff\xd8\xff", b"RIF")

    for probe in ("/media/../etc/passwd", "/media/images%2F..%2Fx.jpg", "/media/.hidden"):
        refused = requests.get(server.url(probe), allow_redirects=False, timeout=10)
        assert refused.status_code == 404 and refused.json()["code"] == "not_found", probe
