"""The dashboard: one page and its assets, served by the collector.

The page itself holds no data and needs no token; everything it shows comes from the
admin-only JSON endpoints (``/v1/fleet``, ``/v1/models``, ``/v1/report``), called with
the admin token as a bearer header. The token reaches the page through its sign-in form,
or once through the URL fragment (``/dashboard#token=...``, which browsers never send to
a server); either way it is kept in ``sessionStorage`` (gone when the tab closes) and the
fragment is wiped from the address bar (``#device=ID`` in the fragment opens one device's
view). Charts are Vega-Lite through vega-embed, vendored
under ``vendor/`` (nothing from a CDN).
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

HERE = Path(__file__).resolve().parent
# The page runs only its own scripts: no inline code, nothing from another origin.
# 'unsafe-eval' because Vega compiles its expressions with Function(); the CSP-safe
# vega-interpreter is not among the vendored files (see vendor/README.md).
CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


async def _page(request: object) -> Response:
    return FileResponse(
        HERE / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"},
    )


def dashboard_routes() -> list[BaseRoute]:
    """``GET /dashboard`` and ``/dashboard/assets/*`` (the page's script, style and the vendored Vega)."""
    return [
        Route("/dashboard", _page, methods=["GET"]),
        Mount("/dashboard/assets", app=StaticFiles(directory=HERE / "assets"), name="dashboard-assets"),
        Mount("/dashboard/vendor", app=StaticFiles(directory=HERE / "vendor"), name="dashboard-vendor"),
    ]
