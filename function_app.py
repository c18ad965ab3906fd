"""Azure Functions entry point: a registration shim (handlers: replicator.functions.triggers)."""

from __future__ import annotations

import os

import azure.functions as func

from replicator.functions.triggers import register, startup

settings = startup(os.environ)  # a bad setting fails start-up, with every problem listed
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
register(app, settings)
