"""``manifest.json``: what a synthesis run wrote, where, with which settings.

Paths are stored relative to the output directory; ``SynthManifest.path("eval", "pope",
"labels_random")`` resolves one to an absolute path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from qmamba.errors import ConfigError

VERSION = "qmamba-synth-1"
MANIFEST = "manifest.json"


@dataclass
class SynthManifest:
    """The record of one generated micro-world."""

    root: Path
    seed: int
    config: dict
    counts: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    version: str = VERSION

    def path(self, *keys: str) -> Path:
        """The absolute path stored under ``paths[k0][k1]...``."""
        node = self.paths
        for i, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                known = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(f"{self.root / MANIFEST}: no path {'/'.join(keys[:i + 1])!r}; known: {known}")
            node = node[key]
        return self.root / node

    @property
    def heldout_styles(self) -> list[str]:
        """Drawing styles whose copies of the evaluation sets this world holds (never used in training)."""
        return list(self.paths.get("styles", {}))

    def styled(self, style: str) -> SynthManifest:
        """This world with its evaluation sets replaced by their copies drawn in held-out ``style``: every
        reader of ``path("eval", ...)`` then evaluates the held-out style with no other change."""
        if style not in self.paths.get("styles", {}):
            raise ConfigError(f"{self.root / MANIFEST}: no evaluation sets in held-out style {style!r}; "
                              f"held: {self.heldout_styles} (synthesize with heldout_style={style!r})")
        paths = {**self.paths, "eval": self.paths["styles"][style]["eval"]}
        counts = {**self.counts, "eval": self.counts["styles"][style]["eval"]}
        return SynthManifest(self.root, self.seed, {**self.config, "eval_style": style}, counts, paths, self.version)

    @property
    def eval_tasks(self) -> list[str]:
        return list(self.paths.get("eval", {}))

    def to_dict(self) -> dict:
        return {"version": self.version, "seed": self.seed, "config": self.config, "counts": self.counts,
                "paths": self.paths}

    def save(self) -> Path:
        out = self.root / MANIFEST
        out.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> SynthManifest:
        root = Path(out_dir)
        file = root / MANIFEST if root.is_dir() else root
        if not file.is_file():
            raise ConfigError(f"{file}: no synthetic micro-world here; run `qmamba data synth --out {root}` first")
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            raise ConfigError(f"{file}: version {data.get('version')!r}, this qmamba reads {VERSION!r}; regenerate it")
        return cls(file.parent, data["seed"], data["config"], data["counts"], data["paths"], data["version"])
