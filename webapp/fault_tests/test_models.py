"""A models directory with a missing or corrupt file: startup fails, non-zero, within 60 s,
with a message naming the file (issue 12, Faults, last item). A copy of the intact directory
is the control: it must start, so the failures are caused by the injected fault alone."""

import shutil
import subprocess
import urllib.request

import pytest

from conftest import BINARY, MODELS, free_port, require_binary, server_env

MODEL_FILES = ("centerface.onnx", "mask_classifier.onnx")
STARTUP_LIMIT_S = 60


def models_copy(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    for name in MODEL_FILES:
        src = MODELS / name
        assert src.is_file(), f"good model {src} missing: run `make models`"
        shutil.copyfile(src, d / name)
    return d


def run_to_exit(tmp_path, models_dir):
    """Start mask-web and wait for it to exit; fail if it is still running after the limit."""
    require_binary()
    port = free_port()
    proc = subprocess.Popen(
        [str(BINARY)],
        env=server_env(tmp_path / "data", port, models_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(tmp_path),
    )
    try:
        out, err = proc.communicate(timeout=STARTUP_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"mask-web still running {STARTUP_LIMIT_S}s after start with a broken models dir:\n"
                    f"{out.decode(errors='replace')}\n{err.decode(errors='replace')}")
    return proc.returncode, out.decode(errors="replace") + err.decode(errors="replace"), port


def truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


FAULTS = {
    "missing centerface.onnx": ("centerface.onnx", lambda p: p.unlink()),
    "missing mask_classifier.onnx": ("mask_classifier.onnx", lambda p: p.unlink()),
    "truncated mask_classifier.onnx": ("mask_classifier.onnx", lambda p: truncate(p, p.stat().st_size // 2)),
    "truncated centerface.onnx": ("centerface.onnx", lambda p: truncate(p, 4096)),
    "empty mask_classifier.onnx": ("mask_classifier.onnx", lambda p: p.write_bytes(b"")),
    "garbage centerface.onnx": ("centerface.onnx", lambda p: p.write_bytes(b"this is not an onnx model\n" * 100)),
    "mask_classifier.onnx is a directory": ("mask_classifier.onnx", lambda p: (p.unlink(), p.mkdir())),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_broken_models_dir_stops_startup_naming_the_file(tmp_path, fault):
    name, inject = FAULTS[fault]
    models = models_copy(tmp_path)
    inject(models / name)
    code, output, port = run_to_exit(tmp_path, models)
    print(f"{fault}: exit {code}: {output.strip()}")
    assert code != 0, f"{fault}: mask-web exited 0:\n{output}"
    assert code > 0, f"{fault}: mask-web died from signal {-code} instead of exiting with an error:\n{output}"
    assert name in output, f"{fault}: the message does not name {name}:\n{output}"
    assert "listening on" not in output, f"{fault}: it started listening before failing:\n{output}"
    assert "panicked" not in output, f"{fault}: a panic instead of an error message:\n{output}"


def test_intact_copy_of_models_dir_starts(tmp_path):
    """Control: the same copying, without a fault, gives a server that answers."""
    require_binary()
    models = models_copy(tmp_path)
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([str(BINARY)], env=server_env(tmp_path / "data", port, models),
                            stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))
    try:
        import time
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while True:
            assert proc.poll() is None, f"control server exited: {(tmp_path / 'server.log').read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/openapi.json", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "control server did not answer within the limit"
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
