"""The offline provider's comic, a baseline revision against this tree, in one run.

    .venv/bin/python bench/offline_content.py [--baseline main] [--rounds 3]

A comic as the generator makes it (liroo.generation.comic's prompt and schema:
one structured call for the script, then one picture per panel in the comic's
style) for five school texts, made by the baseline's code (``git archive`` of
its ``liroo/`` into a temporary folder) and by this tree's, each in its own
fresh Python process. The worker measures CPU seconds (``time.process_time``:
the machine may be shared, and wall time would measure the neighbours) for
the script and for the pictures, best of ``--rounds``. The baseline may draw
more panels (it ignored the prompt's "exactly N panels"), so the cost of one
picture is printed too: ``picture_cpu_s baseline=… ours=… ratio=…``; the last
line is ``comic_cpu_s baseline=… ours=… ratio=…`` (ours / baseline's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TEXTS = [
    "Photosynthesis is the process by which green plants make their own food. It takes place "
    "mainly in the leaves, inside tiny structures called chloroplasts. Chlorophyll, the green "
    "pigment, captures energy from sunlight. The plant takes in carbon dioxide from the air and "
    "water from the soil. Using the energy of light, it turns them into glucose and releases "
    "oxygen. Almost all life on Earth depends on this process.",
    "The French Revolution began in 1789 and ended in 1799. On 14 July 1789, crowds in Paris "
    "stormed the Bastille, an old prison. King Louis XVI was executed in January 1793. "
    "Maximilien Robespierre led the Reign of Terror until his fall in July 1794. In 1799, "
    "Napoleon Bonaparte seized power in France.",
    "The water cycle is the journey water takes around our planet. The sun heats the water in "
    "oceans, lakes and rivers. The water evaporates and rises into the sky as vapour. High in "
    "the air, the vapour cools and forms clouds. Rivers carry the water back to the sea.",
    "Once upon a time, a clever fox named Rusty lived at the edge of a forest. Every night Rusty "
    "watched the farmer's hens from behind the fence. Rusty crept into the yard under the bright "
    "moon. The old dog Biscuit barked and woke the whole farm.",
    "According to legend, Rome was founded in 753 BC by Romulus and Remus. In 49 BC Julius "
    "Caesar crossed the Rubicon river with his army. His adopted son Augustus became the first "
    "Roman emperor in 27 BC.",
]
STYLES = ["comic_book", "watercolor", "pixel_art", "ghibli", "3d_render"]


def worker(rounds: int) -> dict:
    from liroo.generation.comic import ComicScript, panel_count, panel_image_prompt, script_prompt
    from liroo.providers.offline import OfflineProvider

    provider = OfflineProvider()
    best_script = best_pictures = float("inf")
    drawn = 0
    for _ in range(rounds):
        script_s = pictures_s = 0.0
        drawn = 0
        for text, style in zip(TEXTS, STYLES, strict=True):
            start = time.process_time()
            prompt = script_prompt(text, "moderate", style, panel_count(text, 8))
            comic = provider.generate_structured(prompt, ComicScript)
            script_s += time.process_time() - start
            start = time.process_time()
            for panel in comic.panels:
                provider.generate_image(panel_image_prompt(comic, panel, style), "1:1")
                drawn += 1
            pictures_s += time.process_time() - start
        best_script, best_pictures = min(best_script, script_s), min(best_pictures, pictures_s)
    n = len(TEXTS)
    return {
        "script_s": best_script / n,
        "pictures_s": best_pictures / n,
        "panels": drawn / n,
        "picture_s": best_pictures / drawn,
    }


def run(tree: Path, rounds: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", "--rounds", str(rounds)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default="main")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.rounds)))
        return
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(
            ["git", "archive", args.baseline, "liroo"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        baseline = run(Path(folder), args.rounds)
    ours = run(ROOT, args.rounds)
    for key in ("script_s", "pictures_s", "panels"):
        print(f"{key:<11} per comic: baseline={baseline[key]:.4f} ours={ours[key]:.4f}")
    print(
        f"picture_cpu_s baseline={baseline['picture_s']:.4f} ours={ours['picture_s']:.4f} "
        f"ratio={ours['picture_s'] / baseline['picture_s']:.2f}"
    )
    base_total = baseline["script_s"] + baseline["pictures_s"]
    our_total = ours["script_s"] + ours["pictures_s"]
    print(
        f"comic_cpu_s baseline={base_total:.3f} ours={our_total:.3f} "
        f"ratio={our_total / base_total:.2f}"
    )


if __name__ == "__main__":
    main()
