# Liroo backend for Cloud Run: gunicorn (gthread) running wsgi:app as a non-root user.
#
# Two stages: dependencies are installed into a virtualenv in the first, and
# only that virtualenv and the source reach the final image (no pip cache, no
# compilers). requirements.txt is copied alone before the source, so a code
# change reuses the cached dependency layer.

FROM python:3.11-slim AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt

FROM python:3.11-slim
# PYTHONUNBUFFERED: log lines leave at once (Cloud Run reads stdout).
# MALLOC_ARENA_MAX=2: threaded workers do not grow a malloc arena per thread.
# PORT: Cloud Run sets it; 8080 is its default and ours.
# LIROO_BIND: a container listens on every interface (the default is loopback only).
# LIROO_MEDIA_DIR: local storage must be writable by the non-root user (on
# Cloud Run media goes to GCS_BUCKET_NAME; this is the fallback).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PORT=8080 \
    LIROO_BIND=0.0.0.0 \
    LIROO_MEDIA_DIR=/tmp/liroo-media
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin liroo
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY gunicorn.conf.py wsgi.py ./
COPY liroo ./liroo
# Compiled now: the non-root user cannot write __pycache__ at start-up.
RUN python -m compileall -q /app
USER liroo:liroo
EXPOSE 8080
# Exec form: gunicorn is PID 1 and receives Cloud Run's SIGTERM itself.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
