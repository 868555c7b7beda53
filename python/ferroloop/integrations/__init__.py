"""Glue for running frameworks on ferroloop (see docs/user-guide.md, "Integrations").

- ``ferroloop.integrations.uvicorn_worker.FerroloopUvicornWorker``: gunicorn's worker class for
  ASGI apps served by uvicorn, on ferroloop.
"""
