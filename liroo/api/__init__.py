"""Blueprints that speak HTTP for the app's contract."""
