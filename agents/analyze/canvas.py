"""A small drawing surface for the figures of one run's analysis, written as SVG (text) and as
PNG (Pillow, drawn at twice the size and scaled down, so edges are smooth).

Why not matplotlib, which draws the folder comparison's plots: importing it and drawing two
figures took 2 to 2.5 s of `mlgym analyze`'s 3.5 s on a 10,000-event run on the development
machine, against a 2 s target; these two figures need circles, curves with arrow heads,
rectangles, markers and text, which Pillow (already installed with matplotlib) draws in a
tenth of that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

SUPERSAMPLE = 2
FONT_FAMILY = "DejaVu Sans, Verdana, sans-serif"


@dataclass
class Canvas:
    width: int
    height: int
    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    # ------------------------------------------------------------------ shapes

    def rect(self, x: float, y: float, w: float, h: float, fill: str) -> None:
        self.items.append(("rect", {"x": x, "y": y, "w": w, "h": h, "fill": fill}))

    def circle(self, x: float, y: float, r: float, fill: str, stroke: str = "white") -> None:
        self.items.append(("circle", {"x": x, "y": y, "r": r, "fill": fill, "stroke": stroke}))

    def line(self, x1: float, y1: float, x2: float, y2: float, colour: str = "#333333",
             width: float = 1.0) -> None:
        self.items.append(("line", {"p": [(x1, y1), (x2, y2)], "colour": colour, "width": width}))

    def curve(self, p1: tuple[float, float], p2: tuple[float, float], bend: float, *,
              width: float, colour: str, shrink1: float, shrink2: float) -> tuple[float, float]:
        """A quadratic curve from p1 to p2 bent by `bend` (of the chord's length, to the left
        of p1->p2), cut `shrink` pixels short at each end, with an arrow head at p2. Returns
        the curve's middle (where a label goes)."""
        (x1, y1), (x2, y2) = p1, p2
        cx = (x1 + x2) / 2 + bend * (y2 - y1)
        cy = (y1 + y2) / 2 - bend * (x2 - x1)
        pts = [_bezier(p1, (cx, cy), p2, i / 40) for i in range(41)]
        pts = _trim(_trim(pts, shrink1), shrink2, from_end=True)
        head = 4 + 2.2 * width
        (ax, ay), (bx, by) = pts[-2], pts[-1]
        ang = math.atan2(by - ay, bx - ax)
        tip = (bx, by)
        left = (bx - head * math.cos(ang - 0.45), by - head * math.sin(ang - 0.45))
        right = (bx - head * math.cos(ang + 0.45), by - head * math.sin(ang + 0.45))
        base = (bx - 0.8 * head * math.cos(ang), by - 0.8 * head * math.sin(ang))
        body = [p for p in pts if math.dist(p, tip) > 0.8 * head] + [base]
        self.items.append(("polyline", {"p": body, "colour": colour, "width": width}))
        self.items.append(("polygon", {"p": [tip, left, right], "fill": colour}))
        return _bezier(p1, (cx, cy), p2, 0.5)

    def marker(self, x: float, y: float, kind: str, size: float, fill: str, stroke: str) -> None:
        """`^` a triangle, `*` a five-pointed star, centred on (x, y)."""
        if kind == "^":
            low = y + size * 0.6
            pts = [(x, y - size), (x - size * 0.9, low), (x + size * 0.9, low)]
        else:
            pts = [(x + (size if i % 2 == 0 else size * 0.45) * math.sin(i * math.pi / 5),
                    y - (size if i % 2 == 0 else size * 0.45) * math.cos(i * math.pi / 5))
                   for i in range(10)]
        self.items.append(("polygon", {"p": pts, "fill": fill, "stroke": stroke}))

    def text(self, x: float, y: float, s: str, *, size: float = 11, anchor: str = "middle",
             baseline: str = "middle", colour: str = "#222222", box: bool = False) -> None:
        """`anchor`: start | middle | end; `baseline`: top | middle | bottom. Lines split on
        newlines."""
        self.items.append(("text", {"x": x, "y": y, "s": s, "size": size, "anchor": anchor,
                                    "baseline": baseline, "colour": colour, "box": box}))

    # ------------------------------------------------------------------ output

    def svg(self) -> str:
        w, h = self.width, self.height
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
               f'viewBox="0 0 {w} {h}" font-family="{FONT_FAMILY}">',
               f'<rect width="{self.width}" height="{self.height}" fill="white"/>']
        for kind, a in self.items:
            if kind == "rect":
                out.append(f'<rect x="{a["x"]:.1f}" y="{a["y"]:.1f}" width="{a["w"]:.1f}" '
                           f'height="{a["h"]:.1f}" fill="{a["fill"]}"/>')
            elif kind == "circle":
                out.append(f'<circle cx="{a["x"]:.1f}" cy="{a["y"]:.1f}" r="{a["r"]:.1f}" '
                           f'fill="{a["fill"]}" stroke="{a["stroke"]}" stroke-width="1.5"/>')
            elif kind in ("line", "polyline"):
                pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in a["p"])
                out.append(f'<polyline points="{pts}" fill="none" stroke="{a["colour"]}" '
                           f'stroke-width="{a["width"]:.1f}" stroke-linecap="round" '
                           'stroke-linejoin="round"/>')
            elif kind == "polygon":
                pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in a["p"])
                stroke = f' stroke="{a["stroke"]}"' if a.get("stroke") else ""
                out.append(f'<polygon points="{pts}" fill="{a["fill"]}"{stroke}/>')
            elif kind == "text":
                out.append(_svg_text(a))
        out.append("</svg>")
        return "\n".join(out) + "\n"

    def png(self, path: Path) -> None:
        from PIL import Image, ImageDraw

        k = SUPERSAMPLE
        im = Image.new("RGB", (self.width * k, self.height * k), "white")
        d = ImageDraw.Draw(im)
        for kind, a in self.items:
            if kind == "rect":
                d.rectangle((a["x"] * k, a["y"] * k, (a["x"] + a["w"]) * k, (a["y"] + a["h"]) * k),
                            fill=a["fill"])
            elif kind == "circle":
                x, y, r = a["x"] * k, a["y"] * k, a["r"] * k
                d.ellipse((x - r, y - r, x + r, y + r), fill=a["fill"], outline=a["stroke"],
                          width=max(int(1.5 * k), 1))
            elif kind in ("line", "polyline"):
                d.line([(x * k, y * k) for x, y in a["p"]], fill=a["colour"],
                       width=max(round(a["width"] * k), 1), joint="curve")
            elif kind == "polygon":
                d.polygon([(x * k, y * k) for x, y in a["p"]], fill=a["fill"],
                          outline=a.get("stroke") or None)
            elif kind == "text":
                _png_text(d, a, k)
        # a box filter over each 2x2 block, and light compression: a fraction of LANCZOS and
        # of the default zlib level's time, for a figure that looks the same
        im.reduce(k).save(path, compress_level=1)


