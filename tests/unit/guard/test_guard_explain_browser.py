"""The `/v1/explain` HTML heat map (`format: html`) in a real headless browser (Debian's Chromium).

What string checks on the HTML cannot show: that a browser actually paints the segments in the heat
colours (red where keeping a segment raises log p(response), blue where it lowers it, the strongest
opaque), and that hostile text in a prompt or response stays text (`--dump-dom` serializes the DOM
after scripts ran: an executed `<script>` or `onerror` would have left its mark there). A control
page with the same payload unescaped proves the probe would see an execution.

The explanation is fixed (no model): `render.to_html` is what the guard answers with. Screenshots are
kept in pytest's tmp dir; their paths are printed (`-s`) and named in any failure.
Chromium comes from `make host-deps` (Debian package chromium); without it the test skips, except
in CI, where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from maestro.workers.guard.explain import render
from maestro.workers.guard.explain.segments import Part, segment, spans

pytestmark = pytest.mark.unit

WIDTH, HEIGHT = 1000, 700
QUESTION = "What is the capital of France? "
#: executed, it marks <body>; as text, the mark never appears (the quotes are split so the source
#: itself does not contain the mark)
PAYLOAD = "<script>document.body.setAttribute('data-pwned','y'+'es')</script>"
RESPONSE = "Paris <img src=x onerror=\"document.body.setAttribute('data-pwned2','y'+'es')\">"
MARKS = ('data-pwned="yes"', 'data-pwned2="yes"')
#: the heat colours over the white page: rgba(220,38,38,0.85) (the strongest positive) and
#: rgba(37,99,235,0.425) (a negative half as large), alpha-blended
RED = (225, 71, 71)
BLUE = (162, 189, 246)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "chromium not found: run `make host-deps` (Debian package chromium)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def _explanation() -> dict[str, Any]:
    """A `/v1/explain` answer: France strongest, capital half, '?' negative, the payload one segment."""
    text = QUESTION + PAYLOAD
    parts = [Part(0, "user", text)]
    sp = [*spans(QUESTION, "word"), (len(QUESTION), len(text))]
    value = {"France": 2.0, "capital": 1.0, "?": -1.0, PAYLOAD: 0.3}
    segs = segment(parts, [sp])
    return {
        "object": "explanation",
        "model": "tiny",
        "method": "occlusion",
        "granularity": "word",
        "response": RESPONSE,
        "response_generated": False,
        "log_likelihood": -1.25,
        "parts": [{"index": 0, "message": 0, "role": "user", "text": text}],
        "segments": [
            {
                "index": i,
                "part": s.part,
                "message": 0,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "attribution": value.get(s.text, 0.05),
            }
            for i, s in enumerate(segs)
        ],
        "cost": {"engine_requests": 1, "forward_passes": 10, "seconds": 0.1},
    }


def _browser(exe: str, tmp: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp / 'profile'}",
        f"--window-size={WIDTH},{HEIGHT}",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=tmp)
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}"
    return done


def _near(px: tuple[int, ...], want: tuple[int, int, int], tol: int = 8) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(px[:3], want, strict=True))


def test_heat_map_paints_the_heat_colours_and_keeps_text_inert(tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    exe = _chromium()
    page = tmp_path / "explanation.html"
    page.write_text(render.to_html(_explanation()), encoding="utf-8")
    shot = tmp_path / "explanation.png"
    _browser(exe, tmp_path, page, f"--screenshot={shot}")
    print(f"heat map screenshot: {shot}")
    assert shot.exists() and shot.stat().st_size > 0, f"no screenshot at {shot}"
    with Image.open(shot) as img:
        assert img.size == (WIDTH, HEIGHT), (img.size, shot)
        rgb = img.convert("RGB")
    stddev = ImageStat.Stat(rgb).stddev
    assert min(stddev) > 10, f"blank-looking screenshot (stddev {stddev}): {shot}"
    raw = rgb.tobytes()
    pixels = [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]
    red = sum(_near(p, RED) for p in pixels)
    blue = sum(_near(p, BLUE) for p in pixels)
    # "France" is a ~20 x 50 px box (662 px of it in this colour at the time of writing), "?" ~20 x 10
    assert red > 200, f"{red} pixels in the strongest red {RED}: {shot}"
    assert blue > 30, f"{blue} pixels in the negative blue {BLUE}: {shot}"

    dom = _browser(exe, tmp_path, page, "--dump-dom").stdout
    assert "<body" in dom, dom[:500]
    for mark in MARKS:
        assert mark not in dom, f"a prompt or response script ran: {mark} in the DOM"
    assert "&lt;script&gt;" in dom and "<script" not in dom
    assert "&lt;img src=x" in dom and "<img" not in dom


def test_the_probe_sees_an_executed_payload(tmp_path: Path) -> None:
    """Control: the same payload, unescaped, does run in this browser and leaves its marks."""
    exe = _chromium()
    page = tmp_path / "unsafe.html"
    page.write_text(f"<!doctype html><html><body><p>{PAYLOAD}{RESPONSE}</p></body></html>", encoding="utf-8")
    dom = _browser(exe, tmp_path, page, "--dump-dom").stdout
    assert all(mark in dom for mark in MARKS), dom[:1000]
