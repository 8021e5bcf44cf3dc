"""Every way a command can fail ends in one line on stderr with the fix: a device that is not there, an
exception that is not qmamba's own (a traceback only with --debug or QMAMBA_DEBUG=1), weights that cannot
load (`qmamba info` reads their headers), and no command at all."""

from __future__ import annotations

import os
import pickle

import pytest

from qmamba.cli import main


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    from qmamba import MambaLM
    from qmamba.models.presets import LLM_PRESETS

    path = tmp_path_factory.mktemp("lm")
    MambaLM(LLM_PRESETS["tiny-mamba"]()).save_pretrained(path)
    return path


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_no_command_prints_the_help_and_fails(capsys):
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["tpu", "cuda:abc"])
def test_a_device_that_is_not_one_is_one_line(device, lm_dir, capsys):
    assert main(["generate", "--model", str(lm_dir), "--prompt", "hi", "--device", device]) == 2
    err = _one_line(capsys.readouterr().err)
    assert f"device={device!r}" in err and "use cpu, cuda or cuda:N" in err


@pytest.mark.parametrize("error,hint", [
    (OSError(28, "No space left on device"), "free disk space"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB.\nGPU 0 has a total capacity of 79 GiB"),
     "ran out of memory"),
    (ModuleNotFoundError("No module named 'yaml'", name="yaml"), "pip install yaml"),
    (ValueError("something else"), "please report it"),
])
def test_other_errors_are_one_line_with_a_hint(error, hint, monkeypatch, capsys):
    def fail(args):
        raise error

    monkeypatch.setattr("qmamba.commands.info.run", fail)
    monkeypatch.delenv("QMAMBA_DEBUG", raising=False)
    assert main(["info"]) == 1
    err = _one_line(capsys.readouterr().err)
    assert err.startswith(f"qmamba info: error: {type(error).__name__}: ") and hint in err and "--debug" in err


def test_debug_shows_the_traceback(monkeypatch):
    def fail(args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("qmamba.commands.info.run", fail)
    with pytest.raises(OSError):
        main(["info", "--debug"])
    monkeypatch.setenv("QMAMBA_DEBUG", "1")
    with pytest.raises(OSError):
        main(["info"])


def test_info_reads_the_weights_headers(lm_dir, tmp_path, capsys):
    import shutil

    assert main(["info", str(lm_dir)]) == 0
    assert "model.safetensors (safetensors, " in capsys.readouterr().out
    bad = tmp_path / "truncated"
    shutil.copytree(lm_dir, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) - 100])
    assert main(["info", str(bad)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "model.safetensors" in err and "data_offsets" in err and "truncated" in err


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo not run",))


def test_info_names_a_pickle_that_weights_only_refuses(lm_dir, tmp_path, capsys):
    import shutil

    import torch

    bad = tmp_path / "pickle"
    shutil.copytree(lm_dir, bad)
    (bad / "model.safetensors").unlink()
    torch.save({"backbone.embedding.weight": _Payload()}, bad / "pytorch_model.bin", pickle_protocol=2)
    assert main(["info", str(bad)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "pytorch_model.bin" in err and "system" in err and "weights_only" in err and "safetensors" in err
    (bad / "pytorch_model.bin").write_bytes(pickle.dumps({"x": 1}, protocol=2)[:5])  # a legacy file, cut short
    assert main(["info", str(bad)]) == 2
    assert "pytorch_model.bin" in _one_line(capsys.readouterr().err)
