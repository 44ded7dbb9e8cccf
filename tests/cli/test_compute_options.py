"""``--threads`` and ``--device``: the process and its children are set up before Keras loads.

Each check that sets the process up runs in a child Python: the settings change the
environment and torch's thread pool of the process that takes them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from synthetic import write_dataset

from minc_keras.cli.main import main
from minc_keras.cli.parser import build_parser
from minc_keras.core.compute import THREAD_VARIABLES, Compute

#: A child Python that runs the CLI with ``train`` replaced by a probe printing, as JSON,
#: what the command would find: the backends imported before it, torch's threads, the
#: environment, and the threads of a process it starts (as predict's are started).
PROBE = textwrap.dedent("""
    import json, multiprocessing, os, sys

    def child_threads():
        import torch
        return torch.get_num_threads()

    def probe(args):
        from minc_keras.core.compute import loaded_backends
        found = {"loaded": loaded_backends(),
                 "environ": {k: os.environ.get(k) for k in
                             ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                              "CUDA_VISIBLE_DEVICES", "KERAS_TORCH_DEVICE")}}
        if "torch" in sys.modules:
            import torch
            found["threads"] = torch.get_num_threads()
            found["cuda"] = torch.cuda.is_available()
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                found["child_threads"] = pool.apply(child_threads)
        print(json.dumps(found))
        return 0

    if __name__ == "__main__":
        from minc_keras.cli import commands
        from minc_keras.cli.main import main
        commands.COMMANDS["train"] = probe
        flags = sys.argv[1:]
        if "--torch-first" in flags:  # Python code that imported torch before the CLI ran
            import torch
            flags.remove("--torch-first")
        sys.exit(main(["train", "--target", "unused", *flags]))
""")


def _probe(tmp_path, *flags: str) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = subprocess.run([sys.executable, str(script), *flags], capture_output=True,
                          text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


def test_the_cli_imports_no_backend_before_the_command_runs(tmp_path):
    found = _probe(tmp_path)
    assert found["loaded"] == []
    assert "threads" not in found


def test_device_cpu_and_one_thread_set_this_process_and_its_children(tmp_path):
    found = _probe(tmp_path, "--device", "cpu", "--threads", "1")
    assert found["threads"] == 1
    assert found["child_threads"] == 1  # a spawned process inherits the environment
    assert found["environ"]["OMP_NUM_THREADS"] == "1"
    assert found["environ"]["MKL_NUM_THREADS"] == "1"
    assert found["environ"]["OPENBLAS_NUM_THREADS"] == "1"
    assert found["environ"]["CUDA_VISIBLE_DEVICES"] == ""
    assert found["environ"]["KERAS_TORCH_DEVICE"] == "cpu"
    assert found["cuda"] is False


def test_threads_reach_torch_imported_before_the_cli(tmp_path):
    """torch read its environment already: its pool is set directly, and a warning says so."""
    found = _probe(tmp_path, "--torch-first", "--threads", "1")
    assert found["threads"] == 1
    assert found["child_threads"] == 1
    assert "torch was imported before the thread and device settings" in found["stderr"]


def test_a_real_command_runs_on_one_cpu_thread(tmp_path):
    source = write_dataset(tmp_path / "source", n_subjects=4, fmt="nii")
    target = tmp_path / "run"
    assert main(["prepare", "--source", str(source), "--target", str(target), "--input-str",
                 "T1w_anat", "--label-str", "seg", "--ratios", "0.5", "0.25", "--quiet"]) == 0
    done = subprocess.run([sys.executable, "-m", "minc_keras", "train", "--target", str(target),
                           "--make-model-only", "--device", "cpu", "--threads", "1", "--quiet"],
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "71,987 parameters" in done.stdout


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import sys, torch; "
                    "sys.exit(torch.cuda.is_available())"], check=False).returncode != 0,
    reason="a CUDA GPU is here: --device cuda is not refused")
def test_device_cuda_without_a_gpu_is_one_sentence_and_exit_2():
    done = subprocess.run([sys.executable, "-m", "minc_keras", "train", "--target", "unused",
                           "--device", "cuda"], capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("minc-keras: error: --device cuda needs a CUDA GPU")
    assert "--device cpu" in lines[0]


def test_threads_below_one_is_refused(capsys):
    assert main(["predict", "--model", "m.keras", "scan.nii", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert "minc-keras: error: --threads 0 is below 1" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["train", "--target", "t"], ["run", "--source", "s",
                                     "--target", "t"], ["predict", "--model", "m", "x"],
                                     ["demo"], ["evaluate", "--target", "t"]])
def test_the_commands_that_compute_take_the_flags(command):
    args = build_parser().parse_args([*command, "--threads", "3", "--device", "cpu"])
    assert (args.threads, args.device) == (3, "cpu")


def test_the_environment_of_the_settings():
    environment = Compute(threads=4, device="cuda").environment()
    assert {environment[name] for name in THREAD_VARIABLES} == {"4"}
    assert "CUDA_VISIBLE_DEVICES" not in environment  # cuda leaves the GPUs visible
    assert Compute().is_default
