"""gunicorn's entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``."""
from liroo import create_app

app = create_app()
