"""LXMERT's Faster R-CNN object-feature TSV format ("obj36" files such as
`data/mscoco_imgfeat/val2014_obj36.tsv`), written and read the way the LXMERT repository does.

Layout of one line (one image), written by Python's `csv.DictWriter(f, FIELDNAMES, delimiter="\\t")`:

    img_id  img_h  img_w  objects_id  objects_conf  attrs_id  attrs_conf  num_boxes  boxes  features

- no header line; fields separated by one TAB; lines end with "\\r\\n" (the csv module's default
  line terminator; a reader should accept "\\n" too, as Python's csv reader does);
- img_id: a plain string; img_h, img_w, num_boxes: decimal integers (image height/width in pixels);
- the six array fields are standard base64 (RFC 4648 alphabet with "+" and "/", "=" padding, no
  line breaks) of the raw little-endian bytes of a C-ordered numpy array:
      objects_id    int64   [num_boxes]      Visual Genome object class (argmax over 1600)
      objects_conf  float32 [num_boxes]
      attrs_id      int64   [num_boxes]      Visual Genome attribute class (argmax over 400)
      attrs_conf    float32 [num_boxes]
      boxes         float32 [num_boxes, 4]   (x1, y1, x2, y2) in absolute pixels of the original image
      features      float32 [num_boxes, D]   D inferred from the byte length (2048 for real LXMERT)
- the LXMERT data loaders (e.g. `src/tasks/vqa_data.py::VQATorchDataset.__getitem__`) then
  normalise the boxes in float32: boxes[:, (0, 2)] /= img_w; boxes[:, (1, 3)] /= img_h, and assert
  they lie in [-1e-5, 1 + 1e-5].

`load_obj_tsv` below re-types the LXMERT repo's `src/utils.py::load_obj_tsv` (same field list,
same decode table) so the fixture is checked with the reader the research code uses.
"""

from __future__ import annotations

import base64
import csv
import sys

import numpy as np

FIELDNAMES = ["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes",
              "boxes", "features"]


def _b64(arr: np.ndarray, dtype) -> str:
    a = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<"))
    return base64.b64encode(a.tobytes()).decode("ascii")


def write_obj_tsv(path, items: list[dict]) -> None:
    """items: dicts with img_id (str), img_h, img_w (int), objects_id, objects_conf, attrs_id, attrs_conf,
    boxes [N,4] (absolute pixels), features [N,D]."""
    with open(path, "w", newline="", encoding="ascii") as f:
        w = csv.DictWriter(f, FIELDNAMES, delimiter="\t")  # lineterminator "\r\n" (csv default)
        for it in items:
            n = int(it["boxes"].shape[0])
            w.writerow({
                "img_id": it["img_id"],
                "img_h": int(it["img_h"]),
                "img_w": int(it["img_w"]),
                "objects_id": _b64(it["objects_id"], np.int64),
                "objects_conf": _b64(it["objects_conf"], np.float32),
                "attrs_id": _b64(it["attrs_id"], np.int64),
                "attrs_conf": _b64(it["attrs_conf"], np.float32),
                "num_boxes": n,
                "boxes": _b64(it["boxes"], np.float32),
                "features": _b64(it["features"], np.float32),
            })


def load_obj_tsv(fname, topk=None) -> list[dict]:
    """The LXMERT repo's reader (src/utils.py), re-typed."""
    csv.field_size_limit(sys.maxsize)
    data = []
    with open(fname) as f:
        reader = csv.DictReader(f, FIELDNAMES, delimiter="\t")
        for i, item in enumerate(reader):
            for key in ["img_h", "img_w", "num_boxes"]:
                item[key] = int(item[key])
            boxes = item["num_boxes"]
            decode_config = [
                ("objects_id", (boxes,), np.int64),
                ("objects_conf", (boxes,), np.float32),
                ("attrs_id", (boxes,), np.int64),
                ("attrs_conf", (boxes,), np.float32),
                ("boxes", (boxes, 4), np.float32),
                ("features", (boxes, -1), np.float32),
            ]
            for key, shape, dtype in decode_config:
                item[key] = np.frombuffer(base64.b64decode(item[key]), dtype=dtype)
                item[key] = item[key].reshape(shape)
                item[key].setflags(write=False)
            data.append(item)
            if topk is not None and len(data) == topk:
                break
    return data


def normalise_boxes(item: dict) -> np.ndarray:
    """The VQA data loader's normalisation (float32 in, float32 out)."""
    img_h, img_w = item["img_h"], item["img_w"]
    boxes = item["boxes"].copy()
    boxes[:, (0, 2)] /= img_w
    boxes[:, (1, 3)] /= img_h
    np.testing.assert_array_less(boxes, 1 + 1e-5)
    np.testing.assert_array_less(-boxes, 0 + 1e-5)
    return boxes
