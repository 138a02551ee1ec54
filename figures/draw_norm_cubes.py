"""Draw figures/norm_cubes.png: which elements of an (N, C, H·W) activation share one mean and variance.

After Wu & He 2018, Fig. 2. The shading comes from stat_sets in normkit.lessons.l05_normalization_axes,
the same function the notebook and the tests use, so the picture cannot drift from the code.
Run from the repository root:

    .venv/bin/python figures/draw_norm_cubes.py
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from normkit.lessons.l05_normalization_axes import stat_sets  # noqa: E402

N, C, L, G = 4, 6, 4, 3          # samples, channels, positions H·W, groups (2 channels each)
PANELS = [("batch", "Batch Norm", "per channel, over N and H·W"),
          ("layer", "Layer Norm", "per sample, over C and H·W"),
          ("instance", "Instance Norm", "per sample and channel, over H·W"),
          ("group", f"Group Norm, G = {G}", "per sample and group, over C/G and H·W")]


def draw(ax, method, title, subtitle):
    ids = stat_sets(method, (N, C, L), num_groups=G if method == "group" else None).numpy()
    shaded = ids == ids[0, 0, 0]                  # the set of the front-left element
    colors = np.empty(ids.shape + (4,))
    colors[...] = (0.85, 0.85, 0.85, 0.12)
    colors[shaded] = (0.12, 0.40, 0.80, 0.85)
    # voxel axes: x = N (left to right), y = C (front to back), z = H·W (bottom to top)
    ax.voxels(np.ones(ids.shape, bool), facecolors=colors, edgecolor=(0.3, 0.3, 0.3, 0.5), linewidth=0.4)
    ax.set_box_aspect((N, C, L))
    ax.view_init(elev=22, azim=-60)
    ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
    ax.set_xlabel("N (samples)", labelpad=-12)
    ax.set_ylabel("C (channels)", labelpad=-12)
    ax.set_zlabel("H·W (positions)", labelpad=-12)
    ax.set_title(f"{title}\n{subtitle}", fontsize=10, pad=0)


OUT = Path(__file__).with_name("norm_cubes.png")


def main(out=OUT):
    fig = plt.figure(figsize=(13, 3.7))    # 3-D axes: constrained layout misplaces titles
    for i, panel in enumerate(PANELS):
        draw(fig.add_subplot(1, 4, i + 1, projection="3d"), *panel)
    fig.suptitle("Blue: the elements that share one mean and one variance "
                 "(Wu & He 2018, Fig. 2, redrawn)", fontsize=12, y=0.98)
    fig.subplots_adjust(left=0.0, right=0.97, bottom=0.0, top=0.84, wspace=0.08)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
