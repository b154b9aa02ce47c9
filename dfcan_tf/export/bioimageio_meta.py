"""What a bioimage.io package says about its model beyond the weights: citations, training data, run metadata.

Split from :mod:`dfcan_tf.export.bioimageio`. Nothing written here names a
local path: :func:`portable` reduces every absolute path to its last
component, and the run folder appears by name only
(:func:`package_metadata`). :func:`training_data` describes the training
data from what the run folder records (:func:`data_origin`). See
``docs/export.md#bioimageio``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dfcan_tf.errors import DfcanError
from dfcan_tf.export import verify
from dfcan_tf.nets.dfcan import PAPER as DFCAN_PAPER

# dfcan_tf has no published repository yet: the spec's own placeholder domain (RFC 2606
# example.com, which bioimageio.spec does not try to reach) marks the field as unset.
GIT_REPO_PLACEHOLDER = "https://example.com/dfcan_tf-repository-not-published"
DFCAN_DOI = DFCAN_PAPER["doi"]  # 10.1038/s41592-020-01048-5
BIOSR_DOI = "10.6084/m9.figshare.13264793"
BIOSR_SPECIMENS = ("CCPs", "ER", "F-actin", "F-actin_Nonlinear", "Microtubules")
# What a user needs to validate the package themselves (docs/export.md#validating-a-package).
VALIDATION_PINS = "bioimageio.core==0.11.0 bioimageio.spec==0.5.12.0 pydantic==2.12.5"
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def architecture_of(cfg: Any):
    from dfcan_tf.nets import registry

    return registry.get(cfg.architecture)


def citation(cfg: Any) -> dict[str, str]:
    """bioimage.io ``cite`` entry of the network's source paper (from the registry)."""
    paper = architecture_of(cfg).paper
    text = ". ".join(str(paper[k]) for k in ("authors", "title", "venue") if paper.get(k))
    if paper.get("year"):
        text += f" ({paper['year']})"
    entry = {"text": text + "." if text else architecture_of(cfg).description or cfg.architecture}
    if paper.get("doi"):
        entry["doi"] = paper["doi"]
    return entry


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", "\\\\")) or bool(_WINDOWS_DRIVE.match(value)) or value.startswith("file:")


def portable(obj: Any) -> Any:
    """``obj`` (JSON-like) with every absolute or home-relative path reduced to its last component.

    Used for everything the package carries about the run (``config``, the
    ONNX metadata, the card), so a package names no folder of the machine
    it was made on.
    """
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v) for v in obj]
    if isinstance(obj, str) and _looks_like_path(obj):
        return re.split(r"[\\/]", obj.rstrip("/\\"))[-1] or "."
    return obj


def package_metadata(src: verify.Source) -> dict[str, Any]:
    """The run's metadata (:meth:`verify.Source.metadata`) without local paths; the run folder by name."""
    meta = dict(src.metadata())
    meta.pop("source_run", None)
    meta["run_name"] = Path(src.run.path).resolve().name
    return portable(meta)


def data_origin(data: dict[str, Any]) -> str:
    """``"biosr"``, ``"simulated"`` or ``"unknown"``: where the run's training data came from.

    Read from the run's ``data`` section: an explicit ``dataset`` naming BioSR
    or simulated data, else the patch folder's ``patches.json``, whose
    ``data_root`` is a BioSR-layout tree: cells holding ``simulation.json``
    were written by ``dfcan simulate``; otherwise, specimen folders with
    BioSR's names are taken as BioSR. Anything else (arrays, ``.npz``, a
    folder no longer on disk) is ``"unknown"``.
    """
    named = str(data.get("dataset", "")).lower()
    if "biosr" in named:
        return "biosr"
    if "simulat" in named:
        return "simulated"
    path = data.get("path")
    if not path:
        return "unknown"
    try:
        manifest = json.loads((Path(path) / "patches.json").read_text())
        root = Path(manifest["data_root"])
        if any(root.glob("*/Cell_*/simulation.json")) or any(root.glob("*/simulation.json")):
            return "simulated"
        if any((root / name).is_dir() for name in BIOSR_SPECIMENS):
            return "biosr"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return "unknown"


