"""The priors load from an installed wheel (not from the source tree)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import psyau_graph
    from psyau_graph import priors as P
    from psyau_graph.graphs import au_graph
    loaded = {}
    for region in P.REGIONS:
        loaded[f"psych_{region}"] = P.psych_adjacency(region).shape
        for source in P.SOURCES:
            loaded[f"{source}_{region}"] = P.extrinsic_prior(source, region).shape
            au_graph(region, prior=source)
    for csv in sorted(P.priors_dir().glob("*.csv")):
        loaded[csv.name] = P.load_prior_csv(csv).shape
    print(json.dumps({"package": psyau_graph.__file__, "priors_dir": str(P.priors_dir()),
                      "loaded": {k: list(v) for k, v in loaded.items()}}))
""")


@pytest.mark.slow
def test_wheel_ships_and_loads_every_prior(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "psyau_graph", src / "psyau_graph", ignore=ignore)
    shutil.copytree(REPO / "priors", src / "priors", ignore=ignore)
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
                           capture_output=True, text=True, cwd=src, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("psyau_graph-*.whl")
    inst = subprocess.run(pip + ["install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, cwd=elsewhere, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=elsewhere,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(info["package"]).resolve().is_relative_to(target.resolve())
    used = Path(info["priors_dir"]).resolve()
    assert used.is_relative_to(target.resolve()) and not used.is_relative_to(REPO.resolve())
    shipped = {p.name for p in (REPO / "priors").glob("*.csv")}
    assert shipped and shipped <= set(info["loaded"])  # every CSV of the source tree was installed and loaded
    assert info["loaded"]["dfme_global"] == [12, 12] and info["loaded"]["samm_upper"] == [6, 6]