def _bezier(p0: tuple[float, float], c: tuple[float, float], p2: tuple[float, float],
            t: float) -> tuple[float, float]:
    u = 1 - t
    return (u * u * p0[0] + 2 * u * t * c[0] + t * t * p2[0],
            u * u * p0[1] + 2 * u * t * c[1] + t * t * p2[1])


def _trim(pts: list[tuple[float, float]], length: float, from_end: bool = False,
          ) -> list[tuple[float, float]]:
    """The polyline without its first (or last) `length` pixels."""
    seq = pts[::-1] if from_end else pts
    gone = 0.0
    for i in range(1, len(seq)):
        step = math.dist(seq[i - 1], seq[i])
        if gone + step >= length:
            f = (length - gone) / step if step else 0.0
            start = (seq[i - 1][0] + f * (seq[i][0] - seq[i - 1][0]),
                     seq[i - 1][1] + f * (seq[i][1] - seq[i - 1][1]))
            out = [start, *seq[i:]]
            return out[::-1] if from_end else out
        gone += step
    return pts[-2:] if from_end else pts[:2]


def _svg_text(a: dict[str, Any]) -> str:
    lines = a["s"].split("\n")
    size = a["size"]
    more = len(lines) - 1
    first = {"top": 0.8, "middle": 0.35 - 0.6 * more, "bottom": -0.2 - 1.2 * more}
    y0 = a["y"] + first[a["baseline"]] * size
    spans = "".join(f'<tspan x="{a["x"]:.1f}" y="{y0 + i * 1.2 * size:.1f}">{escape(line)}</tspan>'
                    for i, line in enumerate(lines))
    text = (f'<text font-size="{size}" fill="{a["colour"]}" text-anchor="{a["anchor"]}">'
            f"{spans}</text>")
    if not a["box"]:
        return text
    w = max(len(line) for line in lines) * size * 0.6 + 4
    h = len(lines) * size * 1.2 + 2
    x = a["x"] - {"start": 2, "middle": w / 2, "end": w - 2}[a["anchor"]]
    y = y0 - 0.95 * size
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="3" fill="white" '
            f'fill-opacity="0.85"/>{text}')


@cache
def _font(size: int) -> Any:
    from PIL import ImageFont

    for path in _font_paths():
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _font_paths() -> list[str]:
    """DejaVu Sans: the one matplotlib ships (found without importing it: that alone takes a
    second), else the system's."""
    import importlib.util

    paths = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"]
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        paths.insert(0, str(Path(spec.origin).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"))
    return paths


def _png_text(d: Any, a: dict[str, Any], k: int) -> None:
    font = _font(round(a["size"] * k))
    anchor = {"start": "l", "middle": "m", "end": "r"}[a["anchor"]]
    vertical = {"top": "a", "middle": "m", "bottom": "d"}[a["baseline"]]
    xy = (a["x"] * k, a["y"] * k)
    if a["box"]:
        box = d.multiline_textbbox(xy, a["s"], font=font, anchor=anchor + vertical, align="center")
        d.rounded_rectangle((box[0] - 2 * k, box[1] - k, box[2] + 2 * k, box[3] + k), radius=3 * k,
                            fill="white")
    d.multiline_text(xy, a["s"], font=font, fill=a["colour"], anchor=anchor + vertical,
                     align={"l": "left", "m": "center", "r": "right"}[anchor])
