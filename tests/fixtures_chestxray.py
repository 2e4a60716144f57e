"""A mini NIH ChestX-ray14 in the official file formats (:func:`make_chestxray14`).

* ``BBox_List_2017.csv`` -- the real header ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` and rows
  ``<image>,<finding>,x,y,w,h,,,`` (trailing commas, the box file's "Infiltrate" spelling);
* ``Data_Entry_2017.csv`` -- the real header (bracketed columns, trailing comma), findings joined by ``|``,
  "No Finding" for none, one image without boxes;
* grayscale (mode ``L``) PNGs of seeded noise, ``size x size``, in ``root/images`` (or ``root``).

:data:`BOX_ROWS` are in the real release's 1024 x 1024 pixels; the files get them scaled by ``size / 1024``
(exact for sizes dividing 1024 by a power of 2), so a box keeps its place relative to the image.
Items in order (image, class): 00000001_000#Atelectasis, 00000003_001#Cardiomegaly, 00000003_001#Effusion
(an image with boxes of 2 classes, rows interleaved with another image's), 00000002_000#Nodule (2 boxes),
00000004_000#Infiltration ("Infiltrate" in the file), 00000005_000#Mass (reaches outside the image: clipped).
"""
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

__all__ = ["BBOX_HEADER", "BOX_ROWS", "DATA_ENTRY_HEADER", "FINDINGS", "make_chestxray14"]

BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
DATA_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                     "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
#: (image, Finding Label as in the box file, (x, y, w, h) in 1024 x 1024 pixels), in file order
BOX_ROWS: List[Tuple[str, str, Tuple[float, float, float, float]]] = [
    ("00000001_000.png", "Atelectasis", (256, 512, 128, 64)),
    ("00000003_001.png", "Cardiomegaly", (300, 400, 400, 300)),
    ("00000002_000.png", "Nodule", (100, 100, 48, 52)),
    ("00000003_001.png", "Effusion", (700, 600, 200, 200)),
    ("00000002_000.png", "Nodule", (600, 300, 80, 60)),
    ("00000004_000.png", "Infiltrate", (200, 200, 300, 300)),
    ("00000005_000.png", "Mass", (900, 904, 200, 200)),
]
#: image -> Finding Labels of Data_Entry_2017.csv (sorted by image, as the real file)
FINDINGS: Dict[str, str] = {
    "00000001_000.png": "Atelectasis|Effusion",
    "00000002_000.png": "Nodule",
    "00000003_001.png": "Cardiomegaly|Effusion",
    "00000004_000.png": "Infiltration|Mass",
    "00000005_000.png": "Mass",
    "00000006_000.png": "No Finding",
}


def make_chestxray14(root, size: int = 256, layout: str = "images", rows=BOX_ROWS, findings=FINDINGS,
                     data_entry: bool = True) -> Path:
    """Write the mini release under ``root`` (``layout``: ``"images"`` = ``root/images/``, ``"flat"`` = PNGs in
    ``root``); ``data_entry=False`` leaves out ``Data_Entry_2017.csv``. Returns ``root``."""
    root = Path(root)
    folder = root / "images" if layout == "images" else root
    folder.mkdir(parents=True, exist_ok=True)
    scale = size / 1024
    lines = [BBOX_HEADER] + [f"{image},{finding}," + ",".join(repr(float(v) * scale) for v in box) + ",,,"
                             for image, finding, box in rows]
    (root / "BBox_List_2017.csv").write_text("\n".join(lines) + "\n")
    if data_entry:
        entries = [DATA_ENTRY_HEADER] + [f"{image},{labels},{k},{k + 1},{40 + k},{'MF'[k % 2]},PA,2500,2048,0.143,"
                                         "0.143," for k, (image, labels) in enumerate(sorted(findings.items()))]
        (root / "Data_Entry_2017.csv").write_text("\n".join(entries) + "\n")
    names = sorted({image for image, _, _ in rows} | set(findings))
    for k, name in enumerate(names):
        pixels = np.random.default_rng(k).integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return root
