"""/docs (Swagger UI) served from local files, so the API's docs work on a network with
no way out.

The assets come from the `fastapi-offline` package (controller extra): a 0.8 MB wheel that
needs only FastAPI and ships Swagger UI 5 (the first major version that renders the
OpenAPI 3.1 FastAPI writes). Only its files are used, not its app class.
`swagger-ui-bundle` was heavier (2.6 MB) and ships Swagger UI 4, which refuses a 3.1
document; vendoring the files would put 1.7 MB of minified JavaScript in this repository.

ReDoc (/redoc) is off: its bundle loads its maker's logo from the maker's CDN, which a
Content-Security-Policy can block but the browser still tries.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/docs/static"


def assets() -> Path:
    """The folder of the docs' JavaScript and CSS; RuntimeError naming the package when
    it is not installed."""
    spec = find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("the API docs' assets are missing: install the controller's "
                           "dependencies (pip install 'crossfarm[controller]')")
    return Path(spec.origin).parent / "static"


def install(app: FastAPI) -> None:
    """Call on an app made with docs_url=None and redoc_url=None."""
    app.mount(STATIC_URL, StaticFiles(directory=assets()), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} API",
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon.png",
            # Swagger UI would otherwise send the document to validator.swagger.io for
            # its badge.
            swagger_ui_parameters={"validatorUrl": None})
