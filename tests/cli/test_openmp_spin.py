"""The CLI shortens libgomp's spin-wait before a command imports torch (``qmamba.utils.cpu.limit_openmp_spin``),
and leaves a wait policy the user chose alone. Each case runs in a fresh interpreter: the setting only counts
before torch loads libgomp, and this test process has torch loaded already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qmamba.utils.cpu import OMP_SPIN_COUNT

SRC = Path(__file__).resolve().parents[2] / "src"
PROBE_COMMAND = '''
import json, os, sys


def add_arguments(p):
    pass


def run(args):
    print(json.dumps({"spin": os.environ.get("GOMP_SPINCOUNT"), "torch": "torch" in sys.modules}))
'''


def _run(code: str, tmp_path: Path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    clean["PYTHONPATH"] = os.pathsep.join([str(SRC), str(tmp_path)])
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env, expected", [({}, str(OMP_SPIN_COUNT)), ({"GOMP_SPINCOUNT": "77"}, "77"),
                                           ({"OMP_WAIT_POLICY": "ACTIVE"}, None)])
def test_cli_sets_spin_count_before_the_command_imports_torch(tmp_path, env, expected):
    (tmp_path / "probe_command.py").write_text(PROBE_COMMAND)
    code = ("import sys\nfrom qmamba import cli\ncli.COMMANDS['probe'] = ('probe_command', 'probe')\n"
            "sys.exit(cli.main(['probe']))")
    assert _run(code, tmp_path, **env) == {"spin": expected, "torch": False}


def test_limit_openmp_spin_does_nothing_once_torch_is_loaded(tmp_path):
    code = ("import json, os, torch\nfrom qmamba.utils.cpu import limit_openmp_spin\n"
            "print(json.dumps({'set': limit_openmp_spin(), 'spin': os.environ.get('GOMP_SPINCOUNT')}))")
    assert _run(code, tmp_path) == {"set": False, "spin": None}
