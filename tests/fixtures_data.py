"""Mini datasets in the official file formats, for tests that run whole configs (``tests/test_configs.py``).

* :func:`make_imagenet` -- an ILSVRC2012 validation folder: flat ``ILSVRC2012_val_<8 digits>.JPEG`` images,
  Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; boxes ``synset xmin ymin xmax ymax``,
  inclusive pixels) and ``LOC_synset_mapping.txt`` one folder above them, plus the official per-image
  XML directory ``ILSVRC2012_bbox_val_v3/val`` there.
* :func:`make_voc2007` -- a ``VOC2007`` folder (``JPEGImages``, ``Annotations`` in the devkit's
  XML syntax with 1-based inclusive boxes, ``ImageSets/Main/test.txt``) with multi-instance classes and
  difficult objects, and :func:`write_difficult_subset` -- TorchRay's EBP "difficult" list (an image id,
  then 20 tab-separated 0/1 class flags, per line).

The images are seeded noise, so every builder writes the same bytes each time.
"""
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import numpy as np
from PIL import Image

__all__ = ["IMAGENET_IMAGES", "VOC_CLASSES", "VOC_DIFFICULT", "VOC_IMAGES", "make_imagenet", "make_voc2007",
           "write_difficult_subset"]

SYNSETS = [("n01440764", "tench, Tinca tinca"), ("n01443537", "goldfish, Carassius auratus"),
           ("n01484850", "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"),
           ("n01491361", "tiger shark, Galeocerdo cuvieri")]
#: number -> ((width, height), synset, boxes as in the files: inclusive xmin ymin xmax ymax)
IMAGENET_IMAGES: Dict[int, Tuple[Tuple[int, int], str, List[Tuple[int, int, int, int]]]] = {
    1: ((120, 90), "n01443537", [(20, 10, 99, 79)]),
    2: ((96, 128), "n01440764", [(0, 30, 60, 110), (50, 0, 95, 40)]),
    3: ((100, 100), "n01484850", [(10, 10, 89, 89)]),
    4: ((128, 96), "n01491361", [(40, 20, 120, 90)]),
}

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
#: image id -> ((width, height), [(class, difficult, (xmin, ymin, xmax, ymax)) in VOC 1-based inclusive pixels]).
#: Items (image, class present) in order: 000001#dog (2 dogs), 000001#person, 000002#car, 000002#chair (2 chairs),
#: 000003#cat -- the multi-instance ones are 000001#dog and 000002#chair.
VOC_IMAGES = {
    "000001": ((128, 96), [("dog", 0, (5, 10, 50, 80)), ("dog", 0, (60, 20, 100, 90)),
                           ("person", 0, (100, 5, 128, 96))]),
    "000002": ((96, 96), [("chair", 0, (5, 40, 40, 90)), ("chair", 1, (50, 40, 90, 90)), ("car", 0, (10, 5, 80, 35))]),
    "000003": ((96, 128), [("cat", 0, (20, 30, 80, 110))]),
}
#: (image id, class) pairs flagged in the difficult-subset file
VOC_DIFFICULT = [("000001", "dog"), ("000002", "chair")]


def _noise(size: Tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _imagenet_xml(stem: str, size: Tuple[int, int], synset: str, boxes: Iterable[Tuple[int, int, int, int]]) -> str:
    objects = "".join(
        f"\t<object>\n\t\t<name>{synset}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{b[0]}</xmin>\n\t\t\t<ymin>{b[1]}</ymin>\n"
        f"\t\t\t<xmax>{b[2]}</xmax>\n\t\t\t<ymax>{b[3]}</ymax>\n\t\t</bndbox>\n\t</object>\n" for b in boxes)
    return (f"<annotation>\n\t<folder>val</folder>\n\t<filename>{stem}</filename>\n\t<source>\n"
            f"\t\t<database>ILSVRC_2012</database>\n\t</source>\n\t<size>\n\t\t<width>{size[0]}</width>\n"
            f"\t\t<height>{size[1]}</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"
            f"{objects}</annotation>\n")


def make_imagenet(root, images=IMAGENET_IMAGES) -> Path:
    """Write a mini ILSVRC2012 validation set: the images in ``root`` (flat layout), the annotations and
    the synset mapping one folder above it, where the datamodule finds them (Kaggle's layout); returns ``root``."""
    root = Path(root)
    base, xml_dir = root.parent, root.parent / "ILSVRC2012_bbox_val_v3" / "val"
    root.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    (base / "LOC_synset_mapping.txt").write_text("".join(f"{s} {n}\n" for s, n in SYNSETS))
    rows = ["ImageId,PredictionString"]
    for number, (size, synset, boxes) in sorted(images.items()):
        stem = f"ILSVRC2012_val_{number:08d}"
        rows.append(f"{stem}," + "".join(f"{synset} {' '.join(map(str, b))} " for b in boxes))
        _noise(size, number).save(root / f"{stem}.JPEG", quality=90)
        (xml_dir / f"{stem}.xml").write_text(_imagenet_xml(stem, size, synset, boxes))
    (base / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return root


def voc_xml(name: str, size: Tuple[int, int], objects) -> str:
    """An annotation in the official VOC2007 syntax: ``objects`` = (class, difficult, (x1, y1, x2, y2))."""
    parts = [f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{name}.jpg</filename>\n\t<source>\n"
             "\t\t<database>The VOC2007 Database</database>\n\t</source>\n"
             f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n\t\t<depth>3</depth>\n"
             "\t</size>\n\t<segmented>0</segmented>\n"]
    for cls, difficult, (x1, y1, x2, y2) in objects:
        parts.append(f"\t<object>\n\t\t<name>{cls}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
                     f"\t\t<difficult>{difficult}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n"
                     f"\t\t\t<ymin>{y1}</ymin>\n\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n"
                     "\t</object>\n")
    return "".join(parts) + "</annotation>\n"


def make_voc2007(root, images=VOC_IMAGES) -> Path:
    """Write ``root/VOC2007`` (``root`` plays ``VOCdevkit``; the test split = every image, in ``images`` order);
    returns ``root``."""
    voc = Path(root) / "VOC2007"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    for k, (name, (size, objects)) in enumerate(images.items()):
        _noise(size, 100 + k).save(voc / "JPEGImages" / f"{name}.jpg", quality=90)
        (voc / "Annotations" / f"{name}.xml").write_text(voc_xml(name, size, objects))
    (voc / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{name}\n" for name in images))
    return Path(root)


def write_difficult_subset(path, pairs=VOC_DIFFICULT) -> Path:
    """TorchRay's difficult-subset format: per image, its id and 20 tab-separated 0/1 flags in class order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flagged: Dict[str, set] = {}
    for image_id, cls in pairs:
        flagged.setdefault(image_id, set()).add(cls)
    path.write_text("".join(image_id + "\t" + "\t".join("1" if c in classes else "0" for c in VOC_CLASSES) + "\n"
                            for image_id, classes in flagged.items()))
    return path
