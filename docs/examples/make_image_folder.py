"""An image folder in the layout ``data=image_folder`` reads (``root/<class>/<image>.png``):
scikit-learn's bundled 8x8 digits written as greyscale PNGs, one sub-folder per digit. Your
own photos, one folder per class, take its place.

    python docs/examples/make_image_folder.py outputs/digit-images
    sweeplab-train data=image_folder data.root=outputs/digit-images data.image_size=32 model=mobilenet_v2
"""

from __future__ import annotations

import argparse
from pathlib import Path


def make_image_folder(root: Path) -> Path:
    """The 1,797 digits as ``root/<digit>/<index>.png``, 0-255 grey levels."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8), mode="L").save(folder / f"{index:04d}.png")
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="where to write it (made if missing)")
    made = make_image_folder(parser.parse_args().root)
    print(f"10 class folders of digit PNGs in {made}: data=image_folder data.root={made}")
