"""Image files in the formats fiedler reads besides PNG and JPEG, written by Pillow from
tests/fixtures/images/tall.png, with what Pillow's `Image.open(path).convert("RGB")` gives for
each (the reference's image loading), for tests/input_image.rs.

    tools/reference/.venv/bin/python tools/reference/make_format_fixtures.py   # from the repo root

Writes under tests/fixtures/images/formats/:
- tall.webp (lossless), tall.bmp, tall.tiff (LZW): RGB as stored, so convert("RGB") is tall.png;
- tall-rgba.webp (lossless, with an alpha gradient): convert("RGB") drops the alpha;
- tall.gif: tall.png quantised to 64 colours with one palette entry transparent, and
  tall-gif-rgb.png, Pillow's convert("RGB") of it (the palette colour, also where transparent).
"""

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tests" / "fixtures" / "images"
OUT = IMAGES / "formats"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    tall = Image.open(IMAGES / "tall.png").convert("RGB")
    pixels = np.asarray(tall)

    tall.save(OUT / "tall.webp", lossless=True)
    tall.save(OUT / "tall.bmp")
    tall.save(OUT / "tall.tiff", compression="tiff_lzw")

    rgba = tall.copy()
    alpha = np.linspace(0, 255, pixels.shape[0] * pixels.shape[1]).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha.reshape(pixels.shape[:2])))
    rgba.save(OUT / "tall-rgba.webp", lossless=True, exact=True)

    palette = tall.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    palette.save(OUT / "tall.gif", transparency=palette.info["transparency"])
    Image.open(OUT / "tall.gif").convert("RGB").save(OUT / "tall-gif-rgb.png")

    for name in ["tall.webp", "tall.bmp", "tall.tiff", "tall-rgba.webp"]:
        read = np.asarray(Image.open(OUT / name).convert("RGB"))
        assert (read == pixels).all(), f"{name} does not read back as tall.png"
    for path in sorted(OUT.iterdir()):
        print(path.relative_to(ROOT), path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