def training_data(src: verify.Source, origin: str | None = None) -> dict[str, Any]:
    """bioimage.io ``training_data``: an inline dataset description (format 0.3) of what the run was trained on.

    ``origin`` (default :func:`data_origin` of the run) is ``"biosr"`` (cited by
    its DOI), ``"simulated"`` (dfcan_tf's simulator, ``docs/data.md``) or
    ``"unknown"``. Its documentation is the package's card, which has a
    *Training data* section.
    """
    data = portable(dict(src.run.data))
    origin = origin or data_origin(dict(src.run.data))
    specimen = f" ({data['specimen']})" if data.get("specimen") else ""
    base: dict[str, Any] = {"type": "dataset", "format_version": "0.3.4", "documentation": {"source": "README.md"},
                            "tags": ["super-resolution", "fluorescence-light-microscopy",
                                     "structured-illumination-microscopy"]}
    if origin == "biosr":
        return {**base, "name": "BioSR",
                "description": ("BioSR: paired low/high signal-to-noise raw SIM and GT-SIM images of CCPs, ER, "
                                f"F-actin and microtubules (Qiao et al. 2021){specimen}"),
                "authors": [{"name": n.strip()} for n in DFCAN_PAPER["authors"].split(",")],
                "cite": [{"text": "BioSR, the data set published on figshare with Qiao et al. (2021).",
                          "doi": BIOSR_DOI},
                         {"text": f"{DFCAN_PAPER['authors']}. {DFCAN_PAPER['title']}. {DFCAN_PAPER['venue']} "
                                  f"({DFCAN_PAPER['year']}).", "doi": DFCAN_DOI}],
                "source": f"https://doi.org/{BIOSR_DOI}", "license": "CC-BY-4.0"}
    from dfcan_tf import __version__

    if origin == "simulated":
        return {**base, "name": "dfcan_tf simulated SIM data",
                "description": (f"Simulated fluorescent structures{specimen} imaged as raw SIM frames and wide field "
                                f"with shot and camera noise at several signal levels, with GT-SIM targets, "
                                f"written by 'dfcan simulate' of dfcan_tf {__version__} in BioSR's layout "
                                f"(see the card's Training data section)"),
                "authors": [{"name": "dfcan_tf contributors"}],
                "cite": [{"text": "Simulator modelled on the BioSR acquisition of Qiao et al., Nature Methods 18, "
                                  "194-202 (2021).", "doi": DFCAN_DOI}],
                # the data are made by the simulator in dfcan_tf's repository (a placeholder URL until published)
                "source": GIT_REPO_PLACEHOLDER, "license": "BSD-3-Clause"}
    where = {"npz": "an .npz file", "arrays": "in-memory arrays", "patch_folders": "a patch folder"}.get(
        str(data.get("source")), "data")
    return {**base, "name": "unrecorded training data",
            "description": (f"Trained on {where}{specimen} whose origin the run folder does not record "
                            "(neither BioSR nor dfcan_tf's simulated data could be identified)"),
            "authors": [{"name": "dfcan_tf contributors"}],
            "cite": [{"text": "Qiao C. et al. Nature Methods 18, 194-202 (2021), the paper dfcan_tf "
                              "implements.", "doi": DFCAN_DOI}]}


def maintainer_entries(authors: Sequence[dict], maintainers: Sequence[dict] | None = None) -> list[dict]:
    """bioimage.io ``maintainers``: those given, else the ``authors`` that give a ``github_user``.

    Each needs a GitHub user name (the spec checks it online); an entry
    without one raises :class:`DfcanError`. No name is ever made up: with
    none, the list is empty and the field is left out of the package.
    """
    if maintainers is None:
        return [{k: a[k] for k in ("name", "github_user") if a.get(k)} for a in authors if a.get("github_user")]
    out = [dict(m) for m in maintainers]
    missing = [m for m in out if not str(m.get("github_user") or "").strip()]
    if missing:
        raise DfcanError(f"a bioimage.io maintainer needs a GitHub user name ('github_user'). Received: {missing}")
    return out


def cites(cfg: Any) -> list[dict[str, str]]:
    """The network's paper (:func:`citation`), then the DFCAN paper dfcan_tf implements, once."""
    first = citation(cfg)
    if first.get("doi") == DFCAN_DOI:
        return [first]
    return [first, {"text": f"{DFCAN_PAPER['authors']}. {DFCAN_PAPER['title']}. {DFCAN_PAPER['venue']} "
                            f"({DFCAN_PAPER['year']}). (dfcan_tf, which made this package, implements it.)",
                    "doi": DFCAN_DOI}]
