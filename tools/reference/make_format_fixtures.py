"""Image files in the formats fiedler reads besides PNG and JPEG, written by Pillow from
tests/fixtures/images/tall.png, with what Pillow's `Image.open(path).convert("RGB")` gives for
each (the reference's image loading), for tests/input_image.rs.

    tools/reference/.venv/bin/python tools/reference/make_format_fixtures.py   # from the repo root

Writes under tests/fixtures/images/formats/:
- tall.webp (lossless), tall.bmp, tall.tiff (LZW): RGB as stored, so convert("RGB") is tall.png;
- tall-rgba.webp (lossless, with an alpha gradient): convert("RGB") drops the alpha;
- tall.gif: tall.png quantised to 64 colours with one palette entry transparent, and
  tall-gif-rgb.png, Pillow's convert("RGB") of it (the palette colour, also where transparent);
- gif/*.gif, GIFs written byte by byte (Pillow does not write a first frame smaller than the
  screen), each with gif/*-rgb.png, Pillow's convert("RGB") of it: where frame 0 does not cover
  the logical screen, Pillow fills with the transparent index if the frame has one, else index 0
  (never the background colour); a frame past the screen's edge grows the image; indices past
  the palette read black; a palette of grey levels equal to their indices, or none at all, is no
  palette (mode "L": the index is the grey level); an animated GIF opens at frame 0.
"""

import struct
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tests" / "fixtures" / "images"
OUT = IMAGES / "formats"

# Eight colours; index 5 is each file's background colour, which frame 0 never shows.
PALETTE = [
    (200, 10, 10), (10, 200, 10), (10, 10, 200), (250, 250, 0),
    (0, 250, 250), (250, 0, 250), (120, 120, 120), (255, 255, 255),
]


def lzw(indices: np.ndarray, min_code: int) -> bytes:
    """GIF image data: LZW with a clear code often enough that codes stay min_code + 1 bits
    wide (every code a literal), in sub-blocks."""
    clear, end = 1 << min_code, (1 << min_code) + 1
    width, run = min_code + 1, (1 << min_code) - 2
    codes = []
    for i, v in enumerate(indices.ravel()):
        if i % run == 0:
            codes.append(clear)
        codes.append(int(v))
    codes.append(end)
    acc = bits = 0
    packed = bytearray()
    for code in codes:
        acc |= code << bits
        bits += width
        while bits >= 8:
            packed.append(acc & 255)
            acc >>= 8
            bits -= 8
    if bits:
        packed.append(acc)
    out = bytearray([min_code])
    for i in range(0, len(packed), 255):
        out += bytes([len(packed[i : i + 255])]) + packed[i : i + 255]
    return bytes(out + b"\0")


def colour_table(colours: list, bits: int) -> bytes:
    table = b"".join(bytes(c) for c in colours)
    return table + bytes(3 * (1 << bits) - len(table))


def write_gif(name: str, screen: tuple, frames: list, palette: list, bits: int = 3) -> None:
    """A GIF89a with a global colour table of 2**bits entries (none if palette is None) and
    background index 5. Each frame: pixels (indices), offset (left, top), and optionally
    transparency (a Graphic Control Extension's transparent index), disposal, min_code (LZW
    minimum code size)."""
    flags = 0 if palette is None else 0x80 | (bits - 1)
    data = bytearray(b"GIF89a" + struct.pack("<HH", *screen) + bytes([flags, 5, 0]))
    if palette is not None:
        data += colour_table(palette, bits)
    if len(frames) > 1:
        data += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for frame in frames:
        transparency = frame.get("transparency")
        if transparency is not None or "disposal" in frame:
            flags = frame.get("disposal", 0) << 2 | (transparency is not None)
            data += b"!\xf9\x04" + bytes([flags, 10, 0, transparency or 0, 0])
        pixels = np.asarray(frame["pixels"], dtype=np.uint8)
        height, width = pixels.shape
        data += b"," + struct.pack("<HHHH", *frame["offset"], width, height) + b"\0"
        data += lzw(pixels, frame.get("min_code", 3))
    (OUT / "gif" / name).write_bytes(bytes(data + b";"))


def gif_fixtures() -> None:
    (OUT / "gif").mkdir(exist_ok=True)
    frame = np.arange(24).reshape(4, 6) % 8  # every colour, index 5 (the background) too
    # 12×9 screen, 6×4 frame at (3, 2), no transparency: index 0 around it.
    write_gif("offset.gif", (12, 9), [dict(pixels=frame, offset=(3, 2))], PALETTE)
    # Transparent index 6 (inside the frame too), and a frame that runs 2 pixels past the
    # screen's right edge: a 12×9 image filled with index 6.
    write_gif(
        "offset-transparent.gif",
        (10, 9),
        [dict(pixels=frame, offset=(6, 3), transparency=6)],
        PALETTE,
    )
    # A 4-colour table (2 bits) with 3-bit data: indices 4 to 7 read black.
    write_gif("short-palette.gif", (8, 6), [dict(pixels=frame, offset=(1, 1))], PALETTE[:4], 2)
    # A 2-entry table of grey levels 0 and 1 is "no palette" to Pillow: index i reads (i, i, i),
    # indices past the table too.
    grey = [(0, 0, 0), (1, 1, 1)]
    write_gif("grey-levels.gif", (8, 6), [dict(pixels=frame, offset=(1, 1))], grey, 1)
    # No colour table at all: Pillow reads the indices as grey levels (mode "L").
    write_gif("no-table.gif", (8, 6), [dict(pixels=frame, offset=(1, 1))], None)
    # Two frames: a 6×4 frame 0 at (2, 1), then a frame of index 3 over the whole screen.
    write_gif(
        "animated.gif",
        (9, 7),
        [
            dict(pixels=frame, offset=(2, 1), disposal=2),
            dict(pixels=np.full((7, 9), 3), offset=(0, 0)),
        ],
        PALETTE,
    )
    for path in sorted((OUT / "gif").glob("*.gif")):
        Image.open(path).convert("RGB").save(path.with_name(path.stem + "-rgb.png"))
    animated = Image.open(OUT / "gif" / "animated.gif")
    assert animated.n_frames == 2 and animated.tell() == 0
    assert Image.open(OUT / "gif" / "offset-transparent.gif").size == (12, 9)
    for name in ["grey-levels.gif", "no-table.gif"]:
        assert Image.open(OUT / "gif" / name).mode == "L", name


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
    gif_fixtures()

    for name in ["tall.webp", "tall.bmp", "tall.tiff", "tall-rgba.webp"]:
        read = np.asarray(Image.open(OUT / name).convert("RGB"))
        assert (read == pixels).all(), f"{name} does not read back as tall.png"
    for path in sorted(p for p in OUT.rglob("*") if p.is_file()):
        print(path.relative_to(ROOT), path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
