"""A PNG of an HTML page through headless Chromium: to look at rendered cards and modals.

Chromium runs with a fresh profile, no network services of its own, and a hard timeout;
its whole process group is killed if it hangs. The window is taller than any card needs
and the blank space below the content is trimmed off afterwards (with Pillow, which
matplotlib already brings; without it the picture keeps its blank space).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

__all__ = ["chromium_path", "screenshot"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HEIGHT = 2400  # pixels: more than a full card or a long modal needs
MARGIN = 16  # pixels of blank space kept below the content when trimming


def chromium_path() -> str | None:
    """The Chromium (or Chrome) executable, or None when none is installed."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html: str, out_png: Path, *, width: int = 900, height: int = HEIGHT,
               timeout: float = 60.0, trim: bool = True) -> None:
    """Render `html` at `width` pixels and write it to `out_png` as a PNG.

    RuntimeError when Chromium is missing, fails, times out or writes no picture.
    """
    browser = chromium_path()
    if browser is None:
        raise RuntimeError("Chromium not found (looked for /usr/bin/chromium and "
                           f"{', '.join(CANDIDATES)} on PATH): apt-get install chromium")
    out_png = Path(out_png).resolve()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="dunning-shot-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(html, encoding="utf-8")
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
            f"--user-data-dir={Path(tmp) / 'profile'}", f"--window-size={width},{height}",
            f"--screenshot={out_png}", page.as_uri(),
        ]
        returncode, stderr = _run(command, timeout=timeout)
    if returncode != 0 or not out_png.is_file() or out_png.stat().st_size == 0:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        raise RuntimeError(f"Chromium exited with {returncode} and wrote no screenshot to "
                           f"{out_png}:\n{tail}")
    if trim:
        _trim_bottom(out_png)


def _run(command: list[str], *, timeout: float) -> tuple[int, str]:
    """Run in a new process group, so a hung Chromium goes away with all its helpers."""
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, errors="replace", start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"Chromium took more than {timeout:g} s and was stopped") \
                from exc
        return proc.returncode, stderr


def _trim_bottom(png: Path) -> None:
    """Cut the blank rows below the content (same colour as the bottom-left pixel)."""
    try:
        from PIL import Image, ImageChops
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return
    with Image.open(png) as img:
        rgb = img.convert("RGB")
    background = Image.new("RGB", rgb.size, rgb.getpixel((0, rgb.height - 1)))
    box = ImageChops.difference(rgb, background).getbbox()
    if box is None:
        return
    bottom = min(rgb.height, box[3] + MARGIN)
    if bottom < rgb.height:
        rgb.crop((0, 0, rgb.width, bottom)).save(png)
