"""Where the bundle and the demo page are served from: the wheel's copy, else the checkout's."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from progress_gateway.http import static


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A packaged static dir and a checkout's client-js/, both empty to begin with."""
    packaged, checkout = tmp_path / "progress_gateway" / "static", tmp_path / "client-js"
    for directory in (packaged, checkout / "dist", checkout / "demo"):
        directory.mkdir(parents=True)
    monkeypatch.setattr(
        static,
        "BUNDLE",
        (packaged / "progress-gateway.js", checkout / "dist" / "progress-gateway.js"),
    )
    monkeypatch.setattr(
        static, "DEMO_PAGE", (packaged / "index.html", checkout / "demo" / "index.html")
    )
    return packaged, checkout


def client() -> httpx.AsyncClient:
    app = Starlette(routes=static.static_routes(demo=True))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway")


async def test_the_packaged_copy_is_served_before_the_checkout(places: tuple[Path, Path]) -> None:
    packaged, checkout = places
    (packaged / "progress-gateway.js").write_text("// packaged")
    (checkout / "dist" / "progress-gateway.js").write_text("// checkout")
    (packaged / "index.html").write_text("<p>packaged</p>")
    async with client() as http:
        assert (await http.get("/client/progress-gateway.js")).text == "// packaged"
        assert (await http.get("/")).text == "<p>packaged</p>"


async def test_an_editable_install_serves_the_checkout(places: tuple[Path, Path]) -> None:
    _, checkout = places
    (checkout / "dist" / "progress-gateway.js").write_text("// checkout")
    (checkout / "demo" / "index.html").write_text("<p>checkout</p>")
    async with client() as http:
        bundle = await http.get("/client/progress-gateway.js")
        assert (bundle.status_code, bundle.text) == (200, "// checkout")
        assert bundle.headers["content-type"].startswith("text/javascript")
        page = await http.get("/")
        assert (page.status_code, page.text) == (200, "<p>checkout</p>")
        assert page.headers["content-type"] == "text/html; charset=utf-8"


async def test_a_client_never_built_gets_a_404_that_says_how_to_build_it(
    places: tuple[Path, Path],
) -> None:
    async with client() as http:
        missing = await http.get("/client/progress-gateway.js")
    assert missing.status_code == 404
    assert "progress-gateway.js is not built" in missing.text
    assert "npm ci && npm run build" in missing.text
