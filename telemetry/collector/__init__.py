"""The home side: an HTTP service that stores the records devices send.

Needs the ``collector`` extra (starlette, uvicorn); ``import telemetry`` never imports it.
"""

from .app import create_app
from .errors import CollectorError
from .process import CollectorProcess
from .server import serve
from .settings import CollectorSettings
from .tokens import add_token

__all__ = ["CollectorError", "CollectorProcess", "CollectorSettings", "add_token", "create_app", "serve"]
