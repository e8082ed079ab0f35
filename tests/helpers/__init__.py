"""What several test modules share, one module a kind: bodies (the app's request bodies and
texts), http (POST as the app does, fresh request ids), wsgi (the app built in process, WSGI
calls), door (the memory door's setting and figures), workers (gunicorn's workers seen), schemas,
gemini (settings for the loopback Gemini), dockerfile (the image's ENV and CMD), gcs_proxy (the
GCS fault proxy) and fuzz (schemathesis against a server's own document). Test modules import
from here, never from each other."""
