"""What several test modules share: request bodies, HTTP and WSGI calls, request ids, schemas,
the Dockerfile's reading and the GCS fault proxy. Test modules import from here, never from
each other."""
